#!/usr/bin/env bash
# One prepared GPU session, most important first, in two parts that each fit one 10-minute device command:
#   part 1: CUDA tests, precision check, decode scaling, fp16 (with score_files and a profile), bf16;
#   part 2: compiled fp16, then fp32.
# Usage (on a lent GPU machine, from the repo root): bash benchmarks/gpu_session.sh OUTDIR [MODEL] [1|2|all]
# Wheels for packages the machine lacks (open_clip_torch, ftfy, wcwidth, av) may be carried in .whl/.
# Writes log.txt and one JSON per measurement to OUTDIR (at most 5 files per part), named <card>_...
# (h200_, h100_, ...). A run cut short by a time limit still leaves the results of the steps it finished.
set -uo pipefail
out=${1:-/tmp/dvlta_gpu}; model=${2:-dvlta-vqa}; part=${3:-all}; mkdir -p "$out"
case "$part" in 1|2|all) ;; *) echo "part must be 1, 2 or all, got '$part'" >&2; exit 2 ;; esac
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
log="$out/log.txt"
card=$(python3 -c "import re, torch; m = re.search(r'(H100|H200|A100|L40S|L4)', torch.cuda.get_device_name(0)); print(m.group(1).lower() if m else 'gpu')")
bench() { python3 benchmarks/bench.py --model "$model" --device cuda "$@" 2>&1 | tee -a "$log"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$log"
if [ "$part" != 2 ]; then
  python3 -m pytest -q -m cuda tests -p no:cacheprovider 2>&1 | tail -5 | tee -a "$log"
  python3 benchmarks/precision_check.py --model "$model" --device cuda --videos 6 --bench-video \
    --output "$out/${card}_precision.json" 2>&1 | tail -3 | tee -a "$log"
  python3 benchmarks/decode_scaling.py --workers 1,4,8,12,16 --decoder-threads 0,1 \
    --output "$out/${card}_decode_scaling.json" 2>&1 | grep workers | tee -a "$log"
  bench --precision fp16 --batch-sizes 1,16,32 --files 32 --files-batch 8 --workers 12 --profile \
    --output "$out/${card}_cuda_fp16.json"
  bench --precision bf16 --batch-sizes 1,16,32 --output "$out/${card}_cuda_bf16.json"
fi
if [ "$part" != 1 ]; then
  timeout 360 python3 benchmarks/bench.py --model "$model" --device cuda --precision fp16 --compile \
    --batch-sizes 32 --output "$out/${card}_cuda_fp16_compiled.json" 2>&1 | tail -30 | tee -a "$log"
  bench --precision fp32 --batch-sizes 1,16 --output "$out/${card}_cuda_fp32.json"
fi
