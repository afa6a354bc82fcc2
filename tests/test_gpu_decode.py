"""The torchcodec decoder (``decoder="torchcodec"``: NVDEC on a GPU), against the PyAV reader.

Three layers: the argument checks and the errors when torchcodec, FFmpeg or CUDA are missing run everywhere; the
reader's own logic (truncated files, timestamps, NVDEC's fallback) runs on a stand-in decoder; the comparisons of
the two readers run where torchcodec and FFmpeg's shared libraries are installed (torchcodec's CPU decoder), and
the NVDEC ones where there is also a GPU. The CUDA tests are marked ``cuda`` (benchmarks/gpu_session.sh part e).
"""

from __future__ import annotations

import json
import sys
import types
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_run import run
from video_files import Clips, make_clips, write_clip

import dvlta_metric
from dvlta_metric import read_options, read_video, score_files
from dvlta_metric import torchcodec_io as tc
from dvlta_metric.raw_video import RawVideo
from dvlta_metric.ray_scoring import plan_resources
from dvlta_metric.video_io import _FrameTable, _Truncated


def _torchcodec_missing() -> str | None:
    try:
        tc.import_torchcodec()
    except ImportError as err:
        return str(err)
    return None


MISSING = _torchcodec_missing()
needs_torchcodec = pytest.mark.skipif(MISSING is not None, reason=f"torchcodec cannot run here: {MISSING}")
needs_nvdec = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    needs_torchcodec,
]

MAX_CPU_DIFF = 3
"""Most any 8-bit pixel may differ between PyAV and torchcodec's CPU decoder (both swscale; measured: 0 with
FFmpeg 5.1 and 8.1 on the generated clips and the four real videos)."""

MAX_NVDEC_MEAN_DIFF = 2.0
"""Mean absolute difference in 8-bit levels allowed between NVDEC's RGB and PyAV's (colour conversion kernels)."""


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    return make_clips(tmp_path_factory.mktemp("clips"))


# ---------------------------------------------------------------------------------------------- everywhere
def test_decoder_names_are_checked(clips: Clips, tiny_model: dvlta_metric.DVLTAVQA) -> None:
    with pytest.raises(ValueError, match="decoder must be one of pyav, torchcodec"):
        read_video(clips.single, decoder="nvdec")
    with pytest.raises(ValueError, match="decoder must be one of"):
        score_files(tiny_model, [clips.single], decoder="cuda")
    with pytest.raises(ValueError, match="decoder must be one of"), read_options(decoder="PyAV"):
        pass


def test_colour_options_torchcodec_cannot_apply_are_refused_before_anything_runs(
    clips: Clips, tiny_model: dvlta_metric.DVLTAVQA
) -> None:
    with pytest.raises(ValueError, match="options of the PyAV decoder"):
        score_files(tiny_model, [clips.single], decoder="torchcodec", color_matrix="bt709")
    with pytest.raises(ValueError, match="options of the PyAV decoder"):
        read_video(clips.single, decoder="torchcodec", color_range="pc")


def test_colour_options_on_the_command_line(clips: Clips, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "score", clips.single, "--model", "dvlta-vqa-tiny", "--random-weights", "--device", "cpu",
        "--decoder", "torchcodec", "--color-matrix", "bt709",
    )  # fmt: skip
    assert code == 2 and "--decoder torchcodec" in err and "options of the PyAV decoder" in err
    code, _, err = run(capsys, "score", clips.single, "--decoder", "nvdec")
    assert code == 2 and "invalid choice" in err


def test_a_missing_torchcodec_says_what_to_install(
    clips: Clips, tiny_model: dvlta_metric.DVLTAVQA, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # import torchcodec -> ImportError
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    with pytest.raises(ImportError, match=r"dvlta-metric\[gpu-decode\].*FFmpeg"):
        read_video(clips.single, decoder="torchcodec")
    with pytest.raises(ImportError, match=r"dvlta-metric\[gpu-decode\]"):
        score_files(tiny_model, [clips.single], decoder="torchcodec")  # before any file is read
    code, _, err = run(
        capsys, "score", clips.single, "--model", "dvlta-vqa-tiny", "--random-weights", "--device", "cpu",
        "--decoder", "torchcodec",
    )  # fmt: skip
    assert code == 2 and "needs torchcodec" in err and "gpu-decode" in err


def test_torchcodec_without_ffmpeg_libraries_is_refused(clips: Clips, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("torchcodec")
    fake.ffmpeg_major_version = None  # type: ignore[attr-defined]  # what torchcodec sets when FFmpeg is missing
    monkeypatch.setitem(sys.modules, "torchcodec", fake)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", types.ModuleType("torchcodec.decoders"))
    with pytest.raises(ImportError, match="no FFmpeg shared libraries"):
        read_video(clips.single, decoder="torchcodec")


def test_nvdec_without_a_gpu_is_a_clear_runtime_error(clips: Clips, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        read_video(clips.single, decoder="torchcodec", device="cuda")
    with pytest.raises(ValueError, match="on the CPU or on a CUDA GPU"):
        tc.check_torchcodec("meta")


def test_raw_video_is_read_by_pyav_whatever_the_decoder(tmp_path: Path) -> None:
    raw_path = tmp_path / "grey.yuv"
    raw_path.write_bytes(bytes([128]) * (64 * 48 * 3 // 2) * 4)  # 4 yuv420p frames: nothing for a decoder to do
    video = read_video(RawVideo(raw_path, 64, 48), decoder="torchcodec")  # torchcodec is not needed for it
    assert video.metadata["decoder"] == "pyav" and video.num_frames == 4 and video.frames.device.type == "cpu"


def test_the_ray_plan_with_gpu_decoding_has_no_decode_tasks() -> None:
    plan = plan_resources({"CPU": 16, "GPU": 1}, gpu_decode=True)
    assert (plan.decoders, plan.scorers, plan.scorer_gpus, plan.scorer_cpus, plan.actor_decoders) == (0, 1, 1, 16, 16)
    assert plan_resources({"CPU": 16, "GPU": 2}, gpu_decode=True, decoders=4).actor_decoders == 4
    assert plan_resources({"CPU": 16}, gpu_decode=True).actor_decoders == 0  # a CPU cluster: decode tasks
    assert plan_resources({"CPU": 16, "GPU": 1}).actor_decoders == 0


# ---------------------------------------------------------------------------------------------- stand-in decoder
def _table(n: int = 24) -> _FrameTable:
    pts = [i * 512 for i in range(n)]
    return _FrameTable(
        n, pts, {p: i for i, p in enumerate(pts)}, {p: i for i, p in enumerate(pts)}, [0, 12], [0, 6144], [0, 12],
        [0, 6144], time_base=Fraction(1, 12288),
    )  # fmt: skip


class FakeDecoder:
    """torchcodec's ``VideoDecoder`` interface over a table: frames fail from ``bad`` on, batches fail in ``broken``."""

    def __init__(self, table: _FrameTable, bad: int | None = None, broken: bool = False, shift: float = 0.0) -> None:
        self.table, self.bad, self.broken, self.shift = table, bad, broken, shift
        self.metadata = types.SimpleNamespace(height=8, width=8, rotation=None, color_transfer_characteristic=None)

    def _frame(self, i: int) -> Any:
        if self.bad is not None and i >= self.bad:
            raise RuntimeError("SingleStreamDecoder.cpp:1493, Could not push packet to decoder: Invalid data")
        seconds = self.table.pts[i] * float(self.table.time_base) + self.shift  # type: ignore[index, arg-type]
        return types.SimpleNamespace(data=torch.full((3, 8, 8), i, dtype=torch.uint8), pts_seconds=seconds)

    def get_frame_at(self, i: int) -> Any:
        return self._frame(i)

    def get_frames_at(self, indices: list[int]) -> Any:
        if self.broken:
            raise RuntimeError("Requested next frame while there are no more frames left to decode.")
        frames = [self._frame(i) for i in indices]
        return types.SimpleNamespace(
            data=torch.stack([f.data for f in frames]),
            pts_seconds=torch.tensor([f.pts_seconds for f in frames], dtype=torch.float64),
        )


def _frames(decoder: FakeDecoder, needed: list[int], shorten: bool = True) -> torch.Tensor:
    limits = dvlta_metric.video_io._Limits(1e12, 1e6, 1e6, float("inf"))
    return tc._decode_frames(decoder, "v.mp4", decoder.table, needed, limits, 1, shorten, torch.device("cpu"))


def test_frames_come_in_index_order_across_chunks() -> None:
    table = _table(40)
    needed = list(range(0, 40, 2))  # more than one CHUNK
    frames = _frames(FakeDecoder(table), needed)
    assert frames.shape == (20, 3, 8, 8) and frames[:, 0, 0, 0].tolist() == needed


def test_a_batch_that_fails_as_a_whole_is_decoded_frame_by_frame() -> None:
    """torchcodec's batched call can fail where single frames decode (its false end-of-file): no error then."""
    frames = _frames(FakeDecoder(_table(), broken=True), [1, 5, 9])
    assert frames[:, 0, 0, 0].tolist() == [1, 5, 9]


def test_failing_last_frames_make_the_reader_read_a_shorter_video() -> None:
    with pytest.raises(_Truncated) as cut:
        _frames(FakeDecoder(_table(24), bad=21), [0, 10, 22])
    assert cut.value.frames == 21  # as the PyAV reader: the video ends before the first frame that fails


def test_frames_failing_elsewhere_are_an_error_that_names_torchcodec_and_pyav() -> None:
    with pytest.raises(ValueError, match=r"torchcodec could not decode 2 of the 3 frames.*decoder='pyav'"):
        _frames(FakeDecoder(_table(24), bad=5), [0, 10, 22])
    with pytest.raises(ValueError, match="torchcodec could not decode"):  # the second, shorter read never shortens
        _frames(FakeDecoder(_table(24), bad=21), [0, 22], shorten=False)


def test_a_frame_at_another_time_than_the_table_says_is_refused() -> None:
    with pytest.raises(ValueError, match="the readers disagree"):
        _frames(FakeDecoder(_table(), shift=0.5), [3])


def test_nvdec_fallback_to_the_cpu_is_reported_and_a_missing_nvcuvid_fails() -> None:
    cuda = torch.device("cuda", 0)

    class Status:
        def __init__(self, text: str, nvcuvid: bool) -> None:
            self.text, self._nvcuvid_unavailable = text, nvcuvid

        def __bool__(self) -> bool:
            return True

        def __str__(self) -> str:
            return self.text

    assert tc._fallback(types.SimpleNamespace(cpu_fallback=None), "v", cuda) is None  # NVDEC decodes
    unsupported = Status("[CUDA] Fallback status: Falling back due to: Video not supported", False)
    assert "Video not supported" in str(tc._fallback(types.SimpleNamespace(cpu_fallback=unsupported), "v", cuda))
    missing = Status("[CUDA] Fallback status: Falling back due to: NVcuvid unavailable", True)
    with pytest.raises(RuntimeError, match="libnvcuvid.*NVIDIA_DRIVER_CAPABILITIES"):
        tc._fallback(types.SimpleNamespace(cpu_fallback=missing), "v", cuda)


def test_the_frame_table_is_given_to_torchcodec_as_its_frame_mappings() -> None:
    table = _table(5)
    frames = json.loads(tc.frame_mappings(table))["frames"]
    assert [f["pts"] for f in frames] == table.pts
    assert [f["key_frame"] for f in frames] == [1, 0, 0, 0, 0]
    assert all(f["duration"] == 512 for f in frames)


# ---------------------------------------------------------------------------------------------- torchcodec on the CPU
@needs_torchcodec
def test_torchcodec_picks_the_same_frames_as_pyav_and_decodes_the_same_pixels(
    clips: Clips, tiny_model: dvlta_metric.DVLTAVQA
) -> None:
    for path in [*clips.good(), clips.portrait_cw, clips.upside_down, clips.gop, clips.webm, clips.avi]:
        ref = read_video(path, select=tiny_model.needed_frames)
        got = read_video(path, select=tiny_model.needed_frames, decoder="torchcodec")
        assert got.metadata["decoder"] == "torchcodec" and ref.metadata["decoder"] == "pyav"
        assert torch.equal(got.indices, ref.indices) and got.num_frames == ref.num_frames, path.name
        assert got.frames.shape == ref.frames.shape and got.frames.dtype == ref.frames.dtype, path.name
        assert int((got.frames.int() - ref.frames.int()).abs().max()) <= MAX_CPU_DIFF, path.name
        assert got.metadata["rotation"] == ref.metadata["rotation"], path.name
        views = [tiny_model.make_views(v) for v in (ref, got)]
        for name in views[0]:
            assert torch.allclose(views[0][name], views[1][name], atol=MAX_CPU_DIFF / 255 * 5), (path.name, name)


@needs_torchcodec
def test_a_ten_bit_source_keeps_its_bits_with_torchcodec(clips: Clips) -> None:
    if clips.ten_bit is None:
        pytest.skip("this PyAV build has no 10-bit encoder")
    ref, got = read_video(clips.ten_bit), read_video(clips.ten_bit, decoder="torchcodec")
    assert got.frames.dtype == ref.frames.dtype == torch.uint16 and got.metadata["rgb_bits"] == 16
    assert got.metadata["hdr"] and ref.metadata["hdr"]
    # swscale's rgb48 path and torchcodec's differ at hard chroma edges (the test picture's red block): measured
    # mean 0.23 8-bit levels, largest 43 at the block's edge
    diff = (got.frames.int() - ref.frames.int()).abs().float() / 257
    assert float(diff.mean()) < 1.0
    eight = read_video(clips.ten_bit, decoder="torchcodec", keep_bit_depth=False)
    assert eight.frames.dtype == torch.uint8 and eight.metadata["rgb_bits"] == 8


@needs_torchcodec
def test_a_truncated_file_is_scored_on_the_frames_it_holds_as_with_pyav(clips: Clips) -> None:
    ref, got = read_video(clips.truncated), read_video(clips.truncated, decoder="torchcodec")
    assert got.num_frames == ref.num_frames and got.metadata["truncated"] and ref.metadata["truncated"]
    assert int((got.frames.int() - ref.frames.int()).abs().max()) <= MAX_CPU_DIFF


@needs_torchcodec
def test_damaged_files_fail_with_the_pyav_readers_errors_or_one_naming_torchcodec(clips: Clips) -> None:
    for path in clips.bad():  # refused by the PyAV checks and scan, before torchcodec opens anything
        with pytest.raises((ValueError, FileNotFoundError)) as ref:
            read_video(path)
        with pytest.raises(type(ref.value)) as got:
            read_video(path, decoder="torchcodec")
        assert str(got.value) == str(ref.value)
    with pytest.raises(ValueError, match=r"torchcodec could not decode .*decoder='pyav'"):
        read_video(clips.corrupt_data, decoder="torchcodec")
    try:  # torchcodec 0.17 cannot seek in this MPEG-TS file (its false end of file): a clear error, if any
        got_ts = read_video(clips.ts, decoder="torchcodec")
    except ValueError as err:
        assert "torchcodec" in str(err) and "decoder='pyav'" in str(err)
    else:
        assert torch.equal(got_ts.frames, read_video(clips.ts).frames)


@needs_torchcodec
def test_score_files_with_torchcodec_gives_pyavs_scores_and_error_rows(
    clips: Clips, tiny_model: dvlta_metric.DVLTAVQA, tmp_path: Path
) -> None:
    files = [*clips.good(), clips.truncated, clips.corrupt_data, clips.missing]
    ref = list(score_files(tiny_model, files, progress=False, num_workers=2))
    got = list(score_files(tiny_model, files, progress=False, num_workers=2, decoder="torchcodec"))
    assert [r.path for r in got] == [r.path for r in ref]
    for a, b in zip(ref, got):
        assert a.ok == b.ok, (a, b)
        if a.ok:
            assert b.score == pytest.approx(a.score, abs=1e-5) and b.warning == a.warning
        else:
            assert b.error.split(":")[0] == a.error.split(":")[0]  # the same exception type
    longer = write_clip(tmp_path / "longer.mp4", frames=80, gop=10)  # several keyframes: seeks
    assert got[0].ok and tiny_model(longer) == pytest.approx(
        float(next(iter(score_files(tiny_model, [longer], progress=False, decoder="torchcodec"))).score), abs=1e-5
    )


@needs_torchcodec
def test_the_command_line_scores_with_torchcodec(clips: Clips, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["score", clips.landscape, "--model", "dvlta-vqa-tiny", "--random-weights", "--device", "cpu"]
    code, out, _ = run(capsys, *args, "--format", "json", "--no-progress")
    assert code == 0
    code, out_tc, _ = run(capsys, *args, "--format", "json", "--no-progress", "--decoder", "torchcodec")
    assert code == 0
    assert json.loads(out_tc)[0]["score"] == pytest.approx(json.loads(out)[0]["score"], abs=1e-5)


def test_real_videos_agree_between_the_decoders(shared_data: Path, tiny_model: dvlta_metric.DVLTAVQA) -> None:
    if MISSING is not None:
        pytest.skip(f"torchcodec cannot run here: {MISSING}")
    for path in sorted((shared_data / "videos").glob("*.mp4")):
        ref = read_video(path, select=tiny_model.needed_frames)
        got = read_video(path, select=tiny_model.needed_frames, decoder="torchcodec")
        assert torch.equal(got.indices, ref.indices) and got.frames.shape == ref.frames.shape, path.name
        assert int((got.frames.int() - ref.frames.int()).abs().max()) <= MAX_CPU_DIFF, path.name


# ---------------------------------------------------------------------------------------------- NVDEC
@pytest.fixture(scope="module")
def cuda_model() -> dvlta_metric.DVLTAVQA:
    torch.manual_seed(0)
    return dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cuda")


def _mark(test: Any) -> Any:
    """``needs_nvdec``'s marks on ``test``."""
    for mark in needs_nvdec:
        test = mark(test)
    return test


@_mark
def test_nvdec_frames_match_pyavs_within_the_colour_conversion(clips: Clips, cuda_model: dvlta_metric.DVLTAVQA) -> None:
    for path in [*clips.good(), clips.gop, clips.portrait_cw]:
        ref = read_video(path, select=cuda_model.needed_frames)
        got = read_video(path, select=cuda_model.needed_frames, decoder="torchcodec", device="cuda")
        assert got.frames.is_cuda and got.metadata["decode_device"].startswith("cuda"), path.name
        assert torch.equal(got.indices, ref.indices) and got.frames.shape == ref.frames.shape, path.name
        diff = (got.frames.cpu().float() - ref.frames.float()).abs()
        assert float(diff.mean()) < MAX_NVDEC_MEAN_DIFF, (path.name, float(diff.mean()), float(diff.max()))


@_mark
def test_nvdec_frames_stay_on_the_gpu_through_view_cutting(
    clips: Clips, cuda_model: dvlta_metric.DVLTAVQA, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[torch.device] = []
    cut = cuda_model.make_views

    def spy(video: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        seen.append(video.frames.device)
        return cut(video, **kwargs)

    monkeypatch.setattr(cuda_model, "make_views", spy)
    files = [clips.landscape, clips.mkv, clips.odd]
    results = list(score_files(cuda_model, files, progress=False, num_workers=2, batch_size=2, decoder="torchcodec"))
    assert all(r.ok for r in results) and len(seen) == 3 and all(d.type == "cuda" for d in seen)
    monkeypatch.undo()
    ref = list(score_files(cuda_model, files, progress=False, num_workers=2, batch_size=2))
    assert [r.score for r in results] == pytest.approx([r.score for r in ref], abs=0.02)


@_mark
def test_nvdec_damaged_files_are_rows_as_with_pyav(clips: Clips, cuda_model: dvlta_metric.DVLTAVQA) -> None:
    files = [clips.truncated, clips.corrupt_data, clips.missing, clips.text, clips.landscape]
    ref = list(score_files(cuda_model, files, progress=False, num_workers=2))
    got = list(score_files(cuda_model, files, progress=False, num_workers=2, decoder="torchcodec"))
    assert [r.ok for r in got] == [r.ok for r in ref]
    assert got[0].warning and "truncated" in got[0].warning
    assert [r.error.split(":")[0] for r in got if r.error] == [r.error.split(":")[0] for r in ref if r.error]


@_mark
def test_a_ten_bit_source_through_nvdec_and_view_cutting(clips: Clips, cuda_model: dvlta_metric.DVLTAVQA) -> None:
    if clips.ten_bit is None:
        pytest.skip("this PyAV build has no 10-bit encoder")
    with read_options(decoder="torchcodec"):
        video = cuda_model.read(clips.ten_bit)
    assert video.frames.is_cuda and video.frames.dtype in (torch.uint16, torch.uint8)
    views = cuda_model.make_views(video)
    assert all(v.is_cuda and torch.isfinite(v).all() for v in views.values())
