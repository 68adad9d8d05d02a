#!/usr/bin/env bash
# Collector benchmarks (docs/BENCHMARKS.md, collector section): throughput per core with
# acknowledgements on, ack latency at half load, RSS at saturation, CPU per event.
# Usage: tools/bench-collector.sh [RUNS]   (release build; kinesalite from node_modules)
#   OLD_BIN=dir   also run the tern-collector binary in dir (e.g. an older commit's build), one
#                 round of it after each round of this one, with the same proxy and loadgen:
#                 compare the two within one run, never across runs (the machine is shared).
#                 Several dirs, space-separated, take turns the same way (OLD_ARGS goes to
#                 each; a wrapper script in a dir gives one build flags of its own).
#   MODES="fake kinesalite"   which saturation runs (fake: tern-fault-proxy --fake-writes).
#   HALF_RATE=n   rate of the half-load runs (default: half the median events/s of this
#                 collector's fake-writes saturation runs of this run, or 60000 without any).
#   ARGS="..."    extra flags for this build's collector (e.g. ARGS="--record-version 2");
#                 OLD_ARGS the same for OLD_BIN's.
#   PIN=0         do not pin the half-load runs (default: collector on CPU 0, load generator,
#                 proxy and kinesalite on CPU 1, so the ack latency is the collector's own).
# Prints one JSON line per run; bytes_per_record is the stream data per record (aggregation
# off: one record per event), bytes_per_event the stream data per event acknowledged (with
# record v2 the batch records count too), json_bytes_per_event the event's own JSON inside its
# batch, stream_to_json the ratio of the last two; records_per_call the records per PutRecords call,
# proxy_cpu_s the fault proxy's CPU over the run (with the load generator, the other core's load);
# collector_p50_le_ms/collector_p99_le_ms the collector's own view of the ack latency (arrival to
# answer, from its request_latency_seconds histogram): the upper bound of the bucket holding it.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
EVENTS=${EVENTS:-300000}
MODES=${MODES:-fake kinesalite}
PIN=${PIN:-1}
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

# Pinning: "taskset -c N" prefixes, empty when not pinning (or with a single CPU).
pin_collector=() pin_load=()
pinned() { # on|off → sets the prefixes
  if [ "$1" = on ] && [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
    pin_collector=(taskset -c 0) pin_load=(taskset -c 1)
  else
    pin_collector=() pin_load=()
  fi
}

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

run() { # collector-bin-dir mode(fake|kinesalite) rate → one JSON line
  local cbin=$1 mode=$2 rate=$3 upstream args=() extra=()
  if [ "$cbin" = "$BIN" ]; then read -r -a extra <<< "${ARGS:-}"; else read -r -a extra <<< "${OLD_ARGS:-}"; fi
  if [ "$mode" = fake ]; then args=(--fake-writes); fi
  listen upstream "${pin_load[@]}" "$BIN/tern-fault-proxy" --upstream "http://$kin" "${args[@]}"
  local proxy_pid=$LAST_PID
  local col; listen col "${pin_collector[@]}" "$cbin/tern-collector" --listen 127.0.0.1:0 \
    --stream "$stream" --kinesis-endpoint "http://$upstream" --write-key bench --app-id bench "${extra[@]}"
  local cpid=$LAST_PID
  # run is always called in $(…), a subshell the script's own cleanup does not see: a round
  # that fails still stops its collector and proxy.
  trap "kill $cpid $proxy_pid 2>/dev/null || true" EXIT
  local t0 p0; t0=$(cpu_ticks "$cpid"); p0=$(cpu_ticks "$proxy_pid")
  local rate_args=()
  if [ "$rate" != max ]; then rate_args=(--rate "$rate"); fi
  local read_args=()
  if [ "$mode" = kinesalite ]; then read_args=(--kinesis-endpoint "http://$kin" --stream "$stream"); fi
  local report; report=$("${pin_load[@]}" "$BIN/tern-loadgen" --collector "http://$col" \
    --write-key bench --events "$EVENTS" --devices 64 --batch 100 --max-seconds 120 --json \
    "${rate_args[@]}" "${read_args[@]}")
  local t1 p1; t1=$(cpu_ticks "$cpid"); p1=$(cpu_ticks "$proxy_pid")
  local hz; hz=$(getconf CLK_TCK)
  local stats; stats=$(curl -s "http://$upstream/_stats")
  local metrics; metrics=$(curl -s "http://$col/metrics" | grep '^tern_collector_request_latency_seconds_bucket' || true)
  local pin=no; if [ ${#pin_collector[@]} -gt 0 ]; then pin=yes; fi
  python3 - "$report" "$t0" "$t1" "$hz" "$(hwm_kib "$cpid")" "$mode" "$rate" "$stats" "$cbin" "$pin" "$((p1 - p0))" "$metrics" <<'PY'
import json, re, sys
r = json.loads(sys.argv[1]); t0, t1, hz, hwm = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
stats = json.loads(sys.argv[8])
cpu = (t1 - t0) / hz
acked = r["events_acked"]
records, data = stats.get("records", 0), stats.get("record_data_bytes", 0)
calls = stats.get("put_records_calls", 0)
record_bytes = data / records if records else None
json_bytes = r.get("event_json_bytes_acked", 0) / acked if acked else None
# The collector's own view of the same requests (arrival to answer, without the load
# generator's side): the upper bound of the request_latency_seconds bucket holding a quantile.
buckets = sorted((float(le), float(n)) for le, n in
                 re.findall(r'le="([^"]+)"\}\s+([0-9.e+-]+)', sys.argv[12]))
def collector_le_ms(q):
    total = buckets[-1][1] if buckets else 0
    return next((round(le * 1000, 1) for le, n in buckets if total and n >= q * total), None)
event_bytes = data / acked if acked and data else None
print(json.dumps({"collector": sys.argv[9], "mode": sys.argv[6], "rate": sys.argv[7], "pinned": sys.argv[10],
  "events": acked, "lost": r["lost"],
  "events_per_s": round(r["events_per_s"]), "collector_cpu_s": round(cpu, 2),
  "events_per_core_s": round(acked / cpu) if cpu else None, "cpu_us_per_event": round(cpu * 1e6 / acked, 2) if acked else None,
  "ack_p50_ms": round(r["ack_latency_ms_p50"], 2), "ack_p99_ms": round(r["ack_latency_ms_p99"], 2),
  "collector_p50_le_ms": collector_le_ms(0.5), "collector_p99_le_ms": collector_le_ms(0.99),
  "rss_hwm_mib": round(hwm / 1024, 1),
  "bytes_per_record": round(record_bytes, 1) if record_bytes else None,
  "json_bytes_per_event": round(json_bytes, 1) if json_bytes else None,
  "record_to_json": round(record_bytes / json_bytes, 2) if record_bytes and json_bytes else None,
  "bytes_per_event": round(event_bytes, 1) if event_bytes else None,
  "stream_to_json": round(event_bytes / json_bytes, 3) if event_bytes and json_bytes else None,
  "records_per_call": round(records / calls, 1) if calls else None,
  "proxy_cpu_s": round(int(sys.argv[11]) / hz, 2)}))
PY
  kill "$cpid" "$proxy_pid"; wait "$cpid" "$proxy_pid" 2>/dev/null || true
}

bins=("$BIN")
if [ -n "${OLD_BIN:-}" ]; then read -r -a old_bins <<< "$OLD_BIN"; bins+=("${old_bins[@]}"); fi
pinned off
fake_rates=()
for mode in $MODES; do
  for i in $(seq "$RUNS"); do
    for b in "${bins[@]}"; do
      line=$(run "$b" "$mode" max); echo "$line"
      if [ "$mode" = fake ] && [ "$b" = "$BIN" ]; then
        fake_rates+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["events_per_s"])' "$line")")
      fi
    done
  done
done
# Ack latency at half of this collector's fake-writes maximum, pinned (see PIN above).
half=${HALF_RATE:-}
if [ -z "$half" ]; then
  if [ ${#fake_rates[@]} -gt 0 ]; then
    half=$(printf '%s\n' "${fake_rates[@]}" | sort -n | awk '{a[NR]=$1} END {print int(a[int((NR+1)/2)]/2)}')
  else
    half=60000
  fi
fi
pinned on
for i in $(seq "$RUNS"); do
  for b in "${bins[@]}"; do line=$(run "$b" fake "$half"); echo "$line"; done
done
