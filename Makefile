# Tern: `make demo` runs the pipeline end to end, `make test` runs every test.
# Both install what they need (npm packages for the local Kinesis server) on a fresh machine.

CARGO ?= cargo
NPM ?= npm

.PHONY: all deps build test demo lint fmt clean

all: build

# kinesalite, pinned by package-lock.json. Its only native module (leveldown) is unused:
# the server runs in memory, so install scripts are skipped.
node_modules/.package-lock.json: package.json package-lock.json
	$(NPM) ci --ignore-scripts --no-audit --no-fund
	@touch $@

deps: node_modules/.package-lock.json

build:
	$(CARGO) build --workspace --bins

test: deps build
	$(CARGO) test --workspace

demo: deps build
	$(CARGO) run -q -p tern-tests --bin tern-demo -- $(DEMO_ARGS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf node_modules
