#!/bin/bash
# Generator size on the axial demo, N = 4 and 8: seg-guided generators trained 300 iterations at SIZE x SIZE (augmented
# masks, preset settings otherwise); draws, judge and real-only runs reused from the committed whole-preset run.
set -e
SIZE=$1; EXTRA=$2; SRC=/work/runs/eval_full_fresh; D=/work/runs/gensize${SIZE}_axial
mkdir -p $D/runs
cp -a $SRC/draws $SRC/judge $D/
cp -a $SRC/runs/real $D/runs/
grep -rlI "$SRC" $D | xargs -r sed -i "s#$SRC#$D#g"
grep -rlI "/work/evaltree" $D | xargs -r sed -i "s#/work/evaltree#/work/main#g"
cd /work/main
export PYTHONPATH=/work/main MONAI_SIAMESE_BUNDLES=/work/main/bundles
/work/main/.venv/bin/python -m monai_siamese evaluate --preset demo --workers 2 --out $D \
  --gen_iterations 300 $EXTRA \
  --methods seg_guided_diffusion --mask_sources "augmented" \
  --set "gen_overrides={\"spatial_size\": [$SIZE, $SIZE]}" \
  --set "gen_infer_overrides={\"sampler\": \"dpmpp_2m\", \"num_inference_steps\": 10, \"output_grid\": \"source\", \"spatial_size\": [$SIZE, $SIZE]}"
echo "EVAL DONE $? $(date)"
