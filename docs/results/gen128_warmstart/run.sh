#!/bin/bash
# At the labels' 128 x 128, N = 8 then N = 4, `augmented` masks: the seg-guided rectified flow of docs/results/gen128_rflow
# (reused: its folders are copied, so draws, judge, real-only runs and the seg-guided arm are the same runs) as the
# base of both other methods: Siamese-Diffusion warm-started from it (`warm_starts`: its ControlNet and decoder train
# on the seg-guided UNet, 300 iterations) and MedDiff-FT fine-tuned from it (its own recipe, 300 iterations, now on
# the flow). Every generator a rectified flow sampled with Euler in 10 steps, no guidance.
set -e
cd "$(dirname "$0")/../../.."
for n in 8 4; do
  S=/work/runs/sp/g128rf$(if [ $n = 4 ]; then echo 4; fi)
  D=/work/runs/sp/g128ws$(if [ $n = 4 ]; then echo 4; fi)
  mkdir -p $D/runs $D/generators
  cp -a $S/judge $S/draws $D/ && cp -a $S/runs/real "$S/runs/seg_guided_diffusion@augmented" $D/runs/
  cp -a $S/generators/seg_guided_diffusion $D/generators/
  grep -rlI "$S/" $D | xargs -r sed -i "s#$S/#$D/#g"
  python -m monai_siamese evaluate --preset demo --workers 2 --out $D --regimes $n \
    --methods seg_guided_diffusion,siamese_diffusion,meddiff_ft --mask_sources augmented \
    --set 'method_overrides={"seg_guided_diffusion": {"sampler": "euler"}, "siamese_diffusion": {"sampler": "euler"}, "meddiff_ft": {"sampler": "euler"}}' \
    --set 'warm_starts={"siamese_diffusion": "seg_guided_diffusion"}' --set finetune_iterations=300 \
    --set 'gen_overrides={"spatial_size": [128, 128]}' \
    --set 'gen_infer_overrides={"sampler": "dpmpp_2m", "num_inference_steps": 10, "output_grid": "source", "spatial_size": [128, 128]}'
done
# run by run against the same methods in docs/results/gen128_all (Siamese-Diffusion from scratch for 500 iterations,
# MedDiff-FT fine-tuned from the DDPM-v seg-guided generator), whose draws, judge and real-only runs these are
A=/work/runs/sp/g128all
for n in 8 4; do
  D=/work/runs/sp/g128ws$(if [ $n = 4 ]; then echo 4; fi)
  python scripts/compare_runs.py --arm "siamese_diffusion@augmented" --base $A/results.json --new $D/results.json \
    --base_name "from scratch, 500 it" --new_name "warm start from seg-guided flow, 300 it" --regimes $n
  python scripts/compare_runs.py --arm "meddiff_ft@augmented" --base $A/results.json --new $D/results.json \
    --base_name "from DDPM-v seg-guided" --new_name "from seg-guided flow" --regimes $n
done
