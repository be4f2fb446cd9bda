# Two commands do everything: `make run` and `make test`. Both create .venv when it is missing
# and re-install only when pyproject.toml changed (the stamp files below).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned in pyproject.toml and installed in the same pip command as the project,
# so pip never resolves torch on its own (which would fetch a multi-GB CUDA build).
TORCH := torch==2.13.0

.PHONY: run test test-fast bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)" -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)" -e ".[test]"
	touch $(VENV)/.installed $@

# The demo leaves out the adversarially trained whole teacher (a reference over the budget, and on a
# CPU the longest job, about half of a run's CPU time); `rcnas run` alone includes it.
run: $(VENV)/.installed
	$(BIN)/rcnas run --out runs/default --no-teacher-at

# pytest exits 5 when it collected no test: that is a failure of the suite, not a pass.
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m "not slow" tests

# The CPU benchmarks behind bench/results/*.md (hours on 2 cores). The GPU ones (throughput at
# CIFAR scale, fidelity, configs/comparison-gpu.yaml) run with bench/gpu.sh on a GPU machine. The
# Fashion-MNIST full-test comparison starts from the teacher committed beside its runs.
bench: $(VENV)/.installed-test
	$(BIN)/rcnas bench throughput --out bench/results
	$(BIN)/rcnas bench build-table --jobs 2
	$(BIN)/rcnas bench tables --out bench/results
	$(BIN)/rcnas meta-train --buffers configs/meta-tables.yaml --out src/rcnas/assets/agent-digits
	$(BIN)/rcnas bench search --seeds 100 --jobs 2 --out bench/results
	$(BIN)/rcnas bench adaptation --seeds 10 --jobs 2 --out bench/results
	$(BIN)/rcnas bench real-search --out bench/results
	$(BIN)/rcnas bench comparison --config configs/comparison-digits.yaml --out bench/results
	$(BIN)/rcnas bench comparison --config configs/comparison-fashion-cpu.yaml --out bench/results
	$(BIN)/rcnas bench comparison --config configs/comparison-mnist5k-cpu.yaml --out bench/results
	RCNAS_CACHE=$(CURDIR)/bench/results/comparison-fashion-cpu-full-test-runs/cache \
	  $(BIN)/rcnas bench comparison --config configs/comparison-fashion-cpu-full-test.yaml --jobs 2 --out bench/results
	$(BIN)/rcnas bench results --out bench/results

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) runs .pytest_cache
