"""Per-segment scores: windows cover the video, each scores as its stretch alone, pooling, files, errors."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from video_files import write_clip

import dvlta_metric
from dvlta_metric import DVLTAVQA
from dvlta_metric.timeline import POOLED_STATISTICS, Timeline, pool_scores, window_bounds, window_length

VideoFactory = Callable[..., torch.Tensor]


@pytest.mark.parametrize(
    ("num_frames", "window", "expected"),
    [
        (10, 5, [(0, 5), (5, 10)]),
        (11, 5, [(0, 5), (5, 11)]),  # the remainder joins the last window
        (14, 5, [(0, 5), (5, 14)]),
        (4, 5, [(0, 4)]),  # shorter than one window: one window
        (1, 1, [(0, 1)]),
        (3, 1, [(0, 1), (1, 2), (2, 3)]),
    ],
)
def test_window_bounds_table(num_frames: int, window: int, expected: list[tuple[int, int]]) -> None:
    assert window_bounds(num_frames, window) == expected


@pytest.mark.parametrize("num_frames", [1, 7, 64, 65, 127, 300])
@pytest.mark.parametrize("window", [1, 8, 64, 100])
def test_windows_cover_the_video_without_gaps_or_overlaps(num_frames: int, window: int) -> None:
    bounds = window_bounds(num_frames, window)
    assert bounds[0][0] == 0 and bounds[-1][1] == num_frames
    assert all(prev_end == start for (_, prev_end), (start, _) in zip(bounds, bounds[1:]))
    assert all(end > start for start, end in bounds)
    assert all(end - start >= min(window, num_frames) for start, end in bounds)
    assert all(end - start < 2 * window or len(bounds) == 1 for start, end in bounds)


def test_window_length_checks() -> None:
    assert window_length(window_s=2.0, window_frames=None, fps=30.0) == 60
    assert window_length(window_s=0.001, window_frames=None, fps=30.0) == 1
    assert window_length(window_s=None, window_frames=7, fps=None) == 7
    with pytest.raises(ValueError, match="window_s .* or window_frames"):
        window_length(window_s=None, window_frames=None, fps=30.0)
    with pytest.raises(ValueError, match="give the window length once"):
        window_length(window_s=1.0, window_frames=8, fps=30.0)
    with pytest.raises(ValueError, match="frame rate"):
        window_length(window_s=1.0, window_frames=None, fps=None)
    with pytest.raises(ValueError, match="positive"):
        window_length(window_s=-1.0, window_frames=None, fps=30.0)
    with pytest.raises(ValueError, match="at least 1"):
        window_length(window_s=None, window_frames=0, fps=None)
    with pytest.raises(TypeError, match="whole number"):
        window_length(window_s=None, window_frames=2.5, fps=None)  # type: ignore[arg-type]


def test_pool_scores_matches_numpy() -> None:
    scores = [0.2, 0.9, 0.5, 0.7, 0.4]
    pooled = pool_scores(torch.tensor(scores, dtype=torch.float64))
    assert list(pooled) == list(POOLED_STATISTICS)
    values = np.array(scores)
    assert pooled["mean"] == pytest.approx(values.mean(), abs=1e-12)
    assert pooled["harmonic_mean"] == pytest.approx(len(values) / (1 / values).sum(), abs=1e-12)
    assert pooled["min"] == pytest.approx(0.2, abs=1e-7) and pooled["max"] == pytest.approx(0.9, abs=1e-7)
    for key, q in (("p5", 5), ("p25", 25), ("median", 50), ("p75", 75), ("p95", 95)):
        assert pooled[key] == pytest.approx(np.percentile(values, q), abs=1e-12), key
    one = pool_scores([0.5])
    assert all(v == pytest.approx(0.5) for v in one.values())
    with pytest.raises(ValueError, match="at least one score"):
        pool_scores([])
    with pytest.raises(ValueError, match="finite numbers above 0"):
        pool_scores([0.5, math.nan])
    with pytest.raises(ValueError, match="finite numbers above 0"):
        pool_scores([0.5, 0.0])


def test_timeline_windows_cover_the_video(tiny_model: DVLTAVQA, video_factory: VideoFactory) -> None:
    video = video_factory(45, 48, 64)
    tl = tiny_model.timeline(video, window_frames=10, fps=15.0)
    assert isinstance(tl, Timeline) and len(tl) == 4
    assert tl.starts.tolist() == [0, 10, 20, 30] and tl.ends.tolist() == [10, 20, 30, 45]
    assert torch.equal(tl.starts[1:], tl.ends[:-1])
    assert tl.start_times is not None and tl.start_times.tolist() == pytest.approx([0.0, 10 / 15, 20 / 15, 2.0])
    assert tl.end_times is not None and tl.end_times[-1].item() == pytest.approx(3.0)
    assert tl.scores.shape == (4,) and bool(((tl.scores > 0) & (tl.scores < 1)).all())
    assert tl.num_frames == 45 and tl.window == 10 and tl.fps == 15.0
    no_fps = tiny_model.timeline(video, window_frames=10)
    assert no_fps.start_times is None and torch.equal(no_fps.scores, tl.scores)
    assert torch.equal(tiny_model.timeline(video, window_s=10 / 15, fps=15.0).scores, tl.scores)


def test_a_window_inside_one_of_two_joined_videos_scores_as_that_stretch_alone(
    tiny_model: DVLTAVQA, video_factory: VideoFactory
) -> None:
    first = video_factory(36, 48, 64, seed=1)
    second = 1.0 - video_factory(40, 48, 64, seed=2)  # a different video: other content, other motion
    joined = torch.cat([first, second])
    tl = tiny_model.timeline(joined, window_frames=12, batch_size=1)
    bounds = list(zip(tl.starts.tolist(), tl.ends.tolist()))
    assert bounds == [(0, 12), (12, 24), (24, 36), (36, 48), (48, 60), (60, 76)]
    for i, (start, end) in enumerate(bounds):
        stretch = first[start:end] if end <= 36 else second[start - 36 : end - 36]
        assert torch.equal(tl.scores[i], tiny_model(stretch)), (start, end)
    # batched windows: the same scores up to float rounding
    batched = tiny_model.timeline(joined, window_frames=12, batch_size=4)
    assert torch.allclose(batched.scores, tl.scores, atol=1e-6, rtol=0)
    assert not torch.allclose(tl.scores[:3].mean(), tl.scores[3:].mean(), atol=1e-4)  # the two halves differ


def test_file_timeline_equals_the_decoded_frames(tiny_model: DVLTAVQA, tmp_path: Path) -> None:
    path = write_clip(tmp_path / "clip.mp4", frames=50, width=96, height=64, fps=24)
    everything = dvlta_metric.read_video(path)
    from_file = tiny_model.timeline(path, window_s=0.5)
    assert from_file.window == 12 and from_file.fps == pytest.approx(24.0) and from_file.path == str(path)
    assert from_file.ends.tolist() == [12, 24, 36, 50]
    from_tensor = tiny_model.timeline(everything.frames, window_frames=12, fps=24.0)
    assert torch.equal(from_file.scores, from_tensor.scores)
    assert torch.equal(tiny_model.timeline(everything, window_frames=12).scores, from_file.scores)
    needed = tiny_model.timeline_frames(80, 40)  # each window's own needed frames, offset by its start
    assert needed == sorted(set(tiny_model.needed_frames(40)) | {40 + i for i in tiny_model.needed_frames(40)})
    assert len(needed) < 80


def test_timeline_log_has_the_vmaf_shape(tiny_model: DVLTAVQA, video_factory: VideoFactory) -> None:
    tl = tiny_model.timeline(video_factory(30, 48, 64), window_frames=10, fps=10.0)
    log = tl.to_log(version="x")
    assert log["version"] == "x" and log["window_frames"] == 10
    segments = log["segments"]
    assert isinstance(segments, list) and [s["segmentNum"] for s in segments] == [0, 1, 2]
    assert segments[1] == {
        "segmentNum": 1,
        "start_frame": 10,
        "end_frame": 20,
        "start_time": 1.0,
        "end_time": 2.0,
        "metrics": {"dvlta": pytest.approx(float(tl.scores[1]))},
    }
    assert log["pooled_metrics"] == {"dvlta": tl.pooled()}
    assert log["aggregate"] == {"dvlta": tl.pooled()["mean"]}


def test_timeline_refuses_what_it_cannot_score(
    tiny_model: DVLTAVQA, video_factory: VideoFactory, tmp_path: Path
) -> None:
    video = video_factory(20, 48, 64)
    with pytest.raises(ValueError, match="one video"):
        tiny_model.timeline(video[None], window_frames=5)
    with pytest.raises(ValueError, match="frame rate"):
        tiny_model.timeline(video, window_s=1.0)
    with pytest.raises(ValueError, match="give the window length once"):
        tiny_model.timeline(video)
    with pytest.raises(ValueError, match="batch_size"):
        tiny_model.timeline(video, window_frames=5, batch_size=0)
    with pytest.raises(TypeError, match="one video"):
        tiny_model.timeline([video], window_frames=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="float values must lie in"):
        tiny_model.timeline(video * 2, window_frames=5)
    path = write_clip(tmp_path / "clip.mp4", frames=30, width=96, height=64)
    with pytest.raises(ValueError, match="pass the file's path"):
        tiny_model.timeline(tiny_model.read(path), window_frames=5)
    with pytest.raises(FileNotFoundError):
        tiny_model.timeline(tmp_path / "missing.mp4", window_frames=5)


def test_timeline_refuses_training_mode(video_factory: VideoFactory) -> None:
    torch.manual_seed(0)
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu").train()
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        model.timeline(video_factory(20, 48, 64), window_frames=5)


# ---------------------------------------------------------------------------------------------- command line
def _cli(*args: str) -> int:
    from dvlta_metric.cli import main

    return main(["score", "--model", "dvlta-vqa-tiny", "--random-weights", "--no-progress", *args])


def test_cli_writes_one_vmaf_style_log_per_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    a = write_clip(tmp_path / "a.mp4", frames=30, width=96, height=64, fps=10)
    (tmp_path / "sub").mkdir()
    b = write_clip(tmp_path / "sub" / "a.mp4", frames=25, width=96, height=64, fps=10)  # the same file name
    out = tmp_path / "logs"
    assert _cli(str(a), str(b), "--timeline", "1", "--timeline-out", str(out)) == 0
    logs = sorted(out.iterdir())
    assert len(logs) == 2 and all(p.name.startswith("a.mp4.") and p.name.endswith(".timeline.json") for p in logs)
    log = json.loads(logs[0].read_text())
    assert log["format"] == "dvlta-metric timeline log" and log["model"] == "dvlta-vqa-tiny"
    assert log["window_frames"] == 10 and log["segments"][0]["start_time"] == 0.0
    assert set(log["pooled_metrics"]["dvlta"]) >= {"mean", "harmonic_mean", "min", "p5", "p95"}
    torch.manual_seed(0)
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", seed=0)
    for p in logs:
        log = json.loads(p.read_text())
        expected = model.timeline(log["path"], window_s=1.0)
        got = [s["metrics"]["dvlta"] for s in log["segments"]]
        assert got == pytest.approx(expected.scores.tolist(), abs=1e-6)
    # a second run replaces its own logs
    assert _cli(str(a), "--timeline", "1", "--timeline-out", str(out)) == 0


def test_cli_never_replaces_a_file_it_did_not_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_clip(tmp_path / "a.mp4", frames=20, width=96, height=64)
    out = tmp_path / "logs"
    out.mkdir()
    theirs = out / "a.mp4.timeline.json"
    theirs.write_text('{"frames": []}')
    assert _cli(str(a), "--timeline", "1", "--timeline-out", str(out)) == 2
    assert "was not written by dvlta-metric" in capsys.readouterr().err
    assert theirs.read_text() == '{"frames": []}'


def test_cli_timeline_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_clip(tmp_path / "a.mp4", frames=20, width=96, height=64)
    assert _cli(str(a), "--timeline", "1") == 2
    assert "--timeline-out DIR" in capsys.readouterr().err
    assert _cli(str(a), "--timeline-out", str(tmp_path)) == 2
    assert _cli(str(a), "--timeline", "0", "--timeline-out", str(tmp_path)) == 2
    assert _cli(str(a), "--timeline", "inf", "--timeline-out", str(tmp_path)) == 2
    assert _cli(str(a), "--timeline", "1", "--timeline-out", str(a)) == 2
    assert "is a file" in capsys.readouterr().err


def test_cli_plot_needs_matplotlib_and_draws_a_png(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_clip(tmp_path / "a$b.mp4", frames=20, width=96, height=64)
    out = tmp_path / "logs"
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # import matplotlib fails
    assert _cli(str(a), "--timeline", "1", "--timeline-out", str(out), "--timeline-plot") == 2
    assert "dvlta-metric[dev]" in capsys.readouterr().err
    monkeypatch.undo()
    pytest.importorskip("matplotlib")
    assert _cli(str(a), "--timeline", "1", "--timeline-out", str(out), "--timeline-plot") == 0
    png = out / "a$b.mp4.timeline.png"
    assert png.read_bytes().startswith(b"\x89PNG")
    assert _cli(str(a), "--timeline", "1", "--timeline-out", str(out), "--timeline-plot") == 0  # ours: replaced
    png.write_bytes(b"\x89PNG someone else's picture")
    assert _cli(str(a), "--timeline", "1", "--timeline-out", str(out), "--timeline-plot") == 2


def test_stability_benchmark_runs(tmp_path: Path) -> None:
    import importlib.util
    import json

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "timeline_stability.py"
    spec = importlib.util.spec_from_file_location("timeline_stability", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    clips = [write_clip(tmp_path / f"{k}.mp4", frames=32, width=96, height=64, fps=16) for k in range(2)]
    out = tmp_path / "result.json"
    assert module.main(["--videos", *map(str, clips), "--windows", "8,16", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["by_window_frames"]) == {"8", "16"}
    assert result["no_repeated_frames_from"]["dvlta-vqa"] == 64
