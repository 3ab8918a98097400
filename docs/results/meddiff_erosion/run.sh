#!/bin/bash
# MedDiff-FT's label erosion at 128 x 128, 32 pairs per real mask, guidance 2 (the pairs_per_mask setting).
# Until now the bundle eroded every class of the written label by 1 pixel against the background; on the demo's tissue
# maps that takes 22-44 % (median 30 %) of the CSF ring, the outermost class, from every label. Arms:
#   off:   erosion_radius 0 (labels = conditioning masks)
#   guard: the bundle's new default, erosion_max_fraction 0.2 (a class that would lose more is left whole)
#   dropout: guard, and MedDiff-FT fine-tuned anew with the bundle's new cond_dropout_prob 0.1 (was 0: the preset
#            samples it with guidance 2, whose unconditional branch the fine-tuning never trained)
#   dropout_g1: the dropout run's generators (copied from it) sampled with guidance 1 instead of 2
#   dropout_nofilter: the dropout run's generators (copied from it), guidance 2, MedDiff-FT's quality filter off
# The ppm_all<N> evaluation of pairs_per_mask/run.sh is copied (judge, draws, real-only runs, both generators, the
# seg-guided set and runs); MedDiff-FT's set is sampled anew (same generators, masks, seeds: the same images, since
# erosion only changes the written labels) and its segmentation runs are trained anew, so the comparison is run by run.
# Usage: bash docs/results/meddiff_erosion/run.sh 8 off   (N = 8 or 4; off, guard, dropout, dropout_g1, dropout_nofilter)
set -e
cd "$(dirname "$0")/../../.."
N=${1:-8}; MODE=${2:-guard}; NN=$(printf "%03d" $N)
S=/work/runs/sp/ppm_all$N; D=/work/runs/sp/md_ero_${MODE}_$N; G=2.0; EXTRA=''; BASE="eroded labels (radius 1, no limit)"
case $MODE in
  off) EXTRA=', "erosion_radius": 0';;
  guard|dropout) ;;
  dropout_g1) S=/work/runs/sp/md_ero_dropout_$N; G=1.0; BASE="guard + dropout, guidance 2";;
  dropout_nofilter) S=/work/runs/sp/md_ero_dropout_$N; EXTRA=', "use_quality_filter": false'; BASE="guard + dropout, filter on";;
  *) echo "unknown mode $MODE"; exit 1;;
esac
if [ ! -d $D ]; then
  mkdir -p $D/runs $D/generators/meddiff_ft
  cp -a $S/judge $S/draws $D/ && cp -a $S/runs/real "$S/runs/seg_guided_diffusion@augmented" $D/runs/
  cp -a $S/generators/seg_guided_diffusion $D/generators/
  for g in $(if [ $MODE != dropout ]; then echo $S/generators/meddiff_ft/N${NN}_*; fi); do
    mkdir -p $D/generators/meddiff_ft/$(basename $g) && cp -a $g/train $g/models $g/logs $D/generators/meddiff_ft/$(basename $g)/
  done
  grep -rlI "$S/" $D | xargs -r sed -i "s#$S/#$D/#g"
fi
V='{"objective": "ddpm", "prediction_type": "v_prediction", "guidance_scale"'
python -m monai_siamese evaluate --preset demo --workers 2 --out $D --regimes $N --samples_per_mask 32 \
  --methods seg_guided_diffusion,meddiff_ft --mask_sources augmented \
  --set "method_overrides={\"seg_guided_diffusion\": $V: 2.0}, \"meddiff_ft\": $V: $G$EXTRA}}" \
  --set 'gen_overrides={"spatial_size": [128, 128]}' \
  --set 'gen_infer_overrides={"sampler": "dpmpp_2m", "num_inference_steps": 10, "output_grid": "source", "spatial_size": [128, 128]}'
python scripts/compare_runs.py --arm "meddiff_ft@augmented" --base $S/results.json --new $D/results.json \
  --base_name "$BASE" --new_name "$MODE" --regimes $N
