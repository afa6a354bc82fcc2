"""The DVLTA-VQA network: two views, three branches, text-guided fusion, a prompt score.

``DVLTAVQA`` is the ``torch.nn.Module`` that :func:`dvlta_metric.create` returns. It takes decoded videos
(tensors) and gives one quality score in ``(0, 1)`` per video, higher is better. Its branches sit in one
``nn.ModuleDict`` (:attr:`DVLTAVQA.branches`), each cut along the :class:`~dvlta_metric.branches.base.Branch`
seam; reading files (:mod:`~dvlta_metric.video_io`), checking inputs (:mod:`~dvlta_metric._inputs`) and scoring
many files (:mod:`~dvlta_metric.batch`) live below this module and are only called from it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._allocator import release_free_memory
from ._checkpoint import PretrainedMixin
from ._inputs import check_video, load_videos
from .attributes import Attribute, Attributes, TextEncoder, attribute_queries, pair_probability
from .batch import FileResult, score_files
from .branches.base import Branch, autocast_off
from .branches.basic_visual import BasicVisualFeatureExtraction
from .branches.swin3d import SwinTransformer3D, check_attention_kernel, clear_shape_caches
from .branches.temporal_clip import VideoBasedTemporalCLIP
from .branches.temporal_context import TemporalContextModule
from .calibration import Calibration, fit_calibration
from .config import ModelConfig
from .decoded import DecodedVideo
from .fusion import PromptQualityHead, TextAdapter, TextGuidedFusion
from .quality_map import MAP_SOURCES, CropLayout, FragmentLayout, QualityMap, clip_records, fragment_records
from .timeline import Timeline, window_bounds, window_length
from .uncertainty import CONFIDENCE, MAX_VIEWS, check_confidence, view_interval, view_spread
from .video_io import read_video
from .views import FRAME_VIEW_NAMES, VIEW_ORDER, fragment_view, frame_view, frames_to_decode, view_indices
from .views.cuts import Cut, RowCut, cut
from .views.fragments import (
    finish_fragments,
    fragment_patch_cut,
    reads_native_pixels,
    sample_fragment_offsets,
    upsampled_size,
)
from .views.frames import random_crop_offset, resized_size

PathLike = str | os.PathLike

PROMPT_ROLES: tuple[str, str, str] = ("fusion", "positive", "negative")
"""Row order of :attr:`DVLTAVQA.prompt_embeddings`."""

SCALES: tuple[str, ...] = ("score", "mos")
"""What a call returns: the model's score in ``(0, 1)``, or that score mapped to a MOS scale by the model's
:class:`~dvlta_metric.calibration.Calibration`."""

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Accepted values of :meth:`DVLTAVQA.set_precision` and the autocast dtype each one names (see
:func:`branch_dtypes` for which branch runs in which dtype)."""


def branch_dtypes(precision: str, device_type: str) -> dict[str, torch.dtype | None]:
    """Autocast dtype each branch's encoder runs under (``None``: float32, autocast off).

    Half precision is for the two frozen backbones, the Swin3D of ``"bvfe"`` and the CLIP tower of
    ``"vbtc"`` (almost all of the FLOPs), whose residual streams stay float32 even then. The Temporal Context
    Module ``"tcm"``, the heads, adapters, fusion and score always run in float32.

    * ``"fp32"``: everything in float32.
    * ``"fp16"``: the Swin3D and CLIP backbones in float16.
    * ``"bf16"``: on CPU, the Swin3D backbone in bfloat16 and the CLIP tower in float32 (CLIP was trained in
      float16, and a bfloat16 CLIP tower moves scores beyond the tolerance); on CUDA both backbones in
      float16, which is as fast as bfloat16 there and moves scores less. The measured score differences are
      on the Benchmarks page.

    Args:
        precision: One of :data:`PRECISIONS`.
        device_type: ``"cuda"``, ``"cpu"``, ...

    Returns:
        ``{"bvfe": ..., "tcm": None, "vbtc": ...}``.

    Raises:
        ValueError: For an unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    dtypes: dict[str, torch.dtype | None] = {"bvfe": PRECISIONS[precision], "tcm": None, "vbtc": PRECISIONS[precision]}
    if precision == "bf16" and device_type == "cuda":
        dtypes["bvfe"] = dtypes["vbtc"] = torch.float16
    elif precision == "bf16":
        dtypes["vbtc"] = None
    return dtypes


BRANCH_CLASSES: dict[str, type[Branch]] = {
    "bvfe": BasicVisualFeatureExtraction,
    "tcm": TemporalContextModule,
    "vbtc": VideoBasedTemporalCLIP,
}
"""The branch class of each name ``config.branches`` may hold (:func:`branch_view` says which view each reads)."""


def branch_view(name: str, config: ModelConfig) -> str:
    """The view the branch called ``name`` reads under ``config``.

    ``"bvfe"`` reads the fragments; ``"vbtc"`` and ``"tcm"`` read the frame view their sampling names
    (``config.frame_view.vbtc_sampling`` / ``tcm_sampling``): ``"frames"`` (segment centres) or
    ``"consecutive"``.

    Raises:
        ValueError: For an unknown branch name.
    """
    if name == "bvfe":
        return "fragments"
    if name == "vbtc":
        return FRAME_VIEW_NAMES[config.frame_view.vbtc_sampling]
    if name == "tcm":
        return FRAME_VIEW_NAMES[config.frame_view.tcm_sampling]
    raise ValueError(f"unknown branch {name!r}; expected one of {sorted(BRANCH_CLASSES)}")


def build_branch(name: str, config: ModelConfig) -> Branch:
    """The branch called ``name`` (a key of :data:`BRANCH_CLASSES`), built from the model configuration.

    Raises:
        ValueError: For an unknown branch name.
    """
    d = config.embed_dim
    if name == "bvfe":
        return BasicVisualFeatureExtraction(config.swin, config.bvfe_head_hidden, d)
    if name == "tcm":
        tc = config.temporal_context
        return TemporalContextModule(
            stem_channels=tc.stem_channels,
            channels=tc.channels,
            out_dim=d,
            cbam_reduction=tc.cbam_reduction,
            route_reduction=tc.route_reduction,
            route_kernels=tc.route_kernels,
            attention=tc.attention,
            view=FRAME_VIEW_NAMES[config.frame_view.tcm_sampling],  # type: ignore[arg-type]
        )
    if name == "vbtc":
        return VideoBasedTemporalCLIP(
            config.clip_vision,
            d,
            use_adapter=config.use_adapters,
            adapter_reduction=config.clip_adapter_reduction,
            adapter_ratio=config.clip_adapter_ratio,
            view=FRAME_VIEW_NAMES[config.frame_view.vbtc_sampling],  # type: ignore[arg-type]
        )
    raise ValueError(f"unknown branch {name!r}; expected one of {sorted(BRANCH_CLASSES)}")


@dataclass
class Explanation:
    """Why a video got its score: the fusion weights and features of each branch.

    Attributes:
        score: Quality in ``(0, 1)``: 0-d for one video, ``(B,)`` for a batch.
        weights: Fusion weights ``w_k`` (eq. 10), ``(K,)`` or ``(B, K)``.
        features: Branch features ``F_k``, ``(K, D)`` or ``(B, K, D)``.
        branches: Names of the ``K`` branches, in order (``"bvfe"``: fragments / technical quality,
            ``"tcm"``: temporal context / motion, ``"vbtc"``: CLIP semantics).
    """

    score: torch.Tensor
    weights: torch.Tensor
    features: torch.Tensor
    branches: tuple[str, ...]
    view_scores: torch.Tensor | None = None
    spread: torch.Tensor | None = None
    interval: torch.Tensor | None = None
    technical: torch.Tensor | None = None
    attributes: Attributes | None = None
    maps: list[QualityMap] | None = None

    def rows(self) -> list[dict[str, float]]:
        """One plain dictionary per video: ``score``, ``weight_<branch>`` for each branch and, when computed,
        ``spread``, ``ci_low``, ``ci_high``, ``technical`` and ``attr_<name>`` for each attribute."""
        scores = self.score.reshape(-1).tolist()
        n = len(scores)
        weights = self.weights.reshape(n, -1).tolist()
        rows = [{"score": s, **{f"weight_{b}": w for b, w in zip(self.branches, ws)}} for s, ws in zip(scores, weights)]
        extra: dict[str, list[float]] = {}
        if self.spread is not None and self.interval is not None:
            extra["spread"] = self.spread.reshape(-1).tolist()
            extra["ci_low"], extra["ci_high"] = self.interval.reshape(n, 2).t().tolist()
        if self.technical is not None:
            extra["technical"] = self.technical.reshape(-1).tolist()
        if self.attributes is not None:
            table = self.attributes.scores.reshape(n, -1).t().tolist()
            extra |= {f"attr_{name}": col for name, col in zip(self.attributes.names, table, strict=True)}
        for key, values in extra.items():
            for row, value in zip(rows, values, strict=True):
                row[key] = value
        return rows


@dataclass
class _Pass:
    """What one batched forward pass over ``B`` videos x ``K`` views computed (rows in video-major order)."""

    scores: torch.Tensor  # (B * K,)
    weights: torch.Tensor  # (B * K, n_branches)
    features: torch.Tensor  # (B * K, n_branches, D)
    encoded: dict[str, torch.Tensor]
    tokens: dict[str, torch.Tensor]


def _release_before_backward(grad: torch.Tensor) -> None:
    """Tensor hook: :func:`release_free_memory` as the gradient enters a branch (the tensor is left alone)."""
    release_free_memory()


def _unique_clips(idx: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The rows of the distinct clips of ``idx`` ``(K, L)`` (first occurrences, in order) and the index that
    repeats their views back into ``K`` clips (``None`` when all ``K`` differ)."""
    keys = [tuple(clip) for clip in idx.tolist()]
    first: dict[tuple[int, ...], int] = {}
    inverse = [first.setdefault(key, len(first)) for key in keys]
    if len(first) == len(keys):
        return rows, None
    unique = [keys.index(key) for key in first]
    return rows.reshape(len(keys), -1)[unique].flatten(), torch.tensor(inverse)


class DVLTAVQA(nn.Module, PretrainedMixin):
    """DVLTA-VQA: Decoupled Vision-Language Modeling with Text-Guided Adaptation (Yu et al., 2025).

    Build it with :func:`dvlta_metric.create`. Calling it scores videos:

    * ``(T, 3, H, W)`` tensor: one video, returns a 0-d score;
    * ``(B, T, 3, H, W)`` tensor: a batch, returns ``(B,)``;
    * list of ``(T, 3, H, W)`` tensors of any sizes: returns ``(N,)``;
    * a file path or a :class:`~dvlta_metric.decoded.DecodedVideo` (0-d), or a list of them (``(N,)``).

    Frames are RGB, ``uint8`` in ``[0, 255]`` or float in ``[0, 1]``, on any device. Gradients are only
    recorded when the model was created with ``as_loss=True`` (or is in training mode); then they flow back
    to the input pixels. A model created with ``as_loss=True`` is a fixed metric: its parameters are frozen
    and it stays in eval mode when a module that holds it calls ``.train()`` (create it without ``as_loss``
    to fine-tune it).

    One call runs: :meth:`make_views` per video (the fragment and frame views), :meth:`encode` (each branch's
    frozen encoder), :meth:`branch_features` (each branch's trained head) and :meth:`score_features`
    (text-guided fusion and the prompt score).

    Attributes:
        lower_better: ``False``: higher scores mean better quality.
        score_range: ``(0.0, 1.0)``.
        config: The model's :class:`~dvlta_metric.config.ModelConfig`.
        as_loss: Whether calls record gradients.
        branches: The branches in ``config.branches`` order, keyed by name (``"bvfe"``, ``"tcm"``,
            ``"vbtc"``).
        prompt_embeddings: Buffer ``(3, D)``: frozen text embeddings of the fusion, positive and negative
            prompts (computed once from the text tower; inference never runs it).
        view_generator: The generator of the random views of training mode, seeded with
            ``config.fragment_view.seed`` (see :meth:`seed_views`).
        weights_origin: Where the weights came from, with the exact Hub commit or the file's SHA-256, as
            :func:`~dvlta_metric.create` records it (``"random"`` for a model built directly); see
            :func:`~dvlta_metric._factory.weights_label`.

    Thread safety: scoring (eval mode, the default) draws nothing at random, so one model may score from several
    threads at once (under ``torch.no_grad()``; a test checks that eight threads get bit-identical scores). A model
    in training mode or a loss model (``as_loss=True``) draws every view from :attr:`view_generator`: a second
    thread that draws while another does gets a ``RuntimeError`` (use one model per thread). Changing the model
    (``set_precision``, ``set_attention_kernel``, ``compile_branches``, loading weights) while it scores is not
    safe.

    Args:
        config: Model configuration.
        as_loss: Record gradients on every call (for use as a differentiable loss).
    """

    lower_better: bool = False
    score_range: tuple[float, float] = (0.0, 1.0)

    def __init__(self, config: ModelConfig, *, as_loss: bool = False) -> None:
        super().__init__()
        self.config = config
        self.as_loss = as_loss
        self.grad_checkpointing = False
        self.branches = nn.ModuleDict({name: build_branch(name, config) for name in config.branches})
        self.register_buffer("prompt_embeddings", torch.randn(len(PROMPT_ROLES), config.embed_dim))
        self.text_adapter = (
            TextAdapter(config.embed_dim, config.text_adapter_hidden, config.text_adapter_ratio)
            if config.use_adapters
            else None
        )
        self.fusion = TextGuidedFusion(config.fusion)
        self.head = PromptQualityHead(config.logit_scale)
        self.precision = "fp32"
        self.weights_origin = "random"
        self.view_generator = torch.Generator().manual_seed(config.fragment_view.seed)
        self.calibration: Calibration | None = None
        # not a submodule: the text tower is never part of the weights (state_dict) and stays on the CPU
        self.__dict__["_text_encoder"] = None
        self.__dict__["_text_cache"] = {}
        self.eval()

    # ------------------------------------------------------------------ properties
    @property
    def branch_names(self) -> tuple[str, ...]:
        """Names of the branches feeding the fusion, in order."""
        return tuple(self.branches)

    @property
    def views(self) -> tuple[str, ...]:
        """The views the branches read, in ``("fragments", "frames", "consecutive")`` order."""
        used = {branch.view for branch in self.branches.values()}
        return tuple(v for v in VIEW_ORDER if v in used)

    @property
    def device(self) -> torch.device:
        """Device of the model's weights."""
        return self.prompt_embeddings.device

    @property
    def dtype(self) -> torch.dtype:
        """Float dtype the model computes in."""
        return self.prompt_embeddings.dtype

    def _swin(self) -> SwinTransformer3D | None:
        bvfe = self.branches["bvfe"] if "bvfe" in self.branches else None
        return bvfe.encoder if isinstance(bvfe, BasicVisualFeatureExtraction) else None

    # ------------------------------------------------------------------ execution options
    def train(self, mode: bool = True) -> DVLTAVQA:
        """Set training mode, except for a loss metric (``as_loss=True``), which always stays in eval mode.

        A codec or enhancement network that holds the metric as a submodule calls ``.train()`` on it with
        its own; in training mode the metric would draw random views and use batch statistics, so its
        scores would change from call to call.

        Args:
            mode: Training mode (``True``) or eval mode (``False``).

        Returns:
            The model.
        """
        return super().train(False if self.as_loss else mode)

    def seed_views(self, seed: int) -> DVLTAVQA:
        """Reseed :attr:`view_generator`, which draws the random clips and patch offsets of training mode.

        Args:
            seed: The seed.

        Returns:
            The model.
        """
        self.view_generator.manual_seed(seed)
        return self

    def set_attention_kernel(self, kernel: str) -> DVLTAVQA:
        """Chooses the window attention kernel of the fragment backbone.

        ``"sdpa"`` (default) hands a materialised bias to ``scaled_dot_product_attention``; ``"flex"``
        computes the bias inside a FlexAttention kernel (torch 2.5 or later; compiled on first use for each
        shape). Both give the same scores up to rounding; see
        :meth:`~dvlta_metric.branches.swin3d.SwinTransformer3D.set_attention_kernel` and the "Speed and memory"
        page for which is faster where.

        Args:
            kernel: ``"sdpa"`` or ``"flex"``.

        Returns:
            The model itself.

        Raises:
            ValueError: If ``kernel`` is not one of them.
            RuntimeError: If ``"flex"`` is asked for and this torch has no FlexAttention.
        """
        check_attention_kernel(kernel)
        swin = self._swin()
        if swin is not None:
            swin.set_attention_kernel(kernel)
        return self

    def set_low_memory(self, enable: bool | None = None) -> DVLTAVQA:
        """Chooses how the fragment backbone scores: for memory or for a little speed.

        ``True``: its blocks run one clip at a time and build their attention bias when they run, holding one
        block's at a time; ``False``: the whole batch at once, each block keeping its bias for the next call
        (1.1 GB for FAST-VQA-B at 32x224x224), which saves rebuilding them on every call (timings: the Benchmarks
        page); ``None`` (default): ``True`` on CPU, ``False`` on GPUs
        (:attr:`~dvlta_metric.branches.swin3d.SwinTransformer3D.low_memory`) *(ours)*. Scores agree to float
        rounding. Calls with gradients are not affected (see :meth:`set_grad_checkpointing`), and
        :meth:`compile_branches` sets ``False``. Peak memory by model and precision: the "Speed and memory" page.

        Args:
            enable: ``True``, ``False`` or ``None``.

        Returns:
            The model itself.

        Raises:
            TypeError: If ``enable`` is not a bool or ``None``.
        """
        if enable is not None and not isinstance(enable, bool):
            raise TypeError(f"set_low_memory takes True, False or None, got {enable!r}")
        swin = self._swin()
        if swin is not None:
            swin.low_memory = enable
            swin.clear_bias_cache()
        return self

    def set_precision(self, precision: str) -> DVLTAVQA:
        """Run the two large backbones in half precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"``.

        Only the frozen Swin3D and CLIP encoders run under autocast, with their residual streams kept in
        float32; the Temporal Context Module, heads, adapters, fusion and score stay in float32. Which
        dtype each branch gets is :func:`branch_dtypes`: notably ``"bf16"`` runs both backbones in float16 on
        CUDA, and its CLIP tower in float32 on CPU. ``"bf16"`` speeds up CPUs with native bfloat16 (AVX512-BF16
        or AMX); ``"fp16"`` on a CPU without native float16 is slower than float32. How far each setting moves
        scores, and how much faster it is, is measured on the Benchmarks page.

        Args:
            precision: One of :data:`PRECISIONS`.

        Returns:
            The model itself.

        Raises:
            ValueError: For an unknown precision.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        return self

    def clear_bias_cache(self) -> DVLTAVQA:
        """Free the Swin3D's cached attention biases and the shape caches; they are rebuilt on the next call.

        The bias cache follows ``load_state_dict``, ``.to()`` and in-place edits under ``torch.no_grad()`` by
        itself; call this after editing the position-bias tables through ``.data``, or to free the memory
        between calls. The shape-dependent indices, gates and masks are shared by every model in the process
        (:func:`~dvlta_metric.branches.swin3d.clear_shape_caches`) and outlive a deleted model, or the old
        device after ``.to()``, until cleared.

        Returns:
            The model.
        """
        swin = self._swin()
        if swin is not None:
            swin.clear_bias_cache()
        clear_shape_caches()
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> DVLTAVQA:
        """Recompute the frozen encoders' activations in the backward pass instead of storing them.

        Cuts the memory of ``as_loss=True`` backward passes on long or large videos (the frozen Swin3D and
        CLIP encoders hold most activations) at the cost of one extra forward. The Swin3D recomputes one block
        of one clip at a time (:class:`~dvlta_metric.branches.swin3d.BasicLayer`). On CPU the model also hands
        the memory each branch freed back to the system after its forward pass and before its backward pass
        (:func:`~dvlta_metric.release_free_memory`), so that glibc's heap does not keep one branch's peak
        while the next one runs *(ours)*.

        Args:
            enable: Turn checkpointing on or off.

        Returns:
            The model itself.
        """
        for branch in self.branches.values():
            if branch.encoder is not None:
                branch.encoder.set_grad_checkpointing(enable)
        self.grad_checkpointing = enable
        return self

    def branch_autocast(self, branch: str, precision: str | None = None) -> contextlib.AbstractContextManager[Any]:
        """The autocast context the encoder of ``branch`` runs under, for a precision and the model's device.

        Args:
            branch: ``"bvfe"``, ``"tcm"`` or ``"vbtc"``.
            precision: One of :data:`PRECISIONS`; the model's own (:meth:`set_precision`) if ``None``.

        Returns:
            A :class:`torch.autocast` context (disabled for float32 branches; see
            :func:`~dvlta_metric.branches.base.autocast_off`).

        Raises:
            ValueError: For an unknown precision.
        """
        dtype = branch_dtypes(precision or self.precision, self.device.type)[branch]
        if dtype is None:
            return autocast_off(self.device.type)
        return torch.autocast(self.device.type, dtype=dtype)

    def compile_branches(self, **compile_kwargs: Any) -> DVLTAVQA:
        """Compile the branch networks in place with :func:`torch.compile`.

        Only the branches are compiled: reading files, cutting views and checking inputs stay in Python,
        so :meth:`forward` accepts everything it accepts uncompiled. Shapes are static by default
        (``dynamic=False``): the views always have the same size, so only a new batch size compiles again
        (keep ``batch_size`` fixed in :meth:`score_files`). Scores match the uncompiled model to float32
        rounding. It is meant for GPUs, where it can fuse the memory-bound element-wise work between the
        matmuls. It turns :meth:`set_low_memory` off.

        Args:
            **compile_kwargs: Passed to :meth:`torch.nn.Module.compile` (e.g. ``mode="max-autotune"``,
                ``dynamic=None`` for torch's automatic dynamic shapes).

        Returns:
            The model itself.
        """
        compile_kwargs.setdefault("dynamic", False)
        self.set_low_memory(False)  # the compiled backbone takes its window tensors as inputs, built before it runs
        for branch in self.branches.values():
            branch.compile(**compile_kwargs)
        return self

    # ------------------------------------------------------------------ sampling
    def view_indices(
        self,
        num_frames: int,
        *,
        train: bool = False,
        loss: bool = False,
        generator: torch.Generator | None = None,
        fps: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """Which frames each of the model's views reads (:func:`~dvlta_metric.views.temporal.view_indices`).

        Args:
            num_frames: Frames in the video.
            train: Draw the random training clip (from ``generator``) instead of the inference clips.
            loss: Draw the frames of a loss view (every choice random, from ``generator``).
            generator: Generator of the training or loss draw.
            fps: The video's frame rate. With ``config.reference_fps`` set, the views pick frames by time:
                they are computed for ``round(num_frames * reference_fps / fps)`` frames and frame ``i`` of
                those is frame ``round(i * fps / reference_fps)`` of the video. Ignored otherwise.

        Returns:
            ``{"fragments": (K, L), "frames": (T,), "consecutive": (T,)}`` for the views the model uses.
        """
        ref = self.config.reference_fps
        if ref > 0 and fps is not None and fps > 0 and fps != ref:
            virtual = max(1, round(num_frames * ref / fps))
            picked = self.view_indices(virtual, train=train, loss=loss, generator=generator)
            step = fps / ref
            return {k: (v.double() * step + 0.5).floor().long().clamp_(max=num_frames - 1) for k, v in picked.items()}
        cfg = self.config
        views = self.views
        return view_indices(
            num_frames,
            cfg.fragment_view if "fragments" in views else None,
            cfg.frame_view if "frames" in views else None,
            consecutive=cfg.frame_view if "consecutive" in views else None,
            train=train,
            loss=loss,
            generator=generator,
        )

    def needed_frames(self, num_frames: int, fps: float | None = None, *, views: int = 1) -> list[int]:
        """Sorted unique frame indices an inference call reads; a reader can skip every other frame.

        Args:
            num_frames: Frames in the video.
            fps: The video's frame rate (used with ``config.reference_fps``, see :meth:`view_indices`).
            views: Number of scoring views (:meth:`make_views`'s ``view`` ``0 .. views - 1``).

        Returns:
            The indices to decode.
        """
        _check_views(views)
        if views == 1:
            return frames_to_decode(self.view_indices(num_frames, fps=fps))
        needed: set[int] = set()
        for k in range(views):
            needed.update(frames_to_decode(self.scoring_view_indices(num_frames, k, fps=fps)))
        return sorted(needed)

    def view_seed(self, view: int) -> int:
        """Seed of the generator that draws scoring view ``view``: ``config.fragment_view.seed + view`` *(ours)*."""
        return self.config.fragment_view.seed + view

    def scoring_view_indices(self, num_frames: int, view: int, fps: float | None = None) -> dict[str, torch.Tensor]:
        """The frames scoring view ``view`` reads (:meth:`make_views` with ``view``).

        View 0 is the fixed scoring view (:meth:`view_indices`); view ``k >= 1`` draws the frames of a loss view
        (every choice random) from a generator seeded with :meth:`view_seed` ``(k)``.

        Args:
            num_frames: Frames in the video.
            view: The view number, ``>= 0``.
            fps: As for :meth:`view_indices`.

        Returns:
            As :meth:`view_indices`.
        """
        if view == 0:
            return self.view_indices(num_frames, fps=fps)
        generator = torch.Generator().manual_seed(self.view_seed(view))
        return self.view_indices(num_frames, loss=True, generator=generator, fps=fps)

    def make_views(
        self,
        video: torch.Tensor | DecodedVideo,
        *,
        train: bool | None = None,
        loss: bool | None = None,
        generator: torch.Generator | None = None,
        fps: float | None = None,
        view: int = 0,
    ) -> dict[str, torch.Tensor]:
        """Cut the views of one decoded video.

        Three kinds of views (:data:`~dvlta_metric.views.temporal.VIEW_MODES`):

        * **scoring** (eval mode): nothing random; the fragment offsets come from a generator seeded by
          ``config.fragment_view.seed``, so the same video always gets the same view, alone or in a batch;
        * **training** (training mode): one random fragment clip, random patch offsets and a random start of
          the consecutive frames (FAST-VQA's training sampling);
        * **loss** (a model created with ``as_loss=True``): the scoring views with every choice drawn afresh on
          each call *(ours)*: the clips start at a random frame of their part of the video, the segment
          frames are random frames of their segments, the patch offsets and the consecutive start are random,
          and the frame views crop at a random place instead of the centre. Over many calls the gradient of
          a loss reaches every pixel, not the same few percent on every call.

        Training and loss views draw from one generator, in a fixed order: ``generator`` if given (a seeded
        one makes them reproducible), else :attr:`view_generator` (:meth:`seed_views` reseeds it). A decoded
        video read by a model in training mode or by a loss model brings the frames its read drew
        (:attr:`~dvlta_metric.decoded.DecodedVideo.training_indices`).

        Fragment clips that read the same frames get the same patch offsets, so they are one clip
        (and :meth:`encode` computes it once): with a video shorter than the clips' span, all clips read the
        same frames.

        Patches are cut where the frames are (e.g. on the CPU) and only the views are moved to the model's
        device and converted to floats.

        ``view`` numbers the scoring views of ``model(x, views=K)`` *(ours)*: view 0 is the fixed scoring view
        above; view ``k >= 1`` is a loss view (other clip starts, segment frames, patch offsets and crop) drawn
        from a generator seeded with :meth:`view_seed` ``(k)`` = ``config.fragment_view.seed + k``, so every view
        of a video is the same on every call.

        Args:
            video: ``(T, 3, H, W)`` frames (uint8 in ``[0, 255]`` or float in ``[0, 1]``, any device), or a
                :class:`~dvlta_metric.decoded.DecodedVideo` holding (at least) the frames of
                :meth:`needed_frames`.
            train: Cut training views (default: whether the model is in training mode).
            loss: Cut loss views (default: whether the model was created with ``as_loss=True`` and ``train`` is
                false).
            generator: Generator of the training or loss draws.
            fps: The video's frame rate, for ``config.reference_fps`` (:meth:`view_indices`); a decoded video's
                own rate when not given.
            view: Which scoring view to cut (``0``: today's fixed view); only for scoring, not with ``train``,
                ``loss`` or ``generator``.

        Returns:
            ``{"fragments": (K, 3, L, S, S), "frames": (T, 3, S, S), "consecutive": (T, 3, S, S)}`` for the
            views the model uses.
        """
        self._check_dtype()
        _check_view_number(view)
        if view:
            if train or loss or generator is not None or (train is None and self.training):
                raise ValueError(
                    "make_views: view numbers the scoring views (eval mode); it cannot be combined with train, loss "
                    "or generator: call model.eval() first"
                )
            generator = torch.Generator().manual_seed(self.view_seed(view))
            train, loss = False, True
        train = self.training if train is None else train
        loss = (self.as_loss and not train) if loss is None else loss
        if train and loss:
            raise ValueError("make_views: train and loss are two different samplings; ask for one")
        drawn = train or loss
        cfg = self.config
        if generator is None and drawn:
            with _one_thread_draws(self):
                return self.make_views(video, train=train, loss=loss, generator=self.view_generator, fps=fps)
        if generator is None:
            generator = torch.Generator().manual_seed(cfg.fragment_view.seed)
        decoded = video if isinstance(video, DecodedVideo) else None
        source = video.frames if decoded is not None else video
        if drawn and decoded is not None and decoded.training_indices is not None:
            wanted = "train" if train else "loss"
            if decoded.drawn_for is not None and decoded.drawn_for != wanted:
                raise ValueError(
                    f"{decoded.path or 'the video'} was read for {decoded.drawn_for} views and is cut for {wanted} "
                    "views: read it again with the model in the mode that uses it (model.read(path))"
                )
            indices = decoded.training_indices
        else:
            num_frames = source.shape[0] if decoded is None else decoded.num_frames
            rate = fps if fps is not None or decoded is None else decoded.fps
            indices = self.view_indices(num_frames, train=train, loss=loss, generator=generator, fps=rate)
        # With gradients, every view cut from the video's own pixels goes through one autograd node, so the
        # backward pass adds their gradients into one video-sized tensor (views.cuts); without, each view is
        # finished as soon as it is cut. The draws happen in view order either way.
        together = torch.is_grad_enabled() and source.requires_grad
        views: dict[str, torch.Tensor] = {}
        pending: list[tuple[str, Cut, Any]] = []
        for name, idx in indices.items():
            rows = idx.flatten() if decoded is None else self._rows(decoded, idx.flatten(), drawn, view)
            if name == "fragments" and not reads_native_pixels(source, cfg.fragment_view):
                views[name] = self._fragment_view(source, idx, rows, generator)  # upsampled first: not a plain cut
                continue
            if name == "fragments":
                piece, finish = self._fragment_cut(source, idx, rows, generator)
            else:
                h, w = source.shape[-2:]
                crop_at = random_crop_offset(h, w, cfg.frame_view, generator) if loss else None
                piece, finish = RowCut(rows.to(source.device)), self._frame_view_finisher(crop_at)
            if together:
                pending.append((name, piece, finish))
            else:
                views[name] = finish(cut(source, [piece])[0])
        for (name, _, finish), out in zip(pending, cut(source, [p for _, p, _ in pending]), strict=True):
            views[name] = finish(out)
        return {name: views[name] for name in indices}

    def views_for_export(self, video: Any, *, fps: float | None = None) -> tuple[torch.Tensor, ...]:
        """The scoring views of one video as the exported network over views takes them (:mod:`~dvlta_metric.export`).

        :meth:`make_views` (the fixed scoring view, view 0) of one video, each view with a batch dimension of 1,
        in :attr:`views` order: ``(1, K, 3, L, S, S)`` fragments, then ``(1, T, 3, S, S)`` for each frame view the
        branches read. Stack several videos' tuples along dimension 0 (``torch.cat``) to score a batch; convert
        them with ``.numpy()`` for onnxruntime. Feeding them to :class:`~dvlta_metric.export.ViewNetwork`, or to
        the file that :func:`~dvlta_metric.export.export_model` wrote, gives this model's score of the video.

        Args:
            video: One video: ``(T, 3, H, W)`` frames (uint8 in ``[0, 255]`` or float in ``[0, 1]``), a video file
                path, or a :class:`~dvlta_metric.decoded.DecodedVideo`.
            fps: As for :meth:`forward`.

        Returns:
            One float tensor per name in :attr:`views`, on the model's device.

        Raises:
            ValueError: For a batch, a model in training mode or a loss model (whose views are drawn at random),
                and as :meth:`forward`.
            FileNotFoundError: For a path that does not exist.
        """
        if self.training or self.as_loss:
            raise ValueError(
                "views_for_export cuts the fixed scoring views; this model is in training mode or a loss "
                "(as_loss=True), whose views are drawn at random: call model.eval(), or create it without as_loss"
            )
        videos, single = self._load(video, fps, 1)
        if not single:
            raise ValueError("views_for_export takes one video ((T, 3, H, W), a path or a DecodedVideo), not a batch")
        with torch.no_grad():
            views = self.make_views(videos[0], fps=fps)
        return tuple(views[name].unsqueeze(0) for name in self.views)

    def _frame_view_finisher(self, crop_at: tuple[int, int] | None) -> Any:
        """Turns cut frames ``(T, 3, H, W)`` into the frame view on the model's device (:func:`frame_view`)."""
        cfg = self.config.frame_view

        def finish(frames: torch.Tensor) -> torch.Tensor:
            return frame_view(frames.to(self.device), cfg, dtype=self.dtype, crop_at=crop_at)

        return finish

    def _fragment_cut(
        self, source: torch.Tensor, idx: torch.Tensor, rows: torch.Tensor, generator: torch.Generator
    ) -> tuple[Cut, Any]:
        """:meth:`_fragment_view` of native-resolution frames as a cut and the function that finishes it."""
        rows, inverse = _unique_clips(idx, rows)
        cfg = self.config.fragment_view
        piece = fragment_patch_cut(source, cfg, generator, rows)

        def finish(frag: torch.Tensor) -> torch.Tensor:
            view = finish_fragments(frag, cfg, self.dtype, self.device)
            return view if inverse is None else view[inverse.to(view.device)]

        return piece, finish

    def _fragment_view(
        self, source: torch.Tensor, idx: torch.Tensor, rows: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """The fragment view of clips ``idx`` ``(K, L)`` read from ``rows`` of ``source``; clips that read the same
        frames are cut once (one draw of patch offsets) and repeated."""
        rows, inverse = _unique_clips(idx, rows)
        view = fragment_view(
            source, self.config.fragment_view, generator, self.dtype, frame_index=rows, device=self.device
        )
        return view if inverse is None else view[inverse.to(view.device)]

    @staticmethod
    def _rows(decoded: DecodedVideo, wanted: torch.Tensor, train: bool, view: int = 0) -> torch.Tensor:
        try:
            return decoded.rows(wanted)
        except ValueError as err:
            if view and decoded.training_indices is None:
                raise ValueError(
                    f"{err}: scoring view {view} reads other frames than view 0, and the video was read for fewer "
                    f"views: read it with model.read(path, views=K) for the K views you score (K >= {view + 1})"
                ) from None
            if not train and decoded.training_indices is not None:
                raise ValueError(
                    f"{err}: the video was read in training mode, which decodes only the random training clip; "
                    "read it again with the model in eval mode (model.eval(), then model.read(path))"
                ) from None
            if not train:
                raise ValueError(
                    f"{err}: pass frames read with model.read(path), which decodes the frames this model's "
                    "views need, or all frames"
                ) from None
            raise ValueError(
                f"{err}: training and loss views draw random frames; read the file with the model in the same mode "
                "(model.train() or as_loss=True, then model.read(path)), which decodes the frames it draws"
            ) from None

    # ------------------------------------------------------------------ branches and head
    def encode(
        self,
        views: dict[str, torch.Tensor],
        precision: str | None = None,
        names: Sequence[str] | None = None,
        tokens: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Each branch's frozen encoder on its view (the part the feature cache stores).

        Args:
            views: ``{"fragments": (B, K, 3, L, S, S), "frames": (B, T, 3, S, S), ...}`` (stacked
                :meth:`make_views` outputs).
            precision: Autocast setting of the encoders (:func:`branch_dtypes`); the model's own if ``None``.
            names: Encode only these branches (default: all).
            tokens: If given, the CLIP branch ``"vbtc"`` also puts its projected patch tokens ``(B, T, g, g, D)``
                from the same pass here, under ``"vbtc"`` (for quality maps).

        Returns:
            ``{branch name: (B, ...)}`` encoded views.
        """
        encoded: dict[str, torch.Tensor] = {}
        release = self.grad_checkpointing and self.device.type == "cpu" and torch.is_grad_enabled()
        for name, branch in self.branches.items():
            if names is not None and name not in names:
                continue
            with self.branch_autocast(name, precision):
                if tokens is not None and isinstance(branch, VideoBasedTemporalCLIP):
                    encoded[name], tokens[name] = branch.encode_with_tokens(views[branch.view])
                else:
                    encoded[name] = branch.encode(views[branch.view])
            if release and encoded[name].requires_grad:
                # hand what the branch freed back to the system, now and as its backward pass begins
                release_free_memory()
                encoded[name].register_hook(_release_before_backward)
        return encoded

    def branch_features(self, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        """The branch features ``F_k`` from the encoded views: each branch's trained head, in float32.

        Args:
            encoded: ``{branch name: (B, ...)}`` as :meth:`encode` gives (or the feature cache stores).

        Returns:
            ``(B, n_branches, D)`` in the order of :attr:`branches`.
        """
        with autocast_off(self.device.type):
            return torch.stack(
                [branch.head(encoded[name]).to(self.dtype) for name, branch in self.branches.items()], dim=1
            )

    def text_features(self) -> torch.Tensor:
        """Adapted prompt embeddings ``T'`` (the text adapter, ours), ``(3, D)`` rows in :data:`PROMPT_ROLES` order.

        Computed in the model's dtype even inside a caller's :func:`torch.autocast`.
        """
        text = self.prompt_embeddings
        if self.text_adapter is None:
            return text
        with autocast_off(text.device.type):
            return self.text_adapter(text)

    def score_features(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse branch features and score them (eqs. 10-13).

        With a single branch (the zero-shot model) there is nothing to weigh: the fused feature is that
        branch's feature and its weight is reported as 1. Fusion and score run in the model's dtype (float32)
        even inside a caller's :func:`torch.autocast`: with the logit scale of 100, a half-precision score head
        would move scores visibly.

        Args:
            features: ``(B, K, D)`` branch features.

        Returns:
            ``(scores, weights)``: ``(B,)`` in ``(0, 1)`` and ``(B, K)``.
        """
        with autocast_off(features.device.type):
            text = self.text_features()
            features = features.to(self.dtype)
            if features.shape[1] == 1:
                fused = features[:, 0]
                weights = torch.ones(features.shape[:2], dtype=features.dtype, device=features.device)
            else:
                fused, weights = self.fusion(features, text[0])
            return self.head(fused, text[1], text[2]), weights

    # ------------------------------------------------------------------ calls
    def read(self, path: PathLike, *, views: int = 1) -> DecodedVideo:
        """Decode the frames of a video file that this model's views need (and no others).

        In training mode, and for a loss model (``as_loss=True``), the random frames of the views are drawn
        here from :attr:`view_generator`, and only they are decoded; the result's ``training_indices`` holds
        them (read again for a new draw; the patch offsets and crops are drawn afresh on every call anyway).

        Args:
            path: A video file any FFmpeg build reads, or a :class:`~dvlta_metric.raw_video.RawVideo` (raw ``.yuv``).
            views: Decode the frames of this many scoring views (:meth:`needed_frames`; eval mode only).

        Returns:
            The decoded frames with their indices.

        Raises:
            FileNotFoundError: If the file does not exist.
            ValueError: If it cannot be decoded or has no video stream.
        """
        fps = None
        device = self.device  # where the torchcodec decoder decodes (NVDEC on a GPU); PyAV ignores it
        if self.config.reference_fps > 0:  # sampling by time needs the rate before the frames are picked
            fps = read_video(path, select=lambda n: [], device=device).fps
        _check_views(views)
        if not (self.training or self.as_loss):
            return read_video(path, select=lambda n: self.needed_frames(n, fps=fps, views=views), device=device)
        if views != 1:
            raise ValueError("read: views > 1 reads scoring views; the model is in training or loss mode")
        drawn: list[dict[str, torch.Tensor]] = []
        train = self.training

        def training_frames(num_frames: int) -> list[int]:
            # the reader calls this again with a smaller count if the file turns out truncated: the last
            # draw is the one used
            drawn.append(
                self.view_indices(num_frames, train=train, loss=not train, generator=self.view_generator, fps=fps)
            )
            return frames_to_decode(drawn[-1])

        with _one_thread_draws(self):
            video = read_video(path, select=training_frames, device=device)
        video.training_indices = drawn[-1]
        video.drawn_for = "train" if train else "loss"
        return video

    def _check_dtype(self) -> None:
        """Refuse weights converted to half precision as a whole (``.half()``, ``.to(torch.bfloat16)``)."""
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(
                f"the model's weights were converted to {self.dtype}; convert back with model.float() and use "
                "model.set_precision('fp16' or 'bf16'), which runs the two backbones in half precision and keeps "
                "the heads, the fusion and the score in float32"
            )

    def score_views(self, views: Sequence[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Score videos from their views (as made by :meth:`make_views`), batched in one call.

        :meth:`score_files` makes the views in its decoding threads and only this step in the main thread.

        Args:
            views: One :meth:`make_views` result per video.

        Returns:
            ``(scores (B,), weights (B, K), features (B, K, D))``.

        Raises:
            ValueError: If a score or fusion weight is not a finite number (the message gives the videos'
                positions in ``views``): a non-finite score is never returned as a result.
        """
        result = self._score_batch(views, tokens=False)
        return result.scores, result.weights, result.features

    def _score_batch(self, views: Sequence[dict[str, torch.Tensor]], *, tokens: bool) -> _Pass:
        """:meth:`score_views`, keeping the encoded views (and the CLIP patch tokens, with ``tokens``)."""
        self._check_dtype()
        if not views:
            raise ValueError("score_views needs the views of at least one video, got an empty sequence")
        if (
            self.training
            and len(views) < 2
            and any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in self.modules())
        ):
            raise ValueError(
                "in training mode the batch norms use batch statistics, which need at least 2 videos per call, "
                "got 1: score batches of 2 or more, or call model.eval() to score one video"
            )
        patch_tokens: dict[str, torch.Tensor] = {}
        with torch.set_grad_enabled(self.as_loss or self.training):
            batch = {k: torch.stack([v[k] for v in views]) for k in views[0]}
            encoded = self.encode(batch, tokens=patch_tokens if tokens else None)
            features = self.branch_features(encoded)
            scores, weights = self.score_features(features)
        _check_finite(scores, weights)
        return _Pass(scores, weights, features, encoded, patch_tokens)

    def _load(self, x: Any, fps: float | None, views: int) -> tuple[list[torch.Tensor | DecodedVideo], bool]:
        if fps is not None and not (isinstance(fps, (int, float)) and not isinstance(fps, bool) and fps > 0):
            raise ValueError(f"fps must be a positive number of frames per second, got {fps!r}")
        _check_views(views)
        if views > 1 and (self.training or self.as_loss):
            raise ValueError(
                "views > 1 averages scoring views, which are fixed; the model is in training mode or a loss "
                "(as_loss=True), whose views are drawn at random on every call: call model.eval(), or use views=1"
            )
        return load_videos(x, lambda path: self.read(path, views=views))

    def _pass(
        self,
        videos: list[torch.Tensor | DecodedVideo],
        fps: float | None,
        views: int,
        *,
        tokens: bool = False,
        drop: bool = False,
    ) -> _Pass:
        """One batched pass over ``len(videos) x views`` views (video-major); with ``drop``, ``videos`` is emptied
        once the views are cut, so that frames decoded from files go before the branches run."""
        with torch.set_grad_enabled(self.as_loss or self.training):
            cut_views = [self.make_views(v, fps=fps, view=k) for v in videos for k in range(views)]
            if drop:
                videos.clear()
            return self._score_batch(cut_views, tokens=tokens)

    def _run(
        self, x: Any, fps: float | None = None, views: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        videos, single = self._load(x, fps, views)
        result = self._pass(videos, fps, views, drop=True)
        return result.scores, result.weights, result.features, single

    def forward(self, x: Any, fps: float | None = None, *, views: int = 1, scale: str = "score") -> torch.Tensor:
        """Score videos.

        Args:
            x: ``(T, 3, H, W)``, ``(B, T, 3, H, W)``, or a list of ``(T, 3, H, W)`` tensors (uint8 in
                ``[0, 255]`` or float in ``[0, 1]``, RGB); or a video file path (``str`` or
                :class:`os.PathLike`) or a :class:`~dvlta_metric.decoded.DecodedVideo`, or a list of paths and
                decoded videos.
            fps: Frame rate of tensor input, used when ``config.reference_fps`` is set (files and decoded
                videos bring their own); ignored otherwise.
            views: Score ``views`` scoring views of each video (:meth:`make_views`'s ``view`` ``0 .. views - 1``,
                all in one batched call) and return their mean; ``1`` (default) is the fixed scoring view alone.
                :meth:`explain` also gives their spread and a confidence interval.
            scale: ``"score"`` (default): the score in ``(0, 1)``; ``"mos"``: mapped to the MOS scale by the
                model's :attr:`calibration` (the mean of the views' scores is mapped).

        Returns:
            0-d score for one video or path, ``(B,)`` / ``(N,)`` otherwise; in ``(0, 1)`` (or on the MOS scale),
            higher is better.

        Raises:
            TypeError, ValueError: For input of the wrong type, shape, range or size; ``views`` below 1 or above
                :data:`MAX_VIEWS`, or above 1 in training or loss mode; an unknown ``scale``, or ``"mos"`` for a
                model without a calibration.
            FileNotFoundError: For a path that does not exist.
        """
        _check_scale(scale)
        if scale == "mos":
            self._require_calibration()
        scores, _, _, single = self._run(x, fps, views)
        if views > 1:
            scores = scores.unflatten(0, (-1, views)).mean(dim=1)
        if scale == "mos":
            scores = self.to_mos(scores)
        return scores[0] if single else scores

    def explain(
        self,
        x: Any,
        fps: float | None = None,
        *,
        views: int = 1,
        confidence: float = CONFIDENCE,
        attributes: Sequence[Attribute] | bool = False,
        maps: bool = False,
    ) -> Explanation:
        """Score videos and show which stream drove each score, how sure it is, and (on request) what and where.

        Everything comes from one batched forward pass over the videos' views: the maps, the attributes and the
        technical score reuse its features (no second pass over the video).

        Args:
            x: As for :meth:`forward`.
            fps: As for :meth:`forward`.
            views: As for :meth:`forward`; with ``views >= 2`` the explanation also holds each view's score, their
                spread and a confidence interval of their mean (:mod:`~dvlta_metric.uncertainty`).
            confidence: Level of the interval.
            attributes: ``True`` for the default attributes (:data:`~dvlta_metric.attributes.DEFAULT_ATTRIBUTES`),
                or a list of words and prompt pairs (:meth:`attributes`); ``False`` (default) for none.
            maps: Also make a fragment quality map of each video (:meth:`quality_map`; models with ``"bvfe"``).

        Returns:
            An :class:`Explanation`: the scores (the mean over the views), the fusion weights and branch features
            (means over the views), and, as asked, ``view_scores (B, K)``, ``spread (B,)``, ``interval (B, 2)``,
            ``technical (B,)`` (models with ``"bvfe"``), ``attributes`` and ``maps`` (each with its video's score).

        Raises:
            ValueError: ``confidence`` is not a float in ``(0, 1)``; ``maps=True`` for a model without the fragment
                branch, in training mode or a loss model (as :meth:`quality_map`); and as :meth:`forward`.
        """
        check_confidence(confidence)
        queries = None
        if attributes is not False:
            queries = attribute_queries(None if attributes is True else attributes)  # type: ignore[arg-type]
        if maps:
            self._require_fragments("quality maps")
            self._require_scoring_views("quality maps (maps=True)")
        videos, single = self._load(x, fps, views)
        result = self._pass(videos, fps, views)
        per_view = result.scores.unflatten(0, (-1, views))
        weights = result.weights.unflatten(0, (-1, views)).mean(dim=1)
        features = result.features.unflatten(0, (-1, views)).mean(dim=1)
        out = Explanation(per_view.mean(dim=1), weights, features, self.branch_names, view_scores=per_view)
        if views > 1:
            out.spread, out.interval = view_spread(per_view), view_interval(per_view, confidence)
        with torch.set_grad_enabled(self.as_loss or self.training):
            self._explain_extras(out, result, videos, fps, views, queries, maps)
        if single:
            for name in ("score", "weights", "features", "view_scores", "spread", "interval", "technical"):
                value = getattr(out, name)
                if value is not None:
                    setattr(out, name, value[0])
            if out.attributes is not None:
                out.attributes.scores = out.attributes.scores[0]
        return out

    def _explain_extras(
        self,
        out: Explanation,
        result: _Pass,
        videos: Sequence[torch.Tensor | DecodedVideo],
        fps: float | None,
        views: int,
        queries: Sequence[Any] | None,
        maps: bool,
    ) -> None:
        """Fill the technical score, the attributes and the maps of :meth:`explain` from the pass's features."""
        if "bvfe" in self.branches:
            out.technical = self._technical(result.features).unflatten(0, (-1, views)).mean(dim=1)
        if queries is not None:
            probs = self._attribute_probabilities(result.features, queries).unflatten(0, (-1, views)).mean(dim=1)
            out.attributes = Attributes(tuple(q.name for q in queries), probs, tuple(queries))
        if maps:
            out.maps = [
                self._fragment_map(result.encoded["bvfe"][i * views : (i + 1) * views], v, fps, views)
                for i, v in enumerate(videos)
            ]
            for qmap, score in zip(out.maps, out.score.detach().reshape(-1).tolist(), strict=True):
                qmap.score = score

    # ------------------------------------------------------------------ calibration
    def set_calibration(self, calibration: Calibration | None) -> DVLTAVQA:
        """Attach a MOS calibration (or remove it with ``None``); :meth:`save_pretrained` stores it.

        Args:
            calibration: A :class:`~dvlta_metric.calibration.Calibration` or ``None``.

        Returns:
            The model.

        Raises:
            TypeError: For anything else.
        """
        if calibration is not None and not isinstance(calibration, Calibration):
            raise TypeError(f"calibration must be a Calibration or None, got {type(calibration).__name__}")
        self.calibration = calibration
        return self

    def calibrate(
        self,
        scores: Sequence[float] | np.ndarray | torch.Tensor,
        mos: Sequence[float] | np.ndarray | torch.Tensor,
        *,
        mos_range: tuple[float, float] | None = None,
        dataset: str = "",
        split: str = "",
    ) -> Calibration:
        """Fit the 4-parameter logistic from this model's scores to MOS and attach it: one call.

        ``model.calibrate(scores, mos, mos_range=(1, 5), dataset="my test")`` then ``model(x, scale="mos")``;
        ``model.save_pretrained(dir)`` keeps it with the weights. The fit is
        :func:`~dvlta_metric.calibration.fit_calibration`.

        Args:
            scores: This model's scores (``scale="score"``, the same ``views``) of videos with known MOS, ``(N,)``.
            mos: Their mean opinion scores, ``(N,)``.
            mos_range: The MOS scale's ``(lowest, highest)`` (default: the range of ``mos``).
            dataset: Name of the data, stored with the fit.
            split: Which part of it, stored with the fit.

        Returns:
            The attached :class:`~dvlta_metric.calibration.Calibration`.
        """
        calibration = fit_calibration(scores, mos, mos_range=mos_range, dataset=dataset, split=split)
        self.set_calibration(calibration)
        return calibration

    def to_mos(self, scores: torch.Tensor) -> torch.Tensor:
        """Map scores to the MOS scale with the model's :attr:`calibration`.

        Raises:
            ValueError: If the model has no calibration.
        """
        return self._require_calibration()(scores)

    def _require_calibration(self) -> Calibration:
        if self.calibration is None:
            raise ValueError(
                f"model {self.config.name!r} has no MOS calibration, so it cannot report MOS (scale='mos'): its "
                "scores are only relative. Fit one from your own (score, MOS) pairs with model.calibrate(scores, mos), "
                "or load weights whose config.json holds one (training evaluation writes it)"
            )
        return self.calibration

    # ------------------------------------------------------------------ attributes and technical score
    def set_text_encoder(self, encoder: TextEncoder | None) -> DVLTAVQA:
        """Attach the text tower that embeds new attribute prompts (:meth:`attributes`); ``None`` removes it.

        The zero-shot model attaches OpenAI CLIP's when it loads its weights. A trained model's prompts were
        embedded by ViFi-CLIP's text tower at conversion time; attach that one (or OpenAI CLIP's, an
        approximation: ViFi-CLIP fine-tuned it). The tower is not part of the weights (:meth:`state_dict`) and
        runs on the CPU, once per new prompt (embeddings are cached).

        Returns:
            The model.
        """
        if encoder is not None and not isinstance(encoder, TextEncoder):
            raise TypeError(
                f"encoder must be a dvlta_metric.attributes.TextEncoder or None, got {type(encoder).__name__}"
            )
        self.__dict__["_text_encoder"] = encoder
        self.__dict__["_text_cache"] = {}
        return self

    @property
    def text_encoder(self) -> TextEncoder | None:
        """The attached text tower (:meth:`set_text_encoder`), or ``None``."""
        return self.__dict__["_text_encoder"]

    def prompt_embedding(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text embeddings ``E(prompt)`` (before the text adapter), ``(P, D)`` in the model's dtype and device.

        The model's own three prompts come from :attr:`prompt_embeddings` (no text tower needed); other prompts
        from the attached text tower, once each (cached). A model with random weights (``weights_origin``
        ``"random..."``, e.g. ``create(name, pretrained=False)``) that has none gets a random text tower of its
        sizes, seeded with ``config.fragment_view.seed`` (the same on every run; its embeddings mean nothing,
        like the model's scores).

        Raises:
            ValueError: If a prompt is new and no text tower is attached to a model with trained weights.
        """
        own = dict(
            zip((self.config.prompts.fusion, self.config.prompts.positive, self.config.prompts.negative), range(3))
        )
        cache: dict[str, torch.Tensor] = self.__dict__["_text_cache"]
        new = [p for p in dict.fromkeys(prompts) if p not in own and p not in cache]
        if new:
            if self.text_encoder is None and self.weights_origin.startswith("random"):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.config.fragment_view.seed)
                    self.set_text_encoder(TextEncoder.from_config(self.config))
                cache = self.__dict__["_text_cache"]
            if self.text_encoder is None:
                raise ValueError(
                    f"embedding the prompts {new[:3]} needs a text tower, and this model has none attached: the "
                    "zero-shot model attaches one when it loads (create('dvlta-vqa-zeroshot')); for others call "
                    "model.set_text_encoder(encoder) (see the Trustworthy scores docs page), or ask only for the "
                    f"model's own prompts {sorted(own)}"
                )
            cache.update(zip(new, self.text_encoder(new).unbind(0)))
        rows = [self.prompt_embeddings[own[p]] if p in own else cache[p].to(self.prompt_embeddings) for p in prompts]
        return torch.stack(rows)

    def attributes(
        self, x: Any, attributes: Sequence[Attribute] | None = None, *, fps: float | None = None, views: int = 1
    ) -> Attributes:
        """Score text-queried attributes of videos in the model's joint text-video space (CLIP-IQA's antonym pairs).

        Each attribute is the probability that ``"a photo of a {word} video."`` rather than its antonym describes
        the video: ``softmax(s * [cos(F, T'+), cos(F, T'-)])[0]`` with the video feature ``F`` the score uses
        (the fused feature of eq. 11) and the prompt embeddings through the model's text adapter, as eqs. 12-13
        do for the quality pair (:mod:`~dvlta_metric.attributes`).

        Args:
            x: As for :meth:`forward`.
            attributes: Words with a known antonym (:data:`~dvlta_metric.attributes.ANTONYMS`) or
                ``(positive, negative)`` prompt pairs; ``None`` for
                :data:`~dvlta_metric.attributes.DEFAULT_ATTRIBUTES`.
            fps: As for :meth:`forward`.
            views: As for :meth:`forward` (the mean over the views).

        Returns:
            :class:`~dvlta_metric.attributes.Attributes`, scores ``(A,)`` for one video or ``(B, A)``.

        Raises:
            TypeError, ValueError: For an empty list, a word without a known antonym, or new prompts and no text
                tower (:meth:`set_text_encoder`); and as :meth:`forward`.
        """
        if attributes is None:
            chosen: Sequence[Attribute] | bool = True
        elif isinstance(attributes, bool):
            raise TypeError("attributes must be a list of words or prompt pairs, or None for the default set")
        else:
            chosen = attributes
        found = self.explain(x, fps, views=views, attributes=chosen).attributes
        if found is None:  # explain always fills them when asked
            raise RuntimeError("attributes were not computed")
        return found

    def technical_score(self, x: Any, fps: float | None = None, *, views: int = 1) -> torch.Tensor:
        """A technical-quality sub-score from the fragment branch alone *(ours)*.

        The prompt head of eqs. 12-13 on ``F_bvfe`` instead of the fused feature: how much the fragment branch
        (FAST-VQA's technical stream: native-resolution patches) alone leans to "high quality". In ``(0, 1)``,
        higher is better; not calibrated to MOS, and not the same scale as the score.

        Args:
            x: As for :meth:`forward`.
            fps: As for :meth:`forward`.
            views: As for :meth:`forward`.

        Returns:
            0-d for one video, ``(B,)`` otherwise.

        Raises:
            ValueError: For a model without the fragment branch (the zero-shot model).
        """
        self._require_fragments("the technical score")
        technical = self.explain(x, fps, views=views).technical
        if technical is None:
            raise RuntimeError("the technical score was not computed")
        return technical

    def _technical(self, features: torch.Tensor) -> torch.Tensor:
        """Prompt head on the fragment feature alone: ``(N, n_branches, D)`` -> ``(N,)``."""
        with autocast_off(features.device.type):
            text = self.text_features()
            bvfe = features[:, self.branch_names.index("bvfe")].to(self.dtype)
            return self.head(bvfe, text[1], text[2])

    def _fused(self, features: torch.Tensor) -> torch.Tensor:
        """The fused feature of eq. 11, compared with the prompts: ``(N, n_branches, D)`` -> ``(N, D)``."""
        with autocast_off(features.device.type):
            features = features.to(self.dtype)
            if features.shape[1] == 1:
                return features[:, 0]
            return self.fusion(features, self.text_features()[0])[0]

    def _attribute_probabilities(self, features: torch.Tensor, queries: Sequence[Any]) -> torch.Tensor:
        """``(N, A)`` attribute probabilities of ``N`` rows of branch features."""
        prompts = [p for q in queries for p in (q.positive, q.negative)]
        text = self.prompt_embedding(prompts)
        with autocast_off(text.device.type):
            if self.text_adapter is not None:
                text = self.text_adapter(text)
            return pair_probability(self._fused(features), text[0::2], text[1::2], self.head.logit_scale)

    # ------------------------------------------------------------------ quality maps
    def quality_map(
        self,
        video: Any,
        *,
        source: str = "fragments",
        fps: float | None = None,
        views: int = 1,
        isolated: bool = False,
    ) -> QualityMap:
        """A quality map of one video: where in which frames the features lean to "high" or "low quality".

        ``"fragments"``: each fragment cell's head feature (eq. 9, before pooling) projected on the quality
        direction ``d`` (the normalised positive minus negative prompt embedding) and placed on the patch of the
        frame it was cut from; ``"clip"``: each CLIP patch token projected on ``d``, placed on the part of the
        frame it saw (:mod:`~dvlta_metric.quality_map`). One forward pass computes the map and the score. Draw
        it with :func:`~dvlta_metric.quality_map.write_overlays`.

        The Swin3D's attention mixes the fragment cells (its last stage attends over all of them), so a cell's
        value in this map also depends on the other cells. ``isolated=True`` makes a map that is local by
        construction instead: the fragment branch runs once more with attention kept inside each cell
        (:func:`~dvlta_metric.branches.swin3d.cell_isolation_mask`), so each value depends only on the pixels of
        its own patch, at the cost of a second fragment-branch pass *(ours)*. Its values are not a decomposition
        of the score.

        Args:
            video: One video: ``(T, 3, H, W)``, a file path or a :class:`~dvlta_metric.decoded.DecodedVideo`.
            source: ``"fragments"`` (models with ``"bvfe"``) or ``"clip"`` (models with ``"vbtc"``).
            fps: As for :meth:`forward`.
            views: Put the records of this many scoring views on the map.
            isolated: For ``"fragments"``: each cell's features from its own pixels alone (see above).

        Returns:
            The :class:`~dvlta_metric.quality_map.QualityMap`.

        Raises:
            ValueError: For a batch, an unknown source, a source the model lacks, a model in training mode or a
                loss model (``as_loss=True``: its views are random, the map is placed by the scoring views); and
                as :meth:`forward`.
        """
        if source not in MAP_SOURCES:
            raise ValueError(f"source must be one of {MAP_SOURCES}, got {source!r}")
        if not isinstance(isolated, bool):
            raise TypeError(f"isolated must be True or False, got {isolated!r}")
        if isolated and source != "fragments":
            raise ValueError("isolated=True is for the fragment map (source='fragments'); CLIP maps have no cells")
        if source == "fragments":
            self._require_fragments("a fragment quality map")
        elif "vbtc" not in self.branches:
            raise ValueError("a CLIP quality map needs the CLIP branch 'vbtc', which this model does not have")
        self._require_scoring_views("quality_map")
        videos, single = self._load(video, fps, views)
        if not single:
            raise ValueError("quality_map takes one video ((T, 3, H, W), a path or a DecodedVideo), not a batch")
        result = self._pass(videos, fps, views, tokens=source == "clip")
        if source == "fragments":
            if isolated:
                encoded = self._isolated_fragments(videos[0], fps, views)
            else:
                encoded = result.encoded["bvfe"][:views]
            qmap = self._fragment_map(encoded, videos[0], fps, views)
            qmap.isolated = isolated
        else:
            qmap = self._clip_map(result, videos[0], fps, views)
        qmap.score = float(result.scores.mean())
        return qmap

    def _quality_direction(self) -> torch.Tensor:
        """``d = T'+/|T'+| - T'-/|T'-|``, ``(D,)``: the direction in the joint space that raises the score."""
        text = self.text_features()
        return F.normalize(text[1], dim=0) - F.normalize(text[2], dim=0)

    def _frame_geometry(
        self, video: torch.Tensor | DecodedVideo, fps: float | None
    ) -> tuple[int, int, int, float | None]:
        if isinstance(video, DecodedVideo):
            h, w = video.frames.shape[-2:]
            return video.num_frames, h, w, fps if fps is not None else video.fps
        return video.shape[0], video.shape[-2], video.shape[-1], fps

    def view_layout(
        self, num_frames: int, height: int, width: int, view: int = 0, fps: float | None = None
    ) -> dict[str, Any]:
        """Where scoring view ``view`` of a ``num_frames`` x ``height`` x ``width`` video reads its pixels.

        Replays the draws of :meth:`make_views` (same generator, same order) without cutting anything.

        Args:
            num_frames: Frames in the video.
            height: Frame height.
            width: Frame width.
            view: The scoring view.
            fps: As for :meth:`view_indices`.

        Returns:
            ``{"fragments": FragmentLayout, "frames" / "consecutive": CropLayout}`` for the views the model uses
            (:mod:`~dvlta_metric.quality_map`).
        """
        _check_view_number(view)
        cfg = self.config
        generator = torch.Generator().manual_seed(self.view_seed(view))
        if view:
            indices = self.view_indices(num_frames, loss=True, generator=generator, fps=fps)
        else:
            indices = self.view_indices(num_frames, fps=fps)
        out: dict[str, Any] = {}
        for name, idx in indices.items():
            if name == "fragments":
                fc = cfg.fragment_view
                keys = [tuple(clip) for clip in idx.tolist()]
                first: dict[tuple[int, ...], int] = {}
                inverse = [first.setdefault(key, len(first)) for key in keys]
                h_up, w_up = upsampled_size(height, width, fc.size)
                runs = fc.clip_len // fc.aligned
                top, left = sample_fragment_offsets(h_up, w_up, len(first) * runs, fc, generator)
                g = fc.fragments
                sy, sx = height / h_up, width / w_up
                top = top.reshape(len(first), runs, g, g)[inverse].double() * sy
                left = left.reshape(len(first), runs, g, g)[inverse].double() * sx
                patch = (fc.fsize * sy, fc.fsize * sx)
                cell = ((h_up // g) * sy, (w_up // g) * sx)
                out[name] = FragmentLayout(idx, top, left, patch, cell, fc.aligned)
            else:
                fv = cfg.frame_view
                rh, rw = resized_size(height, width, fv.resize)
                if view:
                    crop_top, crop_left = random_crop_offset(height, width, fv, generator)
                else:
                    crop_top, crop_left = (rh - fv.crop) // 2, (rw - fv.crop) // 2
                sy, sx = height / rh, width / rw
                out[name] = CropLayout(idx, crop_top * sy, crop_left * sx, (fv.crop * sy, fv.crop * sx))
        return out

    def _isolated_fragments(self, video: Any, fps: float | None, views: int) -> torch.Tensor:
        """Backbone features ``(views, C, 768, t, h, w)`` of each fragment cell alone (``isolated=True`` maps)."""
        branch = self.branches["bvfe"]
        with torch.no_grad():
            clips = torch.stack([self.make_views(video, fps=fps, view=k)["fragments"] for k in range(views)])
            with self.branch_autocast("bvfe", None):
                return branch.encode(clips, cells=self.config.fragment_view.fragments)

    def _fragment_map(self, encoded_views: torch.Tensor, video: Any, fps: float | None, views: int) -> QualityMap:
        """The fragment map of one video from its ``(views, C, 768, t, h, w)`` backbone features."""
        branch = self.branches["bvfe"]
        num_frames, height, width, rate = self._frame_geometry(video, fps)
        direction = self._quality_direction()
        records = []
        for k in range(views):
            encoded = encoded_views[k : k + 1]
            cells = branch.cell_features(encoded)[0]  # (C, D, t, h, w)
            values = torch.einsum("cdthw,d->cthw", cells.to(direction), direction).detach().cpu()
            layout = self.view_layout(num_frames, height, width, k, rate)["fragments"]
            records.append(fragment_records(values, layout))
        return _map_from(records, "fragments", (height, width), views)

    def _clip_map(self, result: _Pass, video: Any, fps: float | None, views: int) -> QualityMap:
        """The CLIP patch-token map of the one video of a pass."""
        num_frames, height, width, rate = self._frame_geometry(video, fps)
        direction = self._quality_direction()
        view_name = self.branches["vbtc"].view
        records = []
        for k in range(views):
            tokens = result.tokens["vbtc"][k]  # (T, g, g, D)
            values = (tokens.to(direction) @ direction).detach().cpu()
            layout = self.view_layout(num_frames, height, width, k, rate)[view_name]
            records.append(clip_records(values, layout))
        return _map_from(records, "clip", (height, width), views)

    def _require_scoring_views(self, what: str) -> None:
        """Refuse maps in training or loss mode: a map is placed by the fixed scoring views (:meth:`view_layout`),
        and these modes cut random views, which the map would misplace."""
        if self.training or self.as_loss:
            mode = "a loss (as_loss=True)" if self.as_loss else "in training mode"
            raise ValueError(
                f"{what}: the model is {mode}, whose views are random draws, but a map is placed where the fixed "
                "scoring views read: call model.eval() first, or make the map with a model created without "
                "as_loss=True"
            )

    def _require_fragments(self, what: str) -> None:
        if "bvfe" not in self.branches:
            raise ValueError(
                f"{what} needs the fragment branch 'bvfe', which model {self.config.name!r} does not have "
                f"(its branches: {list(self.branch_names)})"
            )

    def timeline_frames(self, num_frames: int, window: int, fps: float | None = None) -> list[int]:
        """Sorted unique frame indices that :meth:`timeline` reads with windows of ``window`` frames.

        Each window needs the frames of :meth:`needed_frames` for its own length, offset by its start.

        Args:
            num_frames: Frames in the video.
            window: Window length in frames.
            fps: The video's frame rate (used with ``config.reference_fps``, see :meth:`view_indices`).

        Returns:
            The indices to decode.
        """
        needed: set[int] = set()
        for start, end in window_bounds(num_frames, window):
            needed.update(start + i for i in self.needed_frames(end - start, fps=fps))
        return sorted(needed)

    def timeline(
        self,
        video: torch.Tensor | DecodedVideo | PathLike,
        *,
        window_s: float | None = None,
        window_frames: int | None = None,
        fps: float | None = None,
        batch_size: int = 4,
    ) -> Timeline:
        """Score consecutive windows of one video: per-segment scores with their start and end times.

        The video is cut into windows of ``window_s`` seconds or ``window_frames`` frames that cover it without
        gaps or overlaps; a remainder shorter than a window is merged into the last window, and a video shorter
        than one window is one window (:func:`~dvlta_metric.timeline.window_bounds`). Window ``[start, end)``
        is scored as that stretch of the video alone, exactly ``model(video[start:end])``. A file is read once,
        decoding only the frames the windows' views need (:meth:`timeline_frames`), under the limits in effect
        (:func:`~dvlta_metric.video_io.read_limits`).

        Windows are scored ``batch_size`` at a time; batching changes scores only by float rounding (below
        1e-6 on the CPU), ``batch_size=1`` gives each window's score bit for bit as scoring it alone.

        Args:
            video: ``(T, 3, H, W)`` frames (uint8 in ``[0, 255]`` or float in ``[0, 1]``), a video file path, or a
                :class:`~dvlta_metric.decoded.DecodedVideo` holding (at least) the frames of
                :meth:`timeline_frames` (e.g. all frames, from :func:`~dvlta_metric.video_io.read_video`).
            window_s: Window length in seconds (``round(window_s * fps)`` frames). Needs the frame rate: a
                file's or a decoded video's own, or ``fps`` for a tensor.
            window_frames: Window length in frames, instead of ``window_s``.
            fps: Frame rate for the times (and for ``window_s``); for a file or decoded video it replaces the
                frame rate the file declares.
            batch_size: Windows per model call.

        Returns:
            A :class:`~dvlta_metric.timeline.Timeline`: ``scores (N,)``, ``starts (N,)``, ``ends (N,)``, times
            in seconds, and :meth:`~dvlta_metric.timeline.Timeline.pooled` statistics.

        Raises:
            TypeError, ValueError: For a video as :meth:`forward` refuses it, a batch instead of one video,
                both or neither window length, ``window_s`` without a frame rate, a decoded video that lacks
                frames the windows need, or a model in training mode.
            FileNotFoundError: For a path that does not exist.
        """
        if self.training:
            raise ValueError(
                "timeline scores windows with the inference views; the model is in training mode: call "
                "model.eval() first"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number of windows, at least 1; got {batch_size!r}")
        if isinstance(video, (str, os.PathLike)):
            video = self._read_for_timeline(video, window_s=window_s, window_frames=window_frames, fps=fps)
        if isinstance(video, DecodedVideo):
            check_video(video.frames, name=video.path or "decoded video")
            num_frames, rate, path = video.num_frames, fps if fps is not None else video.fps, video.path
        elif isinstance(video, torch.Tensor):
            if video.dim() != 4:
                raise ValueError(
                    f"timeline scores one video (T, 3, H, W), got a {video.dim()}-D tensor of shape "
                    f"{tuple(video.shape)}: call it once per video"
                )
            check_video(video)
            num_frames, rate, path = video.shape[0], fps, ""
        else:
            raise TypeError(
                f"timeline takes one video: a (T, 3, H, W) tensor, a file path or a DecodedVideo; got "
                f"{type(video).__name__}"
            )
        window = window_length(window_s=window_s, window_frames=window_frames, fps=rate)
        bounds = window_bounds(num_frames, window)
        if isinstance(video, DecodedVideo):
            _check_holds(video, self.timeline_frames(num_frames, window, rate))
        scores = []
        for i in range(0, len(bounds), batch_size):
            batch = bounds[i : i + batch_size]
            views = [self.make_views(_stretch(video, start, end), loss=False, fps=rate) for start, end in batch]
            scores.append(self.score_views(views)[0])
        return Timeline(
            scores=torch.cat(scores),
            starts=torch.tensor([s for s, _ in bounds], dtype=torch.long),
            ends=torch.tensor([e for _, e in bounds], dtype=torch.long),
            num_frames=num_frames,
            window=window,
            fps=rate,
            path=path,
        )

    def _read_for_timeline(
        self, path: PathLike, *, window_s: float | None, window_frames: int | None, fps: float | None
    ) -> DecodedVideo:
        """Decode the frames the windows of :meth:`timeline` need (the frame rate is read first when needed)."""
        if fps is None and ((window_s is not None and window_frames is None) or self.config.reference_fps > 0):
            fps = read_video(path, select=lambda n: [], device=self.device).fps  # the packets, and one frame
        window = window_length(window_s=window_s, window_frames=window_frames, fps=fps)
        return read_video(path, select=lambda n: self.timeline_frames(n, window, fps), device=self.device)

    def score_files(
        self,
        paths: Sequence[PathLike],
        *,
        batch_size: int = 1,
        num_workers: int = 2,
        progress: bool = True,
        explain: bool = False,
        prefetch: int | None = None,
        max_megapixels: float | None = None,
        decode_timeout: float | None = None,
        color_matrix: str | None = None,
        color_range: str | None = None,
        keep_bit_depth: bool | None = None,
        views: int = 1,
        decoder: str = "pyav",
    ) -> Iterator[FileResult]:
        """Score many video files (:func:`~dvlta_metric.batch.score_files` with this model).

        Decoding runs in parallel workers while the model computes. A file that cannot be read or scored gives
        a result with ``error`` set; the others go on. Results come in input order.

        Args:
            paths: Video files (paths, or :class:`~dvlta_metric.raw_video.RawVideo` for raw ``.yuv`` files).
            batch_size: Videos per model call.
            num_workers: Decoding threads (0 decodes in the calling thread).
            progress: Show a tqdm progress bar on stderr when stderr is a terminal.
            explain: Also record the fusion weights of each video.
            prefetch: Videos decoded ahead while the model runs (default ``max(batch_size, num_workers)``).
            max_megapixels: Pixel budget of one decoded video (default
                :data:`~dvlta_metric.video_io.DEFAULT_MAX_MEGAPIXELS`; see :func:`~dvlta_metric.video_io.read_video`).
            decode_timeout: Most seconds one file's decoding may take (default
                :data:`~dvlta_metric.video_io.DEFAULT_DECODE_TIMEOUT_S`).
            color_matrix: YUV -> RGB matrix of untagged streams (``"bt601"``, the default, ``"bt709"``,
                ``"bt2020"``).
            color_range: Range of untagged streams (``"tv"``, the default, or ``"pc"``).
            keep_bit_depth: Keep the bits of sources above 8 bits (default ``True``).
            views: Scoring views per file (as :meth:`forward`); with 2 or more each result also holds their
                spread and interval (:attr:`~dvlta_metric.batch.FileResult.interval`).
            decoder: ``"pyav"`` (the default, on CPUs) or ``"torchcodec"``: decoded on the model's device, by NVDEC
                on a GPU, the frames staying there through view cutting (:mod:`~dvlta_metric.torchcodec_io`).

        Returns:
            An iterator of :class:`~dvlta_metric.batch.FileResult`, one per path, in order.
        """
        options = {"batch_size": batch_size, "num_workers": num_workers, "prefetch": prefetch}
        options |= {"max_megapixels": max_megapixels, "decode_timeout": decode_timeout}
        options |= {"color_matrix": color_matrix, "color_range": color_range, "keep_bit_depth": keep_bit_depth}
        return score_files(self, paths, progress=progress, explain=explain, views=views, decoder=decoder, **options)

    def extra_repr(self) -> str:
        return f"name={self.config.name!r}, branches={self.branches}, as_loss={self.as_loss}"


_DRAWING: set[int] = set()
"""``id()`` of the models drawing from their :attr:`~DVLTAVQA.view_generator` right now."""
_DRAWING_LOCK = threading.Lock()


@contextlib.contextmanager
def _one_thread_draws(model: DVLTAVQA) -> Iterator[None]:
    """Refuse a second thread that draws from ``model``'s generator while another does (ours).

    Scoring (eval mode) draws nothing and may run in several threads at once; a model in training mode or a loss
    model draws every view from one generator, and calls from several threads would take its draws in an order
    that depends on the scheduler: a seeded run would no longer repeat.
    """
    with _DRAWING_LOCK:
        if id(model) in _DRAWING:
            raise RuntimeError(
                "this model draws its views from one generator (training mode, or as_loss=True) and another thread "
                "is drawing from it now: their draws would interleave in an unspecified order, so a seeded run would "
                "not repeat; call it from one thread, or give each thread its own model (model.seed_views(seed) per "
                "model)"
            )
        _DRAWING.add(id(model))
    try:
        yield
    finally:
        with _DRAWING_LOCK:
            _DRAWING.discard(id(model))


def _check_views(views: object) -> None:
    if isinstance(views, bool) or not isinstance(views, int) or not 1 <= views <= MAX_VIEWS:
        raise ValueError(f"views must be a whole number from 1 to {MAX_VIEWS}, got {views!r}")


def _check_view_number(view: object) -> None:
    if isinstance(view, bool) or not isinstance(view, int) or not 0 <= view < MAX_VIEWS:
        raise ValueError(f"view must be a whole number from 0 to {MAX_VIEWS - 1}, got {view!r}")


def _check_scale(scale: object) -> None:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")


def _map_from(records: list[tuple[torch.Tensor, ...]], source: str, size: tuple[int, int], views: int) -> QualityMap:
    frames, boxes, cells, values = (torch.cat(parts) for parts in zip(*records, strict=True))
    return QualityMap(source, size, frames, boxes, cells, values.float(), views)


def _check_finite(scores: torch.Tensor, weights: torch.Tensor) -> None:
    """Refuse non-finite scores or fusion weights: one reduction and one host sync per batch.

    Args:
        scores: ``(B,)`` scores.
        weights: ``(B, K)`` fusion weights.

    Raises:
        ValueError: Naming the positions of the videos whose score or weights are NaN or infinite.
    """
    finite = torch.isfinite(scores.detach()) & torch.isfinite(weights.detach()).all(dim=1)
    if bool(finite.all()):
        return
    bad = (~finite).nonzero().flatten().tolist()
    raise ValueError(
        f"the model gave a non-finite score or fusion weight (NaN or infinity) for video(s) {bad} of the {len(finite)} "
        "in this call; no score is reported for them. Videos are checked to be finite, so the model's weights "
        "are most likely damaged (e.g. NaN written by a diverged training run): reload them, or check them with "
        "torch.isfinite(p).all() for p in model.parameters()"
    )


def _stretch(video: torch.Tensor | DecodedVideo, start: int, end: int) -> torch.Tensor | DecodedVideo:
    """Frames ``[start, end)`` of a video, as a video of their own (a decoded video keeps only its rows there)."""
    if isinstance(video, torch.Tensor):
        return video[start:end]
    keep = (video.indices >= start) & (video.indices < end)
    return DecodedVideo(video.frames[keep], video.indices[keep] - start, end - start, path=video.path, fps=video.fps)


def _check_holds(video: DecodedVideo, needed: list[int]) -> None:
    """Refuse a decoded video that lacks frames the timeline's windows read, saying how to read one that has them."""
    missing = sorted(set(needed) - set(video.indices.tolist()))
    if missing:
        raise ValueError(
            f"{video.path or 'decoded video'}: the timeline's windows need frames {missing[:5]}"
            f"{' and more' if len(missing) > 5 else ''}, which were not decoded (model.read decodes only the frames "
            "of one whole-video score): pass the file's path to model.timeline, or a video read with all its frames "
            "(dvlta_metric.read_video(path))"
        )
