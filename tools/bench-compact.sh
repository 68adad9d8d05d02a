#!/usr/bin/env bash
# Files per partition and a daily query's time before and after `tern-lake compact`
# (docs/BENCHMARKS.md, Compaction), on a lake made the way production makes one: a running
# `tern-lake ingest` with a short commit interval while records arrive, 30 % of them late
# (1 to 6 days old), so old days collect small files too.
# Usage: tools/bench-compact.sh [SECONDS] [RUNS]   (make bench-compact)
#   BIN=target/debug tools/bench-compact.sh   to time the debug build instead of the release one
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
runs=${2:-7}
rate=${RATE:-1000}
commit_ms=${COMMIT_MS:-200}
BIN=${BIN:-target/release}
out="$PWD/target/bench-compact"
rm -rf "$out"
mkdir -p "$out"
if [ "$BIN" = target/release ]; then
  # The release profile without LTO, as tools/bench-lake.sh: a build that fits the machine.
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo build --release -q -p tern-lake --bins
fi
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true
export TERN_LAKE_LOG=warn,deltalake_core=off
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
# Background jobs get /dev/null as stdin; kinesalite must not take that as "parent gone".
export TERN_KINESALITE_WATCH_STDIN=0

fifo=$(mktemp -u); mkfifo "$fifo"
node tools/kinesalite.js 0 > "$fifo" 2>/dev/null &
pids+=($!)
read -r line < "$fifo"; rm -f "$fifo"
kin="http://${line#listening on }"
stream=bench-compact-$RANDOM
lake="$out/lake"

# The stream is created by the feeder; ingest waits for it.
.venv/bin/python tools/lake/bench_compact_feed.py "$kin" "$stream" --seconds "$seconds" --rate "$rate" \
  > "$out/feed.json" &
feeder=$!
sleep 2
"$BIN/tern-lake" ingest --stream "$stream" --lake "$lake" --kinesis-endpoint "$kin" \
  --commit-interval-ms "$commit_ms" > "$out/ingest.json" 2> "$out/ingest.log" &
ingest=$!
pids+=("$ingest")
wait "$feeder"
sleep 3
kill -TERM "$ingest"; wait "$ingest" || true
# Whatever the last commit did not hold.
"$BIN/tern-lake" ingest --stream "$stream" --lake "$lake" --kinesis-endpoint "$kin" \
  --stop-when-caught-up >> "$out/ingest.json" 2>> "$out/ingest.log"

today=$(date -u +%F)
late=$(date -u -d '3 days ago' +%F)
daily="SELECT name, count(*) AS events, count(DISTINCT install_id) AS installs FROM events WHERE event_date = DATE '$today' GROUP BY name ORDER BY name"
late_day="SELECT name, count(*) AS events FROM events WHERE event_date = DATE '$late' GROUP BY name ORDER BY name"
week="SELECT event_date, count(*) AS events FROM events GROUP BY event_date ORDER BY event_date"

measure() { # label → one JSON line: files per day, and the median of $runs runs of each query
  local label=$1
  local files; files=$(.venv/bin/python tools/lake/read_table.py "$lake")
  local times=()
  for q in "$daily" "$late_day" "$week"; do
    local t=()
    for _ in $(seq 1 "$runs"); do
      local s e; s=$(date +%s%N)
      "$BIN/tern-lake" sql --lake "$lake" --format json "$q" > "$out/answer-$label.json"
      e=$(date +%s%N)
      t+=($(( (e - s) / 1000000 )))
    done
    times+=("$(printf '%s\n' "${t[@]}" | sort -n | tr '\n' ' ')")
  done
  python3 - "$label" "$files" "${times[@]}" <<'PY'
import json, sys
label, files = sys.argv[1], json.loads(sys.argv[2])
def median(s):
    v = sorted(int(x) for x in s.split())
    return v[len(v) // 2]
names = ["daily_query_ms", "late_day_query_ms", "week_query_ms"]
print(json.dumps({"label": label, "rows": files["rows"], "files": files["files"],
                  "files_per_day": files["files_per_day"],
                  **{n: median(s) for n, s in zip(names, sys.argv[3:])},
                  "runs_ms": dict(zip(names, sys.argv[3:]))}))
PY
}

measure before | tee "$out/before.json"
cp "$out/answer-before.json" "$out/answer-week-before.json"
s=$(date +%s%N)
"$BIN/tern-lake" compact --lake "$lake" > "$out/compact.json" 2> "$out/compact.log"
e=$(date +%s%N)
echo "{\"compact_ms\": $(( (e - s) / 1000000 )), \"summary\": $(cat "$out/compact.json")}" | tee "$out/compact-timed.json"
measure after | tee "$out/after.json"
# The answers must not change.
cmp "$out/answer-week-before.json" "$out/answer-after.json" && echo "same answers before and after"
