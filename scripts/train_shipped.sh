#!/usr/bin/env bash
# How the shipped checkpoint candidates in models/ were trained (on one lent H100; see
# models/README.md). Each run fixes its epoch count after epoch 1 from --time-budget and records
# it, so `ddnn train ... --epochs N` (N from the checkpoint's config) replays it exactly.
#   scripts/train_shipped.sh OUT_DIR TRAIN_DATA BUDGET_SECONDS
set -euo pipefail
out=${1:?out dir}; data=${2:?train data}; budget=${3:-470}
py=${PYTHON:-python3}
mkdir -p "$out"
common=(--data "$data" --no-progress --batch-size 256 --lr 0.2 --weight-decay 5e-4 --warmup-epochs 3
        --epochs 300 --time-budget "$budget")
# ResNet-20 at width 32 (WRN-20-2-like): early exits after blocks 4 (WS mode) and 7 (normal).
$py -m ddnn train "${common[@]}" --depth 20 --width 32 --exits 4,7 \
    -o "$out/resnet20w32-cifar10.pt" > "$out/resnet20w32.log" 2>&1 &
# ResNet-32 at width 32: early exits after blocks 7 and 12.
$py -m ddnn train "${common[@]}" --depth 32 --width 32 --exits 7,12 \
    -o "$out/resnet32w32-cifar10.pt" > "$out/resnet32w32.log" 2>&1 &
# ResNet-56 (He et al.'s width): early exits after blocks 9 and 18.
$py -m ddnn train "${common[@]}" --depth 56 --exits 9,18 \
    -o "$out/resnet56-cifar10.pt" > "$out/resnet56.log" 2>&1 &
wait
