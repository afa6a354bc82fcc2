"""How decoding scales with worker threads and FFmpeg decoder threads (not a test).

    python benchmarks/decode_scaling.py --workers 1,2,4,8 --decoder-threads 0,1 --output decode.json

``score_files`` can go no faster than decoding the frames the model needs, with its ``num_workers``
threads. This times exactly that (``model.read`` over copies of one file, in a thread pool) for each number
of workers and each FFmpeg decoder-thread setting (0: FFmpeg picks, usually one per core, per decoder), so
that the workers of a GPU run can be chosen from measurements. The file is a given video or a generated
H.264 clip (as in ``bench.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import make_video  # benchmarks/bench.py: this script runs as a file, with its folder on sys.path

import dvlta_metric
from dvlta_metric.video_io import read_video


def measure(path: Path, select: Any, workers: int, decoder_threads: int, files: int) -> float:
    """Videos per second decoding ``files`` copies of ``path`` with ``workers`` threads."""
    read_video(path, select=select, threads=decoder_threads)  # warm the page cache and the codec
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda _: read_video(path, select=select, threads=decoder_threads), range(files)))
    return files / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dvlta-vqa", help="whose needed frames are decoded")
    parser.add_argument("--video", help="a video file (default: a generated H.264 clip)")
    parser.add_argument("--resolution", default="960x540", help="WxH of the generated clip")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the generated clip")
    parser.add_argument("--workers", default="1,2,4,8", help="comma-separated worker counts")
    parser.add_argument("--decoder-threads", default="0,1", help="comma-separated FFmpeg thread counts")
    parser.add_argument("--files", type=int, default=0, help="reads per setting (default: 4 per worker, >= 8)")
    parser.add_argument("--output", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    model = dvlta_metric.create(args.model, pretrained=False, device="cpu")
    if args.video:
        path = Path(args.video)
    else:
        w, h = (int(x) for x in args.resolution.lower().split("x"))
        path = make_video(Path(tempfile.mkdtemp(prefix="dvlta_decode_")) / f"synthetic_{w}x{h}.mp4", w, h, args.seconds)
    rows = []
    for threads in (int(x) for x in args.decoder_threads.split(",")):
        for workers in (int(x) for x in args.workers.split(",")):
            files = args.files or max(8, 4 * workers)
            rate = measure(path, model.needed_frames, workers, threads, files)
            rows.append({"workers": workers, "decoder_threads": threads, "files": files, "videos_per_s": rate})
            print(f"workers {workers:3d}  decoder threads {threads:2d}  {rate:7.2f} videos/s", flush=True)
    report = {
        "model": args.model,
        "video": str(path),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "decode": rows,
    }
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
