# make demo   — set everything up and run the end-to-end demo
# make test   — set everything up and run the whole test suite (starts its own PostgreSQL)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup system test demo bench clean

$(BIN)/txmdb: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test,distributed]"
	touch $@

setup: $(BIN)/txmdb

system:
	bash scripts/system-deps.sh

test: setup system
	$(BIN)/python -m pytest -n 2 --dist loadfile

demo: setup
	$(BIN)/txmdb demo --out demo-out

bench: setup
	$(BIN)/python benchmarks/bench_startup.py

clean:
	rm -rf $(VENV) build dist *.egg-info demo-out
