#!/usr/bin/env bash
# maas-tftp vs tftpd-hpa (in.tftpd), side by side on one machine in one run:
# the same 64 MiB file, servers pinned to core 0 and clients to core 1.
#
#   scripts/bench-tftp.sh [runs]      (default 3 runs per case; prints Markdown)
#
# Needs: tftpd-hpa (in.tftpd), curl, atftp, taskset. Builds the example
# server in release mode first.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/maas-target}"
cargo build -q --release -p tftp-server
ours="$CARGO_TARGET_DIR/release/tftp-server"

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
mkdir "$work/root"
head -c $((64 << 20)) /dev/urandom > "$work/root/image"
sum="$(sha256sum < "$work/root/image")"

port_ours=$((20000 + RANDOM % 10000)); port_hpa=$((port_ours + 1))
taskset -c 0 "$ours" --address 127.0.0.1 --port "$port_ours" --root "$work/root" --max-window 64 &
pids+=($!)
taskset -c 0 /usr/sbin/in.tftpd -L -s "$work/root" -a "127.0.0.1:$port_hpa" &
pids+=($!)
sleep 0.5

now() { date +%s.%N; }
# median of the arguments
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN {printf "%.1f", b / s / 1e6}'; }

check() {
  [ "$(sha256sum < "$1")" = "$sum" ] || { echo "corrupt copy from $2" >&2; exit 1; }
}

one_curl() { # port
  local t0 t1; t0=$(now)
  taskset -c 1 curl -sS --fail --tftp-blksize 1468 "tftp://127.0.0.1:$1/image" -o "$work/out"
  t1=$(now); check "$work/out" "port $1"; echo "$t0 $t1" | awk '{print $2 - $1}'
}
sixteen_curl() { # port
  local t0 t1 i; t0=$(now)
  for i in $(seq 1 16); do taskset -c 1 curl -sS --fail --tftp-blksize 1468 "tftp://127.0.0.1:$1/image" -o "$work/out$i" & done
  wait
  t1=$(now)
  for i in $(seq 1 16); do check "$work/out$i" "port $1"; done
  echo "$t0 $t1" | awk '{print $2 - $1}'
}
atftp_window() { # port window
  local t0 t1; t0=$(now)
  taskset -c 1 atftp --option "blksize 1468" --option "windowsize $2" -g -r image -l "$work/out" 127.0.0.1 "$1" 2>/dev/null
  t1=$(now); check "$work/out" "port $1 window $2"; echo "$t0 $t1" | awk '{print $2 - $1}'
}

echo "| case | maas-tftp MB/s | tftpd-hpa MB/s | ratio |"
echo "|---|---|---|---|"
row() { # label bytes cmd...
  local label="$1" bytes="$2"; shift 2
  local a=() b=() i
  for i in $(seq 1 "$runs"); do
    a+=("$("$@" "$port_ours")")
    b+=("$("$@" "$port_hpa")")
  done
  local ma mb; ma=$(median "${a[@]}"); mb=$(median "${b[@]}")
  local ra rb; ra=$(mbps "$bytes" "$ma"); rb=$(mbps "$bytes" "$mb")
  echo "| $label | $ra | $rb | $(awk -v x="$ra" -v y="$rb" 'BEGIN {printf "%.2f", x / y}') |"
}
row "one client, curl, blksize 1468" $((64 << 20)) one_curl
row "16 concurrent clients, curl, blksize 1468 (aggregate)" $((16 * (64 << 20))) sixteen_curl
row_window() { atftp_window "$2" "$1"; }
w1() { atftp_window "$1" 1; }
w16() { atftp_window "$1" 16; }
row "atftp, blksize 1468, windowsize 1" $((64 << 20)) w1
row "atftp, blksize 1468, windowsize 16 (tftpd-hpa 5.2 ignores windowsize)" $((64 << 20)) w16
