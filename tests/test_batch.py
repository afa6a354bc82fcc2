"""Scoring files: file score == tensor score, order, per-file errors, batch fallback, bounded prefetch."""

from __future__ import annotations

import errno
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from video_files import Clips, make_clips, write_clip, write_still

import dvlta_metric
from dvlta_metric.batch import FileResult, score_files
from dvlta_metric.video_io import read_video


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    return make_clips(tmp_path_factory.mktemp("clips"))


@pytest.mark.parametrize("name", ["landscape", "portrait", "vfr", "single"])
def test_file_score_equals_tensor_score(clips: Clips, tiny_model, name: str) -> None:
    path = getattr(clips, name)
    decoded = read_video(path)  # every frame: the tensor path samples the same frames itself
    from_tensor = tiny_model(decoded.frames)
    from_file = tiny_model(path)
    from_str = tiny_model(str(path))
    assert from_file.shape == () and torch.allclose(from_file, from_tensor, atol=1e-6, rtol=0)
    assert torch.equal(from_file, from_str)
    (result,) = score_files(tiny_model, [path], progress=False)
    assert result.score == pytest.approx(float(from_tensor), abs=1e-6)


def test_results_in_order_with_errors(clips: Clips, tiny_model) -> None:
    good, bad = clips.good(), clips.bad()
    paths = [good[0], bad[0], good[1], bad[1], bad[2], good[2], good[3], bad[3], bad[4], bad[5], good[4], good[5]]
    single = {str(p): float(tiny_model(p)) for p in good}
    for batch_size, workers in [(3, 2), (1, 0)]:
        results = list(tiny_model.score_files(paths, batch_size=batch_size, num_workers=workers, progress=False))
        assert [r.path for r in results] == [str(p) for p in paths]
        for r in results:
            assert r.model == "dvlta-vqa-tiny"
            if r.path in single:
                assert r.ok and r.error is None
                assert r.score == pytest.approx(single[r.path], abs=1e-5)
            else:
                assert not r.ok and r.score is None
                assert r.error.startswith(("ValueError: ", "FileNotFoundError: ")) and r.path in r.error
        assert sum(r.ok for r in results) == len(good)


def test_explain_weights(clips: Clips, tiny_model) -> None:
    (result,) = tiny_model.score_files([clips.landscape], explain=True, progress=False)
    expected = tiny_model.explain(clips.landscape).rows()[0]
    assert set(result.weights) == set(tiny_model.branches)
    for branch, weight in result.weights.items():
        assert weight == pytest.approx(expected[f"weight_{branch}"], abs=1e-6)
    row = result.to_dict()
    assert {"path", "score", "model", "error"} <= set(row)
    assert {f"weight_{b}" for b in tiny_model.branches} <= set(row)
    json.dumps(row)  # plain types only
    (plain,) = tiny_model.score_files([clips.landscape], progress=False)
    assert plain.weights is None and not any(k.startswith("weight_") for k in plain.to_dict())


def test_truncated_file_scored_with_warning(clips: Clips, tiny_model) -> None:
    (result,) = tiny_model.score_files([clips.truncated], progress=False)
    assert result.ok and result.warning and "truncated" in result.warning


def test_complete_matroska_with_longer_audio_has_no_warning(tmp_path: Path, tiny_model) -> None:
    path = write_clip(tmp_path / "av.mkv", frames=24, width=64, height=48, audio_seconds=3.0)
    (result,) = tiny_model.score_files([path], progress=False)
    assert result.ok and result.warning is None, result.warning


def test_still_image_scored_with_warning(tmp_path: Path, clips: Clips, tiny_model) -> None:
    still = write_still(tmp_path / "photo.mp4")
    results = list(tiny_model.score_files([still, clips.single], progress=False))
    assert results[0].ok and results[0].warning and "still image (png)" in results[0].warning
    assert results[1].ok and results[1].warning is None


def test_too_elongated_file_fails_with_a_clear_error(tmp_path: Path, tiny_model) -> None:
    path = write_clip(tmp_path / "strip.mp4", frames=2, width=16 * 257, height=16)
    (result,) = tiny_model.score_files([path], progress=False)
    assert not result.ok and "too elongated" in result.error and str(path) in result.error


def test_failing_batch_falls_back_to_single_files(clips: Clips, tiny_model, monkeypatch) -> None:
    original_views, original_score = tiny_model.make_views, tiny_model.score_views
    poison = str(clips.odd)

    def tagged_views(video):
        views = original_views(video)
        return {**views, "poison": torch.ones(1)} if getattr(video, "path", "") == poison else views

    def flaky(views):
        if any("poison" in v for v in views):
            raise RuntimeError("this video breaks the model")
        return original_score(views)

    monkeypatch.setattr(tiny_model, "make_views", tagged_views)
    monkeypatch.setattr(tiny_model, "score_views", flaky)
    paths = [clips.landscape, clips.odd, clips.single, clips.vfr]
    results = list(score_files(tiny_model, paths, batch_size=4, num_workers=1, progress=False))
    assert [r.ok for r in results] == [True, False, True, True]
    assert results[1].error == "RuntimeError: this video breaks the model"


def test_prefetch_is_bounded(clips: Clips, tiny_model, monkeypatch) -> None:
    started: list[str] = []
    lock = threading.Lock()
    original = tiny_model.read

    def counting_read(path):
        with lock:
            started.append(str(path))
        return original(path)

    monkeypatch.setattr(tiny_model, "read", counting_read)
    paths = [clips.single] * 12
    results = score_files(tiny_model, paths, batch_size=2, num_workers=2, prefetch=3, progress=False)
    consumed = 0
    for _ in results:
        consumed += 1
        # the current group of 2 plus at most 3 files decoded ahead
        assert len(started) <= consumed + 1 + 3
    assert consumed == 12 and len(started) == 12


def test_stopping_early_releases_workers(clips: Clips, tiny_model) -> None:
    results = score_files(tiny_model, [clips.single] * 6, num_workers=2, progress=False)
    first = next(results)
    results.close()
    assert first.ok


def test_progress_bar_on_stderr_when_it_is_a_terminal(clips: Clips, tiny_model, capsys, monkeypatch) -> None:
    list(tiny_model.score_files([clips.single, clips.missing], progress=True))
    assert capsys.readouterr() == ("", "")  # stderr captured, not a terminal: no bar to fill a log with
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    list(tiny_model.score_files([clips.single, clips.missing], progress=True))
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "2/2" in captured.err


def test_bad_arguments(tiny_model) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        score_files(tiny_model, [], batch_size=0)
    with pytest.raises(ValueError, match="num_workers"):
        score_files(tiny_model, [], num_workers=-1)
    for bad in (2.0, True, "2", None):
        with pytest.raises(TypeError, match="batch_size must be an int"):
            score_files(tiny_model, [], batch_size=bad)
    for bad in (1.5, False):
        with pytest.raises(TypeError, match="num_workers must be an int"):
            score_files(tiny_model, [], num_workers=bad)
    with pytest.raises(TypeError, match="prefetch must be an int"):
        score_files(tiny_model, [], prefetch=2.0)
    with pytest.raises(ValueError, match="prefetch"):
        score_files(tiny_model, [], prefetch=-1)
    assert list(score_files(tiny_model, [], progress=False)) == []
    assert list(score_files(tiny_model, [], batch_size=np.int64(2), progress=False)) == []


@pytest.mark.parametrize("one", ["clip.mp4", Path("clip.mp4"), b"clip.mp4"])
def test_a_single_path_is_refused(tiny_model, one: object) -> None:
    """A string is iterable: without the check each character would become a (failed) file."""
    with pytest.raises(TypeError, match=r"single .*pass a list, e\.g\. \[path\]"):
        tiny_model.score_files(one)
    with pytest.raises(TypeError, match="single"):
        score_files(tiny_model, one)


def test_paths_must_be_paths(tiny_model) -> None:
    with pytest.raises(TypeError, match=r"paths\[1\] must be a str or os.PathLike path, got int"):
        score_files(tiny_model, ["a.mp4", 3])
    with pytest.raises(TypeError, match="got int"):
        score_files(tiny_model, 3)
    results = list(score_files(tiny_model, (p for p in ["gone.mp4"]), progress=False))  # any iterable
    assert len(results) == 1 and not results[0].ok and "gone.mp4" in results[0].error


def test_file_result() -> None:
    ok = FileResult("a.mp4", 0.5, None, "m", {"bvfe": 1.0}, 0.123456)
    bad = FileResult("b.mp4", None, "ValueError: b.mp4: broken", "m")
    assert ok.ok and not bad.ok
    assert ok.to_dict() == {
        "path": "a.mp4",
        "score": 0.5,
        "model": "m",
        "error": None,
        "warning": None,
        "seconds": 0.1235,
        "weight_bvfe": 1.0,
    }
    assert bad.to_dict()["error"] == "ValueError: b.mp4: broken"


def test_accepts_path_objects(clips: Clips, tiny_model) -> None:
    (result,) = score_files(tiny_model, [Path(clips.single)], progress=False)
    assert result.path == str(clips.single)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_score_files_on_cuda_with_worker_streams_matches_one_by_one(clips: Clips) -> None:
    import dvlta_metric

    torch.manual_seed(0)
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cuda")
    good = clips.good()
    single = [float(model(p)) for p in good]
    for batch_size, workers in [(3, 3), (2, 0)]:  # views cut on the workers' own CUDA streams
        for _ in range(2):
            results = list(model.score_files(good, batch_size=batch_size, num_workers=workers, progress=False))
            assert all(r.ok for r in results)
            assert [r.score for r in results] == pytest.approx(single, abs=1e-5)


def test_worker_streams_and_event_wiring_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA stream hand-over of score_files with stand-in stream objects (the real run needs a GPU)."""
    from dvlta_metric import batch

    class FakeStream:
        def __init__(self, device: torch.device | None = None) -> None:
            self.waited: list[object] = []

        def wait_event(self, event: object) -> None:
            self.waited.append(event)

    class FakeView:
        def __init__(self) -> None:
            self.streams: list[object] = []

        def record_stream(self, stream: object) -> None:
            self.streams.append(stream)

    main_stream = FakeStream()
    monkeypatch.setattr(batch, "_worker", threading.local())  # fake streams must not outlive this test
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: main_stream)
    cuda = torch.device("cuda", 0)
    assert batch._worker_stream(torch.device("cpu")) is None
    mine = batch._worker_stream(cuda)
    assert batch._worker_stream(cuda) is mine  # one stream per thread, reused
    other: list[object] = []
    thread = threading.Thread(target=lambda: other.append(batch._worker_stream(cuda)))
    thread.start()
    thread.join()
    assert other[0] is not mine  # another thread gets its own

    views = {"fragments": FakeView(), "frames": FakeView()}
    event = object()
    job = batch._Decoded("a.mp4", views, None, 0.0, ready=event)  # type: ignore[arg-type]
    batch._use_views(job, cuda)
    batch._use_views(job, cuda)  # a group retried file by file waits only once
    assert main_stream.waited == [event] and job.ready is None
    assert all(v.streams == [main_stream] for v in views.values())


def test_hdr_file_scored_with_warning(tmp_path: Path, tiny_model) -> None:
    path = write_clip(tmp_path / "hdr.mp4", frames=8, width=64, height=48, color_trc=16)  # tagged PQ (HDR10)
    (result,) = tiny_model.score_files([path], progress=False)
    assert result.ok and result.warning and "HDR" in result.warning and "tone mapping" in result.warning


# ---------------------------------------------------------------------------------------------- limits, transient
class _ShortOnce:
    """Wraps a model so that its first ``failures`` reads fail with ``error`` (memory or descriptors run out)."""

    def __init__(self, model: object, error: BaseException, failures: int) -> None:
        self._model, self._error, self.failures, self.reads = model, error, failures, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._model, name)

    def read(self, path: str) -> object:
        self.reads += 1
        if self.reads <= self.failures:
            raise self._error
        return self._model.read(path)


@pytest.mark.parametrize(
    "error",
    [MemoryError(), OSError(errno.ENOMEM, "Cannot allocate memory"), OSError(errno.EMFILE, "Too many open files")],
    ids=["MemoryError", "ENOMEM", "EMFILE"],
)
def test_a_transient_failure_is_retried_once_then_marked_transient(clips: Clips, tiny_model, error: OSError) -> None:
    """Running out of memory or file descriptors was written as a permanent "cannot read" verdict."""
    once = _ShortOnce(tiny_model, error, failures=1)
    (result,) = score_files(once, [clips.single], num_workers=0, progress=False)
    assert result.ok and once.reads == 2
    twice = _ShortOnce(tiny_model, error, failures=2)
    (result,) = score_files(twice, [clips.single], num_workers=1, progress=False)
    assert not result.ok and twice.reads == 2
    assert result.error.startswith("TransientError: ") and "failed 2 times" in result.error, result.error
    assert "not because of the file" in result.error


def test_a_bad_file_is_not_retried(clips: Clips, tiny_model) -> None:
    counting = _ShortOnce(tiny_model, MemoryError(), failures=0)
    (result,) = score_files(counting, [clips.bad()[0]], num_workers=0, progress=False)
    assert result.error.startswith(("ValueError: ", "FileNotFoundError: ")) and counting.reads == 1


def test_limits_reach_the_reads_in_the_workers(clips: Clips, tiny_model) -> None:
    for workers in (0, 2):
        (big,) = score_files(tiny_model, [clips.landscape], num_workers=workers, progress=False, max_megapixels=0.1)
        assert big.error.startswith("VideoLimitError: ") and "pixel budget of 0.1 megapixels" in big.error
        (slow,) = score_files(tiny_model, [clips.landscape], num_workers=workers, progress=False, decode_timeout=1e-9)
        assert slow.error.startswith("VideoLimitError: ") and "decode time limit of 1e-09 s" in slow.error
    (ok,) = score_files(tiny_model, [clips.landscape], progress=False, max_megapixels=5, decode_timeout=60)
    assert ok.ok
    with pytest.raises(ValueError, match="max_megapixels must be a positive number"):
        score_files(tiny_model, [clips.landscape], max_megapixels=-1)
    with pytest.raises(ValueError, match="decode_timeout must be a positive number"):
        score_files(tiny_model, [clips.landscape], decode_timeout=float("nan"))


@pytest.mark.parametrize(
    "error",
    [torch.cuda.OutOfMemoryError("CUDA out of memory"), RuntimeError("DefaultCPUAllocator: not enough memory")],
    ids=["CUDA", "CPU allocator"],
)
def test_running_out_of_memory_in_the_model_is_transient(clips: Clips, error: RuntimeError) -> None:
    """An out-of-memory error while scoring is no verdict on the file either."""
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")

    def starved(views):
        raise error

    model.score_views = starved
    (result,) = score_files(model, [clips.single], num_workers=0, progress=False)
    assert result.error.startswith("TransientError: ") and type(error).__name__ in result.error, result.error
