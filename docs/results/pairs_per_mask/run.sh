#!/bin/bash
# Synthetic pairs per real mask, 8 (the preset) against 32, at the labels' 128 x 128, `augmented` masks: the trained
# generators of docs/results/gen128_warmstart (seg-guided flow, Siamese-Diffusion warm-started from it) and of
# docs/results/gen128_all (MedDiff-FT fine-tuned from the DDPM-v seg-guided generator) sample 32 new masks per real
# mask instead of 8 (N = 8: 256 pairs per set instead of 64); nothing else changes (same generators, draws, seeds,
# judge, real-only runs, synthetic fraction of every batch). Only the judge, draws, real-only runs and the trained
# generators are copied: every set is sampled anew and every mixed segmentation run trained anew.
set -e
cd "$(dirname "$0")/../../.."
copy() {  # copy() SOURCE DEST METHOD...: judge, draws, real-only runs, trained generators without their sets
  local S=$1 D=$2; shift 2
  mkdir -p $D/runs $D/generators
  cp -a $S/judge $S/draws $D/ && cp -a $S/runs/real $D/runs/
  for m in "$@"; do
    for g in $S/generators/$m/N*; do
      mkdir -p $D/generators/$m/$(basename $g)
      for part in train models logs samples; do
        if [ -e $g/$part ]; then cp -a $g/$part $D/generators/$m/$(basename $g)/; fi
      done
    done
  done
  grep -rlI "$S/" $D | xargs -r sed -i "s#$S/#$D/#g"
}
GEN='gen_overrides={"spatial_size": [128, 128]}'
INFER='gen_infer_overrides={"sampler": "dpmpp_2m", "num_inference_steps": 10, "output_grid": "source", "spatial_size": [128, 128]}'
EULER='method_overrides={"seg_guided_diffusion": {"sampler": "euler"}, "siamese_diffusion": {"sampler": "euler"}, "meddiff_ft": {"sampler": "euler"}}'
for n in ${REGIMES:-8 4}; do
  S=/work/runs/sp/g128ws$(if [ $n = 4 ]; then echo 4; fi); D=/work/runs/sp/ppm_ws$n
  if [ ! -d $D ]; then copy $S $D seg_guided_diffusion siamese_diffusion; fi
  python -m monai_siamese evaluate --preset demo --workers 2 --out $D --regimes $n --samples_per_mask 32 \
    --methods seg_guided_diffusion,siamese_diffusion --mask_sources augmented --set "$EULER" \
    --set 'warm_starts={"siamese_diffusion": "seg_guided_diffusion"}' --set finetune_iterations=300 \
    --set "$GEN" --set "$INFER"
  S=/work/runs/sp/g128all; D=/work/runs/sp/ppm_all$n
  if [ ! -d $D ]; then copy $S $D seg_guided_diffusion meddiff_ft; rm -rf $D/draws/N00$((12 - n))_* $D/runs/real/N00$((12 - n))_*; fi
  python -m monai_siamese evaluate --preset demo --workers 2 --out $D --regimes $n --samples_per_mask 32 \
    --methods seg_guided_diffusion,meddiff_ft --mask_sources augmented --set "$GEN" --set "$INFER"
done
# run by run against the 8-pairs-per-mask sets of the same generators (compare.md)
bash docs/results/pairs_per_mask/compare.sh > docs/results/pairs_per_mask/compare.md
