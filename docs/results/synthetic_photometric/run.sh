#!/bin/bash
# Photometric augmentation of the synthetic slices only (segmentation bundle 0.2.4, synthetic_intensity_prob), N = 8,
# every method on `augmented` masks, both arms on one machine (2026-12-07). The second run reuses the first one's
# draws, judge, real-only runs, generators and synthetic sets (everything but its synthetic arms' segmentation runs).
set -e
cd "$(dirname "$0")/../../.."
python -m monai_siamese evaluate --preset demo --regimes 8 --mask_sources augmented --workers 2 --out /work/runs/sp/base
mkdir -p /work/runs/sp/photo
tar -C /work/runs/sp/base --exclude='./runs/*@*' --exclude='./report.md' --exclude='./results.json' \
  --exclude='./figures' --exclude='./config.json' -cf - . | tar -C /work/runs/sp/photo -xf -
python -m monai_siamese evaluate --preset demo --regimes 8 --mask_sources augmented --workers 2 \
  --set 'seg_overrides={"intensity_prob": 0.0, "synthetic_intensity_prob": 0.5}' --out /work/runs/sp/photo
for m in seg_guided_diffusion siamese_diffusion meddiff_ft; do
  python scripts/compare_runs.py --arm "$m@augmented" --base /work/runs/sp/base/results.json \
    --new /work/runs/sp/photo/results.json --base_name "synthetic_intensity_prob 0" --new_name "synthetic_intensity_prob 0.5"
done
