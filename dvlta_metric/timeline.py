"""Per-segment scores: how a video is cut into windows, the :class:`Timeline` of their scores, and pooling.

:meth:`DVLTAVQA.timeline <dvlta_metric.DVLTAVQA.timeline>` cuts a video into consecutive windows
(:func:`window_bounds`), scores each window as the video stretch it covers, and returns a :class:`Timeline`.
This module holds only the arithmetic and the types: it knows nothing of the model.

Windows cover the video without gaps or overlaps: window ``i`` is frames ``[i * w, (i + 1) * w)``, except that a
short remainder at the end is merged into the last window (which is then up to ``2w - 1`` frames long), so
that no score comes from a stretch shorter than the window asked for. A video shorter than one window is one
window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

POOLED_STATISTICS: tuple[str, ...] = (
    "mean",
    "harmonic_mean",
    "min",
    "max",
    "p5",
    "p25",
    "median",
    "p75",
    "p95",
)
"""The keys of :func:`pool_scores`, in order."""

LOG_METRIC = "dvlta"
"""The metric's key in a timeline log (:meth:`Timeline.to_log`), as ``"vmaf"`` is in a VMAF log."""

LOG_FORMAT = "dvlta-metric timeline log"
"""The ``"format"`` entry of a timeline log: marks the file as one this library wrote."""


def window_length(*, window_s: float | None, window_frames: int | None, fps: float | None) -> int:
    """The window length in frames, from a length in seconds (with the frame rate) or in frames.

    Args:
        window_s: Window length in seconds (``> 0``), or ``None``.
        window_frames: Window length in frames (``>= 1``), or ``None``. Exactly one of the two is given.
        fps: Frame rate of the video, needed with ``window_s``.

    Returns:
        ``window_frames``, or ``round(window_s * fps)`` (at least 1).

    Raises:
        TypeError: A length of the wrong type.
        ValueError: Both or neither length given, a length that is not positive and finite, or ``window_s``
            without a known frame rate.
    """
    if (window_s is None) == (window_frames is None):
        raise ValueError(
            "give the window length once: window_s (seconds, e.g. window_s=2.0) or window_frames (frames, "
            f"e.g. window_frames=64); got window_s={window_s!r} and window_frames={window_frames!r}"
        )
    if window_frames is not None:
        if isinstance(window_frames, bool) or not isinstance(window_frames, int):
            raise TypeError(f"window_frames must be a whole number of frames, got {type(window_frames).__name__}")
        if window_frames < 1:
            raise ValueError(f"window_frames must be at least 1, got {window_frames}")
        return window_frames
    if isinstance(window_s, bool) or not isinstance(window_s, (int, float)):
        raise TypeError(f"window_s must be a number of seconds, got {type(window_s).__name__}")
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s must be a positive number of seconds, got {window_s}")
    if fps is None or not (math.isfinite(fps) and fps > 0):
        raise ValueError(
            f"window_s={window_s} needs the video's frame rate, which is not known (fps={fps!r}): pass fps=... "
            "with a tensor, or give the window in frames with window_frames=..."
        )
    return max(1, round(window_s * fps))


def window_bounds(num_frames: int, window: int) -> list[tuple[int, int]]:
    """Consecutive windows of ``window`` frames covering ``[0, num_frames)``; a short remainder joins the last.

    Args:
        num_frames: Frames in the video (``>= 1``).
        window: Window length in frames (``>= 1``).

    Returns:
        ``[(start, end), ...]`` with ``end`` exclusive: ``max(1, num_frames // window)`` windows, the first
        starting at 0, each starting where the previous ends, the last ending at ``num_frames``.

    Raises:
        ValueError: If ``num_frames`` or ``window`` is below 1.
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got num_frames={num_frames}")
    if window < 1:
        raise ValueError(f"a window needs at least one frame, got window={window}")
    count = max(1, num_frames // window)
    return [(i * window, num_frames if i == count - 1 else (i + 1) * window) for i in range(count)]


def pool_scores(scores: Sequence[float] | torch.Tensor) -> dict[str, float]:
    """Pooled statistics of window scores, computed in float64.

    ``harmonic_mean`` is the plain one, ``n / sum(1 / s)`` (scores lie in ``(0, 1)``, so it is always
    defined; VMAF's adds 1 to each score before and subtracts it after, because VMAF scores can be 0).
    Percentiles interpolate linearly between the sorted scores (``numpy.percentile``'s default).

    Args:
        scores: ``(N,)`` window scores, ``N >= 1``, all above 0.

    Returns:
        ``{"mean", "harmonic_mean", "min", "max", "p5", "p25", "median", "p75", "p95"}`` (see
        :data:`POOLED_STATISTICS`).

    Raises:
        ValueError: No scores, or a score that is not a finite number above 0.
    """
    values = torch.as_tensor(scores).detach().to("cpu", torch.float64).flatten()
    if values.numel() == 0:
        raise ValueError("pooling needs at least one score, got none")
    if not bool(torch.isfinite(values).all()) or bool((values <= 0).any()):
        raise ValueError(f"scores to pool must be finite numbers above 0, got {values.tolist()}")
    q = torch.quantile(values, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64))
    stats = [
        values.mean(),
        values.numel() / (1.0 / values).sum(),
        values.min(),
        values.max(),
        *q,
    ]
    return {name: float(v) for name, v in zip(POOLED_STATISTICS, stats)}


@dataclass
class Timeline:
    """Scores of consecutive windows of one video, as :meth:`DVLTAVQA.timeline` gives them.

    Attributes:
        scores: ``(N,)`` quality of each window in ``(0, 1)``, higher is better; window ``i`` scored exactly as
            the video stretch ``[starts[i], ends[i])`` scores alone.
        starts: ``(N,)`` first frame of each window (0-based).
        ends: ``(N,)`` frame after the last of each window (exclusive); ``ends[i] == starts[i + 1]``.
        num_frames: Frames in the video.
        window: Window length asked for, in frames (the last window may be longer: see :func:`window_bounds`).
        fps: Frame rate the times are computed with, or ``None`` when not known.
        path: The file scored, or ``""`` for a tensor.
    """

    scores: torch.Tensor
    starts: torch.Tensor
    ends: torch.Tensor
    num_frames: int
    window: int
    fps: float | None = None
    path: str = ""

    def __len__(self) -> int:
        return int(self.scores.numel())

    @property
    def start_times(self) -> torch.Tensor | None:
        """``(N,)`` start of each window in seconds (``starts / fps``), or ``None`` without a frame rate."""
        return None if self.fps is None else self.starts.double() / self.fps

    @property
    def end_times(self) -> torch.Tensor | None:
        """``(N,)`` end of each window in seconds (``ends / fps``), or ``None`` without a frame rate."""
        return None if self.fps is None else self.ends.double() / self.fps

    def pooled(self) -> dict[str, float]:
        """Pooled statistics of the window scores (:func:`pool_scores`)."""
        return pool_scores(self.scores)

    def segments(self) -> list[dict[str, object]]:
        """One plain dictionary per window, in the shape of a VMAF log's ``frames`` entries.

        Returns:
            ``[{"segmentNum", "start_frame", "end_frame", "start_time", "end_time", "metrics": {"dvlta": s}}]``
            (``end_frame`` exclusive; times in seconds, ``None`` without a frame rate).
        """
        scores = self.scores.detach().double().tolist()
        starts, ends = self.starts.tolist(), self.ends.tolist()
        t0 = self.start_times.tolist() if self.start_times is not None else [None] * len(scores)
        t1 = self.end_times.tolist() if self.end_times is not None else [None] * len(scores)
        return [
            {
                "segmentNum": i,
                "start_frame": starts[i],
                "end_frame": ends[i],
                "start_time": t0[i],
                "end_time": t1[i],
                "metrics": {LOG_METRIC: scores[i]},
            }
            for i in range(len(scores))
        ]

    def to_log(self, **extra: object) -> dict[str, object]:
        """The timeline as a JSON-ready log in the spirit of VMAF's (``json.dump`` writes it).

        Args:
            **extra: Entries added at the top level (the CLI adds ``version``, ``model`` and ``weights``).

        Returns:
            ``{"format", "path", "num_frames", "fps", "window_frames", **extra, "segments": [...],
            "pooled_metrics": {"dvlta": {...}}, "aggregate": {"dvlta": mean}}``.
        """
        pooled = self.pooled()
        return {
            "format": LOG_FORMAT,
            "path": self.path,
            "num_frames": self.num_frames,
            "fps": self.fps,
            "window_frames": self.window,
            **extra,
            "segments": self.segments(),
            "pooled_metrics": {LOG_METRIC: pooled},
            "aggregate": {LOG_METRIC: pooled["mean"]},
        }
