"""Peak CPU memory to score one video file, by model, precision and resolution, measured from outside.

Not a test: run it by hand and read the table or the JSON.

    python benchmarks/score_memory.py --output benchmarks/results/cpu_2core_score_memory.json

Each case runs ``dvlta-metric score FILE --device cpu --random-weights`` (random weights cost what trained ones
do) in a fresh child process, as a user runs it, and reads the child's peak resident set size from outside
(``os.wait4``'s ``ru_maxrss``): the interpreter and its libraries, the weights, the decoded frames, the views,
the activations and the allocator's slack. The case ``speed path`` runs the same scoring through the Python API
with :meth:`~dvlta_metric.DVLTAVQA.set_low_memory` ``(False)`` (the whole batch at once, every attention bias
kept), for comparison with the default low-memory path. ``--swin-timing N`` times the Swin3D alone on both paths
(run it on a quiet machine: two paths that differ in how they batch react differently to a competing load).

The video files are H.264 encodes made here with PyAV (``--seconds`` long, 30 fps, CRF 23): each frame a
smooth moving pattern with noise, at each ``--resolutions`` entry.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

RESOLUTIONS = {"540p": (540, 960), "720p": (720, 1280), "1080p": (1080, 1920)}
"""Named resolutions ``(height, width)``."""

SPEED_PATH = """
import sys, dvlta_metric, torch
dvlta_metric.tune_allocator()  # as the command line does on CPU
model = dvlta_metric.create(sys.argv[1], pretrained=False, device="cpu").set_low_memory(False)
model.set_precision(sys.argv[2])
with torch.no_grad():
    print(next(iter(model.score_files([sys.argv[3]]))).score)
"""
"""Child program of the ``speed path`` case: ``MODEL PRECISION FILE``."""


def write_video(path: Path, height: int, width: int, seconds: float, seed: int = 0) -> None:
    """An H.264 file of a moving pattern with noise (``yuv420p``, 30 fps)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for i in range(round(seconds * 30)):
            base = 0.5 + 0.25 * np.sin((xx + 4 * i) / 37.0) * np.cos((yy - 3 * i) / 29.0)
            rgb = np.stack([base, np.roll(base, i, axis=1), 1 - base], axis=-1)
            rgb = np.clip(rgb * 255 + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 30)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def run_case(model: str, precision: str, path: Path, speed_path: bool) -> dict[str, Any]:
    """One child process, reaped by ``wait4`` (its pipes drained by threads meanwhile): peak RSS and wall time."""
    if speed_path:
        cmd = [sys.executable, "-c", SPEED_PATH, model, precision, str(path)]
    else:
        cmd = [sys.executable, "-m", "dvlta_metric", "score", str(path), "--model", model, "--random-weights"]
        cmd += ["--device", "cpu", "--precision", precision, "--format", "json"]
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    chunks: dict[str, bytes] = {}

    def drain(name: str, stream: Any) -> None:
        chunks[name] = stream.read()

    readers = [threading.Thread(target=drain, args=(n, s)) for n, s in (("out", child.stdout), ("err", child.stderr))]
    for r in readers:
        r.start()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
    for r in readers:
        r.join()
    seconds = time.perf_counter() - start
    if child.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({child.returncode}): {chunks['err'].decode()[-2000:]}")
    out = chunks["out"].decode()
    score = float(out) if speed_path else json.loads(out)[0]["score"]
    return {"peak_rss_gib": round(usage.ru_maxrss / 2**20, 3), "seconds": round(seconds, 1), "score": score}


def swin_timing(repeats: int) -> dict[str, list[float]]:
    """Seconds of the full model's Swin3D on 4 random 32x224x224 clips, low-memory path against the batched one,
    alternating, in this process (allocator tuned as the command line does)."""
    import torch

    import dvlta_metric

    dvlta_metric.tune_allocator()
    encoder = dvlta_metric.create("dvlta-vqa", pretrained=False, device="cpu").branches["bvfe"].encoder
    clips = torch.randn(4, 3, 32, 224, 224, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {"low_memory": [], "batched": []}
    with torch.no_grad():
        for i in range(repeats + 1):  # the first round warms up and is not kept
            for name, low in (("low_memory", True), ("batched", False)):
                encoder.low_memory = low
                start = time.perf_counter()
                encoder(clips)
                if i:
                    times[name].append(round(time.perf_counter() - start, 2))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="dvlta-vqa,dvlta-vqa-zeroshot")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--resolutions", default="1080p,540p")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the generated files")
    parser.add_argument("--speed-path", action="store_true", help="also the set_low_memory(False) case per model")
    parser.add_argument("--output", type=Path)
    parser.add_argument(
        "--swin-timing",
        type=int,
        default=0,
        metavar="N",
        help="only time the Swin3D's two paths N times each and add the result to --output (a quiet machine)",
    )
    args = parser.parse_args()
    if args.swin_timing:
        report = json.loads(args.output.read_text()) if args.output and args.output.exists() else {}
        report["swin3d_4_clips_seconds"] = swin_timing(args.swin_timing)
        print(json.dumps(report["swin3d_4_clips_seconds"]))
        if args.output:
            args.output.write_text(json.dumps(report, indent=2) + "\n")
        return

    cases: list[dict[str, Any]] = []
    report: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "seconds_of_video": args.seconds,
        "cases": cases,
    }
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name in args.resolutions.split(","):
            h, w = RESOLUTIONS[name]
            files[name] = Path(tmp) / f"{name}.mp4"
            write_video(files[name], h, w, args.seconds)
        for model in args.models.split(","):
            for precision in args.precisions.split(","):
                for name, path in files.items():
                    modes = [False, True] if args.speed_path and precision == "fp32" else [False]
                    for speed in modes:
                        case = {"model": model, "precision": precision, "resolution": name}
                        case["path"] = "speed path (set_low_memory(False))" if speed else "command line"
                        case.update(run_case(model, precision, path, speed))
                        cases.append(case)
                        print(json.dumps(case), flush=True)
                        if args.output:
                            args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
