#!/usr/bin/env bash
# Create .bench-venv: the environment of the external-truth bench (bench/external/).
#
# Run from the repository root:  bash bench/external/setup_env.sh
# Then:  .bench-venv/bin/python bench/accuracy.py --external
#
# The converters of other projects (torchtune, litgpt) declare dependencies that would pull
# another torch or large frameworks; they are installed with --no-deps beside a torch that is
# installed first and pinned (any other torch spec downloads a multi-GB CUDA build).
# torchvision and timm cannot be installed beside this torch, so nothing here needs them
# (open_clip imports torchvision at import time and is therefore not installed).
set -euo pipefail

VENV="${BENCH_VENV:-.bench-venv}"
PYTHON="${PYTHON:-python3}"

"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q)

# 1. torch first, pinned; nothing below may replace it.
"${PIP[@]}" "torch==2.13.0"
echo "torch==2.13.0" > "$VENV/torch-pin.txt"

# 2. our package and its light dependencies (torch is already satisfied).
"${PIP[@]}" -c "$VENV/torch-pin.txt" -e .

# 3. the converters' libraries: transformers with its (torch-free) dependencies; torchtune and
#    litgpt without theirs (torchao pinned to the release torchtune 0.6 was built against),
#    then the torch-free packages their imports need.
"${PIP[@]}" -c "$VENV/torch-pin.txt" "transformers>=4.40"
"${PIP[@]}" --no-deps "torchtune==0.6.1" "torchdata==0.11.0" "torchao==0.10.0" \
    "litgpt==0.5.13" lightning torchmetrics
"${PIP[@]}" -c "$VENV/torch-pin.txt" omegaconf tqdm lightning-utilities jsonargparse pyyaml \
    typing-extensions psutil packaging datasets Pillow sentencepiece tiktoken blobfile kagglehub

"$VENV/bin/python" - <<'PY'
import importlib

import torch

assert torch.__version__.startswith("2.13.0"), f"torch {torch.__version__} replaced the pin"
for name in ("transformers", "torchtune.models.convert_weights", "litgpt.model"):
    try:
        importlib.import_module(name)
        print(f"ok    {name}")
    except Exception as e:  # report, the bench skips what cannot import
        print(f"skip  {name}: {type(e).__name__}: {e}")
PY
