# churnwatch — `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install native tools kafka check chaos-loop demo test lint typecheck unit agent integration reliability schemas dashboards bench soak replay-cdnow backtest-cdnow calibrate clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,rocksdb,bench]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install churnwatch with its dev tools (.venv/bin/churnwatch)

native: $(STAMP) ## Compile the hot domain modules with mypyc into .cache/native (only when their sources changed)
	@mkdir -p .cache; $(BIN)/python -c "import retention.compiled as c; c.current() or c.build()" \
	  > .cache/native-build.log 2>&1 || { cat .cache/native-build.log; exit 1; }
	@$(BIN)/python -c "import retention.compiled as c; print('compiled modules:', ', '.join(c.MODULES), '(current)' if c.current() else '(NOT current)')"

demo: native ## Run the demo: embedded broker, a worker, live events (DEMO_ARGS="--duration 60")
	$(BIN)/churnwatch demo $(DEMO_ARGS)

tools: ## Install prometheus (+promtool), redis-server, docker-compose, Java and Maven (Debian) if missing; needs root
	@command -v promtool >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1 \
	  && command -v docker-compose >/dev/null 2>&1 && command -v java >/dev/null 2>&1 \
	  && command -v mvn >/dev/null 2>&1 || { \
	  echo "installing Debian packages prometheus, redis-server, docker-compose, default-jre-headless and maven"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    prometheus redis-server docker-compose default-jre-headless maven >/dev/null; }
	@promtool --version | head -1
	@redis-server --version
	@docker-compose version | head -1
	@java -version 2>&1 | head -1

#: The local Apache Kafka's jars (streams/kafka_local.py), fetched once from Maven Central.
KAFKA_VERSION := $(shell sed -n 's/^KAFKA_VERSION = "\(.*\)"$$/\1/p' streams/kafka_local.py)
KAFKA_LIBS    := .cache/kafka-$(KAFKA_VERSION)/lib
KAFKA_STAMP   := $(KAFKA_LIBS)/.complete

$(KAFKA_STAMP): deploy/kafka/pom.xml
	mvn -q -B -f deploy/kafka/pom.xml -Dkafka.version=$(KAFKA_VERSION) \
	  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(KAFKA_LIBS)
	@touch $@

kafka: tools $(KAFKA_STAMP) ## Fetch Apache Kafka's jars for the local broker (--embedded kafka) into .cache/
	@echo "Apache Kafka $(KAFKA_VERSION): $$(ls $(KAFKA_LIBS)/*.jar | wc -l) jars in $(KAFKA_LIBS)"

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy on the package
	$(BIN)/mypy

#: The soak test (2 minutes of one worker at a fixed 250 events/s, which it barely
#: loads) and then the unit and agent tiers (no broker; CPU-bound) run alongside the
#: integration tier, which spends most of its time waiting on brokers and workers;
#: their output is printed when all are done, and any failing fails the target.
SOAK_TEST = tests/integration/test_soak.py

check: native lint typecheck ## Lint, type-check, unit and agent tiers: no broker, a few minutes
	$(BIN)/pytest tests/unit tests/agent -q -p no:cacheprovider $(PYTEST_ARGS)

test: native tools kafka lint typecheck ## Lint, type-check and run every test tier (integration on Apache Kafka)
	@mkdir -p out; \
	{ $(BIN)/pytest $(SOAK_TEST) -p no:cacheprovider --basetemp=$(CURDIR)/out/soak-tmp \
	    > out/soak-test.log 2>&1; echo $$? > out/soak-test.status; \
	  $(BIN)/pytest tests/unit tests/agent -p no:cacheprovider $(PYTEST_ARGS) \
	    > out/units-test.log 2>&1; echo $$? > out/units-test.status; } & side=$$!; \
	trap 'kill $$side 2>/dev/null' INT TERM; \
	echo "$(SOAK_TEST), then tests/unit and tests/agent, run alongside (out/soak-test.log, out/units-test.log)"; \
	$(BIN)/pytest tests/integration --ignore=$(SOAK_TEST) $(PYTEST_ARGS); status=$$?; \
	wait $$side; soak_status=$$(cat out/soak-test.status); units_status=$$(cat out/units-test.status); \
	echo "---- $(SOAK_TEST), run alongside the suite ----"; cat out/soak-test.log; \
	echo "---- tests/unit and tests/agent, run alongside the suite ----"; cat out/units-test.log; \
	echo "integration exit $$status, soak exit $$soak_status, unit+agent exit $$units_status"; \
	[ $$status -eq 0 ] && [ $$soak_status -eq 0 ] && [ $$units_status -eq 0 ]

unit: native ## Pure unit tests only
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

agent: native ## Agent tests (Faust test context, no broker)
	$(BIN)/pytest tests/agent $(PYTEST_ARGS)

integration: native tools kafka ## Integration tests on Apache Kafka (CHURNWATCH_TEST_BROKER=tansu: Tansu)
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

RELIABILITY_TESTS = tests/integration/test_chaos.py tests/integration/test_redelivery_order.py \
  tests/integration/test_fuzz_worker.py tests/integration/test_recovery.py tests/integration/test_soak.py

reliability: native tools kafka ## Chaos, duplicates/order, fuzz, recovery and soak tests, then their closing figures
	@mkdir -p out && rm -f out/reliability.jsonl
	CHURNWATCH_RELIABILITY_OUT=$(CURDIR)/out/reliability.jsonl $(BIN)/pytest -m '' $(RELIABILITY_TESTS) $(PYTEST_ARGS); \
	  status=$$?; $(BIN)/python -m tests.reliability out/reliability.jsonl; exit $$status

CHAOS_RUNS ?= 10

chaos-loop: native tools kafka ## Both chaos tests CHAOS_RUNS times in a row (default 10), stopping at the first failure
	@for i in $$(seq 1 $(CHAOS_RUNS)); do \
	  echo "== chaos pass $$i of $(CHAOS_RUNS) =="; \
	  $(BIN)/pytest tests/integration/test_chaos.py -q -p no:cacheprovider $(PYTEST_ARGS) \
	    || { echo "chaos pass $$i failed after $$((i - 1)) clean passes"; exit 1; }; \
	done; echo "$(CHAOS_RUNS) of $(CHAOS_RUNS) chaos passes clean"

dashboards: $(STAMP) ## Regenerate deploy/grafana/dashboards/ from deploy/grafana/build.py
	$(BIN)/python deploy/grafana/build.py

schemas: $(STAMP) ## Regenerate schemas/json/ from the structs
	$(BIN)/python -m schemas.jsonschema

bench: native kafka ## Run the benchmarks on Apache Kafka (prints measured figures): validation, pipeline, recovery and memory (~30 min)
	$(BIN)/python -m bench.validation
	$(BIN)/python -m bench.pipeline $(BENCH_ARGS)
	$(BIN)/python -m bench.recovery $(RECOVERY_ARGS)

soak: native kafka ## Soak one worker 10 min at 300 events/s: RSS and lag over time (SOAK_ARGS="--duration 120")
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

replay-cdnow: native ## Replay the CDNOW purchase log (writes out/cdnow-customers.jsonl, out/cdnow-report.json)
	$(BIN)/churnwatch replay "$$($(BIN)/python -c 'import lifetimes,os;print(os.path.join(os.path.dirname(lifetimes.__file__),"datasets","CDNOW_master.txt"))')" \
	  --format cdnow --as-of 1998-07-01T00:00:00Z --customers out/cdnow-customers.jsonl \
	  --report out/cdnow-report.json

CDNOW = "$$($(BIN)/python -c 'import lifetimes,os;print(os.path.join(os.path.dirname(lifetimes.__file__),"datasets","CDNOW_master.txt"))')"

backtest-cdnow: native ## Backtest the risk score on CDNOW (scores at 1997-10-01, holdout to 1998-07-01)
	$(BIN)/churnwatch backtest $(CDNOW) --format cdnow --calibration-end 1997-10-01T00:00:00Z \
	  --holdout-end 1998-07-01T00:00:00Z --out out/cdnow-backtest.json

calibrate: native ## Re-make retention/risk_defaults.json (CDNOW behaviour + generated feedback)
	mkdir -p out/calibration
	$(BIN)/churnwatch fit $(CDNOW) --format cdnow --as-of 1997-06-01T00:00:00Z \
	  --out out/calibration/cdnow-model.json
	$(BIN)/churnwatch calibrate $(CDNOW) --format cdnow --as-of 1997-06-01T00:00:00Z \
	  --model out/calibration/cdnow-model.json --fit intercept,recency,frequency,spend,expected \
	  --out out/calibration/behaviour.json
	$(BIN)/churnwatch generate --out out/calibration/synthetic.jsonl --customers 5000 \
	  --days 540 --seed 11 --end 2025-01-01T00:00:00Z --clean
	$(BIN)/churnwatch fit out/calibration/synthetic.jsonl --as-of 2024-09-01T00:00:00Z \
	  --out out/calibration/synthetic-model.json
	$(BIN)/churnwatch calibrate out/calibration/synthetic.jsonl --as-of 2024-09-01T00:00:00Z \
	  --base out/calibration/behaviour.json --model out/calibration/synthetic-model.json \
	  --fit frequency_drop,spend_drop,experiences,detractor,low_csat \
	  --out retention/risk_defaults.json

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info
