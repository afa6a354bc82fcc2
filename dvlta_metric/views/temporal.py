"""Which frames of a video each view reads.

There are three views: ``"fragments"`` (clips of the fragment view), ``"frames"`` (one frame at the centre of
each of ``T`` segments) and ``"consecutive"`` (``T`` consecutive frames); the last two differ only in which
frames they take (:data:`FRAME_VIEW_NAMES`). The samplers work on frame *indices* only. :func:`view_indices`
is the one place that says which frames each view of a model reads, at inference and in training (with an
explicit generator); a video reader decodes just :func:`frames_to_decode` of them and the views are then cut
from those frames alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import torch

from ..config import FragmentViewConfig, FrameViewConfig

FRAME_VIEW_NAMES: dict[str, str] = {"segments": "frames", "consecutive": "consecutive"}
"""The view a frame sampling (:data:`~dvlta_metric.config.FRAME_SAMPLINGS`) names."""

VIEW_ORDER: tuple[str, ...] = ("fragments", "frames", "consecutive")
"""Every view, in the order views are listed, drawn and decoded."""

VIEW_MODES: tuple[str, ...] = ("eval", "train", "loss")
"""How views are drawn: ``"eval"`` fixed (scoring), ``"train"`` FAST-VQA's training sampling (one random
fragment clip), ``"loss"`` the inference views with every choice drawn at random on each call (a model created
with ``as_loss=True``), so that a loss reaches every pixel over many calls."""

RANDOM_IN_TRAINING: frozenset[str] = frozenset({"fragments", "consecutive"})
"""The views that training draws at random: the fragment view's clip and patch offsets (FAST-VQA's training
sampling) and the start of the consecutive frames. The segment-centre frames are the same in training and at
inference (ViFi-CLIP's test sampling)."""


def fragment_clip_indices(
    num_frames: int,
    cfg: FragmentViewConfig,
    *,
    train: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Frame indices of the fragment view's clips (FAST-VQA ``SampleFrames``).

    At inference the video is cut into ``cfg.num_clips`` segments and one clip of ``cfg.clip_len`` frames,
    ``cfg.frame_interval`` apart, starts in each segment: with ``cfg.test_clips == "centre"`` at the centre
    offset of equal segments of the clips' possible starts (FAST-VQA ``SampleFrames`` test mode); with
    ``"random"`` at a random point inside each of ``num_clips`` equal parts of the video (FAST-VQA-B's
    ``FragmentSampleFrames``), drawn from a generator seeded with ``cfg.seed``, so the draw is the same on
    every call. In training one clip starts at a random offset. Indices wrap modulo ``num_frames``, so a video
    shorter than a clip (even a single frame) is valid.

    Args:
        num_frames: Frames in the video (``>= 1``).
        cfg: Fragment view settings.
        train: Draw one random clip (training) instead of ``num_clips`` fixed ones.
        generator: Random generator for ``train=True`` (the global one if ``None``).

    Returns:
        Long tensor ``(num_clips, clip_len)`` (``num_clips = 1`` in training) of indices in
        ``[0, num_frames)``.
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got num_frames={num_frames}")
    span = cfg.clip_len * cfg.frame_interval
    if train:
        room = num_frames - span + 1
        start = int(torch.randint(room, (1,), generator=generator)) if room > 1 else 0
        offsets = torch.tensor([start], dtype=torch.long)
    elif cfg.test_clips == "random":
        n = cfg.num_clips
        part = num_frames // n
        room = part - span
        draw = torch.Generator().manual_seed(cfg.seed)
        starts = torch.randint(room, (n,), generator=draw) if room > 0 else torch.zeros(n, dtype=torch.long)
        offsets = torch.arange(n, dtype=torch.long) * part + starts
    else:
        n = cfg.num_clips
        if num_frames > span - 1:
            avg = (num_frames - span + 1) / n
            offsets = torch.tensor([int(i * avg + avg / 2.0) for i in range(n)], dtype=torch.long)
        else:
            offsets = torch.zeros(n, dtype=torch.long)
    steps = torch.arange(cfg.clip_len, dtype=torch.long) * cfg.frame_interval
    return fold_indices(offsets[:, None] + steps[None, :], num_frames, cfg.overrun)


def fold_indices(indices: torch.Tensor, num_frames: int, overrun: str = "wrap") -> torch.Tensor:
    """Bring frame indices past the end of a video back into ``[0, num_frames)``.

    Args:
        indices: Non-negative long tensor of any shape.
        num_frames: Frames in the video (``>= 1``).
        overrun: ``"wrap"`` (``i % num_frames``, FAST-VQA's) or ``"mirror"`` (back and forth over the video:
            ``0 1 2 3 2 1 0 1 ...``; ours).

    Returns:
        Indices in ``[0, num_frames)``, the same shape.
    """
    if overrun == "wrap" or num_frames == 1:
        return indices % num_frames
    if overrun != "mirror":
        raise ValueError(f"overrun must be 'wrap' or 'mirror', got {overrun!r}")
    period = 2 * (num_frames - 1)
    phase = indices % period
    return torch.where(phase < num_frames, phase, period - phase)


def loss_clip_indices(num_frames: int, cfg: FragmentViewConfig, generator: torch.Generator) -> torch.Tensor:
    """Fragment clips of a loss view: ``num_clips`` clips, each starting at a random frame of its part.

    The video is cut into ``cfg.num_clips`` equal parts (whole frames) and a clip of ``cfg.clip_len`` frames,
    ``cfg.frame_interval`` apart, starts at a random frame of each part, so every frame can start a clip;
    clips longer than the rest of the video fold back (:func:`fold_indices`) *(ours)*.

    Args:
        num_frames: Frames in the video (``>= 1``).
        cfg: Fragment view settings.
        generator: The generator of the draw.

    Returns:
        Long tensor ``(num_clips, clip_len)`` of indices in ``[0, num_frames)``.
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got num_frames={num_frames}")
    k = cfg.num_clips
    starts = _random_frame_of_each_part(num_frames, k, generator)
    steps = torch.arange(cfg.clip_len, dtype=torch.long) * cfg.frame_interval
    return fold_indices(starts[:, None] + steps[None, :], num_frames, cfg.overrun)


def loss_segment_indices(num_frames: int, cfg: FrameViewConfig, generator: torch.Generator) -> torch.Tensor:
    """The segment-centre view of a loss view: a random frame of each of ``T`` equal segments (TSN's
    training sampling) instead of its centre, so every frame can be picked.

    Args:
        num_frames: Frames in the video (``>= 1``).
        cfg: Frame view settings (``cfg.num_frames`` is ``T``).
        generator: The generator of the draw.

    Returns:
        Long tensor ``(T,)``; indices repeat when the video has fewer than ``T`` frames.
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got num_frames={num_frames}")
    t = cfg.num_frames
    return _random_frame_of_each_part(num_frames, t, generator).clamp_(max=num_frames - 1)


def _random_frame_of_each_part(num_frames: int, parts: int, generator: torch.Generator) -> torch.Tensor:
    """``(parts,)``: a uniformly drawn frame of each of ``parts`` equal parts (whole frames) of the video; the
    first frame of its part when a part holds no frame (a video shorter than ``parts``)."""
    bounds = [(i * num_frames) // parts for i in range(parts + 1)]
    return torch.tensor(
        [lo + int(torch.randint(max(1, hi - lo), (1,), generator=generator)) for lo, hi in itertools.pairwise(bounds)],
        dtype=torch.long,
    )


def segment_centre_indices(num_frames: int, cfg: FrameViewConfig) -> torch.Tensor:
    """Frame indices of the frame view: the centre of each of ``T`` equal segments (TSN test sampling).

    Args:
        num_frames: Frames in the video (``>= 1``).
        cfg: Frame view settings (``cfg.num_frames`` is ``T``).

    Returns:
        Long tensor ``(T,)``; indices repeat when the video has fewer than ``T`` frames.
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got num_frames={num_frames}")
    t = cfg.num_frames
    seg = num_frames / t
    return torch.tensor([min(int(seg * i + seg / 2.0), num_frames - 1) for i in range(t)], dtype=torch.long)


def consecutive_indices(
    num_frames: int,
    cfg: FrameViewConfig,
    *,
    train: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Frame indices of the consecutive-frame view: ``T`` neighbouring frames.

    The paper's frame view "selects a sequence of continuous video frames" (Section III). At inference the
    run is centred in the video (it starts at ``(num_frames - T) // 2``); in training it starts at a random
    frame. A video shorter than ``T`` frames gives all its frames and then repeats the last one *(ours)*:
    wrapping around would put a cut between the last and the first frame into a view meant for motion.

    Args:
        num_frames: Frames in the video (``>= 1``).
        cfg: Frame view settings (``cfg.num_frames`` is ``T``).
        train: Draw a random start (training) instead of the centred one.
        generator: Random generator for ``train=True`` (the global one if ``None``).

    Returns:
        Long tensor ``(T,)`` of increasing indices in ``[0, num_frames)``.
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got num_frames={num_frames}")
    t = cfg.num_frames
    room = num_frames - t + 1
    if room <= 1:
        start = 0
    elif train:
        start = int(torch.randint(room, (1,), generator=generator))
    else:
        start = (num_frames - t) // 2
    return (start + torch.arange(t, dtype=torch.long)).clamp_(max=num_frames - 1)


def view_indices(
    num_frames: int,
    fragments: FragmentViewConfig | None,
    frames: FrameViewConfig | None,
    *,
    consecutive: FrameViewConfig | None = None,
    train: bool = False,
    loss: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Which frames each view reads: the one "frames to decode" rule of inference, training and the cache.

    At inference nothing is random (the ``"random"`` placement of fragment clips draws from its own seeded
    generator); in training the fragment clip and then the start of the consecutive frames are drawn from
    ``generator``, in that order; for a loss view (``loss=True``) the fragment clips
    (:func:`loss_clip_indices`), the segment frames (:func:`loss_segment_indices`) and the start of the
    consecutive frames, in that order. A caller that cuts the views afterwards passes the same generator on,
    so that one seeded generator fixes the clips and the patch offsets.

    Args:
        num_frames: Frames in the video (``>= 1``).
        fragments: Fragment view settings, or ``None`` if the model reads no fragments.
        frames: Frame view settings of the segment-centre view ``"frames"``, or ``None`` if no branch reads it.
        consecutive: Frame view settings of the consecutive-frame view ``"consecutive"``, or ``None`` if no
            branch reads it.
        train: Draw the training clips instead of the inference ones.
        loss: Draw loss views: the inference views with every choice random.
        generator: Generator of the training or loss draws (torch's global one if ``None``).

    Returns:
        ``{"fragments": (K, L), "frames": (T,), "consecutive": (T,)}`` long tensors of frame indices, for the
        views given, in :data:`VIEW_ORDER`.
    """
    if train and loss:
        raise ValueError("view_indices: train and loss are two different samplings; ask for one")
    if loss and generator is None:
        generator = torch.default_generator
    out: dict[str, torch.Tensor] = {}
    if fragments is not None:
        if loss:
            out["fragments"] = loss_clip_indices(num_frames, fragments, generator)  # type: ignore[arg-type]
        else:
            out["fragments"] = fragment_clip_indices(num_frames, fragments, train=train, generator=generator)
    if frames is not None:
        if loss:
            out["frames"] = loss_segment_indices(num_frames, frames, generator)  # type: ignore[arg-type]
        else:
            out["frames"] = segment_centre_indices(num_frames, frames)
    if consecutive is not None:
        out["consecutive"] = consecutive_indices(num_frames, consecutive, train=train or loss, generator=generator)
    return out


def frames_to_decode(indices: Mapping[str, torch.Tensor]) -> list[int]:
    """Sorted unique frame indices of some views (a :func:`view_indices` result); every other frame can be
    skipped by a reader."""
    needed: set[int] = set()
    for idx in indices.values():
        needed.update(idx.flatten().tolist())
    return sorted(needed)
