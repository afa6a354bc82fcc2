"""Quality maps: which regions of which frames pulled a score up or down, and overlays to look at them.

A map value is a local feature projected on the model's *quality direction* ``d = T'+/|T'+| - T'-/|T'-|``
(the difference of the normalised "high quality" and "low quality" prompt embeddings, eqs. 12-13): positive
where the feature leans to "high quality", negative where it leans to "low quality" *(ours)*. Two sources:

* **fragments** (the ``"bvfe"`` branch, eqs. 8-9): the head MLP's output at every cell of the Swin3D feature
  grid, before the pooling of eq. 9, placed back on the ``fsize x fsize`` patch of the frame that the
  fragment cell was cut from (:func:`fragment_records`), for the frames its temporal token covers. Their mean
  is ``<F_bvfe, d>``: the map decomposes the fragment branch's contribution to the score.
* **clip** (the ``"vbtc"`` branch, eq. 1): the CLIP image tower's patch tokens (after ``ln_post`` and the
  projection, as MaskCLIP reads dense CLIP features; Zhou, Loy and Dai, ECCV 2022) placed back on the part of
  the frame each patch saw through the resize and crop of the frame view (:func:`clip_records`). CLIP's score
  comes from its class token, not from these tokens: the map shows where the tokens agree with the quality
  prompts, not what produced the score.

Both are sparse: a fragment map covers only the sampled patches (49 of 32x32 pixels per frame, a few percent
of a 1080p frame) and only the frames the clips read; :meth:`QualityMap.render` leaves the rest ``NaN`` or, with
``fill="cell"``, spreads each patch over its grid cell. What a map can and cannot be trusted for is on the
"Trustworthy scores" docs page.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from .decoded import DecodedVideo

FILL_MODES: tuple[str, ...] = ("patch", "cell")
"""How :meth:`QualityMap.render` places a value: on the patch that was read, or over its whole grid cell."""


@dataclass(frozen=True)
class FragmentLayout:
    """Where one view's fragment patches came from, in frame pixels.

    Attributes:
        frames: ``(C, L)`` source frame of each fragment frame of each clip.
        top: ``(C, R, G, G)`` top row of each patch, per run of ``aligned`` frames (float: frame pixels).
        left: ``(C, R, G, G)`` left column.
        patch: ``(height, width)`` of one patch in frame pixels (``fsize``, or less when frames were upsampled).
        cell: ``(height, width)`` of one grid cell in frame pixels.
        aligned: Fragment frames per run.
    """

    frames: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor
    patch: tuple[float, float]
    cell: tuple[float, float]
    aligned: int


@dataclass(frozen=True)
class CropLayout:
    """Where one view's frame-view crop came from.

    Attributes:
        frames: ``(T,)`` source frame of each frame of the view.
        top: Top of the crop in frame pixels.
        left: Left of the crop in frame pixels.
        size: ``(height, width)`` of the crop in frame pixels.
    """

    frames: torch.Tensor
    top: float
    left: float
    size: tuple[float, float]


def fragment_records(
    values: torch.Tensor, layout: FragmentLayout
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Place a fragment branch's cell values back on the frames (one view).

    Args:
        values: ``(C, t, h, w)`` values of the ``C`` clips' feature grids; ``h`` and ``w`` are multiples of
            the fragment grid ``G`` (the tokens of one cell are averaged) and ``L`` a multiple of ``t``.
        layout: The view's :class:`FragmentLayout`.

    Returns:
        ``(frames (N,), boxes (N, 4), cells (N, 4), values (N,))``: for each clip, fragment frame and grid cell,
        the source frame, the patch's ``(top, left, height, width)``, its grid cell's box and the value of the
        temporal token that covers the fragment frame.

    Raises:
        ValueError: If the grid or the clip length does not divide as required.
    """
    c, t, h, w = values.shape
    g = layout.top.shape[-1]
    length = layout.frames.shape[1]
    if h % g or w % g or length % t:
        raise ValueError(f"feature grid {(t, h, w)} does not divide into a {g}x{g} fragment grid of {length} frames")
    cells = F.avg_pool2d(values.reshape(c * t, 1, h, w), (h // g, w // g)).reshape(c, t, g, g)
    per_frame = cells.repeat_interleave(length // t, dim=1)  # (C, L, G, G)
    run = torch.arange(length) // layout.aligned
    top = layout.top[:, run]  # (C, L, G, G)
    left = layout.left[:, run]
    ph, pw = layout.patch
    ch, cw = layout.cell
    rows = torch.arange(g, dtype=torch.float64)[:, None].expand(g, g)
    cols = torch.arange(g, dtype=torch.float64)[None, :].expand(g, g)
    frames = layout.frames[:, :, None, None].expand(c, length, g, g)
    boxes = torch.stack([top, left, torch.full_like(top, ph), torch.full_like(top, pw)], dim=-1)
    cell_boxes = torch.stack(
        [(rows * ch).expand_as(top), (cols * cw).expand_as(top), torch.full_like(top, ch), torch.full_like(top, cw)],
        dim=-1,
    )
    return frames.reshape(-1), boxes.reshape(-1, 4), cell_boxes.reshape(-1, 4), per_frame.reshape(-1)


def clip_records(
    values: torch.Tensor, layout: CropLayout
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Place CLIP patch-token values back on the frames (one view).

    Args:
        values: ``(T, g, g)`` value of each patch token of each frame of the view.
        layout: The view's :class:`CropLayout`.

    Returns:
        ``(frames (N,), boxes (N, 4), cells (N, 4), values (N,))`` as :func:`fragment_records` (a token's patch is
        its own cell).
    """
    t, gh, gw = values.shape
    ph, pw = layout.size[0] / gh, layout.size[1] / gw
    rows = layout.top + ph * torch.arange(gh, dtype=torch.float64)[:, None].expand(gh, gw)
    cols = layout.left + pw * torch.arange(gw, dtype=torch.float64)[None, :].expand(gh, gw)
    box = torch.stack([rows, cols, torch.full_like(rows, ph), torch.full_like(rows, pw)], dim=-1)
    boxes = box.expand(t, gh, gw, 4).reshape(-1, 4)
    frames = layout.frames[:, None, None].expand(t, gh, gw).reshape(-1)
    return frames, boxes, boxes.clone(), values.reshape(-1)


@dataclass
class QualityMap:
    """A quality map of one video: values on boxes of frames (see the module docstring).

    Attributes:
        source: ``"fragments"`` or ``"clip"``.
        frame_size: ``(height, width)`` of the video's frames.
        frames: ``(N,)`` source frame index of each record.
        boxes: ``(N, 4)`` ``(top, left, height, width)`` in frame pixels of the region the value came from.
        cells: ``(N, 4)`` the grid cell around it (the same as ``boxes`` for ``"clip"``).
        values: ``(N,)`` projections on the quality direction: positive leans to "high quality".
        views: Number of views the records come from.
        score: The video's score from the same pass (the mean over the views), or ``None``.
        isolated: Whether the fragment cells were encoded each on its own (``quality_map(isolated=True)``): the
            values are then local, and no longer a decomposition of the score.
    """

    source: str
    frame_size: tuple[int, int]
    frames: torch.Tensor
    boxes: torch.Tensor
    cells: torch.Tensor
    values: torch.Tensor
    views: int = 1
    score: float | None = None
    isolated: bool = False

    def frame_indices(self) -> list[int]:
        """Sorted frames that have at least one value."""
        return sorted(set(self.frames.tolist()))

    def render(self, frame: int, *, fill: str = "patch") -> torch.Tensor:
        """The map of one frame at the frame's resolution: the mean of the values whose region covers a pixel.

        Args:
            frame: A frame index of :meth:`frame_indices`.
            fill: ``"patch"``: each value on the region it was computed from; ``"cell"``: over its grid cell.

        Returns:
            ``(H, W)`` float32, ``NaN`` where no value lies.

        Raises:
            ValueError: For an unknown ``fill`` or a frame without values.
        """
        if fill not in FILL_MODES:
            raise ValueError(f"fill must be one of {FILL_MODES}, got {fill!r}")
        keep = self.frames == frame
        if not bool(keep.any()):
            raise ValueError(f"frame {frame} has no map values; frames with values: {self.frame_indices()[:8]}...")
        h, w = self.frame_size
        total = torch.zeros(h, w, dtype=torch.float64)
        count = torch.zeros(h, w, dtype=torch.float64)
        regions = (self.boxes if fill == "patch" else self.cells)[keep]
        for (top, left, bh, bw), value in zip(regions.tolist(), self.values[keep].tolist(), strict=True):
            r0, c0 = max(0, round(top)), max(0, round(left))
            r1, c1 = min(h, round(top + bh)), min(w, round(left + bw))
            total[r0:r1, c0:c1] += value
            count[r0:r1, c0:c1] += 1
        out = total / count
        return out.float()

    def mean(self) -> float:
        """Mean of all values (for ``"fragments"``: the fragment feature's projection ``<F_bvfe, d>``)."""
        return float(self.values.double().mean())


def overlay(frame: torch.Tensor, values: torch.Tensor, *, limit: float | None = None, alpha: float = 0.5) -> np.ndarray:
    """Blend a rendered map over a frame: red where the map leans to "low quality", green to "high quality".

    Args:
        frame: ``(3, H, W)`` RGB frame, uint8 or float in ``[0, 1]``.
        values: ``(H, W)`` map from :meth:`QualityMap.render` (``NaN`` pixels show the frame, darkened).
        limit: Value shown at full colour (default: the largest absolute value).
        alpha: Opacity of the colour.

    Returns:
        ``(H, W, 3)`` uint8 RGB image.
    """
    img = frame.float() / 255.0 if frame.dtype == torch.uint8 else frame.float()
    img = img.permute(1, 2, 0).clamp(0, 1)
    known = torch.isfinite(values)
    v = torch.where(known, values, torch.zeros_like(values))
    scale = limit if limit is not None else float(v.abs().max()) or 1.0
    v = (v / scale).clamp(-1, 1)
    colour = torch.stack([(-v).clamp(min=0), v.clamp(min=0), torch.zeros_like(v)], dim=-1)  # red bad, green good
    weight = alpha * v.abs().unsqueeze(-1)
    blended = img * (1 - weight) + colour * weight
    blended = torch.where(known.unsqueeze(-1), blended, img * 0.6)
    return (blended * 255).round().byte().numpy()


def write_overlays(
    qmap: QualityMap,
    video: torch.Tensor | DecodedVideo,
    out: str | os.PathLike[str],
    *,
    frames: list[int] | None = None,
    fill: str = "patch",
    fps: float = 4.0,
) -> list[Path]:
    """Write map overlays: one PNG per frame into a folder, or one short MP4 when ``out`` ends in ``.mp4``.

    Args:
        qmap: The map.
        video: The video's frames ``(T, 3, H, W)``, uint8 or float in ``[0, 1]``, or a
            :class:`~dvlta_metric.decoded.DecodedVideo` holding (at least) the frames drawn.
        out: A folder for PNGs (created if needed) or an ``.mp4`` path.
        frames: Frames to draw (default: every frame with values).
        fill: As :meth:`QualityMap.render`.
        fps: Frame rate of the MP4.

    Returns:
        The files written.

    Raises:
        ValueError: If the video's frame size is not the map's, or a frame is outside the video.
    """
    pixels = video.frames if isinstance(video, DecodedVideo) else video
    count = video.num_frames if isinstance(video, DecodedVideo) else video.shape[0]
    if tuple(pixels.shape[-2:]) != tuple(qmap.frame_size):
        raise ValueError(f"the map is for {qmap.frame_size} frames, the video's are {tuple(pixels.shape[-2:])}")
    chosen = qmap.frame_indices() if frames is None else list(frames)
    if any(f < 0 or f >= count for f in chosen):
        raise ValueError(f"frames {chosen} reach outside the video's {count} frames")

    def frame(f: int) -> torch.Tensor:
        return video.frames[video.rows(torch.tensor([f]))[0]] if isinstance(video, DecodedVideo) else video[f]

    limit = float(qmap.values.abs().max()) or 1.0
    images = [overlay(frame(f), qmap.render(f, fill=fill), limit=limit) for f in chosen]
    out = Path(out)
    if out.suffix.lower() == ".mp4":
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_mp4(images, out, fps)
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f, image in zip(chosen, images, strict=True):
        path = out / f"{qmap.source}_{f:06d}.png"
        _write_png(image, path)
        written.append(path)
    return written


def _write_png(image: np.ndarray, path: Path) -> None:
    """One RGB image as a PNG, with PyAV's PNG encoder (no imaging library needed)."""
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = image.shape[1], image.shape[0], "rgb24"
    packets = [*codec.encode(av.VideoFrame.from_ndarray(image, format="rgb24")), *codec.encode(None)]
    path.write_bytes(b"".join(bytes(p) for p in packets))


def _write_mp4(images: list[np.ndarray], path: Path, fps: float) -> None:
    """RGB images as an H.264 MP4 (MPEG-4 Part 2 when this FFmpeg has no libx264); sides rounded down to even."""
    h, w = (images[0].shape[0] // 2) * 2, (images[0].shape[1] // 2) * 2
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=max(1, round(fps)))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for image in images:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
