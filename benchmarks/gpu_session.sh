#!/usr/bin/env bash
# One prepared GPU session: CUDA tests, precision check, benchmarks (fp16, bf16, fp32, compiled fp16).
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
bench() { python3 benchmarks/bench.py --model "$model" --device cuda "$@"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -m pytest -q -m cuda tests -p no:cacheprovider 2>&1 | tail -5 | tee "$out/cuda_tests.txt"
python3 benchmarks/precision_check.py --model "$model" --device cuda --videos 6 | tee "$out/precision.json"
bench --precision fp16 --batch-sizes 1,4,16,32 --files 32 --files-batch 8 --workers 12 \
  --output "$out/h200_cuda_fp16.json" | tee "$out/h200_cuda_fp16.txt"
bench --precision bf16 --batch-sizes 1,16,32 --output "$out/h200_cuda_bf16.json" | tee "$out/h200_cuda_bf16.txt"
bench --precision fp32 --batch-sizes 1,16 --output "$out/h200_cuda_fp32.json" | tee "$out/h200_cuda_fp32.txt"
timeout 100 python3 benchmarks/bench.py --model "$model" --device cuda --precision fp16 --compile \
  --batch-sizes 16,32 --output "$out/h200_cuda_fp16_compiled.json" | tee "$out/h200_cuda_fp16_compiled.txt"
