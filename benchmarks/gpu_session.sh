#!/usr/bin/env bash
# One prepared GPU session: CUDA tests, then the benchmark in bf16 and fp32, then the precision check.
# Usage (on a lent GPU machine, from the repo root): bash benchmarks/gpu_session.sh OUTDIR [MODEL]
# Wheels for packages the machine lacks (open_clip_torch, ftfy, wcwidth, av) may be carried in .whl/.
set -uo pipefail
out=${1:-/tmp/dvlta_gpu}; model=${2:-dvlta-vqa}; mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$out/gpu.txt"
python3 -m pytest -q -m cuda tests -p no:cacheprovider 2>&1 | tail -15 | tee "$out/cuda_tests.txt"
python3 benchmarks/precision_check.py --model "$model" --device cuda --videos 6 2>&1 | tee "$out/precision.json"
python3 benchmarks/bench.py --model "$model" --device cuda --precision bf16 --batch-sizes 1,4,16 \
  --files 16 --files-batch 4 --workers 8 --as-loss --checkpointing --output "$out/bench_cuda_bf16.json" 2>&1 | tee "$out/bench_cuda_bf16.txt"
python3 benchmarks/bench.py --model "$model" --device cuda --precision fp32 --batch-sizes 1,8 \
  --output "$out/bench_cuda_fp32.json" 2>&1 | tee "$out/bench_cuda_fp32.txt"
