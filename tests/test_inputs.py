"""Inputs beyond video files: raw ``.yuv`` (RawVideo), Y4M on standard input, ``--files-from``, colour options,
and the 16-bit path of sources above 8 bits."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from video_files import write_yuv_set, yuv_planes

import dvlta_metric
import dvlta_metric._cli_inputs
from dvlta_metric import RawVideo, read_video
from dvlta_metric.cli import main
from dvlta_metric.views import to_unit_float

W, H, N = 64, 48, 12
TINY = ["--model", "dvlta-vqa-tiny", "--random-weights", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def set8(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_yuv_set(tmp_path_factory.mktemp("yuv8"), yuv_planes(N, W, H))


@pytest.fixture(scope="module")
def set10(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_yuv_set(tmp_path_factory.mktemp("yuv10"), yuv_planes(N, W, H, bits=10))


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------- raw video
def test_raw_y4m_and_lossless_mp4_give_the_same_frames_and_score(set8, tiny_model) -> None:
    raw = RawVideo(set8["yuv"], W, H, "yuv420p", 25)
    videos = [read_video(p) for p in (raw, set8["y4m"], set8["mp4"])]
    assert [v.num_frames for v in videos] == [N, N, N]
    assert all(v.frames.dtype == torch.uint8 for v in videos)
    assert torch.equal(videos[0].frames, videos[1].frames) and torch.equal(videos[0].frames, videos[2].frames)
    scores = [float(tiny_model(p)) for p in (raw, set8["y4m"], set8["mp4"])]
    assert scores[0] == scores[1] == scores[2]
    results = list(tiny_model.score_files([raw, set8["mp4"]], progress=False, num_workers=1))
    assert [r.path for r in results] == [str(set8["yuv"]), str(set8["mp4"])]
    assert results[0].score == results[1].score == scores[0]


def test_raw_video_reads_only_selected_frames(set8) -> None:
    raw = RawVideo(set8["yuv"], W, H)
    whole = read_video(raw)
    some = read_video(raw, select=lambda n: [2, n - 1])
    assert some.indices.tolist() == [2, N - 1] and torch.equal(some.frames, whole.frames[[2, N - 1]])
    assert whole.metadata["container"] == "rawvideo" and whole.fps == 25.0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"pix_fmt": "rgb24"}, ValueError, "yuv420p10le"),
        ({"width": 0}, ValueError, "from 1 to"),
        ({"height": 10**6}, ValueError, "from 1 to"),
        ({"width": 64.0}, TypeError, "must be an int"),
        ({"fps": 0}, ValueError, "fps"),
        ({"fps": float("nan")}, ValueError, "fps"),
    ],
)
def test_raw_video_refuses_bad_descriptions(set8, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        RawVideo(set8["yuv"], **{"width": W, "height": H, **kwargs})


def test_raw_video_not_a_whole_number_of_frames(set8) -> None:
    with pytest.raises(ValueError, match="not a whole number of 66x48 yuv420p frames"):
        read_video(RawVideo(set8["yuv"], 66, 48))


def test_raw_video_over_the_pixel_budget(set8) -> None:
    with pytest.raises(dvlta_metric.VideoLimitError):
        read_video(RawVideo(set8["yuv"], W, H), max_megapixels=0.001)


# ---------------------------------------------------------------------------------------------- bit depth
def test_ten_bit_source_keeps_its_bits(set10) -> None:
    raw = RawVideo(set10["yuv"], W, H, "yuv420p10le")
    deep = read_video(raw)
    assert deep.frames.dtype == torch.uint16 and deep.metadata["rgb_bits"] == 16
    assert torch.equal(deep.frames, read_video(set10["y4m"]).frames)
    unit = to_unit_float(deep.frames)
    levels = torch.unique(unit)
    assert float(levels.diff().min()) < 1 / 255 / 2  # levels an 8-bit path cannot tell apart
    assert not torch.equal((unit * 255).round() / 255, unit)  # values off the 8-bit grid
    eight = read_video(raw, keep_bit_depth=False)
    assert eight.frames.dtype == torch.uint8 and eight.metadata["rgb_bits"] == 8
    assert (unit - to_unit_float(eight.frames)).abs().max() < 4 / 255  # the same picture (swscale dithers to 8 bits)


def test_ten_bit_raw_and_y4m_give_the_same_score(set10, tiny_model) -> None:
    raw = RawVideo(set10["yuv"], W, H, "yuv420p10le")
    assert float(tiny_model(raw)) == float(tiny_model(set10["y4m"]))


def test_pixel_budget_counts_sixteen_bit_frames_twice(set10) -> None:
    raw = RawVideo(set10["yuv"], W, H, "yuv420p10le")
    budget = 1.5 * N * W * H / 1e6  # room for the frames at 8 bits, not at 16
    with pytest.raises(dvlta_metric.VideoLimitError, match="16 bits"):
        read_video(raw, max_megapixels=budget)
    assert read_video(raw, max_megapixels=budget, keep_bit_depth=False).frames.dtype == torch.uint8


def test_uint16_videos_are_accepted(tiny_model) -> None:
    video = (torch.arange(8 * 3 * 32 * 32) % 65536).reshape(8, 3, 32, 32).to(torch.uint16)
    as_float = video.float() / 65535
    assert torch.allclose(tiny_model(video), tiny_model(as_float), atol=1e-6)


# ---------------------------------------------------------------------------------------------- colour
def test_colour_options_apply_to_untagged_streams_only(set8) -> None:
    raw = RawVideo(set8["yuv"], W, H)
    default = read_video(raw).frames
    assert torch.equal(read_video(raw, color_matrix="bt601", color_range="tv").frames, default)
    assert not torch.equal(read_video(raw, color_matrix="bt709").frames, default)
    assert not torch.equal(read_video(raw, color_range="pc").frames, default)
    with dvlta_metric.read_options(color_matrix="bt709"):
        assert torch.equal(read_video(raw).frames, read_video(raw, color_matrix="bt709").frames)
    with pytest.raises(ValueError, match="bt601, bt709, bt2020"):
        read_video(raw, color_matrix="709")
    with pytest.raises(ValueError, match="tv, pc"):
        read_video(raw, color_range="full")


def test_tagged_streams_keep_their_tags(tmp_path: Path) -> None:
    import av

    path = tmp_path / "tagged.mkv"
    planes = yuv_planes(2, W, H)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.colorspace = 1  # BT.709
        stream.codec_context.color_range = 1  # tv
        for plane in planes:
            frame = av.VideoFrame.from_ndarray(plane, format="yuv420p")
            frame.colorspace, frame.color_range = 1, 1
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tagged = read_video(path)
    assert tagged.metadata["colorspace"] == 1
    assert torch.equal(read_video(path, color_matrix="bt2020", color_range="pc").frames, tagged.frames)


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_raw_stdin_and_mp4_agree(capsys, monkeypatch, set8) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(set8["y4m"].read_bytes())))
    code, out, err = run(
        capsys, "score", set8["yuv"], "-", set8["mp4"], "--size", f"{W}x{H}", "--format", "json", *TINY
    )
    rows = json.loads(out)
    assert code == 0, err
    assert [r["path"] for r in rows] == [str(set8["yuv"]), "-", str(set8["mp4"])]
    assert rows[0]["score"] == rows[1]["score"] == rows[2]["score"]
    assert rows[1]["realpath"] == "-"


def test_cli_stdin_not_y4m(capsys, monkeypatch, set8) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(set8["mp4"].read_bytes())))
    code, _, err = run(capsys, "score", "-", *TINY)
    assert code == 2 and "not a Y4M stream" in err


def test_cli_stdin_spool_is_bounded_and_removed(capsys, monkeypatch, set8, tmp_path) -> None:
    monkeypatch.setattr(dvlta_metric._cli_inputs, "STDIN_MAX_BYTES", 1000)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(set8["y4m"].read_bytes())))
    code, _, err = run(capsys, "score", "-", *TINY)
    assert code == 2 and "larger than" in err
    assert list(tmp_path.iterdir()) == []  # the partial copy is gone


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["{yuv}"], "--size"),
        (["{yuv}", "--size", "64x"], "WIDTHxHEIGHT"),
        (["{yuv}", "--size", "99999x48"], "from 1 to"),
        (["{yuv}", "--size", "64x48", "--pix-fmt", "yuv411p"], "invalid choice"),
        (["{yuv}", "--size", "64x48", "--fps", "0"], "above 0"),
        (["{mp4}", "--size", "64x48"], "no .yuv file"),
        (["{mp4}", "--color-matrix", "bt470"], "invalid choice"),
        ([], "nothing to score"),
        (["--files-from", "{missing}"], "cannot read the list"),
    ],
)
def test_cli_input_usage_errors(capsys, set8, args, match) -> None:
    names = {"yuv": set8["yuv"], "mp4": set8["mp4"], "missing": set8["mp4"].parent / "no-list.txt"}
    code, _, err = run(capsys, "score", *[a.format(**names) for a in args], *TINY)
    assert code == 2 and match in err


def test_cli_raw_size_mismatch_is_a_failed_row(capsys, set8) -> None:
    code, out, err = run(capsys, "score", set8["yuv"], set8["mp4"], "--size", "66x48", "--format", "json", *TINY)
    rows = json.loads(out)
    assert code == 1 and rows[0]["error"].startswith("ValueError") and rows[1]["score"] is not None


def test_cli_files_from(capsys, monkeypatch, set8, tmp_path) -> None:
    spaced = tmp_path / "a clip .mp4"
    spaced.write_bytes(set8["mp4"].read_bytes())
    listing = f"{set8['mp4']}\n\n   \n{spaced}\r\n{tmp_path / 'missing.mp4'}\n"
    (tmp_path / "list.txt").write_text(listing)
    code, out, err = run(capsys, "score", "--files-from", tmp_path / "list.txt", "--format", "json", *TINY)
    rows = json.loads(out)
    assert code == 1 and "missing.mp4" in err
    assert [r["path"] for r in rows] == [str(set8["mp4"]), str(spaced), str(tmp_path / "missing.mp4")]
    assert rows[0]["score"] == rows[1]["score"] and rows[2]["error"].startswith("FileNotFoundError")
    # from standard input, with a positional path as well
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(f"{spaced}\n".encode())))
    code, out, _ = run(capsys, "score", set8["mp4"], "--files-from", "-", "--format", "json", *TINY)
    assert code == 0 and [r["path"] for r in json.loads(out)] == [str(set8["mp4"]), str(spaced)]


def test_files_from_reads_a_long_list_without_argv(tmp_path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"".join(b"v%06d.mp4\n" % i for i in range(100_000)) + b"caf\xe9.mp4\n")
    paths = dvlta_metric._cli_inputs.read_file_list(str(listing))
    assert len(paths) == 100_001 and paths[0] == "v000000.mp4"
    assert np.frombuffer(paths[-1].encode("utf-8", "surrogateescape"), np.uint8)[3] == 0xE9
