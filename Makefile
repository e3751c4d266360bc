# The two commands of the README. Both install what is missing first (Debian's
# postgresql, the tools venv in .venv/), say what they do, and stop what they start.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test bench tools lint clean-services

## make demo: run the main job end to end on this machine, against local services.
# One cargo invocation builds every binary, with the same package set as `make test`
# (--workspace), so both resolve one feature set and share every dependency build; the
# demo then runs straight from the target dir. (`cargo run -p harness` would resolve
# features for harness alone and compile the AWS SDKs a second time.)
demo: tools
	@echo "==> building the binaries (first build takes several minutes)"
	$(CARGO) build --workspace --bins
	@echo "==> running the demo"
	@target_dir="$$($(CARGO) metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"; \
	  test -n "$$target_dir" || { echo "cargo metadata named no target directory" >&2; exit 1; }; \
	  exec "$$target_dir/debug/demo" $(DEMO_ARGS)

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
