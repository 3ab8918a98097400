#!/bin/bash
# N = 8 of the axial 128 x 128 generator lead: the N = 4 run's folder (run.sh 128 "--regimes 4"), the same settings, --regimes 8.
set -e
D=/work/runs/gensize128_axial
cd /work/main
export PYTHONPATH=/work/main MONAI_SIAMESE_BUNDLES=/work/main/bundles
/work/main/.venv/bin/python -m monai_siamese evaluate --preset demo --workers 2 --out $D \
  --gen_iterations 300 --regimes 8 \
  --methods seg_guided_diffusion --mask_sources "augmented" \
  --set "gen_overrides={\"spatial_size\": [128, 128]}" \
  --set "gen_infer_overrides={\"sampler\": \"dpmpp_2m\", \"num_inference_steps\": 10, \"output_grid\": \"source\", \"spatial_size\": [128, 128]}"
echo "EVAL DONE $? $(date)"
