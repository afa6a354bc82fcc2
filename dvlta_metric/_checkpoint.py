"""Saving and loading model directories: ``config.json`` + ``model.safetensors`` + model card.

The layout follows timm and open_clip on the Hugging Face Hub. Weights are read with safetensors only:
nothing in :mod:`dvlta_metric` unpickles.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ._model_card import model_card
from .config import ModelConfig
from .errors import CheckpointError, WeightsNotFoundError
from .version import __version__

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

    Args:
        config: The model's configuration.
        storage_dtype: How the floating-point weights are stored (``"float32"`` or ``"float16"``).
        metadata: Free-form metadata, already JSON-compatible (see :func:`normalise_metadata`), or ``None``.

    Returns:
        The document, ready for :func:`json.dumps`.
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

    Args:
        path: The file.

    Returns:
        ``(config, metadata)``: the model configuration and the free-form ``metadata`` section.

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

    Args:
        path: The ``.safetensors`` file.

    Returns:
        Tensors by key, in the file's dtypes.

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
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {err}") from None


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED else "")


def _dtype_kind(dtype: torch.dtype) -> str:
    """``"bool"``, ``"complex"``, ``"float"`` or ``"int"``: dtypes of one kind convert without changing meaning."""
    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    return "float" if dtype.is_floating_point else "int"


def load_weights_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load a state dict that must match the module exactly; floats are cast to the module's dtypes.

    A stored tensor may differ from its slot in width only (float16 or bfloat16 weights load into float32
    parameters, as :meth:`PretrainedMixin.save_pretrained` with ``fp16=True`` writes them); an integer,
    boolean or complex tensor in a floating-point slot, or the reverse, is refused.

    Args:
        module: Target module.
        state: Tensors by key (e.g. from :func:`read_weights`).
        source: Where they came from, for error messages.

    Raises:
        CheckpointError: Listing the first missing keys, unexpected keys, shape mismatches, or dtype-kind
            mismatches (each with the file's dtype and the expected one).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    dtypes = [
        f"{k} has {str(state[k].dtype).removeprefix('torch.')}, expected {str(own[k].dtype).removeprefix('torch.')}"
        for k in own
        if k in state and _dtype_kind(state[k].dtype) != _dtype_kind(own[k].dtype)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if shapes:
        problems.append(f"wrong shapes (checkpoint != model): {_listing(shapes)}")
    if dtypes:
        problems.append(f"wrong dtypes: {_listing(dtypes)}")
    if problems:
        raise CheckpointError(f"{source}: the weights do not match the model; " + "; ".join(problems))
    cast = {
        k: (v.to(own[k].dtype) if v.is_floating_point() and own[k].is_floating_point() else v) for k, v in state.items()
    }
    module.load_state_dict(cast, strict=True)


def normalise_metadata(metadata: object) -> dict[str, Any]:
    """Check ``save_pretrained``'s metadata and turn it into plain JSON values.

    NumPy scalars and one-element tensors become Python numbers, NumPy arrays lists, paths strings and tuples
    lists; dictionaries (with string keys), lists, strings, numbers, booleans and ``None`` are kept.

    Args:
        metadata: The metadata, a dictionary or ``None``.

    Returns:
        A new dictionary that :func:`json.dumps` accepts.

    Raises:
        TypeError: If ``metadata`` is not a dictionary, or a key or value cannot be stored; the message names
            the key, e.g. ``metadata['results']['KoNViD']``.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict (or None), got {type(metadata).__name__}: {metadata!r}")
    return _plain(metadata, "metadata")


def _plain(value: object, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: keys must be strings, got {type(key).__name__} key {key!r}")
            out[key] = _plain(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, os.PathLike):
        return str(os.fspath(value))
    if isinstance(value, torch.Tensor):
        if value.numel() == 1 and not value.is_complex():
            return _plain(value.item(), where)
        raise TypeError(
            f"{where}: cannot store a tensor of shape {tuple(value.shape)} in config.json; "
            "store a number or a list (tensor.tolist())"
        )
    module = type(value).__module__
    if module == "numpy" and hasattr(value, "tolist"):  # NumPy scalars and arrays
        plain = value.tolist()
        if not isinstance(plain, complex):
            return _plain(plain, where)
    raise TypeError(
        f"{where}: cannot store a {type(value).__name__} ({value!r}) in config.json; use strings, numbers, "
        "booleans, None, lists or dicts"
    )


def _half_weights(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Cast floating-point tensors to ``dtype``, refusing finite values that would become infinite."""
    out = {}
    for key, value in state.items():
        value = value.detach().cpu()
        if value.is_floating_point():
            stored = value.to(dtype)
            overflow = torch.isinf(stored) & torch.isfinite(value)
            if bool(overflow.any()):
                largest = float(value[overflow].abs().max())
                limit = torch.finfo(dtype).max
                name = str(dtype).removeprefix("torch.")
                raise ValueError(
                    f"cannot store tensor {key!r} as {name}: it holds values up to {largest:.6g}, beyond {name}'s "
                    f"largest finite value {limit:.6g}, which would be stored as infinity; save with fp16=False"
                )
            value = stored
        out[key] = value.contiguous()
    return out


_Model = TypeVar("_Model", bound="PretrainedMixin")


class PretrainedMixin:
    """Saving to and loading from a model directory, as one symmetric pair a model inherits.

    In the manner of huggingface_hub's ``ModelHubMixin``: a :class:`torch.nn.Module` subclass whose constructor
    takes a :class:`~dvlta_metric.config.ModelConfig` first (``cls(config, **kwargs)``) and keeps it as
    ``self.config`` inherits :meth:`save_pretrained` and :meth:`from_pretrained`. This module sits below the
    model and never imports it.
    """

    config: ModelConfig

    def save_pretrained(
        self, directory: str | os.PathLike[str], *, fp16: bool = False, metadata: dict[str, Any] | None = None
    ) -> Path:
        """Write ``config.json``, ``model.safetensors`` and a model card ``README.md`` to ``directory``.

        Load it back with :meth:`from_pretrained` or ``dvlta_metric.create("local-dir:<directory>")``, or
        upload the directory to the Hub and use ``"hf-hub:org/name"``. Everything is checked before anything
        is written, and the three files are written under temporary names in ``directory`` and then renamed
        into place, so a failure while checking or writing leaves the directory as it was (the three renames
        at the end are not one atomic step).

        Args:
            directory: Target directory (created if needed; existing files are replaced).
            fp16: Store floating-point weights as float16 (half the size; cast back to the model's dtypes on
                load).
            metadata: Free-form training metadata (``datasets``, ``splits``, ``results``, ``license``, ...),
                written to ``config.json`` and shown in the model card. NumPy numbers, one-element tensors and
                paths are converted (see :func:`normalise_metadata`).

        Returns:
            The directory.

        Raises:
            TypeError: If ``fp16`` is not a bool, ``metadata`` not a dict, or a metadata value cannot be
                stored in JSON (the message names its key); or if the object is not a :class:`torch.nn.Module`.
            ValueError: If ``fp16=True`` and a weight lies beyond float16's range (it would load as infinity);
                the message names the tensor.
            OSError: If the directory cannot be created or written.
        """
        if not isinstance(self, torch.nn.Module):
            raise TypeError(f"PretrainedMixin needs a torch.nn.Module subclass, got {type(self).__name__}")
        if not isinstance(fp16, bool):
            raise TypeError(f"save_pretrained: fp16 must be True or False, got {fp16!r}")
        plain = normalise_metadata(metadata)
        state = _half_weights(self.state_dict(), torch.float16 if fp16 else torch.float32)
        doc = config_to_json(self.config, storage_dtype="float16" if fp16 else "float32", metadata=plain)
        texts = {CONFIG_NAME: json.dumps(doc, indent=2) + "\n", CARD_NAME: model_card(self.config, plain)}
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex[:12]
        temporary = {name: directory / f".{name}.{tag}.tmp" for name in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)}
        try:
            save_file(state, str(temporary[WEIGHTS_NAME]), metadata={"format": "pt"})
            for name, text in texts.items():
                temporary[name].write_text(text, encoding="utf-8")
            for name, path in temporary.items():
                os.replace(path, directory / name)
        finally:
            for path in temporary.values():
                path.unlink(missing_ok=True)
        return directory

    @classmethod
    def from_pretrained(
        cls: type[_Model], directory: str | os.PathLike[str], *, config: ModelConfig | None = None, **kwargs: Any
    ) -> _Model:
        """Build a model from a directory written by :meth:`save_pretrained`, its weights loaded strictly.

        Args:
            directory: Folder holding ``config.json`` and ``model.safetensors`` (a Hub snapshot folder too).
            config: Configuration to build instead of the one in ``config.json`` (e.g. with other sampling
                settings); the weights must still fit it exactly.
            **kwargs: Passed on to the constructor, ``cls(config, **kwargs)``, e.g. ``as_loss=True``.

        Returns:
            The model, as the constructor leaves it (its parameters on the CPU).

        Raises:
            WeightsNotFoundError: If ``directory`` is not a directory or lacks one of the two files.
            CheckpointError: If ``config.json`` is invalid or of another architecture, the weights file is
                unreadable, or the weights do not fit the model (missing, unexpected, misshapen keys).
        """
        if not issubclass(cls, torch.nn.Module):
            raise TypeError(f"PretrainedMixin needs a torch.nn.Module subclass, got {cls.__name__}")
        directory = Path(directory)
        if not directory.is_dir():
            raise WeightsNotFoundError(f"{directory} is not a directory; expected a folder from save_pretrained()")
        if config is None:
            config, _ = read_config(directory / CONFIG_NAME)
        state = read_weights(directory / WEIGHTS_NAME)
        model = cls(config, **kwargs)  # type: ignore[call-arg]
        load_weights_strict(model, state, source=str(directory))
        return model
