#!/usr/bin/env bash
# Everything a lent GPU machine (one H100/H200) is used for, in one call that ends within its limit:
#   1. the CUDA-path tests (tests/test_gpu_path.py: bf16 + channels_last + torch.compile on CUDA)
#   2. adversarial-training throughput at CIFAR scale: rcnas's trainer against a bare loop
#   3. the headline comparison, configs/comparison-gpu.yaml, until SECONDS have passed
# then one tarball of the summaries and runs (no weights) in OUT_DIR.
# Usage: bench/gpu.sh OUT_DIR [SECONDS] ; needs python3 with torch (CUDA) and the deps on PYTHONPATH.
set -u
out=${1:?usage: bench/gpu.sh OUT_DIR [SECONDS]}
total=${2:-540}
start=$(date +%s)
left() { echo $(( total - ($(date +%s) - start) )); }
mkdir -p "$out/results"
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 RCNAS_CACHE="${RCNAS_CACHE:-/tmp/rcnas-cache}"
rcnas() { python3 -m rcnas.cli "$@"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"

timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_path.py 2>&1 | tail -5
timeout 150 bash -c "$(declare -f rcnas); rcnas bench throughput --device cuda --scale cifar --out '$out/results'" \
  && cat "$out/results/throughput-cifar-cuda.md"
echo "comparison: $(( $(left) - 25 )) s left"
timeout $(( $(left) - 25 )) bash -c "$(declare -f rcnas); rcnas bench comparison --config configs/comparison-gpu.yaml --out '$out/results'"
rcnas bench comparison --config configs/comparison-gpu.yaml --out "$out/results" --summarize-only
cat "$out/results/comparison-gpu.md"
tar czf "$out/results.tgz" -C "$out/results" --exclude='*.safetensors' --exclude='*.sqlite*' --exclude='checkpoints' .
rm -rf "$out/results"
echo "done in $(( $(date +%s) - start )) s"
