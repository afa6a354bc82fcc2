"""What trust costs: maps + attributes + technical score against a plain score, and K views against one.

Not a test: run it by hand and read the JSON.

    python benchmarks/trust.py --max-views 8 --out benchmarks/results/cpu_2core_trust.json

For each video (decoded once with the frames of ``--max-views`` scoring views):

* ``plain_s``: ``model(video)``; ``extras_s``: ``model.explain(video, attributes=True, maps=True)`` (the score,
  the technical score, the default attributes and the fragment map, from one pass); the best of ``--repeats``;
* ``views``: the score of each of ``--max-views`` scoring views (one ``explain(video, views=K)`` call, timed),
  from which the spread of single-view scores and the Student-t 95 % half-width of a K-view mean follow.

The model is the full ``dvlta-vqa`` architecture with random weights (``--seed``) unless ``--model`` names a
loadable one; the attribute prompts are embedded (by a random text tower of the model's sizes) before timing, as
a real model caches them after its first call.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch

import dvlta_metric
from dvlta_metric.attributes import DEFAULT_ATTRIBUTES, TextEncoder, attribute_queries
from dvlta_metric.uncertainty import student_t_quantile


def _best(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
    parser.add_argument("--videos", type=Path, default=shared)
    parser.add_argument("--model", default="dvlta-vqa")
    parser.add_argument("--max-views", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cost-videos", type=int, default=1, help="videos the extras' cost is timed on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    model = dvlta_metric.create(args.model, pretrained=False, device="cpu")
    if model.text_encoder is None:
        model.set_text_encoder(TextEncoder.from_config(model.config))
    model.prompt_embedding([p for q in attribute_queries(DEFAULT_ATTRIBUTES) for p in (q.positive, q.negative)])
    paths = sorted(p for p in args.videos.iterdir() if p.suffix == ".mp4")
    report: dict[str, Any] = {
        "model": args.model,
        "weights": f"random (seed {args.seed})",
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "max_views": args.max_views,
        "videos": [],
    }
    for i, path in enumerate(paths):
        video = model.read(path, views=args.max_views)
        entry: dict[str, Any] = {"file": path.name, "frames": video.num_frames, "size": list(video.frames.shape[-2:])}
        with torch.inference_mode():
            if i < args.cost_videos:
                entry["plain_s"] = _best(lambda v=video: model(v), args.repeats)
                entry["extras_s"] = _best(lambda v=video: model.explain(v, attributes=True, maps=True), args.repeats)
                entry["extras_ratio"] = entry["extras_s"] / entry["plain_s"]
            start = time.perf_counter()
            e = model.explain(video, views=args.max_views)
            entry["views_s"] = time.perf_counter() - start
        scores = e.view_scores.tolist()
        spread = float(e.spread)
        entry["view_scores"] = scores
        entry["spread"] = spread
        entry["half_width_95"] = {
            str(k): student_t_quantile(0.975, k - 1) * spread / math.sqrt(k) for k in (2, 4, 8) if k <= args.max_views
        }
        entry["standard_error"] = {str(k): spread / math.sqrt(k) for k in (1, 2, 4, 8) if k <= args.max_views}
        report["videos"].append(entry)
        print(json.dumps(entry), flush=True)
        if args.out:
            args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
