"""Draw the documentation figures (matplotlib; the outputs are committed next to this script).

    python docs/figures/make_figures.py            # writes docs/figures/*.svg / *.png
    python docs/figures/make_figures.py --out DIR  # somewhere else (the docs test does this)

* ``architecture.svg``: the DVLTA-VQA pipeline: two views, three branches, text-guided fusion and score,
  with frozen and trained parts told apart.
* ``views.png``: the two views the library cuts from the bundled sample video
  (``dvlta_metric/assets/sample.mp4``), made with the library's own view functions.

The output is deterministic (fixed SVG ids, no dates), so re-running the script only changes the files
when the drawing changes.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
from PIL import Image

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parents[1] / "dvlta_metric" / "assets" / "sample.mp4"

FROZEN = "#dbe4f3"
TRAINED = "#ffd9a8"
FREE = "#f2f2f2"
EDGE = "#4a4a4a"


def _setup() -> None:
    plt.rcParams.update(
        {
            "svg.hashsalt": "dvlta-metric",
            "svg.fonttype": "path",  # text as paths: the figure looks the same without any font installed
            "font.family": "DejaVu Sans",
            "font.size": 9,
        }
    )


def _box(ax, x, y, w, h, text, color, *, size=8.5, weight="normal"):  # type: ignore[no-untyped-def]
    ax.add_patch(
        FancyBboxPatch(
            (x, y),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            linewidth=1.0,
            edgecolor=EDGE,
            facecolor=color,
        )
    )
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, weight=weight, linespacing=1.5)


def _arrow(ax, start, end, *, text=None, offset=(0.0, 0.12), curve=0.0):  # type: ignore[no-untyped-def]
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=11,
            linewidth=1.0,
            color=EDGE,
            connectionstyle=f"arc3,rad={curve}",
            shrinkA=2,
            shrinkB=2,
        )
    )
    if text:
        mx, my = (start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1]
        ax.text(mx, my, text, ha="center", va="bottom", fontsize=7.5, color="#333333")


def architecture(out: Path) -> Path:
    """The pipeline diagram."""
    fig, ax = plt.subplots(figsize=(14.0, 6.6))
    ax.set_xlim(0, 14.4)
    ax.set_ylim(0, 6.8)
    ax.axis("off")

    # input and views
    _box(ax, 0.05, 2.75, 1.6, 1.1, "decoded video\n(T, 3, H, W)\nuint8 or [0, 1]", FREE)
    _box(
        ax,
        2.15,
        4.3,
        2.55,
        1.4,
        "Fragment view\n7x7 grid of 32x32 patches\nK clips of 32 frames\n(K, 3, 32, 224, 224)",
        FREE,
    )
    _box(
        ax,
        2.15,
        1.05,
        2.55,
        1.4,
        "Frame view\n8 segment-centre frames\nshort side 256, crop 224\n(8, 3, 224, 224)",
        FREE,
    )
    _arrow(ax, (1.65, 3.5), (2.15, 5.0))
    _arrow(ax, (1.65, 3.1), (2.15, 1.75))

    # branches
    _box(
        ax,
        5.2,
        4.55,
        3.25,
        1.15,
        "branches['bvfe'].encode (frozen)\nVideo Swin-T 3D with GRPB\n(768, 16, 7, 7) per clip",
        FROZEN,
    )
    _box(ax, 8.65, 4.7, 1.45, 0.85, "head\nConv-GELU-Conv\nmean", TRAINED, size=7.8)
    _box(
        ax,
        5.2,
        2.55,
        4.9,
        1.3,
        "branches['tcm'].head (trained end to end; no encoder)\n"
        "3-D stem, 2 x [TAdaConv2d + temporal aggregation],\n"
        "CBAM, mean, Linear(256, 512)",
        TRAINED,
    )
    _box(
        ax,
        5.2,
        0.45,
        3.25,
        1.15,
        "branches['vbtc'].encode (frozen)\nCLIP ViT-B/16 image tower\n$z_t$ per frame",
        FROZEN,
    )
    _box(ax, 8.65, 0.6, 1.45, 0.85, "head\n$Z = \\mathrm{mean}_t\\, z_t$\n$0.4A(Z) + 0.6Z$", TRAINED, size=7.8)
    _arrow(ax, (4.7, 5.0), (5.2, 5.1))
    _arrow(ax, (4.7, 2.1), (5.2, 3.0))
    _arrow(ax, (4.7, 1.4), (5.2, 1.0))
    _arrow(ax, (8.45, 5.12), (8.65, 5.12))
    _arrow(ax, (8.45, 1.02), (8.65, 1.02))
    ax.text(6.8, 5.82, "eqs. 8-9", ha="center", fontsize=7.5, style="italic")
    ax.text(7.65, 3.97, "eqs. 5-7", ha="center", fontsize=7.5, style="italic")
    ax.text(6.8, 1.72, "eqs. 1-4", ha="center", fontsize=7.5, style="italic")

    # text side
    _box(
        ax,
        10.8,
        5.55,
        3.1,
        1.1,
        'prompts: "a photo of a video.",\n'
        '"a photo of a high / low quality video."\n'
        "CLIP text tower, run once: stored $E$ (3, 512)",
        FROZEN,
        size=7.5,
    )
    _box(
        ax,
        10.8,
        4.45,
        3.1,
        0.75,
        "text adapter (ours)\n$T' = 0.2\\,\\mathrm{MLP}(E) + 0.8\\,E$",
        TRAINED,
        size=7.8,
    )
    _arrow(ax, (12.35, 5.55), (12.35, 5.2))

    # fusion and score
    _box(
        ax,
        10.8,
        2.4,
        3.1,
        1.5,
        "text-guided fusion (eqs. 10-11)\n"
        "$w_k = \\cos(F_k, T'_{\\mathrm{fuse}})$\n"
        "$F_{\\mathrm{fused}} = \\Sigma_k\\, w_k F_k$",
        FREE,
    )
    _box(
        ax,
        10.8,
        0.3,
        3.1,
        1.55,
        "score (eqs. 12-13)\n$S_\\pm = 100 \\cos(T'_\\pm, F_{\\mathrm{fused}})$\n"
        "$Q = e^{S_+} / (e^{S_+} + e^{S_-})$ in (0, 1)\nhigher is better",
        FREE,
        size=8.2,
    )
    _arrow(ax, (10.1, 5.12), (10.8, 3.6))
    _arrow(ax, (10.1, 3.2), (10.8, 3.2))
    _arrow(ax, (10.1, 1.02), (10.8, 2.7))
    ax.text(10.55, 4.25, "$F_{\\mathrm{bvfe}}$", fontsize=8.5)
    ax.text(10.22, 3.3, "$F_{\\mathrm{tcm}}$", fontsize=8.5)
    ax.text(10.3, 1.12, "$F_{\\mathrm{vbtc}}$", fontsize=8.5)
    _arrow(ax, (12.35, 4.45), (12.35, 3.9))
    ax.text(12.45, 4.1, "$T'_{\\mathrm{fuse}}$", fontsize=8.5)
    _arrow(ax, (12.35, 2.4), (12.35, 1.85))
    ax.text(12.45, 2.05, "$F_{\\mathrm{fused}}$", fontsize=8.5)
    _arrow(ax, (13.9, 4.8), (13.9, 1.1), curve=-0.25)
    ax.text(14.05, 2.95, "$T'_+$\n$T'_-$", fontsize=8.5)

    ax.legend(
        handles=[
            Patch(facecolor=FROZEN, edgecolor=EDGE, label="frozen (pretrained)"),
            Patch(facecolor=TRAINED, edgecolor=EDGE, label="trained (about 1.5 M parameters in all)"),
            Patch(facecolor=FREE, edgecolor=EDGE, label="no parameters"),
        ],
        loc="lower left",
        bbox_to_anchor=(0.0, 0.0),
        fontsize=8,
        frameon=False,
    )
    path = out / "architecture.svg"
    fig.savefig(path, bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return path


def views(out: Path) -> Path:
    """One frame of the sample video and the two views cut from it."""
    import torch

    from dvlta_metric import read_video
    from dvlta_metric.config import FragmentViewConfig, FrameViewConfig
    from dvlta_metric.views import fragment_clip_indices, fragment_view, frame_view, segment_centre_indices

    video = read_video(SAMPLE)
    frames = video.frames  # (N, 3, H, W) uint8, every frame
    fcfg, vcfg = FragmentViewConfig(), FrameViewConfig()
    clip = fragment_clip_indices(video.num_frames, fcfg)[0]
    frag = fragment_view(frames[clip], fcfg, generator=torch.Generator().manual_seed(fcfg.seed))[0, :, 0]
    centre = segment_centre_indices(video.num_frames, vcfg)
    crop = frame_view(frames[centre[:1]], vcfg)[0]

    def show(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
        m = torch.tensor(mean)[:, None, None]
        s = torch.tensor(std)[:, None, None]
        return (x * s + m).clamp(0, 1).permute(1, 2, 0)

    fig, axes = plt.subplots(1, 3, figsize=(12.0, 3.3), gridspec_kw={"width_ratios": [16 / 9, 1, 1]})
    first = int(clip[0])
    axes[0].imshow(frames[first].permute(1, 2, 0).numpy())
    axes[0].set_title(f"frame {first} of the sample video ({frames.shape[-1]}x{frames.shape[-2]})")
    axes[1].imshow(show(frag, fcfg.mean, fcfg.std).numpy())
    for k in range(1, fcfg.fragments):
        axes[1].axhline(k * fcfg.fsize - 0.5, color="white", linewidth=0.5, alpha=0.7)
        axes[1].axvline(k * fcfg.fsize - 0.5, color="white", linewidth=0.5, alpha=0.7)
    axes[1].set_title("fragment view: 49 native-resolution\n32x32 patches (grid drawn for clarity)", fontsize=8.5)
    axes[2].imshow(show(crop, vcfg.mean, vcfg.std).numpy())
    axes[2].set_title(f"frame view: frame {int(centre[0])}, short side 256,\ncentre crop 224", fontsize=8.5)
    for a in axes:
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    path = out / "views.png"
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90, format="png", bbox_inches="tight")
    plt.close(fig)
    buffer.seek(0)
    # a 256-colour palette keeps the photo panels legible at a third of the size of a true-colour PNG
    image = (
        Image.open(buffer)
        .convert("RGB")
        .quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    )
    image.save(path, optimize=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw the documentation figures.")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: docs/figures)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    _setup()
    for path in (architecture(args.out), views(args.out)):
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
