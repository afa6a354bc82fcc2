"""Reference implementations that the tests compare the library's faster operators with.

They are written the way the official code computes each operator, not the way the library does, and are
not part of the installed package.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def calibrated_kernel_conv(
    x: Tensor,
    alpha: Tensor,
    weight: Tensor,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    bias: Tensor | None = None,
) -> Tensor:
    """Temporally adaptive convolution computed with explicitly calibrated kernels (official TAdaConv).

    For every sample ``b`` and frame ``t`` the kernel ``W_{b,t} = alpha[b, :, t] * W`` (scaled along
    ``C_in``) is materialised, and all ``B * T`` frames are convolved in one grouped ``conv2d`` with
    ``groups = B * T``, as ``tadaconv/models/module_zoo/ops/tadaconv.py`` of alibaba-mmai-research/TAdaConv
    does. :class:`~dvlta_metric.branches.tadaconv.TAdaConv2d` computes the same operator as
    ``conv(alpha * x, W)``.

    Args:
        x: Input feature, shape ``(B, C_in, T, H, W)``.
        alpha: Calibration factors, shape ``(B, C_in, T, 1, 1)``.
        weight: Base kernel, shape ``(C_out, C_in, kh, kw)`` or ``(1, 1, C_out, C_in, kh, kw)`` (the
            :class:`~dvlta_metric.branches.tadaconv.TAdaConv2d` layout).
        stride: Spatial stride.
        padding: Spatial zero padding.
        bias: Optional bias of shape ``(C_out,)``.

    Returns:
        Output feature of shape ``(B, C_out, T, H', W')``.

    Raises:
        ValueError: If the shapes of ``x``, ``alpha`` and ``weight`` disagree.
    """
    base = weight.reshape(weight.shape[-4:]) if weight.dim() == 6 else weight
    if base.dim() != 4:
        raise ValueError(f"weight must be (C_out, C_in, kh, kw) or (1, 1, C_out, C_in, kh, kw); got {weight.shape}")
    c_out, c_in, kh, kw = base.shape
    if x.dim() != 5 or x.shape[1] != c_in:
        raise ValueError(f"x must have shape (B, {c_in}, T, H, W); got {tuple(x.shape)}")
    b, _, t, h, w = x.shape
    if tuple(alpha.shape) != (b, c_in, t, 1, 1):
        raise ValueError(f"alpha must have shape {(b, c_in, t, 1, 1)}; got {tuple(alpha.shape)}")
    frames = x.transpose(1, 2).reshape(1, b * t * c_in, h, w)
    scale = alpha.transpose(1, 2).unsqueeze(2)  # (B, C_in, T, 1, 1) -> (B, T, 1, C_in, 1, 1): one row per (b, t)
    kernels = (scale * base).reshape(b * t * c_out, c_in, kh, kw)
    full_bias = None if bias is None else bias.repeat(b * t)
    out = F.conv2d(frames, kernels, full_bias, stride=stride, padding=padding, groups=b * t)
    return out.reshape(b, t, c_out, out.shape[-2], out.shape[-1]).transpose(1, 2)
