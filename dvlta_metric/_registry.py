"""The registry: named models, each an architecture (a :class:`~dvlta_metric.config.ModelConfig`) with weights.

As timm's ``arch.tag``: ``dvlta-vqa`` is the architecture and ``dvlta-vqa.konvid`` the same architecture with
the weights trained on KoNViD-1k. Each entry is one :class:`ModelInfo` under its full name; earlier names
(``dvlta-vqa-konvid``) are kept as aliases of the tagged names. :func:`list_models` lists full names, never
aliases. The built-in entries are registered at import time below.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

from ._hub import check_repo_id, check_revision
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

WeightKind = Literal["hub", "unpublished", "random", "openai-clip"]
WEIGHT_KINDS: tuple[str, ...] = get_args(WeightKind)
LOADABLE_KINDS: tuple[str, ...] = ("hub", "openai-clip")
"""Weight kinds that ``create(name)`` can load with its default ``pretrained=True``."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class WeightSource:
    """Where a registry entry's pretrained weights come from.

    Attributes:
        kind: ``"hub"``: a published Hugging Face Hub repo (``repo_id``, ``revision`` and ``sha256`` pinned, all
            three required);
            ``"unpublished"``: trained weights are not published yet; ``"random"``: a test configuration with
            random weights only; ``"openai-clip"``: built from the public OpenAI CLIP ViT-B/16 weights that
            open_clip resolves from the Hub.
        repo_id: Hub repository, ``org/name`` (``"hub"`` only).
        revision: Pinned commit of the repository: a full 40-hex commit hash, never a branch or tag (which can
            move); ``None`` only for an ``"openai-clip"`` source that is not pinned yet (see :attr:`pinned`).
        sha256: Expected SHA-256 of the weights file, checked after download.
        note: What to do instead while weights are unavailable.

    Raises:
        ValueError: For an unknown ``kind``, a ``"hub"`` source without a valid ``repo_id`` (or a ``repo_id``
            on another kind), a ``revision`` that is not a 40-hex commit hash, a ``"hub"`` source without
            ``revision`` and ``sha256``, or a ``sha256`` that is not 64 hex digits.
        TypeError: For a field of the wrong type.
    """

    kind: WeightKind
    repo_id: str | None = None
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
        if not isinstance(self.note, str):
            raise TypeError(f"WeightSource.note must be a string, got {self.note!r}")
        check_revision(self.revision, what="WeightSource.revision")
        if self.sha256 is not None and not isinstance(self.sha256, str):
            raise TypeError(f"WeightSource.sha256 must be a string or None, got {self.sha256!r}")
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            raise ValueError(f"WeightSource.sha256 must be 64 hexadecimal digits, got {self.sha256!r}")
        if self.revision is not None and not _COMMIT.match(self.revision):
            raise ValueError(
                f"WeightSource.revision must be a full commit hash (40 lowercase hex digits), got {self.revision!r}: "
                "a registry entry pins the exact commit, since a branch or tag can move to other weights. Find "
                "the commit with huggingface_hub.model_info(repo_id, revision=...).sha"
            )
        if self.kind == "hub" and (self.revision is None or self.sha256 is None):
            raise ValueError(
                "WeightSource('hub') needs revision=<40-hex commit> and sha256=<64-hex digest of model.safetensors>: "
                "published registry weights are pinned (python -m dvlta_metric_train.push prints both)"
            )

    @property
    def pinned(self) -> bool:
        """Whether both the commit and the SHA-256 of the weights file are pinned."""
        return self.revision is not None and self.sha256 is not None

    @property
    def status(self) -> str:
        """One human-readable line, e.g. for ``dvlta-metric list``."""
        if self.kind == "hub":
            return f"published: hf-hub:{self.repo_id}@{(self.revision or 'main')[:12]}"
        if self.kind == "openai-clip":
            pin = (
                f"pinned @{self.revision[:12]}"
                if self.pinned and self.revision
                else "NOT pinned: latest main, no SHA-256"
            )
            return f"available: built from OpenAI CLIP ViT-B/16 (downloaded from the Hub on first use; {pin})"
        if self.kind == "random":
            return "random weights only (test configuration)"
        return "not published yet"


@dataclass(frozen=True)
class ModelInfo:
    """A registry entry: the architecture and where its weights come from.

    Attributes:
        name: Full registry name, ``arch`` or ``arch.tag``.
        description: One line about the model.
        config: Its configuration (``config.name`` is the full name).
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


_REGISTRY: dict[str, ModelInfo] = {}
_ALIASES: dict[str, str] = {}


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
            "pretrained=False for a randomly initialised model of this configuration, or train it "
            "(python -m dvlta_metric_train.train) and load it with 'local-dir:/path'."
        )


def register_model(
    config: ModelConfig,
    weights: WeightSource | None = None,
    *,
    tag: str | None = None,
    aliases: Iterable[str] = (),
    overwrite: bool = False,
) -> ModelConfig:
    """Add an architecture, or one set of its weights, to the registry.

    Without ``tag`` the entry is named ``config.name``; with ``tag`` it is ``f"{config.name}.{tag}"``, the
    same architecture with other weights (timm's ``arch.tag``), and its configuration is ``config`` renamed.

    Args:
        config: The configuration. Its name must start with a letter or digit and use only letters, digits,
            ``.``, ``_`` and ``-`` (no ``:`` or ``/``, which :func:`~dvlta_metric.create` reads as a Hub id
            or a path).
        weights: Where its pretrained weights come from (default: not published). An ``"openai-clip"`` source
            needs a configuration with the ``"vbtc"`` branch only and no adapters.
        tag: Name of these weights, e.g. ``"konvid"``: letters, digits, ``_`` and ``-``.
        aliases: Other names that mean this entry (kept for names used before tags existed); they are
            accepted everywhere a name is but not listed by :func:`list_models`.
        overwrite: Replace an existing entry or alias of the same name instead of raising.

    Returns:
        The registered configuration, named with the full name.

    Raises:
        TypeError: If ``config`` is not a :class:`~dvlta_metric.config.ModelConfig`, ``weights`` not a
            :class:`WeightSource` (or ``None``), or ``overwrite`` not a bool.
        ValueError: If a name or tag is malformed, a name is taken and ``overwrite`` is false, or an
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
    if tag is not None and not (isinstance(tag, str) and _TAG.match(tag)):
        raise ValueError(
            f"register_model: tag must start with a letter or digit and use only letters, digits, '_' and '-' "
            f"(it follows the '.' in 'arch.tag'), got {tag!r}"
        )
    name = config.name if tag is None else f"{config.name}.{tag}"
    aliases = [aliases] if isinstance(aliases, str) else list(aliases)
    for new in (name, *aliases):
        if not isinstance(new, str) or not _NAME.match(new):
            raise ValueError(
                f"cannot register a model named {new!r}: a registry name must be non-empty, start with a "
                "letter or digit and use only letters, digits, '.', '_' and '-' (':' and '/' are read as a Hub "
                "id or a path by create())"
            )
        if (new in _REGISTRY or new in _ALIASES) and not overwrite:
            raise ValueError(f"a model named {new!r} is already registered (pass overwrite=True to replace it)")
    weights = weights or WeightSource("unpublished")
    if weights.kind == "openai-clip":
        check_openai_clip_config(config)
    config = config.replace(name=name)
    for new in (name, *aliases):
        _REGISTRY.pop(new, None)
        _ALIASES.pop(new, None)
    _REGISTRY[name] = ModelInfo(name, config.description, config, weights)
    _ALIASES.update(dict.fromkeys(aliases, name))
    return config


def model_info(name: str) -> ModelInfo:
    """The registry entry called ``name`` (a full name or an alias).

    Args:
        name: A registered name (see :func:`list_models`) or alias.

    Returns:
        The entry: full name, description, configuration and weight source.

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: If no model has that name (the message suggests a close match and lists the registered
            names).
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    try:
        return _REGISTRY[_ALIASES.get(name, name)]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}{did_you_mean(name)}; registered models: {', '.join(list_models())}. "
            "Use 'hf-hub:org/name' or 'local-dir:/path' for weights outside the registry."
        ) from None


def get_model_config(name: str) -> ModelConfig:
    """The registered configuration called ``name``: ``model_info(name).config``.

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: As :func:`model_info`.
    """
    return model_info(name).config


def list_models(pattern: str | None = None, *, pretrained: bool = False) -> list[str]:
    """Full names of the registered models, as timm's ``list_models``.

    Weights of one architecture show as ``arch.tag`` beside the architecture itself (``dvlta-vqa``,
    ``dvlta-vqa.konvid``, ...); aliases are not listed.

    Args:
        pattern: Shell-style wildcard the names must match, e.g. ``"*tiny*"``, ``"dvlta-vqa*"`` (the
            architecture and its tags) or ``"dvlta-vqa.*"`` (its tags only) (:func:`fnmatch.fnmatchcase`);
            all names if ``None``.
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
    return sorted(
        name
        for name, info in _REGISTRY.items()
        if (pattern is None or fnmatch.fnmatchcase(name, pattern))
        and (not pretrained or info.weights.kind in LOADABLE_KINDS)
    )


def did_you_mean(name: str) -> str:
    """A ``" (did you mean 'x'?)"`` hint naming the registered name or alias closest to ``name``.

    Args:
        name: The unknown name.

    Returns:
        The hint with a leading space, or ``""`` when no registered name is close.
    """
    lowered = {n.lower(): n for n in (*_REGISTRY, *_ALIASES)}
    close = difflib.get_close_matches(name.strip().lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[close[0]]!r}?)" if close else ""


_TRAIN_NOTE = "train it with python -m dvlta_metric_train.train, or use dvlta-vqa-zeroshot"
DVLTA_VQA = ModelConfig(
    name="dvlta-vqa",
    description="DVLTA-VQA (paper sizes): FAST-VQA-B fragments + TCM + ViFi-CLIP ViT-B/16, text-guided fusion",
)
register_model(DVLTA_VQA, WeightSource("unpublished", note=_TRAIN_NOTE))
for _tag, _dataset in (("konvid", "KoNViD-1k"), ("livevqc", "LIVE-VQC"), ("ytugc", "YouTube-UGC")):
    register_model(
        DVLTA_VQA.replace(description=f"DVLTA-VQA trained on {_dataset}"),
        WeightSource("unpublished", note=_TRAIN_NOTE),
        tag=_tag,
        aliases=[f"dvlta-vqa-{_tag}"],
    )

register_model(
    ModelConfig(
        name="dvlta-vqa-zeroshot",
        description="Zero-shot: Video-Based Temporal CLIP + prompt head from OpenAI CLIP ViT-B/16, no training",
        branches=("vbtc",),
        use_adapters=False,
        frame_view=FrameViewConfig(mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD),
    ),
    WeightSource(
        "openai-clip",
        note=(
            "not pinned yet: the commit and SHA-256 of open_clip_model.safetensors in "
            "timm/vit_base_patch16_clip_224.openai could not be looked up offline; until they are, the latest main "
            "is downloaded (pass revision=<commit> to create() to pin it yourself)"
        ),
    ),
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
