# Two commands for a fresh clone:  `make demo` runs the main job, `make test` the tests.
# Both create .venv on first use (torch pinned and installed first, so pip keeps it).
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
TORCH   := torch==2.14.1 torchvision==0.29.1
STAMP   := $(VENV)/.datacredit-installed
EXTRAS  ?= all,test

.PHONY: venv install test test-python test-cpp test-sanitize test-harness lint format demo bench clean docs

$(VPY):
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --upgrade pip
	$(VPY) -m pip install $(TORCH)

# Reinstalls the project whenever its sources change.
$(STAMP): $(VPY) pyproject.toml CMakeLists.txt $(shell find cpp cuda python cmake -type f 2>/dev/null)
	$(VPY) -m pip install ".[$(EXTRAS)]"
	case ",$(EXTRAS)," in *,test,*) $(VPY) -m pip install --no-deps "pyiqa==0.1.16";; esac
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

# The C++ tests and the kernel tests again, with the core, the tests and the extension built
# with -fsanitize=address,undefined (build/sanitize, RelWithDebInfo: no LTO, line numbers).
# Python itself is not instrumented, so libasan is preloaded, with libstdc++ (else ASan
# cannot find the real __cxa_throw and aborts on the first C++ exception); leak checking
# is off for the interpreter (CPython and numpy keep allocations alive until exit on
# purpose) and on for the C++ tests.  Any ASan or UBSan report aborts with a stack trace
# (pytest -s: uncaptured, so the report is not lost with the process).  The package is
# staged in build/sanitize/python so the installed/in-place extension is not touched.
SAN_BUILD := build/sanitize
SAN_ASAN  := halt_on_error=1:abort_on_error=1:strict_init_order=1
SAN_ENV   := UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 OMP_NUM_THREADS=2
test-sanitize: $(STAMP)
	$(VPY) -m pip install -q "pybind11>=2.12"  # a build requirement; here for CMake's find_package
	cmake -S . -B $(SAN_BUILD) -DDATACREDIT_SANITIZE=ON -DDATACREDIT_PYTHON=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DPython_EXECUTABLE=$(abspath $(VPY)) -Dpybind11_DIR="$$($(VPY) -m pybind11 --cmakedir)" >/dev/null
	cmake --build $(SAN_BUILD) -j2
	$(SAN_ENV) ASAN_OPTIONS=$(SAN_ASAN):detect_leaks=1 ctest --test-dir $(SAN_BUILD) --output-on-failure
	rm -rf $(SAN_BUILD)/python && mkdir -p $(SAN_BUILD)/python
	cp -r python/datacredit $(SAN_BUILD)/python/ && rm -f $(SAN_BUILD)/python/datacredit/_core*.so
	cp $(SAN_BUILD)/_core*.so $(SAN_BUILD)/python/datacredit/
	$(SAN_ENV) ASAN_OPTIONS=$(SAN_ASAN):detect_leaks=0 LD_PRELOAD="$$($(CXX) -print-file-name=libasan.so) $$($(CXX) -print-file-name=libstdc++.so)" \
	  PYTHONPATH=$(SAN_BUILD)/python $(VPY) -m pytest -q -s -p no:cacheprovider tests/test_kernels_*.py

# The bad-input harness alone (also part of `make test`): every case in a child process.
test-harness: $(STAMP)
	$(VPY) -m pytest -q tests/test_bad_inputs.py

# The documentation site (needs the [docs] extra): build/site, strict (a broken reference,
# a public name without a docstring or a documented parameter not in its signature fails).
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

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
