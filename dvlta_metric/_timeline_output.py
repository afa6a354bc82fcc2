"""The per-video timeline files of ``dvlta-metric score --timeline``: JSON logs and optional PNG curves.

:class:`TimelineWriter` names one log per video after the video's file name (``clip.mp4`` ->
``clip.mp4.timeline.json``, and ``clip.mp4.timeline.png`` with ``--timeline-plot``), checks before anything is
scored that no file it would write exists unless this tool wrote it (:class:`~dvlta_metric._results.RefusedOutputError`
otherwise), and writes each file whole (to a temporary file, then renamed), raising
:class:`~dvlta_metric._results.OutputWriteError` when the disk refuses. Two videos with the same file name in
different folders get the first 8 hex digits of the SHA-1 of their real path added to their names.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from ._results import OutputWriteError, RefusedOutputError, resume_key
from .timeline import LOG_FORMAT, LOG_METRIC, Timeline

LOG_SUFFIX = ".timeline.json"
"""Ending of a timeline log's file name (after the video's own file name)."""

PLOT_SUFFIX = ".timeline.png"
"""Ending of a timeline curve's file name."""

PLOT_SOFTWARE = "dvlta-metric timeline"
"""The PNG ``Software`` text entry that marks a curve as written by this tool."""

PLOT_EXTRA = "dev"
"""The extra of the package that installs matplotlib (also ``train``)."""


def window_seconds(text: str) -> float:
    """``--timeline SECONDS``: a finite number of seconds above 0 (an ``argparse`` type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds such as 2 or 0.5, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds above 0, got {text}")
    return value


def matplotlib_missing() -> str | None:
    """Why ``--timeline-plot`` cannot draw (matplotlib is not installed), or ``None`` when it can."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return (
            "--timeline-plot draws with matplotlib, which is not installed: pip install matplotlib, or "
            f"pip install 'dvlta-metric[{PLOT_EXTRA}]'"
        )
    return None


class TimelineWriter:
    """Writes the timeline log (and curve) of each video into one folder.

    Args:
        folder: The ``--timeline-out`` folder (created when missing).
        videos: Every video the run may score, to name their files and check them before scoring.
        plot: Also draw a PNG curve per video.

    Raises:
        RefusedOutputError: ``folder`` is not a folder or cannot be created, or a file of a video's name exists
            there and was not written by this tool.
    """

    def __init__(self, folder: Path, videos: Sequence[str], *, plot: bool = False) -> None:
        self.folder, self.plot = folder, plot
        if folder.exists() and not folder.is_dir():
            raise RefusedOutputError(f"--timeline-out {folder} is a file: give a folder for the timeline logs")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RefusedOutputError(f"--timeline-out {folder}: cannot create it: {err.strerror or err}") from None
        counts = Counter(os.path.basename(v) for v in videos)
        self.names = {resume_key(v): _name(v, counts[os.path.basename(v)] > 1) for v in videos}
        for video in videos:
            for target, ours in self._targets(video):
                if target.exists() and not ours(target):
                    raise RefusedOutputError(
                        f"--timeline-out: {target} exists and was not written by dvlta-metric; it is left as it "
                        "is: move it away, or give another --timeline-out folder"
                    )

    def _targets(self, video: str) -> list[tuple[Path, Callable[[Path], bool]]]:
        base = self.folder / self.names[resume_key(video)]
        targets: list[tuple[Path, Callable[[Path], bool]]] = [(base.with_name(base.name + LOG_SUFFIX), _is_our_log)]
        if self.plot:
            targets.append((base.with_name(base.name + PLOT_SUFFIX), _is_our_plot))
        return targets

    def log_path(self, video: str) -> Path:
        """Where the log of ``video`` goes."""
        return self.folder / (self.names[resume_key(video)] + LOG_SUFFIX)

    def plot_path(self, video: str) -> Path:
        """Where the curve of ``video`` goes."""
        return self.folder / (self.names[resume_key(video)] + PLOT_SUFFIX)

    def write(self, video: str, timeline: Timeline, **extra: object) -> None:
        """Write the log (and the curve) of one video.

        Args:
            video: The path of one of the videos the writer was made with (any spelling of it).
            timeline: Its timeline.
            **extra: Top-level entries of the log (version, model, weights, the whole-video score).

        Raises:
            OutputWriteError: A file could not be written (a full disk); no half-written file is left.
        """
        text = json.dumps(timeline.to_log(**extra), indent=2, allow_nan=False, ensure_ascii=False) + "\n"
        _write_whole(self.log_path(video), text.encode("utf-8", "surrogateescape"))
        if self.plot:
            _write_whole(self.plot_path(video), _draw(timeline, os.path.basename(video)))


def _name(video: str, clash: bool) -> str:
    base = os.path.basename(video) or "video"
    if not clash:
        return base
    digest = hashlib.sha1(os.fsencode(resume_key(video))).hexdigest()[:8]
    return f"{base}.{digest}"


def _is_our_log(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            data = json.loads(f.read(1 << 24))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == LOG_FORMAT


def _is_our_plot(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    return head.startswith(b"\x89PNG") and b"Software\x00" + PLOT_SOFTWARE.encode() in head


def _write_whole(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")  # permissions from the umask
    try:
        with tmp.open("xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputWriteError(f"cannot write {path}: {err.strerror or err}") from None


def _draw(timeline: Timeline, title: str) -> bytes:
    """The curve of one timeline as PNG bytes: each window's score as a step over its span."""
    import io

    from matplotlib.figure import Figure  # no pyplot: the process's backend is left alone

    starts = timeline.start_times if timeline.start_times is not None else timeline.starts.double()
    ends = timeline.end_times if timeline.end_times is not None else timeline.ends.double()
    scores = timeline.scores.detach().double().tolist()
    xs = [*starts.tolist(), float(ends[-1])]
    fig = Figure(figsize=(8, 3), dpi=100)
    ax = fig.add_subplot()
    ax.stairs(scores, xs, baseline=None, linewidth=1.5, label=f"{LOG_METRIC} per window")
    mean = timeline.pooled()["mean"]
    ax.axhline(mean, linestyle="--", linewidth=1, color="grey", label=f"mean {mean:.4f}")
    ax.set_xlabel("time (s)" if timeline.start_times is not None else "frame")
    ax.set_ylabel("score (higher is better)")
    safe = title.encode("utf-8", "backslashreplace").decode("utf-8").replace("$", r"\$")  # no mathtext
    ax.set_title(safe, fontsize=10)
    ax.set_xlim(xs[0], xs[-1])
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", metadata={"Software": PLOT_SOFTWARE})
    return out.getvalue()
