"""How much a score depends on where its views fall: the spread of K views and a confidence interval of their mean.

A score is computed from a sample of the video (fragment patches at some offsets, clips starting at some
frames, some frames for the CLIP and temporal branches). ``model(x, views=K)`` scores ``K`` such samples and
averages them; this module summarises the ``K`` scores. The interval is Student's t interval of the mean of ``K``
independent draws: it says how far the K-view mean may lie from the mean over *all* possible views (the
sampling error), not how far the score lies from what people would say (that is the model's error, which only
MOS data measures). View 0 is the fixed scoring view and the others are random draws, so the K scores are not
exactly identically distributed; the interval is an approximation *(ours)*.
"""

from __future__ import annotations

import math

import torch

CONFIDENCE = 0.95
"""Default two-sided confidence level of :func:`view_interval`."""

MAX_VIEWS = 64
"""Most scoring views one call may ask for (each is a full set of views in the batch)."""


def student_t_cdf(t: float, dof: int) -> float:
    """``P(T <= t)`` for Student's t with ``dof`` (whole) degrees of freedom.

    The closed form for integer degrees of freedom (Abramowitz and Stegun 26.7.3 and 26.7.4): with
    ``theta = atan(t / sqrt(dof))``, ``A = 2 * theta / pi + ...`` a finite series in ``sin`` and ``cos``.

    Args:
        t: The value.
        dof: Degrees of freedom, ``>= 1``.

    Returns:
        The probability.
    """
    if isinstance(dof, bool) or not isinstance(dof, int) or dof < 1:
        raise ValueError(f"degrees of freedom must be a whole number >= 1, got {dof!r}")
    theta = math.atan2(t, math.sqrt(dof))
    s, c = math.sin(theta), math.cos(theta)
    if dof % 2 == 1:
        total, term = 0.0, c
        if dof > 1:
            total = term
            for k in range(3, dof, 2):
                term *= c * c * (k - 1) / k
                total += term
        a = (2.0 / math.pi) * (theta + s * total)
    else:
        total, term = 1.0, 1.0
        for k in range(2, dof, 2):
            term *= c * c * (k - 1) / k
            total += term
        a = s * total
    return 0.5 + 0.5 * a  # A is P(|T| <= t) signed with t


def student_t_quantile(p: float, dof: int) -> float:
    """The ``p`` quantile of Student's t with ``dof`` degrees of freedom (bisection on :func:`student_t_cdf`).

    Args:
        p: Probability in ``(0, 1)``.
        dof: Degrees of freedom, ``>= 1``.

    Returns:
        ``t`` with ``P(T <= t) = p`` to about 1e-12.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p!r}")
    lo, hi = -1.0, 1.0
    while student_t_cdf(lo, dof) > p:
        lo *= 2.0
    while student_t_cdf(hi, dof) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_cdf(mid, dof) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


def check_confidence(confidence: object) -> None:
    """Refuse a confidence level that is not a float in ``(0, 1)``.

    Raises:
        ValueError: Naming the value given.
    """
    if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be a float in (0, 1), such as 0.95, got {confidence!r}")


def view_spread(scores: torch.Tensor) -> torch.Tensor:
    """Sample standard deviation (``K - 1`` in the denominator) of the view scores of each video.

    Args:
        scores: ``(B, K)`` scores of ``K >= 2`` views per video.

    Returns:
        ``(B,)``.
    """
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(f"a spread needs (B, K) scores with K >= 2 views, got shape {tuple(scores.shape)}")
    return scores.std(dim=1, correction=1)


def view_interval(scores: torch.Tensor, confidence: float = CONFIDENCE) -> torch.Tensor:
    """Student's t confidence interval of the mean of each video's ``K`` view scores.

    ``mean -+ t_{(1 + c) / 2, K - 1} * s / sqrt(K)``, with ``s`` the :func:`view_spread`.

    Args:
        scores: ``(B, K)`` scores, ``K >= 2``.
        confidence: Two-sided level ``c`` in ``(0, 1)``.

    Returns:
        ``(B, 2)``: the lower and upper ends, on the scale of ``scores``. The interval is not clipped: with few
        views (``K = 2``: ``t = 12.7``) it can reach below 0 or above 1 for scores in ``(0, 1)``.
    """
    check_confidence(confidence)
    k = scores.shape[-1]
    spread = view_spread(scores)
    half = student_t_quantile(0.5 + confidence / 2.0, k - 1) * spread / math.sqrt(k)
    mean = scores.mean(dim=1)
    return torch.stack([mean - half, mean + half], dim=1)
