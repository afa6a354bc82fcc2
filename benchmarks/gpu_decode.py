"""PyAV against torchcodec (NVDEC on a GPU): videos/s and the decoders' differences (not a test).

    python benchmarks/gpu_decode.py --device cuda --workers 1,4,8,16 --output-dir OUT
    python benchmarks/gpu_decode.py --device cpu --quick --output-dir OUT     # the script's own check, no GPU

Three measurements, each written as JSON into ``--output-dir`` (``<card>_gpu_decode.json``):

1. **Decoding and view cutting** (``read``): videos/s of ``model.read`` + ``model.make_views`` over copies of one
   generated H.264 clip per size (8-s 540p and 10-s 1080p by default), in a thread pool of each worker count, for
   each decoder: PyAV on the CPUs, torchcodec on ``--device`` (NVDEC on a GPU, its frames cut there). The views
   end on the device, as in ``score_files``.
2. **Scoring** (``score``, unless ``--no-score``): videos/s of ``score_files`` end to end with the model on
   ``--device`` (``--precision``, ``--batch-size``), for each decoder at each worker count.
3. **Differences** (``differences``, measured before the scoring): on the real videos in ``--real-dir`` (default
   ``../shared/data/videos``, else ``shared/data/videos``) and the generated clips, the frames both decoders give
   for the model's needed frames (same indices? mean, 99th percentile and largest absolute difference in 8-bit
   levels) and the scores of the model with each decoder's frames.

Every figure names its decoder, device, size and worker count; a measurement that fails records its error and the
others go on. The model's weights are random unless ``--pretrained`` (decoding speed does not depend on them; the
score differences are then those of a random model, a proxy for the trained one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from bench import make_video  # benchmarks/bench.py: this script runs as a file, with its folder on sys.path

import dvlta_metric
from dvlta_metric import read_options, read_video
from dvlta_metric.batch import _worker_stream

SIZES = {"540p": (960, 540, 8.0), "1080p": (1920, 1080, 10.0)}
"""The generated clips: name -> (width, height, seconds), as the issue's targets."""


def card_name(device: str) -> str:
    """``h200``, ``h100``, ... for the GPU of ``device``; ``cpu`` off CUDA."""
    if not device.startswith("cuda"):
        return "cpu"
    match = re.search(r"(H100|H200|A100|L40S|L4|A10)", torch.cuda.get_device_name(torch.device(device)))
    return match.group(1).lower() if match else "gpu"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def read_rate(model: Any, path: Path, decoder: str, workers: int, files: int, device: str) -> float:
    """Videos per second reading and cutting the views of ``files`` copies of ``path`` with ``workers`` threads."""

    def one(_: int) -> None:
        stream = _worker_stream(model.device)  # each thread's own CUDA stream, as in score_files
        with read_options(decoder=decoder), torch.no_grad():
            if stream is None:
                model.make_views(model.read(path))
                return
            with torch.cuda.stream(stream):
                model.make_views(model.read(path))
            stream.synchronize()

    one(0)  # warm the page cache, the codec and (NVDEC) the decoder
    _sync(device)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(files)))
    _sync(device)
    return files / (time.perf_counter() - t0)


def score_rate(model: Any, path: Path, decoder: str, workers: int, files: int, batch_size: int, device: str) -> float:
    """Videos per second of ``score_files`` over ``files`` copies of ``path`` (links, so that each is a file)."""
    tmp = Path(tempfile.mkdtemp(prefix="dvlta_gpu_decode_"))
    try:
        paths = []
        for i in range(files):
            link = tmp / f"{i}{path.suffix}"
            os.symlink(path, link)
            paths.append(link)
        list(model.score_files(paths[:batch_size], progress=False, num_workers=workers, decoder=decoder))  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        results = list(
            model.score_files(paths, batch_size=batch_size, progress=False, num_workers=workers, decoder=decoder)
        )
        _sync(device)
        rate = files / (time.perf_counter() - t0)
        bad = [r.error for r in results if not r.ok]
        if bad:
            raise RuntimeError(f"{len(bad)} files failed, e.g. {bad[0]}")
        return rate
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def differences(model: Any, paths: list[Path], device: str) -> list[dict[str, Any]]:
    """Per video: do the decoders pick the same frames, how far apart are the pixels and the scores."""
    rows = []
    for path in paths:
        row: dict[str, Any] = {"video": path.name}
        try:
            ref = read_video(path, select=model.needed_frames)
            got = read_video(path, select=model.needed_frames, decoder="torchcodec", device=device)
            row["same_indices"] = bool(torch.equal(ref.indices, got.indices))
            row["shape"] = list(ref.frames.shape)
            row["dtype"] = str(ref.frames.dtype).removeprefix("torch.")
            scale = 257.0 if ref.frames.dtype == torch.uint16 else 1.0  # in 8-bit levels
            diff = (got.frames.to("cpu", torch.float32) - ref.frames.float()).abs() / scale
            row["pixel_mean_abs_diff"] = float(diff.mean())
            row["pixel_p99_abs_diff"] = float(torch.quantile(diff.flatten()[:: max(1, diff.numel() // 10**6)], 0.99))
            row["pixel_max_abs_diff"] = float(diff.max())
            with torch.no_grad():
                scores = [float(model(v)) for v in (ref, got)]
            row["score_pyav"], row["score_torchcodec"] = scores
            row["score_abs_diff"] = abs(scores[1] - scores[0])
            row["metadata_torchcodec"] = {k: got.metadata.get(k) for k in ("decode_device", "decoder_fallback")}
        except Exception as err:  # one video's failure is a result too
            row["error"] = f"{type(err).__name__}: {err}"
        rows.append(row)
        print(f"  {path.name}: {json.dumps({k: v for k, v in row.items() if k != 'video'})}", flush=True)
    return rows


def _versions() -> dict[str, Any]:
    import av

    out: dict[str, Any] = {"torch": torch.__version__, "av": av.__version__, "ffmpeg_pyav": av.ffmpeg_version_info}
    try:
        import torchcodec

        out["torchcodec"] = torchcodec.__version__
        out["torchcodec_ffmpeg_major"] = getattr(torchcodec, "ffmpeg_major_version", None)
    except Exception as err:
        out["torchcodec"] = f"unavailable: {type(err).__name__}: {err}"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="where the model runs and torchcodec decodes (default cuda)")
    parser.add_argument("--model", default="dvlta-vqa", help="the model whose views are cut and scored")
    parser.add_argument("--pretrained", action="store_true", help="trained weights (default: random weights)")
    parser.add_argument("--precision", default="fp16", help="model precision on CUDA (default fp16)")
    parser.add_argument("--decoders", default="pyav,torchcodec", help="comma-separated decoders")
    parser.add_argument("--sizes", default="540p,1080p", help=f"generated clips among {', '.join(SIZES)}")
    parser.add_argument("--workers", default="1,4,8,16", help="comma-separated worker (thread) counts")
    parser.add_argument("--files", type=int, default=0, help="videos per setting (default: 4 per worker, >= 16)")
    parser.add_argument("--batch-size", type=int, default=16, help="videos per model call when scoring")
    parser.add_argument("--no-score", action="store_true", help="skip the end-to-end score_files measurement")
    parser.add_argument("--real-dir", type=Path, help="real videos for the differences (default ../shared/data/videos)")
    parser.add_argument("--quick", action="store_true", help="tiny model, 1 s clips, 1-2 workers: checks the script")
    parser.add_argument("--output-dir", type=Path, required=True, help="where the JSON report goes")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.workers, args.files, args.batch_size = "dvlta-vqa-tiny", "1,2", 4, 2
    args.output_dir.mkdir(parents=True, exist_ok=True)
    device = args.device
    precision = args.precision if device.startswith("cuda") else "fp32"
    model = dvlta_metric.create(args.model, pretrained=args.pretrained, device=device, precision=precision)
    workers = [int(x) for x in args.workers.split(",")]
    decoders = args.decoders.split(",")
    report: dict[str, Any] = {
        "model": args.model,
        "pretrained": args.pretrained,
        "precision": precision,
        "device": device,
        "gpu": torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "versions": _versions(),
        "read": [],
        "score": [],
    }
    print(json.dumps(report["versions"]), flush=True)
    clips = {}
    tmp = Path(tempfile.mkdtemp(prefix="dvlta_gpu_decode_clips_"))
    for name in args.sizes.split(","):
        w, h, seconds = SIZES[name]
        if args.quick:
            w, h, seconds = w // 8 * 2, h // 8 * 2, 1.0  # even sides for yuv420p
        t0 = time.perf_counter()
        clips[name] = make_video(tmp / f"{name}.mp4", w, h, seconds)
        print(f"generated {name}: {w}x{h}, {seconds:g} s in {time.perf_counter() - t0:.1f} s", flush=True)
    out = args.output_dir / f"{card_name(device)}_gpu_decode.json"

    def save() -> None:
        out.write_text(json.dumps(report, indent=2) + "\n")

    for name, path in clips.items():
        for decoder in decoders:
            for n in workers:
                files = args.files or max(16, 4 * n)
                row: dict[str, Any] = {"size": name, "decoder": decoder, "workers": n, "files": files}
                try:
                    row["videos_per_s"] = read_rate(model, path, decoder, n, files, device)
                except Exception as err:
                    row["error"] = f"{type(err).__name__}: {err}"
                    traceback.print_exc()
                report["read"].append(row)
                print(f"read+views {json.dumps(row)}", flush=True)
                save()
    real_dir = args.real_dir or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"
    real = sorted(real_dir.glob("*.mp4")) if real_dir.is_dir() else []
    if not real and (Path.cwd() / "shared" / "data" / "videos").is_dir():  # the device machine's copy of shared/
        real = sorted((Path.cwd() / "shared" / "data" / "videos").glob("*.mp4"))
    report["real_dir"] = str(real_dir) if real else None
    if "torchcodec" in decoders:
        print(f"differences on {len(real)} real videos and {len(clips)} generated clips", flush=True)
        report["differences"] = differences(model, [*real, *clips.values()], device)
    save()  # before the scoring runs, the longest part: a step cut short keeps the differences
    if not args.no_score:
        for name, path in clips.items():
            for decoder in decoders:
                for n in workers:
                    files = max(args.files or 4 * n, 2 * args.batch_size)
                    row = {"size": name, "decoder": decoder, "workers": n, "files": files}
                    row["batch_size"] = args.batch_size
                    try:
                        row["videos_per_s"] = score_rate(model, path, decoder, n, files, args.batch_size, device)
                    except Exception as err:
                        row["error"] = f"{type(err).__name__}: {err}"
                    report["score"].append(row)
                    print(f"score_files {json.dumps(row)}", flush=True)
                    save()
    save()
    print(f"wrote {out}", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
