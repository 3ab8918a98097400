#!/bin/bash
# The coronal confirmation run (2026-12-07, 2-core VM, 45 min): coronal slices of the MNI152 template, the demo
# preset's settings, seg-guided generators, the old preset's mixture and `augmented` alone.
python docs/results/coronal_confirmation/build_coronal.py /work/runs/coronal_data
python -m monai_siamese evaluate --preset demo --workers 2 \
  --datalist /work/runs/coronal_data/datalist.json --methods seg_guided_diffusion \
  --mask_sources "augmented:0.5,interpolated:0.5;augmented" --out /work/runs/coronal_eval
python docs/results/coronal_confirmation/compare.py /work/runs/coronal_eval/results.json > docs/results/coronal_confirmation/compare.md
