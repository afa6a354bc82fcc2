"""MOS calibration: the 4-parameter logistic from scores to a mean opinion score scale, kept with the weights.

A score in ``(0, 1)`` says how a video ranks among others, not what people would rate it
(:doc:`interpreting-scores`). The standard way to put scores on a MOS scale (VQEG FR-TV Phase I; FAST-VQA,
DOVER and the DVLTA-VQA paper report PLCC after it) is the monotonic 4-parameter logistic

``MOS(q) = (b1 - b2) / (1 + exp(-(q - b3) / |b4|)) + b2``

fitted by least squares on (score, MOS) pairs. A :class:`Calibration` holds one such fit with what it was fitted
on (the dataset, its split, its MOS range, the number of videos). ``training`` evaluation fits it on a test
split and stores it in the model directory's ``config.json`` (numbers and strings only, read back under the same
size and depth limits as the rest of the file); ``model(x, scale="mos")`` applies it. A user fits one from their
own pairs with :func:`fit_calibration` and attaches it with ``model.set_calibration``.

The fit here needs only NumPy: Levenberg-Marquardt on the four parameters *(ours)*, with the start values and the
linear fallback of the training package's ``fit_logistic`` (which uses SciPy's ``curve_fit``, also
Levenberg-Marquardt): ``b1 = max(MOS)``, ``b2 = min(MOS)`` (swapped for a negative correlation),
``b3 = mean(q)``, ``b4 = std(q)``; a least-squares line instead when there are fewer than
:data:`LOGISTIC_MIN_VIDEOS` pairs, when the logistic does not converge, or when it fits worse than the line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

LOGISTIC_MIN_VIDEOS = 5
"""Fewest pairs the logistic is fitted to; with fewer, four parameters would interpolate them, so a line is used."""

CALIBRATION_METHODS: tuple[str, ...] = ("logistic", "linear")
"""The maps a :class:`Calibration` can hold."""

MAX_LABEL_CHARS = 200
"""Longest dataset or split label a calibration read from ``config.json`` may carry."""


def logistic4(x: Any, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The VQEG 4-parameter logistic ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2`` in float64.

    Args:
        x: Scores, any shape (NumPy array, list or CPU tensor).
        b1: Upper asymptote (MOS scale).
        b2: Lower asymptote.
        b3: Score at the midpoint.
        b4: Width of the transition (its sign is ignored).

    Returns:
        The mapped values, same shape, float64.
    """
    z = -(np.asarray(x, dtype=np.float64) - b3) / max(abs(b4), 1e-12)
    return (b1 - b2) / (1.0 + np.exp(np.clip(z, -500.0, 500.0))) + b2


@dataclass(frozen=True)
class Calibration:
    """A fitted map from scores to a MOS scale, and what it was fitted on.

    Attributes:
        params: ``(b1, b2, b3, b4)`` of :func:`logistic4` for ``method == "logistic"``; ``(slope, intercept,
            0, 0)`` for ``"linear"``.
        method: ``"logistic"`` or ``"linear"`` (the fallback, see the module docstring).
        mos_range: ``(lowest, highest)`` value of the MOS scale (e.g. ``(1.0, 5.0)``), for readers and plots;
            mapped values are not clipped to it.
        dataset: Name of the dataset the pairs came from (``""`` if not given).
        split: Which part of it (e.g. ``"split 0, test"``; ``""`` if not given).
        num_videos: Number of (score, MOS) pairs fitted.
    """

    params: tuple[float, float, float, float]
    method: str = "logistic"
    mos_range: tuple[float, float] = (0.0, 1.0)
    dataset: str = ""
    split: str = ""
    num_videos: int = 0

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}, got {self.method!r}")
        params = tuple(self.params)
        if len(params) != 4 or not all(_is_number(p) and math.isfinite(p) for p in params):
            raise ValueError(f"calibration params must be 4 finite numbers (b1, b2, b3, b4), got {self.params!r}")
        if self.method == "logistic" and params[3] == 0:
            raise ValueError("calibration param b4 (the logistic's width) must not be 0")
        lo_hi = tuple(self.mos_range)
        if len(lo_hi) != 2 or not all(_is_number(v) and math.isfinite(v) for v in lo_hi) or lo_hi[0] >= lo_hi[1]:
            raise ValueError(
                f"mos_range must be two finite numbers (lowest, highest), lowest first; got {self.mos_range!r}"
            )
        for name in ("dataset", "split"):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) > MAX_LABEL_CHARS:
                raise ValueError(f"calibration {name} must be a string of at most {MAX_LABEL_CHARS} characters")
        if isinstance(self.num_videos, bool) or not isinstance(self.num_videos, int) or self.num_videos < 0:
            raise ValueError(f"num_videos must be a whole number >= 0, got {self.num_videos!r}")
        object.__setattr__(self, "params", tuple(float(p) for p in params))
        object.__setattr__(self, "mos_range", (float(lo_hi[0]), float(lo_hi[1])))

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        """Map scores to the MOS scale.

        Args:
            scores: Scores of any shape.

        Returns:
            MOS values, the same shape, dtype and device as ``scores``; differentiable with respect to them.
        """
        x = scores.double()
        b1, b2, b3, b4 = self.params
        if self.method == "linear":
            out = b1 * x + b2
        else:
            out = (b1 - b2) * torch.sigmoid((x - b3) / abs(b4)) + b2  # = logistic4: 1 / (1 + exp(-z)) = sigmoid(z)
        return out.to(scores.dtype)

    def map_score(self, score: float) -> float:
        """Map one score (a Python number) to the MOS scale, in float64."""
        b1, b2, b3, b4 = self.params
        if self.method == "linear":
            return b1 * float(score) + b2
        return float(logistic4(float(score), b1, b2, b3, b4))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored under ``"calibration"`` in ``config.json``."""
        return {
            "function": "logistic4" if self.method == "logistic" else "linear",
            "params": list(self.params),
            "mos_range": list(self.mos_range),
            "dataset": self.dataset,
            "split": self.split,
            "num_videos": self.num_videos,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict`, for a document read from a file (every field is checked).

        Args:
            doc: The ``"calibration"`` object of ``config.json``.

        Returns:
            The calibration.

        Raises:
            ValueError: If a field is missing, of the wrong type or out of range (the message names it).
        """
        if not isinstance(doc, Mapping):
            raise ValueError(f"a calibration is a JSON object, got {type(doc).__name__}")
        unknown = set(doc) - {"function", "params", "mos_range", "dataset", "split", "num_videos"}
        if unknown:
            raise ValueError(f"unknown calibration fields {sorted(unknown)}")
        function = doc.get("function")
        if function not in ("logistic4", "linear"):
            raise ValueError(f"calibration function must be 'logistic4' or 'linear', got {function!r}")
        params, mos_range = doc.get("params"), doc.get("mos_range")
        if not isinstance(params, list) or not isinstance(mos_range, list):
            raise ValueError("calibration params and mos_range must be lists of numbers")
        return cls(
            params=tuple(params),  # type: ignore[arg-type]
            method="logistic" if function == "logistic4" else "linear",
            mos_range=tuple(mos_range),  # type: ignore[arg-type]
            dataset=doc.get("dataset", ""),
            split=doc.get("split", ""),
            num_videos=doc.get("num_videos", 0),
        )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_array(values: Sequence[float] | np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}") from None
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite numbers (found NaN or infinity)")
    return arr


def _linear(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    if np.ptp(x) == 0.0:
        return 0.0, float(y.mean()), 0.0, 0.0
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept), 0.0, 0.0


def _levenberg_marquardt(x: np.ndarray, y: np.ndarray, p0: np.ndarray, *, iterations: int = 500) -> np.ndarray | None:
    """Least-squares :func:`logistic4` parameters from ``p0`` (Levenberg-Marquardt; ``None`` if it fails)."""
    p = p0.astype(np.float64).copy()
    lam = 1e-3

    def residual(q: np.ndarray) -> np.ndarray:
        return logistic4(x, *q) - y

    r = residual(p)
    cost = float(r @ r)
    for _ in range(iterations):
        converged = False
        b1, b2, b3, b4 = p
        w = max(abs(b4), 1e-12)
        s = 1.0 / (1.0 + np.exp(np.clip(-(x - b3) / w, -500.0, 500.0)))  # sigmoid((x - b3) / |b4|)
        ds = s * (1.0 - s)
        jac = np.stack(
            [s, 1.0 - s, -(b1 - b2) * ds / w, -(b1 - b2) * ds * (x - b3) / (w * w) * np.sign(b4 or 1.0)], axis=1
        )
        grad = jac.T @ r
        normal = jac.T @ jac
        improved = False
        for _ in range(30):
            step = np.linalg.lstsq(normal + lam * np.diag(np.diag(normal) + 1e-12), -grad, rcond=None)[0]
            trial = p + step
            r_trial = residual(trial)
            c_trial = float(r_trial @ r_trial)
            if np.isfinite(c_trial) and c_trial < cost:
                p, r, lam, improved = trial, r_trial, max(lam / 10.0, 1e-12), True
                converged = cost - c_trial <= 1e-12 * max(cost, 1e-30)
                cost = c_trial
                break
            lam *= 10.0
        if not improved or converged:
            break
    return p if np.isfinite(p).all() and p[3] != 0 else None


def fit_calibration(
    scores: Sequence[float] | np.ndarray | torch.Tensor,
    mos: Sequence[float] | np.ndarray | torch.Tensor,
    *,
    mos_range: tuple[float, float] | None = None,
    dataset: str = "",
    split: str = "",
) -> Calibration:
    """Fit the 4-parameter logistic from scores to MOS (see the module docstring for the method).

    Attach the result to a model with ``model.set_calibration(cal)``; ``model.save_pretrained`` then stores it
    with the weights.

    Args:
        scores: The model's scores of some videos, ``(N,)``.
        mos: Their mean opinion scores, ``(N,)``.
        mos_range: The MOS scale's ``(lowest, highest)`` (default: the lowest and highest MOS given).
        dataset: Name of the data the pairs came from, stored with the fit.
        split: Which part of it, stored with the fit.

    Returns:
        The :class:`Calibration` (``method == "linear"`` when the logistic could not be used).

    Raises:
        TypeError: If ``scores`` or ``mos`` is not a sequence of numbers.
        ValueError: If they differ in length, hold fewer than 2 pairs or a non-finite value, or all MOS are equal.
    """
    x, y = _as_array(scores, "scores"), _as_array(mos, "mos")
    if x.size != y.size:
        raise ValueError(f"scores ({x.size}) and mos ({y.size}) differ in length; pass one MOS per score")
    if x.size < 2:
        raise ValueError(f"a calibration needs at least 2 (score, MOS) pairs, got {x.size}")
    if np.ptp(y) == 0.0:
        raise ValueError("all MOS values are equal: there is no scale to map the scores to")
    rng = (float(y.min()), float(y.max())) if mos_range is None else mos_range
    extra = {"mos_range": rng, "dataset": dataset, "split": split, "num_videos": int(x.size)}
    linear = _linear(x, y)
    if np.ptp(x) == 0.0 or x.size < LOGISTIC_MIN_VIDEOS:
        return Calibration(linear, "linear", **extra)
    negative = np.corrcoef(x, y)[0, 1] < 0
    hi, lo = float(y.max()), float(y.min())
    p0 = np.array([lo, hi, x.mean(), x.std()] if negative else [hi, lo, x.mean(), x.std()])
    params = _levenberg_marquardt(x, y, p0)
    if params is None:
        return Calibration(linear, "linear", **extra)
    sse_fit = float(((logistic4(x, *params) - y) ** 2).sum())
    sse_linear = float(((linear[0] * x + linear[1] - y) ** 2).sum())
    if sse_fit > sse_linear * (1 + 1e-9):
        return Calibration(linear, "linear", **extra)
    return Calibration(tuple(float(p) for p in params), "logistic", **extra)  # type: ignore[arg-type]
