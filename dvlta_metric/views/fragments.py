"""Fragment view (ventral stream): grid mini-patch sampling of FAST-VQA.

Each frame is cut into a ``7 x 7`` grid; from every cell one ``32 x 32`` patch is taken at native
resolution and the 49 patches are spliced into a ``224 x 224`` frame. Patch positions stay fixed over each
run of ``aligned`` frames, so temporal variation inside a patch is real motion, not a moving crop. If the
short side is below 224 the frames are first upsampled bilinearly; when all the upsampled frames together
would exceed :data:`UPSAMPLE_CHUNK_PIXELS` (elongated frames), they are upsampled a few at a time and
their patches cut right away, with the same result. Everything here is tensor indexing, so the view is
differentiable with respect to the pixel values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import FragmentViewConfig
from .cuts import PatchCut, cut
from .normalize import normalize, to_unit_float

UPSAMPLE_CHUNK_PIXELS = 1 << 24
"""Most upsampled pixels (frames x height x width, about 200 MB of float32 RGB) :func:`fragment_view` makes
at once; beyond it the frames are upsampled a few at a time. Common aspect ratios stay within it (128 frames
of 16:9 at 398x224 are 11.4 M pixels), so their views are computed in one call, as before."""


def upsampled_size(height: int, width: int, min_side: int) -> tuple[int, int]:
    """The frame size :func:`upsample_short_side` gives a ``height`` x ``width`` frame.

    Args:
        height: Frame height.
        width: Frame width.
        min_side: Required short side in pixels.

    Returns:
        ``(H', W')``: the size itself when the short side is at least ``min_side``, else the size with the
        short side scaled up to ``min_side``, keeping the aspect ratio.
    """
    short = min(height, width)
    if short >= min_side:
        return height, width
    scale = min_side / short
    return max(min_side, round(height * scale)), max(min_side, round(width * scale))


def upsample_short_side(frames: torch.Tensor, min_side: int) -> torch.Tensor:
    """Bilinearly upsample frames whose short side is below ``min_side`` (others are returned as is).

    Args:
        frames: ``(N, 3, H, W)`` float frames.
        min_side: Required short side in pixels.

    Returns:
        ``(N, 3, H', W')`` with ``min(H', W') >= min_side``; the aspect ratio is kept.
    """
    h, w = frames.shape[-2:]
    size = upsampled_size(h, w, min_side)
    if size == (h, w):
        return frames
    return F.interpolate(frames, size=size, mode="bilinear", align_corners=False)


def sample_fragment_offsets(
    height: int,
    width: int,
    num_runs: int,
    cfg: FragmentViewConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corners of the patches, one set per run of ``cfg.aligned`` frames.

    The grid cell ``(i, j)`` starts at ``min(i * (H // G), H - fsize)`` (``G = cfg.fragments``); the patch is
    shifted inside the cell by a random offset in ``[0, H // G - fsize)`` when the cell is larger than the
    patch. The offsets are drawn from ``generator``: a seeded one makes the view reproducible.

    Args:
        height: Frame height ``H`` (after any upsampling).
        width: Frame width ``W``.
        num_runs: Number of runs of aligned frames.
        cfg: Fragment view settings.
        generator: Random generator (the global one if ``None``).

    Returns:
        ``(top, left)``, each a long tensor ``(num_runs, G, G)``.
    """
    g, fs = cfg.fragments, cfg.fsize
    if height < fs or width < fs:
        raise ValueError(f"frames of {height}x{width} are smaller than one {fs}x{fs} fragment")
    cell_h, cell_w = height // g, width // g
    grid_h = torch.tensor([min(cell_h * i, height - fs) for i in range(g)], dtype=torch.long)
    grid_w = torch.tensor([min(cell_w * i, width - fs) for i in range(g)], dtype=torch.long)
    if cell_h > fs:
        rnd_h = torch.randint(cell_h - fs, (g, g, num_runs), generator=generator)
    else:
        rnd_h = torch.zeros((g, g, num_runs), dtype=torch.long)
    if cell_w > fs:
        rnd_w = torch.randint(cell_w - fs, (g, g, num_runs), generator=generator)
    else:
        rnd_w = torch.zeros((g, g, num_runs), dtype=torch.long)
    top = grid_h[:, None, None] + rnd_h  # (G, G, R)
    left = grid_w[None, :, None] + rnd_w
    return top.permute(2, 0, 1).contiguous(), left.permute(2, 0, 1).contiguous()


def extract_fragments(
    frames: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    fsize: int,
    aligned: int,
    frame_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Splice native-resolution patches into fragment frames.

    Only the patch pixels are read: with ``frame_index`` the patches are cut straight out of a whole video,
    without first copying the sampled frames.

    Args:
        frames: ``(N, C, H, W)`` frames: the ``R * aligned`` sampled frames in order, or (with
            ``frame_index``) any frames of a video.
        top: ``(R, G, G)`` patch rows (from :func:`sample_fragment_offsets`).
        left: ``(R, G, G)`` patch columns.
        fsize: Patch side.
        aligned: Frames per run sharing one set of positions.
        frame_index: Optional ``(R * aligned,)`` rows of ``frames`` to cut from, in order.

    Returns:
        ``(R * aligned, C, G * fsize, G * fsize)``; cell ``(i, j)`` of output frame ``r * aligned + a`` is
        ``frames[f, :, top[r,i,j]:+fsize, left[r,i,j]:+fsize]`` with ``f = frame_index[r * aligned + a]``
        (``f = r * aligned + a`` without ``frame_index``).
    """
    runs = top.shape[0]
    if frame_index is None:
        frame_index = torch.arange(frames.shape[0])
    n = frame_index.numel()
    if runs * aligned != n:
        raise ValueError(f"{n} frames do not split into {runs} runs of {aligned}")
    return cut(frames, [patch_cut(top, left, fsize, frame_index.to(frames.device).reshape(runs, aligned))])[0]


def patch_cut(top: torch.Tensor, left: torch.Tensor, fsize: int, runs_index: torch.Tensor) -> PatchCut:
    """The :class:`~dvlta_metric.views.cuts.PatchCut` of patches at ``top``/``left`` ``(R, G, G)`` over the runs'
    rows ``runs_index`` ``(R, A)``."""
    return PatchCut(torch.stack([top, left], dim=-1).tolist(), runs_index, fsize)


def fragment_view(
    frames: torch.Tensor,
    cfg: FragmentViewConfig,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    *,
    frame_index: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Fragment view of ``K`` clips.

    Args:
        frames: Frames, uint8 in ``[0, 255]`` or float in ``[0, 1]``, ``(N, 3, H, W)``: either the ``K * L``
            sampled frames in order (``K`` clips of ``L = cfg.clip_len`` frames, see
            :func:`~dvlta_metric.views.temporal.fragment_clip_indices`), or a whole video with
            ``frame_index`` naming the sampled rows. uint8 frames are converted after the patches are cut,
            so only the view is ever held as floats.
        cfg: Fragment view settings.
        generator: Generator for the patch offsets (seeded at inference, ``None`` in training).
        dtype: Float dtype of the result.
        frame_index: Optional ``(K * L,)`` rows of ``frames`` that form the clips.
        device: Where the result goes (default: the device of ``frames``). The patches are cut where the
            frames are and only the view is moved.

    Returns:
        ``(K, 3, L, S, S)`` normalised fragment clips, ``S = cfg.fragments * cfg.fsize`` (224).
    """
    n = _view_frames(frames, cfg, frame_index)
    aligned = cfg.aligned  # divides clip_len (checked by FragmentViewConfig)
    h, w = upsampled_size(frames.shape[-2], frames.shape[-1], cfg.size)
    top, left = sample_fragment_offsets(h, w, n // aligned, cfg, generator)
    if (h, w) == tuple(frames.shape[-2:]):
        frag = extract_fragments(frames, top, left, cfg.fsize, aligned, frame_index)
    elif n * h * w <= UPSAMPLE_CHUNK_PIXELS:
        if frame_index is not None:
            frames = frames[frame_index.to(frames.device)]
        frames = upsample_short_side(to_unit_float(frames, dtype), cfg.size)
        frag = extract_fragments(frames, top, left, cfg.fsize, aligned)
    else:
        frag = _upsample_and_extract(frames, top, left, cfg, aligned, frame_index, dtype)
    return finish_fragments(frag, cfg, dtype, device)


def _view_frames(frames: torch.Tensor, cfg: FragmentViewConfig, frame_index: torch.Tensor | None) -> int:
    """Frames of a fragment view of ``frames`` (``frame_index`` rows if given), checked to be whole clips."""
    n = frames.shape[0] if frame_index is None else frame_index.numel()
    if n % cfg.clip_len:
        raise ValueError(f"{n} frames are not a whole number of {cfg.clip_len}-frame clips")
    return n


def reads_native_pixels(frames: torch.Tensor, cfg: FragmentViewConfig) -> bool:
    """Whether the fragment view cuts ``frames`` ``(N, 3, H, W)`` as they are (short side at least ``cfg.size``)
    rather than upsampling them first."""
    return upsampled_size(frames.shape[-2], frames.shape[-1], cfg.size) == tuple(frames.shape[-2:])


def fragment_patch_cut(
    frames: torch.Tensor,
    cfg: FragmentViewConfig,
    generator: torch.Generator | None,
    frame_index: torch.Tensor,
) -> PatchCut:
    """The patches of :func:`fragment_view` as a cut, for frames it reads at native resolution.

    Draws the patch offsets from ``generator`` exactly as :func:`fragment_view` does, so
    ``finish_fragments(cut(frames, [fragment_patch_cut(...)])[0], ...)`` is :func:`fragment_view`'s result; a
    caller cuts other views of the same video in the same :func:`~dvlta_metric.views.cuts.cut` (one gradient
    buffer).

    Args:
        frames: ``(N, 3, H, W)`` video with :func:`reads_native_pixels`.
        cfg: Fragment view settings.
        generator: Generator for the patch offsets.
        frame_index: ``(K * L,)`` rows of ``frames`` that form the clips.

    Returns:
        The cut, ``(K * L, 3, S, S)`` once applied.

    Raises:
        ValueError: If the frames would need upsampling or the rows are not whole clips.
    """
    if not reads_native_pixels(frames, cfg):
        raise ValueError(f"frames of {tuple(frames.shape[-2:])} are upsampled before their fragments are cut")
    n = _view_frames(frames, cfg, frame_index)
    top, left = sample_fragment_offsets(frames.shape[-2], frames.shape[-1], n // cfg.aligned, cfg, generator)
    return patch_cut(top, left, cfg.fsize, frame_index.to(frames.device).reshape(-1, cfg.aligned))


def finish_fragments(
    frag: torch.Tensor, cfg: FragmentViewConfig, dtype: torch.dtype, device: torch.device | None = None
) -> torch.Tensor:
    """Cut fragment frames ``(K * L, 3, S, S)`` -> normalised clips ``(K, 3, L, S, S)`` of ``dtype`` on ``device``."""
    frag = to_unit_float(frag.to(device or frag.device), dtype)
    frag = normalize(frag, cfg.mean, cfg.std)
    return frag.reshape(-1, cfg.clip_len, 3, cfg.size, cfg.size).transpose(1, 2)


def _upsample_and_extract(
    frames: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    cfg: FragmentViewConfig,
    aligned: int,
    frame_index: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """:func:`upsample_short_side` then :func:`extract_fragments`, a few frames at a time.

    Holds at most :data:`UPSAMPLE_CHUNK_PIXELS` upsampled pixels (one frame, at least) instead of all the
    upsampled frames; each frame is upsampled exactly as in one call, so the patches are the same.

    Args:
        frames: ``(N, 3, H, W)`` frames (uint8 or float), the short side below ``cfg.size``.
        top: ``(R, G, G)`` patch rows in the upsampled frames.
        left: ``(R, G, G)`` patch columns.
        cfg: Fragment view settings.
        aligned: Frames per run.
        frame_index: Optional ``(R * aligned,)`` rows of ``frames`` to cut from.
        dtype: Float dtype of the upsampled frames.

    Returns:
        ``(R * aligned, 3, G * fsize, G * fsize)``, as :func:`extract_fragments`.
    """
    n = top.shape[0] * aligned
    if frame_index is None:
        frame_index = torch.arange(n)
    if frame_index.numel() != n:
        raise ValueError(f"{frame_index.numel()} frames do not split into {top.shape[0]} runs of {aligned}")
    rows = frame_index.to(frames.device)
    run_of = torch.arange(n) // aligned  # each output frame's run
    h, w = upsampled_size(frames.shape[-2], frames.shape[-1], cfg.size)
    step = max(1, UPSAMPLE_CHUNK_PIXELS // (h * w))
    parts = []
    for start in range(0, n, step):
        chunk = upsample_short_side(to_unit_float(frames[rows[start : start + step]], dtype), cfg.size)
        runs = run_of[start : start + step]
        parts.append(extract_fragments(chunk, top[runs], left[runs], cfg.fsize, 1))  # one frame per "run"
    return torch.cat(parts)
