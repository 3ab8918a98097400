#!/usr/bin/env bash
# Creates a separate virtual environment for the MONAI Label integration (issue 8).
#
# monailabel cannot share the main `.venv`: monailabel 0.8.5 pins numpy < 2 (through pydicom-seg) and pydicom-seg
# needs pydicom < 3. Two ways to build it:
#
#   (default) lean: the CPU torch 2.13.0 wheel (local disk), monailabel 0.8.5 itself without its two requirements that
#             pull torchvision (torchvision, and sam2, which needs it), every other requirement of monailabel as it
#             declares it, numpy < 2, pydicom < 3 and this package. About 3.3 GB; 2-3 min on 2 cores. What the app
#             imports (monailabel's server, datastore, infer_v2/scoring interfaces, BundleTrainTask) never imports
#             torchvision; monailabel's own DeepEdit/scribbles/SAM2/bundle-infer tasks do, and are not available here.
#             This is the venv `.ci/run` tests: the CUDA build of the full one does not fit every CI disk (a run
#             failed with "No space left on device" while pip was downloading it).
#   --full:   monailabel 0.8.5 with everything it asks for: torch 2.14.1 + torchvision 0.29.1 (a CUDA build that also
#             runs on CPU; about 5.5 GB in the venv plus ~3 GB of downloads), for monailabel's other sample tasks.
#
# Usage: bash scripts/setup_monailabel_env.sh [--full] [VENV_DIR]   (default: .venv-monailabel in the repository root)
# Re-running is cheap: an existing venv is kept (pip only checks the pins).
set -euo pipefail
cd "$(dirname "$0")/.."

FULL=0
if [ "${1:-}" = "--full" ]; then
    FULL=1
    shift
fi
VENV="${1:-.venv-monailabel}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
# no second copy of every wheel in pip's cache: the disk is what limits this on a small machine
export PIP_NO_CACHE_DIR=1

MONAILABEL_PIN="monailabel==0.8.5"
NUMPY_PIN="numpy<2"
# pydicom-seg (a monailabel requirement) imports pydicom._storage_sopclass_uids, removed in pydicom 3
PYDICOM_PIN="pydicom<3"
if [ "$FULL" = 1 ]; then
    TORCH_PINS=("torch==2.14.1" "torchvision==0.29.1")
else
    TORCH_PINS=("torch==2.13.0")
fi

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install --quiet --upgrade pip
# torch first, so that nothing later resolves another build of it
"$PY" -m pip install --quiet "${TORCH_PINS[@]}"
if [ "$FULL" = 1 ]; then
    # monailabel with numpy < 2 in the same resolve; then this package (its monailabel extra adds the test client)
    "$PY" -m pip install --quiet "$MONAILABEL_PIN" "$NUMPY_PIN" "$PYDICOM_PIN" "${TORCH_PINS[@]}"
    "$PY" -m pip install --quiet -e ".[monailabel]" "$NUMPY_PIN" "$PYDICOM_PIN" "${TORCH_PINS[@]}" "$MONAILABEL_PIN"
else
    "$PY" -m pip install --quiet --no-deps "$MONAILABEL_PIN"
    # monailabel's declared requirements, read from its installed metadata, less sam2 and MONAI's torchvision extra
    mapfile -t REQS < <("$PY" - <<'PYEOF'
import importlib.metadata as md

try:
    from packaging.requirements import Requirement
except ImportError:  # not installed yet in this venv: pip vendors the same module
    from pip._vendor.packaging.requirements import Requirement

for line in md.requires("monailabel") or []:
    req = Requirement(line)
    if req.name in ("sam2", "torchvision") or (req.marker and "extra" in str(req.marker)):
        continue
    if req.marker and not req.marker.evaluate():
        continue
    req.marker = None
    if req.name == "monai":
        # MONAI's optional extras that pull torchvision (directly, or through a package that needs it) or that the
        # app never imports (remote stores and trackers: gdown, lmdb, mlflow, openslide)
        req.extras = {e for e in req.extras if e not in ("torchvision", "gdown", "lmdb", "mlflow", "openslide")}
    print(req)
PYEOF
)
    "$PY" -m pip install --quiet "${REQS[@]}" "$NUMPY_PIN" "$PYDICOM_PIN" "${TORCH_PINS[@]}"
    # this package and the test client: the monailabel extra without monailabel itself (installed above). pip ends
    # with "ERROR: ... monailabel 0.8.5 requires sam2, which is not installed": expected here, and not a failure
    "$PY" -m pip install --quiet -e . "$NUMPY_PIN" "$PYDICOM_PIN" "${TORCH_PINS[@]}" \
        "nilearn>=0.10" "requests>=2.28" "pytest>=7.4" "pytest-timeout>=2.2"
fi

"$PY" - <<'PYEOF'
import importlib.metadata as md

import monai
import monailabel
import monailabel.interfaces.app  # the server imports this: fails on a bad pydicom/pydicom-seg pair
import numpy
import torch

import monai_siamese
import monai_siamese.monailabel_app.main  # the app's MONAILabelApp and tasks: fails if they need a missing package

print("monai-label env:")
for name in ("monailabel", "monai", "torch", "torchvision", "numpy", "pytorch-ignite", "pydicom", "requests", "monai-siamese"):
    try:
        print(f"  {name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name}: not installed")
print(f"  torch.cuda.is_available()={torch.cuda.is_available()}")
PYEOF
echo "monailabel env ready in $VENV ($(($(date +%s) - start)) s)"
