"""Export the network over views to ``.pt2`` and ONNX and compare the files' scores with eager ones (not a test).

    python benchmarks/export_check.py --model dvlta-vqa --output benchmarks/results/cpu_2core_export.json
    python benchmarks/export_check.py --model dvlta-vqa-tiny --formats pt2      # quicker

The model gets random weights (``create(name, pretrained=False)`` after ``torch.manual_seed(0)``; nothing is
downloaded). It is traced once (:func:`dvlta_metric.export.export_program`) and written in each format
(:func:`dvlta_metric.export.export_model`); each file is loaded back and scores the views of generated videos
(``model.views_for_export``) as one batch, with ``torch.export.load(...).module()`` for ``.pt2`` and onnxruntime
on the CPU for ONNX. The report has the time of each step, the file sizes, the largest score difference from the
eager model's scores of the same videos (and of their log-odds, which random weights' scores near 0 or 1 do not
flatten), the process's peak memory, and the load average (times on a shared machine are only indicative).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from precision_check import videos as precision_videos  # the script's folder is on sys.path

import dvlta_metric
from dvlta_metric.export import ViewNetwork, export_model, export_program


def videos(n: int, seed: int = 0) -> list[torch.Tensor]:
    """``n`` smooth random uint8 videos (:func:`precision_check.videos`), each longer than ``dvlta-vqa``'s fragment
    clips' span (64 frames: 32 at interval 2), so that the eager model computes every clip too (it computes clips
    that read the same frames once, the exported program all of them)."""
    return precision_videos(n, seed, sizes=((540, 960), (360, 640), (720, 1280)), frames=128)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_file(fmt: str, path: Path, views: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, float, float]:
    """Load an exported file and score ``views``: ``(scores, load seconds, run seconds)``."""
    start = time.perf_counter()
    if fmt == "pt2":
        module = torch.export.load(path).module()
        loaded = time.perf_counter()
        with torch.no_grad():
            scores = module(*views)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        loaded = time.perf_counter()
        (out,) = session.run(None, {i.name: v.cpu().numpy() for i, v in zip(session.get_inputs(), views)})
        scores = torch.from_numpy(out)
    return scores.float().cpu(), loaded - start, time.perf_counter() - loaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dvlta-vqa")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--videos", type=int, default=2, help="generated videos, scored as one batch")
    parser.add_argument("--formats", nargs="+", choices=["pt2", "onnx"], default=["pt2", "onnx"])
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (default: a temporary folder)")
    parser.add_argument("--output", type=Path, default=None, help="write the report here as JSON")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = dvlta_metric.create(args.model, pretrained=False, device=args.device)
    clips = videos(args.videos)
    per_video = [model.views_for_export(v) for v in clips]
    views = tuple(torch.cat(parts) for parts in zip(*per_video))
    start = time.perf_counter()
    with torch.no_grad():
        eager = torch.stack([model(v) for v in clips]).float().cpu()
    eager_s = time.perf_counter() - start
    report: dict[str, Any] = {
        "benchmark": "export_check",
        "command": "python benchmarks/export_check.py --model "
        + f"{args.model} --device {args.device} --videos {args.videos} --formats {' '.join(args.formats)}",
        "model": args.model,
        "weights": model.weights_origin,
        "device": args.device,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "versions": {name: _version(name) for name in ("torch", "onnx", "onnxscript", "onnxruntime")},
        "git_commit": _commit(),
        "date": datetime.date.today().isoformat(),
        "load_average_at_start": os.getloadavg()[0],
        "inputs": {name: list(v.shape) for name, v in zip(model.views, views)},
        "eager_scores": eager.tolist(),
        "eager_model_calls_s": eager_s,
    }
    start = time.perf_counter()
    with torch.no_grad():
        ViewNetwork(model)(*views)
    report[f"eager_view_network_batch_{len(clips)}_s"] = time.perf_counter() - start
    start = time.perf_counter()
    program = export_program(model)
    report["trace_s"] = time.perf_counter() - start
    print(f"traced in {report['trace_s']:.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or Path(tmp)
        for fmt in args.formats:
            path = folder / f"{args.model}.{fmt}"
            start = time.perf_counter()
            export_model(model, path, format=fmt, program=program)
            written = time.perf_counter() - start
            scores, load_s, run_s = run_file(fmt, path, views)
            report[fmt] = {
                "write_s": written,
                "megabytes": path.stat().st_size / 2**20,
                "load_s": load_s,
                f"run_batch_{len(clips)}_s": run_s,
                "scores": scores.tolist(),
                "max_score_diff": float((scores - eager).abs().max()),
                "max_logit_diff": float((torch.logit(scores.double()) - torch.logit(eager.double())).abs().max()),
            }
            print(f"{fmt}: {json.dumps(report[fmt])}", flush=True)
    report["load_average_at_end"] = os.getloadavg()[0]
    report["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    text = json.dumps(report, indent=2) + "\n"
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
