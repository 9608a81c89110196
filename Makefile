# The two commands a newcomer needs:
#   make pipeline   set up .venv and run the whole DVC pipeline on the embedded sample
#   make test       set up .venv and run the test suite (what CI runs)
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: pipeline test setup bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

pipeline: setup
	dvc repro

test: setup
	python -m pytest

bench: setup
	python -m bench.speed
