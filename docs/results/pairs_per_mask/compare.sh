#!/bin/bash
# run by run: 32 pairs per real mask (this run) against 8 (the same generators' sets in gen128_warmstart / gen128_all)
cd "$(dirname "$0")/../../.."
for n in 8 4; do
  W=/work/runs/sp/g128ws$(if [ $n = 4 ]; then echo 4; fi)
  for m in seg_guided_diffusion siamese_diffusion; do
    python scripts/compare_runs.py --arm "$m@augmented" --base $W/results.json --new /work/runs/sp/ppm_ws$n/results.json \
      --base_name "8 per mask" --new_name "32 per mask" --regimes $n
  done
  for m in seg_guided_diffusion meddiff_ft; do
    python scripts/compare_runs.py --arm "$m@augmented" --base /work/runs/sp/g128all/results.json \
      --new /work/runs/sp/ppm_all$n/results.json --base_name "8 per mask" --new_name "32 per mask" --regimes $n
  done
done
