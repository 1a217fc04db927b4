#!/usr/bin/env bash
# maas-dhcp (examples/dhcp-server) against Kea's kea-dhcp4 with perfdhcp,
# side by side in one run, interleaved rate by rate so machine drift hits
# both alike. Setup as in ../shared/peers/PEERS.md: two namespaces joined by
# a veth (server 10.77.0.1/16, client 10.77.0.2/16); perfdhcp acts as a relay
# (giaddr 10.77.0.2), server pinned to CPU 0, perfdhcp to CPU 1; a fresh
# lease store per run; one pool 10.77.1.0 - 10.77.255.254; Kea memfile with
# persist, single-threaded.
#
#   scripts/bench-dhcp.sh [--smoke] [RATES...]
#
# Prints, per server and rate, the achieved 4-way exchange rate and the drop
# ratio of each exchange, then each server's CPU time per exchange at 5,000/s,
# then the highest rate with under 1% drops in both exchanges.
# Needs root, kea-dhcp4-server and kea-admin (perfdhcp), and a release build:
#   cargo build --release -p dhcp-server
set -euo pipefail

TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/maas-target}
OURS=$TARGET/release/dhcp-server
SECS=10
RATES=(10000 15000 20000 25000 30000 35000 40000)
if [ "${1:-}" = "--smoke" ]; then
  SECS=2; RATES=(1000); shift
fi
[ $# -gt 0 ] && RATES=("$@")
[ -x "$OURS" ] || { echo "build first: cargo build --release -p dhcp-server" >&2; exit 1; }
command -v perfdhcp >/dev/null && command -v kea-dhcp4 >/dev/null \
  || { echo "needs kea-admin (perfdhcp) and kea-dhcp4-server" >&2; exit 1; }

W=$(mktemp -d /tmp/bench-dhcp.XXXXXX)
SRV=bdsrv$$ CLI=bdcli$$
cleanup() {
  [ -n "${SP:-}" ] && kill "$SP" 2>/dev/null && wait "$SP" 2>/dev/null
  ip netns del "$SRV" 2>/dev/null || true
  ip netns del "$CLI" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
ip netns add "$SRV"; ip netns add "$CLI"
ip link add bd-s$$ type veth peer name bd-c$$
ip link set bd-s$$ netns "$SRV"; ip link set bd-c$$ netns "$CLI"
ip -n "$SRV" addr add 10.77.0.1/16 dev bd-s$$
ip -n "$CLI" addr add 10.77.0.2/16 dev bd-c$$
for ns in "$SRV" "$CLI"; do ip -n "$ns" link set lo up; done
ip -n "$SRV" link set bd-s$$ up; ip -n "$CLI" link set bd-c$$ up

ours_config() { # durability
  cat > "$W/ours.toml" <<EOF
listen = "10.77.0.1:67"
server_ip = "10.77.0.1"
lease_file = "$W/ours.jsonl"
durability = "$1"
[rate_limit]
enabled = false
[[subnet]]
cidr = "10.77.0.0/16"
ranges = [["10.77.1.0", "10.77.255.254"]]
lease_time_secs = 600
EOF
}
cat > "$W/kea.json" <<EOF
{"Dhcp4": {
  "interfaces-config": {"interfaces": ["bd-s$$/10.77.0.1"], "dhcp-socket-type": "udp"},
  "lease-database": {"type": "memfile", "persist": true, "name": "$W/kea-leases4.csv", "lfc-interval": 0},
  "multi-threading": {"enable-multi-threading": false},
  "valid-lifetime": 600,
  "subnet4": [{"id": 1, "subnet": "10.77.0.0/16", "pools": [{"pool": "10.77.1.0 - 10.77.255.254"}]}],
  "loggers": [{"name": "kea-dhcp4", "severity": "WARN", "output_options": [{"output": "stderr"}]}]
}}
EOF

start() { # server
  rm -f "$W"/ours.jsonl* "$W"/kea-leases4.csv*
  case $1 in
    kea) KEA_PIDFILE_DIR=$W KEA_LOCKFILE_DIR=$W ip netns exec "$SRV" taskset -c 0 \
           kea-dhcp4 -c "$W/kea.json" >>"$W/kea.log" 2>&1 & ;;
    ours-write) ours_config write
           ip netns exec "$SRV" taskset -c 0 "$OURS" "$W/ours.toml" 2>>"$W/ours.log" & ;;
    ours-sync) ours_config sync
           ip netns exec "$SRV" taskset -c 0 "$OURS" "$W/ours.toml" 2>>"$W/ours.log" & ;;
  esac
  SP=$!
  sleep 1.5
}
stop() { kill "$SP"; wait "$SP" 2>/dev/null || true; SP=; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

perf() { # rate secs -> "achieved do_drop% ra_drop%"
  ip netns exec "$CLI" taskset -c 1 perfdhcp -4 -g single -l 10.77.0.2 -r "$1" -R 10000 \
    -p "$2" 10.77.0.1 > "$W/perf.txt" 2>&1 || true
  local rate drops
  rate=$(awk '/^Rate:/ {print $2; exit}' "$W/perf.txt")
  drops=$(awk '/drops ratio:/ {gsub("%",""); printf "%s ", $3}' "$W/perf.txt")
  echo "${rate:-0} ${drops:-100 100}"
}

SERVERS=(kea ours-write ours-sync)
declare -A best
printf '%-11s %7s %10s %8s %8s\n' server rate achieved DO-drop% RA-drop%
for r in "${RATES[@]}"; do
  for s in "${SERVERS[@]}"; do
    start "$s"
    read -r got d1 d2 < <(perf "$r" "$SECS")
    stop
    printf '%-11s %7s %10s %8s %8s\n' "$s" "$r" "$got" "$d1" "$d2"
    if awk -v a="$d1" -v b="$d2" 'BEGIN {exit !(a < 1 && b < 1)}'; then
      best[$s]=$got
    fi
  done
done

echo
echo "CPU time per exchange at 5,000/s for ${SECS}s (server process, user+system):"
hz=$(getconf CLK_TCK)
for s in "${SERVERS[@]}"; do
  start "$s"
  t0=$(cpu_ticks "$SP")
  read -r got _ _ < <(perf 5000 "$SECS")
  t1=$(cpu_ticks "$SP")
  stop
  awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$got" -v s="$SECS" -v name="$s" \
    'BEGIN {printf "%-11s %6.1f us per exchange\n", name, t / hz * 1e6 / (n * s)}'
done

echo
echo "highest rate with under 1% drops (of those tried):"
for s in "${SERVERS[@]}"; do printf '%-11s %s\n' "$s" "${best[$s]:-none}"; done
if [ -n "${best[kea]:-}" ]; then
  for s in ours-write ours-sync; do
    [ -n "${best[$s]:-}" ] && awk -v a="${best[$s]}" -v b="${best[kea]}" -v n="$s" \
      'BEGIN {printf "%s / kea = %.2f\n", n, a / b}'
  done
fi
