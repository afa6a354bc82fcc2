"""Saving and loading model directories: ``config.json`` + ``model.safetensors`` + model card.

The layout follows timm and open_clip on the Hugging Face Hub. Weights are read with safetensors only:
nothing in :mod:`dvlta_metric` unpickles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ModelConfig
from .errors import CheckpointError, WeightsNotFoundError
from .model_card import model_card
from .version import __version__

if TYPE_CHECKING:
    from .model import DVLTAVQA

ARCHITECTURE = "dvlta-vqa"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
_VIEW_KEYS = ("fragment_view", "frame_view")
_MAX_LISTED = 8


def config_to_json(config: ModelConfig, *, storage_dtype: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
    """The ``config.json`` document of a model.

    Sections: ``architecture``, ``model_args`` (sizes and options), ``preprocessing`` (both views),
    ``prompts``, ``storage_dtype``, ``library`` (name and version) and free-form ``metadata`` (training data,
    splits, results, licence).
    """
    args = config.to_dict()
    preprocessing = {key: args.pop(key) for key in _VIEW_KEYS}
    prompts = args.pop("prompts")
    return {
        "architecture": ARCHITECTURE,
        "model_args": args,
        "preprocessing": preprocessing,
        "prompts": prompts,
        "storage_dtype": storage_dtype,
        "library": {"name": "dvlta-metric", "version": __version__},
        "metadata": metadata or {},
    }


def config_from_json(doc: dict[str, Any], *, source: str) -> tuple[ModelConfig, dict[str, Any]]:
    """Inverse of :func:`config_to_json`.

    Args:
        doc: Parsed ``config.json``.
        source: Where it came from, for error messages.

    Returns:
        ``(config, metadata)``.

    Raises:
        CheckpointError: For a config of another architecture or with missing/invalid sections.
    """
    arch = doc.get("architecture") if isinstance(doc, dict) else None
    if arch != ARCHITECTURE:
        raise CheckpointError(
            f"{source}: config.json describes architecture {arch!r}, not {ARCHITECTURE!r}; "
            "this directory holds another kind of model."
        )
    try:
        data = dict(doc["model_args"])
        data.update(doc["preprocessing"])
        data["prompts"] = doc["prompts"]
        config = ModelConfig.from_dict(data)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: config.json is incomplete or invalid: {err}") from None
    return config, dict(doc.get("metadata") or {})


def read_config(path: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """Read and validate a ``config.json`` file.

    Raises:
        WeightsNotFoundError: If the file does not exist.
        CheckpointError: If it is not valid JSON or not a DVLTA-VQA config.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"{path} does not exist; a model directory needs {CONFIG_NAME}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    return config_from_json(doc, source=str(path))


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file into a state dict on the CPU.

    Raises:
        WeightsNotFoundError: If the file does not exist.
        CheckpointError: If it is truncated or not a safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"{path} does not exist; a model directory needs {WEIGHTS_NAME}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path}: not a readable safetensors file (truncated or corrupt?): {err}"
        ) from None


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED else "")


def load_weights_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load a state dict that must match the module exactly; floats are cast to the module's dtypes.

    Args:
        module: Target module.
        state: Tensors by key (e.g. from :func:`read_weights`).
        source: Where they came from, for error messages.

    Raises:
        CheckpointError: Listing the first missing keys, unexpected keys, or shape mismatches.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if shapes:
        problems.append(f"wrong shapes (checkpoint != model): {_listing(shapes)}")
    if problems:
        raise CheckpointError(f"{source}: the weights do not match the model; " + "; ".join(problems))
    cast = {
        k: (v.to(own[k].dtype) if v.is_floating_point() and own[k].is_floating_point() else v)
        for k, v in state.items()
    }
    module.load_state_dict(cast, strict=True)


def save_pretrained(
    model: DVLTAVQA,
    directory: str | Path,
    *,
    fp16: bool = False,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write a model directory: ``config.json``, ``model.safetensors`` and a model card ``README.md``.

    Args:
        model: The model.
        directory: Target directory (created if needed; existing files are replaced).
        fp16: Store floating-point weights as float16 (about half the size; cast back on load).
        metadata: Free-form training metadata (``datasets``, ``splits``, ``results``, ``license``, ...),
            written to ``config.json`` and shown in the model card.

    Returns:
        The directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    storage = "float16" if fp16 else "float32"
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.to(torch.float16 if fp16 else torch.float32)
        state[key] = value.contiguous()
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    doc = config_to_json(model.config, storage_dtype=storage, metadata=metadata)
    (directory / CONFIG_NAME).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    (directory / CARD_NAME).write_text(model_card(model.config, metadata or {}), encoding="utf-8")
    return directory
