"""Video-Based Temporal CLIP (paper eqs. 1-4): the dorsal stream's semantic branch.

A frozen ViFi-CLIP image encoder embeds each of the ``T`` frames (eq. 1-2); the frame embeddings are
averaged over time (eq. 3, ViFi-CLIP's temporal pooling) and refined by a small residual adapter (eq. 4):
``F_vbtc = 0.4 * A(Z) + 0.6 * Z``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..clip_towers import build_vision_tower, encode_images
from ..config import CLIPVisionConfig


class CLIPAdapter(nn.Module):
    """Bottleneck adapter ``A`` of eq. 4 (CLIP-Adapter style; reduction ``r = 4`` is ours).

    ``Conv2d(D, D/r, 1) + BN + ReLU`` then ``Conv2d(D/r, D, 1) + BN + ReLU`` on ``Z`` viewed as
    ``(B, D, 1, 1)``.

    Args:
        dim: Feature dimension ``D``.
        reduction: Bottleneck reduction ``r``.
    """

    def __init__(self, dim: int = 512, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(1, dim // reduction)
        self.fc = nn.Sequential(
            nn.Conv2d(dim, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, dim, 1, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Apply the adapter.

        Args:
            z: ``(B, D)`` pooled video embedding.

        Returns:
            ``(B, D)`` adapted embedding ``A(Z)``.
        """
        return self.fc(z[:, :, None, None]).flatten(1)


class VideoBasedTemporalCLIP(nn.Module):
    """The Video-Based Temporal CLIP branch (eqs. 1-4).

    Args:
        vision: Sizes of the (frozen) CLIP image encoder.
        embed_dim: Joint embedding dimension ``D`` (512).
        use_adapter: Add the residual adapter of eq. 4 (the zero-shot model has none).
        adapter_reduction: Bottleneck reduction of the adapter.
        adapter_ratio: ``a`` in ``F = a * A(Z) + (1 - a) * Z`` (0.4).
    """

    def __init__(
        self,
        vision: CLIPVisionConfig,
        embed_dim: int = 512,
        *,
        use_adapter: bool = True,
        adapter_reduction: int = 4,
        adapter_ratio: float = 0.4,
    ) -> None:
        super().__init__()
        self.visual = build_vision_tower(vision, embed_dim)
        self.visual.requires_grad_(False)
        self.adapter = CLIPAdapter(embed_dim, adapter_reduction) if use_adapter else None
        self.adapter_ratio = adapter_ratio

    def frame_embeddings(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame image embeddings ``z_i`` (eqs. 1-2).

        Args:
            frames: ``(B, T, 3, S, S)`` normalised frames.

        Returns:
            ``(B, T, D)`` embeddings.
        """
        b, t = frames.shape[:2]
        z = encode_images(self.visual, frames.flatten(0, 1))
        return z.reshape(b, t, -1)

    def from_frame_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``F_vbtc`` from per-frame embeddings (eqs. 3-4); training uses it on cached embeddings.

        Args:
            embeddings: ``(B, T, D)`` frame embeddings ``z_t`` of the frozen encoder.

        Returns:
            ``(B, D)``.
        """
        if self.adapter is None:
            return embeddings.mean(dim=1)
        a = self.adapter_ratio
        # in the adapter's dtype even under autocast: it is tiny, and its output is the branch feature
        z = embeddings.to(self.adapter.fc[0].weight.dtype).mean(dim=1)
        with torch.autocast(z.device.type, enabled=False):
            return a * self.adapter(z) + (1.0 - a) * z

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Video embedding ``F_vbtc``.

        Args:
            frames: ``(B, T, 3, S, S)`` normalised frames of the frame view.

        Returns:
            ``(B, D)``: ``Z = mean_t z_t`` (eq. 3), then eq. 4 if the adapter is present.
        """
        return self.from_frame_embeddings(self.frame_embeddings(frames))
