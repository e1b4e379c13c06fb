# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install-dev run demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install-dev: $(STAMP)

run: $(STAMP)
	$(BIN)/agentic-obs serve

demo: $(STAMP)
	$(BIN)/agentic-obs demo

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench dashboards
	$(BIN)/ruff format --check src tests bench dashboards
	$(BIN)/mypy

# Every benchmark at its documented settings (about 30 minutes; the soak alone takes 10).
bench: $(STAMP)
	$(BIN)/python bench/webhook_load.py
	$(BIN)/python bench/rca_speed.py --repeat 3
	$(BIN)/python bench/detect_throughput.py
	$(BIN)/agentic-obs backtest nab ../shared/datasets/nab
	$(BIN)/python bench/memory_recall.py --local-queries 30
	$(BIN)/python bench/actions_latency.py
	$(BIN)/python bench/crash_safety.py
	$(BIN)/python bench/soak.py --minutes 10

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
