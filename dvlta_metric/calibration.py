"""MOS calibration: the 4-parameter logistic from scores to a mean opinion score scale, kept with the weights.

A score in ``(0, 1)`` says how a video ranks among others, not what people would rate it
(:doc:`interpreting-scores`). The standard way to put scores on a MOS scale (VQEG FR-TV Phase I; FAST-VQA,
DOVER and the DVLTA-VQA paper report PLCC after it) is the monotonic 4-parameter logistic

``MOS(q) = (b1 - b2) / (1 + exp(-(q - b3) / |b4|)) + b2``

fitted by least squares on (score, MOS) pairs. A :class:`Calibration` holds one such fit with what it was fitted
on (the dataset, its split, its MOS range, the number of videos); its parameters and range ends are finite and at
most :data:`MAX_MAGNITUDE` in magnitude. ``training`` evaluation fits it on a test
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

import hashlib
import json
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

MAX_MAGNITUDE = 1e6
"""Largest absolute value of a calibration parameter or ``mos_range`` end. MOS scales run from 1-5 to 0-100 and
scores span ``(0, 1)``, so real fits stay far below it; the bound keeps a hostile ``config.json`` from mapping
scores to infinity (``b1 = 1e308, b2 = -1e308``)."""

MAX_VIDEOS = 10**12
"""Largest ``num_videos`` a calibration may record."""

MIN_WIDTH = 1e-12
"""Smallest ``|b4|`` the logistic divides by (a smaller width is a step, computed as this one)."""


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
        floats = [_bounded(p) for p in params]
        if len(params) != 4 or None in floats:
            raise ValueError(
                f"calibration params must be 4 finite numbers (b1, b2, b3, b4) of magnitude at most {MAX_MAGNITUDE:g}, "
                f"got {_short(self.params)}"
            )
        if self.method == "logistic" and params[3] == 0:
            raise ValueError("calibration param b4 (the logistic's width) must not be 0")
        lo_hi = tuple(self.mos_range)
        ends = [_bounded(v) for v in lo_hi]
        if len(lo_hi) != 2 or None in ends or ends[0] >= ends[1]:  # type: ignore[operator]
            raise ValueError(
                f"mos_range must be two finite numbers (lowest, highest) of magnitude at most {MAX_MAGNITUDE:g}, "
                f"lowest first; got {_short(self.mos_range)}"
            )
        for name in ("dataset", "split"):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) > MAX_LABEL_CHARS:
                raise ValueError(f"calibration {name} must be a string of at most {MAX_LABEL_CHARS} characters")
        if (
            isinstance(self.num_videos, bool)
            or not isinstance(self.num_videos, int)
            or not 0 <= self.num_videos <= MAX_VIDEOS
        ):
            raise ValueError(f"num_videos must be a whole number from 0 to {MAX_VIDEOS}, got {_short(self.num_videos)}")
        object.__setattr__(self, "params", tuple(floats))
        object.__setattr__(self, "mos_range", tuple(ends))
        for q in (0.0, 1.0):  # the ends of the score range (finite whenever the bounds hold: checked all the same)
            if not math.isfinite(self.map_score(q)):
                raise ValueError(f"calibration params {self.params} map the score {q} to a non-finite value")

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
        else:  # = logistic4: 1 / (1 + exp(-z)) = sigmoid(z)
            out = (b1 - b2) * torch.sigmoid((x - b3) / max(abs(b4), MIN_WIDTH)) + b2
        out = out.to(scores.dtype)
        if not bool(torch.isfinite(out.detach()).all()):
            raise ValueError(
                "the MOS calibration gave a non-finite value (NaN or infinity) for a score: the scores are not "
                f"finite, or too large for {scores.dtype}"
            )
        return out

    def map_score(self, score: float) -> float:
        """Map one score (a Python number) to the MOS scale, in float64.

        Raises:
            ValueError: If the mapped value is not finite (a score that is not).
        """
        b1, b2, b3, b4 = self.params
        if self.method == "linear":
            value = b1 * float(score) + b2
        else:
            value = float(logistic4(float(score), b1, b2, b3, b4))
        if not math.isfinite(value):
            raise ValueError(f"the MOS calibration maps the score {score!r} to {value}, not a finite number")
        return value

    def fingerprint(self) -> str:
        """The first 12 hex digits of the SHA-256 of :meth:`to_dict` as canonical JSON: equal fingerprints, equal
        calibrations (what ``dvlta-metric score --scale mos`` records with each row)."""
        text = json.dumps(self.to_dict(), sort_keys=True, allow_nan=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

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


def _bounded(value: object) -> float | None:
    """``value`` as a float if it is a finite number of magnitude at most :data:`MAX_MAGNITUDE`, else ``None``
    (an integer too large for a float included)."""
    if not _is_number(value):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except OverflowError:
        return None
    return number if math.isfinite(number) and abs(number) <= MAX_MAGNITUDE else None


def _short(value: object) -> str:
    """``repr`` of a value for a message, cut to 120 characters (a 400-digit integer is not quoted whole)."""
    try:
        text = repr(value)
    except ValueError:  # an integer above Python's digit limit for str()
        return f"a {type(value).__name__} too large to show"
    return text if len(text) <= 120 else text[:117] + "..."


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
        ValueError: If they differ in length, hold fewer than 2 pairs or a non-finite value, or all MOS are equal;
            or if even the line needs a parameter above :data:`MAX_MAGNITUDE` (scores that hardly vary). A logistic
            fit with such a parameter falls back to the line.
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
    if any(_bounded(p) is None for p in linear):
        raise ValueError(
            f"the fitted line {linear[:2]} has a parameter above {MAX_MAGNITUDE:g} in magnitude: the scores hardly "
            "vary against the MOS; fit on videos whose scores spread more"
        )
    if np.ptp(x) == 0.0 or x.size < LOGISTIC_MIN_VIDEOS:
        return Calibration(linear, "linear", **extra)
    negative = np.corrcoef(x, y)[0, 1] < 0
    hi, lo = float(y.max()), float(y.min())
    p0 = np.array([lo, hi, x.mean(), x.std()] if negative else [hi, lo, x.mean(), x.std()])
    params = _levenberg_marquardt(x, y, p0)
    if params is None or any(_bounded(float(p)) is None for p in params):
        return Calibration(linear, "linear", **extra)
    sse_fit = float(((logistic4(x, *params) - y) ** 2).sum())
    sse_linear = float(((linear[0] * x + linear[1] - y) ** 2).sum())
    if sse_fit > sse_linear * (1 + 1e-9):
        return Calibration(linear, "linear", **extra)
    return Calibration(tuple(float(p) for p in params), "logistic", **extra)  # type: ignore[arg-type]
