#!/bin/bash
# run by run, from the committed results: each arm against the eroded labels of pairs_per_mask (same generators, masks,
# seeds and real-only runs), guard + dropout against guard, guidance 1 against 2, filter off against on. Output: compare.md
cd "$(dirname "$0")/../../.."
R=docs/results/meddiff_erosion; P=docs/results/pairs_per_mask
cmp() { python scripts/compare_runs.py --arm "meddiff_ft@augmented" --base $1 --new $2 --base_name "$3" --new_name "$4" --regimes $5; echo; }
echo "## N = 8"; echo
cmp $P/results_all8.json $R/results_off8.json "eroded (radius 1, no limit)" "not eroded" 8
cmp $P/results_all8.json $R/results_guard8.json "eroded (radius 1, no limit)" "guard (max_fraction 0.2)" 8
cmp $R/results_guard8.json $R/results_dropout8.json "guard" "guard + dropout 0.1 (retrained)" 8
cmp $R/results_dropout8.json $R/results_dropout_g1_8.json "guard + dropout, guidance 2" "guidance 1" 8
cmp $R/results_dropout8.json $R/results_dropout_nofilter_8.json "guard + dropout, filter on" "filter off" 8
echo "## N = 4"; echo
cmp $P/results_all4.json $R/results_guard4.json "eroded (radius 1, no limit)" "guard (max_fraction 0.2)" 4
cmp $R/results_guard4.json $R/results_dropout4.json "guard" "guard + dropout 0.1 (retrained)" 4
cmp $R/results_dropout4.json $R/results_dropout_nofilter_4.json "guard + dropout, filter on" "filter off" 4
