# ufsim: one entry point. `make demo` runs the main job end to end; `make test` runs the tests.
# Every target creates the virtual environments it needs from pinned requirements.

PYTHON      ?= python3
VENV        := .venv
VENV_ORT    := .venv-ort119
VENV_SQLAMARR := .venv-sqlamarr
VENV_CHECKOV := .venv-checkov
BIN         := $(VENV)/bin
SHARED      ?= ../shared
PYTEST_ARGS ?=

.PHONY: help venv venv-ort119 venv-sqlamarr venv-checkov validate-pv test lint demo repository repository-cpu configs train validate bench clean

help:
	@echo "make demo        main job: embedded Triton + HepMC2 and Pythia events -> ntuple + report (runs/demo)"
	@echo "make test        all tests (unit, real local Triton, ONNX Runtime 1.19.2, Helm chart)"
	@echo "make repository  rebuild model_repository/ from the spec and export/models"
	@echo "make repository-cpu  model_repository_cpu/: the same with native TreeEnsemble GBDTs (CPU-only servers)"
	@echo "make train       retrain every reference model (export/models) from data and fixed seeds"
	@echo "make validate    write export/reports/validation.md"
	@echo "make validate-pv write export/reports/pv_sqlamarr.md (served PV model vs SQLamarr 0.0rc7)"
	@echo "make bench       benchmarks -> benchmarks/results (perf_analyzer needs libb64-0d)"

$(VENV)/.stamp: requirements/dev.txt export/pyproject.toml client/pyproject.toml deploy/local/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.1.1
	$(BIN)/pip install --quiet -r requirements/dev.txt
	$(BIN)/pip install --quiet --no-deps -e export -e client -e deploy/local
	touch $@

venv: $(VENV)/.stamp

$(VENV_ORT)/.stamp: requirements/ort-1.19.2.txt
	$(PYTHON) -m venv $(VENV_ORT)
	$(VENV_ORT)/bin/pip install --quiet -r requirements/ort-1.19.2.txt
	touch $@

venv-ort119: $(VENV_ORT)/.stamp

# SQLamarr (LHCb's stand-alone Lamarr) in its own environment: the reference the PV model is checked against.
$(VENV_SQLAMARR)/.stamp: requirements/sqlamarr.txt
	$(PYTHON) -m venv $(VENV_SQLAMARR)
	$(VENV_SQLAMARR)/bin/pip install --quiet -r requirements/sqlamarr.txt
	touch $@

venv-sqlamarr: $(VENV_SQLAMARR)/.stamp

validate-pv: venv venv-sqlamarr
	$(BIN)/python -m ufsim_export.validation.pv_sqlamarr --out export/reports

# checkov (tests/helm/test_checkov.py) would downgrade packages .venv pins: it gets its own environment.
$(VENV_CHECKOV)/.stamp: requirements/checkov.txt
	$(PYTHON) -m venv $(VENV_CHECKOV)
	$(VENV_CHECKOV)/bin/pip install --quiet -r requirements/checkov.txt
	touch $@

venv-checkov: $(VENV_CHECKOV)/.stamp

test: venv venv-ort119 venv-sqlamarr venv-checkov
	$(BIN)/ruff check export client deploy/local tests benchmarks
	$(BIN)/mypy -p ufsim_export -p ufsim_client -p ufsim_serve
	$(BIN)/pytest tests $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check export client deploy/local tests benchmarks
	$(BIN)/mypy -p ufsim_export -p ufsim_client -p ufsim_serve

configs: venv
	$(BIN)/ufsim-export configs --out model_repository

repository: venv
	$(BIN)/ufsim-export repository --models export/models --out model_repository

repository-cpu: venv
	$(BIN)/ufsim-export repository --models export/models --gbdt-implementation native --out model_repository_cpu

train: venv
	$(BIN)/ufsim-export train --data $(SHARED)/data/lamarr-trk-2016MU --out export/models
	$(MAKE) repository

validate: venv
	$(BIN)/ufsim-export validate --data $(SHARED)/data/lamarr-trk-2016MU --models export/models --out export/reports

demo: venv
	SHARED=$(SHARED) $(BIN)/python scripts/demo.py

bench: venv
	$(BIN)/pip install --quiet -r requirements/bench.txt
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf runs $(VENV) $(VENV_ORT) $(VENV_SQLAMARR) $(VENV_CHECKOV)
