"""Draw the figures of the Trustworthy scores page (``docs/figures/trust_*.png``).

* ``trust_map.png``: a fragment quality map over a real frame (the first video of ``../shared/data/videos``, or a
  generated clip when that folder is absent), drawn by :func:`dvlta_metric.quality_map.write_overlays`;
* ``trust_attributes.png``: the default attributes of the same video, as a bar chart;
* ``trust_views.png``: how the 95 % half-width of a K-view mean shrinks with K, per video, from the JSON of
  ``benchmarks/trust.py`` (``benchmarks/results/cpu_2core_trust.json``).

The model is ``dvlta-vqa-tiny`` (``--model`` to change it) with **random weights**, and attributes use a random
text tower of its sizes: the figures show what the outputs look like and how they are laid out, not what a
trained model sees in the video. Needs matplotlib (the ``train`` extra).

    python docs/figures/make_trust_figures.py
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch

import dvlta_metric
from dvlta_metric.attributes import TextEncoder
from dvlta_metric.quality_map import write_overlays

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = REPO.parent / "shared" / "data" / "videos"
BENCH = REPO / "benchmarks" / "results" / "cpu_2core_trust.json"


def _video() -> tuple[Path, str]:
    videos = sorted(SHARED.glob("*.mp4")) if SHARED.is_dir() else []
    if videos:
        return videos[0], videos[0].name
    from tests.video_files import write_clip  # a generated clip when the shared data is absent

    path = Path(tempfile.mkdtemp()) / "generated.mp4"
    return write_clip(path, frames=64, width=480, height=270), "a generated clip"


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dvlta-vqa-tiny")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = dvlta_metric.create(args.model, pretrained=False, device="cpu")
    model.set_text_encoder(TextEncoder.from_config(model.config))
    path, label = _video()

    e = model.explain(path, attributes=True, maps=True)
    qmap = e.maps[0]  # type: ignore[index]
    frame = qmap.frame_indices()[len(qmap.frame_indices()) // 2]
    video = dvlta_metric.read_video(path, select=lambda n: [frame])
    with tempfile.TemporaryDirectory() as tmp:
        (png,) = write_overlays(qmap, video, tmp, frames=[frame])
        image = plt.imread(png)
    fig, ax = plt.subplots(figsize=(7.5, 7.5 * image.shape[0] / image.shape[1] + 0.5))
    ax.imshow(image)
    ax.set_axis_off()
    ax.set_title(f"fragment map, frame {frame} of {label} ({args.model}, random weights)", fontsize=9)
    fig.tight_layout()
    fig.savefig(HERE / "trust_map.png", dpi=110)
    plt.close(fig)

    attrs = e.attributes
    fig, ax = plt.subplots(figsize=(6.5, 2.8))
    ax.barh(list(attrs.names), attrs.scores.tolist(), color="#5c6bc0")  # type: ignore[union-attr]
    ax.axvline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.set_xlabel("P(attribute rather than its antonym)")
    ax.set_title(f"default attributes of {label} ({args.model}, random weights and text tower)", fontsize=9)
    fig.tight_layout()
    fig.savefig(HERE / "trust_attributes.png", dpi=110)
    plt.close(fig)

    if BENCH.is_file():
        report = json.loads(BENCH.read_text())
        fig, ax = plt.subplots(figsize=(6.5, 3.4))
        for entry in report["videos"]:
            spread = entry["spread"]
            ks = list(range(2, report["max_views"] + 1))
            from dvlta_metric.uncertainty import student_t_quantile

            half = [student_t_quantile(0.975, k - 1) * spread / math.sqrt(k) for k in ks]
            ax.plot(ks, half, marker="o", ms=3, label=f"{entry['file'][:28]} (s={spread:.2g})")
        ax.set_yscale("log")
        ax.set_xlabel("K (scoring views)")
        ax.set_ylabel("95% half-width of the K-view mean")
        ax.set_title(f"{report['model']}, random weights: sampling error only", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(HERE / "trust_views.png", dpi=110)
        plt.close(fig)


if __name__ == "__main__":
    main()
