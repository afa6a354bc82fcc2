"""Reading video files: frame counts and order, rotation, odd sizes, VFR, 10-bit, containers, selective
decoding, damaged and non-video files, and the real sample videos in ../shared."""

from __future__ import annotations

import errno
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from video_files import (
    REFERENCE_SCRIPTS,
    STEP,
    Clips,
    frame_image,
    make_clips,
    mp4_boxes,
    write_clip,
    write_pixel_bomb,
    write_reference_script,
    write_still,
)

from dvlta_metric import video_io
from dvlta_metric.decoded import DecodedVideo
from dvlta_metric.video_io import (
    TAIL_SLACK,
    TS_PACKET_SIZES,
    VIDEO_EXTENSIONS,
    TransientError,
    VideoLimitError,
    find_videos,
    read_video,
)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    return make_clips(tmp_path_factory.mktemp("clips"))


def assert_frames_are(frames: torch.Tensor, indices: list[int], tol: float = 12.0) -> None:
    """Each decoded frame looks like the picture that was encoded for its index (order and orientation)."""
    h, w = frames.shape[-2:]
    for row, i in zip(frames, indices):
        expected = torch.from_numpy(frame_image(i, h, w)).permute(2, 0, 1).float()
        err = (row.float() - expected).abs().mean().item()
        assert err < tol, f"frame {i}: mean abs difference {err:.1f} from the encoded picture"


def square_x(frame: torch.Tensor) -> int:
    """Left edge of the moving green square (frame ``(3, H, W)``)."""
    h = frame.shape[-2]
    g = frame[1, h // 2 + 2 : h // 2 + 6].float().mean(0) - frame[0, h // 2 + 2 : h // 2 + 6].float().mean(0)
    return int(torch.nonzero(g > 80)[0])


# ---------------------------------------------------------------------------------------------- decoding
def test_landscape_all_frames(clips: Clips) -> None:
    video = read_video(clips.landscape)
    assert isinstance(video, DecodedVideo)
    assert video.frames.dtype == torch.uint8 and video.frames.shape == (32, 3, 96, 160)
    assert video.frames.is_contiguous()
    assert video.indices.tolist() == list(range(32)) and video.num_frames == 32
    assert video.fps == pytest.approx(24.0)
    assert video.path == str(clips.landscape)
    assert video.metadata["codec"] == "h264" and video.metadata["rotation"] == 0
    assert not video.metadata["truncated"]
    assert_frames_are(video.frames, list(range(32)))


def test_accepts_str_and_path(clips: Clips) -> None:
    a = read_video(str(clips.single))
    b = read_video(Path(clips.single))
    assert torch.equal(a.frames, b.frames) and a.num_frames == b.num_frames == 1


@pytest.mark.parametrize("name, rotation", [("portrait", 90), ("portrait_cw", -90), ("upside_down", 180)])
def test_rotation_metadata_gives_upright_frames(clips: Clips, name: str, rotation: int) -> None:
    path = getattr(clips, name)
    video = read_video(path)
    stored_w, stored_h = video.metadata["width"], video.metadata["height"]
    h, w = video.frames.shape[-2:]
    if rotation in (90, -90):
        assert (stored_w, stored_h) == (160, 96), "the test clip must be stored landscape"
        assert (h, w) == (160, 96), "a portrait video must come out portrait"
    else:
        assert (h, w) == (96, 160)
    assert video.metadata["rotation"] % 360 == rotation % 360
    top = video.frames[:, :, : h // 2].float().mean()
    bottom = video.frames[:, :, h // 2 :].float().mean()
    assert top > 150 and bottom < 60, "bright half must be on top"
    assert_frames_are(video.frames, list(range(video.num_frames)))  # also checks left/right (red corner)


def test_single_frame(clips: Clips) -> None:
    video = read_video(clips.single)
    assert video.num_frames == 1 and video.frames.shape == (1, 3, 96, 160)


def test_odd_size(clips: Clips) -> None:
    video = read_video(clips.odd)
    assert video.frames.shape == (16, 3, 97, 161)
    assert_frames_are(video.frames, list(range(16)))


def test_variable_frame_rate(clips: Clips) -> None:
    video = read_video(clips.vfr)
    n = len(clips.vfr_pts_ms)
    assert video.num_frames == n and video.frames.shape[0] == n
    assert video.metadata["timestamps"] == "pts"
    xs = [square_x(f) for f in video.frames]
    assert xs == [i * STEP for i in range(n)], "frames must come in presentation order, one per timestamp"


@pytest.mark.parametrize("name", ["mkv", "webm", "avi", "ts"])
def test_other_containers(clips: Clips, name: str) -> None:
    video = read_video(getattr(clips, name))
    n = video.num_frames
    assert n in (12, 20) and video.frames.shape == (n, 3, 96, 160)
    assert_frames_are(video.frames, list(range(n)), tol=14.0)


def test_ten_bit_hdr_to_8_bit(clips: Clips) -> None:
    if clips.ten_bit is None:
        pytest.skip("this PyAV build has no 10-bit video encoder")
    video = read_video(clips.ten_bit, keep_bit_depth=False)
    assert "10" in str(video.metadata["pix_fmt"])
    assert video.frames.dtype == torch.uint8 and video.frames.shape == (12, 3, 96, 160)
    assert video.metadata["hdr"] is True  # tagged PQ: reported, not tone-mapped
    assert_frames_are(video.frames, list(range(12)))


def test_ten_bit_keeps_its_bits_by_default(clips: Clips) -> None:
    if clips.ten_bit is None:
        pytest.skip("this PyAV build has no 10-bit video encoder")
    video = read_video(clips.ten_bit)
    assert video.frames.dtype == torch.uint16 and video.metadata["rgb_bits"] == 16
    assert video.frames.shape == (12, 3, 96, 160)
    assert_frames_are((video.frames.float() / 257).round().to(torch.uint8), list(range(12)))


def test_y4m(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "raw.y4m", frames=5, codec="rawvideo", container_format="yuv4mpegpipe")
    video = read_video(path)
    assert video.num_frames == 5
    assert_frames_are(video.frames, list(range(5)), tol=4.0)


def test_stream_without_timestamps(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "raw.h264", frames=12, container_format="h264")
    video = read_video(path, select=lambda n: [0, 5, n - 1])
    assert video.metadata["timestamps"] == "decode-order" and video.num_frames == 12
    assert_frames_are(video.frames, [0, 5, 11])


# ---------------------------------------------------------------------------------------------- selection
def test_needed_frames_only(clips: Clips, tiny_model) -> None:
    for path in (clips.gop, clips.landscape, clips.vfr, clips.portrait):
        full = read_video(path)
        part = read_video(path, select=tiny_model.needed_frames)
        needed = tiny_model.needed_frames(full.num_frames)
        assert part.num_frames == full.num_frames
        assert part.indices.tolist() == needed
        assert torch.equal(part.frames, full.frames[part.indices]), f"{path.name}: rows differ from a full decode"


def test_seeking_skips_decoding(clips: Clips) -> None:
    # frames far apart (gaps of 38 and 60 frames, more than SEEK_MIN_GAP), as the views of a long video need
    part = read_video(clips.gop, select=lambda n: [2, 40, 100])
    assert part.metadata["seeks"] >= 1, "with a keyframe every 8 frames the reader should seek over gaps"
    assert part.metadata["frames_decoded"] < part.num_frames


@pytest.mark.parametrize("codec", ["libx264", "mpeg2video"])
@pytest.mark.parametrize("extension", ["ts", "m2ts"])
def test_transport_stream_seeking(tmp_path: Path, codec: str, extension: str) -> None:
    """MPEG-TS seeks by decoding time: a seek to a keyframe's pts lands past it, and the frames after it then
    never come out. The reader must seek to the keyframe itself (or read without seeking), never call a
    healthy file damaged."""
    path = write_clip(tmp_path / f"gop.{extension}", frames=60, width=64, height=48, gop=10, codec=codec)
    full = read_video(path)
    assert full.num_frames == 60 and not full.metadata["truncated"]
    for selection in ([59], [0, 59], [33], [0, 25, 47, 59]):
        part = read_video(path, select=lambda n, s=selection: s)
        assert torch.equal(part.frames, full.frames[selection]), f"frames {selection} differ from a full decode"
        assert part.num_frames == 60 and not part.metadata["truncated"]
    last = read_video(path, select=lambda n: [n - 1])
    assert last.metadata["seeks"] == 1 and last.metadata["frames_decoded"] < 30, "the seek should skip the gap"


def test_seek_that_skips_the_keyframe_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a seek does, needed frames that do not come out after it mean reading again without seeking."""
    path = write_clip(tmp_path / "gop.ts", frames=60, width=64, height=48, gop=10)
    full = read_video(path)

    def blind_seek(
        container: av.container.InputContainer, stream: av.video.stream.VideoStream, table: video_io._FrameTable, k: int
    ) -> Iterator[av.Packet]:  # seek by pts and take what comes: in MPEG-TS that is past the keyframe
        container.seek(table.key_pts[k], stream=stream, backward=True)
        return container.demux(stream)

    monkeypatch.setattr(video_io, "_seek", blind_seek)
    for selection in ([59], [0, 59], [0, 33]):
        part = read_video(path, select=lambda n, s=selection: s)
        assert torch.equal(part.frames, full.frames[selection])
        assert part.metadata["seeks"] == 0, "the frames come from the pass without seeking"


def test_select_any_order_and_empty(clips: Clips) -> None:
    video = read_video(clips.landscape, select=lambda n: [n - 1, 0, 5, 5])
    assert video.indices.tolist() == [0, 5, 31]
    assert_frames_are(video.frames, [0, 5, 31])
    empty = read_video(clips.portrait, select=lambda n: [])
    assert empty.frames.shape == (0, 3, 160, 96) and empty.num_frames == 24


def test_select_out_of_range(clips: Clips) -> None:
    with pytest.raises(ValueError, match="32 frames"):
        read_video(clips.landscape, select=lambda n: [0, n])


@pytest.mark.parametrize("codec", ["png", "mjpeg"])
def test_still_image_is_reported(tmp_path: Path, clips: Clips, codec: str) -> None:
    video = read_video(write_still(tmp_path / "photo.mp4", codec))
    assert video.num_frames == 1 and video.metadata["still_image"] is True
    assert video.metadata["container"].endswith("_pipe")
    assert_frames_are(video.frames, [0])
    assert read_video(clips.single).metadata["still_image"] is False  # a 1-frame video is a video


# ---------------------------------------------------------------------------------------------- bad files
@pytest.mark.parametrize(
    "name, error, words",
    [
        ("missing", FileNotFoundError, "no such file"),
        ("empty", ValueError, "empty"),
        ("text", ValueError, "not a video"),
        ("audio_only", ValueError, "audio only"),
        ("truncated_header", ValueError, "not a video file"),
        ("corrupt", ValueError, "not a video file"),
        ("corrupt_data", ValueError, "could be decoded"),
    ],
)
def test_bad_files(clips: Clips, name: str, error: type[Exception], words: str) -> None:
    path = getattr(clips, name)
    with pytest.raises(error) as info:
        read_video(path)
    assert type(info.value).__module__ == "builtins", "no PyAV exception may escape"
    assert str(path) in str(info.value) and words in str(info.value)


def test_directory_is_not_a_video(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="directory"):
        read_video(tmp_path)


def test_truncated_file_reads_what_it_holds(clips: Clips) -> None:
    video = read_video(clips.truncated)
    assert 5 < video.num_frames < 40
    assert video.metadata["truncated"] is True and video.metadata["declared_frames"] == 40
    assert_frames_are(video.frames, list(range(video.num_frames)), tol=25.0)  # noisy clip


def test_truncated_transport_stream_is_scored(tmp_path: Path, tiny_model) -> None:
    """A transport stream cut off: the cut last frame is often a B-frame, which spoils a frame shown before a
    later one that decodes; the video must end before it (truncated), not be called damaged. A cut inside a
    188-byte transport packet is flagged truncated even where every frame left decodes."""
    data = write_clip(tmp_path / "full.ts", frames=24, noise=True).read_bytes()
    for k in range(8):
        packets = int(len(data) * (0.6 + 0.05 * k)) // 188
        # inside a packet: a size that no TS packet size (188, 192, 204) divides; x264's output size varies
        # from run to run, and about 1 cut in 25 at +100 bytes would be a multiple of 192 or 204
        inside = next(e for e in range(100, 188) if all((packets * 188 + e) % n for n in TS_PACKET_SIZES))
        for extra in (0, inside):  # at a packet boundary, inside a packet
            path = tmp_path / f"cut{k}_{extra}.ts"
            path.write_bytes(data[: packets * 188 + extra])
            video = read_video(path)
            assert 8 <= video.num_frames < 24, path.name
            assert_frames_are(video.frames, list(range(video.num_frames)), tol=25.0)  # noisy clip
            part = read_video(path, select=tiny_model.needed_frames)
            assert part.num_frames <= video.num_frames + TAIL_SLACK
            if extra:
                assert video.metadata["truncated"] is True and part.metadata["truncated"] is True, path.name


@pytest.mark.parametrize("name, codec, audio", [("av.mkv", "libx264", "aac"), ("av.webm", "libvpx-vp9", "libopus")])
@pytest.mark.parametrize("tags", [True, False])
def test_matroska_with_longer_audio_is_complete(tmp_path: Path, name: str, codec: str, audio: str, tags: bool) -> None:
    """Matroska has no per-stream duration and its segment duration covers the audio: a complete file whose
    audio outlasts the video must not be flagged truncated, and its duration is the video's."""
    path = write_clip(tmp_path / name, frames=24, width=64, height=48, codec=codec, audio_seconds=5, audio_codec=audio)
    if not tags:  # as muxers that write no per-track DURATION tag: rename the tag (same length, still valid)
        data = path.read_bytes()
        assert data.count(b"DURATION") >= 2
        path.write_bytes(data.replace(b"DURATION", b"XURATION"))
    video = read_video(path, select=lambda n: [0, n - 1])
    assert video.num_frames == 24 and video.metadata["truncated"] is False
    assert video.metadata["duration"] == pytest.approx(1.0, abs=0.05)
    assert_frames_are(video.frames, [0, 23], tol=14.0)


def test_truncated_matroska_is_still_flagged(tmp_path: Path) -> None:
    """The declared video duration (the track's DURATION tag, or the segment's when there is no other stream)
    still tells a cut-off Matroska file."""
    data = write_clip(tmp_path / "full.mkv", frames=40, noise=True).read_bytes()
    for tags in (True, False):
        path = tmp_path / f"cut_{tags}.mkv"
        path.write_bytes((data if tags else data.replace(b"DURATION", b"XURATION"))[: len(data) // 2])
        video = read_video(path)
        assert 5 < video.num_frames < 28 and video.metadata["truncated"] is True, path.name
        assert video.metadata["duration"] == pytest.approx(40 / 24, abs=0.05)


def _zero_mdat(tmp_path: Path, lo: float, hi: float) -> Path:
    data = bytearray(write_clip(tmp_path / "src.mp4", frames=40, noise=True, faststart=True).read_bytes())
    offset, size = mp4_boxes(bytes(data))["mdat"]
    a, b = offset + 8 + int((size - 8) * lo), offset + 8 + int((size - 8) * hi)
    data[a:b] = bytes(b - a)
    path = tmp_path / f"damaged_{lo}.mp4"
    path.write_bytes(bytes(data))
    return path


def test_undecodable_tail_shortens_the_video(tmp_path: Path) -> None:
    video = read_video(_zero_mdat(tmp_path, 0.98, 1.0))
    assert 32 <= video.num_frames < 40 and video.metadata["truncated"] is True
    assert_frames_are(video.frames, list(range(video.num_frames)), tol=25.0)


def test_undecodable_middle_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="could not be decoded.*damaged"):
        read_video(_zero_mdat(tmp_path, 0.45, 0.55))


# ---------------------------------------------------------------------------------------------- find_videos
def test_find_videos(tmp_path: Path) -> None:
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for name in ["z.mp4", "a.MKV", "b/c.webm", "b/deep/d.y4m", "notes.txt", ".hidden/e.mp4", "b/._f.mp4"]:
        (tmp_path / name).write_bytes(b"x")
    other = tmp_path / "explicit.bin"
    other.write_bytes(b"x")
    found = find_videos([tmp_path, other, tmp_path / "z.mp4", tmp_path / "gone.mp4"])
    rel = [p.relative_to(tmp_path).as_posix() for p in found]
    assert rel == ["a.MKV", "b/c.webm", "b/deep/d.y4m", "z.mp4", "explicit.bin", "gone.mp4"]
    assert find_videos(str(tmp_path / "b")) == sorted(find_videos(str(tmp_path / "b")))
    assert {".mp4", ".mkv", ".mov", ".avi", ".webm", ".y4m", ".ts"} <= VIDEO_EXTENSIONS


def test_find_videos_extensions(tmp_path: Path) -> None:
    for name in ["a.mp4", "b.MKV", "c.webm", "m", "p.4"]:
        (tmp_path / name).write_bytes(b"x")

    def names(found: list[Path]) -> list[str]:
        return sorted(p.name for p in found)

    assert names(find_videos(tmp_path, extensions="mp4")) == ["a.mp4"]  # one extension, not "m", "p", "4"
    assert names(find_videos(tmp_path, extensions=".MKV")) == ["b.MKV"]
    assert names(find_videos(tmp_path, extensions=["mp4", ".webm"])) == ["a.mp4", "c.webm"]
    assert names(find_videos(tmp_path, extensions=("mkv",))) == ["b.MKV"]
    with pytest.raises(TypeError, match="extensions must be strings"):
        find_videos(tmp_path, extensions=[".mp4", 4])
    with pytest.raises(TypeError, match="extensions must be a string or a list"):
        find_videos(tmp_path, extensions=4)


# ---------------------------------------------------------------------------------------------- real samples
SAMPLES = {
    "10053703034.mp4": (540, 960, 240),
    "2999049224_original_centercrop_960x540_8s.mp4": (540, 960, 240),
    "1724.mp4": (720, 406, 243),
    "LIVE_VQC_B129_fastvqa_sampled32f_vr.mp4": (720, 1280, 32),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_shared_samples_decode(shared_data: Path, tiny_model, name: str) -> None:
    path = shared_data / "videos" / name
    if not path.exists():
        pytest.skip(f"{name} is not in ../shared/data/videos")
    h, w, n = SAMPLES[name]
    video = read_video(path, select=tiny_model.needed_frames)
    assert video.num_frames == n
    assert video.frames.shape[1:] == (3, h, w)
    assert video.indices.tolist() == tiny_model.needed_frames(n)
    if name == "1724.mp4":  # stored portrait: no rotation metadata to apply
        assert video.metadata["rotation"] == 0 and (video.metadata["width"], video.metadata["height"]) == (406, 720)
    assert float(video.frames.float().std()) > 5, "real content, not a blank frame"


def test_shared_samples_score(shared_data: Path, tiny_model) -> None:
    paths = [shared_data / "videos" / name for name in sorted(SAMPLES)]
    paths = [p for p in paths if p.exists()]
    if not paths:
        pytest.skip("no sample videos in ../shared/data/videos")
    results = list(tiny_model.score_files(paths, batch_size=2, num_workers=2, progress=False))
    assert [r.path for r in results] == [str(p) for p in paths]
    for r in results:
        assert r.ok, r.error
        assert 0.0 < float(r.score) < 1.0 and np.isfinite(r.score)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts the process's threads in /proc")
def test_a_read_leaves_nothing_for_the_garbage_collector(tmp_path: Path) -> None:
    """PyAV's frame.side_data forms a reference cycle with the frame; reading the display matrix through it
    kept every file's decoder (buffers and threads) alive until the cyclic collector ran."""
    import gc

    path = write_clip(tmp_path / "rot.mp4", frames=8, rotation=90)

    def threads() -> int:
        return len(list(Path("/proc/self/task").iterdir()))

    read_video(path, threads=2)  # warm up whatever starts once per process
    gc.collect()
    before = threads()
    gc.disable()
    try:
        for _ in range(3):
            assert read_video(path, threads=2).metadata["rotation"] == 90
        assert threads() <= before  # each read's decoder threads ended with it, no collector needed
    finally:
        gc.enable()


@pytest.mark.parametrize("threads", [-1, 10**12, "x", 1.5, True])
def test_bad_thread_counts_are_refused_before_opening(clips: Clips, threads: object) -> None:
    with pytest.raises(ValueError, match="threads must be a whole number from 0"):
        read_video(clips.single, threads=threads)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- hostile files
@pytest.mark.parametrize("kind", sorted(REFERENCE_SCRIPTS))
def test_reference_demuxer_scripts_are_refused_without_opening_anything(tmp_path: Path, kind: str) -> None:
    """A few bytes of text named .mp4 made FFmpeg's concat demuxer open the files it names: here a FIFO,
    where the read blocked forever waiting for a writer."""
    fifo = tmp_path / "named.fifo"
    os.mkfifo(fifo)
    script = write_reference_script(tmp_path / f"{kind}.mp4", kind, fifo)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            read_video(script)
            outcome.append(None)
        except BaseException as err:
            outcome.append(err)

    start = time.monotonic()
    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(5.0)
    took = time.monotonic() - start
    if worker.is_alive():  # release the reader blocked on the FIFO before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"reading the {kind} script blocked on the file it names")
    assert isinstance(outcome[0], ValueError), outcome
    assert re.search(r"not a video (container|file FFmpeg can read)", str(outcome[0])), outcome[0]
    assert took < 1.0


def test_an_ffconcat_script_is_named_in_the_refusal(tmp_path: Path) -> None:
    script = write_reference_script(tmp_path / "list.mp4", "ffconcat", tmp_path / "gone.mp4")
    with pytest.raises(ValueError, match=r"an ffconcat script, not a video container.*refused"):
        read_video(script)


def test_only_allowed_formats_are_opened() -> None:
    assert {"mov", "matroska", "avi", "mpegts", "yuv4mpegpipe", "png_pipe"} <= video_io.ALLOWED_FORMATS
    assert not {"concat", "hls", "dash", "sdp", "image2", "tty", "lavfi"} & video_io.ALLOWED_FORMATS


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "stream.mp4"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"a FIFO \(named pipe\), not a regular file"):
        read_video(fifo)
    assert time.monotonic() - start < 1.0


def test_a_symlink_loop_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").symlink_to(tmp_path / "b.mp4")
    (tmp_path / "b.mp4").symlink_to(tmp_path / "a.mp4")
    with pytest.raises(ValueError, match="a loop of symbolic links"):
        read_video(tmp_path / "a.mp4")


@pytest.fixture(scope="module")
def pixel_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pixel_bomb(tmp_path_factory.mktemp("bomb") / "bomb.mp4")


def test_a_pixel_bomb_is_refused_before_decoding(pixel_bomb: Path) -> None:
    assert pixel_bomb.stat().st_size < 200_000
    with pytest.raises(VideoLimitError, match=r"20 frames of 4096x4096 \(336 megapixels.*budget of 100 megapix"):
        read_video(pixel_bomb, select=lambda n: range(20), max_megapixels=100)
    with pytest.raises(VideoLimitError, match=r"one frame of 4096x4096"):
        read_video(pixel_bomb, select=lambda n: [0], max_megapixels=10)
    with video_io.read_limits(max_megapixels=10):  # the limit in effect for model.read
        with pytest.raises(VideoLimitError, match="budget of 10 megapixels"):
            read_video(pixel_bomb, select=lambda n: [0])
    video = read_video(pixel_bomb, select=lambda n: [0, 5], max_megapixels=40)
    assert video.frames.shape == (2, 3, 4096, 4096)


def test_a_stream_growing_past_its_declared_size_is_stopped_while_decoding(tmp_path: Path) -> None:
    path = write_pixel_bomb(tmp_path / "grows.h264", frames=6, container_format="h264", first=200)
    declared = read_video(path, select=lambda n: [0])
    assert (declared.metadata["width"], declared.metadata["height"]) == (64, 64)
    with pytest.raises(VideoLimitError, match=r"decoded frames \(the last 4096x4096\).*budget of 30 megapixels"):
        read_video(path, max_megapixels=30)  # 206 frames of 64 x 64 (the declared size) would fit


def _peak_rss_of_read(path: Path, megapixels: float) -> tuple[int, int, str]:
    """Read ``path`` in a fresh process: (resident bytes before the read, peak resident bytes, outcome)."""
    code = f"""
import re, sys
from dvlta_metric import read_video
def kb(key):
    return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
before = kb("VmRSS")
try:
    read_video({str(path)!r}, select=lambda n: range(20), max_megapixels={megapixels})
    outcome = "read"
except Exception as err:
    outcome = type(err).__name__
print(before, kb("VmHWM"), outcome)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(video_io.__file__).parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=120
    )
    before, peak, outcome = out.stdout.split()
    return int(before), int(peak), outcome


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_a_pixel_bomb_stays_within_the_budget(pixel_bomb: Path) -> None:
    """The 51 KB file of 24 frames of 4096 x 4096 took 3.3 GB with the tiny model's 20 frames; now the read
    is refused, and the process never holds more than the budget (3 bytes a pixel) on top of what it had."""
    budget = 100
    before, peak, outcome = _peak_rss_of_read(pixel_bomb, budget)
    assert outcome == "VideoLimitError"
    assert peak - before < budget * 1e6 * 3, f"peak {peak / 1e6:.0f} MB, {before / 1e6:.0f} MB before the read"


def test_the_decode_time_limit(clips: Clips) -> None:
    with pytest.raises(VideoLimitError, match=r"longer than the decode time limit of 1e-09 s.*decode_timeout="):
        read_video(clips.single, decode_timeout=1e-9)
    with video_io.read_limits(decode_timeout=1e-9):
        with pytest.raises(VideoLimitError, match="decode time limit"):
            read_video(clips.single)
    assert read_video(clips.single, decode_timeout=math.inf).num_frames > 0
    for bad in (0, -1.0, math.nan, "10", True):
        with pytest.raises(ValueError, match="decode_timeout must be a positive number"):
            read_video(clips.single, decode_timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_megapixels must be a positive number"):
        video_io.read_limits(max_megapixels=0).__enter__()


class _FlakyContainer:
    """A container whose packets fail to decode with ``error`` from the ``after``-th on."""

    def __init__(self, container: av.container.InputContainer, error: Exception, after: int) -> None:
        self._container, self._error, self._after = container, error, after

    def __getattr__(self, name: str) -> object:
        return getattr(self._container, name)

    def demux(self, *streams: object) -> Iterator[object]:
        for i, packet in enumerate(self._container.demux(*streams)):
            yield _FlakyPacket(packet, self._error if i >= self._after else None)


class _FlakyPacket:
    def __init__(self, packet: av.Packet, error: Exception | None) -> None:
        self._packet, self._error = packet, error

    def __getattr__(self, name: str) -> object:
        return getattr(self._packet, name)

    def decode(self) -> list[av.VideoFrame]:
        if self._error is not None:
            raise self._error
        return self._packet.decode()


@pytest.mark.parametrize(
    "error",
    [
        av.error.MemoryError(errno.ENOMEM, "Cannot allocate memory"),
        av.error.OSError(errno.EMFILE, "Too many open files"),
        MemoryError(),
    ],
    ids=["ENOMEM", "EMFILE", "MemoryError"],
)
def test_running_out_of_resources_is_transient_not_corrupt(
    clips: Clips, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """ENOMEM while decoding a frame was taken for a frame the file cannot give: "the file is damaged"."""
    opened = video_io._open
    calls = {"n": 0}

    def flaky_open(p: Path, name: str) -> tuple[object, av.video.stream.VideoStream]:
        container, stream = opened(p, name)
        calls["n"] += 1
        return (_FlakyContainer(container, error, 3) if calls["n"] > 1 else container), stream  # scan passes

    monkeypatch.setattr(video_io, "_open", flaky_open)
    with pytest.raises(TransientError, match=r"for want of resources on this machine.*not because of the file"):
        read_video(clips.landscape)


# ---------------------------------------------------------------------------------------------- find_videos, hostile
def test_find_videos_follows_linked_folders_and_warns_about_loops(tmp_path: Path) -> None:
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "sub" / "a.mp4").write_bytes(b"x")
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "linked").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "top" / "linked_again").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real" / "sub" / "up").symlink_to(tmp_path / "real", target_is_directory=True)  # a loop
    with pytest.warns(UserWarning, match=r"up: a symbolic link to .*real, a directory it is inside \(a loop\)"):
        found = find_videos(tmp_path / "top")
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["top/linked/sub/a.mp4"]


def test_find_videos_warns_about_unreadable_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.mp4").write_bytes(b"x")
    (tmp_path / "b.mp4").write_bytes(b"x")
    locked.chmod(0)
    if os.name != "posix" or os.geteuid() == 0:  # permissions do not apply: refuse to list it the same way
        scandir = os.scandir

        def refuse(path: object = ".") -> object:
            if Path(os.fsdecode(path)) == locked:  # type: ignore[arg-type]
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return scandir(path)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "scandir", refuse)
    try:
        with pytest.warns(UserWarning, match=r"skipped the directory .*locked: cannot list it"):
            found = find_videos(tmp_path)
    finally:
        locked.chmod(0o755)
    assert [p.name for p in found] == ["b.mp4"]


@pytest.mark.parametrize("name", ["s?.png", "s{1}.png", "s*.png"])
def test_a_picture_whose_name_looks_like_a_sequence_pattern_reads(tmp_path: Path, name: str) -> None:
    """FFmpeg guesses the image2 sequence demuxer (refused) for such names; the file is one picture."""
    video = read_video(write_still(tmp_path / name))
    assert video.num_frames == 1 and video.metadata["still_image"]
