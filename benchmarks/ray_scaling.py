"""Files per second of ``score_files`` and of the Ray path (``score_files_ray``) on the same generated corpus.

    python benchmarks/ray_scaling.py --model dvlta-vqa --files 8 --output benchmarks/results/cpu_2core_ray_scaling.json
    python benchmarks/ray_scaling.py --model dvlta-vqa --device cuda --precision fp16 --files 64 \\
        --batch-size 16 --decoders 4,8,12 --output benchmarks/results/h200_ray_scaling.json   # on a GPU machine

The corpus is ``--files`` copies of one synthetic H.264 clip (``benchmarks/bench.py``'s, default 960x540, 8 s at
30 fps), under different names (each a separate file to decode). A local Ray instance is started first, with
every CPU (and GPU) of the machine (``ray.init`` is timed apart: on a real cluster it is already up). Then, for
each of ``--repeats`` rounds, ``score_files`` runs in this process with ``--workers`` decoding threads (default:
the CPUs), followed by one Ray run per ``--decoders`` value, each into a fresh output directory; alternating
rounds let a change in the machine's load hit both paths. Random weights (the cost does not depend on their
values).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import make_video

import dvlta_metric
from dvlta_metric.ray_scoring import score_files_ray


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Score the corpus both ways; returns the report."""
    import ray

    cpus = os.cpu_count() or 1
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    width, height = (int(v) for v in args.resolution.split("x"))
    work = Path(tempfile.mkdtemp(prefix="dvlta_ray_scaling_"))
    try:
        clip = make_video(work / "clip.mp4", width, height, args.seconds)
        files = [str(shutil.copy(clip, work / f"v{i:04d}.mp4")) for i in range(args.files)]
        create = {"pretrained": False, "precision": args.precision}
        start = time.perf_counter()
        if args.address:  # a running cluster (the smoke test's)
            ray.init(address=args.address, logging_level="ERROR", log_to_driver=False)
        else:
            ray.init(num_cpus=cpus, num_gpus=gpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        init_seconds = time.perf_counter() - start
        workers = args.workers if args.workers is not None else cpus
        warm = dvlta_metric.create(args.model, device=args.device, **create)  # imports and first-call costs
        list(warm.score_files(files[:1], batch_size=1, num_workers=0, progress=False))
        del warm
        report: dict[str, Any] = {
            "benchmark": "ray_scaling",
            "model": args.model,
            "device": args.device,
            "device_name": torch.cuda.get_device_name(0) if gpus else platform.machine(),
            "precision": args.precision,
            "cpus": cpus,
            "gpus": gpus,
            "torch": torch.__version__,
            "ray_version": ray.__version__,
            "files": args.files,
            "resolution": args.resolution,
            "seconds_per_video": args.seconds,
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "command": "python benchmarks/ray_scaling.py " + shlex.join(sys.argv[1:]),
            "ray_init_seconds": init_seconds,
            "score_files_runs": [],
            "ray_runs": [],
        }
        if args.note:
            report["note"] = args.note
        try:
            for repeat in range(args.repeats):  # alternating, so that a change in the machine's load hits both
                # both paths are timed from nothing to the last result: the model's creation included (the Ray
                # path creates it in its actor), and the first result's time apart (what a longer corpus amortises)
                start = time.perf_counter()
                model = dvlta_metric.create(args.model, device=args.device, **create)
                reference, first = [], None
                for result in model.score_files(files, batch_size=args.batch_size, num_workers=workers, progress=False):
                    first = first or time.perf_counter() - start
                    reference.append(result)
                files_seconds = time.perf_counter() - start
                del model
                scores = {r.path: r.score for r in reference}
                report["score_files_runs"].append(
                    {
                        "repeat": repeat,
                        "workers": workers,
                        "seconds": files_seconds,
                        "files_per_s": args.files / files_seconds,
                        "first_result_seconds": first,
                        "steady_files_per_s": (args.files - 1) / (files_seconds - first) if args.files > 1 else None,
                        # per file: its decoding plus its share of the model call (FileResult.seconds)
                        "mean_file_seconds": statistics.fmean(r.seconds or 0.0 for r in reference),
                    }
                )
                print(json.dumps(report["score_files_runs"][-1]), file=sys.stderr)
                for decoders in args.decoders or [None]:
                    out = work / f"out_{repeat}_{decoders}.parquet"
                    arrivals: list[float] = []
                    begin = time.perf_counter()
                    summary = score_files_ray(
                        files,
                        out,
                        model=args.model,
                        create_kwargs=create,
                        batch_size=args.batch_size,
                        decoders=decoders,
                        scorer_threads=args.scorer_threads,
                        progress=False,
                        on_result=lambda _, a=arrivals, b=begin: a.append(time.perf_counter() - b),
                    )
                    import pyarrow.parquet as pq

                    rows = pq.read_table(out).to_pylist()
                    diff = max(abs(r["score"] - scores[r["path"]]) for r in rows)
                    plan = summary.plan
                    report["ray_runs"].append(
                        {
                            "repeat": repeat,
                            "decoders": plan.decoders if plan else decoders,
                            "scorers": plan.scorers if plan else None,
                            "scorer_threads": plan.scorer_threads if plan else None,
                            "seconds": summary.seconds,
                            "files_per_s": args.files / summary.seconds,
                            "first_result_seconds": arrivals[0],
                            "steady_files_per_s": (args.files - 1) / (arrivals[-1] - arrivals[0])
                            if args.files > 1
                            else None,
                            "files_per_s_with_init": args.files / (summary.seconds + init_seconds),
                            "overhead_vs_score_files": summary.seconds / files_seconds - 1,
                            "max_score_diff": diff,
                            "mean_file_seconds": statistics.fmean(r["seconds"] for r in rows),
                        }
                    )
                    print(json.dumps(report["ray_runs"][-1]), file=sys.stderr)
        finally:
            ray.shutdown()
        runs = report["score_files_runs"]
        median = statistics.median(r["seconds"] for r in runs)
        report["score_files"] = {"workers": workers, "seconds": median, "files_per_s": args.files / median}
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run, print and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dvlta-vqa")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--resolution", default="960x540")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the synthetic clip")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None, help="score_files decoding threads (default: the CPUs)")
    parser.add_argument(
        "--decoders", type=lambda t: [int(v) for v in t.split(",")], default=None, help="Ray decode tasks, e.g. 4,8"
    )
    parser.add_argument("--scorer-threads", type=int, default=None, help="threads of a CPU scorer (default: plan)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating score_files / Ray rounds")
    parser.add_argument("--note", default=None, help="a note shown with the result on the Benchmarks page")
    parser.add_argument("--address", default=None, help="join this Ray cluster instead of starting one")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
