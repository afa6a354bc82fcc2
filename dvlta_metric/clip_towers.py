"""Builders for the open_clip towers that DVLTA-VQA uses (ViFi-CLIP / OpenAI CLIP ViT-B/16 layout).

The vision tower is part of every model; the text tower is only built to compute prompt embeddings (at
conversion time, or when the zero-shot model loads CLIP weights): inference never runs it.
"""

from __future__ import annotations

from typing import Any

import open_clip
import torch
from torch import nn

from .config import CLIPTextConfig, CLIPVisionConfig


def vision_cfg_dict(cfg: CLIPVisionConfig) -> dict[str, Any]:
    """open_clip ``vision_cfg`` for :class:`~dvlta_metric.config.CLIPVisionConfig`."""
    return {
        "image_size": cfg.image_size,
        "patch_size": cfg.patch_size,
        "width": cfg.width,
        "layers": cfg.layers,
        "head_width": cfg.head_width,
    }


def text_cfg_dict(cfg: CLIPTextConfig) -> dict[str, Any]:
    """open_clip ``text_cfg`` for :class:`~dvlta_metric.config.CLIPTextConfig`."""
    return {
        "context_length": cfg.context_length,
        "vocab_size": cfg.vocab_size,
        "width": cfg.width,
        "heads": cfg.heads,
        "layers": cfg.layers,
    }


def build_vision_tower(cfg: CLIPVisionConfig, embed_dim: int) -> nn.Module:
    """An open_clip ``VisionTransformer`` mapping ``(N, 3, S, S)`` images to ``(N, embed_dim)`` embeddings.

    Args:
        cfg: Tower sizes.
        embed_dim: Output (joint space) dimension.

    Returns:
        The tower, with random weights.
    """
    from open_clip.model import _build_vision_tower

    return _build_vision_tower(embed_dim, vision_cfg_dict(cfg), quick_gelu=cfg.quick_gelu)


def build_clip(vision: CLIPVisionConfig, text: CLIPTextConfig, embed_dim: int) -> open_clip.CLIP:
    """A complete open_clip ``CLIP`` (both towers), random weights; keys match OpenAI/open_clip checkpoints.

    Args:
        vision: Vision tower sizes.
        text: Text tower sizes.
        embed_dim: Joint dimension.

    Returns:
        The model in eval mode.
    """
    model = open_clip.CLIP(
        embed_dim=embed_dim,
        vision_cfg=vision_cfg_dict(vision),
        text_cfg=text_cfg_dict(text),
        quick_gelu=vision.quick_gelu,
    )
    return model.eval()


@torch.no_grad()
def encode_prompts(clip: open_clip.CLIP, prompts: list[str], context_length: int) -> torch.Tensor:
    """Text embeddings ``E(prompt)`` (unnormalised, as CLIP's ``encode_text``).

    Args:
        clip: A CLIP model with its text tower.
        prompts: The prompt strings.
        context_length: Token context length of the text tower.

    Returns:
        ``(len(prompts), embed_dim)`` float32 embeddings.
    """
    tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
    device = next(clip.parameters()).device
    tokens = tokenizer(prompts).to(device)
    return clip.encode_text(tokens).float()
