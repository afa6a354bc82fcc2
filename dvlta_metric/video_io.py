"""Reading video files with PyAV (FFmpeg) into :class:`~dvlta_metric.decoded.DecodedVideo`.

:func:`read_video` decodes a file once for both views of a model and converts to RGB only the frames the
views need. How it works:

1. A demux-only pass reads every packet of the video stream without decoding it. It counts the frames that
   are really in the file (the container's declared count is not trusted: headers lie, files get
   truncated, variable-frame-rate video exists) and records each frame's presentation timestamp (pts) and
   which packets are keyframes. Sorting the pts gives the presentation order, so frame ``i`` is the frame
   with the ``i``-th smallest pts.
2. ``select(num_frames)`` says which frames are needed.
3. One decoding pass maps every decoded frame to its index by its pts and converts only the needed ones
   to RGB (``to_ndarray(format="rgb24")``; swscale does the YUV -> RGB and bit-depth conversion). When the
   next needed frame lies past a keyframe that the decoder has not reached yet, and far enough ahead, the
   reader seeks to that keyframe instead of decoding the gap: to its pts, or to its decoding timestamp
   where the demuxer lands past the keyframe when given its pts (MPEG-TS searches by decoding time).
   Decoding stops after the last needed frame. If no seek reaches the keyframe, the timestamps after a
   seek do not match the table, or needed frames are still missing after seeking, the file is read again
   without seeking; files whose packets carry no usable pts are read in decoding order, counting frames.
4. The frames are rotated / mirrored upright following the display matrix, exactly as the ``ffmpeg``
   command line's autorotation does (portrait phone videos stored landscape come out portrait).

YUV is converted to RGB with the matrix and range the stream is tagged with; an untagged stream as BT.601,
limited range, unless ``color_matrix`` / ``color_range`` say otherwise (:mod:`dvlta_metric.color`). 10-bit
and 12-bit sources keep their bits: they are converted to 16-bit RGB and returned as ``uint16`` frames
(``keep_bit_depth=False`` converts them to 8 bits, as the reader used to); 8-bit sources give ``uint8``
frames. **No tone mapping is done**: HDR (PQ / HLG) video is converted as if it were SDR, so it looks flat;
the transfer function is reported in ``metadata["color_trc"]`` and ``metadata["hdr"]``. Non-square pixels are
not resampled (the sample aspect ratio is reported in ``metadata["sample_aspect_ratio"]``).

Damaged files:

* **Truncated files are scored on what they hold.** Frames whose data is not in the file do not count
  (``num_frames`` is what the file really holds); if frames among the last :data:`TAIL_SLACK` cannot be
  decoded (a cut-off last packet), the video is read again as the shorter video it is, ending before the
  first of them that failed (a cut B-frame fails while a frame shown after it may still decode). Such a
  file gets ``metadata["truncated"] = True`` (also set when the container declares clearly more frames
  or a longer video duration than the file holds, and for an MPEG-TS file that ends in the middle of a
  transport packet); ``metadata["declared_frames"]`` keeps what it declared. The declared duration is the
  video stream's own, never one that covers a longer audio track: Matroska / WebM declare none per
  stream, so their per-track ``DURATION`` tag is used, else the segment duration when the file has no
  other audio or video stream, else none (``metadata["duration"]`` is then measured from the timestamps).
  :mod:`dvlta_metric.batch` turns the flag into a warning next to the score.
* **Anything else that cannot be decoded is an error.** A frame the decoder rejects, or decodes only with
  error concealment (FFmpeg flags it corrupt), counts as not decoded; if a needed frame is missing and it
  is not a short tail, :func:`read_video` raises ``ValueError`` instead of returning garbage. (Damage
  that still parses as a valid bitstream is invisible to any decoder and cannot be caught.)

Hostile files:

* **Only video containers open, only from the local file.** FFmpeg is given a ``format_whitelist`` of
  :data:`ALLOWED_FORMATS` (video containers, raw video streams and single PNG / JPEG pictures) and a
  ``protocol_whitelist`` of ``file``: playlists and scripts that make FFmpeg open other files or URLs
  (``ffconcat``, HLS / m3u8, DASH, SDP, ``image2`` patterns, ...) are refused whatever their extension,
  before they are read. Paths that are not regular files (FIFOs, devices, sockets) are refused before
  they are opened, so nothing can block waiting for a writer.
* **Limits.** ``max_megapixels`` (default :data:`DEFAULT_MAX_MEGAPIXELS`) bounds the decoded RGB frames
  held at once, checked from the stream's declared size before decoding and again on every decoded
  frame; ``decode_timeout`` (default :data:`DEFAULT_DECODE_TIMEOUT_S` seconds) bounds the time spent on
  one file. Going over either raises :class:`VideoLimitError`. :func:`read_limits` sets both for the
  reads in a block of code (``model.read`` and :func:`~dvlta_metric.batch.score_files` use it);
  :func:`read_options` does the same for the RGB conversion options.
* **Raw video is read only as the user describes it.** A :class:`~dvlta_metric.raw_video.RawVideo` opens the
  ``rawvideo`` demuxer (allowed for it alone: nothing is ever probed as raw video) at a size bounded by
  :data:`~dvlta_metric.raw_video.MAX_RAW_SIDE` and the pixel budget, and a file that is not a whole number of
  its frames is refused before it is opened.
* **Failures of the machine are not verdicts on the file.** Running out of memory or of file descriptors
  (``MemoryError``, ``ENOMEM``, ``EAGAIN``, ``EMFILE``, ``ENFILE``) while reading raises
  :class:`TransientError` instead of calling the file corrupt.

Every problem with a file is raised as ``FileNotFoundError`` (no such file), ``PermissionError``,
:class:`TransientError` (an ``OSError``), or ``ValueError`` (:class:`VideoLimitError` is one) with a message
that names the file and says what is wrong; PyAV's own exceptions never escape.
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import errno
import itertools
import math
import os
import re
import stat
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
import numpy as np
import torch
from av.sidedata.sidedata import SideDataContainer

from .color import check_color_matrix, check_color_range, is_high_bit_depth, rgb_conversion
from .decoded import DecodedVideo
from .raw_video import RawVideo

__all__ = [
    "ALLOWED_FORMATS",
    "DECODERS",
    "DEFAULT_DECODE_TIMEOUT_S",
    "DEFAULT_MAX_MEGAPIXELS",
    "VIDEO_EXTENSIONS",
    "FrameSelector",
    "TransientError",
    "VideoLimitError",
    "check_decoder",
    "find_videos",
    "read_limits",
    "read_options",
    "read_video",
    "register_decoder",
]

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".3g2", ".3gp", ".264", ".265", ".asf", ".avi", ".divx", ".dv", ".f4v", ".flv", ".h264", ".h265",
        ".hevc", ".ivf", ".m2t", ".m2ts", ".m2v", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".mts",
        ".mxf", ".nut", ".ogv", ".qt", ".rm", ".rmvb", ".ts", ".vob", ".webm", ".wmv", ".y4m",
    }
)  # fmt: skip
"""File extensions (lower case, with the dot) that :func:`find_videos` picks up inside directories."""

FrameSelector = Callable[[int], Sequence[int]]
"""``select(num_frames) -> indices``: which frames of a video to decode (e.g. ``model.needed_frames``)."""

SEEK_MIN_GAP = 16
"""Seek only when it skips at least this many packets of decoding (a seek costs a decoder flush)."""

ALLOWED_FORMATS: frozenset[str] = frozenset(
    {
        "asf", "avi", "dv", "flv", "h264", "hevc", "ivf", "m4v", "matroska", "mov", "mpeg", "mpegts",
        "mpegvideo", "mxf", "nut", "ogg", "rm", "yuv4mpegpipe", "png_pipe", "jpeg_pipe",
    }
)  # fmt: skip
"""FFmpeg demuxers :func:`read_video` opens: video containers (``mov`` is MP4 / MOV / 3GP, ``matroska`` is MKV /
WebM, ``mpeg`` is MPEG-PS / VOB), raw H.264 / HEVC / MPEG-4 / MPEG-2 streams, Y4M, and single PNG / JPEG
pictures. Every other format is refused before it is read, above all those that open other files or URLs
(``concat``, ``hls``, ``dash``, ``sdp``, ``image2`` patterns, ...)."""

DEFAULT_MAX_MEGAPIXELS = 1280.0
"""Default pixel budget of one read, in megapixels of decoded RGB frames held at once (3 bytes a pixel, so
about 3.8 GB): the 136 frames the full model needs of a DCI 4K (4096x2160) video fit. Frames kept at 16 bits (a
source above 8 bits, see :func:`read_video`'s ``keep_bit_depth``) count twice: 6 bytes a pixel."""

DEFAULT_DECODE_TIMEOUT_S = 300.0
"""Default limit, in seconds, on the time :func:`read_video` spends on one file (demuxing and decoding)."""

TRANSIENT_ERRNOS = frozenset({errno.ENOMEM, errno.EAGAIN, errno.EMFILE, errno.ENFILE})
"""``errno`` values that say the machine is short of something (memory, file descriptors), not that the file
is bad: reading fails with :class:`TransientError` on them."""

_TEXT_FORMATS = frozenset({"tty"})  # FFmpeg "reads" any .txt file as ANSI art

# FFmpeg options of every open: only the allowed demuxers, only the local file (demuxers that open further
# files or URLs, if one were allowed, would inherit both lists)
_OPEN_OPTIONS = {"format_whitelist": ",".join(sorted(ALLOWED_FORMATS)), "protocol_whitelist": "file"}

# what a refused format usually is, told by its first bytes (only for the error message)
_SCRIPTS = (
    (b"ffconcat", "an ffconcat script"),
    (b"#EXTM3U", "an HLS playlist (m3u8)"),
    (b"<?xml", "an XML document (a DASH manifest?)"),
    (b"<MPD", "a DASH manifest"),
    (b"v=0", "an SDP description"),
)


class VideoLimitError(ValueError):
    """Reading a file went over a limit: the pixel budget (``max_megapixels``) or the time limit
    (``decode_timeout``). The message says which, and how to raise it."""


class TransientError(OSError):
    """Reading failed for want of memory or file descriptors on this machine, not because of the file:
    reading it again later may well succeed."""


@dataclass(frozen=True)
class _Limits:
    """The limits of one read: pixels of decoded RGB held at once, and a deadline (``time.monotonic``)."""

    max_pixels: float
    max_megapixels: float
    timeout: float
    deadline: float

    def check_time(self, name: str) -> None:
        """Raise :class:`VideoLimitError` once the deadline has passed."""
        if time.monotonic() > self.deadline:
            raise VideoLimitError(
                f"{name}: reading the video took longer than the decode time limit of {self.timeout:g} s; the "
                "file is too slow to decode (or hostile). To allow more time: read_video(..., decode_timeout=S) "
                "or score_files(..., decode_timeout=S)"
            )

    def check_pixels(self, name: str, pixels: int, what: str) -> None:
        """Raise :class:`VideoLimitError` if holding ``pixels`` RGB pixels (``what``) exceeds the budget."""
        if pixels > self.max_pixels:
            raise VideoLimitError(
                f"{name}: reading it would hold {what} ({pixels / 1e6:.0f} megapixels of RGB) at once, over the "
                f"pixel budget of {self.max_megapixels:g} megapixels. To read it anyway, if the memory is there "
                "(3 bytes a pixel): read_video(..., max_megapixels=N) or score_files(..., max_megapixels=N); a source "
                "above 8 bits counts twice, unless read with keep_bit_depth=False (8-bit RGB)"
            )


_LIMITS: contextvars.ContextVar[tuple[float, float]] = contextvars.ContextVar(
    "dvlta_read_limits", default=(DEFAULT_MAX_MEGAPIXELS, DEFAULT_DECODE_TIMEOUT_S)
)


@dataclass(frozen=True)
class _Rgb:
    """How one read decodes frames and converts them to RGB (see :mod:`dvlta_metric.color`)."""

    keep_bit_depth: bool = True
    color_matrix: str | None = None
    color_range: str | None = None
    decoder: str = "pyav"


_DEFAULT_RGB = _Rgb()
_OPTIONS: contextvars.ContextVar[_Rgb] = contextvars.ContextVar("dvlta_read_options", default=_DEFAULT_RGB)


@contextlib.contextmanager
def read_options(
    color_matrix: str | None = None,
    color_range: str | None = None,
    keep_bit_depth: bool | None = None,
    decoder: str | None = None,
) -> Iterator[None]:
    """Set how every :func:`read_video` call in this block decodes frames and converts them to RGB (this thread or
    task only).

    ``model(path)``, ``model.read`` and :func:`~dvlta_metric.batch.score_files` read with the options in
    effect; see :mod:`dvlta_metric.color` for what they do.

    Args:
        color_matrix: Matrix of streams with no matrix tag: ``"bt601"``, ``"bt709"`` or ``"bt2020"``;
            ``None`` keeps the current one (by default swscale's BT.601).
        color_range: Range of streams with no range tag: ``"tv"`` (limited) or ``"pc"`` (full); ``None`` keeps
            the current one (by default tv).
        keep_bit_depth: Keep the bits of sources above 8 bits (``uint16`` frames); ``False`` converts them
            to 8 bits; ``None`` keeps the current setting (by default ``True``).
        decoder: ``"pyav"`` or ``"torchcodec"`` (:data:`DECODERS`); ``None`` keeps the current one (by default
            ``"pyav"``).

    Yields:
        Nothing; the previous options come back when the block ends.

    Raises:
        ValueError: An unknown matrix, range or decoder name; a matrix or range the decoder cannot apply.
        TypeError: ``keep_bit_depth`` is not a bool.
    """
    current = _OPTIONS.get()
    token = _OPTIONS.set(_rgb_options(current, color_matrix, color_range, keep_bit_depth, decoder))
    try:
        yield
    finally:
        _OPTIONS.reset(token)


def _rgb_options(
    base: _Rgb, color_matrix: object, color_range: object, keep_bit_depth: object, decoder: object = None
) -> _Rgb:
    """``base`` with the options that are not ``None`` replaced, each checked."""
    if keep_bit_depth is not None and not isinstance(keep_bit_depth, bool):
        raise TypeError(f"keep_bit_depth must be True, False or None, got {type(keep_bit_depth).__name__}")
    options = _Rgb(
        base.keep_bit_depth if keep_bit_depth is None else keep_bit_depth,
        base.color_matrix if color_matrix is None else check_color_matrix(color_matrix),
        base.color_range if color_range is None else check_color_range(color_range),
        base.decoder if decoder is None else check_decoder(decoder),
    )
    check_decoder_options(options.decoder, options.color_matrix, options.color_range)
    return options


DECODERS: tuple[str, ...] = ("pyav", "torchcodec")
"""Decoders :func:`read_video` can use: ``"pyav"`` (the default: FFmpeg through PyAV, on CPUs) and
``"torchcodec"`` (torchcodec: NVDEC on a CUDA device, FFmpeg on the CPU; :mod:`dvlta_metric.torchcodec_io`)."""


def check_decoder(value: object) -> str:
    """``value`` if it is a name in :data:`DECODERS`.

    Raises:
        ValueError: Any other value; the message lists the names.
    """
    if isinstance(value, str) and value in DECODERS:
        return value
    raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {value!r}")


def check_decoder_options(decoder: str, color_matrix: str | None, color_range: str | None) -> None:
    """Refuse colour options the decoder cannot apply: torchcodec converts untagged streams as BT.601, tv range.

    Raises:
        ValueError: ``color_matrix`` other than ``"bt601"`` or ``color_range`` other than ``"tv"`` with the
            torchcodec decoder.
    """
    if decoder != "torchcodec":
        return
    if color_matrix not in (None, "bt601") or color_range not in (None, "tv"):
        raise ValueError(
            f"color_matrix={color_matrix!r} / color_range={color_range!r} are options of the PyAV decoder: torchcodec "
            "converts untagged streams as BT.601, tv range (and tagged streams by their tags); use decoder='pyav' for "
            "other conversions"
        )


def check_limit(name: str, value: object) -> float:
    """A positive limit (``math.inf`` for none), checked: ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number (math.inf for no limit), got {value!r}")
    return float(value)


@contextlib.contextmanager
def read_limits(max_megapixels: float | None = None, decode_timeout: float | None = None) -> Iterator[None]:
    """Set the limits of every :func:`read_video` call in this block (this thread or task only).

    ``model.read`` and the model's file calls read with the limits in effect;
    :func:`~dvlta_metric.batch.score_files` uses this to pass its own.

    Args:
        max_megapixels: Pixel budget of one read (see :func:`read_video`); ``None`` keeps the current one.
        decode_timeout: Time limit of one read in seconds; ``None`` keeps the current one.

    Yields:
        Nothing; the previous limits come back when the block ends.

    Raises:
        ValueError: A limit is not a positive number.
    """
    pixels, seconds = _LIMITS.get()
    token = _LIMITS.set(
        (
            pixels if max_megapixels is None else check_limit("max_megapixels", max_megapixels),
            seconds if decode_timeout is None else check_limit("decode_timeout", decode_timeout),
        )
    )
    try:
        yield
    finally:
        _LIMITS.reset(token)


def _transient(err: BaseException) -> bool:
    """Whether ``err`` is a shortage on this machine (memory, file descriptors) rather than a bad file."""
    if isinstance(err, (MemoryError, TransientError, torch.cuda.OutOfMemoryError)):
        return True
    if isinstance(err, RuntimeError) and "not enough memory" in str(err):  # torch's CPU allocator
        return True
    code = getattr(err, "errno", None)
    return isinstance(err, (OSError, av.error.FFmpegError)) and code in TRANSIENT_ERRNOS


def _raise_if_transient(err: BaseException, name: str) -> None:
    """Raise :class:`TransientError` for ``err`` if it is a shortage on this machine; else return."""
    if isinstance(err, TransientError):
        raise err
    if _transient(err):
        code = getattr(err, "errno", None)
        reason = "out of memory" if isinstance(err, MemoryError) or code == errno.ENOMEM else os.strerror(code)
        raise TransientError(
            f"{name}: reading failed for want of resources on this machine ({reason}: {type(err).__name__}), not "
            "because of the file; try again later, with fewer workers, or with more memory"
        ) from err


class _SeekFailed(Exception):
    """Timestamps after a seek did not match the frame table: read again without seeking."""


class _NoPts(Exception):
    """Decoded frames carry timestamps that are not in the table: read again counting frames."""


@dataclass
class _FrameTable:
    """What the demux-only pass found out about the video stream."""

    num_frames: int
    pts: list[int] | None  # presentation-ordered pts of every frame; None -> count frames in decode order
    index_of: dict[int, int] = field(default_factory=dict)  # pts -> frame index
    decode_pos: dict[int, int] = field(default_factory=dict)  # pts -> position in decoding order
    key_index: list[int] = field(default_factory=list)  # frame indices of keyframes, ascending
    key_pts: list[int] = field(default_factory=list)
    key_pos: list[int] = field(default_factory=list)  # their positions in decoding order
    key_seek: list[int] = field(default_factory=list)  # timestamp to seek to for each: its dts, else its pts
    demux_error: str | None = None
    packets: int = 0  # video packets in the file, counting those that do not make frames (edit lists)
    cut: bool = False  # the file holds frames past the table's end that are to be ignored (truncated_to)
    stream_index: int = 0  # the video stream's index in the file
    time_base: Fraction | None = None  # of the stream's timestamps
    colors: tuple[int | None, int | None, int | None] = (None, None, None)  # stream's colorspace, range, transfer

    def truncated_to(self, n: int) -> _FrameTable:
        """The same table for a video that ends after its first ``n`` frames."""
        if self.pts is None:
            return replace(self, num_frames=n, cut=True)
        pts = self.pts[:n]
        keep = set(pts)
        keys = [k for k in zip(self.key_index, self.key_pts, self.key_pos, self.key_seek) if k[1] in keep]
        return _FrameTable(
            n,
            pts,
            {p: i for i, p in enumerate(pts)},
            {p: d for p, d in self.decode_pos.items() if p in keep},
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [k[3] for k in keys],
            self.demux_error,
            self.packets,
            cut=True,
            stream_index=self.stream_index,
            time_base=self.time_base,
            colors=self.colors,
        )


def find_videos(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    extensions: str | Iterable[str] = VIDEO_EXTENSIONS,
) -> list[Path]:
    """Expand files and directories into the list of video files to score.

    Directories are searched recursively for files whose extension is in ``extensions`` (case-insensitive);
    hidden files and directories (names starting with ``"."``) are skipped, and each directory's videos
    come sorted by path. Symbolic links to directories are followed, each directory searched once (a link
    back to a directory being searched, a loop, is skipped with a warning); a directory that cannot be
    listed (no permission) is skipped with a warning that names it. Paths that are not directories are
    kept as given, whatever their extension and even if they do not exist (reading them then reports the
    problem). Duplicates are dropped, keeping the first occurrence.

    Args:
        paths: One path or several.
        extensions: Extensions to look for in directories, with or without the leading dot
            (``[".mp4", "mkv"]``); a single string is one extension (``"mp4"``, not ``"m"``, ``"p"``,
            ``"4"``).

    Returns:
        The files, in the order given (directories expanded in place).

    Raises:
        TypeError: ``extensions`` is not a string or an iterable of strings.

    Warns:
        UserWarning: A directory could not be listed, or a symbolic link loops back to a directory above it.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if isinstance(extensions, str):
        extensions = [extensions]
    if not isinstance(extensions, Iterable):
        raise TypeError(f"extensions must be a string or a list of strings, got {type(extensions).__name__}")
    exts: set[str] = set()
    for e in extensions:
        if not isinstance(e, str):
            raise TypeError(f"extensions must be strings such as '.mp4', got {type(e).__name__} {e!r}")
        exts.add(e.lower() if e.startswith(".") else f".{e.lower()}")
    found: list[Path] = []
    seen: set[str] = set()

    def add(p: Path) -> None:
        key = os.path.normcase(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            found.append(p)

    for item in paths:
        path = Path(item)
        if not path.is_dir():
            add(path)
            continue
        inside = [p for p in _walk(path) if p.suffix.lower() in exts]
        for p in sorted(inside):
            add(p)
    return found


def _walk(top: Path) -> Iterator[Path]:
    """The non-hidden files under ``top``, each directory once (links followed); warns about what it skips."""
    searched: set[tuple[int, int]] = set()

    def unreadable(err: OSError) -> None:
        warnings.warn(
            f"find_videos: skipped the directory {err.filename}: cannot list it ({err.strerror}); the videos in it "
            "are not scored",
            stacklevel=2,
        )

    for root, dirs, files in os.walk(top, onerror=unreadable, followlinks=True):
        try:
            st = os.stat(root)
        except OSError as err:
            unreadable(err)
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in searched:  # a second link to a directory searched already
            dirs[:] = []
            continue
        searched.add((st.st_dev, st.st_ino))
        here = os.path.realpath(root) + os.sep
        kept = []
        for d in sorted(dirs):  # sorted: which of two links to one directory is searched does not vary
            sub = os.path.join(root, d)
            if d.startswith("."):
                continue
            if os.path.islink(sub) and here.startswith(os.path.realpath(sub).rstrip(os.sep) + os.sep):
                warnings.warn(
                    f"find_videos: skipped {sub}: a symbolic link to {os.path.realpath(sub)}, a directory it is "
                    "inside (a loop)",
                    stacklevel=2,
                )
                continue
            kept.append(d)
        dirs[:] = kept
        yield from (Path(root) / f for f in files if not f.startswith("."))


def read_video(
    path: str | os.PathLike[str] | RawVideo,
    select: FrameSelector | None = None,
    *,
    threads: int = 0,
    max_megapixels: float | None = None,
    decode_timeout: float | None = None,
    color_matrix: str | None = None,
    color_range: str | None = None,
    keep_bit_depth: bool | None = None,
    decoder: str | None = None,
    device: str | torch.device | None = None,
) -> DecodedVideo:
    """Decode a video file, converting to RGB only the frames ``select`` asks for.

    See the module docstring for how frames are counted, how seeking works, and what happens with
    rotated, high-bit-depth, HDR and damaged files; :mod:`dvlta_metric.torchcodec_io` for the torchcodec
    decoder (NVDEC on a GPU) and how its frames differ.

    Args:
        path: Any file FFmpeg reads as video (MP4, MKV, MOV, WebM, AVI, MPEG-TS, Y4M, ...), or a
            :class:`~dvlta_metric.raw_video.RawVideo` for a raw ``.yuv`` file.
        select: ``select(num_frames) -> indices`` of the frames to decode, e.g. ``model.needed_frames``;
            ``None`` decodes every frame. Indices are 0-based in presentation order; duplicates and order
            do not matter.
        threads: Decoder threads, 0 to :data:`MAX_DECODER_THREADS`; 0 lets FFmpeg choose.
        max_megapixels: Pixel budget: the most decoded RGB the read may hold at once, in megapixels (the
            selected frames times their size; 3 bytes a pixel, and frames kept at 16 bits count twice).
            Checked from the stream's declared size before decoding and on every decoded frame. ``None``: the
            limit in effect (:func:`read_limits`), by default :data:`DEFAULT_MAX_MEGAPIXELS`; ``math.inf``: no
            limit.
        decode_timeout: Most seconds the read may take. ``None``: the limit in effect (:func:`read_limits`),
            by default :data:`DEFAULT_DECODE_TIMEOUT_S`; ``math.inf``: no limit.
        color_matrix: YUV -> RGB matrix of a stream with no matrix tag: ``"bt601"``, ``"bt709"`` or
            ``"bt2020"``. ``None``: the option in effect (:func:`read_options`), by default swscale's BT.601.
            A stream's own tag always wins.
        color_range: Range of a stream with no range tag: ``"tv"`` (limited) or ``"pc"`` (full). ``None``: the
            option in effect, by default tv. A stream's own tag always wins.
        keep_bit_depth: Keep the extra bits of a source with more than 8 bits per sample: its frames come as
            ``uint16`` RGB (0-65535), and count twice against the pixel budget. ``False``: convert to 8 bits.
            ``None``: the option in effect, by default ``True``. 8-bit sources always give ``uint8``.
        decoder: ``"pyav"`` (FFmpeg through PyAV, on CPUs) or ``"torchcodec"`` (on ``device``: NVDEC on a CUDA
            device; :mod:`dvlta_metric.torchcodec_io`). ``None``: the option in effect (:func:`read_options`), by
            default ``"pyav"``. Both pick the same frames; the file checks and the frame count are PyAV's.
        device: Where the torchcodec decoder decodes and leaves the frames (``"cuda"``, ``"cuda:1"``, ``"cpu"``;
            ``None``: the CPU). The PyAV decoder's frames are always on the CPU, whatever ``device`` says.

    Returns:
        A :class:`~dvlta_metric.decoded.DecodedVideo` with the selected frames as ``(N, 3, H, W)`` uint8
        RGB (``uint16`` for a source above 8 bits, unless ``keep_bit_depth=False``), upright, their sorted
        ``indices``, and ``num_frames`` of the whole video. ``metadata`` holds
        ``container``, ``codec``, ``pix_fmt``, ``rgb_bits`` (8 or 16), ``colorspace`` and ``color_range``
        (the stream's tags as FFmpeg numbers, 2 and 0 when untagged), ``width`` / ``height`` (as stored,
        before rotation),
        ``rotation`` (degrees counter-clockwise, as in the display matrix), ``mirrored``,
        ``color_trc``, ``hdr``, ``sample_aspect_ratio``, ``duration`` (s, of the video stream: as the file
        declares it, else measured from the frames' timestamps), ``declared_frames``,
        ``truncated``, ``still_image`` (a single picture such as a PNG or JPEG file, whatever its
        extension), ``timestamps`` (``"pts"`` or ``"decode-order"``), ``seeks`` and ``frames_decoded``, and
        ``decoder`` (``"pyav"`` or ``"torchcodec"``; the torchcodec reader also sets ``decode_device`` and
        ``decoder_fallback``).

    Raises:
        FileNotFoundError: The file does not exist.
        PermissionError: The file cannot be opened for reading.
        TransientError: Memory or file descriptors ran out while reading (not a verdict on the file).
        VideoLimitError: The read would go over the pixel budget or took longer than the time limit.
        ValueError: The path is a directory, a symbolic link loop, not a regular file (a FIFO, a device) or
            an empty file, or a raw video whose size is not a whole number of frames; the file is not a video
            FFmpeg can read or a format outside
            :data:`ALLOWED_FORMATS` (a playlist or script), has no video stream (e.g. audio only) or no
            frames, is corrupt, or a needed frame cannot be decoded; ``select`` returned indices outside
            ``[0, num_frames)``; a limit is not a positive number; an unknown colour matrix, range or decoder; with
            the torchcodec decoder, a file it cannot open or decode (the message suggests ``decoder="pyav"``).
        ImportError: The torchcodec decoder, and torchcodec or the FFmpeg libraries it needs are not installed.
        RuntimeError: The torchcodec decoder on a CUDA device, and there is no GPU or NVDEC cannot be used.
    """
    p: Path | RawVideo = path if isinstance(path, RawVideo) else Path(path)
    name = str(path)
    if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= MAX_DECODER_THREADS:
        raise ValueError(
            f"threads must be a whole number from 0 (FFmpeg chooses) to {MAX_DECODER_THREADS}, got {threads!r}"
        )
    pixels, seconds = _LIMITS.get()
    pixels = pixels if max_megapixels is None else check_limit("max_megapixels", max_megapixels)
    seconds = seconds if decode_timeout is None else check_limit("decode_timeout", decode_timeout)
    limits = _Limits(pixels * 1e6, pixels, seconds, time.monotonic() + seconds)
    rgb = _rgb_options(_OPTIONS.get(), color_matrix, color_range, keep_bit_depth, decoder)
    if isinstance(p, RawVideo) or rgb.decoder == "pyav":  # raw video holds nothing to decode: PyAV reads it
        prepare, decode = _PYAV
    else:
        prepare, decode = _DECODERS[rgb.decoder]
    target = prepare(torch.device("cpu") if device is None else torch.device(device))
    _check_file(p, name)
    try:
        table, info = _scan(p, name, limits)
        try:
            needed = _needed(select, table.num_frames, name)
            video = decode(p, name, table, info, needed, threads, limits, rgb, device=target)
        except _Truncated as cut:
            table = table.truncated_to(cut.frames)
            info = {**info, "truncated": True}
            needed = _needed(select, table.num_frames, name)
            video = decode(p, name, table, info, needed, threads, limits, rgb, device=target, shorten=False)
    except av.error.PermissionError:
        raise PermissionError(f"{name}: permission denied") from None
    except av.error.FileNotFoundError:
        raise FileNotFoundError(f"{name}: no such file") from None
    except (av.error.FFmpegError, MemoryError, OSError) as err:
        _raise_if_transient(err, name)
        if not isinstance(err, av.error.FFmpegError):
            raise
        raise ValueError(f"{name}: cannot read the video: {_describe(err)}") from None
    if isinstance(p, RawVideo) and rgb.decoder != "pyav":
        video.frames = video.frames.to(target)
    return video


class DecodePass(Protocol):
    """The decoding pass of one decoder: the selected frames of a scanned file (see :func:`register_decoder`)."""

    def __call__(
        self,
        p: Path | RawVideo,
        name: str,
        table: _FrameTable,
        info: dict[str, object],
        needed: list[int],
        threads: int,
        limits: _Limits,
        rgb: _Rgb,
        *,
        device: torch.device,
        shorten: bool = True,
    ) -> DecodedVideo: ...


_DECODERS: dict[str, tuple[Callable[[torch.device], torch.device], DecodePass]] = {}
"""The decoders other than PyAV: name -> (check and resolve the device before reading, decoding pass)."""


def register_decoder(name: str, prepare: Callable[[torch.device], torch.device], decode: DecodePass) -> None:
    """Make ``decoder=name`` of :func:`read_video` use ``decode`` for the decoding pass (after PyAV's scan).

    :mod:`dvlta_metric.torchcodec_io` registers ``"torchcodec"`` when the package is imported; the module sits
    above this one (it uses the scan's frame table), so this module never imports it.

    Args:
        name: A name in :data:`DECODERS`.
        prepare: Checks that the decoder can run on a device (before the file is opened) and returns it resolved.
        decode: The decoding pass.
    """
    _DECODERS[check_decoder(name)] = (prepare, decode)


def _check_file(p: Path | RawVideo, name: str) -> None:
    """Refuse what is not a non-empty regular file, before anything opens it (a FIFO would block); refuse a raw
    video whose size is not a whole number of frames."""
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: no such file") from None
    except PermissionError:
        raise PermissionError(f"{name}: permission denied (cannot look up the file)") from None
    except OSError as err:
        _raise_if_transient(err, name)
        if err.errno == errno.ELOOP:
            raise ValueError(f"{name}: a loop of symbolic links, not a video file") from None
        raise ValueError(f"{name}: cannot look up the file: {err.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(
            f"{name}: is a directory, not a video file (to score the videos in it: "
            "model.score_files(dvlta_metric.find_videos(path)), or dvlta-metric score DIR)"
        )
    if not stat.S_ISREG(st.st_mode):
        kind = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device"}
        what = kind.get(stat.S_IFMT(st.st_mode), "a block device" if stat.S_ISBLK(st.st_mode) else "a special file")
        raise ValueError(
            f"{name}: {what}, not a regular file; only video files stored on disk are read (save the stream to a "
            "file first)"
        )
    if st.st_size == 0:
        raise ValueError(f"{name}: the file is empty (0 bytes)")
    if isinstance(p, RawVideo) and st.st_size % p.frame_bytes:
        frames, extra = divmod(st.st_size, p.frame_bytes)
        raise ValueError(
            f"{name}: {st.st_size} bytes are not a whole number of {p.width}x{p.height} {p.pix_fmt} frames "
            f"({p.frame_bytes} bytes each: {frames} frames and {extra} bytes over); the file is truncated, or the "
            "size or pixel format given is wrong"
        )


# ---------------------------------------------------------------------------------------------- internals
def _describe(err: av.error.FFmpegError) -> str:
    """A short reason from a PyAV error, without the file name it repeats."""
    text = getattr(err, "strerror", None) or str(err)
    return text.rstrip(". ") or type(err).__name__


def _open(p: Path | RawVideo, name: str) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open the file and pick its main video stream (cover art does not count)."""
    url = f"file:{os.path.abspath(p)}"  # the file: protocol keeps "a:b.mp4" from being taken for a URL scheme
    if isinstance(p, RawVideo):  # never probed: only a RawVideo opens the rawvideo demuxer
        options = {**_OPEN_OPTIONS, "format_whitelist": "rawvideo", **p.ffmpeg_options()}
        container = av.open(url, mode="r", format="rawvideo", options=options)
        return container, container.streams.video[0]
    try:
        container = av.open(url, mode="r", metadata_errors="replace", options=_OPEN_OPTIONS)
    except av.error.InvalidDataError:
        raise ValueError(f"{name}: not a video file FFmpeg can read (unknown format or corrupt header)") from None
    except av.error.ArgumentError:  # EINVAL: the probed format is not on the whitelist
        picture = _picture_format(p)  # FFmpeg guesses image2 (sequences) for a picture named "a?.png"
        if picture is not None:
            container = av.open(url, mode="r", format=picture, metadata_errors="replace", options=_OPEN_OPTIONS)
            return container, container.streams.video[0]
        raise ValueError(
            f"{name}: {_sniff(p)}, not a video container: formats that can make FFmpeg open other files or URLs "
            "(concat scripts, HLS / DASH playlists, SDP, image sequences) and other non-video formats are refused; "
            "allowed are video containers, raw video streams and single PNG / JPEG pictures"
        ) from None
    fmt = container.format.name
    if fmt in _TEXT_FORMATS:
        container.close()
        raise ValueError(f"{name}: a text file, not a video")
    attached = av.stream.Disposition.attached_pic
    videos = [s for s in container.streams.video if not (s.disposition & attached)]
    if not videos:
        audio = [s.codec_context.name for s in container.streams.audio]
        container.close()
        what = f"audio only ({', '.join(audio)})" if audio else "no video stream"
        raise ValueError(f"{name}: not a video: the file has {what}")
    return container, videos[0]


def _picture_format(p: Path) -> str | None:
    """``"png_pipe"`` / ``"jpeg_pipe"`` for a file that starts like a PNG / JPEG picture, else ``None``."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png_pipe"
    return "jpeg_pipe" if head.startswith(b"\xff\xd8\xff") else None


def _sniff(p: Path) -> str:
    """What a file refused by the format whitelist looks like (for the error message)."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return "a format outside the allowed list"
    return next((what for magic, what in _SCRIPTS if head.startswith(magic)), "a format outside the allowed list")


def _scan(p: Path | RawVideo, name: str, limits: _Limits) -> tuple[_FrameTable, dict[str, object]]:
    """Demux the video stream without decoding: frame count, pts table, keyframes, stream facts."""
    container, stream = _open(p, name)
    try:
        info = _stream_info(container, stream)
        width, height = int(info["width"] or 0), int(info["height"] or 0)  # type: ignore[call-overload]
        limits.check_pixels(name, width * height, f"one frame of {width}x{height}")
        time_base = stream.time_base
        facts = {"stream_index": stream.index, "time_base": time_base, "colors": _stream_colors(stream)}
        if info["container"] == "mpegts" and all(os.stat(p).st_size % n for n in TS_PACKET_SIZES):
            info["truncated"] = True  # a transport stream cut in the middle of a packet
        packets: list[tuple[int | None, int | None, bool]] = []
        present = 0
        demux_error = None
        try:
            for packet in container.demux(stream):
                limits.check_time(name)
                if packet.size == 0 or packet.is_corrupt:
                    continue
                present += 1
                if not packet.is_discard:  # discarded: before the start of an edit list
                    packets.append((packet.pts, packet.dts, packet.is_keyframe))
        except av.error.FFmpegError as err:
            _raise_if_transient(err, name)
            if not packets:
                raise ValueError(f"{name}: the video data cannot be read: {_describe(err)}") from None
            demux_error = _describe(err)
    finally:
        container.close()

    first_key = next((i for i, (_, _, key) in enumerate(packets) if key), None)
    if first_key is not None:
        # frames before the first keyframe cannot be decoded (a stream cut in the middle of a GOP)
        packets = packets[first_key:]
        first_pts = packets[0][0]
        if first_pts is not None:
            packets = [x for x in packets if x[0] is None or x[0] >= first_pts]
    if not packets:
        declared = info["declared_frames"]
        if declared or demux_error:
            raise ValueError(
                f"{name}: no frame of the video stream can be read"
                + (f" (the container declares {declared})" if declared else "")
                + "; the file is truncated or corrupt"
            )
        raise ValueError(f"{name}: the video stream has no frames")

    pts = [t for t, _, _ in packets if t is not None]
    if len(pts) != len(packets) or len(set(pts)) != len(pts):
        table = _FrameTable(len(packets), None, demux_error=demux_error, packets=present)
    else:
        table = _pts_table(packets, demux_error, present)
    table = replace(table, **facts)  # type: ignore[arg-type]
    if _short(info, table):
        info["truncated"] = True
    if info["duration"] is None:  # nothing declared it: measure it (not a test for truncation, then)
        info["duration"] = _measured_duration(table, time_base, info["fps"])  # type: ignore[arg-type]
    return table, info


def _pts_table(packets: list[tuple[int, int | None, bool]], demux_error: str | None, present: int) -> _FrameTable:
    """The frame table of packets ``(pts, dts, keyframe)`` in decoding order, every pts known and unique."""
    pts = [t for t, _, _ in packets]
    ordered = sorted(pts)
    index_of = {t: i for i, t in enumerate(ordered)}
    decode_pos = {t: d for d, t in enumerate(pts)}
    # key_seek: the keyframe's dts (its pts where the dts is unknown), for demuxers that search by decoding
    # time and land past the keyframe when given its later pts (MPEG-TS)
    keys = sorted(
        (index_of[t], t, decode_pos[t], t if dts is None or dts > t else dts) for t, dts, key in packets if key
    )
    table = _FrameTable(
        len(ordered),
        ordered,
        index_of,
        decode_pos,
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [k[3] for k in keys],
        demux_error,
        present,
    )
    return table


def _stream_info(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> dict[str, object]:
    """Facts about the stream known before decoding."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    sar = stream.sample_aspect_ratio
    return {
        "container": container.format.name,
        "codec": stream.codec_context.name,
        "pix_fmt": stream.codec_context.pix_fmt,
        "width": stream.codec_context.width,
        "height": stream.codec_context.height,
        "fps": float(rate) if rate else None,
        "sample_aspect_ratio": f"{sar.numerator}:{sar.denominator}" if sar else None,
        "duration": _declared_duration(container, stream),
        "declared_frames": stream.frames or None,
    }


def _stream_colors(stream: av.video.stream.VideoStream) -> tuple[int | None, int | None, int | None]:
    """The stream's colorspace, colour range and transfer tags as FFmpeg numbers (``None`` where unknown)."""
    ctx = stream.codec_context
    values = (getattr(ctx, k, None) for k in ("colorspace", "color_range", "color_trc"))
    return tuple(int(v) if v is not None else None for v in values)  # type: ignore[return-value]


_TAG_DURATION = re.compile(r"(\d+):(\d{1,2}):(\d{1,2}(?:\.\d*)?)")


def _declared_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """The video stream's duration in seconds as the file declares it, or ``None``.

    In order: the stream's own duration (MP4, MOV, AVI, MPEG-TS estimates it from its timestamps); its
    ``DURATION`` tag (Matroska / WebM, which have no per-stream duration, write one per track); the
    container's duration, but only when the video is the file's only audio or video stream: it covers all
    streams, so an audio track longer than the video would make a complete file look truncated.
    """
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    for key, value in stream.metadata.items():
        match = _TAG_DURATION.fullmatch(value.strip()) if key.lower() == "duration" else None
        if match:
            hours, minutes, seconds = match.groups()
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    attached = av.stream.Disposition.attached_pic
    others = [s for s in container.streams if s.type in ("audio", "video") and s is not stream]
    if container.duration is not None and all(s.type == "video" and s.disposition & attached for s in others):
        return container.duration / av.time_base
    return None


def _measured_duration(table: _FrameTable, time_base: Fraction | None, fps: float | None) -> float | None:
    """The video's duration in seconds from its own timestamps (first to last frame, plus one frame)."""
    frame = 1 / fps if fps else 0.0
    if table.pts is not None and time_base is not None:
        return float((table.pts[-1] - table.pts[0]) * time_base) + frame
    return table.num_frames * frame if fps else None


def _needed(select: FrameSelector | None, num_frames: int, name: str) -> list[int]:
    """Sorted unique indices from ``select``, checked against the frame count."""
    if select is None:
        return list(range(num_frames))
    raw = select(num_frames)
    if isinstance(raw, torch.Tensor):
        raw = raw.flatten().tolist()
    needed = sorted({int(i) for i in raw})
    if needed and (needed[0] < 0 or needed[-1] >= num_frames):
        bad = needed[0] if needed[0] < 0 else needed[-1]
        raise ValueError(f"{name}: frame {bad} was selected but the video has {num_frames} frames")
    return needed


HDR_TRANSFERS = frozenset({16, 18})
"""FFmpeg transfer characteristics reported as HDR: 16 = SMPTE ST 2084 (PQ), 18 = ARIB STD-B67 (HLG)."""

MAX_DECODER_THREADS = 64
"""Most decoder threads :func:`read_video` accepts (FFmpeg's own limit for most decoders is lower)."""

TS_PACKET_SIZES = (188, 192, 204)
"""MPEG-TS packet sizes (plain, M2TS with a timestamp prefix, DVB with Reed-Solomon bytes): a transport
stream whose size is a multiple of none of them was cut off in the middle of a packet."""

TAIL_SLACK = 8
"""At most this many frames at the end of a video may fail to decode before the file counts as damaged
rather than truncated (a cut-off last packet also spoils the B-frames that depend on it)."""


class _Truncated(Exception):
    """The last frames of the video cannot be decoded: read it again as a video of ``frames`` frames."""

    def __init__(self, frames: int) -> None:
        super().__init__(frames)
        self.frames = frames


def _decode_any(
    p: Path | RawVideo,
    name: str,
    table: _FrameTable,
    info: dict[str, object],
    needed: list[int],
    threads: int,
    limits: _Limits,
    rgb: _Rgb,
    *,
    device: torch.device | None = None,
    shorten: bool = True,
) -> DecodedVideo:
    """:func:`_decode` with seeking, falling back to no seeking, then to counting frames in decode order.

    The frames stay on the CPU (``device`` is the torchcodec decoder's argument; it is not used here).

    The selected frames at the stream's declared size must fit the pixel budget before anything is decoded
    (twice their pixels when they will be kept at 16 bits).
    """
    width, height = int(info["width"] or 0), int(info["height"] or 0)  # type: ignore[call-overload]
    deep = rgb.keep_bit_depth and is_high_bit_depth(info.get("pix_fmt"))  # type: ignore[arg-type]
    what = f"{len(needed)} frames of {width}x{height}" + (" at 16 bits" if deep else "")
    limits.check_pixels(name, len(needed) * width * height * (2 if deep else 1), what)
    args = (p, name, table, info, needed, threads, limits, rgb)
    try:
        try:
            return _decode(*args, seek=table.pts is not None, shorten=shorten)
        except _SeekFailed:
            return _decode(*args, seek=False, shorten=shorten)
    except _NoPts:
        counted = _FrameTable(table.num_frames, None, demux_error=table.demux_error, packets=table.packets)
        return _decode(p, name, counted, info, needed, threads, limits, rgb, seek=False, shorten=shorten)


def _decode(
    p: Path | RawVideo,
    name: str,
    table: _FrameTable,
    info: dict[str, object],
    needed: list[int],
    threads: int,
    limits: _Limits,
    rgb_options: _Rgb,
    *,
    seek: bool,
    shorten: bool,
) -> DecodedVideo:
    """One decoding pass (see the module docstring).

    Every decoded frame is checked against the pixel budget (a stream may grow past its declared size), and
    the time limit is checked before every packet. Whether frames are kept at 16 bits is decided on the first
    decoded frame, for the whole video.

    Raises:
        _SeekFailed: After a seek, timestamps did not match the table.
        _NoPts: Decoded frames carry no timestamps the table knows.
        _Truncated: Only the last few frames are missing and ``shorten`` allows reading a shorter video.
        ValueError: Needed frames could not be decoded.
    """
    container, stream = _open(p, name)
    try:
        ctx = stream.codec_context
        ctx.thread_type = "AUTO"
        ctx.thread_count = threads
    except BaseException:
        container.close()
        raise
    want = set(needed)
    slot_of = {index: slot for slot, index in enumerate(needed)}
    rgb: set[int] = set()  # the needed frames in `frames` so far
    frames: torch.Tensor | None = None  # (N, 3, H, W), filled in as the needed frames come out of the decoder
    held = 0  # pixels in frames, counted twice at 16 bits
    first: av.VideoFrame | None = None
    convert: dict[str, object] = {}  # to_ndarray's arguments, set on the first frame
    weight = 1  # budget pixels per pixel held
    decoded = matched = 0  # frames out of the decoder; those whose pts the table knows
    clean: set[int] = set()  # indices of the frames decoded without errors
    count = 0  # frame counter in decoding order (tables without pts)
    pos = -1  # decoding-order position of the last packet read
    seeks = 0
    last_key = -1  # each keyframe is sought at most once, forwards only
    floor = 0  # after a seek to keyframe k, frames before k (leading frames) are ignored
    target_after_seek: int | None = None  # after a seek, the first frame must not lie past this index
    errors: list[str] = []
    by_pts = table.pts is not None
    keys = table.key_index if seek else []

    try:
        packets = container.demux(stream)
        while first is None or len(rgb) < len(want):
            if keys and first is not None:
                # seek when the next needed frame lies past a keyframe well ahead of the decoder
                target = next(i for i in needed if i not in rgb)
                k = bisect.bisect_right(keys, target) - 1
                if k > last_key and table.key_pos[k] > pos + SEEK_MIN_GAP:
                    packets = _seek(container, stream, table, k)
                    pos, floor, target_after_seek, last_key = table.key_pos[k] - 1, keys[k], target, k
                    seeks += 1
            limits.check_time(name)
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as err:  # damaged container: judge what was decoded so far
                _raise_if_transient(err, name)
                errors.append(_describe(err))
                break
            if by_pts and packet.pts in table.decode_pos:
                pos = table.decode_pos[packet.pts]
            elif packet.size:
                pos += 1
            try:
                out = packet.decode()
            except av.error.FFmpegError as err:
                _raise_if_transient(err, name)
                errors.append(_describe(err))
                continue
            for frame in out:
                size = frame.width * frame.height
                limits.check_pixels(name, size, f"a decoded frame of {frame.width}x{frame.height}")
                if first is None:
                    first = frame
                    deep = rgb_options.keep_bit_depth and is_high_bit_depth(frame.format.name)
                    weight = 2 if deep else 1
                    matrix, range_ = rgb_options.color_matrix, rgb_options.color_range
                    convert = rgb_conversion(frame, deep=deep, color_matrix=matrix, color_range=range_)
                decoded += 1
                if by_pts:
                    if frame.pts is None:
                        raise _NoPts
                    if frame.pts not in table.index_of:
                        if table.cut and table.pts and frame.pts > table.pts[-1]:
                            continue  # past the end of a truncated video
                        if seeks:
                            raise _SeekFailed
                        continue  # a frame the table does not count (before the first keyframe)
                    index = table.index_of[frame.pts]
                    matched += 1
                else:
                    index = count
                    count += 1
                if target_after_seek is not None:
                    if index > target_after_seek:
                        raise _SeekFailed  # the seek landed past a needed frame
                    target_after_seek = None
                if index < floor:
                    continue
                if frame.is_corrupt:
                    errors.append(f"frame {index} decoded with errors")
                    continue
                clean.add(index)
                if index in want and index not in rgb:
                    what = f"{len(rgb) + 1} decoded frames (the last {frame.width}x{frame.height})"
                    if weight > 1:
                        what += " at 16 bits"
                    limits.check_pixels(name, held + size * weight, what)
                    frames = _put(frames, len(needed), slot_of[index], frame.to_ndarray(**convert))
                    rgb.add(index)
                    held += size * weight
    finally:
        container.close()

    if by_pts and decoded and not matched:
        raise _NoPts
    if first is None:
        reason = f" ({errors[0]})" if errors else ""
        raise ValueError(f"{name}: no frame of the video could be decoded{reason}; the file is corrupt")
    missing = [i for i in needed if i not in rgb]
    if missing and seeks:
        # A seek can land where the needed frames do not come out (past the keyframe, or on a keyframe the
        # decoder does not restart at): only a pass without seeking tells a damaged file from a bad seek.
        raise _SeekFailed
    if missing:
        # Without seeking, every frame of the file has been through the decoder. A cut-off file fails in its
        # last frames, not necessarily in presentation order (a cut B-frame spoils an earlier-shown frame
        # than the P-frame after it): the video ends before the first frame that failed among the last few.
        tail = max(table.num_frames - TAIL_SLACK, 0)
        cut = next((i for i in range(tail, table.num_frames) if i not in clean), table.num_frames)
        if shorten and missing[0] >= tail and cut > 0:
            raise _Truncated(cut)
        shown = ", ".join(str(i) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
        reason = f" ({errors[0]})" if errors else ""
        raise ValueError(
            f"{name}: {len(missing)} of the {len(needed)} frames needed could not be decoded "
            f"(frame {shown} of {table.num_frames}){reason}; the file is damaged"
        )

    if frames is None:
        frames = torch.empty((0, 3, first.height, first.width), dtype=torch.uint8)
    frames, orient = _upright(frames, first)
    trc = first.color_trc
    metadata = {
        **info,
        **orient,
        "pix_fmt": first.format.name,
        "rgb_bits": 16 if weight > 1 else 8,
        "colorspace": int(first.colorspace),
        "color_range": int(first.color_range),
        "color_trc": int(trc) if trc is not None else None,
        "hdr": trc in HDR_TRANSFERS,
        "truncated": bool(info.get("truncated")) or table.demux_error is not None,
        "still_image": table.num_frames == 1 and _is_image_format(str(info["container"])),
        "timestamps": "pts" if by_pts else "decode-order",
        "seeks": seeks,
        "frames_decoded": decoded,
        "decoder": "pyav",
    }
    return DecodedVideo(
        frames=frames,
        indices=torch.tensor(needed, dtype=torch.long),
        num_frames=table.num_frames,
        path=name,
        fps=info.get("fps"),  # type: ignore[arg-type]
        metadata=metadata,
    )


def _seek(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, table: _FrameTable, k: int
) -> Iterator[av.Packet]:
    """Seek to the ``k``-th keyframe and return the packets from there on.

    The keyframe's pts is tried first (exact for MP4, MOV and Matroska), then its dts: demuxers that search
    by decoding time (MPEG-TS) land past the keyframe when given its pts, and decoding would then start
    without it.

    Raises:
        _SeekFailed: Every try landed past the keyframe, or the demuxer cannot seek.
    """
    limit = table.key_pos[k]
    for target in dict.fromkeys((table.key_pts[k], table.key_seek[k])):
        try:
            container.seek(target, stream=stream, backward=True)
            packets = container.demux(stream)
            head: list[av.Packet] = []
            for packet in packets:
                head.append(packet)
                if packet.size:
                    break
        except av.error.FFmpegError:
            raise _SeekFailed from None
        landed = table.decode_pos.get(head[-1].pts) if head else None  # None: end of file or unknown pts
        if landed is None or landed <= limit:
            return itertools.chain(head, packets)
    raise _SeekFailed


def _is_image_format(name: str) -> bool:
    """Whether FFmpeg read the file with an image demuxer (``png_pipe``, ``jpeg_pipe``, ``image2``, ...)."""
    return name in ("image2", "image2pipe") or name.endswith("_pipe")


def _short(info: dict[str, object], table: _FrameTable) -> bool:
    """Whether the file holds clearly fewer frames than its container announces (count or duration).

    ``info["duration"]`` must be the declared duration (:func:`_declared_duration`) or ``None``.
    """
    declared, duration, fps = info.get("declared_frames"), info.get("duration"), info.get("fps")
    if isinstance(declared, int):
        return declared > table.packets
    if isinstance(duration, float) and isinstance(fps, float):
        return table.num_frames < 0.75 * duration * fps - 2
    return False


def _put(frames: torch.Tensor | None, count: int, slot: int, image: np.ndarray) -> torch.Tensor:
    """Copies one decoded ``(H, W, 3)`` RGB image into row ``slot`` of the ``(count, 3, H, W)`` frames.

    The frames are allocated with the first image (uint8, or uint16 for 16-bit RGB, at its size) and each image
    is copied in as it comes out of the decoder, so the decoded frames are held once: collected first and
    stacked afterwards they were held twice at the moment of stacking (with the CLI's allocator tuning the
    freed images stay in the heap: 1.6 GB instead of 0.8 for the 135 frames a 10-s 1080p file needs) *(ours)*.
    An image of another size (the resolution changed mid-stream) is scaled to the frames' size.

    Returns:
        The frames.
    """
    img = torch.from_numpy(image).permute(2, 0, 1)
    if frames is None:
        frames = torch.empty((count, *img.shape), dtype=img.dtype)
    if img.shape[1:] != frames.shape[2:]:
        top = 65535 if frames.dtype == torch.uint16 else 255
        img = torch.nn.functional.interpolate(
            img[None].float(), size=tuple(frames.shape[2:]), mode="bilinear", align_corners=False
        )
        img = img[0].round().clamp(0, top)
    frames[slot].copy_(img)
    return frames


def _display_matrix(frame: av.VideoFrame) -> np.ndarray | None:
    """The frame's 3x3 display matrix (FFmpeg layout, 9 int32), if it has one."""
    # a standalone container: frame.side_data caches one that points back at the frame, a reference cycle that
    # kept the decoder's buffers and threads alive after every read until the cyclic garbage collector ran
    try:
        data = SideDataContainer(frame)["DISPLAYMATRIX"]
    except (KeyError, ValueError):
        return None
    raw = np.frombuffer(bytes(data), dtype=np.int32)
    return raw if raw.size == 9 else None


def _upright(frames: torch.Tensor, first: av.VideoFrame) -> tuple[torch.Tensor, dict[str, object]]:
    """Apply the display matrix the way ``ffmpeg``'s autorotation does (fftools ``get_rotation`` + filters).

    ``frame.rotation`` is the counter-clockwise angle of the matrix; ffmpeg turns it into a clockwise
    ``theta`` and inserts ``transpose`` (90 / 270 degrees, with a flip when the matrix mirrors) or
    ``hflip`` / ``vflip`` (180 and 0 degrees). Angles that are not multiples of 90 degrees are left as is.
    """
    matrix = _display_matrix(first)
    if matrix is None:
        return frames, {"rotation": 0, "mirrored": False}
    rotation = int(first.rotation)
    orient: dict[str, object] = {
        "rotation": rotation,
        "mirrored": bool(int(matrix[0]) * int(matrix[4]) - int(matrix[1]) * int(matrix[3]) < 0),
    }
    theta = -float(rotation)
    theta -= 360 * float(np.floor(theta / 360 + 0.9 / 360))
    hw = (-2, -1)
    if abs(theta - 90) < 1:
        # transpose=cclock_flip (a plain transpose) or transpose=clock
        frames = frames.transpose(-2, -1) if matrix[3] > 0 else torch.rot90(frames, -1, hw)
    elif abs(theta - 270) < 1:
        # transpose=clock_flip (clockwise, then upside down) or transpose=cclock
        frames = torch.rot90(frames, -1, hw).flip(-2) if matrix[3] < 0 else torch.rot90(frames, 1, hw)
    elif abs(theta - 180) < 1:
        if matrix[0] < 0:
            frames = frames.flip(-1)
        if matrix[4] < 0:
            frames = frames.flip(-2)
    elif abs(theta) < 1 and matrix[4] < 0:
        frames = frames.flip(-2)
    return frames.contiguous(), orient


_PYAV: tuple[Callable[[torch.device], torch.device], DecodePass] = (lambda device: device, _decode_any)
"""The PyAV decoder: no device check (its frames are on the CPU), :func:`_decode_any`."""
