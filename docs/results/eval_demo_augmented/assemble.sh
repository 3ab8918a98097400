#!/bin/bash
# The demo preset with mask sources regime and augmented (all three methods, N = 4 and 8), assembled from the
# committed run (eval_full_fresh: generators, draws, judge, real-only and regime runs) and the augmented-only runs
# of docs/results/mask_source_usefulness (src_ab: seg-guided, aug_others: the other two): every step is cached,
# this invocation writes the report.
cd /work/main
export PYTHONPATH=/work/main MONAI_SIAMESE_BUNDLES=/work/main/bundles
/work/main/.venv/bin/python -m monai_siamese evaluate --preset demo --workers 1 --out /work/runs/preset_aug \
  --mask_sources "regime;augmented"
echo "EVAL DONE $? $(date)"
