#!/usr/bin/env bash
# tern-lake's ingest cost per stage beside Python deltalake.write_deltalake (the anchor), in CPU
# seconds, interleaved ROUNDS times in one run; then the peak RSS of a 1M-id dedup window.
# Usage: tools/bench-lake.sh [ROUNDS] [ROWS]   (make bench-lake)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
rows=${2:-300000}
out="$PWD/target/bench-lake"
mkdir -p "$out"
# The release profile without LTO: the same optimisation level, a build that fits the machine.
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
cargo bench -q -p tern-lake --bench ingest --no-run
for round in $(seq 1 "$rounds"); do
  echo "round $round"
  cargo bench -q -p tern-lake --bench ingest -- stages --rows "$rows" --out "$out" | tee -a "$out/tern.jsonl"
  .venv/bin/python tools/lake/bench_write.py "$out" | tee -a "$out/python.jsonl"
done
cargo bench -q -p tern-lake --bench ingest -- window --rows 1000000 --out "$out" | tee "$out/window.json"
