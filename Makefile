# Two commands for a newcomer: `make demo` and `make test`. Both bootstrap .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Deployment tooling (terraform tests against moto, checkov, ansible-lint) lives in its own venv:
# its pins would fight the pipeline's.
INFRA       := .venv-infra
INFRA_STAMP := $(INFRA)/.installed

.PHONY: demo test setup setup-infra check-java check-chromium jars jars-demo bench clean

demo: setup check-java jars-demo
	$(BIN)/streamsight demo

# Lint and types first (ruff, mypy: pinned in requirements.lock), then the suite. The two venvs
# install side by side (two jobs: each pip is mostly one core), then the jars; Chromium for the
# dashboard test (Debian's package, scripts/check-chromium).
test:
	@$(MAKE) --no-print-directory -j2 setup-infra check-java check-chromium jars
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The three benchmarks of docs/benchmarks.md, one after the other (about 15 minutes).
bench: setup check-java jars
	$(BIN)/streamsight bench producer --events 2000000
	$(BIN)/streamsight bench capacity --events 2000000
	$(BIN)/streamsight bench sustained --rate 20000 --seconds 30 --warmup-seconds 60

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found " + sys.version.split()[0] + ")")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

# The JVM jars of pom.xml (Apache Kafka; Spark's Kafka connector and Delta Lake; hadoop-aws; Hadoop's
# HDFS daemons; s3proxy) into .jvm/: Maven fetches them once per machine (~/.m2), later runs are
# offline. streamsight/jars.py says what it does. Then the Spark driver's class-data-sharing archive
# (streamsight/spark.py, once per Java and PySpark). The demo needs Kafka's and Spark's only (a command
# that needs another profile resolves it when first run).
jars: setup check-java
	@$(BIN)/python -m streamsight.jars >/dev/null
	@$(BIN)/python -m streamsight.spark >/dev/null || echo "streamsight: no class-data-sharing archive (a speed-up only)"

jars-demo: setup
	@$(BIN)/python -m streamsight.jars broker spark >/dev/null

setup-infra: $(INFRA_STAMP)

$(INFRA_STAMP): requirements-infra.lock
	@test -x $(INFRA)/bin/python || $(PYTHON) -m venv $(INFRA)
	$(INFRA)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-infra.lock
	@touch $(INFRA_STAMP)

check-java:
	@scripts/check-java

check-chromium:
	@scripts/check-chromium

clean:
	rm -rf var/ .pytest_cache
