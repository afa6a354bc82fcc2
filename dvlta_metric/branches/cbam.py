"""Convolutional Block Attention Module (CBAM) for 5-D video features.

CBAM (Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018)
refines a feature map with a channel attention map and a spatial attention map.
Here it is adapted to video features of shape ``(B, C, T, H, W)`` for the
attention of the DVLTA-VQA Temporal Context Module (Yu et al. 2025, eq. 7):

* channel attention pools globally over ``(T, H, W)`` (one weight per channel
  and clip);
* spatial attention is computed per frame (one ``H x W`` map per frame).

Eq. 7 of DVLTA-VQA is printed with both maps computed from the aggregated feature,
``F_tcm = F_agg * M_c(F_agg) * M_s(F_agg)`` (``order="parallel"``, the default); CBAM itself computes the
spatial map from the channel-refined feature, ``F' = F * M_c(F)``, ``F'' = F' * M_s(F')``
(``order="sequential"``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["CBAM", "ChannelAttention", "SpatialAttention"]


def _check_video(x: Tensor, channels: int | None = None) -> None:
    """Raise ``ValueError`` unless ``x`` is a ``(B, C, T, H, W)`` tensor.

    Args:
        x: Tensor to check.
        channels: Expected ``C``, or ``None`` to accept any.

    Raises:
        ValueError: On a wrong rank or channel count.
    """
    if x.dim() != 5 or (channels is not None and x.shape[1] != channels):
        expected = "C" if channels is None else str(channels)
        raise ValueError(f"expected shape (B, {expected}, T, H, W); got {tuple(x.shape)}")


class ChannelAttention(nn.Module):
    """CBAM channel attention over a whole clip.

    ``M_c = sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))`` with pooling over
    ``(T, H, W)`` and a shared MLP ``C -> C/r -> C`` (ReLU in between).

    Args:
        channels: Channel count ``C``.
        reduction: MLP reduction ratio ``r``; the hidden width is ``C // r``.

    Raises:
        ValueError: If ``channels // reduction < 1``.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(f"channels // reduction must be >= 1; got {channels} // {reduction}")
        self.channels = channels
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(),
            nn.Linear(hidden, channels),
        )

    def attention(self, x: Tensor) -> Tensor:
        """Return the channel attention map.

        Args:
            x: Feature of shape ``(B, C, T, H, W)``.

        Returns:
            Weights in ``(0, 1)`` of shape ``(B, C, 1, 1, 1)``.
        """
        _check_video(x, self.channels)
        avg = x.mean(dim=(2, 3, 4))
        peak = x.amax(dim=(2, 3, 4))
        logits = self.mlp(avg) + self.mlp(peak)
        return torch.sigmoid(logits)[:, :, None, None, None]

    def forward(self, x: Tensor) -> Tensor:
        """Reweight channels.

        Args:
            x: Feature of shape ``(B, C, T, H, W)``.

        Returns:
            ``x * M_c(x)``, same shape as ``x``.
        """
        return x * self.attention(x)


class SpatialAttention(nn.Module):
    """CBAM spatial attention, computed independently for every frame.

    ``M_s = sigmoid(BN(conv_kxk([mean_c(x); max_c(x)])))`` where the channel
    mean and max (in that order) form a 2-channel map per frame and the
    ``k x k`` convolution (padding ``k // 2``, no bias) maps it to one channel.

    Args:
        kernel_size: Spatial kernel size ``k`` (odd; 7 in CBAM).

    Raises:
        ValueError: If ``kernel_size`` is not a positive odd integer.
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer; got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def attention(self, x: Tensor) -> Tensor:
        """Return the per-frame spatial attention map.

        Args:
            x: Feature of shape ``(B, C, T, H, W)``.

        Returns:
            Weights in ``(0, 1)`` of shape ``(B, 1, T, H, W)``.
        """
        _check_video(x)
        b, _, t, h, w = x.shape
        pooled = torch.stack((x.mean(dim=1), x.amax(dim=1)), dim=2)  # (B, T, 2, H, W)
        logits = self.bn(self.conv(pooled.reshape(b * t, 2, h, w)))
        return torch.sigmoid(logits).reshape(b, t, 1, h, w).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        """Reweight spatial positions of every frame.

        Args:
            x: Feature of shape ``(B, C, T, H, W)``.

        Returns:
            ``x * M_s(x)``, same shape as ``x``.
        """
        return x * self.attention(x)


class CBAM(nn.Module):
    """Channel attention and per-frame spatial attention (Woo et al. 2018; DVLTA-VQA eq. 7).

    Args:
        channels: Channel count ``C`` of the video feature.
        reduction: Channel-attention MLP reduction ratio (16 in CBAM).
        spatial_kernel: Spatial-attention kernel size (7 in CBAM).
        order: ``"parallel"``: both maps from the input, ``x * M_c(x) * M_s(x)`` (eq. 7 as printed);
            ``"sequential"``: CBAM's order, ``y * M_s(y)`` with ``y = x * M_c(x)``.

    Raises:
        ValueError: For an unknown ``order``.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        spatial_kernel: int = 7,
        order: Literal["parallel", "sequential"] = "parallel",
    ) -> None:
        super().__init__()
        if order not in ("parallel", "sequential"):
            raise ValueError(f"order must be 'parallel' or 'sequential', got {order!r}")
        self.order = order
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(spatial_kernel)

    def extra_repr(self) -> str:
        """Name the order of the two maps."""
        return f"order={self.order!r}"

    def forward(self, x: Tensor) -> Tensor:
        """Refine ``x``.

        Args:
            x: Feature of shape ``(B, C, T, H, W)``.

        Returns:
            Refined feature of the same shape.

        Raises:
            ValueError: If ``x`` is not ``(B, channels, T, H, W)``.
        """
        if self.order == "parallel":
            refined: Tensor = x * self.channel.attention(x) * self.spatial.attention(x)
        else:
            refined = self.spatial(self.channel(x))
        return refined
