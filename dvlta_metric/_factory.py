"""``create()``: the one function users call to get a model, from a registry name, the Hub or a folder.

It asks each part once: the name resolves to a model directory (a registry entry's or ``hf-hub:`` repository's
Hub snapshot, or a ``local-dir:`` folder), :meth:`~dvlta_metric._checkpoint.PretrainedMixin.from_pretrained` reads
and loads it, and the model is placed on its device.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ._checkpoint import CONFIG_NAME, WEIGHTS_NAME, expected_tensors, read_config
from ._hub import check_repo_id, check_revision, hub_directory, sha256_of, verify_sha256
from ._registry import LOADABLE_KINDS, ModelInfo, WeightSource, check_openai_clip_config, list_models, model_info
from .config import ModelConfig, config_differences
from .errors import CheckpointError, WeightsNotFoundError, WeightsUnavailableError
from .model import DVLTAVQA

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
        target: Registry name (the full name, also for an alias), Hub repository id, or directory.
        revision: Hub revision after ``@`` (``hf-hub`` only).
    """

    kind: Literal["registry", "hf-hub", "local-dir"]
    target: str
    revision: str | None = None


def parse_model_name(name: str) -> ModelName:
    """Parse ``dvlta-vqa``, ``dvlta-vqa.konvid``, ``hf-hub:org/name[@revision]`` or ``local-dir:/path``.

    A registered name or alias always means the registry entry, even when a file or folder of that name exists
    in the working directory; only an unregistered bare name that looks like a path is refused. An unregistered
    name that does not look like a path parses as a registry name (:func:`create` then reports it unknown).

    Args:
        name: What the user passed to :func:`create`.

    Returns:
        The parsed name; an alias is replaced by the full name it stands for.

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: For a malformed Hub id (checked with huggingface_hub's own rules) or revision, an empty
            path, or an unregistered bare string that looks like a path (the message suggests ``local-dir:``).
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if name.startswith(HF_HUB_PREFIX):
        repo, at, revision = name[len(HF_HUB_PREFIX) :].partition("@")
        if "@" in revision:
            raise ValueError(f"{name!r}: more than one '@'; expected 'hf-hub:org/name' or 'hf-hub:org/name@revision'")
        check_repo_id(repo, what=f"{name!r} (expected 'hf-hub:org/name' or 'hf-hub:org/name@revision')")
        if at and not revision:
            raise ValueError(f"{name!r}: empty revision after '@'")
        return ModelName("hf-hub", repo, revision or None)
    if name.startswith(LOCAL_DIR_PREFIX):
        path = name[len(LOCAL_DIR_PREFIX) :]
        if not path:
            raise ValueError(f"{name!r}: expected 'local-dir:/path/to/model_directory'")
        return ModelName("local-dir", os.path.expanduser(path))
    with contextlib.suppress(ValueError):
        return ModelName("registry", model_info(name).name)
    if os.sep in name or "/" in name or name.startswith((".", "~")) or os.path.exists(name):
        raise ValueError(
            f"{name!r} looks like a path, not a model name. To load a saved model directory use "
            f"create('local-dir:{name}'); for the Hub use 'hf-hub:org/name'. "
            f"Registered names: {', '.join(list_models())}."
        )
    return ModelName("registry", name)


def _device_count(device_type: str) -> int:
    """How many ``device_type`` devices PyTorch can use here: 0 for an absent or broken backend."""
    if device_type == "cpu":
        return 1
    try:
        backend = torch.get_device_module(device_type)
        return int(backend.device_count()) if backend.is_available() else 0
    except _BACKEND_ERRORS:  # no such backend in this build, or its runtime fails to initialise
        return 0


def available_devices() -> list[str]:
    """Device types this machine can run the model on.

    Returns:
        ``"cpu"`` followed by every available accelerator among CUDA, MPS, XPU, HPU and MTIA.
    """
    return ["cpu", *(t for t in _ACCELERATORS if _device_count(t))]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Turn the ``device`` argument of :func:`create` into a :class:`torch.device` that exists on this machine.

    Args:
        device: ``None`` for CUDA when available, else the CPU; or anything :class:`torch.device` accepts
            (``"cpu"``, ``"cuda:1"``, ``"mps"``, ``"xpu"``, a :class:`torch.device`).

    Returns:
        The device.

    Raises:
        ValueError: For an unparsable device; the ``"meta"`` device (it holds no data, and the model needs real
            weights); a backend that is not available here (its ``is_available()`` says no, or it fails); or a
            device index beyond the devices present. The message lists the available device types.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ValueError(f"invalid device {device!r}: {err}") from None
    available = ", ".join(available_devices())
    if dev.type == "meta":
        raise ValueError(
            f"device {str(dev)!r} cannot run the model: meta tensors hold no data, and the model needs real weights; "
            f"use one of: {available}"
        )
    count = _device_count(dev.type)
    if not count:
        raise ValueError(
            f"device {str(dev)!r} was requested but {dev.type} is not available on this machine; "
            f"available device types: {available}"
        )
    if dev.type != "cpu" and dev.index is not None and dev.index >= count:
        raise ValueError(
            f"device {str(dev)!r} was requested but this machine has {count} {dev.type} device(s), numbered from 0"
        )
    return dev


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Draw random numbers from ``torch.manual_seed(seed)`` inside, leaving the caller's CPU generator as it was."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


def _unavailable(name: str, info: ModelInfo) -> WeightsUnavailableError:
    if info.weights.kind == "random":
        return WeightsUnavailableError(
            f"{name!r} is a test configuration with random weights only; "
            f"use dvlta_metric.create({name!r}, pretrained=False)."
        )
    return WeightsUnavailableError(
        f"trained weights for {name!r} are not published yet. Options: "
        "(1) 'dvlta-vqa-zeroshot', a no-training metric built from OpenAI CLIP that works today; "
        "(2) train your own (python -m dvlta_metric_train.train) and load it with create('local-dir:/path'); "
        f"(3) create({name!r}, pretrained=False) for a randomly initialised model."
    )


def _locate(
    name: str, parsed: ModelName, *, pretrained: bool, revision: str | None, cache_dir: str | Path | None
) -> tuple[ModelConfig, Path | None, WeightSource | None]:
    """Where a model comes from; the one place where the revision rules live.

    Returns:
        Its configuration; the directory to load the weights from (``None`` when there is none); and the OpenAI
        CLIP weight source when those weights are to be loaded (``dvlta-vqa-zeroshot`` with ``pretrained=True``).
    """
    if parsed.kind == "local-dir":
        if revision is not None:
            raise ValueError(
                f"revision={revision!r} has no meaning for {name!r}: a local directory has no revisions; "
                "leave it out (revisions are for 'hf-hub:' names)"
            )
        directory = Path(parsed.target)
        if not directory.is_dir():
            raise WeightsNotFoundError(f"{name!r}: {directory} is not a directory")
        return read_config(directory / CONFIG_NAME)[0], directory, None
    if parsed.kind == "hf-hub":
        if revision is not None and parsed.revision is not None and revision != parsed.revision:
            raise ValueError(f"{name!r} names revision {parsed.revision!r} but revision={revision!r} was passed")
        files = (CONFIG_NAME, WEIGHTS_NAME) if pretrained else (CONFIG_NAME,)
        directory = hub_directory(parsed.target, files, revision=parsed.revision or revision, cache_dir=cache_dir)
        return read_config(directory / CONFIG_NAME)[0], directory, None
    info = model_info(parsed.target)
    source = info.weights
    if pretrained and source.kind not in LOADABLE_KINDS:
        raise _unavailable(name, info)
    if revision is not None and source.kind == "hub":
        raise ValueError(
            f"{name!r} pins its own revision; pass revision only with 'hf-hub:' names "
            "(or with 'dvlta-vqa-zeroshot', to choose the OpenAI CLIP revision)"
        )
    if revision is not None and not pretrained:
        raise ValueError(
            f"revision={revision!r} has no effect with pretrained=False for the registry name {name!r} "
            "(nothing is downloaded); leave it out"
        )
    if not pretrained:
        return info.config, None, None
    if source.kind == "openai-clip":
        return info.config, None, source
    files = (CONFIG_NAME, WEIGHTS_NAME)
    directory = hub_directory(source.repo_id or "", files, revision=source.revision, cache_dir=cache_dir)
    if source.sha256 is not None:
        verify_sha256(directory / WEIGHTS_NAME, source.sha256, what=name)
    _check_registered_config(name, info, read_config(directory / CONFIG_NAME)[0])
    return info.config, directory, None


def create(
    name: str,
    *,
    pretrained: bool = True,
    device: str | torch.device | None = None,
    as_loss: bool = False,
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    precision: str = "fp32",
    seed: int | None = 0,
    **overrides: Any,
) -> DVLTAVQA:
    """Create a DVLTA-VQA model.

    A registry entry with Hub weights is built with its *registered* configuration. The repository's
    ``config.json`` must agree with it except in the fields of :data:`REGISTRY_FREE_FIELDS` (name,
    description, ``fragment_view.num_clips`` / ``seed``, ``frame_view.num_frames``), where the registered values
    are used; any other difference raises :class:`~dvlta_metric.CheckpointError` naming the fields.

    Args:
        name: A registered model name or alias (see :func:`list_models`), ``hf-hub:org/name[@revision]`` for a
            Hub repository, or ``local-dir:/path`` for a directory written by :meth:`DVLTAVQA.save_pretrained`.
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
        seed: Seed of the random initialisation, so that ``pretrained=False`` gives the same weights on every
            run: those of ``torch.manual_seed(seed)`` followed by building the model. The caller's random
            number generator is left as it was. ``None`` draws from the caller's generator instead. With
            ``pretrained=True`` every weight is loaded, so the seed makes no difference.
        **overrides: Fields of :class:`~dvlta_metric.config.ModelConfig` to change, e.g.
            ``fusion="softmax"`` or ``fragment_view={"num_clips": 1}``.

    Returns:
        The model in eval mode on ``device``.

    Raises:
        ValueError: Unknown name (with close matches suggested) or device, a registry entry whose weights are
            not available (:class:`~dvlta_metric.errors.WeightsUnavailableError`), ``revision`` where it has no
            effect, or overrides that the zero-shot weights do not cover (another branch or adapters on
            ``dvlta-vqa-zeroshot`` with ``pretrained=True``).
        TypeError: Unknown override, ``pretrained`` / ``as_loss`` not a bool, ``revision`` not a string, or
            ``seed`` not an int or ``None``.
        WeightsNotFoundError: Weights not in the cache and not downloadable (the message says what to do).
        CheckpointError: Weights that fail their SHA-256 check or do not match the architecture, or a registry
            entry whose configuration differs from its repository's ``config.json`` in an architecture field.
    """
    for flag, value in (("pretrained", pretrained), ("as_loss", as_loss)):
        if not isinstance(value, bool):
            raise TypeError(f"create(): {flag} must be True or False, got {value!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"create(): seed must be an integer or None, got {seed!r}")
    check_revision(revision, what="create(): revision")
    parsed = parse_model_name(name)
    dev = resolve_device(device)
    config, directory, clip = _locate(name, parsed, pretrained=pretrained, revision=revision, cache_dir=cache_dir)
    if overrides:
        config = config.replace(**overrides)
    if clip is not None:
        check_openai_clip_config(config)
    with _seeded(seed):
        if pretrained and directory is not None:
            model = DVLTAVQA.from_pretrained(directory, config=config, as_loss=as_loss)
        else:
            if parsed.kind != "registry":  # sizes read from a config.json: refused before anything is allocated
                expected_tensors(DVLTAVQA, config, source=name, as_loss=as_loss)
            model = DVLTAVQA(config, as_loss=as_loss)
    model.weights_origin = _origin(parsed, directory if pretrained else None, seed)
    if clip is not None:
        from ._zeroshot import load_clip_weights

        load_clip_weights(model, cache_dir=cache_dir, revision=revision or clip.revision, sha256=clip.sha256)
        model.weights_origin = f"{parsed.target} ({model.weights_origin})"
    model.set_precision(precision)
    if as_loss:  # a fixed metric: only what the caller optimises should learn
        model.requires_grad_(False)
    return model.to(dev).eval()


def _origin(parsed: ModelName, directory: Path | None, seed: int | None) -> str:
    """Where :func:`create` took the weights from, with the exact commit (a Hub snapshot folder is named by it)."""
    if directory is None:
        return "random" if seed is None else f"random (seed {seed})"
    if parsed.kind == "local-dir":
        folder = directory.resolve()
        return f"local-dir:{folder} (sha256 {sha256_of(folder / WEIGHTS_NAME)[:12]})"
    if parsed.kind == "hf-hub":
        return f"hf-hub:{parsed.target}@{directory.name}"
    info = model_info(parsed.target)
    return f"{parsed.target} (hf-hub:{info.weights.repo_id}@{directory.name})"


def weights_label(model: DVLTAVQA) -> str:
    """What a results file records in its ``weights`` column: where the weights came from, and the precision.

    The label holds the revision actually used (the commit of the Hub snapshot that was loaded, not the branch
    asked for) or, for a ``local-dir:`` folder, the first 12 hex digits of its ``model.safetensors``'s SHA-256,
    so that two runs agree on the label only if they used the same weights: e.g. ``"random (seed 0), fp32"``,
    ``"local-dir:/models/a (sha256 0123456789ab), fp32"``, ``"hf-hub:org/name@<40-hex commit>, bf16"``,
    ``"dvlta-vqa.konvid (hf-hub:org/name@<commit>), fp32"`` or
    ``"dvlta-vqa-zeroshot (hf-hub:timm/vit_base_patch16_clip_224.openai@<commit>), fp32"``.

    Args:
        model: A model made by :func:`create`.

    Returns:
        The label.

    Raises:
        TypeError: If ``model`` is not a :class:`~dvlta_metric.model.DVLTAVQA`.
    """
    if not isinstance(model, DVLTAVQA):
        raise TypeError(f"weights_label expects a DVLTAVQA model made by create(), got {type(model).__name__}")
    return f"{model.weights_origin}, {model.precision}"


def _check_registered_config(name: str, info: ModelInfo, hub: ModelConfig) -> None:
    """Refuse a registry entry whose configuration the repository's weights were not made for.

    Raises:
        CheckpointError: Naming every differing field outside :data:`REGISTRY_FREE_FIELDS`, with both values.
    """
    differing = [f for f in config_differences(info.config, hub) if f not in REGISTRY_FREE_FIELDS]
    if not differing:
        return
    reg, doc = info.config.to_dict(), hub.to_dict()

    def value(tree: dict[str, Any], dotted: str) -> Any:
        for part in dotted.split("."):
            tree = tree[part]
        return tree

    listed = "; ".join(f"{f}: registered {value(reg, f)!r}, config.json {value(doc, f)!r}" for f in differing)
    raise CheckpointError(
        f"{name!r}: the registered configuration differs from the config.json of hf-hub:{info.weights.repo_id} in "
        f"field(s) the weights depend on ({listed}). Only {', '.join(sorted(REGISTRY_FREE_FIELDS))} may differ; "
        "fix the registry entry (or pass the changes to create() as overrides)."
    )
