"""Video-Based Temporal CLIP (paper eqs. 1-4): the dorsal stream's semantic branch.

A frozen ViFi-CLIP image encoder embeds each of the ``T`` frames (eq. 1); the frame embeddings are
averaged over time (eq. 2, ViFi-CLIP's temporal pooling) and refined by a small adapter ``A`` (eq. 3) with a
residual mix (eq. 4): ``F_vbtc = 0.4 * A(Z) + 0.6 * Z``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .._clip_towers import build_vision_tower, encode_images, encode_images_and_tokens
from ..config import CLIPVisionConfig
from .base import Branch, autocast_off


class CLIPAdapter(nn.Module):
    """Bottleneck adapter ``A`` of eq. 3 (CLIP-Adapter style; reduction ``r = 4`` is ours).

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


class VideoBasedTemporalCLIP(Branch):
    """The Video-Based Temporal CLIP branch (eqs. 1-4), on the frame view.

    Attributes:
        encoder: The frozen CLIP image tower (eq. 1).
        adapter: The trained :class:`CLIPAdapter` of eq. 3, or ``None`` (the zero-shot model has none).

    Args:
        vision: Sizes of the (frozen) CLIP image encoder.
        embed_dim: Joint embedding dimension ``D`` (512).
        use_adapter: Add the adapter of eq. 3 and its residual mix (eq. 4).
        adapter_reduction: Bottleneck reduction of the adapter.
        adapter_ratio: ``a`` in ``F = a * A(Z) + (1 - a) * Z`` (0.4).
        view: The frame view the branch reads: ``"frames"`` (segment centres, ViFi-CLIP's sampling) or
            ``"consecutive"`` (consecutive frames).
    """

    def __init__(
        self,
        vision: CLIPVisionConfig,
        embed_dim: int = 512,
        *,
        use_adapter: bool = True,
        adapter_reduction: int = 4,
        adapter_ratio: float = 0.4,
        view: Literal["frames", "consecutive"] = "frames",
    ) -> None:
        super().__init__(view)
        self.encoder = build_vision_tower(vision, embed_dim)
        self.encoder.requires_grad_(False)
        self.adapter = CLIPAdapter(embed_dim, adapter_reduction) if use_adapter else None
        self.adapter_ratio = adapter_ratio

    def encode(self, view: torch.Tensor) -> torch.Tensor:
        """Per-frame image embeddings ``z_i`` (eq. 1).

        Args:
            view: ``(B, T, 3, S, S)`` normalised frames.

        Returns:
            ``(B, T, D)`` embeddings.
        """
        return encode_images(self.encoder, view.flatten(0, 1)).unflatten(0, view.shape[:2])

    def encode_with_tokens(self, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`encode` and, from the same pass, the projected patch tokens of every frame.

        Args:
            view: ``(B, T, 3, S, S)`` normalised frames.

        Returns:
            ``(embeddings (B, T, D), tokens (B, T, g, g, D))``; the embeddings equal :meth:`encode`'s.
        """
        emb, tokens = encode_images_and_tokens(self.encoder, view.flatten(0, 1), tokens=True)
        if tokens is None:  # encode_images_and_tokens returns tokens when asked; this keeps the type exact
            raise RuntimeError("the CLIP tower returned no patch tokens")
        return emb.unflatten(0, view.shape[:2]), tokens.unflatten(0, view.shape[:2])

    def head(self, encoded: torch.Tensor) -> torch.Tensor:
        """``F_vbtc`` from per-frame embeddings: the temporal mean (eq. 2), the adapter (eq. 3) and the mix (eq. 4).

        Args:
            encoded: ``(B, T, D)`` frame embeddings ``z_t`` of the frozen encoder.

        Returns:
            ``(B, D)``; the adapter runs in its weights' dtype even under autocast.
        """
        if self.adapter is None:
            return encoded.mean(dim=1)
        a = self.adapter_ratio
        z = encoded.to(self.adapter.fc[0].weight.dtype).mean(dim=1)
        with autocast_off(z.device.type):
            return a * self.adapter(z) + (1.0 - a) * z

    def forward(self, view: torch.Tensor) -> torch.Tensor:
        """``F_vbtc`` of a batch of videos: ``head(encode(view))``, ``(B, T, 3, S, S)`` -> ``(B, D)``."""
        return self.head(self.encode(view))
