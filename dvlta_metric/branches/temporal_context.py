"""Temporal Context Module (TCM) of DVLTA-VQA (Yu et al. 2025, eqs. 5-7).

The TCM refines inter-frame dependencies of ``T`` consecutive frames (the paper's
"continuous video frames"; ``FrameViewConfig.tcm_sampling``) and is trained
from scratch. For a clip ``V`` of shape ``(B, 3, T, H, W)`` (ImageNet-normalised,
``T = 8`` and ``H = W = 224`` by default):

1. eq. 5, ``F_ts = 3DCNN(V)``: a 3-D convolutional stem
   (:class:`VideoStem`) gives ``(B, 64, T, H/4, W/4)``.
2. eq. 6, ``F~ = (alpha_t * W_b) * F_ts``: two TAdaConv stages
   (:class:`TAdaStage`), each a stride-2
   :class:`~dvlta_metric.branches.tadaconv.TAdaConv2d` calibrated by its
   :class:`~dvlta_metric.branches.tadaconv.RouteFunc` and
   followed by the temporal aggregation of TAda2D (:class:`TemporalAggregation`)
   -> ``(B, 256, T, H/16, W/16)``.
3. eq. 7, ``F_tcm = F_agg * M_c(F_agg) * M_s(F_agg)``: channel attention and
   per-frame spatial attention, both from the aggregated feature as printed
   (or in CBAM's sequential order, ``attention="sequential"``); then a global
   average over ``(T, H, W)`` and a linear projection -> ``F_tcm`` of shape
   ``(B, 512)``.

The stem, the stage widths and strides, and the pooling and projection are
this project's choices; the paper names only "3D-CNN", TAdaConv and eq. 7.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Branch
from .cbam import CBAM
from .tadaconv import RouteFunc, TAdaConv2d

__all__ = [
    "TAdaStage",
    "TemporalAggregation",
    "TemporalAvgPool",
    "TemporalContextModule",
    "VideoStem",
]


class VideoStem(nn.Module):
    """3-D convolutional stem producing ``F_ts`` (eq. 5).

    ``Conv3d(k=(3,7,7), s=(1,2,2), p=(1,3,3), no bias) -> BN -> ReLU ->
    MaxPool3d(k=(1,3,3), s=(1,2,2), p=(0,1,1))``: keeps ``T``, divides ``H`` and
    ``W`` by 4 (224 -> 56).

    Args:
        in_channels: Input channels (3 for RGB).
        out_channels: Output channels ``C0``.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 64) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size=(3, 7, 7),
            stride=(1, 2, 2),
            padding=(1, 3, 3),
            bias=False,
        )
        self.bn = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Embed a clip.

        Args:
            x: Clip of shape ``(B, C_in, T, H, W)``.

        Returns:
            Feature of shape ``(B, C0, T, ceil(H/4), ceil(W/4))``.
        """
        out: Tensor = self.pool(self.relu(self.bn(self.conv(x))))
        return out


class TemporalAvgPool(nn.Module):
    """Zero-padded moving average over time: ``AvgPool3d((k,1,1), 1, (k//2,0,0))``.

    Numerically identical to ``nn.AvgPool3d(kernel_size=(k, 1, 1), stride=1,
    padding=(k // 2, 0, 0))`` (``count_include_pad=True``: the zero padding
    counts in the divisor), but it pads explicitly so that clips shorter than
    the window (e.g. ``T = 1``), which ``nn.AvgPool3d`` rejects, also work.

    Args:
        kernel: Temporal window ``k`` (odd).
    """

    def __init__(self, kernel: int = 3) -> None:
        super().__init__()
        self.kernel = kernel

    def forward(self, x: Tensor) -> Tensor:
        """Average each frame with its ``k // 2`` neighbours on either side.

        Args:
            x: Feature of shape ``(B, C, T, H, W)``.

        Returns:
            Feature of the same shape.
        """
        half = self.kernel // 2
        padded = F.pad(x, (0, 0, 0, 0, half, half))
        return F.avg_pool3d(padded, kernel_size=(self.kernel, 1, 1), stride=1)

    def extra_repr(self) -> str:
        """Describe the window."""
        return f"kernel={self.kernel}"


class TemporalAggregation(nn.Module):
    """Temporal aggregation after a TAdaConv (TAda2D "avgpool" scheme).

    ``ReLU(BN1(F) + BN2(AvgPool3d((k,1,1), stride 1, pad (k//2,0,0))(F)))``.

    Note:
        ``bn2``'s affine weight and bias are **zero-initialised**, so at
        initialisation the block equals ``ReLU(BN1(F))``. ``bn2`` carries
        ``skip_init = True``; a model-wide initialiser must skip it or call
        :meth:`reset_parameters` afterwards.

    Args:
        channels: Channel count ``C`` of ``F``.
        pool_kernel: Temporal pooling window ``k`` (odd; 3 by default).

    Raises:
        ValueError: If ``pool_kernel`` is not a positive odd integer.
    """

    def __init__(self, channels: int, pool_kernel: int = 3) -> None:
        super().__init__()
        if pool_kernel < 1 or pool_kernel % 2 == 0:
            raise ValueError(f"pool_kernel must be a positive odd integer; got {pool_kernel}")
        self.bn1 = nn.BatchNorm3d(channels)
        self.pool = TemporalAvgPool(pool_kernel)
        self.bn2 = nn.BatchNorm3d(channels)
        self.bn2.skip_init = True  # type: ignore[assignment]
        self.relu = nn.ReLU()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero ``bn2``'s affine parameters (the pooled path starts switched off)."""
        nn.init.zeros_(self.bn2.weight)
        nn.init.zeros_(self.bn2.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Aggregate neighbouring frames.

        Args:
            x: Feature of shape ``(B, C, T, H, W)``.

        Returns:
            Feature of the same shape.
        """
        out: Tensor = self.relu(self.bn1(x) + self.bn2(self.pool(x)))
        return out


class TAdaStage(nn.Module):
    """One TCM stage: routing, TAdaConv2d (3x3, stride 2) and aggregation (eq. 6).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        route_reduction: Reduction ratio of the routing function.
        route_kernels: Temporal kernel sizes of the routing function's two convs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        route_reduction: int = 4,
        route_kernels: tuple[int, int] = (3, 3),
    ) -> None:
        super().__init__()
        self.route = RouteFunc(in_channels, route_reduction, route_kernels)
        self.conv = TAdaConv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, bias=False)
        self.aggregate = TemporalAggregation(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the stage.

        Args:
            x: Feature of shape ``(B, C_in, T, H, W)``.

        Returns:
            Feature of shape ``(B, C_out, T, ceil(H/2), ceil(W/2))``.
        """
        out: Tensor = self.aggregate(self.conv(x, self.route(x)))
        return out


class TemporalContextModule(Branch):
    """Temporal Context Module producing ``F_tcm`` (DVLTA-VQA eqs. 5-7).

    ``stem`` (eq. 5) -> ``stages`` (TAdaConv and aggregation, eq. 6) -> ``cbam`` (eq. 7) ->
    mean over ``(T, H, W)`` -> ``proj`` (pooling and projection: ours). With the defaults a
    ``(B, 3, 8, 224, 224)`` clip goes 56 -> 28 -> 14 spatially and yields
    ``(B, 512)``. Any ``T >= 1`` works (temporal convs and pools pad).

    Note:
        Initialisation relies on each submodule's own defaults; in particular
        the routing functions' ``conv_b`` (zero, so ``alpha == 1``) and the
        aggregations' ``bn2`` affine parameters (zero). Do not apply a global
        re-initialisation over these (they are tagged ``skip_init = True``).

    Args:
        in_chans: Input channels of the clip.
        stem_channels: Stem output channels ``C0``.
        channels: Output channels of the TAdaConv stages (one stage each).
        out_dim: Dimension of ``F_tcm``.
        cbam_reduction: CBAM channel-MLP reduction ratio.
        route_reduction: Routing-function reduction ratio.
        route_kernels: Routing-function temporal kernel sizes ``(k0, k1)``.
        attention: Order of the attention maps of eq. 7 (see :class:`~dvlta_metric.branches.cbam.CBAM`).
        view: The frame view the branch reads: ``"consecutive"`` (consecutive frames) or ``"frames"``
            (segment centres).

    Raises:
        ValueError: If ``channels`` is empty.
    """

    def __init__(
        self,
        *,
        in_chans: int = 3,
        stem_channels: int = 64,
        channels: Sequence[int] = (128, 256),
        out_dim: int = 512,
        cbam_reduction: int = 16,
        route_reduction: int = 4,
        route_kernels: tuple[int, int] = (3, 3),
        attention: Literal["parallel", "sequential"] = "parallel",
        view: Literal["frames", "consecutive"] = "consecutive",
    ) -> None:
        super().__init__(view)
        widths = [stem_channels, *channels]
        if len(widths) < 2:
            raise ValueError("channels must list at least one TAdaConv stage width")
        self.in_chans = in_chans
        self.out_dim = out_dim
        self.stem = VideoStem(in_chans, stem_channels)
        self.stages = nn.ModuleList(
            TAdaStage(c_in, c_out, route_reduction, route_kernels) for c_in, c_out in pairwise(widths)
        )
        self.cbam = CBAM(widths[-1], reduction=cbam_reduction, order=attention)
        self.proj = nn.Linear(widths[-1], out_dim)

    def _check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is a ``(B, in_chans, T, H, W)`` clip.

        Args:
            x: Candidate input.

        Raises:
            ValueError: With the expected and received shapes.
        """
        if x.dim() != 5 or x.shape[1] != self.in_chans or min(x.shape) < 1:
            raise ValueError(
                "TemporalContextModule expects a clip of shape "
                f"(B, {self.in_chans}, T, H, W) "
                f"(channels before frames, e.g. (1, {self.in_chans}, 8, 224, 224)); "
                f"got {tuple(x.shape)}. "
                "For a (B, T, C, H, W) tensor pass x.transpose(1, 2)."
            )

    def forward_features(self, x: Tensor) -> Tensor:
        """Compute the refined feature map before pooling.

        Args:
            x: Clip of shape ``(B, in_chans, T, H, W)``.

        Returns:
            Feature of shape ``(B, channels[-1], T, H/16, W/16)`` (ceil division).

        Raises:
            ValueError: If ``x`` does not have shape ``(B, in_chans, T, H, W)``.
        """
        self._check_input(x)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        refined: Tensor = self.cbam(x)
        return refined

    def forward(self, x: Tensor) -> Tensor:
        """Compute ``F_tcm``.

        Args:
            x: Clip of shape ``(B, in_chans, T, H, W)``, ImageNet-normalised.

        Returns:
            ``F_tcm`` of shape ``(B, out_dim)``.

        Raises:
            ValueError: If ``x`` does not have shape ``(B, in_chans, T, H, W)``.
        """
        f_tcm: Tensor = self.proj(self.forward_features(x).mean(dim=(2, 3, 4)))
        return f_tcm

    def head(self, encoded: Tensor) -> Tensor:
        """``F_tcm`` of the frame view: the TCM trains end to end, so its encoded view is the view itself.

        Args:
            encoded: ``(B, T, 3, S, S)`` normalised frames.

        Returns:
            ``(B, out_dim)``.
        """
        return self(encoded.transpose(1, 2))
