#!/usr/bin/env bash
# track() on the JVM beside Segment and PostHog (docs/BENCHMARKS.md, "track() on the JVM beside
# Segment and PostHog"), then the Python binding's per-call cost.
# Usage: tools/bench-kotlin.sh [ROUNDS]   (ROUNDS: rounds of the three peers, default 2;
#        BENCH_ARGS="--no-jmh" skips the JMH forks)
# Builds the release library, collector and fault proxy, and the Kotlin and Python bindings
# generated from that library; starts kinesalite, tern-fault-proxy --fake-writes and
# tern-collector on 127.0.0.1 (free ports) and stops them on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
ROOT=$PWD
BIN=target/release
LIB=$BIN/libtern_bindings.so
# uniffi reads the interface from the library's metadata symbols, which the release profile
# strips from the shared library (strip = "symbols"); the static archive keeps them.
META_LIB=$BIN/libtern_bindings.a

cargo build --release -q -p tern-bindings --lib
cargo build --release -q -p tern-collector --bin tern-collector -p tern-tests --bin tern-fault-proxy
# The bindings as `make bindings` generates them, from the release build instead of the debug
# one: the generated code depends only on the library's interface, and this spares a debug build
# of the whole workspace.
cargo run -q -p uniffi-bindgen -- generate --no-format --library "$META_LIB" --language kotlin --out-dir bindings/generated/kotlin
cargo run -q -p uniffi-bindgen -- generate --library "$META_LIB" --language python --out-dir bindings/python/tern/_generated
cp "$LIB" bindings/python/tern/_generated/
touch bindings/python/tern/_generated/__init__.py
mvn -q -B -f bindings/kotlin/bench/pom.xml package -DskipTests

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench TERN_LOG=error
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

listen() { # VAR command... → VAR = the address of its "listening on" line
  local var=$1; shift
  local fifo; fifo=$(mktemp -u); mkfifo "$fifo"
  "$@" > "$fifo" 2>/dev/null &
  pids+=("$!")
  local line
  if ! read -r line < "$fifo"; then echo "$1 did not start: $*" >&2; exit 1; fi
  rm -f "$fifo"
  printf -v "$var" '%s' "${line#listening on }"
}
# Background jobs get /dev/null as stdin; kinesalite must not take that as "parent gone".
export TERN_KINESALITE_WATCH_STDIN=0

# kinesalite answers the collector's readiness checks (DescribeStreamSummary); the proxy
# answers PutRecords itself (--fake-writes), so the collector's side costs no Kinesis time.
listen kin node tools/kinesalite.js 0
stream=bench-kotlin-$RANDOM
answer=$(curl -s -X POST "http://$kin/" -H 'Content-Type: application/x-amz-json-1.1' \
  -H 'X-Amz-Target: Kinesis_20131202.CreateStream' -H "X-Amz-Date: $(date -u +%Y%m%dT%H%M%SZ)" \
  -H 'Authorization: AWS4-HMAC-SHA256 Credential=bench/20261124/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=0' \
  -d "{\"StreamName\":\"$stream\",\"ShardCount\":4}")
if [ -n "$answer" ]; then echo "CreateStream failed: $answer" >&2; exit 1; fi
sleep 1
listen proxy "$BIN/tern-fault-proxy" --upstream "http://$kin" --fake-writes
listen col "$BIN/tern-collector" --listen 127.0.0.1:0 --stream "$stream" \
  --kinesis-endpoint "http://$proxy" --write-key bench --app-id bench \
  --shutdown-delay-ms 0

mkdir -p target/bench-kotlin
rounds_file=target/bench-kotlin/rounds.jsonl
: > "$rounds_file"
echo "== track() on the JVM: Tern, Segment, PostHog ($ROUNDS rounds; each round's lines in $rounds_file)"
java -Xmx4g -Djna.library.path="$ROOT/$BIN" \
  -cp "bindings/kotlin/bench/target/classes:$(cat bindings/kotlin/bench/target/classpath.txt)" \
  dev.tern.bench.BenchMain --collector "http://$col" --rounds "$ROUNDS" --out "$rounds_file" ${BENCH_ARGS:-}

echo "== one crossing into the library, per event, by events per crossing"
java -Xmx1g -Djna.library.path="$ROOT/$BIN" \
  -cp "bindings/kotlin/bench/target/classes:$(cat bindings/kotlin/bench/target/classpath.txt)" \
  dev.tern.bench.CrossingBench

echo "== track() from Python (buffering only: the endpoint refuses connections)"
.venv/bin/python tools/bench-python-track.py
