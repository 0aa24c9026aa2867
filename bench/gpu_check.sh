#!/usr/bin/env bash
# The GPU checks of issue 8 as one prepared call on a lent GPU machine (the `device` tool runs it from the
# repository root; that machine has CuPy, PyTorch, pytest-xdist and no network):
#
#     bash bench/gpu_check.sh            # tests, targets, batch-norm variants (about 3 minutes)
#     FULL=1 bash bench/gpu_check.sh     # and the full GPU benchmark suite (about 4 minutes more)
#
# Everything lands in $OUT (the device tool's folder; bench/results/gpu-check without one): machine.txt,
# tests.log, gpu-targets.{md,json} (with the Dense layer in float32, TF32 and bfloat16), bn-variants.log, and
# with FULL=1 the suite's md/json/png (8 files at most).
set -o pipefail
export PYTHONPATH="$PWD" NUMBA_CACHE_DIR=/tmp/numba-cache PYTHONUNBUFFERED=1
ln -sfn ../kernels fastdl/kernels  # the installed layout (fastdl.kernels) without installing
out="${OUT:-bench/results/gpu-check}"
mkdir -p "$out"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    nvcc --version 2>/dev/null | tail -2
    python3 -c "import sys, cupy, numpy; print(sys.version.split()[0], 'cupy', cupy.__version__, 'numpy', numpy.__version__)"
    date -u
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"
python3 -m pytest -q -rs -n 16 -p no:cacheprovider tests -k "gpu or cuda_sources or cuda_kernels" 2>&1 \
    | tee "$out/tests.log" | grep -E "^(FAILED|ERROR|SKIPPED)|passed|failed"
python3 bench/gpu_targets.py --out "$out" 2>&1 | grep -E "\|"
python3 bench/gpu_batchnorm_variants.py 2>&1 | tee "$out/bn-variants.log"
if [ "${FULL:-0}" = 1 ]; then
    python3 -m fastdl bench --suite full --backend gpu --out "$out" 2>&1 | tail -5
fi
