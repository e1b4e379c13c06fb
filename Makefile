# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install-dev run demo test lint bench mutation clean

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

# The second run: the store contract and the end-to-end set with the service on PostgreSQL (a throwaway
# cluster, tests/pg.py). The disk-full test is about the SQLite file's disk, so it runs on SQLite only.
PG_TESTS := tests/test_store_contract.py tests/test_end_to_end.py tests/test_never_drop.py \
	tests/test_retention.py tests/test_webhook.py \
	--deselect tests/test_never_drop.py::test_disk_full_then_freed_loses_nothing

test: $(STAMP)
	$(BIN)/pytest -q
	AGENTIC_OBS_TEST_STORE=postgres $(BIN)/pytest -q $(PG_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench dashboards
	$(BIN)/ruff format --check src tests bench dashboards
	$(BIN)/mypy

# Every benchmark the README's "Measured" section quotes, with the arguments it shows (about 100
# minutes, an estimate: the churn soak takes 30, servers/smd about 20, the plain soak 10, NAB with
# `forecast` about 9).
# A failing one does not stop the rest; the target fails at the end, naming each that failed.
DATA := ../shared/datasets
BENCH_RUNS := \
	"$(BIN)/python bench/webhook_load.py --seconds 10" \
	"$(BIN)/agentic-obs backtest rca $(DATA)/sockshop $(DATA)/nezha_ob" \
	"$(BIN)/agentic-obs backtest rca $(DATA)/sockshop $(DATA)/nezha_ob --shift 60" \
	"$(BIN)/agentic-obs backtest rca $(DATA)/sockshop $(DATA)/nezha_ob --shift 180" \
	"$(BIN)/agentic-obs backtest rca $(DATA)/sockshop $(DATA)/nezha_ob --shift 300" \
	"$(BIN)/python bench/rca_generalise.py $(DATA)/sockshop $(DATA)/nezha_ob --steps 0 60 300 --shift 0 60" \
	"$(BIN)/python bench/rca_generalise.py $(DATA)/nezha_ob --steps 120 300 600 --how last" \
	"$(BIN)/python bench/rca_speed.py --repeat 3" \
	"$(BIN)/python bench/rca_evidence.py $(DATA)/sockshop $(DATA)/nezha_ob" \
	"$(BIN)/python bench/replicas.py" \
	"$(BIN)/agentic-obs backtest nab $(DATA)/nab" \
	"$(BIN)/agentic-obs backtest nab $(DATA)/nab --detector discord" \
	"$(BIN)/agentic-obs backtest nab $(DATA)/nab --detector forecast" \
	"$(BIN)/agentic-obs backtest nab $(DATA)/nab --detector robust" \
	"$(BIN)/agentic-obs backtest nab $(DATA)/nab --detector changepoint" \
	"ANOMALY_THRESHOLD=0.5 $(BIN)/agentic-obs backtest nab $(DATA)/nab" \
	"ANOMALY_THRESHOLD=0.6 $(BIN)/agentic-obs backtest nab $(DATA)/nab" \
	"$(BIN)/agentic-obs backtest servers $(DATA)/servers/asd" \
	"$(BIN)/agentic-obs backtest servers $(DATA)/servers/smd" \
	"$(BIN)/python bench/servers_variants.py cache $(DATA)/servers" \
	"$(BIN)/python bench/servers_variants.py eval" \
	"$(BIN)/python bench/detect_quiet.py" \
	"$(BIN)/python bench/detect_quiet.py --threshold 0.5 --detectors default" \
	"$(BIN)/python bench/detect_throughput.py" \
	"$(BIN)/python bench/memory_recall.py --sizes 10000 100000 --queries 300 --local-queries 30" \
	"$(BIN)/python bench/actions_latency.py --incidents 200 --interval 1.0" \
	"$(BIN)/python bench/soak.py --minutes 10 --rate 50" \
	"$(BIN)/python bench/soak.py --churn --minutes 30" \
	"$(BIN)/python bench/soak.py --churn --minutes 12" \
	"$(BIN)/python bench/soak.py --churn --minutes 12 --no-memory" \
	"$(BIN)/python bench/correlation.py --faults 14 --pairs 3 --seed 1 --speedup 100" \
	"$(BIN)/python bench/crash_safety.py --seconds 30 --rate 1000 --kills 5 --groups 200 --seed 1"

bench: $(STAMP)
	@failed=""; \
	for run in $(BENCH_RUNS); do \
		echo "==> $$run"; \
		sh -c "$$run" || { echo "==> FAILED (exit $$?): $$run"; failed="$$failed\n  $$run"; }; \
	done; \
	if [ -n "$$failed" ]; then printf 'make bench: these failed:%b\n' "$$failed"; exit 1; fi; \
	echo "make bench: all passed"

# mutmut over the pure core ([tool.mutmut] in pyproject.toml), from scratch (its cache ignores new tests),
# one process; prints killed / survived / total and the score per module.
mutation: $(STAMP)
	rm -rf mutants; $(BIN)/mutmut run --max-children 1 >/dev/null; $(BIN)/mutmut results --all true | sed -E 's/^ *([a-z_.]+)\.x.*: (.*)$$/\1 \2/' | awk '{st = $$0; sub(/^[^ ]+ /, "", st); n[$$1]++; c[$$1" "st]++} END {for (m in n) printf "%s: %d killed / %d survived / %d no tests / %d timeout / %d total, score %.1f%%\n", m, c[m" killed"], c[m" survived"], c[m" no tests"], c[m" timeout"], n[m], 100*(c[m" killed"]+c[m" timeout"])/n[m]}' | sort

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
