# Tern: `make demo` runs the pipeline end to end, `make test` runs every test.
# Both install what they need (npm packages for the local Kinesis server) on a fresh machine.

CARGO ?= cargo
NPM ?= npm

.PHONY: all deps build test test-spark demo analyze e2e lint fmt clean faketime fuzz fuzz-build bench-collector bench-lake bench-compact bench-clean bench-kotlin bindings

all: build

# kinesalite, pinned by package-lock.json. Its only native module (leveldown) is unused:
# the server runs in memory, so install scripts are skipped.
node_modules/.package-lock.json: package.json package-lock.json
	$(NPM) ci --ignore-scripts --no-audit --no-fund
	@touch $@

# libfaketime fakes a device's wall clock for the clock-skew scenario (Debian package
# faketime). Best effort: without it that one scenario says it did not run.
faketime:
	@command -v faketime >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -qq faketime >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq faketime >/dev/null 2>&1; }; }; } || \
	  echo "note: faketime not installed; the clock-skew scenario will not run"

# Python for the example stream consumer and its test (pinned in tools/requirements-dev.txt).
.venv/.installed: tools/requirements-dev.txt
	python3 -m venv .venv
	.venv/bin/pip install -q -r tools/requirements-dev.txt
	@touch $@

deps: node_modules/.package-lock.json faketime .venv/.installed

build:
	$(CARGO) build --workspace --bins

# uniffi bindings in library mode from the host build: Python into the package (with the
# library beside it), Kotlin and Swift into bindings/generated/ (git-ignored).
LIB := target/debug/libtern_bindings.so
bindings: build
	$(CARGO) build -q -p tern-bindings --lib
	$(CARGO) run -q -p uniffi-bindgen -- generate --library $(LIB) --language python --out-dir bindings/python/tern/_generated
	cp $(LIB) bindings/python/tern/_generated/
	touch bindings/python/tern/_generated/__init__.py
	$(CARGO) run -q -p uniffi-bindgen -- generate --no-format --library $(LIB) --language kotlin --out-dir bindings/generated/kotlin
	$(CARGO) run -q -p uniffi-bindgen -- generate --no-format --library $(LIB) --language swift --out-dir bindings/generated/swift

test: deps build bindings
	$(CARGO) test --workspace
	.venv/bin/python -m pytest -q tools/consumer bindings/python/tests
	cd bindings/kotlin && mvn -q -B test

# Spark (pyspark + delta-spark, local mode) reads a lake the real pipeline writes and agrees with
# `tern-lake sql` (tools/spark). The Delta jars come from Maven Central once and are cached in
# target/spark-ivy.
test-spark: deps build
	.venv/bin/python -m pytest -q tools/spark

demo: deps build
	$(CARGO) run -q -p tern-tools --bin tern-demo -- $(DEMO_ARGS)

# SQL over the lake that `make demo` left in target/demo-lake (an interactive prompt; pass a
# query as Q="SELECT ..." for one answer).
analyze: build
	@test -d target/demo-lake/events || { echo "no demo lake: run 'make demo' first"; exit 1; }
	$(CARGO) run -q -p tern-lake -- sql --lake target/demo-lake $(if $(Q),"$(Q)",)

# The full end-to-end scenario matrix; writes the summary table to docs/RELIABILITY.md.
e2e: deps build
	$(CARGO) run -q -p tern-tests --bin tern-e2e -- --write docs/RELIABILITY.md

# The batch decoder's fuzz target. `make fuzz` runs it for FUZZ_SECONDS with cargo-fuzz
# (nightly toolchain, sanitizers; the release profile without LTO, which only slows the
# sanitizer build, and with symbols, for readable crash reports); `make fuzz-build` only proves
# it builds (stable, a workspace member sharing the workspace's build), for CI.
FUZZ_SECONDS ?= 60
fuzz:
	command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd collector && CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_STRIP=none \
	  $(CARGO) +nightly fuzz run decode_batch fuzz/corpus/decode_batch -- -max_total_time=$(FUZZ_SECONDS)

fuzz-build:
	$(CARGO) build -p tern-collector-fuzz

# Collector throughput, latency, RSS and CPU per event (release build); see docs/BENCHMARKS.md.
bench-collector: deps
	tools/bench-collector.sh 3

# tern-lake's ingest cost per stage beside Python deltalake, and the dedup window's memory.
bench-lake: deps
	tools/bench-lake.sh 3

# Files per partition and a daily query's time before and after `tern-lake compact`.
bench-compact: deps
	tools/bench-compact.sh 60 7

# track() on the JVM beside Segment and PostHog (JMH and nanoTime latencies, calls/s, events
# delivered and lost, bytes per event), then the Python binding's per-call cost; release build,
# bindings generated from it. A Maven project of its own (bindings/kotlin/bench), outside `make test`.
BENCH_KOTLIN_ROUNDS ?= 2
bench-kotlin: deps
	tools/bench-kotlin.sh $(BENCH_KOTLIN_ROUNDS)

# Latency from the raw stream to the cleansed stream at the default commit interval (10 s):
# 120 s at 200 events/s through a real collector into `tern-lake ingest --clean-stream`.
bench-clean: deps build
	CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
	  $(CARGO) build --release -q -p tern-lake --bins
	.venv/bin/python tools/lake/bench_clean.py 120 200 target/release/tern-lake

# cargo-deny (deny.toml) checks the dependency tree's licences, duplicate versions and sources
# here; its advisories check needs the RustSec database from GitHub, which the development
# machines cannot reach, so only the GitHub workflow (.github/workflows/ci.yml) runs
# `cargo deny check advisories`. Installed once if missing, at a pinned version.
CARGO_DENY_VERSION := 0.20.2
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@$(CARGO) deny --version 2>/dev/null | grep -qx 'cargo-deny $(CARGO_DENY_VERSION)' || \
	  $(CARGO) install cargo-deny --locked --version $(CARGO_DENY_VERSION)
	$(CARGO) deny check licenses bans sources

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf node_modules
