"""Optimisations must not change results: seeded models on seeded videos against stored values.

``tests/data/golden_scores.json`` was computed by the implementation before the speed work (commit db1ecc8);
every later optimisation (view gathering, cached attention biases, ...) must reproduce it in float32.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import dvlta_metric

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_scores.json").read_text())


def golden_video(t: int, h: int, w: int, seed: int) -> torch.Tensor:
    """The deterministic uint8 video the golden values were computed on."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(t, 3, h // 8, w // 8, generator=g)
    v = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    return ((v + 0.1 * torch.rand(t, 3, h, w, generator=g)).clamp(0, 1) * 255).round().to(torch.uint8)


VIDEOS = [(70, 270, 480, 1), (20, 200, 150, 2)]


@pytest.mark.parametrize("name", ["dvlta-vqa-tiny", pytest.param("dvlta-vqa", marks=pytest.mark.slow)])
def test_matches_pre_optimisation_values(name: str) -> None:
    torch.manual_seed(0)
    model = dvlta_metric.create(name, pretrained=False, device="cpu")
    for spec, expected in zip(VIDEOS, GOLDEN[name]):
        e = model.explain(golden_video(*spec))
        assert abs(float(e.score) - expected["score"]) < 1e-5
        assert torch.allclose(e.weights, torch.tensor(expected["weights"]), atol=1e-5)
        assert torch.allclose(e.features.norm(dim=-1), torch.tensor(expected["features_norm"]), rtol=1e-5)
        assert torch.allclose(e.features[:, :4], torch.tensor(expected["features_head"]), atol=1e-5)
