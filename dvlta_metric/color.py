"""How decoded YUV frames become RGB: the colour matrix and range, and the bit depth kept.

FFmpeg's swscale converts YUV to RGB with the matrix (BT.601, BT.709, BT.2020) and range (limited "tv",
16-235, or full "pc", 0-255) that the stream is tagged with. An **untagged** stream (common in raw ``.yuv``,
Y4M, and some encodes) is converted as BT.601, limited range: swscale's default, and what the reader did
before these options existed. ``color_matrix`` / ``color_range`` (ours) choose another for untagged streams
only: a stream's own tags always win, since they are the file's statement about itself (re-tag a
mis-tagged file with ``ffmpeg -bsf:v h264_metadata`` or ``-colorspace`` / ``-color_range``).

High bit depth (ours): frames of a source with more than 8 bits per sample are converted to 16-bit RGB
(``rgb48``) and kept as ``uint16`` (0-65535), so the model sees the extra bits; 8-bit sources are converted
to ``uint8`` RGB exactly as before. ``keep_bit_depth=False`` converts every source to 8 bits.
"""

from __future__ import annotations

import av
from av.video.reformatter import ColorRange, Colorspace

__all__ = [
    "COLOR_MATRICES",
    "COLOR_RANGES",
    "check_color_matrix",
    "check_color_range",
    "is_high_bit_depth",
    "rgb_conversion",
]

COLOR_MATRICES: dict[str, Colorspace] = {
    "bt601": Colorspace.ITU601,
    "bt709": Colorspace.ITU709,
    "bt2020": Colorspace.BT2020,
}
"""Colour matrices ``color_matrix`` accepts, and swscale's name for each (``bt2020`` is BT.2020 non-constant
luminance)."""

COLOR_RANGES: dict[str, ColorRange] = {"tv": ColorRange.MPEG, "pc": ColorRange.JPEG}
"""Colour ranges ``color_range`` accepts: ``"tv"`` limited (16-235 for 8 bits), ``"pc"`` full (0-255)."""

_UNSPECIFIED_SPACE = 2  # AVCOL_SPC_UNSPECIFIED
_UNSPECIFIED_RANGE = 0  # AVCOL_RANGE_UNSPECIFIED


def check_color_matrix(value: object) -> str | None:
    """``value`` if it is ``None`` or a name in :data:`COLOR_MATRICES`.

    Raises:
        ValueError: Any other value; the message lists the accepted names.
    """
    if value is None or (isinstance(value, str) and value in COLOR_MATRICES):
        return value
    names = ", ".join(COLOR_MATRICES)
    raise ValueError(f"color_matrix must be None (the default, bt601) or one of {names}, got {value!r}")


def check_color_range(value: object) -> str | None:
    """``value`` if it is ``None`` or a name in :data:`COLOR_RANGES`.

    Raises:
        ValueError: Any other value; the message lists the accepted names.
    """
    if value is None or (isinstance(value, str) and value in COLOR_RANGES):
        return value
    raise ValueError(f"color_range must be None (the default, tv) or one of {', '.join(COLOR_RANGES)}, got {value!r}")


def is_high_bit_depth(pix_fmt: str | None) -> bool:
    """Whether FFmpeg's pixel format ``pix_fmt`` holds more than 8 bits per sample (``False`` if unknown)."""
    if not pix_fmt:
        return False
    try:
        components = av.VideoFormat(pix_fmt).components
    except (ValueError, av.error.FFmpegError):
        return False
    return any(c.bits > 8 for c in components)


def rgb_conversion(
    frame: av.VideoFrame, *, deep: bool, color_matrix: str | None, color_range: str | None
) -> dict[str, object]:
    """Keyword arguments of ``frame.to_ndarray`` that make an RGB array of ``frame``.

    Args:
        frame: A decoded frame.
        deep: Convert to 16-bit RGB (``rgb48le``, a ``uint16`` array) instead of ``rgb24``.
        color_matrix: Matrix for a frame with no matrix tag (``None``: swscale's default, BT.601).
        color_range: Range for a frame with no range tag (``None``: swscale's default, tv).

    Returns:
        ``{"format": ...}`` plus ``src_colorspace`` / ``src_color_range`` where an option applies; with no
        option and an 8-bit frame, exactly ``{"format": "rgb24"}`` (the reader's conversion before these
        options, so 8-bit results are unchanged).
    """
    kwargs: dict[str, object] = {"format": "rgb48le" if deep else "rgb24"}
    if color_matrix is not None and int(frame.colorspace) == _UNSPECIFIED_SPACE:
        kwargs["src_colorspace"] = COLOR_MATRICES[color_matrix]
    if color_range is not None and int(frame.color_range) == _UNSPECIFIED_RANGE:
        kwargs["src_color_range"] = COLOR_RANGES[color_range]
    return kwargs
