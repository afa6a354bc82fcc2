"""Basic Visual Feature Extraction Module (paper eqs. 8-9): the ventral stream on the fragment view.

A frozen FAST-VQA-B backbone (Video Swin-T with gated relative position bias) turns each 32-frame fragment
clip into ``(768, 16, 7, 7)`` features; a trained ``Conv3d(768, 512, 1) -> GELU -> Conv3d(512, 512, 1)``
head (width 512 is ours) maps them into the joint space, and the result is averaged over ``(t, h, w)`` and
over clips to give ``F_bvfe``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import SwinConfig
from .swin3d import SwinTransformer3D


class FragmentHead(nn.Module):
    """``Conv3d(C, H, 1) -> GELU -> Conv3d(H, D, 1)`` on backbone features.

    Args:
        in_channels: Backbone channels ``C`` (768).
        hidden: Hidden width ``H``.
        out_dim: Joint dimension ``D``.
    """

    def __init__(self, in_channels: int = 768, hidden: int = 512, out_dim: int = 512) -> None:
        super().__init__()
        self.fc_hid = nn.Conv3d(in_channels, hidden, 1)
        self.act = nn.GELU()
        self.fc_out = nn.Conv3d(hidden, out_dim, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, t, h, w)`` features to ``(N, D, t, h, w)``."""
        return self.fc_out(self.act(self.fc_hid(feats)))


class BasicVisualFeatureExtraction(nn.Module):
    """The Basic Visual Feature Extraction Module (eqs. 8-9).

    Args:
        swin: Backbone configuration (FAST-VQA-B's Swin-T by default).
        hidden: Head width.
        out_dim: Joint dimension ``D``.
    """

    def __init__(self, swin: SwinConfig, hidden: int = 512, out_dim: int = 512) -> None:
        super().__init__()
        self.backbone = SwinTransformer3D(
            patch_size=swin.patch_size,
            embed_dim=swin.embed_dim,
            depths=swin.depths,
            num_heads=swin.num_heads,
            window_size=swin.window_size,
            mlp_ratio=swin.mlp_ratio,
            frag_biases=swin.frag_biases,
            base_x_size=swin.base_x_size,
        )
        self.backbone.requires_grad_(False)
        self.head = FragmentHead(self.backbone.num_features, hidden, out_dim)

    def backbone_features(self, clips: torch.Tensor) -> torch.Tensor:
        """Frozen backbone features of fragment clips (eq. 8).

        Args:
            clips: ``(N, 3, L, S, S)`` normalised fragment clips.

        Returns:
            ``(N, 768, L/2, S/32, S/32)``.
        """
        return self.backbone(clips)

    def pool_head(self, feats: torch.Tensor, num_clips: int) -> torch.Tensor:
        """Head and pooling on backbone features (eq. 9).

        Args:
            feats: ``(B * K, C, t, h, w)`` backbone features, ``K`` clips per video, video-major.
            num_clips: ``K``.

        Returns:
            ``(B, D)``: the head output averaged over ``(t, h, w)`` and over the clips. The head runs in
            its weights' dtype (float32 unless the whole model was converted) even under autocast (it is
            about 0.5 % of the branch's FLOPs).
        """
        with torch.autocast(feats.device.type, enabled=False):
            out = self.head(feats.to(next(self.head.parameters()).dtype)).mean(dim=(2, 3, 4))
        return out.reshape(-1, num_clips, out.shape[-1]).mean(dim=1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """``F_bvfe`` of a batch of videos.

        Args:
            clips: ``(B, K, 3, L, S, S)`` fragment clips, ``K`` per video.

        Returns:
            ``(B, D)``.
        """
        k = clips.shape[1]
        return self.pool_head(self.backbone_features(clips.flatten(0, 1)), k)
