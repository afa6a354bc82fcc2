"""Frame view (dorsal stream): ``T`` whole frames, short side resized to 256, centre-cropped to 224.

This is ViFi-CLIP's test pipeline. The same frames feed the Video-Based Temporal CLIP (as ``(T, 3, 224,
224)`` images) and the Temporal Context Module (as a ``(3, T, 224, 224)`` clip).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import FrameViewConfig
from .normalize import normalize, to_unit_float


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
    if min(h, w) == short:
        return frames
    if h <= w:
        size = (short, max(short, round(w * short / h)))
    else:
        size = (max(short, round(h * short / w)), short)
    downscale = size[0] < h
    return F.interpolate(
        frames, size=size, mode="bilinear", align_corners=False, antialias=antialias and downscale
    )


def center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Centre crop ``(N, C, H, W)`` to ``(N, C, size, size)`` (``H, W >= size``)."""
    h, w = frames.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return frames[..., top : top + size, left : left + size]


def frame_view(frames: torch.Tensor, cfg: FrameViewConfig, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Frame view of already temporally sampled frames.

    Args:
        frames: ``(T, 3, H, W)`` frames, uint8 in ``[0, 255]`` or float in ``[0, 1]`` (see
            :func:`~dvlta_metric.views.temporal.segment_centre_indices`).
        cfg: Frame view settings.
        dtype: Float dtype of the result.

    Returns:
        ``(T, 3, crop, crop)`` normalised frames.
    """
    x = resize_short_side(to_unit_float(frames, dtype), cfg.resize, cfg.antialias)
    x = center_crop(x, cfg.crop)
    return normalize(x, cfg.mean, cfg.std)
