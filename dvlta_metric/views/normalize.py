"""Conversion of frames to unit-range floats and per-channel normalisation of views."""

from __future__ import annotations

import torch


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` for ``(N, 3, H, W)`` frames in ``[0, 1]``."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device)[:, None, None]
    s = torch.tensor(std, dtype=x.dtype, device=x.device)[:, None, None]
    return (x - m) / s


def to_unit_float(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 frames in ``[0, 255]`` (``/ 255``) or uint16 frames in ``[0, 65535]`` (``/ 65535``, 16-bit RGB of a
    high-bit-depth source) -> ``dtype`` in ``[0, 1]``; float frames are cast (keeping autograd).

    Views gather the frames and patches they need *before* calling this, so an integer video is never
    converted to float as a whole.
    """
    if x.dtype == torch.uint8:
        return x.to(dtype) / 255.0
    if x.dtype == torch.uint16:
        return x.to(torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype).div(65535.0).to(dtype)
    return x.to(dtype)
