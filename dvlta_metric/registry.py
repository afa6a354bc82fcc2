"""The registry of named model configurations.

``register_model`` adds a :class:`~dvlta_metric.config.ModelConfig` under its name; :func:`list_models` and
:func:`get_model_config` read it back. The built-in entries are registered at import time below.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass
from typing import Literal, get_args

from .config import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    CLIPTextConfig,
    CLIPVisionConfig,
    FragmentViewConfig,
    FrameViewConfig,
    ModelConfig,
    SwinConfig,
    TemporalContextConfig,
)
from .hub import check_repo_id

WeightKind = Literal["hub", "unpublished", "random", "openai-clip"]
WEIGHT_KINDS: tuple[str, ...] = get_args(WeightKind)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class WeightSource:
    """Where a registry entry's pretrained weights come from.

    Attributes:
        kind: ``"hub"``: a published Hugging Face Hub repo (``repo_id``, ``revision`` and ``sha256`` pinned);
            ``"unpublished"``: trained weights are not published yet; ``"random"``: a test configuration with
            random weights only; ``"openai-clip"``: built from the public OpenAI CLIP ViT-B/16 weights that
            open_clip resolves from the Hub.
        repo_id: Hub repository, ``org/name`` (``"hub"`` only).
        filename: Weights file in the repository.
        revision: Pinned commit of the repository.
        sha256: Expected SHA-256 of the weights file, checked after download.
        note: What to do instead while weights are unavailable.

    Raises:
        ValueError: For an unknown ``kind``, a ``"hub"`` source without a valid ``repo_id`` (or a ``repo_id``
            on another kind), an empty ``filename`` or ``revision``, or a ``sha256`` that is not 64 hex digits.
        TypeError: For a field of the wrong type.
    """

    kind: WeightKind
    repo_id: str | None = None
    filename: str = "model.safetensors"
    revision: str | None = None
    sha256: str | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in WEIGHT_KINDS:
            kinds = ", ".join(map(repr, WEIGHT_KINDS))
            raise ValueError(f"WeightSource.kind must be one of {kinds}, got {self.kind!r}")
        if self.kind == "hub":
            if self.repo_id is None:
                raise ValueError("WeightSource('hub') needs repo_id='org/name', the Hub repository of the weights")
            check_repo_id(self.repo_id, what="WeightSource.repo_id")
        elif self.repo_id is not None:
            raise ValueError(
                f"WeightSource.repo_id is only used by kind 'hub'; a {self.kind!r} source must not set it "
                f"(got {self.repo_id!r})"
            )
        for field_name in ("filename", "note"):
            if not isinstance(getattr(self, field_name), str):
                raise TypeError(f"WeightSource.{field_name} must be a string, got {getattr(self, field_name)!r}")
        if not self.filename:
            raise ValueError("WeightSource.filename must not be empty")
        for field_name in ("revision", "sha256"):
            value = getattr(self, field_name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"WeightSource.{field_name} must be a string or None, got {value!r}")
        if self.revision is not None and (not self.revision or "@" in self.revision):
            raise ValueError(f"WeightSource.revision must be a branch, tag or commit hash, got {self.revision!r}")
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            raise ValueError(f"WeightSource.sha256 must be 64 hexadecimal digits, got {self.sha256!r}")

    @property
    def status(self) -> str:
        """One human-readable line, e.g. for ``dvlta-metric list``."""
        if self.kind == "hub":
            return f"published: hf-hub:{self.repo_id}@{(self.revision or 'main')[:12]}"
        if self.kind == "openai-clip":
            return "available: built from OpenAI CLIP ViT-B/16 (downloaded from the Hub on first use)"
        if self.kind == "random":
            return "random weights only (test configuration)"
        return "not published yet"


@dataclass(frozen=True)
class ModelInfo:
    """A registry entry: the architecture and where its weights come from.

    Attributes:
        name: Registry name.
        description: One line about the model.
        config: Its configuration.
        weights: Its weight source.
    """

    name: str
    description: str
    config: ModelConfig
    weights: WeightSource

    @property
    def status(self) -> str:
        """Shortcut for ``weights.status``."""
        return self.weights.status


_REGISTRY: dict[str, ModelConfig] = {}
_WEIGHTS: dict[str, WeightSource] = {}


def check_openai_clip_config(config: ModelConfig) -> None:
    """Check that a configuration can be filled from the OpenAI CLIP weights alone.

    Those weights cover the CLIP image tower and the prompt embeddings; a model with another branch
    (``"bvfe"``, ``"tcm"``) or with adapters (``use_adapters=True``) would keep random weights there.

    Args:
        config: The configuration of an ``"openai-clip"`` model.

    Raises:
        ValueError: Naming what the weights do not cover and what to do instead.
    """
    problems = []
    if tuple(config.branches) != ("vbtc",):
        problems.append(f"branches={tuple(config.branches)!r} (only ('vbtc',) is covered)")
    if config.use_adapters:
        problems.append("use_adapters=True (the CLIP and text adapters are not part of CLIP)")
    if problems:
        raise ValueError(
            f"{config.name!r}: the OpenAI CLIP zero-shot weights only cover the CLIP branch without adapters, "
            f"but the configuration has {' and '.join(problems)}; the rest would keep random weights. Use "
            "pretrained=False for a randomly initialised model of this configuration, or train it with the "
            "training/ package and load it with 'local-dir:/path'."
        )


def register_model(config: ModelConfig, weights: WeightSource | None = None, *, overwrite: bool = False) -> ModelConfig:
    """Add a configuration to the registry under ``config.name``.

    Args:
        config: The configuration. Its name must start with a letter or digit and use only letters, digits,
            ``.``, ``_`` and ``-`` (no ``:`` or ``/``, which :func:`~dvlta_metric.create` reads as a Hub id
            or a path).
        weights: Where its pretrained weights come from (default: not published). An ``"openai-clip"`` source
            needs a configuration with the ``"vbtc"`` branch only and no adapters.
        overwrite: Replace an existing entry of the same name instead of raising.

    Returns:
        The registered configuration.

    Raises:
        TypeError: If ``config`` is not a :class:`~dvlta_metric.config.ModelConfig`, ``weights`` not a
            :class:`WeightSource` (or ``None``), or ``overwrite`` not a bool.
        ValueError: If the name is malformed, the name is taken and ``overwrite`` is false, or an
            ``"openai-clip"`` source is given a configuration those weights do not cover.
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(f"register_model expects a ModelConfig, got {type(config).__name__}")
    if weights is not None and not isinstance(weights, WeightSource):
        raise TypeError(
            f"register_model: weights must be a WeightSource (e.g. WeightSource('hub', repo_id='org/name', ...)) "
            f"or None, got {weights!r}"
        )
    if not isinstance(overwrite, bool):
        raise TypeError(f"register_model: overwrite must be True or False, got {overwrite!r}")
    if not _NAME.match(config.name):
        raise ValueError(
            f"cannot register a model named {config.name!r}: a registry name must be non-empty, start with a "
            "letter or digit and use only letters, digits, '.', '_' and '-' (':' and '/' are read as a Hub id "
            "or a path by create())"
        )
    if config.name in _REGISTRY and not overwrite:
        raise ValueError(f"a model named {config.name!r} is already registered (pass overwrite=True to replace it)")
    weights = weights or WeightSource("unpublished")
    if weights.kind == "openai-clip":
        check_openai_clip_config(config)
    _REGISTRY[config.name] = config
    _WEIGHTS[config.name] = weights
    return config


def model_info(name: str) -> ModelInfo:
    """The registry entry called ``name``.

    Args:
        name: A registered name (see :func:`list_models`).

    Returns:
        The entry: name, description, configuration and weight source.

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: If no model has that name (the message suggests close matches).
    """
    config = get_model_config(name)
    return ModelInfo(name, config.description, config, _WEIGHTS[name])


def list_models(pattern: str | None = None, *, pretrained: bool = False) -> list[str]:
    """Names of the registered models, as timm's ``list_models``.

    Args:
        pattern: Shell-style wildcard the names must match, e.g. ``"*tiny*"`` or ``"dvlta-vqa-*"``
            (:func:`fnmatch.fnmatchcase`); all names if ``None``.
        pretrained: Only models whose weights can be loaded: published on the Hub or built from OpenAI CLIP
            (``create(name)`` works with its default ``pretrained=True``).

    Returns:
        The names, sorted.

    Raises:
        TypeError: If ``pattern`` is not a string or ``pretrained`` not a bool.
    """
    if pattern is not None and not isinstance(pattern, str):
        raise TypeError(f"pattern must be a string such as '*tiny*', got {type(pattern).__name__}")
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be True or False, got {pretrained!r}")
    names = sorted(_REGISTRY)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if pretrained:
        names = [n for n in names if _WEIGHTS[n].kind in ("hub", "openai-clip")]
    return names


def get_model_config(name: str) -> ModelConfig:
    """The registered configuration called ``name``.

    Args:
        name: A registered name (see :func:`list_models`).

    Returns:
        Its configuration.

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: If no model has that name (the message suggests close matches and lists the registered
            names).
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}{did_you_mean(name)}; registered models: {', '.join(list_models())}. "
            "Use 'hf-hub:org/name' or 'local-dir:/path' for weights outside the registry."
        ) from None


def did_you_mean(name: str) -> str:
    """A ``" (did you mean 'x'?)"`` hint naming the registered name closest to ``name``.

    Args:
        name: The unknown name.

    Returns:
        The hint with a leading space, or ``""`` when no registered name is close.
    """
    lowered = {n.lower(): n for n in _REGISTRY}
    close = difflib.get_close_matches(name.strip().lower(), list(lowered), n=1, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean {lowered[close[0]]!r}?)"


_TRAIN_NOTE = "train it with the training/ package, or use dvlta-vqa-zeroshot"

register_model(
    ModelConfig(
        name="dvlta-vqa",
        description="DVLTA-VQA (paper sizes): FAST-VQA-B fragments + TCM + ViFi-CLIP ViT-B/16, text-guided fusion",
    ),
    WeightSource("unpublished", note=_TRAIN_NOTE),
)

for _suffix, _dataset in (("konvid", "KoNViD-1k"), ("livevqc", "LIVE-VQC"), ("ytugc", "YouTube-UGC")):
    register_model(
        ModelConfig(name=f"dvlta-vqa-{_suffix}", description=f"DVLTA-VQA trained on {_dataset}"),
        WeightSource("unpublished", note=_TRAIN_NOTE),
    )

register_model(
    ModelConfig(
        name="dvlta-vqa-zeroshot",
        description="Zero-shot: Video-Based Temporal CLIP + prompt head from OpenAI CLIP ViT-B/16, no training",
        branches=("vbtc",),
        use_adapters=False,
        frame_view=FrameViewConfig(mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD),
    ),
    WeightSource("openai-clip"),
)

register_model(
    ModelConfig(
        name="dvlta-vqa-tiny",
        description="Same architecture with tiny widths and depths; random weights, for tests and examples",
        embed_dim=64,
        # a random 64-d joint space gives larger prompt cosines than a trained CLIP one: a smaller scale keeps
        # the random model's scores away from 0 and 1 so that its gradients stay informative
        logit_scale=10.0,
        text_adapter_hidden=16,
        bvfe_head_hidden=64,
        clip_vision=CLIPVisionConfig(image_size=224, patch_size=32, width=64, layers=2, head_width=32),
        clip_text=CLIPTextConfig(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
        swin=SwinConfig(
            embed_dim=16,
            depths=(2, 2, 2, 2),
            num_heads=(1, 2, 2, 4),
            window_size=(2, 7, 7),
            base_x_size=(8, 224, 224),
        ),
        temporal_context=TemporalContextConfig(stem_channels=8, channels=(16, 32), cbam_reduction=4),
        fragment_view=FragmentViewConfig(clip_len=8, frame_interval=2, num_clips=2, aligned=8),
        frame_view=FrameViewConfig(num_frames=4),
    ),
    WeightSource("random", note="dvlta-vqa-tiny exists for tests and examples; create it with pretrained=False"),
)
