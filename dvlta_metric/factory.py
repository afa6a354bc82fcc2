"""``create()``: the one function users call to get a model, from a registry name, the Hub or a folder."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from .checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_weights_strict,
    read_config,
    read_weights,
)
from .config import ModelConfig
from .errors import WeightsNotFoundError
from .hub import hub_download, verify_sha256
from .model import DVLTAVQA
from .registry import WeightSource, list_models, model_info

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelName:
    """A parsed model name.

    Attributes:
        kind: ``"registry"``, ``"hf-hub"`` or ``"local-dir"``.
        target: Registry name, Hub repository id, or directory.
        revision: Hub revision after ``@`` (``hf-hub`` only).
    """

    kind: Literal["registry", "hf-hub", "local-dir"]
    target: str
    revision: str | None = None


def parse_model_name(name: str) -> ModelName:
    """Parse ``dvlta-vqa``, ``hf-hub:org/name[@revision]`` or ``local-dir:/path``.

    Args:
        name: What the user passed to :func:`create`.

    Returns:
        The parsed name.

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: For a malformed Hub id, an empty path, or a bare string that looks like a path (the
            message suggests ``local-dir:``).
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if name.startswith(HF_HUB_PREFIX):
        spec = name[len(HF_HUB_PREFIX) :]
        repo, _, revision = spec.partition("@")
        if not _REPO_ID.match(repo):
            raise ValueError(f"{name!r}: expected 'hf-hub:org/name' or 'hf-hub:org/name@revision'")
        if "@" in spec and not revision:
            raise ValueError(f"{name!r}: empty revision after '@'")
        return ModelName("hf-hub", repo, revision or None)
    if name.startswith(LOCAL_DIR_PREFIX):
        path = name[len(LOCAL_DIR_PREFIX) :]
        if not path:
            raise ValueError(f"{name!r}: expected 'local-dir:/path/to/model_directory'")
        return ModelName("local-dir", os.path.expanduser(path))
    looks_like_path = (
        os.sep in name or "/" in name or name.startswith((".", "~")) or os.path.exists(name)
    )
    if looks_like_path:
        raise ValueError(
            f"{name!r} looks like a path, not a model name. To load a saved model directory use "
            f"create('local-dir:{name}'); for the Hub use 'hf-hub:org/name'. "
            f"Registered names: {', '.join(list_models())}."
        )
    return ModelName("registry", name)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` picks CUDA when available, else CPU; strings are parsed by :class:`torch.device`.

    Raises:
        ValueError: For an unparsable device, or CUDA asked for on a machine without it.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"invalid device {device!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available; use device='cpu'")
    return dev


def _load_files(
    config_path: Path, weights_path: Path, *, source: str, sha256: str | None = None
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    config, _ = read_config(config_path)
    if sha256 is not None:
        verify_sha256(weights_path, sha256, what=source)
    return config, read_weights(weights_path)


def _unavailable(name: str, source: WeightSource) -> ValueError:
    if source.kind == "random":
        return ValueError(
            f"{name!r} is a test configuration with random weights only; "
            f"use dvlta_metric.create({name!r}, pretrained=False)."
        )
    return ValueError(
        f"trained weights for {name!r} are not published yet. Options: "
        "(1) 'dvlta-vqa-zeroshot', a no-training metric built from OpenAI CLIP that works today; "
        "(2) train your own with the training/ package (python -m training.train) and load it with "
        "create('local-dir:/path'); "
        f"(3) create({name!r}, pretrained=False) for a randomly initialised model."
    )


def create(
    name: str,
    *,
    pretrained: bool = True,
    device: str | torch.device | None = None,
    as_loss: bool = False,
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    precision: str = "fp32",
    **overrides: Any,
) -> DVLTAVQA:
    """Create a DVLTA-VQA model.

    Args:
        name: A registered model name (see :func:`list_models`), ``hf-hub:org/name[@revision]`` for a Hub
            repository, or ``local-dir:/path`` for a directory written by :meth:`DVLTAVQA.save_pretrained`.
        pretrained: Load weights. ``False`` builds the architecture with random weights and downloads
            nothing (for a Hub name, only ``config.json`` is read).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a :class:`torch.device`, or ``None`` for CUDA when
            available.
        as_loss: Record gradients on every call so the score can be used as a differentiable loss.
        cache_dir: Hugging Face cache directory (default: the standard one, set by ``HF_HOME`` or
            ``HF_HUB_CACHE``).
        revision: Hub branch, tag or commit (same as ``@revision`` in the name).
        precision: ``"fp32"``, or ``"fp16"`` / ``"bf16"`` to run the Swin3D and CLIP backbones in half
            precision (see :meth:`DVLTAVQA.set_precision`).
        **overrides: Fields of :class:`~dvlta_metric.config.ModelConfig` to change, e.g.
            ``fusion="softmax"`` or ``fragment_view={"num_clips": 1}``.

    Returns:
        The model in eval mode on ``device``.

    Raises:
        ValueError: Unknown name or device, or a registry entry whose weights are not available.
        TypeError: Unknown override.
        WeightsNotFoundError: Weights not in the cache and not downloadable (the message says what to do).
        CheckpointError: Weights that fail their SHA-256 check or do not match the architecture.
    """
    parsed = parse_model_name(name)
    dev = resolve_device(device)
    state: dict[str, torch.Tensor] | None = None
    clip_source: WeightSource | None = None
    if parsed.kind == "registry":
        info = model_info(parsed.target)
        config = info.config
        source = info.weights
        if pretrained:
            if source.kind == "hub":
                if revision is not None:
                    raise ValueError(
                        f"{name!r} pins its own revision; pass revision only with 'hf-hub:' names "
                        "(or with 'dvlta-vqa-zeroshot', to choose the OpenAI CLIP revision)"
                    )
                files = _hub_files(source.repo_id or "", source.revision, cache_dir, source.filename)
                config, state = _load_files(*files, source=name, sha256=source.sha256)
            elif source.kind == "openai-clip":
                clip_source = source
            else:
                raise _unavailable(parsed.target, source)
    elif parsed.kind == "hf-hub":
        if revision is not None and parsed.revision is not None and revision != parsed.revision:
            raise ValueError(f"{name!r} names revision {parsed.revision!r} but revision={revision!r} was passed")
        rev = parsed.revision or revision
        if pretrained:
            config, state = _load_files(*_hub_files(parsed.target, rev, cache_dir, WEIGHTS_NAME), source=name)
        else:
            config, _ = read_config(hub_download(parsed.target, CONFIG_NAME, revision=rev, cache_dir=cache_dir))
    else:
        directory = Path(parsed.target)
        if not directory.is_dir():
            raise WeightsNotFoundError(f"{name!r}: {directory} is not a directory")
        if pretrained:
            config, state = _load_files(directory / CONFIG_NAME, directory / WEIGHTS_NAME, source=name)
        else:
            config, _ = read_config(directory / CONFIG_NAME)
    if overrides:
        config = config.replace(**overrides)
    model = DVLTAVQA(config, as_loss=as_loss).set_precision(precision)
    if state is not None:
        load_weights_strict(model, state, source=name)
    if clip_source is not None:
        from .zeroshot import load_clip_weights

        load_clip_weights(
            model, cache_dir=cache_dir, revision=revision or clip_source.revision, sha256=clip_source.sha256
        )
    return model.to(dev).eval()


def _hub_files(
    repo_id: str, revision: str | None, cache_dir: str | Path | None, weights: str
) -> tuple[Path, Path]:
    """Download ``config.json`` and the weights file of one repository revision."""
    config_path = hub_download(repo_id, CONFIG_NAME, revision=revision, cache_dir=cache_dir)
    weights_path = hub_download(repo_id, weights, revision=revision, cache_dir=cache_dir)
    return config_path, weights_path
