#!/bin/bash
# MedDiff-FT at 128 x 128, N = 8, 32 pairs per real mask, sampled with guidance 1 instead of 2 (its guidance-2 samples
# are over-bright with dotted edges): the ppm_all8 evaluation of run.sh copied (judge, draws, real-only runs, both
# generators, the seg-guided set and runs), MedDiff-FT's set sampled anew and its segmentation runs trained anew.
set -e
cd "$(dirname "$0")/../../.."
S=/work/runs/sp/ppm_all8; D=/work/runs/sp/ppm_md1_8
if [ ! -d $D ]; then
  mkdir -p $D/runs $D/generators/meddiff_ft
  cp -a $S/judge $S/draws $D/ && cp -a $S/runs/real "$S/runs/seg_guided_diffusion@augmented" $D/runs/
  cp -a $S/generators/seg_guided_diffusion $D/generators/
  for g in $S/generators/meddiff_ft/N008_*; do
    mkdir -p $D/generators/meddiff_ft/$(basename $g) && cp -a $g/train $g/models $g/logs $D/generators/meddiff_ft/$(basename $g)/
  done
  grep -rlI "$S/" $D | xargs -r sed -i "s#$S/#$D/#g"
fi
V='{"objective": "ddpm", "prediction_type": "v_prediction"'
python -m monai_siamese evaluate --preset demo --workers 2 --out $D --regimes 8 --samples_per_mask 32 \
  --methods seg_guided_diffusion,meddiff_ft --mask_sources augmented \
  --set "method_overrides={\"seg_guided_diffusion\": $V, \"guidance_scale\": 2.0}, \"meddiff_ft\": $V, \"guidance_scale\": 1.0}}" \
  --set 'gen_overrides={"spatial_size": [128, 128]}' \
  --set 'gen_infer_overrides={"sampler": "dpmpp_2m", "num_inference_steps": 10, "output_grid": "source", "spatial_size": [128, 128]}'
python scripts/compare_runs.py --arm "meddiff_ft@augmented" --base $S/results.json --new $D/results.json \
  --base_name "guidance 2" --new_name "guidance 1" --regimes 8
