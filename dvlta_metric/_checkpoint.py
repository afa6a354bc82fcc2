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
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ._model_card import model_card
from .calibration import Calibration
from .config import ModelConfig
from .errors import CheckpointError, WeightsNotFoundError
from .version import __version__

ARCHITECTURE = "dvlta-vqa"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
_VIEW_KEYS = ("fragment_view", "frame_view")
_MAX_LISTED = 8
MAX_CONFIG_BYTES = 1 << 20
"""Largest ``config.json`` read (1 MiB; the files :meth:`PretrainedMixin.save_pretrained` writes are a few KiB)."""
MAX_JSON_DEPTH = 32
"""Deepest nesting of objects and lists accepted in ``config.json`` (the format itself needs 4)."""
MAX_PARAMETERS = 1_000_000_000
"""Most parameters and buffers (elements) a model read from a directory may have: 4 GB as float32. The paper's
model has about 116 M."""


def config_to_json(
    config: ModelConfig,
    *,
    storage_dtype: str,
    metadata: dict[str, Any] | None,
    calibration: Calibration | None = None,
) -> dict[str, Any]:
    """The ``config.json`` document of a model.

    Sections: ``architecture``, ``model_args`` (sizes and options), ``preprocessing`` (both views),
    ``prompts``, ``storage_dtype``, ``library`` (name and version), free-form ``metadata`` (training data,
    splits, results, licence) and, when the model has one, its MOS ``calibration``
    (:meth:`~dvlta_metric.calibration.Calibration.to_dict`).

    Args:
        config: The model's configuration.
        storage_dtype: How the floating-point weights are stored (``"float32"`` or ``"float16"``).
        metadata: Free-form metadata, already JSON-compatible (see :func:`normalise_metadata`), or ``None``.
        calibration: The model's MOS calibration, or ``None``.

    Returns:
        The document, ready for :func:`json.dumps`.
    """
    args = config.to_dict()
    preprocessing = {key: args.pop(key) for key in _VIEW_KEYS}
    prompts = args.pop("prompts")
    doc = {
        "architecture": ARCHITECTURE,
        "model_args": args,
        "preprocessing": preprocessing,
        "prompts": prompts,
        "storage_dtype": storage_dtype,
        "library": {"name": "dvlta-metric", "version": __version__},
        "metadata": metadata or {},
    }
    if calibration is not None:
        doc["calibration"] = calibration.to_dict()
    return doc


def calibration_from_json(doc: dict[str, Any], *, source: str) -> Calibration | None:
    """The ``calibration`` section of a parsed ``config.json``, checked field by field (``None`` when absent).

    Raises:
        CheckpointError: If the section is there but invalid.
    """
    section = doc.get("calibration") if isinstance(doc, dict) else None
    if section is None:
        return None
    try:
        return Calibration.from_dict(section)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: config.json has an invalid calibration section: {err}") from None


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
        CheckpointError: If it is larger than :data:`MAX_CONFIG_BYTES`, not valid JSON, nested deeper than
            :data:`MAX_JSON_DEPTH`, or not a DVLTA-VQA config (sizes beyond their bounds included, see
            :data:`dvlta_metric.config.LIMITS`).
    """
    return config_from_json(read_document(path), source=str(path))


def read_calibration(path: str | Path) -> Calibration | None:
    """The MOS calibration stored in a ``config.json`` file, read under :func:`read_document`'s limits.

    Args:
        path: The file.

    Returns:
        The calibration, or ``None`` when the file has none.

    Raises:
        WeightsNotFoundError, CheckpointError: As :func:`read_document`, or for an invalid calibration section.
    """
    return calibration_from_json(read_document(path), source=str(path))


def write_calibration(directory: str | Path, calibration: Calibration | None) -> Path:
    """Store (or, with ``None``, remove) the MOS calibration in a model directory's ``config.json``, in place.

    The rest of the file is kept as it is; the new file is written under a temporary name and renamed over the old
    one. ``training`` evaluation calls it with the fit of a test split; the weights are not touched.

    Args:
        directory: A folder written by :meth:`PretrainedMixin.save_pretrained`.
        calibration: The calibration, or ``None``.

    Returns:
        The ``config.json`` path.

    Raises:
        WeightsNotFoundError, CheckpointError: As :func:`read_config`.
    """
    path = Path(directory) / CONFIG_NAME
    doc = read_document(path)
    config_from_json(doc, source=str(path))  # a DVLTA-VQA config, or refused
    if calibration is None:
        doc.pop("calibration", None)
    else:
        doc["calibration"] = calibration.to_dict()
    temporary = path.with_name(f".{CONFIG_NAME}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        temporary.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def read_document(path: str | Path) -> Any:
    """Parse a ``config.json`` file, refusing one that is too large or nested too deeply.

    Raises:
        WeightsNotFoundError: If the file does not exist.
        CheckpointError: If it is larger than :data:`MAX_CONFIG_BYTES`, not valid JSON or nested deeper than
            :data:`MAX_JSON_DEPTH`.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"{path} does not exist; a model directory needs {CONFIG_NAME}")
    with path.open("rb") as fh:
        data = fh.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise CheckpointError(
            f"{path}: config.json is larger than {MAX_CONFIG_BYTES} bytes, far beyond any DVLTA-VQA config (a few "
            "KiB); it was not read. Is this the right folder?"
        )
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:
        doc = None  # nested too deeply for the parser: refused below with the same message as a deep document
    depth = json_depth(doc) if doc is not None else MAX_JSON_DEPTH + 1
    if depth > MAX_JSON_DEPTH:
        raise CheckpointError(
            f"{path}: config.json nests objects or lists more than {MAX_JSON_DEPTH} levels deep; a DVLTA-VQA "
            "config needs 4. It was not loaded."
        )
    return doc


def json_depth(doc: object) -> int:
    """How deeply objects and lists nest in a parsed JSON document (0 for a number or string), without recursion.

    Args:
        doc: A value :func:`json.loads` returned.

    Returns:
        The nesting depth.
    """
    deepest = 0
    stack: list[tuple[object, int]] = [(doc, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        else:
            continue
        deepest = max(deepest, depth + 1)
    return deepest


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file into a state dict on the CPU.

    Args:
        path: The ``.safetensors`` file.

    Returns:
        Tensors by key, in the file's dtypes.

    Raises:
        WeightsNotFoundError: If the file does not exist.
        CheckpointError: If it is truncated or not a safetensors file, or a floating-point tensor holds NaN or
            infinity (the message names the tensors).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"{path} does not exist; a model directory needs {WEIGHTS_NAME}")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {err}") from None
    bad = [
        f"{key} ({int((~torch.isfinite(value)).sum())} of {value.numel()} values)"
        for key, value in state.items()
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all())
    ]
    if bad:
        raise CheckpointError(
            f"{path}: tensor(s) holding NaN or infinity: {_listing(bad)}. Such weights give NaN scores; the file "
            "is damaged (a flipped bit?) or was saved from a diverged training run. It was not loaded."
        )
    return state


def read_weight_shapes(path: str | Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """The shape and kind of every tensor of a safetensors file, from its header only (no tensor data is read).

    Args:
        path: The ``.safetensors`` file.

    Returns:
        ``{key: (shape, dtype)}``, the dtype named as torch names it (``"float32"``, ``"int64"``, ...).

    Raises:
        WeightsNotFoundError: If the file does not exist.
        CheckpointError: If its header cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"{path} does not exist; a model directory needs {WEIGHTS_NAME}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            out = {}
            for key in fh.keys():
                piece = fh.get_slice(key)
                out[key] = (tuple(int(n) for n in piece.get_shape()), _header_dtype(str(piece.get_dtype())))
            return out
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {err}") from None


_HEADER_DTYPES = {"F": "float", "BF": "bfloat", "I": "int", "U": "uint", "C": "complex"}


def _header_dtype(dtype: str) -> str:
    """Torch's name of a safetensors header dtype: ``"F32"`` -> ``"float32"``, ``"BF16"`` -> ``"bfloat16"``."""
    if dtype == "BOOL":
        return "bool"
    letters = dtype.rstrip("0123456789_EM")
    prefix = _HEADER_DTYPES.get(letters)
    return prefix + dtype[len(letters) :].lower() if prefix else dtype.lower()


def _name_kind(name: str) -> str:
    """``"bool"``, ``"complex"``, ``"float"`` or ``"int"`` for a dtype named as torch names it."""
    if name == "bool":
        return "bool"
    if name.startswith("complex"):
        return "complex"
    return "float" if name.startswith(("float", "bfloat")) else "int"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED else "")


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
    check_weights_fit(
        {k: (tuple(v.shape), _dtype_name(v.dtype)) for k, v in own.items()},
        {k: (tuple(v.shape), _dtype_name(v.dtype)) for k, v in state.items()},
        source=source,
    )
    cast = {
        k: (v.to(own[k].dtype) if v.is_floating_point() and own[k].is_floating_point() else v) for k, v in state.items()
    }
    module.load_state_dict(cast, strict=True)


def check_weights_fit(
    expected: dict[str, tuple[tuple[int, ...], str]], stored: dict[str, tuple[tuple[int, ...], str]], *, source: str
) -> None:
    """Compare the tensors a model expects with those a file holds, by key, shape and dtype kind only.

    A stored tensor may differ from its slot in width only (float16 into float32); an integer, boolean or
    complex tensor in a floating-point slot, or the reverse, is refused.

    Args:
        expected: ``{key: (shape, dtype name)}`` of the model (names as :func:`read_weight_shapes` gives them).
        stored: ``{key: (shape, dtype name)}`` of the file.
        source: Where the file came from, for error messages.

    Raises:
        CheckpointError: Listing the first missing keys, unexpected keys, shape mismatches, or kind mismatches.
    """
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    shapes = [
        f"{k} {stored[k][0]} != {expected[k][0]}" for k in expected if k in stored and stored[k][0] != expected[k][0]
    ]
    kinds = [
        f"{k} has {stored[k][1]}, expected {expected[k][1]}"
        for k in expected
        if k in stored and _name_kind(stored[k][1]) != _name_kind(expected[k][1])
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if shapes:
        problems.append(f"wrong shapes (checkpoint != model): {_listing(shapes)}")
    if kinds:
        problems.append(f"wrong dtypes: {_listing(kinds)}")
    if problems:
        raise CheckpointError(f"{source}: the weights do not match the model; " + "; ".join(problems))


def expected_tensors(
    cls: type[torch.nn.Module], config: ModelConfig, *, source: str, **kwargs: Any
) -> dict[str, tuple[tuple[int, ...], str]]:
    """Build ``cls(config, **kwargs)`` on the ``meta`` device (no memory) and list its tensors.

    Run before the real model is built, so that a ``config.json`` asking for a huge model, or one its weights do
    not fit, is refused before anything is allocated.

    Args:
        cls: The model class.
        config: Its configuration.
        source: Where the configuration came from, for error messages.
        **kwargs: Passed on to the constructor.

    Returns:
        ``{key: (shape, dtype name)}`` of its state dict.

    Raises:
        CheckpointError: If the model would hold more than :data:`MAX_PARAMETERS` elements.
    """
    with torch.device("meta"):
        skeleton = cls(config, **kwargs)  # type: ignore[call-arg]
    own = skeleton.state_dict()
    total = sum(v.numel() for v in own.values())
    if total > MAX_PARAMETERS:
        raise CheckpointError(
            f"{source}: the configuration describes a model of {total} parameters, more than the bound of "
            f"{MAX_PARAMETERS} (dvlta_metric._checkpoint.MAX_PARAMETERS); it was not built. Check its sizes."
        )
    return {k: (tuple(v.shape), _dtype_name(v.dtype)) for k, v in own.items()}


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
    calibration: Calibration | None = None
    """The model's MOS calibration (:class:`~dvlta_metric.calibration.Calibration`), written to and read from
    ``config.json``; ``None`` when it has none."""

    def save_pretrained(
        self, directory: str | os.PathLike[str], *, fp16: bool = False, metadata: dict[str, Any] | None = None
    ) -> Path:
        """Write ``config.json``, ``model.safetensors`` and a model card ``README.md`` to ``directory``.

        The model's MOS calibration (:attr:`calibration`), if it has one, goes into ``config.json`` with the
        configuration. Load it back with :meth:`from_pretrained` or ``dvlta_metric.create("local-dir:<directory>")``, or
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
        doc = config_to_json(
            self.config, storage_dtype="float16" if fp16 else "float32", metadata=plain, calibration=self.calibration
        )
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
            The model, as the constructor leaves it (its parameters on the CPU), with the MOS calibration of
            ``config.json`` if it holds one (:attr:`calibration`).

        Raises:
            WeightsNotFoundError: If ``directory`` is not a directory or lacks one of the two files.
            CheckpointError: If ``config.json`` is invalid (its calibration too) or of another architecture, the
                weights file is unreadable or holds NaN or infinity, the model would exceed
                :data:`MAX_PARAMETERS`, or the weights do not fit the model (missing, unexpected, misshapen keys).
                Sizes and keys are compared before the model is built.
        """
        if not issubclass(cls, torch.nn.Module):
            raise TypeError(f"PretrainedMixin needs a torch.nn.Module subclass, got {cls.__name__}")
        directory = Path(directory)
        if not directory.is_dir():
            raise WeightsNotFoundError(f"{directory} is not a directory; expected a folder from save_pretrained()")
        doc = read_document(directory / CONFIG_NAME) if config is None or (directory / CONFIG_NAME).is_file() else None
        if config is None:
            config, _ = config_from_json(doc, source=str(directory / CONFIG_NAME))
        # keys and shapes first, from the model built on the meta device and the file's header: a config or
        # weights file that does not fit is refused before any memory is allocated
        expected = expected_tensors(cls, config, source=str(directory), **kwargs)
        check_weights_fit(expected, read_weight_shapes(directory / WEIGHTS_NAME), source=str(directory))
        state = read_weights(directory / WEIGHTS_NAME)
        model = cls(config, **kwargs)  # type: ignore[call-arg]
        load_weights_strict(model, state, source=str(directory))
        if doc is not None:
            model.calibration = calibration_from_json(doc, source=str(directory / CONFIG_NAME))
        return model
