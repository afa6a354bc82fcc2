"""``dvlta-vqa-zeroshot``: the Video-Based Temporal CLIP branch and the prompt head from OpenAI CLIP weights.

No training is involved: the image encoder and the prompt embeddings both come from the public OpenAI CLIP
ViT-B/16 checkpoint that open_clip resolves from the Hugging Face Hub (its safetensors file). The prompt
embeddings are computed once, when the weights load, and kept as a buffer; scoring never runs the text
tower. This makes a meaningful no-training metric (as CLIP-IQA and BVQI do) until trained DVLTA-VQA weights
are published.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ._checkpoint import load_weights_strict, read_weights
from ._clip_towers import build_clip, encode_prompts
from ._hub import hub_download, verify_sha256
from .attributes import TextEncoder
from .config import ModelConfig

OPENAI_CLIP_SAFETENSORS = "open_clip_model.safetensors"
CLIP_TOWER = "branches.vbtc.encoder"
"""Where the CLIP image tower sits in the model (a :meth:`torch.nn.Module.get_submodule` path)."""


class ZeroShotTarget(Protocol):
    """What :func:`load_clip_weights` needs of a model: its configuration, prompt buffer and submodules."""

    config: ModelConfig
    prompt_embeddings: torch.Tensor
    weights_origin: str

    def get_submodule(self, target: str) -> nn.Module: ...

    def set_text_encoder(self, encoder: TextEncoder | None) -> object: ...


def openai_clip_repo() -> str:
    """The Hub repository open_clip uses for OpenAI's ViT-B/16 weights (``timm/vit_base_patch16_clip_224.openai``).

    Returns:
        The repository id, ``org/name``.

    Raises:
        RuntimeError: If the installed open_clip has no Hub location for these weights.
    """
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg("ViT-B-16", "openai")
    hub = str(cfg.get("hf_hub", "")).strip("/")
    if not hub:
        raise RuntimeError("this open_clip version has no Hub location for ViT-B-16/openai weights")
    return hub.split("/")[0] + "/" + hub.split("/")[1]


def load_clip_weights(
    model: ZeroShotTarget,
    *,
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    sha256: str | None = None,
) -> ZeroShotTarget:
    """Fill a zero-shot model with OpenAI CLIP weights and its prompt embeddings.

    Args:
        model: A model whose only branch is ``"vbtc"`` (no adapters).
        cache_dir: Hub cache directory (default: the standard one).
        revision: Revision of the CLIP repository (default: ``main``).
        sha256: Expected SHA-256 of the safetensors file, checked before it is read (none by default: the
            Hub's own checksum of the download is relied on).

    Returns:
        The same model, weights loaded, with the CLIP text tower attached for attribute prompts
        (``set_text_encoder``); its ``weights_origin`` names the repository and the commit the file came
        from (``"hf-hub:timm/vit_base_patch16_clip_224.openai@<commit>"``).

    Raises:
        ValueError: If the model has no ``"vbtc"`` branch.
        WeightsNotFoundError: If the CLIP weights are not cached and cannot be downloaded.
        CheckpointError: If the file does not match the configured CLIP architecture or ``sha256``.
    """
    try:
        tower = model.get_submodule(CLIP_TOWER)
    except AttributeError:
        raise ValueError(f"load_clip_weights needs a model with the 'vbtc' branch (no {CLIP_TOWER!r})") from None
    repo = openai_clip_repo()
    path = hub_download(repo, OPENAI_CLIP_SAFETENSORS, revision=revision, cache_dir=cache_dir)
    if sha256 is not None:
        verify_sha256(path, sha256, what=f"hf-hub:{repo}/{OPENAI_CLIP_SAFETENSORS}")
    cfg = model.config
    clip = build_clip(cfg.clip_vision, cfg.clip_text, cfg.embed_dim)
    load_weights_strict(clip, read_weights(path), source=f"hf-hub:{repo}/{OPENAI_CLIP_SAFETENSORS}")
    prompts = [cfg.prompts.fusion, cfg.prompts.positive, cfg.prompts.negative]
    embeddings = encode_prompts(clip, prompts, cfg.clip_text.context_length)
    with torch.no_grad():
        tower.load_state_dict(clip.visual.state_dict())
        model.prompt_embeddings.copy_(embeddings.to(model.prompt_embeddings))
    # the text tower stays attached (outside the weights) to embed attribute prompts (model.attributes)
    model.set_text_encoder(TextEncoder(clip, cfg.clip_text.context_length))
    # the cache keeps each file under snapshots/<commit>/: the revision actually used, whatever was asked for
    model.weights_origin = f"hf-hub:{repo}@{path.parent.name}"
    return model
