#!/bin/bash
# Generators at the labels' 128 x 128 for the preset's 600 iterations, every method, N = 4 and N = 8, `augmented`
# masks. Draws, judge and real-only runs come from docs/results/synthetic_photometric's baseline run
# (/work/runs/sp/base, same machine), the N = 8 seg-guided and Siamese-Diffusion generators and runs from
# docs/results/gen128_n8 (/work/runs/sp/g128): the evaluation's resume reuses them and trains what is missing (the
# N = 4 generators of all three methods, MedDiff-FT at N = 8, their sets and segmentation runs).
set -e
cd "$(dirname "$0")/../../.."
S=/work/runs/sp/base; G=/work/runs/sp/g128; D=/work/runs/sp/g128all
mkdir -p $D/runs/real $D/draws $D/generators
cp -a $S/judge $D/ && cp -a $S/draws/N00* $D/draws/ && cp -a $S/runs/real/N00* $D/runs/real/
cp -a $G/generators/* $D/generators/ && cp -a "$G/runs/seg_guided_diffusion@augmented" "$G/runs/siamese_diffusion@augmented" $D/runs/
grep -rlI "$S/" $D | xargs -r sed -i "s#$S/#$D/#g"
grep -rlI "$G/" $D | xargs -r sed -i "s#$G/#$D/#g"
python -m monai_siamese evaluate --preset demo --workers 2 --out $D --regimes 4,8 --mask_sources augmented \
  --set 'gen_overrides={"spatial_size": [128, 128]}' \
  --set 'gen_infer_overrides={"sampler": "dpmpp_2m", "num_inference_steps": 10, "output_grid": "source", "spatial_size": [128, 128]}'
# N = 8: paired against the 64 x 64 arms of the same machine, draws, seeds and real-only runs
for m in seg_guided_diffusion siamese_diffusion meddiff_ft; do
  python scripts/compare_runs.py --arm "$m@augmented" --base $S/results.json --new $D/results.json \
    --base_name "64 x 64" --new_name "128 x 128" --regimes 8
done
# N = 4: against the committed preset's 64 x 64 `augmented` arms (another machine: gains compared, run by run)
python docs/results/gen128_all/compare_n4.py docs/results/eval_demo_augmented/results.json $D/results.json
