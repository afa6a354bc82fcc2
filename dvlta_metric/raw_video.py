"""``RawVideo``: a raw ``.yuv`` file and the facts it does not hold itself (size, pixel format, frame rate).

A raw video file is frame after frame of bare samples, with no header: its width, height, pixel format and
frame rate must come from the user. :class:`RawVideo` carries them next to the path and is accepted
wherever a video path is (``model(raw)``, ``model.read(raw)``, :func:`~dvlta_metric.video_io.read_video`,
``score_files([raw, ...])``); ``os.fspath(raw)`` is the file's path. The reader opens it with FFmpeg's
``rawvideo`` demuxer (ours: the only way in, so the format needs no probing) after checking that the file
holds a whole number of frames of that size.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["DEFAULT_RAW_FPS", "MAX_RAW_SIDE", "RAW_PIXEL_FORMATS", "RawVideo", "parse_size"]

RAW_PIXEL_FORMATS: dict[str, tuple[int, int, int]] = {
    "gray": (1, 0, 0),
    "gray10le": (2, 0, 0),
    "gray12le": (2, 0, 0),
    "nv12": (1, 2, 2),
    "p010le": (2, 2, 2),
    "yuv420p": (1, 2, 2),
    "yuv422p": (1, 2, 1),
    "yuv444p": (1, 1, 1),
    "yuv420p10le": (2, 2, 2),
    "yuv422p10le": (2, 2, 1),
    "yuv444p10le": (2, 1, 1),
    "yuv420p12le": (2, 2, 2),
    "yuv422p12le": (2, 2, 1),
    "yuv444p12le": (2, 1, 1),
}
"""Pixel formats (FFmpeg's names) a :class:`RawVideo` may have, each as ``(bytes per sample, horizontal chroma
subsampling, vertical chroma subsampling)``; ``0`` subsampling means no chroma planes (grey). ``nv12`` and
``p010le`` hold the two chroma planes interleaved, which takes the same bytes."""

MAX_RAW_SIDE = 16384
"""Largest width or height of a :class:`RawVideo` (FFmpeg's own decoders stop near this size)."""

DEFAULT_RAW_FPS = 25.0
"""Frame rate of a :class:`RawVideo` when none is given (FFmpeg's ``rawvideo`` default)."""

_SIZE = re.compile(r"\s*(\d{1,9})\s*[xX]\s*(\d{1,9})\s*")


def parse_size(text: str) -> tuple[int, int]:
    """``"1920x1080"`` -> ``(1920, 1080)`` (width, height).

    Args:
        text: ``WIDTHxHEIGHT`` in pixels.

    Returns:
        ``(width, height)``, each checked to lie in ``[1, MAX_RAW_SIDE]``.

    Raises:
        ValueError: ``text`` is not of the form ``WIDTHxHEIGHT`` or a side is out of range.
    """
    match = _SIZE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"a raw video size must be WIDTHxHEIGHT in pixels, such as 1920x1080, got {text!r}")
    width, height = int(match.group(1)), int(match.group(2))
    _check_side("width", width)
    _check_side("height", height)
    return width, height


def _check_side(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"RawVideo {name} must be an int (pixels), got {type(value).__name__} {value!r}")
    if not 1 <= value <= MAX_RAW_SIDE:
        raise ValueError(f"RawVideo {name} must be from 1 to {MAX_RAW_SIDE} pixels, got {value}")
    return value


@dataclass(frozen=True)
class RawVideo:
    """A raw ``.yuv`` video file and the facts needed to read it.

    Args:
        path: The file: frames of ``width`` x ``height`` samples in ``pix_fmt``, one after the other, with no
            header (what ``ffmpeg -i in.mp4 -f rawvideo -pix_fmt yuv420p out.yuv`` writes).
        width: Frame width in pixels, 1 to :data:`MAX_RAW_SIDE`.
        height: Frame height in pixels, 1 to :data:`MAX_RAW_SIDE`.
        pix_fmt: One of :data:`RAW_PIXEL_FORMATS` (default ``"yuv420p"``, FFmpeg's).
        fps: Frames per second (default :data:`DEFAULT_RAW_FPS`, FFmpeg's); only reported in the result's
            ``fps``, since frame sampling counts frames.

    Raises:
        TypeError: ``path`` is not a ``str`` / ``os.PathLike``, or a size or ``fps`` is not a number.
        ValueError: A size out of range, an unknown ``pix_fmt`` (the message lists the supported ones), or an
            ``fps`` that is not a positive finite number.
    """

    path: str | os.PathLike[str]
    width: int
    height: int
    pix_fmt: str = "yuv420p"
    fps: float = DEFAULT_RAW_FPS

    def __post_init__(self) -> None:
        if not isinstance(self.path, (str, os.PathLike)):
            raise TypeError(f"RawVideo path must be a str or os.PathLike, got {type(self.path).__name__}")
        _check_side("width", self.width)
        _check_side("height", self.height)
        if self.pix_fmt not in RAW_PIXEL_FORMATS:
            raise ValueError(
                f"RawVideo pix_fmt {self.pix_fmt!r} is not supported; expected one of {', '.join(RAW_PIXEL_FORMATS)}"
            )
        fps = self.fps
        if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)):
            raise TypeError(f"RawVideo fps must be a number, got {type(fps).__name__} {fps!r}")
        if not (math.isfinite(fps) and 0 < fps <= 1000):
            raise ValueError(f"RawVideo fps must be a number above 0 and at most 1000, got {fps!r}")

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return os.fspath(self.path)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one frame: the luma plane plus both chroma planes at their subsampled size."""
        sample, sx, sy = RAW_PIXEL_FORMATS[self.pix_fmt]
        luma = self.width * self.height
        chroma = 0 if sx == 0 else 2 * (-(-self.width // sx)) * (-(-self.height // sy))
        return sample * (luma + chroma)

    def ffmpeg_options(self) -> dict[str, str]:
        """The ``rawvideo`` demuxer's options: ``video_size``, ``pixel_format``, ``framerate``."""
        rate = Fraction(self.fps).limit_denominator(1001 * 1000)
        return {
            "video_size": f"{self.width}x{self.height}",
            "pixel_format": self.pix_fmt,
            "framerate": f"{rate.numerator}/{rate.denominator}",
        }
