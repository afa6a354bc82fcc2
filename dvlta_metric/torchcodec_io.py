"""GPU decoding: the ``decoder="torchcodec"`` reader of :func:`~dvlta_metric.video_io.read_video` (ours).

With ``decoder="torchcodec"`` the frames a model's views need are decoded by
`torchcodec <https://github.com/pytorch/torchcodec>`_ (BSD-3, the PyTorch project's decoder) on the device the
frames are wanted on: on a CUDA device by the GPU's hardware decoder (NVDEC), the frames staying on the GPU
through view cutting; on the CPU by torchcodec's FFmpeg decoder. Install it with
``pip install 'dvlta-metric[gpu-decode]'``; torchcodec needs the **FFmpeg shared libraries** (major versions 4
to 9) of the system: ``apt install ffmpeg``, ``conda install ffmpeg``, or any FFmpeg build with shared
libraries. Its Linux wheels on PyPI are built for CUDA (for the CUDA version of the PyTorch wheels of the same
release); NVDEC also needs the NVIDIA driver's ``libnvcuvid`` (in a container: ``NVIDIA_DRIVER_CAPABILITIES``
must include ``video``).

What stays the PyAV reader's (so that both readers pick the **same frames**):

* The file checks, the format whitelist and the demux-only scan that counts the frames, builds the
  presentation-order frame table and flags truncated files run with PyAV as for ``decoder="pyav"``; only
  then does torchcodec open the file. torchcodec is given that frame table (its ``custom_frame_mappings``), so
  its frame ``i`` is the reader's frame ``i`` by construction, and each decoded frame's timestamp is checked
  against the table. A file whose packets carry no usable timestamps is read with torchcodec's own exact
  index, and refused if torchcodec counts other frames than the scan.
* The pixel budget and the time limit (:func:`~dvlta_metric.video_io.read_limits`): the budget is checked
  before decoding and after every group of :data:`CHUNK` frames, the time limit between groups (one group
  cannot be interrupted).
* Raw ``.yuv`` files (:class:`~dvlta_metric.raw_video.RawVideo`) hold no compressed video for a decoder:
  they are always read by PyAV, and their frames then moved to the device.

Damaged files: a group of frames torchcodec cannot decode is decoded again frame by frame (torchcodec's
batched calls can fail where single frames decode). If frames among the last
:data:`~dvlta_metric.video_io.TAIL_SLACK` fail, the file is read again as the shorter video it is, as the PyAV
reader does (``metadata["truncated"] = True``); any other frame that cannot be decoded is a ``ValueError``
that names torchcodec and suggests ``decoder="pyav"``. torchcodec does not report frames FFmpeg decoded only
with error concealment, which the PyAV reader refuses: such frames are accepted here.

Differences from the PyAV reader (the **decoder differences**):

* **Colour conversion.** Both convert with the stream's matrix and range tags, untagged streams as BT.601
  limited range. On the CPU torchcodec converts with FFmpeg's swscale as PyAV does (the same pixels when
  both use the same FFmpeg version); on CUDA with its own kernels, whose rounding and chroma upsampling
  differ by a few levels. ``color_matrix`` / ``color_range`` other than the defaults are PyAV options and are
  refused with this decoder.
* **High bit depth.** Sources above 8 bits are decoded to 16-bit RGB as with PyAV (torchcodec's ``float32``
  output, returned as ``uint16``), or to 8 bits with ``keep_bit_depth=False``.
* **Rotation.** torchcodec turns frames upright by the display matrix's rotation (multiples of 90 degrees);
  a mirroring display matrix (rare) is not applied, and ``metadata["mirrored"]`` is ``None``.
* **Fallback.** When NVDEC cannot decode a stream (a codec or profile the GPU lacks), torchcodec decodes it on
  the CPU and uploads the frames; the read says so in ``metadata["decoder_fallback"]`` and
  :func:`~dvlta_metric.batch.score_files` in the file's warning. When NVDEC cannot be used at all (no
  ``libnvcuvid``) every read fails with a ``RuntimeError`` that says so, instead of silently decoding on CPUs.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from .color import is_high_bit_depth
from .decoded import DecodedVideo
from .raw_video import RawVideo
from .video_io import (
    HDR_TRANSFERS,
    TAIL_SLACK,
    _FrameTable,
    _is_image_format,
    _Limits,
    _raise_if_transient,
    _Rgb,
    _Truncated,
    register_decoder,
)

__all__ = ["CHUNK", "INSTALL_HINT", "check_torchcodec", "import_torchcodec"]

CHUNK = 16
"""Frames decoded per torchcodec call; the time limit and the pixel budget are checked between calls."""

INSTALL_HINT = (
    "pip install 'dvlta-metric[gpu-decode]', with the FFmpeg shared libraries of the system (major version 4 to "
    "9: apt install ffmpeg, or conda install ffmpeg)"
)
"""What to install for ``decoder="torchcodec"``."""

HDR_NAMES = frozenset({"smpte2084", "arib-std-b67"})
"""torchcodec's names of the PQ and HLG transfer characteristics."""


def import_torchcodec() -> ModuleType:
    """``torchcodec.decoders``, checked: installed, and able to load FFmpeg.

    Returns:
        The ``torchcodec.decoders`` module.

    Raises:
        ImportError: torchcodec is not installed, or cannot load (no FFmpeg shared libraries, a torch version
            it was not built for); the message says what to install.
    """
    try:
        torchcodec = importlib.import_module("torchcodec")
        decoders = importlib.import_module("torchcodec.decoders")
    except ImportError as err:
        raise ImportError(f"decoder='torchcodec' needs torchcodec ({err}): {INSTALL_HINT}") from None
    except (OSError, RuntimeError) as err:  # older torchcodec releases load FFmpeg on import
        why = _first_line(err)
        raise ImportError(f"decoder='torchcodec': torchcodec cannot load ({why}): {INSTALL_HINT}") from None
    if getattr(torchcodec, "ffmpeg_major_version", 0) is None:
        raise ImportError(
            "decoder='torchcodec': torchcodec is installed but found no FFmpeg shared libraries it can use (it "
            f"supports FFmpeg 4 to 9, with shared libraries): {INSTALL_HINT}"
        )
    return decoders


def check_torchcodec(device: str | torch.device) -> torch.device:
    """Check that torchcodec can decode on ``device``, before any file is read.

    Args:
        device: ``"cpu"`` (torchcodec's FFmpeg decoder) or a CUDA device (NVDEC).

    Returns:
        The device, with its index for CUDA (``cuda:0`` for ``cuda``).

    Raises:
        ImportError: torchcodec or FFmpeg is missing (:func:`import_torchcodec`).
        ValueError: A device that is neither the CPU nor a CUDA device.
        RuntimeError: A CUDA device, and this PyTorch has no CUDA or sees no GPU.
    """
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"decoder='torchcodec' decodes on the CPU or on a CUDA GPU (NVDEC), not on {dev}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"decoder='torchcodec' on {dev} (NVDEC) needs a CUDA GPU, and this PyTorch sees none: decode on the "
                "CPU (decoder='pyav', the default) or run on a machine with an NVIDIA GPU"
            )
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    import_torchcodec()
    return dev


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message (torchcodec's carry C++ file names and long tracebacks)."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__).rstrip(". ")


def _reason(err: BaseException) -> str:
    """A short reason from a torchcodec error: its last line, without the C++ source location."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else type(err).__name__
    return text.rsplit(", ", 1)[-1] if ".cpp:" in text else text


def frame_mappings(table: _FrameTable) -> str:
    """The frame table as torchcodec's ``custom_frame_mappings`` JSON (pts, duration and keyframe flag).

    The duration of a frame is the gap to the next one's pts; the last frame gets the gap before it.
    """
    pts = table.pts or []
    gaps = [b - a for a, b in zip(pts, pts[1:])]
    gaps.append(gaps[-1] if gaps else 1)
    keys = set(table.key_pts)
    frames = [{"pts": t, "duration": max(1, d), "key_frame": int(t in keys)} for t, d in zip(pts, gaps)]
    return json.dumps({"frames": frames})


def decode(
    p: Path | RawVideo,
    name: str,
    table: _FrameTable,
    info: dict[str, object],
    needed: list[int],
    threads: int,
    limits: _Limits,
    rgb: _Rgb,
    *,
    device: torch.device,
    shorten: bool = True,
) -> DecodedVideo:
    """Decode the ``needed`` frames of ``p`` with torchcodec on ``device`` (the reader's second pass).

    Args:
        p: The file (already checked and scanned by the PyAV reader).
        name: How messages name it.
        table: The scan's frame table.
        info: The scan's stream facts.
        needed: Sorted unique frame indices to decode.
        threads: FFmpeg decoder threads on the CPU (0: FFmpeg chooses); NVDEC ignores it.
        limits: The read's pixel budget and deadline.
        rgb: The read's RGB options (``keep_bit_depth``).
        device: Where to decode (from :func:`check_torchcodec`).
        shorten: Whether failing last frames may make the reader read a shorter video.

    Returns:
        The frames ``(N, 3, H, W)`` on ``device``, uint8 (uint16 for a source above 8 bits kept at 16).

    Raises:
        _Truncated: Only frames among the last few fail, and ``shorten`` allows reading a shorter video.
        ValueError: torchcodec cannot open the file, or needed frames cannot be decoded.
        RuntimeError: NVDEC cannot be used on this machine.
        VideoLimitError: Over the pixel budget or the time limit.
        TransientError: Out of memory (GPU or host).
    """
    decoders = import_torchcodec()
    width, height = int(info["width"] or 0), int(info["height"] or 0)  # type: ignore[call-overload]
    deep = rgb.keep_bit_depth and is_high_bit_depth(info.get("pix_fmt"))  # type: ignore[arg-type]
    weight = 2 if deep else 1
    what = f"{len(needed)} frames of {width}x{height}" + (" at 16 bits" if deep else "")
    limits.check_pixels(name, len(needed) * width * height * weight, what)
    limits.check_time(name)
    kwargs: dict[str, Any] = {
        "stream_index": table.stream_index,
        "dimension_order": "NCHW",
        "num_ffmpeg_threads": threads,
        "device": str(device),
        "output_dtype": torch.float32 if deep else torch.uint8,
    }
    if table.pts is not None:
        kwargs["custom_frame_mappings"] = frame_mappings(table)
    try:
        decoder = decoders.VideoDecoder(str(p), **kwargs)
    except Exception as err:
        _raise_if_transient(err, name)
        raise ValueError(
            f"{name}: torchcodec cannot open the video on {device} ({_reason(err)}); the PyAV reader opened it: "
            "score it with decoder='pyav'"
        ) from None
    if table.pts is None and len(decoder) != table.num_frames:
        raise ValueError(
            f"{name}: the video's packets carry no timestamps, and torchcodec counts {len(decoder)} frames where the "
            f"PyAV scan counts {table.num_frames}: the two readers would pick different frames; score it with "
            "decoder='pyav'"
        )
    fallback = _fallback(decoder, name, device)
    frames = _decode_frames(decoder, name, table, needed, limits, weight, shorten, device)
    if deep:
        frames = (frames * 65535).round_().to(torch.uint16)
    metadata = _metadata(decoder, table, info, weight, device, fallback)
    return DecodedVideo(
        frames=frames,
        indices=torch.tensor(needed, dtype=torch.long),
        num_frames=table.num_frames,
        path=name,
        fps=info.get("fps"),  # type: ignore[arg-type]
        metadata=metadata,
    )


def _fallback(decoder: Any, name: str, device: torch.device) -> str | None:
    """torchcodec's CPU fallback on CUDA: ``None`` when NVDEC decodes; raises when NVDEC is unusable here."""
    if device.type != "cuda":
        return None
    status = getattr(decoder, "cpu_fallback", None)
    if not status:
        return None
    text = str(status)
    if getattr(status, "_nvcuvid_unavailable", False) or "NVcuvid unavailable" in text:
        raise RuntimeError(
            f"{name}: torchcodec cannot use NVDEC on this machine ({text}): the NVIDIA driver's video decoding "
            "library (libnvcuvid) is missing; in a container, start it with NVIDIA_DRIVER_CAPABILITIES including "
            "'video' (or 'all'); or decode on the CPU with decoder='pyav'"
        )
    return text


def _decode_frames(
    decoder: Any,
    name: str,
    table: _FrameTable,
    needed: list[int],
    limits: _Limits,
    weight: int,
    shorten: bool,
    device: torch.device,
) -> torch.Tensor:
    """The needed frames, decoded in groups of :data:`CHUNK` into one preallocated tensor on ``device``."""
    out: torch.Tensor | None = None
    for start in range(0, len(needed), CHUNK):
        limits.check_time(name)
        chunk = needed[start : start + CHUNK]
        try:
            batch = decoder.get_frames_at(chunk)
            data, pts = batch.data, batch.pts_seconds
        except Exception as err:
            _raise_if_transient(err, name)
            data, pts = _one_by_one(decoder, name, table, needed, chunk, err, shorten)
        _check_pts(name, table, chunk, pts)
        if out is None:
            n, h, w = len(needed), int(data.shape[-2]), int(data.shape[-1])
            limits.check_pixels(name, n * h * w * weight, f"{n} decoded frames of {w}x{h}")
            out = torch.empty((n, 3, h, w), dtype=data.dtype, device=data.device)
        if data.shape[-2:] != out.shape[-2:]:  # the resolution changes mid-stream: as the PyAV reader does
            size = (int(out.shape[-2]), int(out.shape[-1]))
            scaled = torch.nn.functional.interpolate(data.float(), size=size, mode="bilinear", align_corners=False)
            data = scaled.round().clamp(0, 255).to(data.dtype) if data.dtype == torch.uint8 else scaled
        out[start : start + len(chunk)].copy_(data)
    if out is None:  # nothing selected
        h, w = int(decoder.metadata.height or 0), int(decoder.metadata.width or 0)
        return torch.empty((0, 3, h, w), dtype=torch.uint8, device=device)
    return out


def _one_by_one(
    decoder: Any,
    name: str,
    table: _FrameTable,
    needed: list[int],
    chunk: list[int],
    err: BaseException,
    shorten: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a group that failed as a whole frame by frame; decide truncated or damaged if frames fail."""
    got: list[Any] = []
    missing: list[int] = []
    reason = _reason(err)
    for i in chunk:
        try:
            got.append(decoder.get_frame_at(i))
        except Exception as one:
            _raise_if_transient(one, name)
            missing.append(i)
            reason = _reason(one)
    if not missing:
        return torch.stack([f.data for f in got]), torch.tensor([f.pts_seconds for f in got], dtype=torch.float64)
    tail = max(table.num_frames - TAIL_SLACK, 0)
    if shorten and missing[0] >= tail:
        cut = next((i for i in range(tail, table.num_frames) if not _decodes(decoder, i, name)), table.num_frames)
        if cut > 0:
            raise _Truncated(cut)
    shown = ", ".join(str(i) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
    raise ValueError(
        f"{name}: torchcodec could not decode {len(missing)} of the {len(needed)} frames needed (frame {shown} of "
        f"{table.num_frames}) ({reason}); the file is damaged, or torchcodec cannot read it: score it with "
        "decoder='pyav'"
    )


def _decodes(decoder: Any, index: int, name: str) -> bool:
    """Whether torchcodec decodes frame ``index`` on its own."""
    try:
        decoder.get_frame_at(index)
    except Exception as err:
        _raise_if_transient(err, name)
        return False
    return True


def _check_pts(name: str, table: _FrameTable, chunk: list[int], pts: torch.Tensor) -> None:
    """Refuse frames whose timestamps are not those the table gives their indices (a different frame)."""
    if table.pts is None or table.time_base is None:
        return
    tb = float(table.time_base)
    got = [float(s) for s in pts.tolist()]
    for i, seconds in zip(chunk, got):
        if abs(seconds - table.pts[i] * tb) > max(tb, 1e-6):
            raise ValueError(
                f"{name}: torchcodec returned the frame at {seconds:.6f} s for frame {i}, which the scan places at "
                f"{table.pts[i] * tb:.6f} s: the readers disagree on this file's frames; score it with "
                "decoder='pyav'"
            )


def _metadata(
    decoder: Any,
    table: _FrameTable,
    info: dict[str, object],
    weight: int,
    device: torch.device,
    fallback: str | None,
) -> dict[str, object]:
    """The read's metadata, with the PyAV reader's keys where they can be known without PyAV frames."""
    meta = decoder.metadata
    rotation = getattr(meta, "rotation", None)
    colorspace, color_range, trc = table.colors
    name = getattr(meta, "color_transfer_characteristic", None)
    return {
        **info,
        "rotation": round(rotation) if rotation is not None else 0,
        "mirrored": None,
        "pix_fmt": info.get("pix_fmt"),
        "rgb_bits": 16 if weight > 1 else 8,
        "colorspace": colorspace,
        "color_range": color_range,
        "color_trc": trc,
        "hdr": trc in HDR_TRANSFERS or name in HDR_NAMES,
        "truncated": bool(info.get("truncated")) or table.demux_error is not None,
        "still_image": table.num_frames == 1 and _is_image_format(str(info["container"])),
        "timestamps": "pts" if table.pts is not None else "decode-order",
        "seeks": None,
        "frames_decoded": None,
        "decoder": "torchcodec",
        "decode_device": str(device),
        "decoder_fallback": fallback,
    }


register_decoder("torchcodec", check_torchcodec, decode)
