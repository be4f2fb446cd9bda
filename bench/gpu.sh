#!/usr/bin/env bash
# Everything a lent GPU machine (one H100/H200) is used for, in one call that ends within its limit:
#   tests       the CUDA-path tests (tests/test_gpu_path.py: bf16 + channels_last + torch.compile,
#               the final evaluation with AutoAttack, on CUDA)
#   throughput  adversarial-training throughput at CIFAR scale: rcnas's trainer against a bare loop
#   comparison  a comparison config (default configs/comparison-gpu.yaml), until SECONDS have passed
# then OUT_DIR/results.tgz.part-aa, -ab, ...: what the next lease needs to go on where this one stopped.
#
# Usage: bench/gpu.sh OUT_DIR [SECONDS] [STEPS] [CONFIG]     STEPS: comma-separated, default all three
# Needs python3 with torch (CUDA) and rcnas's dependencies on PYTHONPATH.
#
# Short leases add up: the comparison writes into bench/results/ of this checkout, so runs carried in
# from an earlier lease are continued, not redone. The tarball holds the summaries, every run without
# the weights of finished models (their cards are what the summary reads), the search stores, the
# evaluation state, the checkpoints of models still training, and the teachers (RCNAS_CACHE): the
# searches and the final trainings of one run must start from the same teacher. It comes back in
# parts of 15 MiB (a lease returns files of 16 MiB at most); unpack them in the repository root
# (`cat results.tgz.part-* | tar xz`) and carry the runs directory and `.gpu` (with
# RCNAS_CACHE=$PWD/.gpu/cache, RCNAS_DATA=$PWD/.gpu/data holding fashion-mnist/*.gz, and the missing
# packages unpacked in .gpu/site on PYTHONPATH) into the next lease: 64 MiB at most travel.
set -u
out=${1:?usage: bench/gpu.sh OUT_DIR [SECONDS] [STEPS] [CONFIG]}
total=${2:-540}
steps=",${3:-tests,throughput,comparison},"
config=${4:-configs/comparison-gpu.yaml}
name=$(sed -n 's/^name: *//p' "$config")
start=$(date +%s)
left() { echo $(( total - ($(date +%s) - start) )); }
mkdir -p "$out"
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 RCNAS_CACHE="${RCNAS_CACHE:-$PWD/.gpu/cache}"
rcnas() { python3 -m rcnas.cli "$@"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"

if [[ $steps == *,tests,* ]]; then
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_path.py 2>&1 | tail -5
fi
if [[ $steps == *,throughput,* ]]; then
  timeout 150 bash -c "$(declare -f rcnas); rcnas bench throughput --device cuda --scale cifar --out bench/results" \
    && cat bench/results/throughput-cifar-cuda.md
fi
[[ $steps == *,comparison,* ]] || exit 0
# leave 40 s to summarize and pack; a run cut short keeps its checkpoints and goes on next time
echo "comparison $name: $(( $(left) - 40 )) s left"
timeout $(( $(left) - 40 )) bash -c "$(declare -f rcnas); rcnas bench comparison --config $config --out bench/results"
rcnas bench comparison --config "$config" --out bench/results --summarize-only
cat "bench/results/$name.md"

# what the next lease needs, within the 64 MiB a lease can carry in: finished models (a card.json
# beside them) need no weights; the fine-tuned agents are outputs, not state; checkpoints of models
# still training are kept while they stay small (else those models start their training again)
runs="bench/results/$name-runs"
{ find $runs -name card.json | while read -r card; do
    d=$(dirname "$card"); echo "$d/model.safetensors"; echo "$d/checkpoints"; done
  find $runs -type d -path '*/search*/agent'
} > "$out/exclude.txt"
unfinished=$(find $runs -type d -path '*/models/*/checkpoints' | while read -r d; do
  [ -f "$(dirname "$d")/card.json" ] || echo "$d"; done)
size=$(du -cb $unfinished /dev/null | tail -1 | cut -f1)
if [ "$size" -gt 15000000 ]; then
  echo "checkpoints of unfinished models: $size bytes, left out"; echo "$unfinished" >> "$out/exclude.txt"
fi
tar czf "$out/results.tgz" -X "$out/exclude.txt" "bench/results/$name"* \
  $(ls bench/results/throughput-cifar-cuda.* 2>/dev/null) "${RCNAS_CACHE#"$PWD"/}/teachers"
split -b 15m "$out/results.tgz" "$out/results.tgz.part-"
rm -f "$out/exclude.txt" "$out/results.tgz"
ls -la "$out"
echo "done in $(( $(date +%s) - start )) s"
