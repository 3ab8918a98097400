#!/bin/bash
# Seg-guided as a rectified flow (its demo.json objective; Euler 10 steps, no guidance: `method_overrides` replaces the
# preset's DDPM-v + guidance 2) at the labels' 128 x 128, 600 iterations, `augmented` masks, N = 8 then N = 4, against
# the DDPM-v 128 x 128 arms of docs/results/gen128_all (/work/runs/sp/g128all), whose draws, judge and real-only runs
# are copied (same machine), so every arm compares run by run.
set -e
cd "$(dirname "$0")/../../.."
A=/work/runs/sp/g128all
for n in 8 4; do
  D=/work/runs/sp/g128rf$(if [ $n = 4 ]; then echo 4; fi)
  mkdir -p $D/runs/real $D/draws && cp -a $A/judge $D/ && cp -a $A/draws/N00${n}_d0 $A/draws/N00${n}_d1 $D/draws/
  cp -a $A/runs/real/N00${n}_* $D/runs/real/
  grep -rlI "$A/" $D | xargs -r sed -i "s#$A/#$D/#g"
  python -m monai_siamese evaluate --preset demo --workers 2 --out $D --regimes $n \
    --methods seg_guided_diffusion --mask_sources augmented \
    --set 'method_overrides={"seg_guided_diffusion": {"sampler": "euler"}}' \
    --set 'gen_overrides={"spatial_size": [128, 128]}' \
    --set 'gen_infer_overrides={"sampler": "dpmpp_2m", "num_inference_steps": 10, "output_grid": "source", "spatial_size": [128, 128]}'
  python scripts/compare_runs.py --arm "seg_guided_diffusion@augmented" --base $A/results.json --new $D/results.json \
    --base_name "DDPM-v, DPM-Solver++ 10, guidance 2" --new_name "rectified flow, Euler 10" --regimes $n
done
