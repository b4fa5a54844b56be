# Quick start: `make run` supervises etc/mcp-supervisor.toml; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench venv install uninstall clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

venv: $(STAMP)

# Install as a service (system when root, else --user): deploy/install.sh; e.g.
#   sudo make install INSTALL_ARGS="--job /path/to/analysis_automation.py --job-time 09:00"
install:
	bash deploy/install.sh $(INSTALL_ARGS)

uninstall:
	bash deploy/install.sh --uninstall $(INSTALL_ARGS)

run: $(STAMP)
	MCP_SUPERVISOR_USER=$$(id -un) MCP_SUPERVISOR_PYTHON=$(abspath $(BIN))/python MCP_SUPERVISOR_BIN=$(abspath $(BIN)) $(BIN)/mcp-supervisor --config etc/mcp-supervisor.toml

# TEST_WORKERS=2: two pytest-xdist workers (2 cores; most tests wait on child processes); tests sharing
# a module/session fixture stay on one worker (tests/conftest.py). Serial (0) by default until
# test_e2e's module daemon losing its socket under two workers is understood (seen 2 of 2 runs).
# --durations: the slowest tests in every CI log, to keep the suite within its ~10 min.
TEST_WORKERS ?= 0
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup --durations=25 tests

lint: $(STAMP)
	$(BIN)/ruff check mcp_supervisor tests bench
	$(BIN)/mypy --strict mcp_supervisor

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
