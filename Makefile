# The two commands of the README, each doing its own set-up on a fresh machine:
#   make run    the whole data flow on embedded defaults (generated sample crawl, local Spark,
#               Prefect's local server on SQLite, local output under data/run)
#   make test   the test suite (starts its own SeaweedFS S3 server and local Spark; installs
#               Chromium from the system packages for the web chat test when it is missing)
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup browser run test bench clean

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

clean:
	rm -rf data .pytest_cache
