"""Scoring many video files: parallel decoding, batched model calls, one result per file.

:func:`score_files` (also :meth:`DVLTAVQA.score_files <dvlta_metric.model.DVLTAVQA.score_files>`) decodes
files in a pool of worker threads (PyAV releases the GIL while it decodes and converts frames) while the
calling thread runs the model. Only a bounded number of decoded videos wait in memory at any time. Results
come back in input order, one :class:`FileResult` per path; a file that cannot be read or scored gets a
result with ``error`` set and the others go on.

On CUDA each worker thread cuts its views on a CUDA stream of its own: its host-to-device copies and view
kernels then overlap the model's kernels instead of queueing behind them on the default stream (a copy
there would hold the worker until the model's queued work is done). The calling thread makes its stream
wait for a video's views before the model reads them. With ``decoder="torchcodec"`` the worker also decodes on
that stream (torchcodec converts NVDEC's frames on the current stream), so the frames are on the GPU, in order,
before its views are cut from them.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch

from ._allocator import release_free_memory
from ._inputs import check_video
from .color import check_color_matrix, check_color_range
from .config import ModelConfig
from .decoded import DecodedVideo
from .raw_video import RawVideo
from .torchcodec_io import check_torchcodec
from .uncertainty import MAX_VIEWS, view_interval, view_spread
from .video_io import (
    TransientError,
    _transient,
    check_decoder,
    check_decoder_options,
    check_limit,
    read_limits,
    read_options,
)

__all__ = ["FileResult", "ReadOptions", "VideoScorer", "score_files"]

ReadOptions = tuple[str | None, str | None, bool | None, str | None]
"""``(color_matrix, color_range, keep_bit_depth, decoder)``: the arguments of
:func:`~dvlta_metric.video_io.read_options` that a decode job reads with."""


class VideoScorer(Protocol):
    """What :func:`score_files` needs of a model (:class:`~dvlta_metric.model.DVLTAVQA` is one)."""

    config: ModelConfig

    @property
    def device(self) -> torch.device: ...

    @property
    def branch_names(self) -> tuple[str, ...]: ...

    def read(self, path: str | RawVideo, *, views: int = 1) -> DecodedVideo: ...

    def make_views(self, video: torch.Tensor | DecodedVideo, *, view: int = 0) -> dict[str, torch.Tensor]: ...

    def score_views(
        self, views: Sequence[dict[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


@dataclass
class FileResult:
    """The outcome of scoring one file.

    Attributes:
        path: The file, as given.
        score: Quality in ``(0, 1)``, higher is better; ``None`` when the file failed.
        error: ``"<ExceptionType>: <message>"`` when the file failed, else ``None``. It starts with
            ``"TransientError: "`` when the machine ran short of memory or file descriptors (twice): that is
            no verdict on the file, and scoring it again may succeed.
        model: Name of the model that scored it.
        weights: Fusion weight of each branch (``{"bvfe": ..., "tcm": ..., "vbtc": ...}``) when scoring was
            asked to explain, else ``None``.
        seconds: Wall time spent on the file: decoding plus its share of the model call.
        warning: Something worth knowing about a file that was scored anyway (e.g. it looks truncated, or
            it is a still image rather than a video).
        interval: With ``views >= 2``: ``(spread, ci_low, ci_high)`` of the views' scores (the score is their
            mean; :mod:`~dvlta_metric.uncertainty`), else ``None``.
    """

    path: str
    score: float | None
    error: str | None = None
    model: str = ""
    weights: dict[str, float] | None = None
    seconds: float | None = None
    warning: str | None = None
    interval: tuple[float, float, float] | None = None

    @property
    def ok(self) -> bool:
        """Whether the file was scored."""
        return self.error is None and self.score is not None

    def to_dict(self) -> dict[str, object]:
        """A flat row: ``path``, ``score``, ``model``, ``error``, ``warning``, ``seconds``, then one
        ``weight_<branch>`` entry per branch when weights were recorded, then ``spread``, ``ci_low`` and
        ``ci_high`` when several views were scored."""
        row: dict[str, object] = {
            "path": self.path,
            "score": self.score,
            "model": self.model,
            "error": self.error,
            "warning": self.warning,
            "seconds": None if self.seconds is None else round(self.seconds, 4),
        }
        for branch, weight in (self.weights or {}).items():
            row[f"weight_{branch}"] = weight
        if self.interval is not None:
            row["spread"], row["ci_low"], row["ci_high"] = self.interval
        return row


@dataclass
class _Decoded:
    """A decode job's outcome: the video's views (or the error), a warning, and how long it took."""

    path: str
    views: dict[str, torch.Tensor] | None
    error: str | None
    seconds: float
    warning: str | None = None
    ready: torch.cuda.Event | None = None  # recorded on the worker's CUDA stream after the views


_worker = threading.local()


def _worker_stream(device: torch.device) -> torch.cuda.Stream | None:
    """This thread's own CUDA stream on ``device`` (``None`` off CUDA), created on first use."""
    if device.type != "cuda":
        return None
    streams: dict[torch.device, torch.cuda.Stream] = _worker.__dict__.setdefault("streams", {})
    if device not in streams:
        streams[device] = torch.cuda.Stream(device)
    return streams[device]


def _use_views(job: _Decoded, device: torch.device) -> None:
    """Make the current CUDA stream wait for a job's views, and tell the allocator it uses them."""
    if job.ready is None or job.views is None:
        return
    stream = torch.cuda.current_stream(device)
    stream.wait_event(job.ready)
    for view in job.views.values():
        view.record_stream(stream)
    job.ready = None


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


TRANSIENT_RETRIES = 1
"""Times a file is decoded again after a transient failure (out of memory or file descriptors)."""


def _read(
    model: VideoScorer,
    item: str | RawVideo,
    limits: tuple[float | None, float | None] = (None, None),
    options: ReadOptions = (None, None, None, None),
    views: int = 1,
) -> _Decoded:
    """Decode the frames ``model`` needs from one file and cut its views; never raises an ``Exception``.

    This runs in the worker threads, so only the branches run in the main thread; the decoded frames are
    dropped as soon as the (much smaller) views exist, and their memory is handed back to the system
    (:func:`~dvlta_metric.release_free_memory`). ``limits`` are ``(max_megapixels, decode_timeout)``
    (:func:`~dvlta_metric.video_io.read_limits`), ``options`` :data:`ReadOptions`
    (:func:`~dvlta_metric.video_io.read_options`). A transient failure (``MemoryError``, ``ENOMEM``,
    ``EAGAIN``, ``EMFILE``, ``ENFILE``) is tried again :data:`TRANSIENT_RETRIES` time(s), then reported as a
    ``TransientError`` row, never as a verdict on the file. With ``views >= 2`` the scoring views ``0 ..
    views - 1`` are cut and stacked along a new first dimension of each view.
    """
    start = time.perf_counter()
    path = str(item)
    tries = 0
    while True:
        tries += 1
        try:
            stream = _worker_stream(model.device)
            on_stream = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
            with read_limits(*limits), read_options(*options), on_stream:  # NVDEC's frames: on this stream
                video = model.read(item) if views == 1 else model.read(item, views=views)
            check_video(video.frames, name=path)
            with torch.no_grad(), torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                if views == 1:
                    made = model.make_views(video)
                else:
                    each = [model.make_views(video, view=k) for k in range(views)]
                    made = {name: torch.stack([v[name] for v in each]) for name in each[0]}
            ready = stream.record_event() if stream is not None else None
            warning = _warning(video)
            # the frames go now, and glibc hands their pages back: freed in this worker thread's heap (arena),
            # they would otherwise stay resident beside the model's activations in the main thread's heap
            del video
            release_free_memory()
            return _Decoded(path, made, None, time.perf_counter() - start, warning, ready)
        except Exception as err:
            if not _transient(err):
                return _Decoded(path, None, _describe(err), time.perf_counter() - start)
            if tries > TRANSIENT_RETRIES:
                return _Decoded(path, None, _describe_transient(path, err, tries), time.perf_counter() - start)


def _describe_transient(path: str, err: BaseException, tries: int) -> str:
    """The ``TransientError: ...`` row of a file that failed ``tries`` times for want of resources."""
    if isinstance(err, TransientError):
        return f"{TransientError.__name__}: {err} (failed {tries} times)"
    return (
        f"{TransientError.__name__}: {path}: failed {tries} times for want of resources on this machine "
        f"({type(err).__name__}: {err or 'out of memory'}), not because of the file; score it again later, with "
        "fewer workers, or with more memory"
    )


def _warning(video: DecodedVideo) -> str | None:
    """A note for files that were decoded but look damaged, are a still picture, or are HDR (not tone-mapped)."""
    notes = []
    if video.metadata.get("still_image"):
        codec = video.metadata.get("codec")
        notes.append(f"the file is a still image ({codec}), not a video: scored as a 1-frame video")
    if video.metadata.get("truncated"):
        declared = video.metadata.get("declared_frames")
        of = f" (its container declares {declared})" if isinstance(declared, int) and declared else ""
        notes.append(f"the file looks truncated: scored on the {video.num_frames} frames it holds{of}")
    if video.metadata.get("decoder_fallback"):
        notes.append(
            f"NVDEC could not decode it: torchcodec decoded it on the CPU ({video.metadata['decoder_fallback']})"
        )
    if video.metadata.get("hdr"):
        notes.append(
            "the video is HDR (PQ or HLG transfer) and was converted to RGB without tone mapping, so it "
            "looks flat and its score is not comparable with SDR scores: tone-map it to SDR first"
        )
    return "; ".join(notes) or None


def _split(views: dict[str, torch.Tensor] | None, count: int) -> list[dict[str, torch.Tensor]]:
    """A job's views as ``count`` view dictionaries (``count >= 2``: unstacked along the first dimension)."""
    views = cast(dict, views)
    if count == 1:
        return [views]
    return [{name: view[k] for name, view in views.items()} for k in range(count)]


def _score(model: VideoScorer, jobs: list[_Decoded], explain: bool, views: int = 1) -> list[FileResult]:
    """Score decoded files together; if the batch fails as a whole, score them one by one."""
    name = model.config.name
    results: dict[int, FileResult] = {}
    for job in jobs:
        _use_views(job, model.device)
    good = [i for i, job in enumerate(jobs) if job.views is not None]
    for i, job in enumerate(jobs):
        if job.views is None:
            results[i] = FileResult(job.path, None, job.error, name, seconds=job.seconds)
    groups = [good] if len(good) > 1 else []
    groups += [[i] for i in good]  # the one-by-one fallback
    for group in groups:
        if all(i in results for i in group):
            continue
        start = time.perf_counter()
        try:
            with torch.no_grad():
                scores, weights, _ = model.score_views([v for i in group for v in _split(jobs[i].views, views)])
        except Exception as err:
            if len(group) == 1:
                i = group[0]
                why = _describe_transient(jobs[i].path, err, 1) if _transient(err) else _describe(err)
                results[i] = FileResult(jobs[i].path, None, why, name, seconds=jobs[i].seconds)
            continue
        share = (time.perf_counter() - start) / len(group)
        per_view = scores.detach().double().cpu().unflatten(0, (-1, views))
        score_list = per_view.mean(dim=1).tolist()
        weight_rows = weights.detach().float().cpu().unflatten(0, (-1, views)).mean(dim=1).tolist()
        intervals: list[Any] = [None] * len(group)
        if views > 1:
            spread, bounds = view_spread(per_view).tolist(), view_interval(per_view).tolist()
            intervals = [(s, lo, hi) for s, (lo, hi) in zip(spread, bounds, strict=True)]
        for i, score, row, interval in zip(group, score_list, weight_rows, intervals):
            results[i] = FileResult(
                jobs[i].path,
                float(score),
                None,
                name,
                dict(zip(model.branch_names, row)) if explain else None,
                jobs[i].seconds + share,
                jobs[i].warning,
                interval,
            )
    return [results[i] for i in range(len(jobs))]


def score_files(
    model: VideoScorer,
    paths: Sequence[str | os.PathLike[str] | RawVideo],
    *,
    batch_size: int = 1,
    num_workers: int = 2,
    progress: bool = True,
    explain: bool = False,
    prefetch: int | None = None,
    max_megapixels: float | None = None,
    decode_timeout: float | None = None,
    color_matrix: str | None = None,
    color_range: str | None = None,
    keep_bit_depth: bool | None = None,
    views: int = 1,
    decoder: str = "pyav",
) -> Iterator[FileResult]:
    """Score video files with ``model``, decoding in worker threads while the model runs.

    Files are taken in input order in groups of ``batch_size``; each group is one model call (videos of
    different sizes batch fine: the views have fixed sizes). While a group is scored, the workers decode
    the next files, at most ``prefetch`` of them, so memory stays bounded however many files there are.
    A file that cannot be decoded or scored yields a result with ``error`` set and does not stop the
    others; if a whole group fails in the model, its files are scored one by one so that only the bad
    file fails. ``KeyboardInterrupt`` is not caught: results already yielded stay valid.

    Args:
        model: The model, used as it is (in eval mode the views are deterministic).
        paths: Video files, a list (or any iterable) of ``str`` / ``os.PathLike`` paths and
            :class:`~dvlta_metric.raw_video.RawVideo` raw files; a single path is refused with a ``TypeError``
            (pass ``[path]``). See :func:`~dvlta_metric.video_io.find_videos` to expand directories.
        batch_size: Videos per model call.
        num_workers: Decoding threads; 0 decodes in the calling thread, between model calls.
        progress: Show a tqdm progress bar on stderr when stderr is a terminal (never in a log file).
        explain: Record each video's fusion weights in :attr:`FileResult.weights`.
        prefetch: Videos decoded ahead while the model runs (default ``max(batch_size, num_workers)``).
        max_megapixels: Pixel budget of each file's decoding, in megapixels of RGB frames held at once
            (default :data:`~dvlta_metric.video_io.DEFAULT_MAX_MEGAPIXELS`; see
            :func:`~dvlta_metric.video_io.read_video`). A file over it gets a ``VideoLimitError`` row. Up to
            ``num_workers + prefetch`` files may be decoded or waiting at once: peak memory is about
            that many times 3 bytes times the budget, plus the model.
        decode_timeout: Most seconds one file's decoding may take (default
            :data:`~dvlta_metric.video_io.DEFAULT_DECODE_TIMEOUT_S`); a file over it gets a
            ``VideoLimitError`` row.
        color_matrix: YUV -> RGB matrix of untagged streams (``"bt601"``, ``"bt709"``, ``"bt2020"``; default
            BT.601); see :func:`~dvlta_metric.video_io.read_video`.
        color_range: Range of untagged streams (``"tv"`` or ``"pc"``; default tv).
        keep_bit_depth: Keep the bits of sources above 8 bits (default ``True``); ``False`` reads 8-bit RGB.
        views: Score this many scoring views of each file (``model(x, views=K)``): the score is their mean and
            :attr:`FileResult.interval` holds their spread and 95 % interval (``views >= 2``).
        decoder: ``"pyav"`` (the default: FFmpeg through PyAV on CPUs) or ``"torchcodec"``: decoded on the
            model's device, by NVDEC on a GPU, and the views cut there from the frames on the GPU
            (:mod:`~dvlta_metric.torchcodec_io`: install, decoder differences, damaged files). Checked before any
            file is read: torchcodec and FFmpeg installed, and a GPU for a CUDA model.

    A model whose reads and views draw from its own generator (training mode, or ``as_loss=True``) decodes in
    the calling thread whatever ``num_workers`` says, so that its draws come in input order and a seeded run
    repeats.

    Returns:
        An iterator of :class:`FileResult`, one per path, in input order; each is yielded as soon as its
        group is scored.

    Raises:
        TypeError: ``paths`` is a single path (a ``str`` or ``os.PathLike``) or not iterable, or holds
            something that is not a ``str`` / ``os.PathLike`` path; ``batch_size``, ``num_workers`` or
            ``prefetch`` is not an integer (``bool`` and ``float`` included).
        ValueError: ``batch_size`` < 1, or ``num_workers`` or ``prefetch`` < 0; ``max_megapixels`` or
            ``decode_timeout`` is not a positive number; an unknown ``color_matrix``, ``color_range`` or
            ``decoder``; a colour option the decoder cannot apply; ``views`` outside 1 to
            :data:`~dvlta_metric.uncertainty.MAX_VIEWS`, or above 1 for a model in training mode or a loss model.
            All before any file is read.
        ImportError: ``decoder="torchcodec"``, and torchcodec or the FFmpeg libraries it needs are missing.
        RuntimeError: ``decoder="torchcodec"`` with a CUDA model, and no GPU is usable.
    """
    batch_size = _count("batch_size", batch_size, 1)
    num_workers = _count("num_workers", num_workers, 0)
    prefetch = max(batch_size, num_workers) if prefetch is None else _count("prefetch", prefetch, 0)
    for name, value in (("max_megapixels", max_megapixels), ("decode_timeout", decode_timeout)):
        if value is not None:  # checked now, not in the first worker
            check_limit(name, value)
    limits = (max_megapixels, decode_timeout)
    check_color_matrix(color_matrix)
    check_color_range(color_range)
    if keep_bit_depth is not None and not isinstance(keep_bit_depth, bool):
        raise TypeError(f"keep_bit_depth must be True, False or None, got {type(keep_bit_depth).__name__}")
    check_decoder(decoder)
    check_decoder_options(decoder, color_matrix, color_range)
    if decoder == "torchcodec":
        check_torchcodec(model.device)
    options = (color_matrix, color_range, keep_bit_depth, decoder)
    drawing = getattr(model, "training", False) or getattr(model, "as_loss", False)
    if drawing:
        num_workers = 0  # the draws of one generator, in input order, from one thread
    views = _count("views", views, 1)
    if views > MAX_VIEWS:  # checked now, not as an error row of every file
        raise ValueError(f"views must be a whole number from 1 to {MAX_VIEWS}, got {views}")
    if views > 1 and drawing:
        raise ValueError(
            "views > 1 averages scoring views, which are fixed; the model is in training mode or a loss "
            "(as_loss=True), whose views are drawn at random on every call: call model.eval(), or use views=1"
        )
    names = _names(paths)
    return _results(model, names, batch_size, num_workers, progress, explain, prefetch, limits, options, views)


def _count(name: str, value: object, minimum: int) -> int:
    """``value`` as an ``int`` of at least ``minimum``: ``TypeError`` if it is not an integer, else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _names(paths: object) -> list[str | RawVideo]:
    """The paths as strings (raw videos kept whole), checked: a list of paths, not one path (its characters are
    not files)."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise TypeError(
            f"paths must be a list of video files, got a single {type(paths).__name__} ({paths!r}); "
            "pass a list, e.g. [path], to score one file"
        )
    if not isinstance(paths, Iterable):
        raise TypeError(f"paths must be a list of video files (str or os.PathLike), got {type(paths).__name__}")
    names: list[str | RawVideo] = []
    for i, path in enumerate(paths):
        if isinstance(path, RawVideo):
            names.append(path)
            continue
        name = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
        if not isinstance(name, str):
            raise TypeError(f"paths[{i}] must be a str or os.PathLike path, got {type(path).__name__} {path!r}")
        names.append(name)
    return names


def _results(
    model: VideoScorer,
    names: list[str | RawVideo],
    batch_size: int,
    num_workers: int,
    progress: bool,
    explain: bool,
    prefetch: int,
    limits: tuple[float | None, float | None],
    options: ReadOptions,
    views: int = 1,
) -> Iterator[FileResult]:
    """The generator behind :func:`score_files` (arguments already checked)."""
    from tqdm.auto import tqdm

    # disable=None: no bar when stderr is not a terminal (a log file would fill with redrawn bars)
    bar = tqdm(total=len(names), file=sys.stderr, disable=None if progress else True, unit="video", dynamic_ncols=True)
    pool = ThreadPoolExecutor(num_workers, thread_name_prefix="dvlta-decode") if num_workers else None
    pending: deque[Future[_Decoded]] = deque()
    submitted = failed = 0

    def fill(limit: int) -> None:
        nonlocal submitted
        while pool is not None and submitted < len(names) and len(pending) < limit:
            pending.append(pool.submit(_read, model, names[submitted], limits, options, views))
            submitted += 1

    try:
        for start in range(0, len(names), batch_size):
            group = names[start : start + batch_size]
            if pool is None:
                jobs = [_read(model, path, limits, options, views) for path in group]
            else:
                fill(max(len(group), prefetch))
                jobs = [pending.popleft().result() for _ in group]
                fill(prefetch)  # the workers decode the next files while the model runs
            for result in _score(model, jobs, explain, views):
                bar.update(1)
                if not result.ok:
                    failed += 1
                    bar.set_postfix(failed=failed)
                yield result
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
