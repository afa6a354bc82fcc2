"""PLCC and rank losses against scipy and by their definitions."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from dvlta_metric import plcc_loss, quality_loss, rank_loss


def test_plcc_loss_matches_scipy() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        p = torch.rand(16, generator=g, dtype=torch.float64)
        t = 2 * p + 0.3 * torch.rand(16, generator=g, dtype=torch.float64)
        r = stats.pearsonr(p.numpy(), t.numpy())[0]
        assert abs(float(plcc_loss(p, t)) - (1 - r)) < 1e-7


def test_plcc_loss_invariant_to_affine_target_and_differentiable() -> None:
    p = torch.rand(8, requires_grad=True)
    t = torch.rand(8)
    a = plcc_loss(p, t)
    b = plcc_loss(p, 20 * t + 1)
    assert torch.allclose(a, b, atol=1e-6)
    a.backward()
    assert p.grad is not None and torch.isfinite(p.grad).all()


def test_rank_loss_zero_when_ordered_and_positive_when_reversed() -> None:
    t = torch.arange(6, dtype=torch.float32)
    assert float(rank_loss(t * 0.1, t)) == 0.0
    assert float(rank_loss(-t * 0.1, t)) > 0.0


def test_quality_loss_combines() -> None:
    p, t = torch.rand(10), torch.rand(10)
    assert torch.allclose(quality_loss(p, t, 0.3), plcc_loss(p, t) + 0.3 * rank_loss(p, t))
    assert torch.allclose(quality_loss(p, t), plcc_loss(p, t))


@pytest.mark.parametrize(
    ("pred", "target", "err", "match"),
    [
        (torch.rand(1), torch.rand(1), ValueError, "at least 2"),
        (torch.rand(3), torch.rand(4), ValueError, "3 values but target has 4"),
        ([0.1, 0.2], torch.rand(2), TypeError, "pred must be a tensor"),
        (torch.tensor([1, 2, 3]), torch.rand(3), TypeError, "floating-point"),
        (torch.rand(2, 3), torch.rand(3, 2), ValueError, r"shape \(B,\) or \(B, 1\), got \(2, 3\)"),
        (torch.rand(3), torch.tensor([1.0, float("nan"), 2.0]), ValueError, "NaN or inf"),
    ],
)
def test_loss_input_errors(pred: object, target: object, err: type[Exception], match: str) -> None:
    with pytest.raises(err, match=match):
        plcc_loss(pred, target)  # type: ignore[arg-type]
    with pytest.raises(err, match=match):
        rank_loss(pred, target)  # type: ignore[arg-type]


def test_column_scores_are_accepted_and_rank_weight_is_checked() -> None:
    p, t = torch.rand(6), torch.rand(6)
    assert torch.equal(plcc_loss(p[:, None], t[:, None]), plcc_loss(p, t))
    with pytest.raises(TypeError, match="rank_weight must be a number, got str"):
        quality_loss(p, t, "0.3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0, got -0.3"):
        quality_loss(p, t, -0.3)
