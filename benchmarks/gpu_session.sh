#!/usr/bin/env bash
# One prepared GPU session in two parts that each fit one device command, most important first:
#   part a: fp16 compiled at batch 32 with the flex and then the sdpa attention kernel (profiles), then fp16
#           uncompiled with flex at batch 32 and 64;
#   part b: CUDA tests, precision check (sdpa and flex), fp16 uncompiled with sdpa (stages, batch sizes
#           1/32/64 with per-branch times, profile, score_files);
#   part c (optional, unmeasured length): compiled with mode max-autotune-no-cudagraphs and the flex kernel.
#   part d (unmeasured length, about 4 min expected): benchmarks/ray_scaling.py with 1 GPU, fp16, batch 16:
#           score_files (15 decoding threads) against the Ray path with 4, 8 and 15 decode tasks; the target is
#           Ray within 10 % of score_files' files/s, and the row that reaches it gives the decode tasks per GPU.
#           Needs ray[data] and pyarrow installed on the machine: the ray wheel (79 MB for 2.60, cp311) is larger than
#           the 64 MiB a device command carries, so part d is skipped, saying so, where Ray is missing.
#   part e (unmeasured length, about 5 min expected; run it alone: `... OUTDIR dvlta-vqa e`): GPU decoding
#           (decoder="torchcodec", NVDEC). The CUDA tests of tests/test_gpu_decode.py (NVDEC frames against PyAV's,
#           frames on the GPU through view cutting, damaged files as rows), then benchmarks/gpu_decode.py: videos/s of
#           reading + view cutting and of score_files (fp16, batch 16) for generated 8-s 540p and 10-s 1080p H.264
#           clips, PyAV against NVDEC, at 1, 4, 8 and 16 workers (the target: >= 30 videos/s of 10-s 1080p), and
#           the pixel and score differences of the two decoders on the real videos of shared/data/videos. Needs
#           the torchcodec wheel (0.17.0, cp311, 10 MB) in .whl/ (the machine has no network) and FFmpeg's shared
#           libraries: the system's if it has them, else PyAV's own FFmpeg (av.libs), linked under the names
#           torchcodec looks for. Skipped, saying so, where torchcodec cannot load.
# benchmarks/attention_variants.py (the attention kernels alone) is not part of it: its H200 results are in
# benchmarks/results. On an H200 (2026-11-26) the uncompiled fp16 run with score_files and the two compiled
# runs took 265 s together and a start about 30 s; these parts regroup those steps, so their lengths are
# estimates (each should fit its step limits, 490 s and 330 s).
# Usage (on a lent GPU machine, from the repo root): bash benchmarks/gpu_session.sh OUTDIR [MODEL] [a|b|c|d|e|all]
# Wheels for packages the machine lacks (open_clip_torch, ftfy, wcwidth, av) may be carried in .whl/.
# Writes log.txt and one JSON per measurement to OUTDIR (at most 5 files per part), named <card>_...
# (h200_, h100_, ...). Each step has its own time limit; a step cut short leaves the others' results.
# Afterwards, on any machine: price the model on this card's measured rates (the bench JSON records
# matmul_rate and copy_bandwidth) with benchmarks/roofline.py --peak-tflops ... --bandwidth-tbs ... .
set -uo pipefail
out=${1:-/tmp/dvlta_gpu}; model=${2:-dvlta-vqa}; part=${3:-all}; mkdir -p "$out"
case "$part" in a|b|c|d|e|all) ;; *) echo "part must be a, b, c, d, e or all, got '$part'" >&2; exit 2 ;; esac
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
log="$out/log.txt"
card=$(python3 -c "import re, torch; m = re.search(r'(H100|H200|A100|L40S|L4)', torch.cuda.get_device_name(0)); print(m.group(1).lower() if m else 'gpu')")
step() { local limit=$1; shift; echo "== $* (limit ${limit}s)" | tee -a "$log"; timeout "$limit" "$@" 2>&1 | grep -v "^W[0-9]" | tee -a "$log"; }
bench() {
  local limit=$1; shift
  step "$limit" python3 benchmarks/bench.py --model "$model" --device cuda --rate-runs 3 --rate-seconds 0.3 "$@"
}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader 2>&1 | tee -a "$log"
if [ "$part" = a ] || [ "$part" = all ]; then
  # the open question first: the flex kernel end to end, against the sdpa baseline on the same machine
  bench 170 --precision fp16 --compile --attention-kernel flex --throughput-only --batch-sizes 32 --branch-times \
    --profile --profile-top 25 --output "$out/${card}_cuda_fp16_compiled_flex.json"
  bench 170 --precision fp16 --compile --throughput-only --batch-sizes 32 --branch-times --profile --profile-top 25 \
    --output "$out/${card}_cuda_fp16_compiled.json"
  bench 150 --precision fp16 --attention-kernel flex --throughput-only --batch-sizes 32,64 --branch-times \
    --output "$out/${card}_cuda_fp16_flex.json"
fi
if [ "$part" = b ] || [ "$part" = all ]; then
  step 90 python3 -m pytest -q -m cuda tests -p no:cacheprovider
  step 90 python3 benchmarks/precision_check.py --model "$model" --device cuda --videos 4 --bench-video \
    --attention-kernels sdpa,flex --output "$out/${card}_precision.json"
  bench 150 --precision fp16 --batch-sizes 1,32,64 --branch-times --profile --profile-top 25 \
    --files 32 --files-batch 8 --workers 12 --output "$out/${card}_cuda_fp16.json"
fi
if [ "$part" = c ] || [ "$part" = all ]; then
  # optional: inductor's GEMM autotuning (long compile) with the faster attention kernel
  bench 480 --precision fp16 --compile --compile-mode max-autotune-no-cudagraphs --attention-kernel flex \
    --throughput-only --batch-sizes 32 --branch-times --output "$out/${card}_cuda_fp16_compiled_autotune_flex.json"
fi
if { [ "$part" = d ] || [ "$part" = all ]; } && ! python3 -c "import ray.data, pyarrow" 2>/dev/null; then
  echo "== part d skipped: ray[data] and pyarrow are not installed here" | tee -a "$log"
elif [ "$part" = d ] || [ "$part" = all ]; then
  step 300 python3 benchmarks/ray_scaling.py --model "$model" --device cuda --precision fp16 --files 64 \
    --batch-size 16 --workers 15 --decoders 4,8,15 --output "$out/${card}_ray_scaling.json"
fi
if [ "$part" = e ] || [ "$part" = all ]; then
  # torchcodec finds FFmpeg by the shared libraries' sonames (libavcodec.so.62, ...); where the system has none,
  # give it PyAV's bundled FFmpeg under those names (av.libs holds them under hashed names)
  if ! python3 -c "import sys, torchcodec; sys.exit(torchcodec.ffmpeg_major_version is None)" 2>/dev/null; then
    links=/tmp/dvlta_ffmpeg_links; mkdir -p "$links"
    avlibs=$(python3 -c "import av, os; print(os.path.realpath(os.path.join(os.path.dirname(av.__file__), '..', 'av.libs')))")
    for lib in "$avlibs"/libav*.so.* "$avlibs"/libsw*.so.*; do
      base=$(basename "$lib"); stem=${base%%-*}; major=$(echo "$base" | sed -E 's/.*\.so\.([0-9]+).*/\1/')
      ln -sf "$lib" "$links/$stem.so.$major"
    done
    export LD_LIBRARY_PATH="$links:$avlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "== FFmpeg for torchcodec: PyAV's, from $avlibs" | tee -a "$log"
  fi
  if ! python3 -c "import sys, torchcodec; sys.exit(torchcodec.ffmpeg_major_version is None)" 2>/dev/null; then
    echo "== part e skipped: torchcodec cannot load here (carry its wheel in .whl/)" | tee -a "$log"
    python3 -c "import torchcodec" 2>&1 | tail -5 | tee -a "$log"
  else
    python3 -c "import torchcodec; print('torchcodec', torchcodec.__version__, 'FFmpeg', torchcodec.ffmpeg_major_version)" \
      2>&1 | tee -a "$log"
    step 150 python3 -m pytest -q -m cuda tests/test_gpu_decode.py -p no:cacheprovider -rs
    step 420 python3 benchmarks/gpu_decode.py --device cuda --model "$model" --workers 1,4,8,16 --output-dir "$out"
  fi
fi
