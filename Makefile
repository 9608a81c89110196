# The two commands a newcomer needs:
#   make pipeline   set up .venv and run the whole DVC pipeline on the embedded sample
#   make test       set up .venv and run the test suite (what CI runs)
VENV ?= .venv
# The Python that makes .venv: 3.11 or later (e.g. make pipeline PYTHON=python3.12).
PYTHON ?= python3
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: pipeline test setup bench experiments gpu-wheels

# `dvc exp show` trimmed to what a sweep compares: the params that differ (and always the
# model kind and steps), validation PSNR, test PSNR and SSIM, training seconds and steps/s
# and render seconds per view (kept even where every row has the same: a sweep of render.*
# or video.* retrains nothing, and render.chunk changes only the render seconds), and
# run.machine where experiments trained on different machines; best validation PSNR first
# (pick by it: the test views stay a fair final score).
# Failed and queued experiments have no results of their own: `dvc queue status` lists them.
# Column patterns match from the start of the name; no path is named here (dvc.yaml's vars
# hold them): the dependency and output columns are those with a / or without a dot
# (models), but for the table's own (Experiment, rev, typ, parent); params and the
# training and render metrics are section.key, eval.json's psnr and ssim are kept by name.
EXP_DROP := .*loss|train\.psnr|train\.learning_rate|val\.seconds|.*/|(?!(Experiment|rev|typ|parent)$$)[^.]*$$
EXP_KEEP := (.*:)?(model\.kind|train\.steps|train\.seconds|train\.steps_per_second|render\.seconds_per_view|val\.psnr|psnr|ssim)$$

setup: $(VENV)/.installed

# The pipeline needs the project alone; the tests also pytest, PyYAML and Triton (the fused
# kernels' tests run in its interpreter on the CPU: ~640 MB a pipeline run has no use for).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

pipeline: setup
	python -m nerf.config  # the whole file, keys no stage reads included
	dvc repro

test: $(VENV)/.installed-test
	python -m pytest

bench: setup
	python -m bench.speed

# Run after `dvc exp run --queue ...` and `dvc queue start` (see the README); EXP_ARGS adds
# flags, e.g. EXP_ARGS=--md for a markdown table.
experiments:
	dvc exp show --only-changed --hide-workspace --hide-failed --hide-queued --sort-by val.psnr --sort-order desc \
	  --drop '$(EXP_DROP)' --keep '$(EXP_KEEP)' $(EXP_ARGS)

# For bench/gpu.sh on a lent GPU machine: the wheels its image lacks (it has torch, triton,
# numpy, torchmetrics, tqdm, matplotlib, pytest; not ruamel.yaml, which nerf.config reads
# params.yaml with), for its Python 3.12, into .gpu_wheels; carry that folder there.
# Pure Python: ruamel.yaml's optional C extension is not needed (nerf.config parses with pure=True).
gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
	  -c constraints.txt -d .gpu_wheels ruamel.yaml
