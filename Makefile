# lmdynamics: every target sets itself up on a fresh machine (virtualenv, pinned CPU torch, the package).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# every target runs the one command, `lmdynamics VERB`: the console script beside $(PY) (else PY -m lmdynamics.cli)
LMDYNAMICS = $(if $(wildcard $(dir $(PY))lmdynamics),$(dir $(PY))lmdynamics,$(PY) -m lmdynamics.cli)
# CONFIG given on the command line picks the config of whichever target runs.
TRAIN_CONFIG    := $(if $(filter command line,$(origin CONFIG)),$(CONFIG),configs/train/demo.yaml)
ANALYSIS_CONFIG := $(if $(filter command line,$(origin CONFIG)),$(CONFIG),configs/analysis/pythia-paper.yaml)
STAMP  := $(VENV)/.installed
# The run `make saturation` and `make trajectories` analyse (the run `make train` writes).
RUN_DIR ?= runs/demo
.DEFAULT_GOAL := help

.PHONY: help configs install train sweep test test-fast mutate bench analyze saturation trajectories figures clean

help:  ## this list
	@echo "make targets (each sets up .venv on first use):"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  make \1\t\2/' | expand -t 22
	@echo "CONFIG=path picks the config of train/analyze/sweep/saturation; ARGS=\"...\" passes flags (e.g. ARGS=\"--ckpt_path last\");"
	@echo "RUN_DIR=runs/NAME picks the run of saturation/trajectories (default runs/demo)."
	@echo "Every target is one command: .venv/bin/lmdynamics VERB (.venv/bin/lmdynamics --help lists the verbs)."

configs: $(STAMP)  ## list the bundled configs (train and analysis)
	@$(LMDYNAMICS) configs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	DS_BUILD_OPS=0 $(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project

train: $(STAMP)  ## train the default model (configs/train/demo.yaml) with live measurements and a report
	$(LMDYNAMICS) fit --config $(TRAIN_CONFIG) $(ARGS)

# The sweep file has no default: CONFIG=configs/sweeps/X.yaml is required (ARGS="--workers 2", "--print_commands").
sweep: $(STAMP)  ## run a grid of runs: CONFIG=configs/sweeps/X.yaml (resumable; ARGS="--print_commands")
	$(if $(filter command line,$(origin CONFIG)),,$(error make sweep needs CONFIG=configs/sweeps/X.yaml (a sweep file)))
	$(LMDYNAMICS) sweep --config $(CONFIG) $(ARGS)

# The whole suite in TEST_JOBS pytest-xdist workers (default 2; TEST_JOBS=0: one process), a test file per worker
# (--dist loadfile: a module's shared fixtures are built once).
test: $(STAMP)  ## run the whole test suite (2 workers; GPU-marked tests skip without CUDA)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile --durations=15 $(ARGS)

# The inner loop: unit and property tests only. Tests that start a process or train end to end carry the `slow`
# marker; an unmarked test that starts a process fails in this run, saying so (tests/conftest.py).
# TEST_JOBS pytest-xdist workers (default 2, this machine's cores; TEST_JOBS=0 runs in one process).
TEST_JOBS ?= 2
test-fast: $(STAMP)  ## the fast inner loop (< 3 min here): every test not marked slow or gpu
	HF_HUB_OFFLINE=1 LMDYNAMICS_TEST_FAST=1 $(PY) -m pytest -q -m "not slow and not gpu" -n $(TEST_JOBS) --durations=10 $(ARGS)

# Mutation testing, not part of `make test`: the modules that compute what a user sees (metrics/, training/module.py
# and resume.py, store.py, summaries.py, saturation/, trajectories/, data/synthetic.py, models/heads.py,
# compare/, sweep.py, generate.py, the live trajectory and head callbacks) mutated one change at a time (mutmut),
# one module at a time, each mutant run against the module's covering fast tests that call the mutated function
# (tests/helpers/mutate.py: COVERING_TESTS); prints the score per module and keeps each module's survivors in
# mutants/<module>/report.txt. MODULES="saturation/signals.py ..." runs those modules; MUTANTS="glob ..." only
# those mutants of them (e.g. MUTANTS='lmdynamics.compare.runs.x_summarize*'); MUTATE_PARALLEL modules at once,
# MUTATE_JOBS workers each. Registered equivalent mutants are not run (reported as equivalent); CHECK_EQUIVALENTS=1
# runs them too. ELSEWHERE=1 then runs each survivor registered in tests/helpers/killed_elsewhere.py (a DDP or a
# device line) against the slow or GPU test that kills it, and counts it killed only when that test fails.
MUTATE_PARALLEL ?= 2
MUTATE_JOBS ?= 1
MUTANTS ?=
CHECK_EQUIVALENTS ?=
ELSEWHERE ?=
MODULES ?=
mutate: $(STAMP)  ## mutation testing, module by module (long: MODULES=... runs a few; durations in the note of issue 27)
	$(PY) tests/helpers/mutate.py --parallel $(MUTATE_PARALLEL) --jobs $(MUTATE_JOBS) $(if $(CHECK_EQUIVALENTS),--run-equivalents) $(if $(ELSEWHERE),--run-elsewhere) $(foreach m,$(MUTANTS),--mutants '$(m)') $(MODULES)

bench: $(STAMP)  ## benchmarks, printed side by side
	$(PY) bench/run.py $(ARGS)

analyze: $(STAMP)  ## offline analysis (default: the Pythia paper config; CONFIG=configs/analysis/demo-run.yaml)
	$(LMDYNAMICS) analyze --config $(ANALYSIS_CONFIG) $(ARGS)

saturation: $(STAMP)  ## saturation of RUN_DIR's val_loss (default runs/demo), or CONFIG=configs/analysis/saturation-pythia.yaml
ifeq ($(origin CONFIG),command line)
	$(LMDYNAMICS) saturation --config $(CONFIG) $(ARGS)
else
	@test -d $(RUN_DIR) || { echo "make saturation: $(RUN_DIR) does not exist yet: run make train first (or give RUN_DIR= or CONFIG=)" >&2; exit 2; }
	$(LMDYNAMICS) saturation --table $(RUN_DIR) --metric val_loss --out $(RUN_DIR)/saturation $(ARGS)
endif

trajectories: $(STAMP)  ## per-token trajectories of RUN_DIR (default runs/demo): recorded (or live), classified, reported
	$(LMDYNAMICS) trajectories run $(RUN_DIR) $(ARGS)

clean:  ## remove .venv and caches
	rm -rf $(VENV) .pytest_cache mutants
