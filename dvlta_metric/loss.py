"""Training losses on a batch of predicted scores and mean opinion scores (paper section III-F).

``loss = 1 - PLCC(Q, MOS)``, optionally plus FAST-VQA's pairwise rank loss.
"""

from __future__ import annotations

import math

import torch


def _scores(x: object, name: str) -> torch.Tensor:
    """``x`` as a ``(B,)`` tensor of scores; ``(B, 1)`` is accepted and squeezed."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of scores, got {type(x).__name__}")
    if x.dim() == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 1:
        raise ValueError(f"{name} must hold one score per video, shape (B,) or (B, 1), got {tuple(x.shape)}")
    return x


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target = _scores(pred, "pred"), _scores(target, "target")
    if not pred.is_floating_point():
        raise TypeError(f"pred must be a floating-point tensor (the model's scores), got {pred.dtype}")
    if pred.numel() != target.numel():
        raise ValueError(f"pred has {pred.numel()} values but target has {target.numel()}")
    if pred.numel() < 2:
        raise ValueError(f"a correlation loss needs a batch of at least 2 scores, got {pred.numel()}")
    target = target.to(pred)
    if not bool(torch.isfinite(target).all()):
        raise ValueError("target (the mean opinion scores) holds NaN or inf values")
    return pred, target


def plcc_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``1 - PLCC(pred, target)``: Pearson's linear correlation over the batch, in ``[0, 2]``.

    Args:
        pred: ``(B,)`` (or ``(B, 1)``) predicted scores, floating point.
        target: ``(B,)`` (or ``(B, 1)``) mean opinion scores (any scale: PLCC is invariant to affine maps).
        eps: Guards the division for a constant batch.

    Returns:
        0-d loss tensor, differentiable with respect to ``pred``. For a batch of equal predictions the
        correlation is undefined: the loss is 1 and its gradient is of the order of ``|target| / eps``
        (a correlation's gradient grows as the predictions' spread shrinks).

    Raises:
        TypeError: If an argument is not a tensor, or ``pred`` is not floating point.
        ValueError: For other shapes, different lengths, fewer than 2 scores or a non-finite target.
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


def quality_loss(pred: torch.Tensor, target: torch.Tensor, rank_weight: float = 0.0) -> torch.Tensor:
    """The training objective: ``plcc_loss + rank_weight * rank_loss`` (``rank_weight = 0.3`` in FAST-VQA).

    Args:
        pred: ``(B,)`` predicted scores.
        target: ``(B,)`` mean opinion scores.
        rank_weight: Weight of :func:`rank_loss`, a number ``>= 0`` (0 disables it).

    Returns:
        0-d loss tensor.

    Raises:
        TypeError, ValueError: As for :func:`plcc_loss`, and for a ``rank_weight`` that is not a finite
            number ``>= 0``.
    """
    if isinstance(rank_weight, bool) or not isinstance(rank_weight, (int, float)):
        raise TypeError(f"rank_weight must be a number, got {type(rank_weight).__name__}")
    if not math.isfinite(rank_weight) or rank_weight < 0:
        raise ValueError(f"rank_weight must be a finite number >= 0, got {rank_weight}")
    loss = plcc_loss(pred, target)
    if rank_weight:
        loss = loss + rank_weight * rank_loss(pred, target)
    return loss
