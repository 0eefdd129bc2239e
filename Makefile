# lmdynamics: every target sets itself up on a fresh machine (virtualenv, pinned CPU torch, the package).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CONFIG given on the command line picks the config of whichever target runs.
TRAIN_CONFIG    := $(if $(filter command line,$(origin CONFIG)),$(CONFIG),configs/train/demo.yaml)
ANALYSIS_CONFIG := $(if $(filter command line,$(origin CONFIG)),$(CONFIG),configs/analysis/pythia-paper.yaml)
STAMP  := $(VENV)/.installed

.PHONY: install train test mutate bench analyze figures clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	DS_BUILD_OPS=0 $(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(PY) train/run.py fit --config $(TRAIN_CONFIG) $(ARGS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(ARGS)

# Mutation testing, not part of `make test`: metrics/, training/, store.py and analysis/summaries.py mutated one
# change at a time (mutmut; [tool.mutmut] in pyproject.toml), each mutant run against the covering tests among
# those modules' own tests; prints the surviving mutants and the score. MUTATE_JOBS workers (the machine's cores).
MUTATE_JOBS ?= 2
mutate: $(STAMP)
	rm -rf mutants && mkdir -p mutants
	@start=$$(date +%s); \
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/mutmut run --max-children $(MUTATE_JOBS) > mutants/run.log 2>&1 \
		|| { tail -c 3000 mutants/run.log; exit 1; }; \
	$(PY) tests/helpers/mutation_report.py; \
	echo "make mutate: $$(( $$(date +%s) - start )) s (log: mutants/run.log)"

bench: $(STAMP)
	$(PY) bench/run.py $(ARGS)

analyze: $(STAMP)
	$(PY) analysis/run.py --config $(ANALYSIS_CONFIG) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache mutants
