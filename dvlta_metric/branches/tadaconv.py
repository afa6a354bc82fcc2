"""Temporally adaptive 2-D convolution (TAdaConv) and its routing function.

This module implements the two building blocks of TAdaConv (Huang et al.,
"TAda! Temporally-Adaptive Convolutions for Video Understanding", ICLR 2022)
that the DVLTA-VQA Temporal Context Module (Yu et al. 2025, eqs. 5-7) uses for
its time-varying kernels ``W_t = alpha_t * W_b`` (eq. 6):

* :class:`RouteFunc` turns a video feature map into per-sample, per-frame,
  per-input-channel calibration factors ``alpha`` of shape ``(B, C_in, T, 1, 1)``.
* :class:`TAdaConv2d` applies a spatial convolution whose kernel for sample
  ``b`` and frame ``t`` is ``W_{b,t} = alpha[b, :, t] * W`` (calibration along
  the input-channel axis of the shared base kernel ``W``).

Because the calibration scales *input* channels, convolving with the
calibrated kernel equals convolving the channel-scaled input with the base
kernel: ``conv(x, alpha * W) == conv(alpha * x, W)`` (linearity).
:class:`TAdaConv2d` computes the cheaper right-hand side (one ordinary
``conv2d`` over ``B * T`` frames); the official implementation computes the
left-hand side (one grouped ``conv2d`` with ``groups = B * T``), which the
tests keep as their reference oracle.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import is_exporting

__all__ = ["RouteFunc", "TAdaConv2d"]

IntPair = int | tuple[int, int]


def _pair(value: IntPair) -> tuple[int, int]:
    """Return ``value`` as a 2-tuple of ints.

    Args:
        value: An int or a pair of ints.

    Returns:
        ``(value, value)`` for an int, else ``tuple(value)``.
    """
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (int(first), int(second))


def _check_video(x: Tensor, channels: int, name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` is a ``(B, channels, T, H, W)`` tensor.

    Args:
        x: Tensor to check.
        channels: Expected size of dimension 1.
        name: Name used in the error message.

    Raises:
        ValueError: If ``x`` is not 5-D or its channel count differs.
    """
    if x.dim() != 5 or x.shape[1] != channels:
        raise ValueError(f"{name} must have shape (B, {channels}, T, H, W); got {tuple(x.shape)}")


def _check_alpha(alpha: Tensor, x: Tensor) -> None:
    """Raise ``ValueError`` unless ``alpha`` has shape ``(B, C_in, T, 1, 1)`` for ``x``.

    Args:
        alpha: Calibration factors.
        x: Video feature of shape ``(B, C_in, T, H, W)``.

    Raises:
        ValueError: If the shapes do not match.
    """
    b, c, t = x.shape[:3]
    if alpha.dim() != 5 or tuple(alpha.shape) != (b, c, t, 1, 1):
        raise ValueError(f"alpha must have shape (B, C_in, T, 1, 1) = {(b, c, t, 1, 1)}; got {tuple(alpha.shape)}")


class RouteFunc(nn.Module):
    """TAdaConv routing function producing the calibration factors ``alpha_t`` of eq. 6.

    Given a feature ``x`` of shape ``(B, C, T, H, W)``::

        x_t   = AdaptiveAvgPool3d((None, 1, 1))(x)        # (B, C, T, 1, 1)
        g     = AdaptiveAvgPool3d(1)(x)                    # (B, C, 1, 1, 1)
        h     = ReLU(BN(conv_a(x_t + conv_g(g))))          # (B, C/r, T, 1, 1)
        alpha = conv_b(h) + 1                              # (B, C, T, 1, 1)

    ``conv_g`` is a 1x1x1 ``Conv3d`` (C -> C, with bias), ``conv_a`` a temporal
    ``Conv3d`` with kernel ``(k0, 1, 1)`` (C -> C/r, with bias) and ``conv_b`` a
    temporal ``Conv3d`` with kernel ``(k1, 1, 1)`` (C/r -> C, no bias). Both
    temporal convs pad ``k // 2`` frames, so any ``T >= 1`` works.

    Note:
        ``conv_g`` and ``conv_a`` are initialised as the official TAdaConv
        models initialise every ``Conv3d`` (its ``c2_msra_fill``: Kaiming normal
        weights, ``fan_out`` mode for ReLU, zero bias). ``conv_b.weight`` is
        **zero-initialised** so that ``alpha == 1`` at
        initialisation and the TAdaConv starts as a plain per-frame conv2d.
        ``conv_b`` carries ``skip_init = True`` (the official convention); any
        model-wide weight initialiser must skip it, or call
        :meth:`reset_parameters` afterwards to restore the zero init.

    Args:
        in_channels: Channel count ``C`` of the input feature (and of ``alpha``).
        reduction: Bottleneck ratio ``r``; the hidden width is ``C // r``.
        kernels: Temporal kernel sizes ``(k0, k1)`` of ``conv_a`` and ``conv_b``.
        bn_eps: Epsilon of the hidden BatchNorm.
        bn_momentum: Momentum of the hidden BatchNorm.

    Raises:
        ValueError: If ``in_channels // reduction < 1`` or a kernel is not a
            positive odd integer.
    """

    def __init__(
        self,
        in_channels: int,
        reduction: int = 4,
        kernels: tuple[int, int] = (3, 3),
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        hidden = in_channels // reduction
        if hidden < 1:
            raise ValueError(f"in_channels // reduction must be >= 1; got {in_channels} // {reduction}")
        k0, k1 = kernels
        if min(k0, k1) < 1 or k0 % 2 == 0 or k1 % 2 == 0:
            raise ValueError(f"route kernels must be positive odd integers; got {kernels}")
        self.in_channels = in_channels
        self.frame_pool = nn.AdaptiveAvgPool3d((None, 1, 1))
        self.global_pool = nn.AdaptiveAvgPool3d(1)
        self.conv_g = nn.Conv3d(in_channels, in_channels, kernel_size=1)
        self.conv_a = nn.Conv3d(in_channels, hidden, kernel_size=(k0, 1, 1), padding=(k0 // 2, 0, 0))
        self.bn = nn.BatchNorm3d(hidden, eps=bn_eps, momentum=bn_momentum)
        self.relu = nn.ReLU()
        self.conv_b = nn.Conv3d(
            hidden,
            in_channels,
            kernel_size=(k1, 1, 1),
            padding=(k1 // 2, 0, 0),
            bias=False,
        )
        self.conv_b.skip_init = True  # type: ignore[assignment]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """TAdaConv's initialisation: Kaiming normal (``fan_out``, ReLU) ``conv_g`` and ``conv_a`` with zero biases,
        and a zero ``conv_b.weight``, so that the routing function gives ``alpha == 1``."""
        for conv in (self.conv_g, self.conv_a):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.conv_b.weight)

    def forward(self, x: Tensor) -> Tensor:
        """Compute calibration factors for ``x``.

        Args:
            x: Feature of shape ``(B, C, T, H, W)``.

        Returns:
            ``alpha`` of shape ``(B, C, T, 1, 1)`` (all ones at initialisation).

        Raises:
            ValueError: If ``x`` is not ``(B, in_channels, T, H, W)``.
        """
        _check_video(x, self.in_channels)
        context = self.conv_g(self.global_pool(x))
        # the ONNX exporter has no adaptive 3-D pooling to (T, 1, 1): exported, the same mean over (H, W)
        frames = x.mean(dim=(3, 4), keepdim=True) if is_exporting() else self.frame_pool(x)
        hidden = self.relu(self.bn(self.conv_a(frames + context)))
        alpha: Tensor = self.conv_b(hidden) + 1.0
        return alpha


class TAdaConv2d(nn.Module):
    """Temporally adaptive 2-D convolution on video features (eq. 6).

    The frame-``t`` kernel of sample ``b`` is the shared base kernel ``W``
    (``W_b`` in the paper) calibrated along its input channels,
    ``W_{b,t} = alpha[b, :, t] * W``; the convolution is purely spatial
    (temporal kernel size 1).

    Implementation note:
        The official code materialises the ``B * T`` calibrated kernels and runs
        one grouped ``conv2d`` (the tests' reference oracle). Since the
        calibration scales input channels, ``conv(x, alpha * W) ==
        conv(alpha * x, W)`` exactly by linearity, so :meth:`forward` multiplies
        ``x`` by ``alpha``, folds ``T`` into the batch and runs ONE ordinary
        ``conv2d`` with the shared ``(C_out, C_in, kh, kw)`` kernel. This is the
        same operator computed in a cheaper order (equal up to float rounding).

    The ``weight`` parameter keeps the official layout
    ``(1, 1, C_out, C_in, kh, kw)`` and is initialised like ``nn.Conv2d``
    (``kaiming_uniform_`` with ``a = sqrt(5)`` on the ``(C_out, C_in, kh, kw)``
    view, i.e. bound ``1 / sqrt(C_in * kh * kw)``). The official code applies
    the same call to the 6-D tensor, whose fan-in PyTorch then computes as
    ``C_out * C_in * kh * kw`` (a ``sqrt(C_out)``-times smaller bound).

    Args:
        in_channels: Input channels ``C_in``.
        out_channels: Output channels ``C_out``.
        kernel_size: Spatial kernel size.
        stride: Spatial stride.
        padding: Spatial zero padding.
        bias: Whether to add a learnable per-output-channel bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair = 3,
        stride: IntPair = 1,
        padding: IntPair = 0,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.weight = nn.Parameter(torch.empty(1, 1, out_channels, in_channels, *self.kernel_size))
        self.bias: nn.Parameter | None
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise ``weight`` (and ``bias``) exactly as ``nn.Conv2d`` does."""
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def base_weight(self) -> Tensor:
        """The shared kernel ``W`` viewed as ``(C_out, C_in, kh, kw)``."""
        return self.weight.view(self.weight.shape[2:])

    def forward(self, x: Tensor, alpha: Tensor) -> Tensor:
        """Apply the calibrated convolution.

        Args:
            x: Feature of shape ``(B, C_in, T, H, W)``.
            alpha: Calibration factors of shape ``(B, C_in, T, 1, 1)``, usually
                produced by a :class:`RouteFunc` applied to ``x``.

        Returns:
            Feature of shape ``(B, C_out, T, H', W')``.

        Raises:
            ValueError: If ``x`` or ``alpha`` has the wrong shape.
        """
        _check_video(x, self.in_channels)
        _check_alpha(alpha, x)
        b, c, t, h, w = x.shape
        frames = (x * alpha).transpose(1, 2).reshape(b * t, c, h, w)
        out = F.conv2d(frames, self.base_weight, self.bias, self.stride, self.padding)
        out = out.reshape(b, t, self.out_channels, out.shape[-2], out.shape[-1]).transpose(1, 2)
        if is_exporting():
            # torch.export's batch norm on this transposed layout keeps it in the traced shapes but returns a
            # contiguous tensor when the exported program runs, and a later view of it then fails: hand the next
            # layers a contiguous tensor (the same values; eager calls keep the cheaper view)
            out = out.contiguous()
        return out

    def extra_repr(self) -> str:
        """Describe the layer's hyper-parameters."""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, "
            f"bias={self.bias is not None}"
        )
