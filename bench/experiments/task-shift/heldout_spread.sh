#!/usr/bin/env bash
# After the fact, not a selection: how much the meta-training seed moves the shipped configuration's
# regret on the HELD-OUT Fashion-MNIST tables, with the task shift (shipped) and without it (shift 0).
# Meta-trains on configs/meta-tables.yaml exactly as `make bench` does (4,000 episodes), seeds 0-3;
# 20 search seeds per task setting; one line per agent in heldout.jsonl. About 30 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../../.."
W=${W:-/tmp/heldout-spread}; mkdir -p "$W"
sed 's/^agent:/agent:\n  shift: 0.0/' configs/meta-tables.yaml > "$W/noshift.yaml"
TRAIN=$(python -c "import yaml;print(','.join(yaml.safe_load(open('configs/meta-tables.yaml'))['tables']))")
VAL=fashion-mnist-14_wrn-16-1_eps0.1,fashion-mnist-14_wrn-22-1_eps0.1
train() { OMP_NUM_THREADS=1 .venv/bin/rcnas meta-train --buffers "$2" --out "$W/$1" --seed "$3" > "$W/$1.log" 2>&1; }
for s in 0 1 2 3; do
  train shift-s$s configs/meta-tables.yaml $s & train noshift-s$s "$W/noshift.yaml" $s & wait
done
for s in 0 1 2 3; do
  for c in shift noshift; do
    RESULTS=bench/experiments/task-shift/heldout.jsonl OMP_NUM_THREADS=1 \
      .venv/bin/python bench/experiments/task-shift/validate.py heldout-$c-s$s "$W/$c-s$s" "$TRAIN" "$VAL" 20 &
  done
  wait
done
