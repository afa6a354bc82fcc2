"""Frame view (dorsal stream): ``T`` whole frames, short side resized to 256, centre-cropped to 224.

This is ViFi-CLIP's test pipeline. The same frames feed the Video-Based Temporal CLIP (as ``(T, 3, 224,
224)`` images) and the Temporal Context Module (as a ``(3, T, 224, 224)`` clip). When the resized frames
together would exceed :data:`RESIZE_CHUNK_PIXELS` (elongated frames), they are resized and cropped a few at
a time, with the same result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import FrameViewConfig
from .normalize import normalize, to_unit_float

RESIZE_CHUNK_PIXELS = 1 << 24
"""Most resized pixels (frames x height x width, about 200 MB of float32 RGB) :func:`frame_view` makes at
once; beyond it the frames are resized a few at a time. Ordinary frames stay far below it (8 frames of
16:9 at 455x256 are 0.9 M pixels), so their views are computed in one call, as before."""


def resized_size(height: int, width: int, short: int) -> tuple[int, int]:
    """The frame size :func:`resize_short_side` gives a ``height`` x ``width`` frame.

    Args:
        height: Frame height.
        width: Frame width.
        short: Target short side.

    Returns:
        ``(H', W')`` with ``min(H', W') == short`` and the aspect ratio kept, the long side rounded to the
        nearest pixel, halves up, as mmcv's ``rescale_size`` in ViFi-CLIP's pipeline rounds it
        (``int(x * scale + 0.5)``: 1001 px at scale 0.5 gives 501; torchvision's ``resize`` truncates, e.g. 312
        instead of 313 for 352x288).
    """
    if min(height, width) == short:
        return height, width
    if height <= width:
        return short, max(short, int(width * (short / height) + 0.5))
    return max(short, int(height * (short / width) + 0.5)), short


def resize_short_side(frames: torch.Tensor, short: int, antialias: bool = True) -> torch.Tensor:
    """Resize so that the short side is exactly ``short`` pixels, keeping the aspect ratio.

    Args:
        frames: ``(N, 3, H, W)`` float frames.
        short: Target short side.
        antialias: Antialias when downscaling.

    Returns:
        ``(N, 3, H', W')`` with ``min(H', W') == short``.
    """
    h, w = frames.shape[-2:]
    size = resized_size(h, w, short)
    if size == (h, w):
        return frames
    downscale = size[0] < h
    return F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=antialias and downscale)


def random_crop_offset(height: int, width: int, cfg: FrameViewConfig, generator: torch.Generator) -> tuple[int, int]:
    """A uniformly drawn top-left corner for the frame view's crop of a ``height`` x ``width`` frame *(ours)*.

    A loss view crops at a random place instead of the centre, so that over many calls every pixel position
    of the resized frame can be inside the crop.

    Args:
        height: Frame height before the resize.
        width: Frame width before the resize.
        cfg: Frame view settings.
        generator: The generator of the draw.

    Returns:
        ``(top, left)`` in the resized frame: each in ``[0, side - cfg.crop]``.
    """
    h, w = resized_size(height, width, cfg.resize)
    top = int(torch.randint(h - cfg.crop + 1, (1,), generator=generator))
    left = int(torch.randint(w - cfg.crop + 1, (1,), generator=generator))
    return top, left


def center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Centre crop frames to ``size`` x ``size``.

    Args:
        frames: ``(..., H, W)``, e.g. ``(N, C, H, W)``, with ``H, W >= size``.
        size: Side of the crop.

    Returns:
        ``(..., size, size)``, a view of ``frames``, starting at row ``(H - size) // 2`` and column
        ``(W - size) // 2`` (torchvision's ``center_crop`` rounds odd margins half to even instead: one
        pixel further for 455x256 frames).

    Raises:
        ValueError: ``H`` or ``W`` is smaller than ``size`` (resize first, e.g. with
            :func:`resize_short_side`), or ``size`` < 1.
    """
    if size < 1:
        raise ValueError(f"center_crop: size must be at least 1, got {size}")
    if frames.dim() < 2:
        raise ValueError(f"center_crop: expected frames (..., H, W), got shape {tuple(frames.shape)}")
    h, w = frames.shape[-2:]
    if h < size or w < size:
        raise ValueError(
            f"center_crop: frames of {h}x{w} are smaller than the {size}x{size} crop; "
            "both sides must be at least the crop size (resize the short side first)"
        )
    top, left = (h - size) // 2, (w - size) // 2
    return frames[..., top : top + size, left : left + size]


def frame_view(
    frames: torch.Tensor,
    cfg: FrameViewConfig,
    dtype: torch.dtype = torch.float32,
    *,
    crop_at: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Frame view of already temporally sampled frames.

    Args:
        frames: ``(T, 3, H, W)`` frames, uint8 in ``[0, 255]`` or float in ``[0, 1]`` (see
            :func:`~dvlta_metric.views.temporal.segment_centre_indices`).
        cfg: Frame view settings.
        dtype: Float dtype of the result.
        crop_at: ``(top, left)`` of the crop in the resized frames (:func:`random_crop_offset`); ``None``
            crops at the centre.

    Returns:
        ``(T, 3, crop, crop)`` normalised frames.

    Raises:
        ValueError: If ``crop_at`` puts the crop outside the resized frames.
    """
    h, w = resized_size(frames.shape[-2], frames.shape[-1], cfg.resize)
    if crop_at is not None and not (0 <= crop_at[0] <= h - cfg.crop and 0 <= crop_at[1] <= w - cfg.crop):
        raise ValueError(f"crop_at={crop_at} puts the {cfg.crop}x{cfg.crop} crop outside the resized {h}x{w} frames")
    step = max(1, RESIZE_CHUNK_PIXELS // (h * w))
    if frames.shape[0] <= step:
        return _frame_view(frames, cfg, dtype, crop_at)
    return torch.cat([_frame_view(frames[i : i + step], cfg, dtype, crop_at) for i in range(0, frames.shape[0], step)])


def _frame_view(
    frames: torch.Tensor, cfg: FrameViewConfig, dtype: torch.dtype, crop_at: tuple[int, int] | None
) -> torch.Tensor:
    """:func:`frame_view` of frames resized in one call: ``(T, 3, H, W)`` -> ``(T, 3, crop, crop)``."""
    x = resize_short_side(to_unit_float(frames, dtype), cfg.resize, cfg.antialias)
    if crop_at is None:
        x = center_crop(x, cfg.crop)
    else:
        top, left = crop_at
        x = x[..., top : top + cfg.crop, left : left + cfg.crop]
    return normalize(x, cfg.mean, cfg.std)
