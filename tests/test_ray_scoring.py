"""Scoring on Ray (``score_files_ray``, ``dvlta-metric score --ray``) on one local Ray instance this module starts.

The Ray tests skip, saying so, only when the ``ray`` extra is not installed; an installed Ray whose pyarrow cannot
be imported is a failure, not a skip. The resource plan is a pure function and is tested without Ray.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from video_files import Clips, make_clips, write_clip

import dvlta_metric
from dvlta_metric._parquet_results import LOCK_NAME, TEMP_SUFFIX, ParquetResults
from dvlta_metric._results import EXIT_WRITE_ERROR, OutputWriteError
from dvlta_metric.cli import main
from dvlta_metric.ray_scoring import GPU_BATCH_SIZE, ResourcePlan, plan_resources, score_files_ray

TINY = {"model": "dvlta-vqa-tiny", "create_kwargs": {"pretrained": False}}
TINY_ARGS = ["--model", "dvlta-vqa-tiny", "--random-weights", "--device", "cpu", "--no-progress"]
REPO_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- the plan (no Ray)
def test_plan_on_a_gpu_cluster_gives_one_scorer_per_gpu_and_every_other_cpu_to_decoding() -> None:
    plan = plan_resources({"CPU": 64.0, "GPU": 8.0})
    assert plan == ResourcePlan(
        decoders=56, scorers=8, scorer_gpus=1, scorer_cpus=1, scorer_threads=1, batch_size=GPU_BATCH_SIZE
    )
    assert plan_resources({"CPU": 64.0, "GPU": 8.0}, scorers=2, decoders=10, batch_size=4).decoders == 10
    with pytest.raises(ValueError, match="more than the 8 GPUs"):
        plan_resources({"CPU": 64.0, "GPU": 8.0}, scorers=9)


def test_plan_on_a_cpu_cluster() -> None:
    assert plan_resources({"CPU": 2.0}) == ResourcePlan(1, 1, 0, 1, 2, 1)
    assert plan_resources({"CPU": 64.0}) == ResourcePlan(6, 7, 0, 8, 9, 1)
    with pytest.raises(TypeError, match="decoders must be an int"):
        plan_resources({"CPU": 4.0}, decoders=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        plan_resources({"CPU": 4.0}, batch_size=0)


def test_a_plan_the_cluster_cannot_hold_is_refused_instead_of_waiting_forever() -> None:
    with pytest.raises(ValueError, match="need 4 CPUs at once; the cluster has 2"):
        plan_resources({"CPU": 2.0}, scorers=3)
    with pytest.raises(ValueError, match="need 9 CPUs at once; the cluster has 8"):
        plan_resources({"CPU": 8.0, "GPU": 2.0}, decoders=7)
    assert plan_resources({"CPU": 8.0, "GPU": 2.0}, decoders=6).decoders == 6


# ---------------------------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """One local Ray instance (2 CPUs) for the whole module; its GCS address for subprocess drivers."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("the ray extra is not installed (pip install -e '.[dev,ray]'): the Ray tests cannot run")
    import pyarrow  # noqa: F401  an installed Ray with a broken pyarrow must fail, not skip
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    return make_clips(tmp_path_factory.mktemp("clips"))


@pytest.fixture(scope="module")
def tiny() -> dvlta_metric.DVLTAVQA:
    return dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")


def _rows(directory: Path) -> list[dict]:
    import pyarrow.parquet as pq

    rows = []
    for part in sorted(directory.glob("part-*.parquet")):
        rows += pq.read_table(part).to_pylist()
    return rows


def test_ray_scores_as_score_files_and_bad_files_are_error_rows(
    ray_address: str, clips: Clips, tiny: dvlta_metric.DVLTAVQA, tmp_path: Path
) -> None:
    files = [str(f) for f in [*clips.good(), *clips.bad()]]
    out = tmp_path / "scores.parquet"
    summary = score_files_ray(files, out, explain=True, batch_size=3, progress=False, **TINY)
    assert (summary.scored, summary.failed, summary.skipped) == (len(files), len(clips.bad()), 0)
    rows = {r["path"]: r for r in _rows(out)}
    assert Counter(r["path"] for r in _rows(out)) == Counter(files), "every file exactly once"
    expected = {r.path: r for r in tiny.score_files(files, progress=False, explain=True)}
    for path, want in expected.items():
        got = rows[path]
        assert got["model"] == "dvlta-vqa-tiny" and got["weights"] == "random (seed 0), fp32"
        assert got["realpath"] == os.path.realpath(path)
        if want.ok:
            assert got["error"] is None and got["score"] == pytest.approx(want.score, abs=1e-6)
            for branch, weight in (want.weights or {}).items():
                assert got[f"weight_{branch}"] == pytest.approx(weight, abs=1e-6)
        else:
            assert got["score"] is None and got["error"] == want.error, path
    # readers take the directory as it is; the lock file is hidden from them
    import pandas

    frame = pandas.read_parquet(out)
    assert len(frame) == len(files) and (out / LOCK_NAME).exists()
    assert list(frame.columns[:8]) == ["path", "score", "model", "weights", "error", "warning", "seconds", "realpath"]
    # a rerun has nothing left to do: it does not even start the pipeline
    again = score_files_ray(files, out, explain=True, progress=False, **TINY)
    assert (again.scored, again.skipped, again.failed_before, again.parts) == (0, len(files), len(clips.bad()), 0)
    with pytest.raises(dvlta_metric._results.RefusedOutputError, match="explain"):
        score_files_ray(files, out, explain=False, progress=False, **TINY)


DRIVER = """
import sys
from dvlta_metric.ray_scoring import score_files_ray
files = sys.argv[3:]
score_files_ray(files, sys.argv[2], model="dvlta-vqa-tiny", create_kwargs={"pretrained": False}, address=sys.argv[1],
                batch_size=1, decoders=1, scorers=1, flush_seconds=0, progress=False)
"""
"""A driver process that writes a part file per scored file (flush_seconds=0)."""


def test_a_killed_driver_loses_no_finished_result_and_the_rerun_scores_every_file_once(
    ray_address: str, clips: Clips, tmp_path: Path
) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    files = [str(shutil.copy(clips.landscape, folder / f"v{i:02d}.mp4")) for i in range(24)]
    files.append(str(clips.corrupt))
    out = tmp_path / "scores.parquet"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, ray_address, str(out), *files],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("part-*.parquet"))) < 3:
            assert driver.poll() is None, driver.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the driver wrote no part file in 120 s"
            time.sleep(0.05)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
    before = {r["path"]: r for r in _rows(out)}
    assert 3 <= len(before) < len(files), "the driver was killed in the middle of the run"
    summary = score_files_ray(files, out, progress=False, **TINY)
    rows = _rows(out)
    assert Counter(r["path"] for r in rows) == Counter(files), "every file exactly once"
    assert summary.scored == len(files) - len(before) and summary.skipped == len(before)
    after = {r["path"]: r for r in rows}
    assert all(after[p] == row for p, row in before.items()), "a finished result changed or was lost"
    assert not list(out.glob(f"*{TEMP_SUFFIX}")), "temporary parts of the killed run are removed"
    scores = {r["score"] for r in rows if r["error"] is None}
    assert len(scores) == 1, "copies of one video get one score, before and after the kill"


def test_a_dataset_of_paths_is_scored_once_per_file_and_resumed(
    ray_address: str, clips: Clips, tmp_path: Path, tiny: dvlta_metric.DVLTAVQA
) -> None:
    import ray

    out = tmp_path / "scores.parquet"
    score_files_ray([str(clips.landscape)], out, progress=False, **TINY)
    paths = [clips.landscape, clips.single, clips.single, clips.missing]  # one already scored, one named twice
    dataset = ray.data.from_items([{"path": str(p)} for p in paths])
    summary = score_files_ray(dataset, out, progress=False, **TINY)
    assert (summary.scored, summary.failed) == (2, 1)
    rows = _rows(out)
    assert Counter(r["path"] for r in rows) == Counter(str(p) for p in (clips.landscape, clips.single, clips.missing))
    single = next(r for r in rows if r["path"] == str(clips.single))
    assert single["score"] == pytest.approx(float(tiny(str(clips.single))), abs=1e-6)
    with pytest.raises(ValueError, match="'path' column"):
        score_files_ray(ray.data.from_items([{"file": "a.mp4"}]), tmp_path / "other.parquet", progress=False, **TINY)


def test_the_command_line_scores_on_ray(
    ray_address: str, clips: Clips, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.parquet"
    files = [str(clips.landscape), str(clips.odd), str(clips.text)]
    torch.manual_seed(0)
    code = main(["score", *files, "--ray", ray_address, "--output", str(out), "--batch-size", "2", *TINY_ARGS])
    err = capsys.readouterr().err
    assert code == 1, err  # one bad file
    assert f"failed: {clips.text}" in err and "scored on Ray" in err and "Traceback" not in err
    rows = _rows(out)
    assert Counter(r["path"] for r in rows) == Counter(files)
    assert all(math.isfinite(r["score"]) for r in rows if r["path"] != str(clips.text))


def test_other_weights_on_ray_are_refused_before_ray_starts(
    clips: Clips, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "first.parquet"
    assert main(["score", str(clips.landscape), "--output", str(out), *TINY_ARGS]) == 0  # without Ray
    capsys.readouterr()

    def no_ray(*args: object, **kwargs: object) -> int:
        raise AssertionError("the run should be refused before Ray starts")

    monkeypatch.setattr("dvlta_metric.cli.run_ray", no_ray)
    argv = ["score", str(clips.odd), "--ray", "--output", str(out), *TINY_ARGS, "--seed", "3"]
    assert main(argv) == 2
    assert (
        "holds scores made with weights 'random (seed 0), fp32', not 'random (seed 3), fp32'" in capsys.readouterr().err
    )


def test_a_write_error_on_ray_exits_74_as_without_ray(
    ray_address: str, clips: Clips, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(self: ParquetResults) -> None:
        raise OutputWriteError(f"cannot write a part file into {self.path}: [Errno 28] No space left on device")

    monkeypatch.setattr(ParquetResults, "flush", full_disk)
    out = tmp_path / "full.parquet"
    code = main(["score", str(clips.landscape), "--ray", ray_address, "--output", str(out), *TINY_ARGS])
    err = capsys.readouterr().err
    assert code == EXIT_WRITE_ERROR == 74, err
    assert "No space left on device" in err and "run the same command again to resume" in err


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--output", "{csv}"], "--output DIR.parquet"),
        ([], "--output DIR.parquet"),
        (["--output", "{pq}", "--timeline", "2", "--timeline-out", "{tl}"], "--timeline is not available with --ray"),
        (["--output", "{pq}", "--timeline-plot"], "--timeline is not available with --ray"),
        (["--output", "{pq}", "--device", "cuda:7"], "--device cuda:7 is not used with --ray"),
        (["--output", "{pq}", "--workers", "9"], "with --ray use --ray-decoders"),
        (["--output", "{pq}", "--views", "2"], "--views and --scale mos are not available with --ray"),
    ],
)
def test_ray_usage_errors_exit_2_before_ray_starts(
    clips: Clips, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], words: str
) -> None:
    names = {"csv": tmp_path / "s.csv", "pq": tmp_path / "s.parquet", "tl": tmp_path / "tl"}
    argv = ["score", str(clips.landscape), "--ray", *TINY_ARGS, *[a.format(**names) for a in extra]]  # extra last
    assert main(argv) == 2
    assert words in capsys.readouterr().err
    assert not names["pq"].exists()


def test_ray_sizes_without_ray_are_refused(clips: Clips, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", str(clips.landscape), "--ray-decoders", "4", *TINY_ARGS]) == 2
    assert "--ray-decoders size a --ray run" in capsys.readouterr().err


def test_stdin_cannot_be_scored_on_ray(clips: Clips, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = write_clip(tmp_path / "x.mp4", frames=4)
    argv = ["score", str(video), "-", "--ray", "--output", str(tmp_path / "s.parquet"), *TINY_ARGS]
    assert main(argv) == 2
    assert "standard input (-) and raw .yuv files are scored without --ray" in capsys.readouterr().err


def test_the_benchmark_script_writes_its_report_and_the_docs_render_it(ray_address: str, tmp_path: Path) -> None:
    out = tmp_path / "ray_scaling.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    args = ["--model", "dvlta-vqa-tiny", "--files", "3", "--resolution", "160x96", "--seconds", "1"]
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "ray_scaling.py"), *args, "--address", ray_address,
         "--output", str(out)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    (run,) = report["ray_runs"]
    assert report["score_files"]["files_per_s"] > 0 and run["files_per_s"] > 0 and run["max_score_diff"] < 1e-6
    sys.path.insert(0, str(REPO_ROOT / "docs"))
    try:
        import gen_benchmarks
    finally:
        sys.path.pop(0)
    page = "\n".join(gen_benchmarks._ray_scaling_section("cpu_ray_scaling", report))
    assert "| `score_files` |" in page and "| Ray |" in page
