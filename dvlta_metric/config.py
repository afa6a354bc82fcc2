"""Typed model configurations.

Every choice that defines a DVLTA-VQA model lives in one frozen dataclass tree, so a configuration can be
registered, overridden, written to ``config.json`` and read back without free-form dictionaries. The
defaults are the paper's sizes (see ``DESIGN``: the Video Swin-T of FAST-VQA-B, the ViT-B/16 of ViFi-CLIP,
the 512-d joint space); choices the paper leaves open are marked *(ours)* in the field comments.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

BranchName = Literal["bvfe", "tcm", "vbtc"]
FrameSampling = Literal["segments", "consecutive"]
FRAME_SAMPLINGS: tuple[str, ...] = ("segments", "consecutive")
"""How a branch's frames are picked from the video (:class:`FrameViewConfig`): one at the centre of each of ``T``
equal segments, or ``T`` consecutive frames."""
OVERRUNS: tuple[str, ...] = ("wrap", "mirror")
"""What a fragment clip longer than the video reads past the last frame (:attr:`FragmentViewConfig.overrun`)."""
TEST_CLIPS: tuple[str, ...] = ("centre", "random")
"""Where the fragment view's clips sit at inference (:attr:`FragmentViewConfig.test_clips`)."""
CBAM_ORDERS: tuple[str, ...] = ("parallel", "sequential")
"""How the Temporal Context Module's attention maps are computed (:attr:`TemporalContextConfig.attention`)."""
BRANCH_NAMES: tuple[str, ...] = ("bvfe", "tcm", "vbtc")

_ANY_INT = frozenset({"seed"})
"""Integer fields that may be zero or negative; every other integer (also inside tuples) must be >= 1."""
_UNIT_INTERVAL = frozenset({"clip_adapter_ratio", "text_adapter_ratio"})
_NON_NEGATIVE = frozenset({"reference_fps"})
"""Float fields that may be zero (off)."""
"""Float fields that must lie in ``[0, 1]``; every other float except ``mean`` must be > 0."""
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
"""Every integer field must fit a signed 64-bit integer (the seed goes to :meth:`torch.Generator.manual_seed`)."""

LOGIT_SCALE_MAX = 100.0
"""Largest ``logit_scale`` a configuration may ask for: CLIP clamps its learned ``logit_scale.exp()`` at 100, and a
larger scale only saturates the score at 0 or 1 (an infinite one makes it NaN)."""
LIMITS: dict[str, int | float] = {
    "FragmentViewConfig.fragments": 32,
    "FragmentViewConfig.fsize": 256,
    "FragmentViewConfig.clip_len": 256,
    "FragmentViewConfig.frame_interval": 64,
    "FragmentViewConfig.num_clips": 64,
    "FragmentViewConfig.aligned": 256,
    "FrameViewConfig.num_frames": 256,
    "FrameViewConfig.resize": 2048,
    "FrameViewConfig.crop": 1024,
    "CLIPVisionConfig.image_size": 1024,
    "CLIPVisionConfig.patch_size": 64,
    "CLIPVisionConfig.width": 4096,
    "CLIPVisionConfig.layers": 64,
    "CLIPVisionConfig.head_width": 256,
    "CLIPTextConfig.context_length": 1024,
    "CLIPTextConfig.vocab_size": 1_000_000,
    "CLIPTextConfig.width": 4096,
    "CLIPTextConfig.heads": 128,
    "CLIPTextConfig.layers": 64,
    "SwinConfig.patch_size": 64,
    "SwinConfig.embed_dim": 1024,
    "SwinConfig.depths": 64,
    "SwinConfig.num_heads": 128,
    "SwinConfig.window_size": 64,
    "SwinConfig.mlp_ratio": 16.0,
    "SwinConfig.base_x_size": 1024,
    "TemporalContextConfig.stem_channels": 4096,
    "TemporalContextConfig.channels": 4096,
    "TemporalContextConfig.cbam_reduction": 4096,
    "TemporalContextConfig.route_reduction": 4096,
    "TemporalContextConfig.route_kernels": 31,
    "ModelConfig.embed_dim": 4096,
    "ModelConfig.clip_adapter_reduction": 4096,
    "ModelConfig.text_adapter_hidden": 4096,
    "ModelConfig.bvfe_head_hidden": 4096,
    "ModelConfig.logit_scale": LOGIT_SCALE_MAX,
    "ModelConfig.reference_fps": 1000.0,
}
"""Upper bound of each size a configuration may ask for (``"Class.field"``; for a tuple, of each entry). The
defaults are the paper's sizes; the bounds leave room for larger models while refusing a ``config.json`` that
would allocate without limit before its weights are even read. See also :data:`MAX_ENTRIES`,
:data:`MAX_TEXT`, :data:`MAX_VIEW_PIXELS` and :data:`MAX_FEATURES`."""
MAX_ENTRIES = 8
"""Most entries of a variable-length tuple (Swin stages, TCM stages)."""
MAX_TEXT = 10_000
"""Most characters of a string field (name, description, prompts)."""
MAX_VIEW_PIXELS = 2**27
"""Most pixels one view of one video may hold (frames x side x side): about 134 M, 1.6 GB as float32 RGB.
The paper's fragment view holds 4 x 32 x 224 x 224 = 6.4 M."""
MAX_FEATURES = 8192
"""Most channels of the Swin backbone's output (``embed_dim * 2 ** (stages - 1)``; 768 for Swin-T)."""


def check_fields(config: object) -> None:
    """Check every field of a configuration dataclass against the type and range of its default.

    Integers must be integers (not ``bool``), fit a signed 64-bit integer and be at least 1 (except ``seed``);
    floats must be finite numbers (no NaN or infinity), positive (ratios in ``[0, 1]``, ``mean`` any finite
    value); tuples must be tuples of the default's element
    type and, where the annotation fixes it (``tuple[int, int, int]``), of the default's length; nested
    configurations must be instances of their class. Sizes must not exceed their bound in :data:`LIMITS`,
    tuples hold at most :data:`MAX_ENTRIES` entries and strings at most :data:`MAX_TEXT` characters. Run by
    every configuration's ``__post_init__``, so a bad override fails when the configuration is made, not deep
    inside the model.

    Args:
        config: A configuration dataclass instance.

    Raises:
        TypeError: A field of the wrong type.
        ValueError: A field out of range, or a tuple of the wrong length.
    """
    cls = type(config).__name__
    for f in fields(config):  # type: ignore[arg-type]
        value = getattr(config, f.name)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = ""  # required fields (the name) are strings
        where = f"{cls}.{f.name}"
        fixed = "..." not in str(f.type)
        _check_value(where, f.name, default, value, fixed_length=fixed, limit=LIMITS.get(where))


def _check_value(
    where: str, name: str, default: Any, value: Any, *, fixed_length: bool = False, limit: float | None = None
) -> None:
    if dataclasses.is_dataclass(default):
        if not isinstance(value, type(default)):
            raise TypeError(f"{where} must be a {type(default).__name__} or a dict of its fields, got {value!r}")
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            raise TypeError(f"{where} must be True or False, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{where} must be an integer, got {value!r}")
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"{where} must fit a signed 64-bit integer ({INT64_MIN} to {INT64_MAX}), got {value}")
        if name not in _ANY_INT and value < 1:
            raise ValueError(f"{where} must be at least 1, got {value}")
        _check_limit(where, value, limit)
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{where} must be a number, got {value!r}")
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an int too large for a float
            finite = False
        if not finite:
            raise ValueError(f"{where} must be a finite number, got {value!r}")
        if name in _UNIT_INTERVAL and not 0.0 <= value <= 1.0:
            raise ValueError(f"{where} must be between 0 and 1, got {value}")
        if name in _NON_NEGATIVE and not value >= 0:
            raise ValueError(f"{where} must be zero (off) or positive, got {value}")
        if name not in _UNIT_INTERVAL | _NON_NEGATIVE and name != "mean" and not value > 0:
            raise ValueError(f"{where} must be positive, got {value}")
        _check_limit(where, value, limit)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise TypeError(f"{where} must be a string, got {value!r}")
        if len(value) > MAX_TEXT:
            raise ValueError(f"{where} must be at most {MAX_TEXT} characters long, got {len(value)}")
    elif isinstance(default, tuple):
        if not isinstance(value, tuple):
            raise TypeError(f"{where} must be a list or tuple, got {value!r}")
        if fixed_length and len(value) != len(default):
            raise ValueError(f"{where} must have {len(default)} entries, got {len(value)}: {value!r}")
        if len(value) > MAX_ENTRIES:
            raise ValueError(f"{where} must have at most {MAX_ENTRIES} entries, got {len(value)}")
        if default:
            for i, item in enumerate(value):
                _check_value(f"{where}[{i}]", name, default[0], item, limit=limit)


def _check_limit(where: str, value: float, limit: float | None) -> None:
    """Refuse a size beyond its documented bound in :data:`LIMITS`."""
    if limit is not None and value > limit:
        raise ValueError(
            f"{where} must be at most {limit}, got {value}: this bound (dvlta_metric.config.LIMITS) keeps a "
            "config.json from making the model allocate without limit; check the value"
        )


def _check_choice(where: str, value: str, choices: tuple[str, ...]) -> None:
    """Refuse a string option that is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{where} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")


def _check_view_pixels(where: str, frames: int, side: int) -> None:
    """Refuse a view of more than :data:`MAX_VIEW_PIXELS` pixels per video."""
    if frames * side * side > MAX_VIEW_PIXELS:
        raise ValueError(
            f"{where}: a view of {frames} frames of {side}x{side} pixels holds {frames * side * side} pixels per "
            f"video, more than the bound of {MAX_VIEW_PIXELS} (dvlta_metric.config.MAX_VIEW_PIXELS); use fewer "
            "frames or clips, or a smaller view"
        )


@dataclass(frozen=True)
class FragmentViewConfig:
    """Fragment view (ventral stream) sampling, FAST-VQA-B settings.

    Attributes:
        fragments: Grid cells per side (7 gives a 7x7 grid).
        fsize: Side of the native-resolution patch taken from each cell.
        clip_len: Frames per clip.
        frame_interval: Step between the frames of a clip.
        num_clips: Temporal segments at inference, one clip each (training always uses 1).
        aligned: Patch positions stay fixed over each run of this many frames; it must divide ``clip_len``
            (a training view is one clip, so a run cannot span clips).
        seed: *(ours)* Seed of the generator that draws patch offsets (and, with ``test_clips="random"``, clip
            starts) at inference, so that the same video always gets the same score. Training draws them at
            random.
        test_clips: Where the ``num_clips`` inference clips start: ``"centre"`` (default) at the centre offset of
            each equal segment (FAST-VQA's ``SampleFrames`` test mode), or ``"random"`` at a random point inside
            each segment (FAST-VQA-B's evaluation loader, ``FragmentSampleFrames``), drawn from a generator
            seeded with ``seed``.
        overrun: What a clip reads past the last frame of a video shorter than the clip's span:
            ``"wrap"`` (default; the first frames again, FAST-VQA's ``% num_frames``, so the clip jumps from the
            last frame back to the first) or ``"mirror"`` *(ours)* (back and forth, ``0 1 2 3 2 1 0 1 ...``, with
            no jump).
        mean: Per-channel mean used to normalise the view (ImageNet).
        std: Per-channel standard deviation used to normalise the view (ImageNet).
    """

    fragments: int = 7
    fsize: int = 32
    clip_len: int = 32
    frame_interval: int = 2
    num_clips: int = 4
    aligned: int = 32
    seed: int = 42
    test_clips: Literal["centre", "random"] = "centre"
    overrun: Literal["wrap", "mirror"] = "wrap"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def size(self) -> int:
        """Side of the spliced fragment view (``fragments * fsize``, 224 by default)."""
        return self.fragments * self.fsize

    def __post_init__(self) -> None:
        check_fields(self)
        if self.clip_len % self.aligned:
            raise ValueError(
                f"FragmentViewConfig.aligned ({self.aligned}) must divide clip_len ({self.clip_len}): patch "
                "positions are fixed over runs of `aligned` frames inside each clip; when changing clip_len, "
                f"set aligned too (e.g. {{'clip_len': {self.clip_len}, 'aligned': {self.clip_len}}})"
            )
        if self.size > LIMITS["FrameViewConfig.crop"]:
            raise ValueError(
                f"FragmentViewConfig: the fragment view's side fragments * fsize = {self.size} must be at most "
                f"{LIMITS['FrameViewConfig.crop']}"
            )
        _check_view_pixels("FragmentViewConfig", self.num_clips * self.clip_len, self.size)
        _check_choice("FragmentViewConfig.test_clips", self.test_clips, TEST_CLIPS)
        _check_choice("FragmentViewConfig.overrun", self.overrun, OVERRUNS)


@dataclass(frozen=True)
class FrameViewConfig:
    """Frame view (dorsal stream): ``T`` frames, resized and centre-cropped (ViFi-CLIP's test pipeline).

    Each branch that reads frames picks them its own way; two branches with the same sampling share one view.

    Attributes:
        num_frames: ``T``, the frames per view.
        vbtc_sampling: The Video-Based Temporal CLIP's frames: ``"segments"`` (default; one at the centre of each of
            ``T`` equal segments, ViFi-CLIP's TSN test sampling) or ``"consecutive"`` (the paper's literal
            "sequence of continuous video frames").
        tcm_sampling: The Temporal Context Module's frames: ``"consecutive"`` (default; ``T`` consecutive frames,
            a run centred in the video at inference and drawn at random in training, the paper's "continuous
            video frames") or ``"segments"``.
        resize: The short side is resized to this many pixels.
        crop: Side of the centre crop.
        antialias: *(ours)* Antialias when downscaling (ViFi-CLIP's OpenCV resize does not); avoids aliasing
            artefacts that a quality model would otherwise see.
        mean: Per-channel mean used to normalise the view.
        std: Per-channel standard deviation used to normalise the view.
    """

    num_frames: int = 8
    vbtc_sampling: Literal["segments", "consecutive"] = "segments"
    tcm_sampling: Literal["segments", "consecutive"] = "consecutive"
    resize: int = 256
    crop: int = 224
    antialias: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        check_fields(self)
        if self.crop > self.resize:
            raise ValueError(
                f"FrameViewConfig.crop ({self.crop}) must not exceed resize ({self.resize}): the crop is cut "
                "from frames whose short side was resized to `resize`"
            )
        _check_view_pixels("FrameViewConfig", self.num_frames, self.crop)
        _check_choice("FrameViewConfig.vbtc_sampling", self.vbtc_sampling, FRAME_SAMPLINGS)
        _check_choice("FrameViewConfig.tcm_sampling", self.tcm_sampling, FRAME_SAMPLINGS)


@dataclass(frozen=True)
class CLIPVisionConfig:
    """open_clip vision tower (ViFi-CLIP / OpenAI ViT-B/16 by default, with QuickGELU).

    Attributes:
        image_size: Input side in pixels.
        patch_size: ViT patch size.
        width: Transformer width.
        layers: Transformer depth.
        head_width: Width of one attention head.
        quick_gelu: Use QuickGELU as OpenAI CLIP was trained with (plain ``ViT-B-16`` uses ``nn.GELU``).
    """

    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    head_width: int = 64
    quick_gelu: bool = True

    def __post_init__(self) -> None:
        check_fields(self)
        if self.width % self.head_width:
            raise ValueError(
                f"CLIPVisionConfig.width ({self.width}) must be a multiple of head_width ({self.head_width})"
            )


@dataclass(frozen=True)
class CLIPTextConfig:
    """open_clip text tower; only run to compute prompt embeddings (at conversion or load time).

    Attributes:
        context_length: Token context length.
        vocab_size: BPE vocabulary size.
        width: Transformer width.
        heads: Attention heads.
        layers: Transformer depth.
    """

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12

    def __post_init__(self) -> None:
        check_fields(self)
        if self.width % self.heads:
            raise ValueError(f"CLIPTextConfig.width ({self.width}) must be a multiple of heads ({self.heads})")


@dataclass(frozen=True)
class SwinConfig:
    """Video Swin-T 3D of FAST-VQA-B (the Basic Visual Feature Extraction Module's backbone).

    Attributes:
        patch_size: 3-D patch of the embedding convolution.
        embed_dim: Channels after patch embedding.
        depths: Blocks per stage.
        num_heads: Attention heads per stage.
        window_size: Base 3-D attention window.
        mlp_ratio: Hidden width of the block MLP relative to its input.
        frag_biases: Per stage, whether the gated relative position bias (GRPB) is used.
        base_x_size: Input size the base window is defined for (windows adapt to other sizes).
    """

    patch_size: tuple[int, int, int] = (2, 4, 4)
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: tuple[int, int, int] = (8, 7, 7)
    mlp_ratio: float = 4.0
    frag_biases: tuple[bool, ...] = (True, True, True, False)
    base_x_size: tuple[int, int, int] = (32, 224, 224)

    @property
    def num_features(self) -> int:
        """Channels of the backbone output (768 for Swin-T)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.num_features > MAX_FEATURES:
            raise ValueError(
                f"SwinConfig: embed_dim * 2 ** (len(depths) - 1) = {self.num_features} output channels, more than "
                f"the bound of {MAX_FEATURES} (dvlta_metric.config.MAX_FEATURES)"
            )


@dataclass(frozen=True)
class TemporalContextConfig:
    """Temporal Context Module sizes (trained from scratch; the 3-D stem is ours).

    Attributes:
        stem_channels: Channels after the 3-D stem.
        channels: Output channels of the two TAdaConv2d stages.
        cbam_reduction: Reduction ratio of the CBAM channel-attention MLP.
        route_reduction: Reduction ratio of the TAdaConv routing function.
        route_kernels: Temporal kernel sizes of the routing function's two convolutions.
        attention: How the two attention maps of eq. 7 are computed: ``"parallel"`` (default; both from
            ``F_agg``, as eq. 7 is printed) or ``"sequential"`` (CBAM's order: the spatial map from the
            channel-refined features).
    """

    stem_channels: int = 64
    channels: tuple[int, ...] = (128, 256)
    cbam_reduction: int = 16
    route_reduction: int = 4
    route_kernels: tuple[int, int] = (3, 3)
    attention: Literal["parallel", "sequential"] = "parallel"

    def __post_init__(self) -> None:
        check_fields(self)
        _check_choice("TemporalContextConfig.attention", self.attention, CBAM_ORDERS)


@dataclass(frozen=True)
class PromptConfig:
    """*(ours)* The text prompts, in ViFi-CLIP's template ``"a photo of a {}."``.

    Attributes:
        fusion: Prompt whose embedding weighs the three branches (eq. 10-11).
        positive: Prompt for high quality (eq. 12).
        negative: Prompt for low quality (eq. 12).
    """

    fusion: str = "a photo of a video."
    positive: str = "a photo of a high quality video."
    negative: str = "a photo of a low quality video."

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class ModelConfig:
    """Complete description of one DVLTA-VQA model.

    Attributes:
        name: Registry name.
        description: One line for ``list_models`` tables and model cards.
        branches: Which branches feed the fusion, in order. ``("vbtc",)`` is the zero-shot model.
        embed_dim: Joint vision-language dimension (512 for ViT-B/16).
        use_adapters: Whether the CLIP adapter and the text adapter are present (the zero-shot model has
            neither).
        clip_adapter_reduction: *(ours)* Bottleneck reduction of the CLIP adapter (512 -> 128 -> 512).
        clip_adapter_ratio: Weight of the adapter output in ``F_vbtc = a*A(Z) + (1-a)*Z`` (eq. 4).
        text_adapter_hidden: *(ours)* Hidden width of the text adapter MLP.
        text_adapter_ratio: *(ours)* Weight of the MLP output in ``T' = a*MLP(T) + (1-a)*T``.
        bvfe_head_hidden: *(ours)* Width of the Conv3d-GELU-Conv3d head on the Swin features.
        fusion: ``"cosine"`` uses raw cosines as weights (eq. 10, the paper); ``"softmax"`` normalises them.
        reference_fps: *(ours)* ``0`` (default): the views count frames, so a 60 fps encode is sampled over half
            the time span of its 30 fps source. A frame rate ``r > 0``: the views pick frames by time, as if the
            video had ``r`` frames per second (a video at ``f`` fps is read as ``round(N * r / f)`` frames, frame
            ``i`` of which is its frame ``round(i * f / r)``), so encodes of one source at different frame rates
            see the same moments. Needs the video's frame rate: a file's or a decoded video's own, or ``fps=`` for
            a tensor; without one the views count frames.
        logit_scale: ``s`` in eq. 12 (CLIP's ``logit_scale.exp()`` = 100); at most :data:`LOGIT_SCALE_MAX`.
        clip_vision: Vision tower of the Video-Based Temporal CLIP.
        clip_text: Text tower used to compute the prompt embeddings (never run at inference).
        swin: Backbone of the Basic Visual Feature Extraction Module.
        temporal_context: Temporal Context Module sizes.
        fragment_view: Fragment view sampling.
        frame_view: Frame view sampling.
        prompts: Text prompts.
    """

    name: str
    description: str = ""
    branches: tuple[str, ...] = BRANCH_NAMES
    embed_dim: int = 512
    use_adapters: bool = True
    clip_adapter_reduction: int = 4
    clip_adapter_ratio: float = 0.4
    text_adapter_hidden: int = 128
    text_adapter_ratio: float = 0.2
    bvfe_head_hidden: int = 512
    fusion: Literal["cosine", "softmax"] = "cosine"
    logit_scale: float = 100.0
    reference_fps: float = 0.0
    clip_vision: CLIPVisionConfig = field(default_factory=CLIPVisionConfig)
    clip_text: CLIPTextConfig = field(default_factory=CLIPTextConfig)
    swin: SwinConfig = field(default_factory=SwinConfig)
    temporal_context: TemporalContextConfig = field(default_factory=TemporalContextConfig)
    fragment_view: FragmentViewConfig = field(default_factory=FragmentViewConfig)
    frame_view: FrameViewConfig = field(default_factory=FrameViewConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.branches:
            raise ValueError("ModelConfig.branches must name at least one branch")
        unknown = [b for b in self.branches if b not in BRANCH_NAMES]
        if unknown:
            raise ValueError(f"unknown branch(es) {unknown}; expected a subset of {list(BRANCH_NAMES)}")
        if len(set(self.branches)) != len(self.branches):
            raise ValueError(f"ModelConfig.branches has duplicates: {self.branches}")
        if self.fusion not in ("cosine", "softmax"):
            raise ValueError(f"fusion must be 'cosine' or 'softmax', got {self.fusion!r}")
        if "vbtc" in self.branches and self.frame_view.crop != self.clip_vision.image_size:
            raise ValueError(
                f"frame_view.crop ({self.frame_view.crop}) must equal clip_vision.image_size "
                f"({self.clip_vision.image_size}): the CLIP tower takes frames of exactly that size"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary of every field, sub-configurations included, for ``config.json``.

        Returns:
            Nested dictionaries of the fields; tuples stay tuples, which :func:`json.dumps` writes as lists,
            and :meth:`from_dict` turns back into tuples.
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error.

        Args:
            data: A dictionary as written by :meth:`to_dict`.

        Returns:
            The configuration.

        Raises:
            ValueError: On unknown keys or wrong value types.
        """
        return _from_dict(cls, data, "config")

    def replace(self, **overrides: Any) -> ModelConfig:
        """Copy with top-level fields replaced; a sub-config may be given as a partial dictionary.

        Args:
            **overrides: Field names of :class:`ModelConfig`. For a sub-configuration (``swin``,
                ``fragment_view``, ...) pass an instance or a dict of the fields to change.

        Returns:
            The new configuration.

        Raises:
            TypeError: If a key is not a field of :class:`ModelConfig` or of the sub-config.
        """
        valid = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in valid:
                raise TypeError(f"unknown model option {key!r}; valid options are: {', '.join(sorted(valid))}")
            current = getattr(self, key)
            if dataclasses.is_dataclass(current) and isinstance(value, dict):
                sub_valid = {f.name for f in fields(current)}
                bad = sorted(set(value) - sub_valid)
                if bad:
                    raise TypeError(f"unknown option(s) {bad} for {key}; valid: {', '.join(sorted(sub_valid))}")
                value = dataclasses.replace(current, **_tupleize(value))
            changes[key] = _tupleize(value) if isinstance(value, (list, tuple)) else value
        return dataclasses.replace(self, **changes)


_T = TypeVar("_T")


def config_differences(first: ModelConfig, second: ModelConfig) -> list[str]:
    """Dotted names of the fields in which two configurations differ.

    Args:
        first: One configuration.
        second: The other.

    Returns:
        Field names in declaration order, a sub-configuration's fields as ``"swin.embed_dim"``; empty when the
        configurations are equal.

    Raises:
        TypeError: If either argument is not a :class:`ModelConfig`.
    """
    for arg in (first, second):
        if not isinstance(arg, ModelConfig):
            raise TypeError(f"config_differences expects two ModelConfig instances, got {type(arg).__name__}")
    return _differences(first.to_dict(), second.to_dict(), "")


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str) -> list[str]:
    out: list[str] = []
    for key, value in a.items():
        other = b.get(key)
        if isinstance(value, dict) and isinstance(other, dict):
            out += _differences(value, other, f"{prefix}{key}.")
        elif value != other:
            out.append(prefix + key)
    return out


def _tupleize(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _tupleize(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tupleize(v) for v in value)
    return value


def _from_dict(cls: type[_T], data: dict[str, Any], where: str) -> _T:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for {cls.__name__}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        sub_type = _SUBCONFIGS.get(key) if cls is ModelConfig else None
        if sub_type is not None:
            kwargs[key] = _from_dict(sub_type, value, f"{where}.{key}")
        else:
            kwargs[key] = _tupleize(value)
    return cls(**kwargs)


_SUBCONFIGS: dict[str, type] = {
    "clip_vision": CLIPVisionConfig,
    "clip_text": CLIPTextConfig,
    "swin": SwinConfig,
    "temporal_context": TemporalContextConfig,
    "fragment_view": FragmentViewConfig,
    "frame_view": FrameViewConfig,
    "prompts": PromptConfig,
}
