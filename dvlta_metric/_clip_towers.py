"""Builders for the open_clip towers that DVLTA-VQA uses (ViFi-CLIP / OpenAI CLIP ViT-B/16 layout).

The vision tower is part of every model; the text tower is only built to compute prompt embeddings (at
conversion time, or when the zero-shot model loads CLIP weights): inference never runs it.
"""

from __future__ import annotations

from typing import Any

import open_clip
import torch
from torch import nn

from .branches.base import autocast_off
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


def encode_images(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """CLIP image embeddings ``z = E_v(x)`` (paper eq. 1); :func:`encode_images_and_tokens` without the tokens."""
    return encode_images_and_tokens(visual, images, tokens=False)[0]


def encode_images_and_tokens(
    visual: nn.Module, images: torch.Tensor, *, tokens: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """CLIP image embeddings ``z = E_v(x)`` (paper eq. 1) with a float32 residual stream.

    Computes what open_clip's ``VisionTransformer.forward`` computes for the towers of
    :func:`build_vision_tower` (class-token pooling, ``ln_post`` before pooling, a projection matrix),
    bit-identically in float32. Under autocast the difference is where rounding happens: open_clip
    carries the residual stream in the autocast dtype, so in bfloat16 every block rounds the running sum
    to 8 bits of mantissa and the ViT-B/16 embedding drifts by about 1 % (enough to move a score by 2e-2
    at a logit scale of 100). Here the patch embedding is cast to the weights' dtype (float32), so each
    residual addition promotes to float32 while every matmul still runs in half precision, and the final
    projection runs in float32: the drift drops about 3-4x.

    With ``tokens``, the patch tokens of the same pass go through ``ln_post`` and the projection too (the dense
    CLIP features MaskCLIP reads; Zhou, Loy and Dai, ECCV 2022): the embeddings are the same either way.

    Args:
        visual: A tower from :func:`build_vision_tower`.
        images: ``(N, 3, S, S)`` normalised images.
        tokens: Also return the projected patch tokens.

    Returns:
        ``(embeddings (N, embed_dim), tokens (N, g, g, embed_dim) or None)`` in the weights' dtype (float32),
        also under autocast; ``g = S / patch``.
    """
    dtype = visual.proj.dtype
    x = visual.conv1(images).flatten(2).transpose(1, 2).to(dtype)  # (N, grid**2, width)
    cls = visual.class_embedding.to(dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(dtype)
    x = visual.ln_pre(visual.patch_dropout(x))
    x = visual.transformer(x)  # (N, 1 + grid**2, width), batch first
    pooled = visual.ln_post(x[:, 0])
    with autocast_off(images.device.type):
        embeddings = pooled.to(dtype) @ visual.proj
        if not tokens:
            return embeddings, None
        grid = round((x.shape[1] - 1) ** 0.5)
        patches = visual.ln_post(x[:, 1:].to(dtype)) @ visual.proj
        return embeddings, patches.unflatten(1, (grid, grid))


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

    Raises:
        ValueError: If a prompt has more tokens than ``context_length`` (with its start and end tokens), which the
            tokenizer would cut short without a word.
    """
    tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
    for prompt in prompts:
        count = len(tokenizer.encode(prompt)) + 2  # the start and end tokens
        if count > context_length:
            shown = prompt if len(prompt) <= 80 else prompt[:77] + "..."
            raise ValueError(
                f"prompt {shown!r} is {count} tokens long, more than the text tower's context of {context_length} "
                "tokens (start and end included): shorten it"
            )
    device = next(clip.parameters()).device
    tokens = tokenizer(prompts).to(device)
    return clip.encode_text(tokens).float()
