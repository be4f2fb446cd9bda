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
[ -n "$name" ] || { echo "gpu.sh: $config has no 'name:' line" >&2; exit 2; }
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
if [[ $steps == *,comparison,* ]]; then
  # leave 40 s to summarize and pack; a run cut short keeps its checkpoints and goes on next time
  budget=$(( $(left) - 40 ))
  echo "comparison $name: $budget s left"
  if [ "$budget" -gt 0 ]; then
    timeout "$budget" bash -c "$(declare -f rcnas); rcnas bench comparison --config $config --out bench/results"
  fi
  rcnas bench comparison --config "$config" --out bench/results --summarize-only
  cat "bench/results/$name.md"
fi

# what the next lease needs, within the 64 MiB a lease can carry in: rcnas.bench.comparison's
# not_needed_to_resume leaves out the weights of finished runs, checkpoints of finished trainings and
# the fine-tuned agents; checkpoints of networks still training are kept while they stay small
runs="bench/results/$name-runs"
mkdir -p "$runs"
python3 -c "import sys; from rcnas.bench.comparison import load_comparison, not_needed_to_resume
print(*not_needed_to_resume('bench/results', load_comparison(sys.argv[1])), sep='\n')" "$config" > "$out/exclude.txt"
unfinished=$(find "$runs" -type d -path '*/models/*/checkpoints' | grep -vxFf "$out/exclude.txt")
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
