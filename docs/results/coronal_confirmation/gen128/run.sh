#!/bin/bash
# Generator size on coronal slices, N = 4: seg-guided generators trained 300 iterations at SIZE x SIZE (augmented
# masks, preset settings otherwise); draws, judge and real-only runs reused from the coronal confirmation run.
set -e
SIZE=$1; SRC=/work/runs/coronal_eval; D=/work/runs/gensize${SIZE}_coronal
mkdir -p $D/runs
cp -a $SRC/draws $SRC/judge $D/
cp -a $SRC/runs/real $D/runs/
grep -rlI "$SRC" $D | xargs -r sed -i "s#$SRC#$D#g"
cd /work/main
export PYTHONPATH=/work/main MONAI_SIAMESE_BUNDLES=/work/main/bundles
/work/main/.venv/bin/python -m monai_siamese evaluate --preset demo --workers 2 --out $D \
  --datalist /work/runs/coronal_data/datalist.json --regimes 4 --gen_iterations 300 \
  --methods seg_guided_diffusion --mask_sources "augmented" \
  --set "gen_overrides={\"spatial_size\": [$SIZE, $SIZE]}" \
  --set "gen_infer_overrides={\"sampler\": \"dpmpp_2m\", \"num_inference_steps\": 10, \"output_grid\": \"source\", \"spatial_size\": [$SIZE, $SIZE]}"
echo "EVAL DONE $? $(date)"
