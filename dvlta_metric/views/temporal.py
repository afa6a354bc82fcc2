"""Which frames of a video each view reads.

Both samplers work on frame *indices* only, so a video reader can decode just the frames a model needs
(:func:`needed_frame_indices`) and the views can then be cut from those frames alone.
"""

from __future__ import annotations

import torch

from ..config import FragmentViewConfig, FrameViewConfig


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


def needed_frame_indices(
    num_frames: int,
    fragment_cfg: FragmentViewConfig | None,
    frame_cfg: FrameViewConfig | None,
) -> list[int]:
    """Sorted unique frame indices that the inference views of a model read.

    Args:
        num_frames: Frames in the video.
        fragment_cfg: Fragment view settings, or ``None`` if the model has no fragment branch.
        frame_cfg: Frame view settings, or ``None`` if the model has no frame branch.

    Returns:
        The indices a reader must decode; every other frame can be skipped.
    """
    needed: set[int] = set()
    if fragment_cfg is not None:
        needed.update(fragment_clip_indices(num_frames, fragment_cfg).flatten().tolist())
    if frame_cfg is not None:
        needed.update(segment_centre_indices(num_frames, frame_cfg).tolist())
    return sorted(needed)
