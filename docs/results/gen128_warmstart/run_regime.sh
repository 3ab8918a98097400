#!/bin/bash
# The `regime` mask source as the ablation of run.sh's 128 x 128 setting (seg-guided flow and Siamese-Diffusion
# warm-started from it): the same generators (folders copied from run.sh's), sampled on the regime's own masks
# (8 samples per real mask), then the same segmentation runs; the `augmented` arms are run.sh's (cached).
set -e
cd "$(dirname "$0")/../../.."
for n in 8 4; do
  S=/work/runs/sp/g128ws$(if [ $n = 4 ]; then echo 4; fi)
  D=/work/runs/sp/g128wsr$(if [ $n = 4 ]; then echo 4; fi)
  mkdir -p $D/runs $D/generators
  cp -a $S/judge $S/draws $D/
  cp -a $S/runs/real "$S/runs/seg_guided_diffusion@augmented" "$S/runs/siamese_diffusion@augmented" $D/runs/
  cp -a $S/generators/seg_guided_diffusion $S/generators/siamese_diffusion $D/generators/
  grep -rlI "$S/" $D | xargs -r sed -i "s#$S/#$D/#g"
  python -m monai_siamese evaluate --preset demo --workers 2 --out $D --regimes $n \
    --methods seg_guided_diffusion,siamese_diffusion --mask_sources "regime;augmented" \
    --set 'method_overrides={"seg_guided_diffusion": {"sampler": "euler"}, "siamese_diffusion": {"sampler": "euler"}}' \
    --set 'warm_starts={"siamese_diffusion": "seg_guided_diffusion"}' --set finetune_iterations=300 \
    --set 'gen_overrides={"spatial_size": [128, 128]}' \
    --set 'gen_infer_overrides={"sampler": "dpmpp_2m", "num_inference_steps": 10, "output_grid": "source", "spatial_size": [128, 128]}'
done
