# Two commands for a fresh clone:  `make demo` runs the main job, `make test` the tests.
# Both create .venv on first use (torch pinned and installed first, so pip keeps it).
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
TORCH   := torch==2.14.1 torchvision==0.29.1
STAMP   := $(VENV)/.datacredit-installed
EXTRAS  ?= all,test

.PHONY: venv install test test-python test-cpp lint format demo bench clean

$(VPY):
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --upgrade pip
	$(VPY) -m pip install $(TORCH)

# Reinstalls the project whenever its sources change.
$(STAMP): $(VPY) pyproject.toml CMakeLists.txt $(shell find cpp cuda python cmake -type f 2>/dev/null)
	$(VPY) -m pip install ".[$(EXTRAS)]"
	touch $(STAMP)

venv install: $(STAMP)

test: test-python test-cpp

test-python: $(STAMP)
	$(VPY) -m pytest -q

# The C++ tests and the example consumer, built standalone against the core (no Python).
test-cpp: $(STAMP)
	cmake -S . -B build/cpp -DPython_EXECUTABLE=$(abspath $(VPY)) >/dev/null
	cmake --build build/cpp -j2
	ctest --test-dir build/cpp --output-on-failure

lint: $(STAMP)
	$(VENV)/bin/ruff check python tests benchmarks scripts examples
	$(VENV)/bin/ruff format --check python tests benchmarks scripts examples
	$(VENV)/bin/clang-format --dry-run --Werror $(shell find cpp cuda -name '*.cpp' -o -name '*.hpp' -o -name '*.cu' -o -name '*.cuh')

format: $(STAMP)
	$(VENV)/bin/ruff check --fix python tests benchmarks scripts examples
	$(VENV)/bin/ruff format python tests benchmarks scripts examples
	$(VENV)/bin/clang-format -i $(shell find cpp cuda -name '*.cpp' -o -name '*.hpp' -o -name '*.cu' -o -name '*.cuh')

demo: $(STAMP)
	$(VENV)/bin/datacredit demo --out demo-out

clean:
	rm -rf build dist $(VENV)
