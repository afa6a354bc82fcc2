"""What trust costs: maps + attributes + technical score against a plain score, and K views against one.

Not a test: run it by hand and read the JSON.

    python benchmarks/trust.py --max-views 8 --out benchmarks/results/cpu_2core_trust.json
    python benchmarks/trust.py --cost-only --cost-videos 4 --out benchmarks/results/cpu_2core_trust_cost.json

For each video (decoded once with the frames of ``--max-views`` scoring views):

* ``plain_s``: ``model(video)``; ``extras_s``: ``model.explain(video, attributes=True, maps=True)`` (the score,
  the technical score, the default attributes and the fragment map, from one pass); timed in alternation,
  ``--repeats`` pairs, so that a load that comes and goes hits both; ``extras_ratio`` is the median of the
  pairs' ratios and ``plain_s`` / ``extras_s`` the best times; ``isolated_s``: ``model.quality_map(video,
  isolated=True)`` (a second fragment-branch pass), once;
* ``views``: the score of each of ``--max-views`` scoring views (one ``explain(video, views=K)`` call, timed),
  from which the spread of single-view scores and the Student-t 95 % half-width of a K-view mean follow.

The model is ``--model`` with its weights where they can be loaded (a ``local-dir:`` folder, the Hub cache) and
with random weights (``--seed``) otherwise; the attribute prompts are embedded (by a random text tower of the
model's sizes where the model has none) before timing, as a real model caches them after its first call.
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
from dvlta_metric._factory import weights_label
from dvlta_metric.attributes import DEFAULT_ATTRIBUTES, TextEncoder, attribute_queries
from dvlta_metric.errors import WeightsUnavailableError
from dvlta_metric.uncertainty import student_t_quantile


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _alternating(plain: Any, extras: Any, repeats: int) -> dict[str, float]:
    """Best times of ``plain`` and ``extras`` and the median ratio of ``repeats`` alternating pairs."""
    pairs = [(_timed(plain), _timed(extras)) for _ in range(repeats)]
    ratios = sorted(e / p for p, e in pairs)
    middle = len(ratios) // 2
    median = ratios[middle] if len(ratios) % 2 else (ratios[middle - 1] + ratios[middle]) / 2
    return {"plain_s": min(p for p, _ in pairs), "extras_s": min(e for _, e in pairs), "extras_ratio": median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
    parser.add_argument("--videos", type=Path, default=shared)
    parser.add_argument("--model", default="dvlta-vqa")
    parser.add_argument("--max-views", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="alternating (plain, extras) pairs per video")
    parser.add_argument("--cost-only", action="store_true", help="time the extras only, not the K views")
    parser.add_argument("--cost-videos", type=int, default=1, help="videos the extras' cost is timed on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    try:  # the model's weights where they can be loaded (a local-dir: folder, the Hub cache), else random ones
        model = dvlta_metric.create(args.model, device="cpu")
    except WeightsUnavailableError:
        model = dvlta_metric.create(args.model, pretrained=False, device="cpu", seed=args.seed)
    random_text = model.text_encoder is None
    if random_text:  # a trained model brings no text tower: a random one of its sizes embeds the prompts
        model.set_text_encoder(TextEncoder.from_config(model.config))
    model.prompt_embedding([p for q in attribute_queries(DEFAULT_ATTRIBUTES) for p in (q.positive, q.negative)])
    paths = sorted(p for p in args.videos.iterdir() if p.suffix == ".mp4")
    report: dict[str, Any] = {
        "model": args.model,
        "weights": weights_label(model),
        "text_tower": "random (for the attribute prompts)" if random_text else "the model's",
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
                extras = lambda v=video: model.explain(v, attributes=True, maps=True)  # noqa: E731
                entry.update(_alternating(lambda v=video: model(v), extras, args.repeats))
                entry["isolated_s"] = _timed(lambda v=video: model.quality_map(v, isolated=True))
            if args.cost_only:
                if i < args.cost_videos:
                    report["videos"].append(entry)
                    print(json.dumps(entry), flush=True)
                    if args.out:
                        args.out.write_text(json.dumps(report, indent=2) + "\n")
                continue
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
