"""Offline Hub helpers shared by the tests: a local Hugging Face Hub cache laid out the way ``hf_hub_download``
writes it, a saved tiny model, a small stand-in for OpenAI CLIP, and a registry that forgets what a test adds."""

from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from safetensors.torch import save_file

import dvlta_metric
from dvlta_metric import DVLTAVQA
from dvlta_metric import _registry as registry
from dvlta_metric._clip_towers import build_clip
from dvlta_metric._zeroshot import OPENAI_CLIP_SAFETENSORS, openai_clip_repo
from dvlta_metric.config import CLIPTextConfig, CLIPVisionConfig


def lay_out_repo(
    hub_cache: Path,
    repo_id: str,
    files: dict[str, Path | bytes],
    *,
    commit: str = "0" * 40,
    refs: tuple[str, ...] = ("main",),
) -> Path:
    """Write ``models--org--name/snapshots/<commit>/<file>`` and ``refs/<ref>`` under ``hub_cache``.

    Args:
        hub_cache: The cache root (``$HF_HOME/hub``).
        repo_id: ``org/name``.
        files: File name -> source path or bytes.
        commit: 40-hex commit hash of the snapshot.
        refs: Branch names that point at this commit.

    Returns:
        The snapshot directory.
    """
    repo_dir = hub_cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        target = snapshot / name
        if isinstance(src, bytes):
            target.write_bytes(src)
        else:
            shutil.copyfile(src, target)
    (repo_dir / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo_dir / "refs" / ref).write_text(commit)
    return snapshot


def offline_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hub cache under a temporary ``HF_HOME``, with offline mode on, for this process and children.

    Returns:
        The cache root (``$HF_HOME/hub``).
    """
    home = tmp_path / "hf_home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these at import time: mirror the environment for this process
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def keep_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make registry entries and aliases that a test adds disappear after it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))


def save_tiny(directory: Path, *, seed: int = 1) -> DVLTAVQA:
    """Write ``dvlta-vqa-tiny`` with the random weights of ``seed`` (and some metadata) to ``directory``.

    Returns:
        The saved model.
    """
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", seed=seed)
    model.save_pretrained(directory, metadata={"datasets": ["KoNViD-1k"], "results": {"KoNViD-1k": {"SROCC": 0.5}}})
    return model


SMALL_CLIP = {
    "embed_dim": 32,
    "clip_vision": CLIPVisionConfig(image_size=224, patch_size=32, width=64, layers=2, head_width=32),
    "clip_text": CLIPTextConfig(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
}
"""Overrides that make ``dvlta-vqa-zeroshot`` small enough for tests."""


def write_small_clip(hub_cache: Path) -> torch.nn.Module:
    """Put a small random open_clip model where ``dvlta-vqa-zeroshot`` looks for OpenAI CLIP in ``hub_cache``.

    Returns:
        The CLIP model written.
    """
    torch.manual_seed(7)
    clip = build_clip(SMALL_CLIP["clip_vision"], SMALL_CLIP["clip_text"], SMALL_CLIP["embed_dim"])
    file = hub_cache.parent / OPENAI_CLIP_SAFETENSORS
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(file))
    lay_out_repo(hub_cache, openai_clip_repo(), {OPENAI_CLIP_SAFETENSORS: file, "open_clip_config.json": b"{}"})
    return clip
