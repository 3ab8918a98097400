#!/bin/bash
# MedDiff-FT fine-tuned from the seg-guided flow (the generators of run.sh, reused), sampled with classifier-free
# guidance 2 as the preset samples its DDPM-v MedDiff-FT (run.sh sampled it unguided, as the seg-guided flow).
set -e
cd "$(dirname "$0")/../../.."
for n in 8 4; do
  S=/work/runs/sp/g128ws$(if [ $n = 4 ]; then echo 4; fi)
  D=/work/runs/sp/g128wsg$(if [ $n = 4 ]; then echo 4; fi)
  mkdir -p $D/runs $D/generators/meddiff_ft
  cp -a $S/judge $S/draws $D/ && cp -a $S/runs/real $D/runs/ && cp -a $S/generators/seg_guided_diffusion $D/generators/
  for d in 0 1; do
    mkdir -p $D/generators/meddiff_ft/N00${n}_d$d
    cp -a $S/generators/meddiff_ft/N00${n}_d$d/{models,train} $D/generators/meddiff_ft/N00${n}_d$d/
  done
  grep -rlI "$S/" $D | xargs -r sed -i "s#$S/#$D/#g"
  python -m monai_siamese evaluate --preset demo --workers 2 --out $D --regimes $n --methods meddiff_ft \
    --mask_sources augmented --set 'method_overrides={"meddiff_ft": {"sampler": "euler", "guidance_scale": 2.0}}' \
    --set finetune_iterations=300 --set 'gen_overrides={"spatial_size": [128, 128]}' \
    --set 'gen_infer_overrides={"sampler": "dpmpp_2m", "num_inference_steps": 10, "output_grid": "source", "spatial_size": [128, 128]}'
  python scripts/compare_runs.py --arm "meddiff_ft@augmented" --base $S/results.json --new $D/results.json \
    --base_name "unguided" --new_name "guidance 2" --regimes $n
done
