"""Which frames of a video each view reads.

Both samplers work on frame *indices* only. :func:`view_indices` is the one place that says which frames
each view of a model reads, at inference and in training (with an explicit generator); a video reader decodes
just :func:`frames_to_decode` of them and the views are then cut from those frames alone.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..config import FragmentViewConfig, FrameViewConfig

RANDOM_IN_TRAINING: frozenset[str] = frozenset({"fragments"})
"""The views that training draws at random (the fragment view's clip and patch offsets, FAST-VQA's training
sampling); the frame view is the same in training and at inference."""


def fragment_clip_indices(
    num_frames: int,
    cfg: FragmentViewConfig,
    *,
    train: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Frame indices of the fragment view's clips (FAST-VQA ``SampleFrames``).

    At inference the video is cut into ``cfg.num_clips`` equal segments and one clip of ``cfg.clip_len``
    frames, ``cfg.frame_interval`` apart, starts at the centre offset of each segment. In training one clip
    starts at a random offset. Indices wrap modulo ``num_frames``, so a video shorter than a clip (even a
    single frame) is valid.

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
    else:
        n = cfg.num_clips
        if num_frames > span - 1:
            avg = (num_frames - span + 1) / n
            offsets = torch.tensor([int(i * avg + avg / 2.0) for i in range(n)], dtype=torch.long)
        else:
            offsets = torch.zeros(n, dtype=torch.long)
    steps = torch.arange(cfg.clip_len, dtype=torch.long) * cfg.frame_interval
    return (offsets[:, None] + steps[None, :]) % num_frames


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


def view_indices(
    num_frames: int,
    fragments: FragmentViewConfig | None,
    frames: FrameViewConfig | None,
    *,
    train: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Which frames each view reads: the one "frames to decode" rule of inference, training and the cache.

    At inference nothing is random; in training the fragment clip is drawn from ``generator``. A caller that
    cuts the views afterwards passes the same generator on, so that one seeded generator fixes both the
    clip and the patch offsets.

    Args:
        num_frames: Frames in the video (``>= 1``).
        fragments: Fragment view settings, or ``None`` if the model reads no fragments.
        frames: Frame view settings, or ``None`` if the model reads no frame view.
        train: Draw the training clip instead of the inference clips.
        generator: Generator of the training draw (torch's global one if ``None``).

    Returns:
        ``{"fragments": (K, L), "frames": (T,)}`` long tensors of frame indices, for the views given.
    """
    out: dict[str, torch.Tensor] = {}
    if fragments is not None:
        out["fragments"] = fragment_clip_indices(num_frames, fragments, train=train, generator=generator)
    if frames is not None:
        out["frames"] = segment_centre_indices(num_frames, frames)
    return out


def frames_to_decode(indices: Mapping[str, torch.Tensor]) -> list[int]:
    """Sorted unique frame indices of some views (a :func:`view_indices` result); every other frame can be
    skipped by a reader."""
    needed: set[int] = set()
    for idx in indices.values():
        needed.update(idx.flatten().tolist())
    return sorted(needed)
