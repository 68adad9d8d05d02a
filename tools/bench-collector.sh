#!/usr/bin/env bash
# Collector benchmarks (docs/BENCHMARKS.md, collector section): throughput per core with
# acknowledgements on, ack latency at half load, RSS at saturation, CPU per event.
# Usage: tools/bench-collector.sh [RUNS]   (release build; kinesalite from node_modules)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
EVENTS=${EVENTS:-300000}
BIN=target/release
cargo build --release -q -p tern-collector -p tern-tests -p tern-tools --bins
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench TERN_LOG=error
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

listen() { # VAR command... → VAR = the address of its "listening on" line; pid in $LAST_PID
  local var=$1; shift
  local fifo; fifo=$(mktemp -u); mkfifo "$fifo"
  "$@" > "$fifo" 2>/dev/null &
  LAST_PID=$!; pids+=("$LAST_PID")
  local line; read -r line < "$fifo"; rm -f "$fifo"
  printf -v "$var" '%s' "${line#listening on }"
}
# Background jobs get /dev/null as stdin; kinesalite must not take that as "parent gone".
export TERN_KINESALITE_WATCH_STDIN=0

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

listen kin node tools/kinesalite.js 0
stream=bench-$RANDOM
create_stream() { # kinesalite checks the form of the signature, not its value
  local answer
  answer=$(curl -s -X POST "http://$kin/" -H 'Content-Type: application/x-amz-json-1.1' \
    -H 'X-Amz-Target: Kinesis_20131202.CreateStream' -H "X-Amz-Date: $(date -u +%Y%m%dT%H%M%SZ)" \
    -H 'Authorization: AWS4-HMAC-SHA256 Credential=bench/20261124/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=0' \
    -d "{\"StreamName\":\"$1\",\"ShardCount\":4}")
  if [ -n "$answer" ]; then echo "CreateStream failed: $answer" >&2; exit 1; fi
}
create_stream "$stream"; sleep 1

run() { # mode(fake|kinesalite) rate → one JSON line
  local mode=$1 rate=$2 upstream args=()
  if [ "$mode" = fake ]; then args=(--fake-writes); fi
  listen upstream "$BIN/tern-fault-proxy" --upstream "http://$kin" "${args[@]}"
  local proxy_pid=$LAST_PID
  local col; listen col "$BIN/tern-collector" --listen 127.0.0.1:0 --stream "$stream" \
    --kinesis-endpoint "http://$upstream" --write-key bench --app-id bench
  local cpid=$LAST_PID
  local t0; t0=$(cpu_ticks "$cpid")
  local rate_args=()
  if [ "$rate" != max ]; then rate_args=(--rate "$rate"); fi
  local read_args=()
  if [ "$mode" = kinesalite ]; then read_args=(--kinesis-endpoint "http://$kin" --stream "$stream"); fi
  local report; report=$("$BIN/tern-loadgen" --collector "http://$col" --write-key bench --events "$EVENTS" \
    --devices 64 --batch 100 --max-seconds 120 --json "${rate_args[@]}" "${read_args[@]}")
  local t1; t1=$(cpu_ticks "$cpid")
  local hz; hz=$(getconf CLK_TCK)
  python3 - "$report" "$t0" "$t1" "$hz" "$(hwm_kib "$cpid")" "$mode" "$rate" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); t0, t1, hz, hwm = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
cpu = (t1 - t0) / hz
acked = r["events_acked"]
print(json.dumps({"mode": sys.argv[6], "rate": sys.argv[7], "events": acked, "lost": r["lost"],
  "events_per_s": round(r["events_per_s"]), "collector_cpu_s": round(cpu, 2),
  "events_per_core_s": round(acked / cpu) if cpu else None, "cpu_us_per_event": round(cpu * 1e6 / acked, 2) if acked else None,
  "ack_p50_ms": round(r["ack_latency_ms_p50"], 2), "ack_p99_ms": round(r["ack_latency_ms_p99"], 2), "rss_hwm_mib": round(hwm / 1024, 1)}))
PY
  kill "$cpid" "$proxy_pid"; wait "$cpid" "$proxy_pid" 2>/dev/null || true
}

for mode in fake kinesalite; do
  for i in $(seq "$RUNS"); do run "$mode" max; done
done
# Ack latency at half of the fake-writes maximum (~125 000 events/s here; set HALF_RATE).
for i in $(seq "$RUNS"); do run fake "${HALF_RATE:-60000}"; done
