"""The golden test's inputs: stored tiny weights and seeded synthetic videos, and the script that pins them.

``tests/data/tiny_weights.safetensors`` holds weights of the registered ``dvlta-vqa-tiny`` configuration
(float16, drawn once from ``torch.manual_seed(0)``), so that the golden scores depend on stored numbers and
not on the order in which a refactor initialises modules. Run ``python tests/golden_data.py`` to re-pin
``tests/data/golden_scores.json`` after a change that is *meant* to change scores (and say so in the
changelog); the weights file is only rewritten with ``--weights``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import dvlta_metric

DATA = Path(__file__).resolve().parent / "data"
WEIGHTS = DATA / "tiny_weights.safetensors"
GOLDEN = DATA / "golden_scores.json"
VIDEOS = [(70, 270, 480, 1), (20, 200, 150, 2)]
"""``(frames, height, width, seed)`` of the golden videos."""


def golden_video(t: int, h: int, w: int, seed: int) -> torch.Tensor:
    """The deterministic uint8 video ``(T, 3, H, W)`` the golden values are computed on."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(t, 3, h // 8, w // 8, generator=g)
    v = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    return ((v + 0.1 * torch.rand(t, 3, h, w, generator=g)).clamp(0, 1) * 255).round().to(torch.uint8)


def stored_tiny_model() -> dvlta_metric.DVLTAVQA:
    """``dvlta-vqa-tiny`` on the CPU with the stored weights (cast to float32), loaded strictly."""
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    state = {k: v.float() for k, v in load_file(WEIGHTS).items()}
    model.load_state_dict(state, strict=True)
    return model


def explain_rows(model: dvlta_metric.DVLTAVQA, videos: int = len(VIDEOS)) -> list[dict[str, object]]:
    """Score, fusion weights, feature norms and the first 4 feature values of the first ``videos`` golden videos."""
    rows = []
    for spec in VIDEOS[:videos]:
        e = model.explain(golden_video(*spec))
        rows.append(
            {
                "score": float(e.score),
                "weights": e.weights.tolist(),
                "features_norm": e.features.norm(dim=-1).tolist(),
                "features_head": e.features[:, :4].tolist(),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", action="store_true", help="also redraw and rewrite the stored tiny weights")
    parser.add_argument("--full", action="store_true", help="also rewrite dvlta-vqa's rows (slow: the full model)")
    args = parser.parse_args(argv)
    if args.weights:
        torch.manual_seed(0)
        model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
        save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()}, WEIGHTS)
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    golden["_about"] = (
        "Scores on seeded synthetic videos: dvlta-vqa-tiny with the stored weights "
        "tests/data/tiny_weights.safetensors, dvlta-vqa with the weights torch.manual_seed(0) draws. "
        "Written by tests/golden_data.py; tests/test_golden.py checks them."
    )
    golden["dvlta-vqa-tiny"] = explain_rows(stored_tiny_model())
    if args.full:
        torch.manual_seed(0)
        full = dvlta_metric.create("dvlta-vqa", pretrained=False, device="cpu")
        golden["dvlta-vqa"] = explain_rows(full, videos=1)  # one video keeps the slow test short
    GOLDEN.write_text(json.dumps(golden, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
