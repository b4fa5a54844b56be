# Quick start: `make run` supervises etc/mcp-supervisor.toml; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	MCP_SUPERVISOR_USER=$$(id -un) MCP_SUPERVISOR_PYTHON=$(abspath $(BIN))/python MCP_SUPERVISOR_BIN=$(abspath $(BIN)) $(BIN)/mcp-supervisor --config etc/mcp-supervisor.toml

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

lint: $(STAMP)
	$(BIN)/ruff check mcp_supervisor tests bench
	$(BIN)/mypy --strict mcp_supervisor

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
