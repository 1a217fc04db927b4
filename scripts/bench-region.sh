#!/usr/bin/env bash
# The region API under load, on SQLite and on PostgreSQL, with wrk:
#  - GET machines/ (every machine, as python-libmaas's machines.list()) with
#    16 concurrent clients: latency p50/p99 and requests per second;
#  - POST machines/?op=allocate with 64 concurrent allocators: p99;
#  - the region process's peak memory (VmHWM).
#
#   scripts/bench-region.sh [MACHINES=10000] [SECONDS=20]
#
# Needs wrk (Debian) and, for the PostgreSQL half, MAAS_TEST_DATABASE_URL
# (a scratch schema is created and dropped). Traffic stays on 127.0.0.1.
set -euo pipefail
MACHINES=${1:-10000}
SECS=${2:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/maas-target}
WORK=$(mktemp -d)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
command -v wrk >/dev/null || { echo "missing wrk (apt-get install wrk)" >&2; exit 1; }
(cd "$ROOT" && cargo build -q --release -p maas-region --example region-bench)
BIN=$CARGO_TARGET_DIR/release/examples/region-bench

cat > "$WORK/oauth.lua" <<'LUA'
-- OAuth 1.0a PLAINTEXT with a fresh nonce per request.
local ck, tk, ts = os.getenv("CK"), os.getenv("TK"), os.getenv("TS")
local method, path, body = os.getenv("METHOD"), os.getenv("URLPATH"), os.getenv("BODY")
local n = 0
function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6) + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
end
function request()
  n = n + 1
  local h = string.format('OAuth oauth_version="1.0", oauth_signature_method="PLAINTEXT", oauth_consumer_key="%s", oauth_token="%s", oauth_signature="%%26%s", oauth_nonce="%d-%d", oauth_timestamp="%d"',
    ck, tk, ts, math.random(1, 2000000000), n, os.time())
  local headers = { ["Authorization"] = h }
  if body and body ~= "" then headers["Content-Type"] = "application/x-www-form-urlencoded" end
  return wrk.format(method, path, headers, body)
end
LUA

run_backend() { # label url
  local label=$1 url=$2
  "$BIN" --database-url "$url" --machines "$MACHINES" --listen 127.0.0.1:5250 >"$WORK/out" 2>"$WORK/err" &
  PID=$!
  for _ in $(seq 600); do grep -q READY "$WORK/out" 2>/dev/null && break; sleep 0.5; done
  grep -q READY "$WORK/out" || { cat "$WORK/err" >&2; exit 1; }
  local key; key=$(awk '/READY/{print $2}' "$WORK/out")
  export CK=${key%%:*} TS=${key##*:}; local rest=${key#*:}; export TK=${rest%%:*}
  echo "## $label, $MACHINES machines"
  grep '^# ' "$WORK/out" || true
  for i in 1 2 3; do
    hdr="Authorization: OAuth oauth_version=\"1.0\", oauth_signature_method=\"PLAINTEXT\", oauth_consumer_key=\"$CK\", oauth_token=\"$TK\", oauth_signature=\"%26$TS\", oauth_nonce=\"c$i-$RANDOM\", oauth_timestamp=\"$(date +%s)\""
    curl -sf -o /dev/null -w "# one client, GET machines/: %{time_total} s, %{size_download} bytes\n" \
      -H "$hdr" http://127.0.0.1:5250/MAAS/api/2.0/machines/
  done
  METHOD=GET URLPATH=/MAAS/api/2.0/machines/ BODY="" \
    wrk -t2 -c16 -d"${SECS}s" --timeout 120s --latency -s "$WORK/oauth.lua" http://127.0.0.1:5250 | grep -E "Latency|50%|99%|Requests/sec|Non-2xx|requests in"
  echo "# allocate, 64 concurrent"
  METHOD=POST URLPATH="/MAAS/api/2.0/machines/?op=allocate" BODY="cpu_count=4" \
    wrk -t2 -c64 -d"${SECS}s" --timeout 120s --latency -s "$WORK/oauth.lua" http://127.0.0.1:5250 | grep -E "Latency|50%|99%|Requests/sec|Non-2xx|requests in"
  echo "# region memory: $(grep -E 'VmHWM|VmRSS' /proc/$PID/status | tr -s ' \n' ' ')"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
}

run_backend "SQLite (file)" "sqlite:$WORK/region.sqlite?mode=rwc"
if [ -n "${MAAS_TEST_DATABASE_URL:-}" ]; then
  schema=bench_$(date +%s)
  psql -q "$MAAS_TEST_DATABASE_URL" -c "CREATE SCHEMA $schema"
  sep='?'; case "$MAAS_TEST_DATABASE_URL" in *\?*) sep='&';; esac
  run_backend "PostgreSQL" "${MAAS_TEST_DATABASE_URL}${sep}options=-csearch_path%3D$schema"
  psql -q "$MAAS_TEST_DATABASE_URL" -c "DROP SCHEMA $schema CASCADE"
fi
