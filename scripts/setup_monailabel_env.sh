#!/usr/bin/env bash
# Creates a separate virtual environment for the MONAI Label integration (issue 8).
#
# monailabel cannot share the main `.venv`: monailabel 0.8.5 pins numpy < 2 (through pydicom-seg) and imports
# torchvision, whose PyPI build does not import beside the CPU torch 2.13 wheel. This venv takes torch 2.14.1 +
# torchvision 0.29.1 (a CUDA build that also runs on CPU), monailabel 0.8.5, numpy < 2, pydicom < 3 and this package.
# Measured on a 2-core machine: 7-11 min on an empty venv (mostly the 5.5 GB torch wheel and the resolve), ~1 min after.
#
# Usage: bash scripts/setup_monailabel_env.sh [VENV_DIR]   (default: .venv-monailabel in the repository root)
# Re-running is cheap: an existing venv whose imports work is kept (pip only checks the pins).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${1:-.venv-monailabel}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

TORCH_PIN="torch==2.14.1"
TORCHVISION_PIN="torchvision==0.29.1"
MONAILABEL_PIN="monailabel==0.8.5"
NUMPY_PIN="numpy<2"
# pydicom-seg (a monailabel requirement) imports pydicom._storage_sopclass_uids, removed in pydicom 3
PYDICOM_PIN="pydicom<3"

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install --quiet --upgrade pip
# torch + torchvision first and together, so that monailabel's requirements are satisfied by these builds
"$PY" -m pip install --quiet "$TORCH_PIN" "$TORCHVISION_PIN"
# monailabel with numpy < 2 in the same resolve; then this package (its monailabel extra adds the test client)
"$PY" -m pip install --quiet "$MONAILABEL_PIN" "$NUMPY_PIN" "$PYDICOM_PIN" "$TORCH_PIN" "$TORCHVISION_PIN"
"$PY" -m pip install --quiet -e ".[monailabel]" "$NUMPY_PIN" "$PYDICOM_PIN" "$TORCH_PIN" "$TORCHVISION_PIN" "$MONAILABEL_PIN"

"$PY" - <<'PYEOF'
import importlib.metadata as md

import monai
import monailabel
import monailabel.interfaces.app  # the server imports this: fails on a bad pydicom/pydicom-seg pair
import numpy
import torch
import torchvision

import monai_siamese

print("monai-label env:")
for name in ("monailabel", "monai", "torch", "torchvision", "numpy", "pytorch-ignite", "pydicom", "requests", "monai-siamese"):
    try:
        print(f"  {name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name}: not installed")
print(f"  torch.cuda.is_available()={torch.cuda.is_available()}")
PYEOF
echo "monailabel env ready in $VENV ($(($(date +%s) - start)) s)"
