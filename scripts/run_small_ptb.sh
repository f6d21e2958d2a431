#!/usr/bin/env bash
# The PTB comparison of docs/results.md: each *_small spec for the same 4 epochs, two runs at a
# time on a 2-core machine (one intra-op thread each). Results land in runs/; summarise them with
#   revrnn compare runs/ptb_*_small* --plot compare.png
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
REVRNN=${REVRNN:-.venv/bin/revrnn}
lane_a() {
  $REVRNN train experiments/ptb_revlstm_small.yaml > runs/log_ptb_revlstm_small.txt 2>&1
  $REVRNN train experiments/ptb_revgru_small.yaml > runs/log_ptb_revgru_small.txt 2>&1
}
lane_b() {
  $REVRNN train experiments/ptb_lstm_small.yaml > runs/log_ptb_lstm_small.txt 2>&1
  $REVRNN train experiments/ptb_gru_small.yaml > runs/log_ptb_gru_small.txt 2>&1
  $REVRNN train experiments/ptb_revlstm_small.yaml --set model.max_forget_bits=2 \
    --set output.name=ptb_revlstm_small_2bits > runs/log_ptb_revlstm_small_2bits.txt 2>&1
}
mkdir -p runs
lane_a & lane_b & wait
