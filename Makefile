# Each target creates or refreshes its own virtual environment in .venv
# (re-installed whenever pyproject.toml changes), so a fresh machine needs only
# Python 3 and pip.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp
WORKDIR ?= runs/quickstart

.PHONY: quickstart test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/kdjax train --config=configs/quickstart.py --workdir=$(WORKDIR)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 --dist=loadfile tests

clean:
	rm -rf $(VENV) runs
