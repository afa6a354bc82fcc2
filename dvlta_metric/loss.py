"""Training losses on a batch of predicted scores and mean opinion scores (paper section III-F).

``loss = 1 - PLCC(Q, MOS)``, optionally plus FAST-VQA's pairwise rank loss.
"""

from __future__ import annotations

import torch


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"pred and target must be tensors, got {type(pred).__name__} and {type(target).__name__}"
        )
    pred, target = pred.flatten(), target.flatten().to(pred)
    if pred.numel() != target.numel():
        raise ValueError(f"pred has {pred.numel()} values but target has {target.numel()}")
    if pred.numel() < 2:
        raise ValueError(f"a correlation loss needs a batch of at least 2 scores, got {pred.numel()}")
    return pred, target


def plcc_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``1 - PLCC(pred, target)``: Pearson's linear correlation over the batch, in ``[0, 2]``.

    Args:
        pred: ``(B,)`` predicted scores.
        target: ``(B,)`` mean opinion scores (any scale: PLCC is invariant to affine maps).
        eps: Guards the division for a constant batch.

    Returns:
        0-d loss tensor, differentiable with respect to ``pred``.
    """
    pred, target = _check_pair(pred, target)
    p = pred - pred.mean()
    t = target - target.mean()
    rho = (p * t).sum() / (p.norm() * t.norm() + eps)
    return 1.0 - rho


def rank_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """FAST-VQA's pairwise ranking hinge: penalises every pair that ``pred`` orders against ``target``.

    ``L = sum_ij relu((p_i - p_j) * sign(t_j - t_i)) / (B (B - 1)) / (1 + max_ij relu(...))``.

    Args:
        pred: ``(B,)`` predicted scores.
        target: ``(B,)`` mean opinion scores.

    Returns:
        0-d loss tensor.
    """
    pred, target = _check_pair(pred, target)
    n = pred.numel()
    hinge = torch.relu((pred[:, None] - pred[None, :]) * torch.sign(target[None, :] - target[:, None]))
    scale = 1.0 + hinge.max()
    return hinge.sum() / (n * (n - 1)) / scale


def quality_loss(
    pred: torch.Tensor, target: torch.Tensor, rank_weight: float = 0.0
) -> torch.Tensor:
    """The training objective: ``plcc_loss + rank_weight * rank_loss`` (``rank_weight = 0.3`` in FAST-VQA).

    Args:
        pred: ``(B,)`` predicted scores.
        target: ``(B,)`` mean opinion scores.
        rank_weight: Weight of :func:`rank_loss` (0 disables it).

    Returns:
        0-d loss tensor.
    """
    loss = plcc_loss(pred, target)
    if rank_weight:
        loss = loss + rank_weight * rank_loss(pred, target)
    return loss
