#!/usr/bin/env bash
# Full-mode reproduction of every paper experiment into docs/results/, on ONE CPU thread at the
# lowest priority so the rest of the machine stays usable. Checkpoints go to results/reproduce-work/
# (gitignored) and are reused when the same `ddnn train` command already produced them, so a
# rerun after an interruption continues where it stopped.
#
#   nohup scripts/reproduce_full.sh > results/reproduce-full.log 2>&1 &
#
# About 4-6 hours on a 2-core x86 machine shared with other work: SEM/MEM (9 plain CNNs x 4
# epochs) then the hybrid study (17 ResNet-20 fine-tunings of 1 epoch); the other three
# experiments only evaluate shipped checkpoints (minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
EXPERIMENTS=${EXPERIMENTS:-"sem-vs-mem hybrid thresholds ws-vs-normal ao-vs-cdl"}
for exp in $EXPERIMENTS; do
  echo "=== $(date -u +%FT%TZ) ddnn reproduce $exp"
  nice -n 19 .venv/bin/ddnn reproduce "$exp" --threads 1 --out "docs/results/$exp"
done
echo "=== $(date -u +%FT%TZ) done"
