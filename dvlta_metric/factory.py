"""``create()``: the one function users call to get a model, from a registry name, the Hub or a folder."""

from __future__ import annotations

import os
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
from .config import ModelConfig, config_differences
from .errors import CheckpointError, WeightsNotFoundError
from .hub import check_repo_id, hub_download, verify_sha256
from .model import DVLTAVQA
from .registry import WeightSource, check_openai_clip_config, list_models, model_info

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
REGISTRY_FREE_FIELDS: frozenset[str] = frozenset(
    {"name", "description", "fragment_view.num_clips", "fragment_view.seed", "frame_view.num_frames"}
)
"""Fields in which a registry entry with Hub weights may differ from the repository's ``config.json``: the
name, the description and how many clips / frames are sampled. Every other field describes the architecture or
what the weights were trained with, so a difference there is an error."""
_ACCELERATORS = ("cuda", "mps", "xpu", "hpu", "mtia")
_BACKEND_ERRORS = (RuntimeError, AssertionError, ImportError, OSError, AttributeError, ValueError)
"""What a backend's ``is_available()`` / ``device_count()`` raises when its runtime is broken or absent."""


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

    A registered name always means the registry entry, even when a file or folder of that name exists in the
    working directory; only an unregistered bare name that looks like a path is refused.

    Args:
        name: What the user passed to :func:`create`.

    Returns:
        The parsed name.

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: For a malformed Hub id (checked with huggingface_hub's own rules) or revision, an empty
            path, or an unregistered bare string that looks like a path (the message suggests ``local-dir:``).
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if name.startswith(HF_HUB_PREFIX):
        spec = name[len(HF_HUB_PREFIX) :]
        if spec.count("@") > 1:
            raise ValueError(f"{name!r}: more than one '@'; expected 'hf-hub:org/name' or 'hf-hub:org/name@revision'")
        repo, _, revision = spec.partition("@")
        check_repo_id(repo, what=f"{name!r} (expected 'hf-hub:org/name' or 'hf-hub:org/name@revision')")
        if "@" in spec and not revision:
            raise ValueError(f"{name!r}: empty revision after '@'")
        return ModelName("hf-hub", repo, revision or None)
    if name.startswith(LOCAL_DIR_PREFIX):
        path = name[len(LOCAL_DIR_PREFIX) :]
        if not path:
            raise ValueError(f"{name!r}: expected 'local-dir:/path/to/model_directory'")
        return ModelName("local-dir", os.path.expanduser(path))
    if name in list_models():
        return ModelName("registry", name)
    looks_like_path = os.sep in name or "/" in name or name.startswith((".", "~")) or os.path.exists(name)
    if looks_like_path:
        raise ValueError(
            f"{name!r} looks like a path, not a model name. To load a saved model directory use "
            f"create('local-dir:{name}'); for the Hub use 'hf-hub:org/name'. "
            f"Registered names: {', '.join(list_models())}."
        )
    return ModelName("registry", name)


def _backend_available(device_type: str) -> bool:
    """Whether PyTorch can use ``device_type`` here; never raises (a broken backend counts as absent)."""
    if device_type == "cpu":
        return True
    backend = getattr(torch.backends, "mps", None) if device_type == "mps" else getattr(torch, device_type, None)
    is_available = getattr(backend, "is_available", None)
    if not callable(is_available):
        return False
    try:
        return bool(is_available())
    except _BACKEND_ERRORS:  # a backend whose runtime fails to initialise is as good as absent
        return False


def _device_count(device_type: str) -> int | None:
    """Number of devices of ``device_type``, or ``None`` where PyTorch does not say."""
    count = getattr(getattr(torch, device_type, None), "device_count", None)
    if not callable(count):
        return None
    try:
        return int(count())
    except _BACKEND_ERRORS:  # as in _backend_available: unknown rather than an error
        return None


def available_devices() -> list[str]:
    """Device types this machine can run the model on.

    Returns:
        ``"cpu"`` followed by every available accelerator among CUDA, MPS, XPU, HPU and MTIA.
    """
    return ["cpu", *(t for t in _ACCELERATORS if _backend_available(t))]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Turn the ``device`` argument of :func:`create` into a :class:`torch.device` that exists on this machine.

    Args:
        device: ``None`` for CUDA when available, else the CPU; or anything :class:`torch.device` accepts
            (``"cpu"``, ``"cuda:1"``, ``"mps"``, ``"xpu"``, a :class:`torch.device`).

    Returns:
        The device.

    Raises:
        ValueError: For an unparsable device; the ``"meta"`` device (it holds no data, and the model needs real
            weights); a backend that is not available here (CUDA, MPS, XPU, HPU, ... : checked with its
            ``is_available()``); or a device index beyond the devices present. The message lists the available
            device types.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ValueError(f"invalid device {device!r}: {err}") from None
    if dev.type == "meta":
        raise ValueError(
            f"device {str(dev)!r} cannot run the model: meta tensors hold no data, and the model needs real weights; "
            f"use one of: {', '.join(available_devices())}"
        )
    if not _backend_available(dev.type):
        raise ValueError(
            f"device {str(dev)!r} was requested but {dev.type} is not available on this machine; "
            f"available device types: {', '.join(available_devices())}"
        )
    if dev.type != "cpu" and dev.index is not None:
        count = _device_count(dev.type)
        if count is not None and dev.index >= count:
            raise ValueError(
                f"device {str(dev)!r} was requested but this machine has {count} {dev.type} device(s), numbered from 0"
            )
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

    A registry entry with Hub weights is built with its *registered* configuration. The repository's
    ``config.json`` must agree with it except in the fields of :data:`REGISTRY_FREE_FIELDS` (name,
    description, ``fragment_view.num_clips`` / ``seed``, ``frame_view.num_frames``), where the registered values
    are used; any other difference raises :class:`~dvlta_metric.CheckpointError` naming the fields.

    Args:
        name: A registered model name (see :func:`list_models`), ``hf-hub:org/name[@revision]`` for a Hub
            repository, or ``local-dir:/path`` for a directory written by :meth:`DVLTAVQA.save_pretrained`.
        pretrained: Load weights. ``False`` builds the architecture with random weights and downloads
            nothing (for a Hub name, only ``config.json`` is read).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"xpu"``, a :class:`torch.device`, or ``None``
            for CUDA when available (see :func:`resolve_device`).
        as_loss: Record gradients on every call so the score can be used as a differentiable loss. The
            model's own parameters are frozen and it stays in eval mode (see :meth:`DVLTAVQA.train`).
        cache_dir: Hugging Face cache directory (default: the standard one, set by ``HF_HOME`` or
            ``HF_HUB_CACHE``).
        revision: Hub branch, tag or commit (same as ``@revision`` in the name). Only accepted where it
            chooses what is downloaded: ``hf-hub:`` names (also with ``pretrained=False``, which reads that
            revision's ``config.json``) and ``dvlta-vqa-zeroshot`` (the OpenAI CLIP revision) with
            ``pretrained=True``; anywhere else it is an error rather than silently ignored.
        precision: ``"fp32"``, or ``"fp16"`` / ``"bf16"`` to run the Swin3D and CLIP backbones in half
            precision (see :meth:`DVLTAVQA.set_precision`).
        **overrides: Fields of :class:`~dvlta_metric.config.ModelConfig` to change, e.g.
            ``fusion="softmax"`` or ``fragment_view={"num_clips": 1}``.

    Returns:
        The model in eval mode on ``device``.

    Raises:
        ValueError: Unknown name (with close matches suggested) or device, a registry entry whose weights are
            not available, ``revision`` where it has no effect, or overrides that the zero-shot weights do not
            cover (another branch or adapters on ``dvlta-vqa-zeroshot`` with ``pretrained=True``).
        TypeError: Unknown override, ``pretrained`` / ``as_loss`` not a bool, or ``revision`` not a string.
        WeightsNotFoundError: Weights not in the cache and not downloadable (the message says what to do).
        CheckpointError: Weights that fail their SHA-256 check or do not match the architecture, or a registry
            entry whose configuration differs from its repository's ``config.json`` in an architecture field.
    """
    for flag, value in (("pretrained", pretrained), ("as_loss", as_loss)):
        if not isinstance(value, bool):
            raise TypeError(f"create(): {flag} must be True or False, got {value!r}")
    if revision is not None and not isinstance(revision, str):
        raise TypeError(f"create(): revision must be a string (branch, tag or commit) or None, got {revision!r}")
    if revision is not None and (not revision or "@" in revision):
        raise ValueError(f"create(): revision must be a branch, tag or commit hash, got {revision!r}")
    parsed = parse_model_name(name)
    dev = resolve_device(device)
    state: dict[str, torch.Tensor] | None = None
    clip_source: WeightSource | None = None
    if parsed.kind == "registry":
        info = model_info(parsed.target)
        config = info.config
        source = info.weights
        if pretrained and source.kind not in ("hub", "openai-clip"):
            raise _unavailable(parsed.target, source)
        if revision is not None:
            if source.kind == "hub":
                raise ValueError(
                    f"{name!r} pins its own revision; pass revision only with 'hf-hub:' names "
                    "(or with 'dvlta-vqa-zeroshot', to choose the OpenAI CLIP revision)"
                )
            if not pretrained:
                raise ValueError(
                    f"revision={revision!r} has no effect with pretrained=False for the registry name {name!r} "
                    "(nothing is downloaded); leave it out"
                )
        if pretrained:
            if source.kind == "hub":
                files = _hub_files(source.repo_id or "", source.revision, cache_dir, source.filename)
                hub_config, state = _load_files(*files, source=name, sha256=source.sha256)
                _check_registered_config(name, config, hub_config, source)
            else:
                clip_source = source
    elif parsed.kind == "hf-hub":
        if revision is not None and parsed.revision is not None and revision != parsed.revision:
            raise ValueError(f"{name!r} names revision {parsed.revision!r} but revision={revision!r} was passed")
        rev = parsed.revision or revision
        if pretrained:
            config, state = _load_files(*_hub_files(parsed.target, rev, cache_dir, WEIGHTS_NAME), source=name)
        else:
            config, _ = read_config(hub_download(parsed.target, CONFIG_NAME, revision=rev, cache_dir=cache_dir))
    else:
        if revision is not None:
            raise ValueError(
                f"revision={revision!r} has no meaning for {name!r}: a local directory has no revisions; "
                "leave it out (revisions are for 'hf-hub:' names)"
            )
        directory = Path(parsed.target)
        if not directory.is_dir():
            raise WeightsNotFoundError(f"{name!r}: {directory} is not a directory")
        if pretrained:
            config, state = _load_files(directory / CONFIG_NAME, directory / WEIGHTS_NAME, source=name)
        else:
            config, _ = read_config(directory / CONFIG_NAME)
    if overrides:
        config = config.replace(**overrides)
    if clip_source is not None:
        check_openai_clip_config(config)
    model = DVLTAVQA(config, as_loss=as_loss).set_precision(precision)
    if state is not None:
        load_weights_strict(model, state, source=name)
    if clip_source is not None:
        from .zeroshot import load_clip_weights

        load_clip_weights(
            model, cache_dir=cache_dir, revision=revision or clip_source.revision, sha256=clip_source.sha256
        )
    if as_loss:  # a fixed metric: only what the caller optimises should learn
        model.requires_grad_(False)
    return model.to(dev).eval()


def _check_registered_config(name: str, registered: ModelConfig, hub: ModelConfig, source: WeightSource) -> None:
    """Refuse a registry entry whose configuration the repository's weights were not made for.

    Raises:
        CheckpointError: Naming every differing field outside :data:`REGISTRY_FREE_FIELDS`, with both values.
    """
    differing = [f for f in config_differences(registered, hub) if f not in REGISTRY_FREE_FIELDS]
    if not differing:
        return
    reg, doc = registered.to_dict(), hub.to_dict()

    def value(tree: dict[str, Any], dotted: str) -> Any:
        for part in dotted.split("."):
            tree = tree[part]
        return tree

    listed = "; ".join(f"{f}: registered {value(reg, f)!r}, config.json {value(doc, f)!r}" for f in differing)
    raise CheckpointError(
        f"{name!r}: the registered configuration differs from the config.json of hf-hub:{source.repo_id} in "
        f"field(s) the weights depend on ({listed}). Only {', '.join(sorted(REGISTRY_FREE_FIELDS))} may differ; "
        "fix the registry entry (or pass the changes to create() as overrides)."
    )


def _hub_files(repo_id: str, revision: str | None, cache_dir: str | Path | None, weights: str) -> tuple[Path, Path]:
    """Download ``config.json`` and the weights file of one repository revision.

    Args:
        repo_id: ``org/name``.
        revision: Branch, tag or commit, or ``None`` for ``main``.
        cache_dir: Hub cache directory, or ``None`` for the standard one.
        weights: Name of the weights file in the repository.

    Returns:
        Local paths of ``config.json`` and of the weights file.

    Raises:
        WeightsNotFoundError: As :func:`~dvlta_metric.hub.hub_download`.
    """
    config_path = hub_download(repo_id, CONFIG_NAME, revision=revision, cache_dir=cache_dir)
    weights_path = hub_download(repo_id, weights, revision=revision, cache_dir=cache_dir)
    return config_path, weights_path
