#!/usr/bin/env bash
# maas-images vs nginx and curl, side by side on one machine in one run:
#
# 1. Boot-file serving: the same 512 MiB file from our BootFileService
#    (examples/image-sync `serve`, axum) and from nginx (sendfile on, one
#    worker, our own process on a temporary config), both on core 0:
#    one stream with curl, then 64 concurrent clients with wrk (core 1).
# 2. Sync: a 1 GiB stream (kernel 16 MiB, initrd 112 MiB, squashfs 896 MiB)
#    served by nginx, synced into an empty store by `image-sync sync`
#    (sha256 checked, fsynced) vs curl downloading the same three files
#    (no check), and curl followed by sha256sum.
#
#   scripts/bench-images.sh [runs] [wrk-seconds]   (default 3 runs, 10 s; prints Markdown)
#
# Needs: nginx, wrk, curl, taskset, sha256sum. Builds image-sync in release
# mode first. Only loopback is used.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
secs="${2:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/maas-target}"
cargo build -q --release -p image-sync
bin="$CARGO_TARGET_DIR/release/image-sync"
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

work="$(mktemp -d)"; chmod 755 "$work"  # nginx workers run as www-data
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
now() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN {printf "%.3f", e - s}'; }

# --- the 512 MiB file, in a store and in nginx's root -------------------
mkdir -p "$work/src" "$work/www/images"
head -c $((512 << 20)) /dev/urandom > "$work/src/squashfs"
head -c 1024 /dev/urandom > "$work/src/vmlinuz"
"$bin" build --out "$work/mirror512" --release noble --subarch ga-24.04 \
  --version 1 --kernel "$work/src/vmlinuz" --squashfs "$work/src/squashfs" > /dev/null
"$bin" sync --quiet --source "$work/mirror512" --store "$work/store" > /dev/null
path="ubuntu/amd64/ga-24.04/noble/stable/squashfs"
mkdir -p "$work/www/images/$(dirname "$path")"
ln "$work/src/squashfs" "$work/www/images/$path"

port_ours=$((20000 + RANDOM % 10000)); port_nginx=$((port_ours + 1))
cat > "$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $work/tmp-body;
  proxy_temp_path $work/tmp-proxy;
  fastcgi_temp_path $work/tmp-fastcgi;
  uwsgi_temp_path $work/tmp-uwsgi;
  scgi_temp_path $work/tmp-scgi;
  types { application/octet-stream squashfs; }
  server { listen 127.0.0.1:$port_nginx; root $work/www; }
}
EOF
taskset -c 0 "$nginx_bin" -p "$work" -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
taskset -c 0 "$bin" serve --store "$work/store" --listen "127.0.0.1:$port_ours" > "$work/serve.log" 2>&1 &
pids+=($!)
wait_up() { # url
  for _ in $(seq 100); do curl -sfI "$1" > /dev/null && return 0; sleep 0.2; done
  echo "server at $1 did not come up" >&2; cat "$work/serve.log" "$work/nginx-error.log" >&2 || true; exit 1
}
url_ours="http://127.0.0.1:$port_ours/images/$path"
url_nginx="http://127.0.0.1:$port_nginx/images/$path"
wait_up "$url_ours"; wait_up "$url_nginx"
sum="$(sha256sum < "$work/src/squashfs")"
for u in "$url_ours" "$url_nginx"; do
  [ "$(curl -s "$u" | sha256sum)" = "$sum" ] || { echo "corrupt copy from $u" >&2; exit 1; }
done

curl_mbs() { # url -> MB/s of one stream
  taskset -c 1 curl -s -o /dev/null -w '%{speed_download}' "$1" | awk '{printf "%.1f", $1 / 1e6}'
}
wrk_mbs() { # url -> aggregate MB/s with 64 connections
  taskset -c 1 wrk -t2 -c64 -d"${secs}s" --timeout 60s "$1" \
    | awk '/Transfer\/sec/ {v=$2; u=substr(v, length(v)-1); n=substr(v, 1, length(v)-2);
             m = (u=="GB") ? 1073.741824 : (u=="MB") ? 1.048576 : (u=="KB") ? 0.001024 : 1e-6;
             printf "%.1f", n * m}'
}

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
c_ours=(); c_nginx=(); w_ours=(); w_nginx=()
for _ in $(seq "$runs"); do
  c_ours+=("$(curl_mbs "$url_ours")"); c_nginx+=("$(curl_mbs "$url_nginx")")
done
for _ in $(seq "$runs"); do
  w_ours+=("$(wrk_mbs "$url_ours")"); w_nginx+=("$(wrk_mbs "$url_nginx")")
done

# --- sync of a 1 GiB stream vs curl --------------------------------------
head -c $((16 << 20)) /dev/urandom > "$work/src/k"
head -c $((112 << 20)) /dev/urandom > "$work/src/i"
head -c $((896 << 20)) /dev/urandom > "$work/src/s"
"$bin" build --out "$work/www/mirror" --release jammy --subarch ga-22.04 --version 1 \
  --kernel "$work/src/k" --initrd "$work/src/i" --squashfs "$work/src/s" > /dev/null
mirror="http://127.0.0.1:$port_nginx/mirror/"
files=(ubuntu/jammy/amd64/ga-22.04/stable/1/boot-kernel ubuntu/jammy/amd64/ga-22.04/stable/1/boot-initrd ubuntu/jammy/amd64/ga-22.04/stable/1/squashfs)
s_ours=(); s_curl=(); s_curlsum=()
for r in $(seq "$runs"); do
  rm -rf "$work/s$r" "$work/c$r"; mkdir -p "$work/c$r"
  t="$(now)"; taskset -c 1 "$bin" sync --quiet --source "$mirror" --store "$work/s$r" > /dev/null; s_ours+=("$(since "$t")")
  rm -rf "$work/s$r"
  t="$(now)"
  for f in "${files[@]}"; do taskset -c 1 curl -s -o "$work/c$r/$(basename "$f")" "$mirror$f"; done
  s_curl+=("$(since "$t")")
  rm -rf "$work/c$r"; mkdir -p "$work/c$r"
  t="$(now)"
  for f in "${files[@]}"; do
    taskset -c 1 curl -s -o "$work/c$r/$(basename "$f")" "$mirror$f"
    sha256sum "$work/c$r/$(basename "$f")" > /dev/null
  done
  s_curlsum+=("$(since "$t")")
  rm -rf "$work/c$r"
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

mo="$(median "${c_ours[@]}")"; mn="$(median "${c_nginx[@]}")"
wo="$(median "${w_ours[@]}")"; wn="$(median "${w_nginx[@]}")"
so="$(median "${s_ours[@]}")"; sc="$(median "${s_curl[@]}")"; scs="$(median "${s_curlsum[@]}")"
echo "| case | maas-images | peer | ours / peer |"
echo "|---|---|---|---|"
echo "| 512 MiB, one curl stream (MB/s) | $mo | nginx $mn | $(ratio "$mo" "$mn") |"
echo "| 512 MiB, 64 wrk clients, ${secs} s (aggregate MB/s) | $wo | nginx $wn | $(ratio "$wo" "$wn") |"
echo "| sync 1 GiB stream from nginx (s, lower is better) | $so | curl $sc | $(ratio "$so" "$sc") |"
echo "| sync 1 GiB stream from nginx (s, lower is better) | $so | curl + sha256sum $scs | $(ratio "$so" "$scs") |"
echo
echo "runs: $runs (medians); curl samples ours ${c_ours[*]} / nginx ${c_nginx[*]}; wrk ours ${w_ours[*]} / nginx ${w_nginx[*]}; sync ${s_ours[*]} / curl ${s_curl[*]} / curl+sha ${s_curlsum[*]}"
echo "load average before: $load_before; after: $load_after"
