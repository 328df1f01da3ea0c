# Set-up and main entry points. `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
JAR := server/target/sonco-fhir-server.jar
SERVER_SOURCES := server/pom.xml $(shell find server/src -type f 2>/dev/null)

.PHONY: install server-build demo demo-stop test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

server-build: $(JAR)

$(JAR): $(SERVER_SOURCES)
	mvn -B -q -Dstyle.color=never -f server/pom.xml package -DskipTests
	touch $@

# The demo's data (HAPI database, pseudonymisation key, identity crosswalk) lives in var/.
demo: install server-build
	$(BIN)/sonco-fhir key init
	$(BIN)/sonco-fhir server start
	-$(BIN)/sonco-fhir ingest hl7v2 examples/hl7v2
	-$(BIN)/sonco-fhir ingest fhir examples/fhir
	-$(BIN)/sonco-fhir ingest spice examples/spice
	-$(BIN)/sonco-fhir ingest hygen examples/hygen
	@# The example cohort has 14 prescriptions: the default suppression threshold (10) would hide
	@# nearly every cell, so the demo shows them all. Never do this with real data.
	$(BIN)/sonco-fhir indicators --suppression-threshold 0 --format html --output var/indicators.html --no-store
	$(BIN)/sonco-fhir indicators --suppression-threshold 0

demo-stop: install
	$(BIN)/sonco-fhir server stop

test: install server-build
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) server/target var .pytest_cache

# FHIR package (.tgz) of the conformance resources under profiles/, written to build/.
.PHONY: profiles-package
profiles-package: install
	$(BIN)/python -m sonco_fhir.profiles.package

# HL7 v2 benchmark (bench/hl7v2): throughput against python-hl7, memory, MLLP -> HAPI. Results in docs/benchmarks.md.
.PHONY: bench-hl7v2
bench-hl7v2: install server-build
	$(BIN)/python bench/hl7v2/bench.py --output build/bench-hl7v2.json

# Indicators benchmark: a synthetic cohort (PATIENTS, default 10000) loaded into a HAPI started on a free
# loopback port, or into the server at BENCH_URL. Results in build/bench-indicators.json.
.PHONY: bench-indicators
PATIENTS ?= 10000
bench-indicators: install server-build
	$(BIN)/python bench/indicators/bench.py --patients $(PATIENTS) $(if $(BENCH_URL),--url $(BENCH_URL))
