# The two commands of the README. Both install what is missing first (Debian's
# postgresql, the tools venv in .venv/), say what they do, and stop what they start.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test bench tools lint clean-services

## make demo: run the main job end to end on this machine, against local services.
demo: tools
	@echo "==> building the binaries (first build takes several minutes)"
	$(CARGO) build --bins -p pipeline -p server -p deployer -p harness
	@echo "==> running the demo"
	$(CARGO) run -q -p harness --bin demo -- $(DEMO_ARGS)

## make test: run every test, against a private PostgreSQL and the AWS emulator.
test: tools
	@echo "==> running the test suite"
	$(CARGO) test --workspace --no-fail-fast

## make bench: every benchmark with its same-run baseline, then the ratios (bench/README.md).
bench: tools
	bash bench/run.sh

## make lint: what CI checks besides the tests.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

tools:
	@bash tools/bootstrap.sh
