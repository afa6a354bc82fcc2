"""The registry of named model configurations.

``register_model`` adds a :class:`~dvlta_metric.config.ModelConfig` under its name; :func:`list_models` and
:func:`get_model_config` read it back. The built-in entries are registered at import time below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
    """

    kind: WeightKind
    repo_id: str | None = None
    filename: str = "model.safetensors"
    revision: str | None = None
    sha256: str | None = None
    note: str = ""

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


def register_model(
    config: ModelConfig, weights: WeightSource | None = None, *, overwrite: bool = False
) -> ModelConfig:
    """Add a configuration to the registry under ``config.name``.

    Args:
        config: The configuration.
        weights: Where its pretrained weights come from (default: not published).
        overwrite: Replace an existing entry of the same name instead of raising.

    Returns:
        The registered configuration.

    Raises:
        ValueError: If the name is taken and ``overwrite`` is false.
    """
    if config.name in _REGISTRY and not overwrite:
        raise ValueError(f"a model named {config.name!r} is already registered")
    _REGISTRY[config.name] = config
    _WEIGHTS[config.name] = weights or WeightSource("unpublished")
    return config


def model_info(name: str) -> ModelInfo:
    """The registry entry called ``name``.

    Raises:
        ValueError: If no model has that name.
    """
    config = get_model_config(name)
    return ModelInfo(name, config.description, config, _WEIGHTS[name])


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def get_model_config(name: str) -> ModelConfig:
    """The registered configuration called ``name``.

    Raises:
        ValueError: If no model has that name (the message lists the registered names).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; registered models: {', '.join(list_models())}. "
            "Use 'hf-hub:org/name' or 'local-dir:/path' for weights outside the registry."
        ) from None


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
