"""How far bf16 / fp16 autocast moves DVLTA-VQA's outputs from float32 (not a test; run on a GPU).

    python benchmarks/precision_check.py --model dvlta-vqa --device cuda --videos 8

For each precision it reports the largest score difference, the largest fusion-weight difference and the
relative error of the branch features over generated videos of several sizes. With random weights
(``--pretrained`` off, the default while trained weights are unpublished) scores can saturate near 0 or 1,
so the feature and weight errors are the informative numbers.
"""

from __future__ import annotations

import argparse
import json

import torch

import dvlta_metric


def videos(n: int, seed: int = 0) -> list[torch.Tensor]:
    """``n`` smooth random uint8 videos of varied sizes and lengths."""
    g = torch.Generator().manual_seed(seed)
    sizes = [(540, 960), (720, 1280), (360, 640), (480, 480)]
    out = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        t = 48 + 16 * (i % 3)
        base = torch.rand(t, 3, h // 16, w // 16, generator=g)
        frames = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
        frames = (frames + 0.05 * torch.rand(t, 3, h, w, generator=g)).clamp(0, 1)
        out.append((frames * 255).to(torch.uint8))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dvlta-vqa")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--pretrained", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = dvlta_metric.create(args.model, pretrained=args.pretrained, device=args.device)
    clips = videos(args.videos)
    ref = [model.explain(v) for v in clips]
    report = {}
    for precision in ("bf16", "fp16"):
        model.set_precision(precision)
        got = [model.explain(v) for v in clips]
        report[precision] = {
            "max_score_diff": max(abs(float(a.score) - float(b.score)) for a, b in zip(ref, got)),
            "max_weight_diff": max(float((a.weights - b.weights).abs().max()) for a, b in zip(ref, got)),
            "max_feature_rel_err": max(
                float((a.features - b.features).norm() / a.features.norm()) for a, b in zip(ref, got)
            ),
        }
    model.set_precision("fp32")
    report["fp32_scores"] = [float(e.score) for e in ref]
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
