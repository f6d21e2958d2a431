# Set-up and common tasks. Everything installs into .venv, so a fresh clone needs only python3.
#   make run    install, then train the quickstart (a RevLSTM on the synthetic repeat task, offline)
#   make verify install, then check exact reversal of a default RevGRU and RevLSTM
#   make test   install, then run the test suite
#   make bench  install, then time reverse vs store vs nn.LSTM (see docs/results.md)
#   make bench-lm  install, then time a whole language-model training step, RevLSTM vs LSTM
#   make sweep-repeat  install, then re-measure the repeat-task sweep of docs/results.md §7
#   make sweep-forgetting  install, then run the max-forgetting sweep of docs/results.md §12
#                      (the corpora: DATA=dir, default $REVRNN_DATA_DIR or ./data; rows go to runs/)
#   make gpu-check     install, then on a CUDA machine: exactness, speed against cuDNN, memory, a short
#                      training run; one JSON summary (scripts/gpu_check.py)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU wheel of torch is installed explicitly first: a bare "torch" requirement would pull a
# multi-GB CUDA build. GPU users install their own torch; the package accepts any torch>=2.2.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install run verify test bench bench-lm sweep-repeat sweep-forgetting gpu-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/revrnn train experiments/quickstart.yaml

verify: $(STAMP)
	$(VENV)/bin/revrnn verify-reversal

test: $(STAMP)
	$(PY) -m pytest -q -n auto  # one worker per core (pytest-xdist); each pins torch to one thread

bench: $(STAMP)
	$(PY) scripts/bench_engine.py

bench-lm: $(STAMP)
	$(PY) scripts/bench_lm.py

gpu-check: $(STAMP)
	$(PY) scripts/gpu_check.py

sweep-repeat: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) scripts/sweep_repeat.py --out runs/repeat_sweep.jsonl

sweep-forgetting: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) scripts/sweep_forgetting.py $(if $(DATA),--data-dir $(DATA)) --out runs/forgetting_sweep.jsonl

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
