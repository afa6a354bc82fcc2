"""Video quality metrics: SROCC, PLCC after the 4-parameter logistic fit, KRCC and RMSE.

The standard VQA protocol (VQEG FR-TV Phase I; as in FAST-VQA, DOVER and the DVLTA-VQA paper):

* SROCC (Spearman) and KRCC (Kendall's tau-b) are computed on the raw predictions (they only depend on the
  ranks; ties get average ranks, as in ``scipy.stats``).
* PLCC (Pearson) and RMSE are computed after mapping the predictions to the MOS scale with the monotonic
  4-parameter logistic ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2`` fitted by least squares
  (``scipy.optimize.curve_fit``). Initial values: ``b1 = max(MOS)``, ``b2 = min(MOS)`` (swapped when the
  correlation is negative), ``b3 = mean(pred)``, ``b4 = std(pred)``. If the fit fails to converge, or ends
  worse than a straight line, or there are fewer than ``LOGISTIC_MIN_VIDEOS`` (5) videos, a linear
  least-squares map is used instead (``LogisticFit.method`` says which).

All functions take 1-D sequences (lists, NumPy arrays, CPU tensors) of equal length ``>= 2``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dvlta_metric.calibration import logistic4  # the library applies the same map at run time (scale="mos")

ArrayLike = Sequence[float] | np.ndarray | Any

METRIC_NAMES: tuple[str, ...] = ("srocc", "plcc", "krcc", "rmse")

LOGISTIC_MIN_VIDEOS = 5
"""Fewest videos the 4-parameter logistic is fitted to; with fewer it would interpolate, so a line is used."""


def _pair(pred: ArrayLike, mos: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(pred, dtype=np.float64).reshape(-1)
    y = np.asarray(mos, dtype=np.float64).reshape(-1)
    if x.size != y.size:
        raise ValueError(f"predictions ({x.size}) and MOS ({y.size}) differ in length")
    if x.size < 2:
        raise ValueError(f"a correlation needs at least 2 videos, got {x.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("predictions and MOS must be finite (found NaN or inf)")
    return x, y


def rankdata(x: ArrayLike) -> np.ndarray:
    """Ranks ``1 .. n`` with ties given their average rank (``scipy.stats.rankdata(method="average")``)."""
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    starts = np.concatenate([[True], sorted_a[1:] != sorted_a[:-1]])
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.concatenate([first[1:], [a.size]]) - 1
    average = (first + last) / 2.0 + 1.0
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = average[group]
    return ranks


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson's linear correlation of the raw values (``nan`` when either side is constant)."""
    a, b = _pair(x, y)
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    if denom == 0.0:
        return float("nan")
    return float(np.clip((a * b).sum() / denom, -1.0, 1.0))


def srocc(pred: ArrayLike, mos: ArrayLike) -> float:
    """Spearman's rank-order correlation (Pearson on average ranks)."""
    x, y = _pair(pred, mos)
    return pearson(rankdata(x), rankdata(y))


def krcc(pred: ArrayLike, mos: ArrayLike, *, block: int = 2048) -> float:
    """Kendall's rank correlation, tau-b (ties handled as ``scipy.stats.kendalltau``).

    ``O(n^2)`` pair counting in blocks of ``block`` rows (a few seconds for tens of thousands of videos).
    """
    x, y = _pair(pred, mos)
    n = x.size
    concordance = 0.0  # sum over ordered pairs of sign(dx) * sign(dy); every unordered pair counts twice
    for start in range(0, n, block):
        dx = np.sign(x[start : start + block, None] - x[None, :])
        dy = np.sign(y[start : start + block, None] - y[None, :])
        concordance += float((dx * dy).sum())
    n0 = n * (n - 1) / 2.0

    def tied_pairs(v: np.ndarray) -> float:
        _, counts = np.unique(v, return_counts=True)
        return float((counts * (counts - 1) / 2.0).sum())

    denom = math.sqrt((n0 - tied_pairs(x)) * (n0 - tied_pairs(y)))
    if denom == 0.0:
        return float("nan")
    return float(np.clip(concordance / 2.0 / denom, -1.0, 1.0))


@dataclass(frozen=True)
class LogisticFit:
    """A fitted map from predictions to the MOS scale.

    Attributes:
        params: ``(b1, b2, b3, b4)`` for ``method == "logistic"``; ``(slope, intercept, 0, 0)`` for
            ``"linear"``.
        method: ``"logistic"`` or ``"linear"`` (the fallback).
    """

    params: tuple[float, float, float, float]
    method: str

    def __call__(self, x: ArrayLike) -> np.ndarray:
        """Map predictions to the MOS scale."""
        if self.method == "logistic":
            return logistic4(x, *self.params)
        slope, intercept = self.params[:2]
        return slope * np.asarray(x, dtype=np.float64) + intercept


def _linear_fit(x: np.ndarray, y: np.ndarray) -> LogisticFit:
    if np.ptp(x) == 0.0:
        return LogisticFit((0.0, float(y.mean()), 0.0, 0.0), "linear")
    slope, intercept = np.polyfit(x, y, 1)
    return LogisticFit((float(slope), float(intercept), 0.0, 0.0), "linear")


def fit_logistic(pred: ArrayLike, mos: ArrayLike, *, maxfev: int = 20000) -> LogisticFit:
    """Fit the 4-parameter logistic from predictions to MOS (see the module docstring).

    Args:
        pred: Predicted scores.
        mos: Mean opinion scores.
        maxfev: Function evaluations allowed to ``curve_fit``.

    Returns:
        The fit; its ``method`` is ``"linear"`` when the logistic could not be fitted, or for fewer than
        ``LOGISTIC_MIN_VIDEOS`` videos (4 parameters would interpolate so few points rather than fit them).
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    x, y = _pair(pred, mos)
    linear = _linear_fit(x, y)
    if np.ptp(x) == 0.0 or x.size < LOGISTIC_MIN_VIDEOS:
        return linear
    std = float(x.std())
    negative = pearson(x, y) < 0
    hi, lo = float(y.max()), float(y.min())
    p0 = [lo, hi, float(x.mean()), std] if negative else [hi, lo, float(x.mean()), std]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            params, _ = curve_fit(logistic4, x, y, p0=p0, maxfev=maxfev)
    except (RuntimeError, ValueError, FloatingPointError):
        return linear
    if not np.isfinite(params).all():
        return linear
    fit = LogisticFit(tuple(float(p) for p in params), "logistic")  # type: ignore[arg-type]
    sse_fit = float(((fit(x) - y) ** 2).sum())
    sse_linear = float(((linear(x) - y) ** 2).sum())
    return fit if sse_fit <= sse_linear * (1 + 1e-9) else linear


def plcc(pred: ArrayLike, mos: ArrayLike, *, fit: bool = True) -> float:
    """Pearson's correlation between MOS and the predictions, after the logistic fit by default.

    Args:
        pred: Predicted scores.
        mos: Mean opinion scores.
        fit: Map the predictions with :func:`fit_logistic` first (the standard protocol).
    """
    x, y = _pair(pred, mos)
    if fit:
        x = fit_logistic(x, y)(x)
    return pearson(x, y)


def rmse(pred: ArrayLike, mos: ArrayLike, *, fit: bool = True) -> float:
    """Root mean squared error on the MOS scale, after the logistic fit by default."""
    x, y = _pair(pred, mos)
    if fit:
        x = fit_logistic(x, y)(x)
    return float(np.sqrt(((x - y) ** 2).mean()))


def all_metrics(pred: ArrayLike, mos: ArrayLike) -> dict[str, Any]:
    """SROCC, PLCC, KRCC and RMSE (PLCC and RMSE after one logistic fit) and the number of videos.

    Returns:
        ``{"srocc", "plcc", "krcc", "rmse", "n", "fit"}``; ``fit`` is ``"logistic"`` or ``"linear"``.
    """
    x, y = _pair(pred, mos)
    mapping = fit_logistic(x, y)
    mapped = mapping(x)
    return {
        "srocc": srocc(x, y),
        "plcc": pearson(mapped, y),
        "krcc": krcc(x, y),
        "rmse": float(np.sqrt(((mapped - y) ** 2).mean())),
        "n": int(x.size),
        "fit": mapping.method,
    }
