"""Text-guided fusion and the prompt-similarity score (paper eqs. 10-13).

The fusion prompt's embedding, refined by a small text adapter, weighs the three branch features by their
cosine similarity to it (eqs. 10-11); the fused feature is compared with a "high quality" and a "low
quality" prompt and the two scaled similarities are turned into a probability (eqs. 12-13). The text
adapter that refines the prompt embeddings first is ours: the paper names no equation for it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TextAdapter(nn.Module):
    """Residual text adapter *(ours)*: ``T' = a * MLP(T) + (1 - a) * T`` (no equation of the paper).

    ``MLP = Linear(D, H) + ReLU + Linear(H, D) + ReLU``.

    Args:
        dim: Text embedding dimension ``D``.
        hidden: Hidden width ``H``.
        ratio: ``a`` (0.2).
    """

    def __init__(self, dim: int = 512, hidden: int = 128, ratio: float = 0.2) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim), nn.ReLU(inplace=True)
        )
        self.ratio = ratio

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        """Adapt prompt embeddings ``(P, D) -> (P, D)``."""
        return self.ratio * self.mlp(text) + (1.0 - self.ratio) * text


class TextGuidedFusion(nn.Module):
    """Eqs. 10-11: ``w_k = cos(F_k, T'_fuse)`` (eq. 10) and ``F_fused = sum_k w_k F_k`` (eq. 11).

    Args:
        mode: ``"cosine"`` uses the raw cosines (the paper); ``"softmax"`` normalises the weights with a
            softmax over branches (for the ablation).
    """

    def __init__(self, mode: str = "cosine") -> None:
        super().__init__()
        if mode not in ("cosine", "softmax"):
            raise ValueError(f"fusion mode must be 'cosine' or 'softmax', got {mode!r}")
        self.mode = mode

    def forward(self, features: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse branch features.

        Args:
            features: ``(B, K, D)`` branch features.
            text: ``(D,)`` adapted fusion prompt embedding ``T'_fuse``.

        Returns:
            ``(fused, weights)``: ``(B, D)`` and ``(B, K)``.
        """
        weights = F.cosine_similarity(features, text.expand_as(features), dim=-1)
        if self.mode == "softmax":
            weights = weights.softmax(dim=-1)
        fused = (weights.unsqueeze(-1) * features).sum(dim=1)
        return fused, weights


class PromptQualityHead(nn.Module):
    """Eqs. 12-13: ``Q = exp(S+) / (exp(S+) + exp(S-))``, ``S+- = s * cos(T'+-, F_fused)``.

    Args:
        logit_scale: ``s`` (100, CLIP's ``logit_scale.exp()``).
    """

    def __init__(self, logit_scale: float = 100.0) -> None:
        super().__init__()
        self.logit_scale = logit_scale

    def forward(self, fused: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """Quality in ``(0, 1)``.

        Args:
            fused: ``(B, D)`` fused feature.
            positive: ``(D,)`` adapted "high quality" prompt embedding.
            negative: ``(D,)`` adapted "low quality" prompt embedding.

        Returns:
            ``(B,)`` probabilities of "high quality".
        """
        f = F.normalize(fused, dim=-1)
        t = F.normalize(torch.stack([positive, negative]), dim=-1)
        logits = self.logit_scale * f @ t.t()  # (B, 2)
        return logits.softmax(dim=-1)[:, 0]
