"""Draw the loss-view coverage figure of the Codec research page (``docs/figures/loss_coverage.png``).

A loss built on the metric can only move the pixels its views read. This script draws a model's loss views
(``as_loss=True``: fresh fragment offsets, clip starts, segment frames and crops on every call) again and
again on a random clip, back-propagates the sum of the views, and records after each call the share of pixel
positions (and of pixel-frames) that have received a gradient so far; the scoring views (fixed) are drawn
once for comparison. No network runs: the views alone decide which pixels a loss can reach.

    python docs/figures/make_coverage.py                       # the paper model's views, 540p and 1080p
    python docs/figures/make_coverage.py --calls 8 --frames 8  # quicker
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import dvlta_metric

HERE = Path(__file__).resolve().parent
SIZES = {"540p": (540, 960), "1080p": (1080, 1920)}


def coverage(model: dvlta_metric.DVLTAVQA, height: int, width: int, frames: int, calls: int) -> dict[str, list[float]]:
    """Cumulative shares of pixel positions and of pixel-frames with a gradient after each loss call.

    Args:
        model: A model created with ``as_loss=True``.
        height: Frame height.
        width: Frame width.
        frames: Frames of the clip.
        calls: Loss calls to draw.

    Returns:
        ``{"positions": [...], "pixel_frames": [...], "scoring": [positions, pixel_frames]}``, one value per
        call for the loss views, and the two shares of the fixed scoring views.
    """
    video = torch.rand(frames, 3, height, width, generator=torch.Generator().manual_seed(0), requires_grad=True)

    def touched(loss: bool) -> torch.Tensor:
        video.grad = None
        views = model.make_views(video, loss=loss)
        sum(view.sum() for view in views.values()).backward()
        assert video.grad is not None
        return video.grad.abs().sum(dim=1) > 0  # (T, H, W)

    seen = torch.zeros(frames, height, width, dtype=torch.bool)
    positions, pixel_frames = [], []
    for _ in range(calls):
        seen |= touched(loss=True)
        positions.append(seen.any(dim=0).float().mean().item())
        pixel_frames.append(seen.float().mean().item())
    fixed = touched(loss=False)
    return {
        "positions": positions,
        "pixel_frames": pixel_frames,
        "scoring": [fixed.any(dim=0).float().mean().item(), fixed.float().mean().item()],
    }


def main(argv: list[str] | None = None) -> int:
    """Compute the coverage curves and draw the figure (and write the numbers next to it as JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: docs/figures)")
    parser.add_argument("--model", default="dvlta-vqa", help="whose views (default: the paper model's)")
    parser.add_argument("--calls", type=int, default=64, help="loss calls (default: 64)")
    parser.add_argument("--frames", type=int, default=32, help="frames of the clip (default: 32)")
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["540p", "1080p"])
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    model = dvlta_metric.create(args.model, pretrained=False, device="cpu", as_loss=True)
    model.seed_views(0)
    results = {name: coverage(model, *SIZES[name], args.frames, args.calls) for name in args.sizes}
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    calls = range(1, args.calls + 1)
    for (name, res), color in zip(results.items(), ("tab:blue", "tab:orange")):
        ax.plot(calls, [100 * v for v in res["positions"]], color=color, label=f"{name}: pixel positions")
        ax.plot(calls, [100 * v for v in res["pixel_frames"]], color=color, ls="--", label=f"{name}: pixel-frames")
        ax.axhline(100 * res["scoring"][0], color=color, ls=":", lw=1, label=f"{name}: fixed scoring views")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("loss calls on the same clip")
    ax.set_ylabel("share that received gradient (%)")
    ax.set_ylim(0, 101)
    ax.set_title(f"{args.model} loss views, {args.frames}-frame clip", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / "loss_coverage.png")
    plt.close(fig)
    settings = {"model": args.model, "frames": args.frames, "calls": args.calls}
    (args.out / "loss_coverage.json").write_text(json.dumps({"settings": settings, **results}, indent=1) + "\n")
    for name, res in results.items():
        print(f"{name}: one call {res['positions'][0]:.1%}, {args.calls} calls {res['positions'][-1]:.1%} of positions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
