"""Quality maps: where in which frames the features lean to high or low quality, and overlays to look at them.

A map value is a local feature projected on the model's *quality direction* ``d = T'+/|T'+| - T'-/|T'-|``
(the difference of the normalised "high quality" and "low quality" prompt embeddings, eqs. 12-13): positive
where the feature leans to "high quality", negative where it leans to "low quality" *(ours)*. Two sources:

* **fragments** (the ``"bvfe"`` branch, eqs. 8-9): the head MLP's output at every cell of the Swin3D feature
  grid, before the pooling of eq. 9, placed back on the patch of the frame that the fragment cell was cut from
  (``fsize x fsize`` frame pixels, or ``fsize * H / H_up`` when the frame was upsampled to the view's short
  side; :func:`fragment_records`), for the frames its temporal token covers. Their mean is ``<F_bvfe, d>``: the
  map decomposes the fragment feature's lean. Whether that lean raises the score depends on the sign of the
  fusion weight ``w_bvfe`` (eq. 10, a raw cosine that can be negative): with ``w_bvfe < 0`` a patch leaning to
  "high quality" pulls the score down.
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

import contextlib
import io
import math
import numbers
import os
import secrets
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from .decoded import DecodedVideo
from .views.normalize import to_unit_float

FILL_MODES: tuple[str, ...] = ("patch", "cell")
"""How :meth:`QualityMap.render` places a value: on the patch that was read, or over its whole grid cell."""

MAP_SOURCES: tuple[str, ...] = ("fragments", "clip")
"""Where a map's values come from (:meth:`~dvlta_metric.model.DVLTAVQA.quality_map`'s ``source``)."""

OVERLAY_MARKER = "dvlta-metric map"
"""What marks an overlay file as written by this tool: the ``Software`` text entry of a PNG (its first chunk after
the header) and the ``comment`` tag of an MP4. :func:`write_overlays` replaces a file only if it carries it."""


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

    def __post_init__(self) -> None:
        _check_source(self.source)

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
        frame: ``(3, H, W)`` RGB frame: uint8 in ``[0, 255]``, uint16 in ``[0, 65535]`` (the 16-bit RGB of a
            source above 8 bits, as :func:`~dvlta_metric.video_io.read_video` keeps it) or float in ``[0, 1]``.
        values: ``(H, W)`` map from :meth:`QualityMap.render` (``NaN`` pixels show the frame, darkened).
        limit: Value shown at full colour (default: the largest absolute value).
        alpha: Opacity of the colour.

    Returns:
        ``(H, W, 3)`` uint8 RGB image.

    Raises:
        TypeError: For a frame of another integer dtype (or bool), whose range is unknown.
    """
    _check_pixel_dtype(frame.dtype)
    img = to_unit_float(frame, torch.float32).permute(1, 2, 0).clamp(0, 1)
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

    The files are new ones: an existing file of a name to be written is refused, unless this tool wrote it (it
    carries :data:`OVERLAY_MARKER`), so that a rerun replaces its own overlays and nothing else. A symbolic link
    is never followed or replaced: not as a file to write, and not as the PNG folder. Everything is checked
    before the first file is written; each file is written whole under a temporary name in its folder, then
    linked to its name (which fails if the name appeared meanwhile) or, for an overlay of this tool, renamed
    over it.

    Args:
        qmap: The map.
        video: The video's frames ``(T, 3, H, W)``, uint8, uint16 (16-bit RGB) or float in ``[0, 1]``, or a
            :class:`~dvlta_metric.decoded.DecodedVideo` holding (at least) the frames drawn.
        out: A folder for PNGs (created if needed) or an ``.mp4`` path.
        frames: Frames to draw (default: every frame with values): a non-empty list of frame numbers.
        fill: As :meth:`QualityMap.render`.
        fps: Frame rate of the MP4, a finite number above 0.

    Returns:
        The files written.

    Raises:
        TypeError: ``frames`` holds something other than whole numbers, ``fps`` is not a number, or the video's
            dtype has no known range.
        ValueError: The video's frame size is not the map's, ``frames`` is empty or reaches outside the video or
            the map, ``fps`` is not a finite number above 0, the map's source is unknown; ``out`` is a symbolic
            link, a file where a folder is needed (or a folder where an MP4 is), or a file to be written exists
            and was not written by this tool (the message names it).
        OSError: The disk refused a write (no half-written file is left under the target's name).
    """
    _check_source(qmap.source)
    pixels = video.frames if isinstance(video, DecodedVideo) else video
    count = video.num_frames if isinstance(video, DecodedVideo) else video.shape[0]
    if tuple(pixels.shape[-2:]) != tuple(qmap.frame_size):
        raise ValueError(f"the map is for {qmap.frame_size} frames, the video's are {tuple(pixels.shape[-2:])}")
    _check_pixel_dtype(pixels.dtype)
    chosen = qmap.frame_indices() if frames is None else _frame_list(frames)
    if not chosen:
        raise ValueError("frames is empty (or the map has no values): give at least one frame to draw")
    if any(f < 0 or f >= count for f in chosen):
        raise ValueError(f"frames {chosen} reach outside the video's {count} frames")
    fps = _frame_rate(fps)
    out = Path(out)
    mp4 = out.suffix.lower() == ".mp4"
    if mp4 and min(qmap.frame_size) < 2:
        raise ValueError(f"an MP4 needs frames of at least 2x2 pixels, the map's are {qmap.frame_size}: write PNGs")
    targets = [out] if mp4 else [out / f"{qmap.source}_{f:06d}.png" for f in chosen]
    if not mp4:
        _check_folder(out)
    replace = [_check_target(t) for t in targets]

    def frame(f: int) -> torch.Tensor:
        return video.frames[video.rows(torch.tensor([f]))[0]] if isinstance(video, DecodedVideo) else video[f]

    limit = float(qmap.values.abs().max()) or 1.0
    images = [overlay(frame(f), qmap.render(f, fill=fill), limit=limit) for f in chosen]
    folder = out.parent if mp4 else out
    folder.mkdir(parents=True, exist_ok=True)
    if not mp4:
        _check_folder(out)  # not swapped for a link since the check above
    if mp4:
        _write_new(out, _mp4_bytes(images, fps), replace=replace[0])
        return [out]
    for path, image, ours in zip(targets, images, replace, strict=True):
        _write_new(path, _png_bytes(image), replace=ours)
    return targets


def check_overlay_output(out: str | os.PathLike[str]) -> None:
    """Refuse an overlay destination that :func:`write_overlays` would refuse whatever the frames: a symbolic link,
    a file given as the PNG folder, or an existing MP4 this tool did not write (to check before scoring).

    Raises:
        ValueError: As :func:`write_overlays` for ``out``.
    """
    out = Path(out)
    if out.suffix.lower() == ".mp4":
        _check_target(out)
    else:
        _check_folder(out)


def _check_source(source: object) -> None:
    if source not in MAP_SOURCES:
        raise ValueError(f"a quality map's source must be one of {MAP_SOURCES}, got {source!r}")


def _check_pixel_dtype(dtype: torch.dtype) -> None:
    if dtype in (torch.uint8, torch.uint16) or dtype.is_floating_point:
        return
    raise TypeError(
        f"video frames must be uint8 (0-255), uint16 (0-65535) or float in [0, 1], got {dtype}: convert them first"
    )


def _frame_list(frames: object) -> list[int]:
    if isinstance(frames, (str, bytes)) or not isinstance(frames, (list, tuple, range)):
        raise TypeError(f"frames must be a list of frame numbers, got {type(frames).__name__}")
    bad = [f for f in frames if isinstance(f, bool) or not isinstance(f, numbers.Integral)]
    if bad:
        raise TypeError(f"frames must be whole numbers (frame indices), got {bad[0]!r} ({type(bad[0]).__name__})")
    return [int(f) for f in frames]


def _frame_rate(fps: object) -> float:
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real):
        raise TypeError(f"fps must be a number of frames per second, got {type(fps).__name__} {fps!r}")
    value = float(fps)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"fps must be a finite number of frames per second above 0, got {fps!r}")
    return value


def _check_folder(folder: Path) -> None:
    """The PNG folder: not a symbolic link, and a folder if it exists."""
    if folder.is_symlink():
        raise ValueError(
            f"{folder} is a symbolic link: overlays are written only into a real folder; give the folder it points "
            "to, or another path"
        )
    if folder.exists() and not folder.is_dir():
        raise ValueError(
            f"{folder} is a file, not a folder for the PNG overlays: give a folder, or a path ending in .mp4"
        )


def _check_target(path: Path) -> bool:
    """Whether ``path`` is an overlay of this tool to replace (``False``: it does not exist).

    Raises:
        ValueError: ``path`` exists and is a symbolic link, not a regular file, or not an overlay of this tool.
    """
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        raise ValueError(f"{path}: {path.parent} is not a folder") from None
    if stat.S_ISLNK(info.st_mode):
        raise ValueError(f"{path} is a symbolic link; it is left as it is: choose another path, or delete the link")
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} exists and is not a regular file: choose another path")
    if not _is_our_overlay(path):
        raise ValueError(
            f"{path} exists and was not written by dvlta-metric; it is left as it is: choose another path, or delete it"
        )
    return True


def _png_text_chunk() -> bytes:
    data = b"tEXt" + b"Software\x00" + OVERLAY_MARKER.encode("latin-1")
    return struct.pack(">I", len(data) - 4) + data + struct.pack(">I", zlib.crc32(data))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_HEADER_END = 8 + 25  # the signature and the IHDR chunk (13 bytes of data), which a PNG starts with
_MP4_COMMENT = b"\xa9cmt"
_MP4_TAIL = 1 << 20  # the MP4 muxer writes the moov atom, with the tags, at the end


def _is_our_overlay(path: Path) -> bool:
    """Whether the regular file ``path`` carries :data:`OVERLAY_MARKER` where this tool writes it."""
    marker = OVERLAY_MARKER.encode("latin-1")
    try:
        with path.open("rb") as f:
            head = f.read(_PNG_HEADER_END + 64)
            if head.startswith(_PNG_SIGNATURE):
                chunk = _png_text_chunk()
                return head[_PNG_HEADER_END : _PNG_HEADER_END + len(chunk)] == chunk
            if head[4:8] != b"ftyp":
                return False
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _MP4_TAIL))
            tail = f.read()
    except OSError:
        return False
    at = tail.rfind(_MP4_COMMENT)
    return at >= 0 and marker in tail[at : at + 32 + len(marker)]


def _write_new(path: Path, data: bytes, *, replace: bool) -> None:
    """Write ``data`` to a new file ``path`` (or over this tool's own overlay, with ``replace``), whole.

    The bytes go to a temporary file created exclusively beside ``path`` (never through a link); it is then hard
    linked to ``path``, which fails rather than replace a file that appeared since the check, or, with
    ``replace``, renamed over ``path``. Where the file system has no hard links, ``path`` itself is created
    exclusively.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        _create_exclusive(tmp, data)
        if replace:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)  # tmp is the regular file just created
        except FileExistsError:
            raise ValueError(
                f"{path} appeared while the overlays were written; it is left as it is: choose another path, or "
                "delete it"
            ) from None
        except OSError:  # no hard links here (e.g. FAT, some network file systems)
            _create_exclusive(path, data)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _create_exclusive(path: Path, data: bytes) -> None:
    """Create ``path`` (never an existing file or a link) and write ``data``; remove it again if that fails."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags, 0o666)  # permissions from the umask
    except FileExistsError:
        raise ValueError(
            f"{path} exists and was not written by dvlta-metric; it is left as it is: choose another path, or delete it"
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise


def _png_bytes(image: np.ndarray) -> bytes:
    """One RGB image as a PNG (PyAV's encoder: no imaging library needed), marked with :data:`OVERLAY_MARKER`."""
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = image.shape[1], image.shape[0], "rgb24"
    packets = [*codec.encode(av.VideoFrame.from_ndarray(image, format="rgb24")), *codec.encode(None)]
    data = b"".join(bytes(p) for p in packets)
    if not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise RuntimeError("the PNG encoder wrote no PNG header")
    return data[:_PNG_HEADER_END] + _png_text_chunk() + data[_PNG_HEADER_END:]


def _mp4_bytes(images: list[np.ndarray], fps: float) -> bytes:
    """RGB images as an H.264 MP4 (MPEG-4 Part 2 when this FFmpeg has no libx264), sides rounded down to even,
    tagged with :data:`OVERLAY_MARKER`."""
    h, w = (images[0].shape[0] // 2) * 2, (images[0].shape[1] // 2) * 2
    if h == 0 or w == 0:
        raise ValueError(
            f"an MP4 needs frames of at least 2x2 pixels, these are {images[0].shape[1]}x{images[0].shape[0]}"
        )
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        container.metadata["comment"] = OVERLAY_MARKER
        stream = container.add_stream(codec, rate=max(1, round(fps)))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for image in images:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()
