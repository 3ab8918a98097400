#!/bin/bash
# The demo preset's own setting at N = 8 (64 x 64 generators, `augmented` masks) with Siamese-Diffusion warm-started
# from the preset's seg-guided generator of the same draw (DDPM with v-prediction, continued as Siamese-Diffusion's
# rectified flow: a warm start across objectives), 300 iterations, against the preset's Siamese-Diffusion from scratch
# (500 iterations). Draws, judge, real-only runs and seg-guided generators copied from the preset-setting run of
# docs/results/synthetic_photometric (/work/runs/sp/base, same machine), so the comparison is run by run.
set -e
cd "$(dirname "$0")/../../.."
S=/work/runs/sp/base
D=/work/runs/sp/ws64
mkdir -p $D/runs $D/generators
cp -a $S/judge $S/draws $D/ && cp -a $S/runs/real "$S/runs/seg_guided_diffusion@augmented" $D/runs/ && cp -a $S/generators/seg_guided_diffusion $D/generators/
grep -rlI "$S/" $D | xargs -r sed -i "s#$S/#$D/#g"
python -m monai_siamese evaluate --preset demo --workers 2 --out $D --regimes 8 --mask_sources augmented \
  --methods seg_guided_diffusion,siamese_diffusion --set finetune_iterations=300 \
  --set 'warm_starts={"siamese_diffusion": "seg_guided_diffusion"}'
python scripts/compare_runs.py --arm "siamese_diffusion@augmented" --base $S/results.json --new $D/results.json \
  --base_name "from scratch, 500 it" --new_name "warm start from DDPM-v seg-guided, 300 it" --regimes 8
