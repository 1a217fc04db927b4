#!/usr/bin/env bash
# Power-state queries against N emulated BMCs at once, side by side in one
# run:
#  - IPMI: OpenIPMI's ipmi_sim; maas-power's executor (ipmi driver) vs
#    ipmitool run once per query;
#  - Redfish: sushy-tools' sushy-emulator (fake driver, Basic auth);
#    maas-power's executor (redfish driver) vs DMTF's redfishtool run once
#    per query, and vs curl run once per query (one process fetching the
#    Systems collection and the system, the least a shell-out can do).
# Client wall time and CPU (user+sys) are measured with bash's `time`,
# which counts waited-for children (every tool process).
#
#   scripts/bench-power.sh [BMCS=20] [QUERIES=500] [CONCURRENCY=20]
#   PROTOCOLS="ipmi redfish" (the default) picks the sections.
#
# Needs: ipmi_sim (openipmi), ipmitool, sushy-emulator and redfishtool
# (PyPI), curl, cargo. Traffic stays on 127.0.0.1.
set -euo pipefail

BMCS=${1:-20}
QUERIES=${2:-500}
CONC=${3:-20}
BASE_PORT=${BASE_PORT:-17600}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/maas-target}
WORK=$(mktemp -d)
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

PROTOCOLS=${PROTOCOLS:-ipmi redfish}
for tool in ipmi_sim ipmitool sushy-emulator redfishtool curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

(cd "$ROOT" && cargo build -q --release -p maas-power --example power-bench)
BENCH=$CARGO_TARGET_DIR/release/examples/power-bench

bmc_cpu() { # user+sys clock ticks of the BMC processes (and their waited-for children)
  local t=0
  for p in "${BMC_PIDS[@]}"; do
    t=$((t + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat")))
  done
  echo "$t"
}

TIMEFORMAT='%R %U %S'
run() { # label, command...: prints label wall user sys bmc_cpu_s
  local label=$1; shift
  local b0 t
  b0=$(bmc_cpu)
  { t=$( { time "$@" >"$WORK/out" 2>&1; } 2>&1 ); } || { cat "$WORK/out" >&2; exit 1; }
  local b1; b1=$(bmc_cpu)
  local hz; hz=$(getconf CLK_TCK)
  echo "$label $t $(awk -v a="$b0" -v b="$b1" -v hz="$hz" 'BEGIN{printf "%.2f", (b-a)/hz}') $(tr '\n' ' ' <"$WORK/out")"
}

if [[ " $PROTOCOLS " == *" ipmi "* ]]; then

cat > "$WORK/chassis" <<'EOF'
#!/bin/sh
# ipmi_sim chassis program: the state of each BMC in a file beside it.
f="$(dirname "$0")/power-$1"
case "$2" in
get) echo "power:$(cat "$f" 2>/dev/null || echo 0)" ;;
set) [ "$3" = power ] && echo "$4" > "$f" ;;
esac
EOF
chmod +x "$WORK/chassis"
cat > "$WORK/bmc.emu" <<'EOF'
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
EOF

PORTS=()
BMC_PIDS=()
for i in $(seq 0 $((BMCS - 1))); do
  port=$((BASE_PORT + i))
  d="$WORK/bmc$i"; mkdir -p "$d/state"
  cat > "$d/lan.conf" <<EOF
name "bmc$i"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 $port
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abc$(printf %03x "$i")
  endlan
  chassis_control "$WORK/chassis $i"
  user 2 true "admin" "password" admin 10 none md2 md5 straight
EOF
  ipmi_sim -c "$d/lan.conf" -f "$WORK/bmc.emu" -s "$d/state" -n >"$d/log" 2>&1 &
  PIDS+=($!)
  BMC_PIDS+=($!)
  PORTS+=("$port")
done

# Wait until every BMC answers.
for port in "${PORTS[@]}"; do
  for _ in $(seq 50); do
    ipmitool -I lanplus -C 3 -H 127.0.0.1 -p "$port" -U admin -P password \
      chassis power status >/dev/null 2>&1 && break
    sleep 0.1
  done
done
PORT_LIST=$(IFS=,; echo "${PORTS[*]}")

ipmitool_all() {
  for i in $(seq 0 $((QUERIES - 1))); do echo "${PORTS[$((i % BMCS))]}"; done |
    xargs -P "$CONC" -I{} sh -c 'ipmitool -I lanplus -C 3 -H 127.0.0.1 -p {} -U admin -P password chassis power status >/dev/null || echo FAIL'
}

echo "# $BMCS ipmi_sim BMCs, $QUERIES power-status queries, concurrency $CONC"
echo "# label wall_s user_s sys_s bmc_cpu_s [output]"
for round in 1 2 3; do
  run "maas-power-fresh-session" "$BENCH" --ports "$PORT_LIST" --queries "$QUERIES" --mode fresh
  run "maas-power-kept-session" "$BENCH" --ports "$PORT_LIST" --queries "$QUERIES" --mode kept
  run "ipmitool-per-query" ipmitool_all
done
for p in "${BMC_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
fi

if [[ " $PROTOCOLS " == *" redfish "* ]]; then
RF_BASE_PORT=${RF_BASE_PORT:-17800}
RF_USER=admin
RF_PASS=redfish-pw
# One htpasswd for all emulators (bcrypt with cheap rounds, made with the
# bcrypt module sushy-tools itself uses).
python3 -c "import bcrypt,sys; print(sys.argv[1] + ':' + bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(rounds=4)).decode())" \
  "$RF_USER" "$RF_PASS" >"$WORK/htpasswd"
RF_TARGETS=() # "port system-uuid"
BMC_PIDS=()
for i in $(seq 0 $((BMCS - 1))); do
  port=$((RF_BASE_PORT + i))
  uuid=27946b59-9e44-4fa7-8e91-f3527a1e$(printf %04x "$i")
  d="$WORK/rf$i"; mkdir -p "$d"
  cat > "$d/emulator.conf" <<EOF
SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'
SUSHY_EMULATOR_LISTEN_PORT = $port
SUSHY_EMULATOR_FAKE_DRIVER = True
SUSHY_EMULATOR_STATE_DIR = '$d/state'
SUSHY_EMULATOR_AUTH_FILE = '$WORK/htpasswd'
SUSHY_EMULATOR_FAKE_SYSTEMS = [{'uuid': '$uuid', 'name': 'node-$i', 'power_state': 'On', 'external_notifier': False, 'nics': [{'mac': '52:54:00:99:01:$(printf %02x "$i")', 'ip': '10.99.1.$((i + 10))'}]}]
EOF
  sushy-emulator --config "$d/emulator.conf" >/dev/null 2>"$d/log" &
  PIDS+=($!)
  BMC_PIDS+=($!)
  RF_TARGETS+=("$port $uuid")
done
RF_PORT_LIST=""
for t in "${RF_TARGETS[@]}"; do
  port=${t% *}
  for _ in $(seq 300); do
    curl -sf -u "$RF_USER:$RF_PASS" "http://127.0.0.1:$port/redfish/v1/Systems" >/dev/null && break
    sleep 0.1
  done
  RF_PORT_LIST=${RF_PORT_LIST:+$RF_PORT_LIST,}$port
done

targets() { for i in $(seq 0 $((QUERIES - 1))); do echo "${RF_TARGETS[$((i % BMCS))]}"; done; }
redfishtool_all() {
  targets | xargs -P "$CONC" -n 2 sh -c \
    "redfishtool -r 127.0.0.1:\$0 -S Never -A Basic -u $RF_USER -p $RF_PASS Systems get | grep PowerState >/dev/null || echo FAIL"
}
curl_all() {
  targets | xargs -P "$CONC" -n 2 sh -c \
    "curl -sf -u $RF_USER:$RF_PASS http://127.0.0.1:\$0/redfish/v1/Systems http://127.0.0.1:\$0/redfish/v1/Systems/\$1 | grep PowerState >/dev/null || echo FAIL"
}

echo "# $BMCS sushy-emulator BMCs, $QUERIES power-state queries, concurrency $CONC"
echo "# label wall_s user_s sys_s bmc_cpu_s [output]"
for round in 1 2 3; do
  for mode in cold fresh kept; do
    run "maas-power-redfish-$mode" "$BENCH" --driver redfish --ports "$RF_PORT_LIST" --queries "$QUERIES" --mode "$mode" --user "$RF_USER" --password "$RF_PASS"
  done
  run "redfishtool-per-query" redfishtool_all
  run "curl-per-query" curl_all
done
fi
