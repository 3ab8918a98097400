#!/bin/bash
# Generators at the labels' 128 x 128 for 600 iterations (the preset's), seg-guided and Siamese-Diffusion, N = 8,
# `augmented` masks, against the 64 x 64 preset arms of docs/results/synthetic_photometric's baseline run
# (/work/runs/sp/base, the same machine): its draws, judge and real-only runs are copied, so both compare run by run.
set -e
cd "$(dirname "$0")/../../.."
S=/work/runs/sp/base; D=/work/runs/sp/g128
mkdir -p $D/runs/real $D/draws && cp -a $S/judge $D/ && cp -a $S/draws/N008_d0 $S/draws/N008_d1 $D/draws/
cp -a $S/runs/real/N008_* $D/runs/real/
grep -rlI "$S" $D | xargs -r sed -i "s#$S#$D#g"
python -m monai_siamese evaluate --preset demo --workers 2 --out $D \
  --regimes 8 --methods seg_guided_diffusion,siamese_diffusion --mask_sources augmented \
  --set 'gen_overrides={"spatial_size": [128, 128]}' \
  --set 'gen_infer_overrides={"sampler": "dpmpp_2m", "num_inference_steps": 10, "output_grid": "source", "spatial_size": [128, 128]}'
for m in seg_guided_diffusion siamese_diffusion; do
  python scripts/compare_runs.py --arm "$m@augmented" --base $S/results.json --new $D/results.json \
    --base_name "64 x 64" --new_name "128 x 128"
done
