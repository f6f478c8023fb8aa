# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.nasq-installed
PYTEST_ARGS ?=

.PHONY: install bytecode demo test bench clean

$(STAMP): setup.cfg pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q --no-compile --disable-pip-version-check -e ".[full]"
	@# Byte-compile the environment once: where PYTHONDONTWRITEBYTECODE is set (as on the CI machines),
	@# every Python process (each CLI run, each Ray worker) would otherwise compile ray, torch and pandas
	@# again, about 15 s each here. A few vendored files that are not Python 3 fail to compile: ignored.
	-$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null 2>&1
	touch $(STAMP)

bytecode:
	@$(PY) -m compileall -q -j 0 nasq searchers trainables tests benchmarks > /dev/null

install: $(STAMP)

demo: install bytecode
	$(VENV)/bin/nasq demo

test: install bytecode
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
