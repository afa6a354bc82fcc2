"""Small synthetic video files for the I/O, batch and CLI tests, written with PyAV.

Every clip is tiny (at most 120 frames of at most 160x96) so that a whole set encodes in well under a
second. The picture has a known layout in *display* orientation: the top half is bright and the bottom
half dark, with a red block in the top-left corner and a small square that moves right by
:data:`STEP` px per frame. A reader that shows the frames upright therefore always sees bright on top and
red at the left, whatever rotation the file was stored with.
"""

from __future__ import annotations

import fractions
import struct
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

BRIGHT = 220
DARK = 30
STEP = 2


def frame_image(index: int, height: int, width: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """The ``(height, width, 3)`` uint8 RGB picture of frame ``index``, upright.

    Args:
        index: Frame number (moves the small square).
        height: Picture height.
        width: Picture width.
        rng: When given, adds mild noise so that frames cost real bits (truncation tests need that).

    Returns:
        The picture.
    """
    img = np.full((height, width, 3), DARK, np.uint8)
    img[: height // 2] = BRIGHT
    img[: height // 4, : width // 4] = (230, 20, 20)
    s = max(4, min(height, width) // 8)
    x = (index * STEP) % max(1, width - s)
    img[height // 2 + 2 : height // 2 + 2 + s, x : x + s] = (20, 200, 20)
    if rng is not None:
        noise = rng.integers(-25, 26, img.shape)
        img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return img


def write_clip(
    path: Path,
    *,
    frames: int = 24,
    width: int = 160,
    height: int = 96,
    fps: int = 24,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    container_format: str | None = None,
    rotation: int | None = None,
    gop: int | None = None,
    pts_ms: list[int] | None = None,
    noise: bool = False,
    faststart: bool = False,
    color_trc: int | None = None,
    audio_seconds: float | None = None,
    audio_codec: str = "aac",
) -> Path:
    """Encode a clip whose *displayed* frames are :func:`frame_image` pictures of ``height`` x ``width``.

    Args:
        path: Output file.
        frames: Number of frames.
        width: Displayed width.
        height: Displayed height.
        fps: Frame rate (ignored for the timestamps when ``pts_ms`` is given).
        codec: Encoder name.
        pix_fmt: Pixel format of the encoded stream.
        container_format: FFmpeg muxer (default: from the extension).
        rotation: Display rotation in degrees counter-clockwise (PyAV's ``set_display_rotation``). The
            pictures are stored turned the other way, so only a reader that honours the display matrix
            sees them upright.
        gop: Keyframe interval.
        pts_ms: Explicit presentation times in milliseconds (variable frame rate).
        noise: Add noise so that frames are not nearly free to code.
        faststart: Put the MP4 index (moov) before the data, as streaming files do.
        color_trc: Transfer characteristic to tag the stream with (e.g. 16 for PQ / HDR10).
        audio_seconds: Add a silent mono audio track this long (it may outlast the video).
        audio_codec: Encoder of that audio track (``"aac"``, ``"libopus"`` for WebM, ...).

    Returns:
        ``path``.
    """
    k = (rotation or 0) // 90 % 4
    options = {"movflags": "+faststart"} if faststart else {}
    rng = np.random.default_rng(0) if noise else None
    with av.open(str(path), "w", format=container_format, options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stored_w, stored_h = (height, width) if k % 2 else (width, height)
        stream.width, stream.height, stream.pix_fmt = stored_w, stored_h, pix_fmt
        if gop is not None:
            stream.codec_context.gop_size = gop
        if color_trc is not None:
            stream.codec_context.color_trc = color_trc
        if pts_ms is not None:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
            stream.time_base = fractions.Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        audio = _silent_track(container, audio_codec) if audio_seconds is not None else None
        for i in range(frames):
            # displayed = stored turned counter-clockwise by `rotation`, so store it turned clockwise
            stored = np.ascontiguousarray(np.rot90(frame_image(i, height, width, rng), -k))
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            if pts_ms is not None:
                frame.pts = pts_ms[i]
                frame.time_base = fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio is not None and audio_seconds is not None:
            _encode_silence(container, audio, audio_seconds)
    return path


AUDIO_RATE = 48000


def _silent_track(container: av.container.OutputContainer, codec: str) -> av.audio.stream.AudioStream:
    """Add a mono 48 kHz audio stream (before anything is written: the header lists every stream)."""
    stream = container.add_stream(codec, rate=AUDIO_RATE)
    stream.layout = "mono"
    return stream


def _encode_silence(
    container: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float
) -> None:
    """Encode ``seconds`` of silence into ``stream`` (from :func:`_silent_track`)."""
    size = 1024  # PyAV resamples and re-chunks for the encoder's sample format and frame size
    for start in range(0, int(seconds * AUDIO_RATE), size):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, size), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = AUDIO_RATE, start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_still(path: Path, codec: str = "png", width: int = 160, height: int = 96) -> Path:
    """A single picture (``"png"`` or ``"mjpeg"`` = JPEG) of :func:`frame_image`, whatever ``path``'s extension."""
    with av.open(str(path), "w", format="image2pipe") as container:
        stream = container.add_stream(codec, rate=1)
        stream.width, stream.height = width, height
        stream.pix_fmt = "rgb24" if codec == "png" else "yuvj420p"
        frame = av.VideoFrame.from_ndarray(frame_image(0, height, width), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return path


def ten_bit_encoder() -> tuple[str, str] | None:
    """An ``(encoder, pix_fmt)`` pair this PyAV build can write 10-bit video with, or ``None``."""
    for codec, pix_fmt in (("libx264", "yuv420p10le"), ("libx265", "yuv420p10le"), ("ffv1", "yuv420p10le")):
        try:
            formats = av.codec.Codec(codec, "w").video_formats or []
        except ValueError:  # UnknownCodecError: encoder not in this build
            continue
        if pix_fmt in {f.name for f in formats}:
            return codec, pix_fmt
    return None


def write_audio_only(path: Path) -> Path:
    """An AAC file with half a second of silence and no video stream."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def mp4_boxes(data: bytes) -> dict[str, tuple[int, int]]:
    """Top-level MP4 boxes: ``{type: (offset, size)}``."""
    boxes: dict[str, tuple[int, int]] = {}
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size < 8:
            break
        boxes[kind.decode("latin-1")] = (offset, size)
        offset += size
    return boxes


@dataclass
class Clips:
    """Paths of a set of test files (see :func:`make_clips`)."""

    landscape: Path
    portrait: Path
    portrait_cw: Path
    upside_down: Path
    single: Path
    odd: Path
    vfr: Path
    vfr_pts_ms: list[int]
    gop: Path
    mkv: Path
    webm: Path
    avi: Path
    ts: Path
    ten_bit: Path | None
    audio_only: Path
    text: Path
    empty: Path
    truncated: Path
    truncated_header: Path
    corrupt: Path
    corrupt_data: Path
    missing: Path

    def good(self) -> list[Path]:
        """The files that must decode and score."""
        return [self.landscape, self.portrait, self.single, self.odd, self.vfr, self.mkv]

    def bad(self) -> list[Path]:
        """The files that must fail, each with its own clear error."""
        return [self.audio_only, self.text, self.empty, self.truncated_header, self.corrupt, self.missing]


def make_clips(directory: Path) -> Clips:
    """Write every test file into ``directory``.

    Args:
        directory: An empty temporary directory.

    Returns:
        Their paths.
    """
    d = Path(directory)
    vfr_pts = [0, 40, 80, 100, 200, 210, 220, 400, 410, 500, 540, 580, 600, 700, 710, 720, 800, 900, 910, 950]
    ten = ten_bit_encoder()
    clips = Clips(
        landscape=write_clip(d / "landscape.mp4", frames=32),
        portrait=write_clip(d / "portrait.mp4", frames=24, width=96, height=160, rotation=90),
        portrait_cw=write_clip(d / "portrait_cw.mov", frames=12, width=96, height=160, rotation=-90),
        upside_down=write_clip(d / "upside_down.mp4", frames=12, rotation=180),
        single=write_clip(d / "single.mp4", frames=1),
        odd=write_clip(d / "odd.mp4", frames=16, width=161, height=97, pix_fmt="yuv444p"),
        vfr=write_clip(d / "vfr.mp4", frames=len(vfr_pts), pts_ms=vfr_pts),
        vfr_pts_ms=vfr_pts,
        gop=write_clip(d / "gop.mp4", frames=120, width=64, height=48, gop=8),
        mkv=write_clip(d / "clip.mkv", frames=20),
        webm=write_clip(d / "clip.webm", frames=12, codec="libvpx-vp9"),
        avi=write_clip(d / "clip.avi", frames=12, codec="mpeg4"),
        ts=write_clip(d / "clip.ts", frames=12),
        ten_bit=(write_clip(d / "ten_bit.mkv", frames=12, codec=ten[0], pix_fmt=ten[1], color_trc=16) if ten else None),
        audio_only=write_audio_only(d / "audio_only.m4a"),
        text=d / "notes.txt",
        empty=d / "empty.mp4",
        truncated=d / "truncated.mp4",
        truncated_header=d / "truncated_header.mp4",
        corrupt=d / "corrupt.mp4",
        corrupt_data=d / "corrupt_data.mp4",
        missing=d / "missing.mp4",
    )
    clips.text.write_text("this is not a video\n" * 20)
    clips.empty.write_bytes(b"")

    # Index first (faststart), data cut at 60%: the frames still in the file decode.
    full = write_clip(d / "full_faststart.mp4", frames=40, noise=True, faststart=True).read_bytes()
    clips.truncated.write_bytes(full[: int(len(full) * 0.6)])
    # Index last (the default): cut in half, the file has no index at all.
    plain = write_clip(d / "full_plain.mp4", frames=40, noise=True).read_bytes()
    clips.truncated_header.write_bytes(plain[: len(plain) // 2])
    # A valid file type box, then random bytes: no container to read.
    rng = np.random.default_rng(1)
    ftyp_end = sum(mp4_boxes(plain)["ftyp"])
    clips.corrupt.write_bytes(plain[:ftyp_end] + rng.bytes(len(plain) - ftyp_end))
    # A valid index (faststart), then random bytes instead of the coded frames.
    mdat = mp4_boxes(full)["mdat"][0] + 8
    clips.corrupt_data.write_bytes(full[:mdat] + rng.bytes(len(full) - mdat))
    return clips


def write_pixel_bomb(
    path: Path, *, size: int = 4096, frames: int = 24, container_format: str | None = None, first: int = 0
) -> Path:
    """A tiny file of huge frames: ``frames`` flat grey ``size`` x ``size`` frames of H.264 (about 50 KB at
    4096 x 4096, 24 frames), after ``first`` ordinary 64 x 64 frames when ``first`` > 0 (a raw H.264 stream
    then declares 64 x 64 and grows mid-stream: ``container_format="h264"``)."""
    with path.open("wb") as out:
        for width, count in ((64, first), (size, frames)):
            if not count:
                continue
            part = path.with_name(f"{path.stem}.part{width}{path.suffix}")
            with av.open(str(part), "w", format=container_format) as container:
                stream = container.add_stream("libx264", rate=24)
                stream.width = stream.height = width
                stream.pix_fmt = "yuv420p"
                stream.options = {"preset": "ultrafast"}
                frame = av.VideoFrame(width, width, "yuv420p")
                for plane in frame.planes:
                    np.frombuffer(plane, np.uint8)[:] = 128
                for i in range(count):
                    frame.pts = i
                    for packet in stream.encode(frame):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
            out.write(part.read_bytes())
            part.unlink()
    return path


REFERENCE_SCRIPTS = {
    "ffconcat": "ffconcat version 1.0\nfile '{target}'\nfile '{target}'\n",
    "hls": "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{target}\n#EXT-X-ENDLIST\n",
    "dash": (
        '<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
        'mediaPresentationDuration="PT1S" minBufferTime="PT1S"><Period><AdaptationSet><Representation id="1" '
        'bandwidth="1000" mimeType="video/mp4"><BaseURL>{target}</BaseURL></Representation></AdaptationSet>'
        "</Period></MPD>\n"
    ),
    "sdp": "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=video 5004 RTP/AVP 96\n"
    "a=rtpmap:96 H264/90000\n",
}
"""Texts that FFmpeg's reference demuxers (concat, HLS, DASH, SDP) follow to other files or URLs; ``{target}``
is the file they name."""


def write_reference_script(path: Path, kind: str, target: Path) -> Path:
    """Write the :data:`REFERENCE_SCRIPTS` text ``kind``, naming ``target``, as ``path`` (e.g. ``x.mp4``).

    A target in the same folder is named relative to the script, as FFmpeg's concat demuxer accepts by
    default (it refuses absolute paths unless ``safe=0``)."""
    named = target.name if target.parent == path.parent else target
    path.write_text(REFERENCE_SCRIPTS[kind].format(target=named))
    return path


def yuv_planes(frames: int, width: int, height: int, *, bits: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Deterministic 4:2:0 frames as FFmpeg lays them out (``(height * 3 // 2, width)``, Y then U then V).

    Values stay inside the limited range (16-235 scaled to ``bits``), with a bright top half and noise, so
    that every frame codes to something real. ``bits`` > 8 gives little-endian ``uint16`` samples whose
    values are mostly not multiples of 4: an 8-bit path cannot represent them.
    """
    rng = np.random.default_rng(seed)
    scale = 1 << (bits - 8)
    lo, hi = 16 * scale, 235 * scale
    out = []
    for i in range(frames):
        img = rng.integers(lo, hi, size=(height * 3 // 2, width))
        img[: height // 2] = np.clip(img[: height // 2] + 40 * scale + i, lo, hi)
        out.append(img.astype("<u2" if bits > 8 else np.uint8))
    return out


def write_yuv_set(directory: Path, planes: list[np.ndarray], *, fps: int = 25) -> dict[str, Path]:
    """The same 4:2:0 frames as a raw ``.yuv`` file, a ``.y4m`` file and a losslessly encoded MP4 (x264 ``qp=0``).

    Args:
        directory: Where the three files go (``clip.yuv``, ``clip.y4m``, ``clip.mp4``).
        planes: Frames from :func:`yuv_planes` (8-bit: ``yuv420p``; 16-bit arrays: ``yuv420p10le``).
        fps: Frame rate of the Y4M and MP4 files.

    Returns:
        ``{"yuv": ..., "y4m": ..., "mp4": ...}``.
    """
    pix_fmt = "yuv420p10le" if planes[0].dtype != np.uint8 else "yuv420p"
    height, width = planes[0].shape[0] * 2 // 3, planes[0].shape[1]
    paths = {ext: directory / f"clip.{ext}" for ext in ("yuv", "y4m", "mp4")}
    paths["yuv"].write_bytes(b"".join(p.tobytes() for p in planes))
    # Y4M above 8 bits is an FFmpeg extension of the format ("unofficial")
    for key, fmt, codec, options, muxer in (
        ("y4m", "yuv4mpegpipe", "rawvideo", {}, {"strict": "unofficial"}),
        ("mp4", None, "libx264", {"qp": "0"}, {}),
    ):
        with av.open(str(paths[key]), "w", format=fmt, options=muxer) as container:
            stream = container.add_stream(codec, rate=fps, options=options)
            stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
            for plane in planes:
                for packet in stream.encode(av.VideoFrame.from_ndarray(plane, format=pix_fmt)):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return paths
