# The two commands of the README, each doing its own set-up on a fresh machine:
#   make run    crawl to chat model on embedded defaults (generated sample crawl, local Spark,
#               local output under data/run), reported to the local stack's Prefect server,
#               which it starts and leaves running (UI: http://127.0.0.1:4200; make down stops it)
#   make test   the test suite (starts its own SeaweedFS S3 server and local Spark; installs
#               Chromium from the system packages for the web chat test when it is missing)
#   make fuzz   10,000 mutated real WARCs through the reader (bench/fuzz_warc.py); prints the totals
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup browser run test fuzz bench clean up down

$(BIN)/crawl2chat: pyproject.toml
	@command -v java >/dev/null 2>&1 || { echo "installing Java 17 for Spark"; apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e ".[test]"
	@touch $@

setup: $(BIN)/crawl2chat

# The web chat test drives the system's Chromium (never a downloaded browser); without one it skips.
browser:
	@test -x /usr/bin/chromium || { echo "installing Chromium for the web chat test"; apt-get update -qq && apt-get install -y -qq chromium; } \
		|| echo "could not install Chromium: the web chat test will skip"

run: setup
	$(BIN)/crawl2chat run --output data/run

test: setup browser
	$(BIN)/python -m pytest -q

FUZZ_CASES ?= 10000
fuzz: setup
	$(BIN)/python bench/fuzz_warc.py --cases $(FUZZ_CASES) --json data/fuzz_warc.json

up: setup
	$(BIN)/crawl2chat up

down:
	@test ! -x $(BIN)/crawl2chat || $(BIN)/crawl2chat down

clean:
	rm -rf data .pytest_cache
