"""How far bf16 / fp16 move DVLTA-VQA's outputs from float32, and which branch moves them (not a test).

    python benchmarks/precision_check.py --model dvlta-vqa --device cuda --videos 6 --output precision.json
    python benchmarks/precision_check.py --device cpu --files clip1.mp4 clip2.mp4  # also real videos

For each precision it reports the largest score difference, the largest fusion-weight difference, and per
branch: the dtype it ran in (see ``dvlta_metric.model.branch_dtypes``), the relative error of its feature
and the score difference when only that branch's feature comes from the half-precision run. With random
weights (``--pretrained`` off, the default while trained weights are unpublished) the scores of the full
model sit near 0.5, where a score is most sensitive to its features.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

import dvlta_metric
from dvlta_metric.model import branch_dtypes


def videos(
    n: int,
    seed: int = 0,
    *,
    sizes: tuple[tuple[int, int], ...] = ((540, 960), (720, 1280), (360, 640), (480, 480)),
    frames: int = 48,
) -> list[torch.Tensor]:
    """``n`` smooth random uint8 videos, ``(height, width)`` from ``sizes`` in turn, ``frames``, ``frames + 16`` or
    ``frames + 32`` frames long."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        t = frames + 16 * (i % 3)
        base = torch.rand(t, 3, h // 16, w // 16, generator=g)
        frames = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
        frames = (frames + 0.05 * torch.rand(t, 3, h, w, generator=g)).clamp(0, 1)
        out.append((frames * 255).to(torch.uint8))
    return out


def compare(model: dvlta_metric.DVLTAVQA, ref: torch.Tensor, half: torch.Tensor, precision: str) -> dict[str, Any]:
    """Score and weight differences of ``half`` features against ``ref`` features, overall and per branch.

    Args:
        model: The model (its fusion and score heads are reused).
        ref: ``(N, K, D)`` float32 features.
        half: ``(N, K, D)`` features computed at ``precision``.
        precision: The precision ``half`` was computed at.

    Returns:
        A JSON-ready report.
    """
    s_ref, w_ref = model.score_features(ref)
    s_half, w_half = model.score_features(half)
    dtypes = branch_dtypes(precision, model.device.type)
    per_branch = {}
    for k, name in enumerate(model.branches):
        mixed = ref.clone()
        mixed[:, k] = half[:, k]
        rel = (half[:, k] - ref[:, k]).norm(dim=-1) / ref[:, k].norm(dim=-1)
        per_branch[name] = {
            "dtype": str(dtypes[name] or torch.float32).removeprefix("torch."),
            "feature_rel_err": float(rel.max()),
            "score_diff_alone": float((model.score_features(mixed)[0] - s_ref).abs().max()),
        }
    return {
        "max_score_diff": float((s_half - s_ref).abs().max()),
        "max_weight_diff": float((w_half - w_ref).abs().max()),
        "branches": per_branch,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dvlta-vqa")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--videos", type=int, default=6, help="generated test videos")
    parser.add_argument("--files", nargs="*", default=[], help="video files to check as well")
    parser.add_argument(
        "--bench-video", action="store_true", help="also check bench.py's generated 960x540 8 s H.264 clip"
    )
    parser.add_argument("--precisions", default="bf16,fp16", help="comma-separated, compared with fp32")
    parser.add_argument("--pretrained", action="store_true")
    parser.add_argument(
        "--attention-kernels",
        default="sdpa",
        help="comma-separated fragment attention kernels (sdpa, flex) to run each precision with; "
        "the float32 reference always uses sdpa, and with flex fp32 is compared as well",
    )
    parser.add_argument("--output", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_grad_enabled(False)
    if device.type == "cpu":
        dvlta_metric.tune_allocator()
    torch.manual_seed(0)
    model = dvlta_metric.create(args.model, pretrained=args.pretrained, device=device)
    files = [Path(f) for f in args.files]
    if args.bench_video:
        from bench import make_video  # benchmarks/bench.py: this script runs as a file, its folder on sys.path

        clip = Path(tempfile.mkdtemp(prefix="dvlta_precision_")) / "synthetic_960x540.mp4"
        files.append(make_video(clip, 960, 540, 8.0))
    clips = videos(args.videos)
    views = [model.make_views(v) for v in clips] + [model.make_views(model.read(f)) for f in files]
    del clips

    def features(precision: str, kernel: str = "sdpa") -> torch.Tensor:
        model.set_precision(precision).set_attention_kernel(kernel)
        return torch.cat([model.score_views([v])[2] for v in views])

    ref = features("fp32")
    report: dict[str, Any] = {
        "model": args.model,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
        "torch": torch.__version__,
        "videos": args.videos,
        "files": [str(f) for f in args.files],
        "bench_video": args.bench_video,
        "pretrained": args.pretrained,
        "fp32_scores": [float(s) for s in model.score_features(ref)[0]],
    }
    for kernel in args.attention_kernels.split(","):
        precisions = args.precisions.split(",") + (["fp32"] if kernel != "sdpa" else [])
        for precision in precisions:
            key = precision if kernel == "sdpa" else f"{precision}_{kernel}"
            report[key] = compare(model, ref, features(precision, kernel), precision)
    model.set_precision("fp32").set_attention_kernel("sdpa")
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
