"""Checking and normalising what users pass to a model.

Every problem is reported as a ``TypeError`` or ``ValueError`` that says what was wrong and what was
expected, before any tensor reaches a network layer.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch

from .decoded import DecodedVideo

MIN_SIDE = 16
"""Smallest frame side (pixels) a model accepts; smaller frames carry no usable quality signal."""

MAX_ASPECT_RATIO = 256
"""Most elongated frames (long side / short side) a model accepts. The views scale the short side up to
224-256 px, so the long side grows with the ratio: at 256:1 one such frame is 16.8 M pixels (200 MB as
float32), the most the views process at once (:data:`~dvlta_metric.views.fragments.UPSAMPLE_CHUNK_PIXELS`)."""

FLOAT_DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
"""Float dtypes a video may have (values in [0, 1]); float8 and other formats are refused."""

_LAYOUT_HINT = "expected RGB frames as (T, 3, H, W) for one video or (B, T, 3, H, W) for a batch"


def check_video(video: torch.Tensor, *, name: str = "video") -> None:
    """Validate one video tensor ``(T, 3, H, W)`` (uint8 in [0, 255], uint16 in [0, 65535] or float in [0, 1]).

    Args:
        video: The tensor.
        name: How the video is named in error messages (e.g. ``"video 3 of the batch"``).

    Raises:
        TypeError: Not a tensor, not a dense (strided) tensor, or a dtype other than uint8, uint16 and the
            :data:`FLOAT_DTYPES` (e.g. float8, integers, bool, complex).
        ValueError: A meta tensor (no data); wrong rank, not 3 channels, empty, frames too small or more
            elongated than :data:`MAX_ASPECT_RATIO`, NaN/inf, floats outside [0, 1].
    """
    if not isinstance(video, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(video).__name__}")
    if video.dim() != 4:
        raise ValueError(f"{name}: got a {video.dim()}-D tensor of shape {tuple(video.shape)}; {_LAYOUT_HINT}")
    t, c, h, w = video.shape
    if c != 3:
        hint = ""
        if video.shape[-1] == 3:
            hint = " (it looks channels-last: use video.permute(0, 3, 1, 2))"
        raise ValueError(
            f"{name}: expected 3 colour channels in dim 1 of (T, 3, H, W), got shape {tuple(video.shape)}{hint}"
        )
    if t == 0:
        raise ValueError(f"{name}: the video is empty (0 frames)")
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(f"{name}: frames of {h}x{w} are too small; both sides must be at least {MIN_SIDE} px")
    if max(h, w) > MAX_ASPECT_RATIO * min(h, w):
        raise ValueError(
            f"{name}: frames of {h}x{w} are too elongated (aspect ratio {max(h, w) / min(h, w):.0f}:1); the long "
            f"side may be at most {MAX_ASPECT_RATIO} times the short side (the views scale the short side up to "
            f"224-256 px, which would make each frame {256 * max(h, w) // min(h, w)} px long)"
        )
    if video.layout != torch.strided:
        raise TypeError(f"{name}: a {video.layout} tensor; expected a dense (strided) tensor, e.g. video.to_dense()")
    if video.is_meta:
        raise ValueError(
            f"{name}: a tensor on the meta device holds no pixel values; expected a tensor on the CPU or a GPU"
        )
    if video.dtype in (torch.uint8, torch.uint16):  # every value is in range
        return
    if video.dtype not in FLOAT_DTYPES:
        hint = " (convert it, e.g. with video.float())" if video.is_floating_point() else ""
        raise TypeError(
            f"{name}: unsupported dtype {video.dtype}; expected uint8 in [0, 255], uint16 in [0, 65535] (16-bit "
            "RGB) or float16, bfloat16, float32 "
            f"or float64 in [0, 1]{hint}"
        )
    lo, hi = _value_range(video.detach())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name}: contains {_count_non_finite(video.detach())} NaN or infinite value(s)")
    if lo < 0.0 or hi > 1.0:
        if hi > 2.0 and hi <= 255.0:
            hint = " (values look like 0-255: divide by 255 or pass a uint8 tensor)"
        elif lo >= -1.0 and hi <= 2.0:  # a decoder or network output slightly outside the range
            hint = " (clamp it with video.clamp(0, 1), which keeps gradients inside the range)"
        else:
            hint = ""
        raise ValueError(f"{name}: float values must lie in [0, 1], got min {lo:.6g} and max {hi:.6g}{hint}")


def _value_range(video: torch.Tensor) -> tuple[float, float]:
    """``(min, max)`` of a float video, NaN if it holds a NaN, without full-size temporaries.

    ``torch.isfinite(video).all()`` and friends allocated about 1.7x the input; ``torch.aminmax`` allocates
    nothing on a contiguous tensor (NaN propagates into both results, and an infinity is one of them), but
    copies a non-contiguous one: such a video is reduced one frame at a time.
    """
    parts = [video] if video.is_contiguous() else list(video.unbind(0))
    lo, hi = math.inf, -math.inf
    for part in parts:
        part_lo, part_hi = (float(v) for v in torch.aminmax(part))
        if math.isnan(part_lo) or math.isnan(part_hi):
            return math.nan, math.nan
        lo, hi = min(lo, part_lo), max(hi, part_hi)
    return lo, hi


def _count_non_finite(video: torch.Tensor, chunk: int = 1 << 22) -> int:
    """How many values of ``video`` are NaN or infinite, counted a chunk of frames at a time (bounded memory)."""
    frames = video.reshape(video.shape[0], -1)
    step = max(1, chunk // max(1, frames.shape[1]))
    return sum(int((~torch.isfinite(frames[i : i + step])).sum()) for i in range(0, frames.shape[0], step))


def split_batch(x: object) -> list[torch.Tensor]:
    """Turn a model input into a list of per-video ``(T, 3, H, W)`` tensors, validating each.

    Args:
        x: ``(T, 3, H, W)``, ``(B, T, 3, H, W)`` or a list/tuple of ``(T, 3, H, W)`` tensors.

    Returns:
        The videos, in order.

    Raises:
        TypeError, ValueError: As :func:`check_video`, naming the offending video.
    """
    if isinstance(x, torch.Tensor):
        if x.dim() == 5:
            if x.shape[0] == 0:
                raise ValueError("the batch is empty (B = 0)")
            videos = list(x.unbind(0))
            for i, v in enumerate(videos):
                check_video(v, name=f"video {i} of the batch")
            return videos
        check_video(x)
        return [x]
    if isinstance(x, (list, tuple)):
        if len(x) == 0:
            raise ValueError("got an empty list of videos")
        for i, v in enumerate(x):
            check_video(v, name=f"video {i} of the list")
        return list(x)
    raise TypeError(f"expected a video tensor, a list of video tensors, or a file path; got {type(x).__name__}")


def load_videos(
    x: object, read: Callable[[str | os.PathLike], DecodedVideo]
) -> tuple[list[torch.Tensor | DecodedVideo], bool]:
    """Turn anything a model call accepts into a list of checked videos, and say whether it was one video.

    Args:
        x: ``(T, 3, H, W)``, ``(B, T, 3, H, W)``, a list of ``(T, 3, H, W)`` tensors, a file path, a
            :class:`~dvlta_metric.decoded.DecodedVideo`, or a list of paths and decoded videos.
        read: Decodes one file (a model's ``read``).

    Returns:
        ``(videos, single)``: the videos in order, and whether ``x`` was a single video (a 0-d result).

    Raises:
        TypeError, ValueError: As :func:`check_video` and :func:`split_batch`.
        FileNotFoundError: From ``read``, for a path that does not exist.
    """
    paths_or_decoded = (str, os.PathLike, DecodedVideo)
    if isinstance(x, paths_or_decoded):
        return [_checked(x, read)], True
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, paths_or_decoded) for v in x):
        return [_checked(v, read) for v in x], False
    single = isinstance(x, torch.Tensor) and x.dim() == 4
    return list(split_batch(x)), single


def _checked(item: str | os.PathLike | DecodedVideo, read: Callable[[str | os.PathLike], DecodedVideo]) -> DecodedVideo:
    decoded = item if isinstance(item, DecodedVideo) else read(item)
    name = (decoded.path or "decoded video") if isinstance(item, DecodedVideo) else str(item)
    check_video(decoded.frames, name=name)
    return decoded
