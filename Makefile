# segvol: the two commands a newcomer runs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SEGVOL := $(VENV)/bin/segvol
STAMP := $(VENV)/.segvol-installed

.PHONY: setup demo lint test test-fast gpu-check clean-demo

# A CPU build of PyTorch first (a bare `torch` requirement would pull several GB of CUDA packages),
# then segvol itself in editable mode with the test tools.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0 \
	  || $(PY) -m pip install --quiet torch --index-url https://download.pytorch.org/whl/cpu
	$(PY) -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(VENV)/torch-pin.txt
	$(PY) -m pip install --quiet -e ".[dev]" -c $(VENV)/torch-pin.txt  # nnunetv2 must not swap the CPU torch
	touch $(STAMP)

setup: $(STAMP)

DEMO_RUN := demo-$(shell date +%Y%m%d-%H%M%S)

# phantoms -> train a small model on the CPU -> evaluate and report -> export to ONNX -> segment a scan
demo: $(STAMP)
	$(SEGVOL) synth imagecas --out data/demo --cases 8 --overwrite
	$(SEGVOL) train --dataset imagecas --config tiny --data data/demo --name $(DEMO_RUN)
	$(SEGVOL) evaluate --run models/$(DEMO_RUN)
	$(SEGVOL) report --run models/$(DEMO_RUN)
	$(SEGVOL) export-onnx --out models/model.onnx --overwrite
	$(SEGVOL) infer data/demo/8.img.nii.gz --model models/model.onnx --out-dir models/demo-output --overwrite --output seg,overlay
	@echo
	@echo "demo done: run folder models/$(DEMO_RUN) (metrics.csv, checkpoints, report.html with curves, scores and"
	@echo "overlays), ONNX model models/model.onnx, mask models/demo-output/8.img_seg.nii.gz on the grid of"
	@echo "data/demo/8.img.nii.gz (open both in any NIfTI viewer) and its picture models/demo-output/8.img_overlay.png"

# ruff (pycodestyle, pyflakes, bugbear, pyupgrade) and mypy, both configured in pyproject.toml
lint: $(STAMP)
	$(PY) -m ruff check segvol tests
	$(PY) -m mypy segvol

test: lint
	$(PY) -m pytest -q

test-fast: lint
	$(PY) -m pytest -q -m "not slow"

# On a machine with a CUDA GPU: the `gpu` test suite (CUDA training steps with AMP and GPU-side augmentation, DDP
# over NCCL when 2 GPUs exist, device-side inference transforms, ONNX Runtime's CUDA provider, CPU stitching when
# GPU memory is short), then `segvol bench` on the full model; figures go to docs/figures/ for docs/benchmarks.md.
GPU_BENCH := docs/figures/bench-gpu
gpu-check: $(STAMP)
	@$(PY) -c "import sys, torch; torch.cuda.is_available() or sys.exit('gpu-check: PyTorch sees no CUDA device here')"
	@$(PY) -c "import sys, onnxruntime as o; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" \
	  || { $(PY) -m pip uninstall --quiet -y onnxruntime && $(PY) -m pip install --quiet "onnxruntime-gpu>=1.18"; }
	$(PY) -m pytest -q -m gpu tests/gpu
	mkdir -p docs/figures
	$(PY) -c "import torch; print(torch.cuda.get_device_name(0))" | tee $(GPU_BENCH)-device.txt
	$(SEGVOL) bench --config imagecas --size full --cases 4 --steps 20 --device cuda --json $(GPU_BENCH).json \
	  | tee $(GPU_BENCH).txt
