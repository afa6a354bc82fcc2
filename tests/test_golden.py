"""Refactors and optimisations must not change results: stored weights on seeded videos against stored values.

``dvlta-vqa-tiny`` is loaded from the stored weights ``tests/data/tiny_weights.safetensors``, so the values
do not depend on the order of random initialisation; ``dvlta-vqa`` (slow) uses the weights that
``create(pretrained=False)`` draws with its default seed. ``tests/golden_data.py`` writes both files.
"""

from __future__ import annotations

import json

import pytest
import torch
from golden_data import GOLDEN, VIDEOS, golden_video, stored_tiny_model

import dvlta_metric

EXPECTED = json.loads(GOLDEN.read_text())


def check(model: dvlta_metric.DVLTAVQA, expected_rows: list[dict], atol: float) -> None:
    assert expected_rows, "no golden rows stored"
    for spec, expected in zip(VIDEOS[: len(expected_rows)], expected_rows, strict=True):
        e = model.explain(golden_video(*spec))
        assert abs(float(e.score) - expected["score"]) < atol
        assert torch.allclose(e.weights, torch.tensor(expected["weights"]), atol=atol, rtol=0)
        assert torch.allclose(e.features.norm(dim=-1), torch.tensor(expected["features_norm"]), rtol=atol)
        assert torch.allclose(e.features[:, :4], torch.tensor(expected["features_head"]), atol=atol, rtol=0)


def test_tiny_model_with_stored_weights() -> None:
    check(stored_tiny_model(), EXPECTED["dvlta-vqa-tiny"], atol=1e-6)


@pytest.mark.slow
def test_full_model_with_seeded_weights() -> None:
    torch.manual_seed(0)
    check(dvlta_metric.create("dvlta-vqa", pretrained=False, device="cpu"), EXPECTED["dvlta-vqa"], atol=1e-5)
