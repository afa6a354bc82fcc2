"""The ``dvlta-metric`` command: list, score in every format, errors, exit status, resuming."""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from cli_run import run
from video_files import Clips, make_clips

import dvlta_metric._results
import dvlta_metric.batch
from dvlta_metric.batch import FileResult
from dvlta_metric.cli import EXIT_WRITE_ERROR, known_weights_label, main, terminal_text

TINY = ["--model", "dvlta-vqa-tiny", "--random-weights", "--device", "cpu", "--no-progress"]
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    return make_clips(tmp_path_factory.mktemp("clips"))


# ---------------------------------------------------------------------------------------------- list
def test_list_table(capsys) -> None:
    code, out, _ = run(capsys, "list")
    assert code == 0
    assert out.splitlines()[0].split() == ["NAME", "WEIGHTS", "DESCRIPTION"]
    assert "dvlta-vqa-tiny" in out and "random weights only" in out


def test_list_json(capsys) -> None:
    code, out, _ = run(capsys, "list", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and {"name", "description", "weights"} <= set(rows[0])
    assert "dvlta-vqa" in [r["name"] for r in rows]


# ---------------------------------------------------------------------------------------------- formats
def test_score_table(capsys, clips: Clips) -> None:
    code, out, err = run(capsys, "score", clips.landscape, clips.portrait, *TINY)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["PATH", "SCORE", "MODEL"]
    assert len(lines) == 3 and str(clips.landscape) in lines[1] and "dvlta-vqa-tiny" in lines[1]
    score = float(lines[1].split()[1])
    assert 0 < score < 1


def test_score_json_explain(capsys, clips: Clips) -> None:
    code, out, _ = run(capsys, "score", clips.landscape, clips.missing, "--format", "json", "--explain", *TINY)
    rows = json.loads(out)
    assert code == 1
    assert [r["path"] for r in rows] == [str(clips.landscape), str(clips.missing)]
    assert rows[0]["model"] == "dvlta-vqa-tiny" and 0 < rows[0]["score"] < 1 and rows[0]["error"] is None
    assert {"weight_bvfe", "weight_tcm", "weight_vbtc"} <= set(rows[0])
    assert rows[1]["score"] is None and rows[1]["error"].startswith("FileNotFoundError")


def test_score_csv_stdout(capsys, clips: Clips) -> None:
    code, out, _ = run(capsys, "score", clips.single, clips.text, "--format", "csv", *TINY)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 1
    assert [r["path"] for r in rows] == [str(clips.single), str(clips.text)]
    assert {"path", "score", "model", "error"} <= set(rows[0])
    assert 0 < float(rows[0]["score"]) < 1 and rows[0]["error"] == ""
    assert rows[1]["score"] == "" and "not a video" in rows[1]["error"]


def test_directory_is_searched(capsys, tmp_path: Path, clips: Clips) -> None:
    (tmp_path / "sub").mkdir()
    for src, dst in [(clips.single, "b.mp4"), (clips.odd, "sub/a.mp4"), (clips.mkv, "a.mkv")]:
        (tmp_path / dst).write_bytes(src.read_bytes())
    (tmp_path / "readme.txt").write_text("not scored")
    code, out, _ = run(capsys, "score", tmp_path, "--format", "json", *TINY)
    assert code == 0
    assert [Path(r["path"]).relative_to(tmp_path).as_posix() for r in json.loads(out)] == [
        "a.mkv",
        "b.mp4",
        "sub/a.mp4",
    ]


# ---------------------------------------------------------------------------------------------- errors
def test_bad_files_named_on_stderr(capsys, clips: Clips) -> None:
    files = [clips.landscape, *clips.bad(), clips.single]
    code, out, err = run(capsys, "score", *files, "--format", "json", *TINY)
    rows = json.loads(out)
    assert code == 1
    assert [r["path"] for r in rows] == [str(f) for f in files]
    assert rows[0]["error"] is None and rows[-1]["error"] is None
    for bad in clips.bad():
        line = next(line for line in err.splitlines() if str(bad) in line)
        assert "failed" in line and ("Error:" in line)
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["score", "{landscape}", "--model", "no-such-model", "--random-weights"], "unknown model"),
        (["score", "{empty_dir}", *TINY], "no video files"),
        (["score", "{landscape}", "--model", "dvlta-vqa-tiny", "--random-weights", "--device", "gpu7"], "device"),
        (["score", "{landscape}", "--model", "dvlta-vqa", "--device", "cpu"], "dvlta-vqa"),  # no weights
        (["score", "{landscape}", "--model", "dvlta-vqa-konvid", "--device", "cpu"], "command line: --random-weights"),
        (["score", "{landscape}", "--model", "./weights", *TINY[2:]], "looks like a path"),
        (["score", "{landscape}", "--model", "hf-hub:org/a--b", *TINY[2:]], "invalid Hub repository id"),
        (["score", "{landscape}", *TINY, "--seed", "x"], "expected a whole number, got 'x'"),
        (["score", "{landscape}", *TINY, "--batch-size", "0"], "--batch-size"),
        (["score", "{landscape}", *TINY, "--format", "table", "--output", "{out}"], "table"),
        (["score", "{landscape}", *TINY, "--batch-size", "abc"], "expected a whole number, got 'abc'"),
        (["score", "{landscape}", *TINY, "--output", "{empty_dir}"], "is a directory: give a file name"),
        (["score", "{landscape}", *TINY, "--output", "{out}/under/a/file.csv"], "is a file, not a directory"),
        (["score", "{landscape}", *TINY, "--output", "{foreign}"], "lacks ['score', 'model', 'error']"),
        (["score", "{landscape}", *TINY, "--output", "{jsonl}", "--format", "csv"], "drop --format csv"),
        (["score", *TINY], "PATH"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_usage_errors_exit_2(capsys, tmp_path: Path, clips: Clips, argv: list[str], words: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "out.csv").write_text("path,score,model,error\n")
    (tmp_path / "foreign.csv").write_text("path,quality\nx.mp4,3\n")
    (tmp_path / "old.jsonl").write_text('{"path": "x.mp4", "score": 0.5}\n')
    subs = {
        "landscape": clips.landscape,
        "empty_dir": tmp_path / "empty",
        "out": tmp_path / "out.csv",
        "foreign": tmp_path / "foreign.csv",
        "jsonl": tmp_path / "old.jsonl",
    }
    code, out, err = run(capsys, *[a.format(**subs) for a in argv])
    assert code == 2
    assert words in err and "Traceback" not in err
    assert out == ""


# ---------------------------------------------------------------------------------------------- resuming
def _rows(path: Path, fmt: str) -> list[dict]:
    with path.open(newline="") as fh:
        if fmt == "csv":
            return list(csv.DictReader(fh))
        return [json.loads(line) for line in fh]


@pytest.mark.parametrize("suffix, fmt", [(".csv", "csv"), (".jsonl", "json")])
def test_resume_after_partial_output(capsys, tmp_path: Path, clips: Clips, suffix: str, fmt: str) -> None:
    files = [clips.landscape, clips.single, clips.odd, clips.missing]
    out = tmp_path / f"scores{suffix}"
    code, stdout, _ = run(capsys, "score", *files[:2], "--output", out, *TINY)
    assert code == 0 and stdout == ""
    first = _rows(out, fmt)
    assert [r["path"] for r in first] == [str(f) for f in files[:2]]
    # an interrupted writer left half a line behind
    with out.open("a") as fh:
        fh.write(f"{files[2]},0.5" if fmt == "csv" else '{"path": "' + str(files[2]))

    code, _, err = run(capsys, "score", *files, "--output", out, *TINY)
    assert code == 1  # missing.mp4 failed
    rows = _rows(out, fmt)
    assert Counter(r["path"] for r in rows) == Counter(str(f) for f in files), "each file exactly once"
    assert rows[:2] == first, "earlier results are kept as they were"
    assert "2 of 4 files are already in" in err

    # everything is done: nothing is scored again, the earlier failure still sets the status
    code, _, _ = run(capsys, "score", *files, "--output", out, *TINY)
    assert code == 1 and len(_rows(out, fmt)) == 4


def test_interrupted_run_resumes(capsys, tmp_path: Path, clips: Clips, monkeypatch) -> None:
    files = [clips.landscape, clips.single, clips.odd, clips.vfr, clips.portrait]
    out = tmp_path / "scores.csv"
    real = dvlta_metric.batch.score_files

    def interrupted(*args, **kwargs):
        for i, result in enumerate(real(*args, **kwargs)):
            if i == 2:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(dvlta_metric.model, "score_files", interrupted)  # what model.score_files calls
    code, _, err = run(capsys, "score", *files, "--output", out, *TINY)
    assert code == 130 and "interrupted" in err and "resume" in err
    assert [r["path"] for r in _rows(out, "csv")] == [str(f) for f in files[:2]]

    monkeypatch.setattr(dvlta_metric.model, "score_files", real)
    code, _, _ = run(capsys, "score", *files, "--output", out, "--batch-size", "2", *TINY)
    assert code == 0
    rows = _rows(out, "csv")
    assert sorted(r["path"] for r in rows) == sorted(str(f) for f in files) and len(rows) == len(files)
    assert all(r["error"] == "" and 0 < float(r["score"]) < 1 for r in rows)


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="needs a file system that allows non-UTF-8 names")
@pytest.mark.parametrize("suffix, fmt", [(".csv", "csv"), (".jsonl", "json")])
def test_file_names_that_are_not_utf8_get_their_row_and_resume(
    capsys, tmp_path: Path, clips: Clips, suffix: str, fmt: str
) -> None:
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.mp4"))  # Latin-1 name: a surrogate escape in Python
    odd.write_bytes(clips.single.read_bytes())
    out = tmp_path / f"scores{suffix}"
    code, _, _ = run(capsys, "score", odd, clips.landscape, "--output", out, *TINY)
    assert code == 0
    with out.open(newline="", errors="surrogateescape") as fh:
        rows = list(csv.DictReader(fh)) if fmt == "csv" else [json.loads(line) for line in fh]
    assert sorted(r["path"] for r in rows) == sorted([str(odd), str(clips.landscape)])
    assert all(0 < float(r["score"]) < 1 for r in rows)
    code, _, err = run(capsys, "score", odd, clips.landscape, "--output", out, *TINY)
    assert code == 0 and "2 of 2 files are already in" in err


def test_blank_output_file_is_written_anew(capsys, tmp_path: Path, clips: Clips) -> None:
    out = tmp_path / "scores.csv"
    out.write_text("\n\n")
    code, _, _ = run(capsys, "score", clips.single, "--output", out, *TINY)
    assert code == 0
    rows = _rows(out, "csv")
    assert [r["path"] for r in rows] == [str(clips.single)] and 0 < float(rows[0]["score"]) < 1


def test_output_of_another_model_is_refused(capsys, tmp_path: Path, clips: Clips) -> None:
    out = tmp_path / "scores.csv"
    out.write_text(f"path,score,model,error\n{clips.single},0.5,some-other-model,\n")
    code, _, err = run(capsys, "score", clips.single, clips.landscape, "--output", out, *TINY)
    assert code == 2 and "some-other-model" in err


# ---------------------------------------------------------------------------------------------- python -m
def test_python_m(tmp_path: Path, clips: Clips) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "dvlta_metric", "score", str(clips.single), str(clips.empty), "--format", "json", *TINY],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows[0]["error"] is None and "empty" in rows[1]["error"]
    assert str(clips.empty) in proc.stderr and "Traceback" not in proc.stderr


def test_compile_and_precision_flags_reach_the_model(capsys, clips: Clips, monkeypatch) -> None:
    seen: list[str] = []

    def record(self: dvlta_metric.DVLTAVQA, **kwargs: object) -> dvlta_metric.DVLTAVQA:
        # compiling itself is tested in test_compile.py; here only the wiring
        seen.append((self.precision, self.branches["bvfe"].encoder.attention_kernel))
        return self

    monkeypatch.setattr(dvlta_metric.DVLTAVQA, "compile_branches", record)
    flags = ["--compile", "--precision", "bf16", "--attention-kernel", "flex", "--format", "json"]
    code, out, err = run(capsys, "score", clips.landscape, *flags, *TINY)
    assert code == 0, err
    assert seen == [("bf16", "flex")]
    assert 0 < json.loads(out)[0]["score"] < 1


def test_random_weights_are_the_same_on_every_run(capsys, clips: Clips) -> None:
    first = run(capsys, "score", clips.landscape, "--format", "json", *TINY)
    torch.manual_seed(123)  # whatever the global generator holds before the run
    second = run(capsys, "score", clips.landscape, "--format", "json", *TINY)
    assert first[0] == second[0] == 0
    assert json.loads(first[1])[0]["score"] == json.loads(second[1])[0]["score"]
    # the same weights as create(name, pretrained=False) in Python; --seed draws others
    in_python = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    assert json.loads(first[1])[0]["score"] == pytest.approx(float(in_python(str(clips.landscape))), abs=1e-6)
    code, out, _ = run(capsys, "score", clips.landscape, "--format", "json", *TINY, "--seed", "1")
    assert code == 0
    (row,) = json.loads(out)
    assert row["weights"] == "random (seed 1), fp32" and row["score"] != json.loads(first[1])[0]["score"]


def test_the_weights_label_known_before_building_is_the_one_the_model_gets(tmp_path: Path) -> None:
    """Before the model is built, only labels that cannot change are known; Hub weights wait for the download."""
    assert known_weights_label("dvlta-vqa-konvid", random_weights=False, precision="fp16") is None
    assert known_weights_label("hf-hub:org/x@v1", random_weights=False, precision="fp32") is None
    random = known_weights_label("dvlta-vqa-tiny", random_weights=True, precision="bf16", seed=3)
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", seed=3, precision="bf16")
    assert random == "random (seed 3), bf16" == dvlta_metric._factory.weights_label(model)
    model.save_pretrained(tmp_path / "m")
    local = known_weights_label(f"local-dir:{tmp_path / 'm'}", random_weights=False, precision="fp32")
    loaded = dvlta_metric.create(f"local-dir:{tmp_path / 'm'}", device="cpu")
    assert local is not None and local == dvlta_metric._factory.weights_label(loaded)


def test_weights_are_recorded_and_a_resume_with_other_weights_is_refused(
    capsys, tmp_path: Path, clips: Clips, tiny_model
) -> None:
    out = tmp_path / "scores.csv"
    code, _, _ = run(capsys, "score", clips.single, "--output", out, *TINY)
    assert code == 0
    (row,) = _rows(out, "csv")
    assert row["weights"] == "random (seed 0), fp32" and row["model"] == "dvlta-vqa-tiny"
    folder = tmp_path / "trained"
    tiny_model.save_pretrained(folder)  # the same configuration name, other weights
    local = ["--model", f"local-dir:{folder}", "--device", "cpu", "--no-progress"]
    code, _, err = run(capsys, "score", clips.single, clips.landscape, "--output", out, *local)
    assert code == 2 and "holds scores made with weights 'random (seed 0), fp32'" in err
    code, _, err = run(capsys, "score", clips.single, clips.landscape, "--output", out, *TINY, "--explain")
    assert code == 2 and "--explain adds the columns" in err
    code, _, _ = run(capsys, "score", clips.landscape, "--output", tmp_path / "local.csv", *local)
    assert code == 0
    (row,) = _rows(tmp_path / "local.csv", "csv")
    assert row["weights"].startswith(f"local-dir:{folder.resolve()} (sha256 ") and row["weights"].endswith(", fp32")


def test_default_model_has_weights_and_a_closed_pipe_is_not_an_error(monkeypatch) -> None:
    from dvlta_metric.cli import build_parser

    assert build_parser().parse_args(["score", "x.mp4"]).model == "dvlta-vqa-zeroshot"

    class ClosedPipe(io.StringIO):  # what stdout does once `| head` has exited
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["list", "--format", "json"]) == 0


def test_an_interrupt_while_loading_the_model_exits_130(capsys, monkeypatch, clips: Clips) -> None:
    import dvlta_metric.cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dvlta_metric.cli, "create", interrupted)
    code, _, err = run(capsys, "score", clips.single, *TINY)
    assert code == 130 and "interrupted" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- the results file
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


PAUSED_RUN = """
import pathlib, sys, time
import dvlta_metric.batch, dvlta_metric.model
from dvlta_metric.cli import main
real = dvlta_metric.batch.score_files
ready, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
def paused(*args, **kwargs):
    for i, result in enumerate(real(*args, **kwargs)):
        if i == 1:  # one row written, the lock held: wait for the test
            ready.touch()
            while not go.exists():
                time.sleep(0.05)
        yield result
dvlta_metric.model.score_files = paused
sys.exit(main(sys.argv[3:]))
"""
"""A real ``dvlta-metric score`` process that stops after its first row until the file ``go`` exists."""


def test_a_second_run_on_the_same_output_exits_2_and_the_first_writes_every_file_once(
    tmp_path: Path, clips: Clips
) -> None:
    files = [str(f) for f in (clips.landscape, clips.single, clips.odd, clips.portrait)]
    out = tmp_path / "scores.csv"
    ready, go = tmp_path / "ready", tmp_path / "go"
    argv = ["score", *files, "--output", str(out), *TINY]
    first = subprocess.Popen(
        [sys.executable, "-c", PAUSED_RUN, str(ready), str(go), *argv],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not ready.exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never started scoring"
            time.sleep(0.05)
        before = _sha256(out)
        second = subprocess.run(
            [sys.executable, "-m", "dvlta_metric", *argv],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert second.returncode == 2, second.stderr
        assert f"--output {out} is locked by another dvlta-metric run" in second.stderr
        assert "Traceback" not in second.stderr
        assert _sha256(out) == before, "the second run wrote to the file"
    finally:
        go.touch()
        _, err = first.communicate(timeout=180)
    assert first.returncode == 0, err
    rows = _rows(out, "csv")
    assert Counter(r["path"] for r in rows) == Counter(files), "every file exactly once, one header"


def test_the_lock_is_released_after_a_run_and_a_created_file_left_empty_is_removed(
    capsys, tmp_path: Path, clips: Clips
) -> None:
    out = tmp_path / "new" / "scores.csv"
    code, _, err = run(capsys, "score", clips.single, "--output", out, "--model", "no-such-model", "--random-weights")
    assert code == 2 and not out.exists(), "a refused run leaves no empty file behind"
    code, _, _ = run(capsys, "score", clips.single, "--output", out, "--model", "dvlta-vqa", *TINY[3:])
    assert code == 2 and not out.exists(), "a model that cannot be created: no empty file either"
    for _ in range(2):  # the second run finds the lock free again
        code, _, err = run(capsys, "score", clips.single, "--output", out, *TINY)
        assert code == 0, err
    assert [r["path"] for r in _rows(out, "csv")] == [str(clips.single)]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names")
def test_resume_is_keyed_on_the_real_path(capsys, tmp_path: Path, clips: Clips, monkeypatch) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(clips.single.read_bytes())
    (tmp_path / "link").symlink_to(videos)
    (tmp_path / "elsewhere").mkdir()
    out = tmp_path / "scores.jsonl"
    monkeypatch.chdir(videos)
    code, _, _ = run(capsys, "score", "a.mp4", "--output", out, *TINY)
    assert code == 0
    monkeypatch.chdir(tmp_path / "elsewhere")
    for name in ["../videos/a.mp4", str(videos / "a.mp4"), str(tmp_path / "link" / "a.mp4"), "../link"]:
        code, _, err = run(capsys, "score", name, "--output", out, *TINY)
        assert code == 0 and "1 of 1 files are already in" in err, name
    (row,) = _rows(out, "json")
    assert row["path"] == "a.mp4", "the path is written as given"
    assert row["realpath"] == os.path.realpath(videos / "a.mp4")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a newline in a file name")
def test_repair_cuts_a_record_whose_quoted_path_holds_a_newline(capsys, tmp_path: Path, clips: Clips) -> None:
    files = [tmp_path / "two\nlines.mp4", tmp_path / "b.mp4", tmp_path / "new\nline.mp4"]
    for f in files:
        f.write_bytes(clips.single.read_bytes())
    out = tmp_path / "scores.csv"
    code, _, _ = run(capsys, "score", *files[:2], "--output", out, *TINY)
    assert code == 0
    first = _rows(out, "csv")
    assert [r["path"] for r in first] == [str(f) for f in files[:2]]
    with out.open("a") as fh:  # an interrupted writer stopped just after the newline inside a quoted path
        fh.write(f'"{tmp_path}/new\n')
    code, _, _ = run(capsys, "score", *files, "--output", out, *TINY)
    assert code == 0
    rows = _rows(out, "csv")
    assert Counter(r["path"] for r in rows) == Counter(str(f) for f in files) and rows[:2] == first
    # cut in the middle of the row, after the newline inside its quotes: the whole record goes
    data = out.read_bytes()
    out.write_bytes(data[: data.rindex(b"line.mp4") + 4])
    code, _, err = run(capsys, "score", *files, "--output", out, *TINY)
    assert code == 0 and "2 of 3 files are already in" in err
    assert Counter(r["path"] for r in _rows(out, "csv")) == Counter(str(f) for f in files)


@pytest.mark.parametrize("cut", [5, 20])
def test_a_header_cut_short_is_written_anew(capsys, tmp_path: Path, clips: Clips, cut: int) -> None:
    out = tmp_path / "scores.csv"
    out.write_text(",".join(dvlta_metric._results.BASE_COLUMNS)[:cut])
    code, _, err = run(capsys, "score", clips.single, "--output", out, *TINY)
    assert code == 0, err
    assert [r["path"] for r in _rows(out, "csv")] == [str(clips.single)]


def test_a_complete_output_still_refuses_another_model_or_other_weights(capsys, tmp_path: Path, clips: Clips) -> None:
    out = tmp_path / "scores.csv"
    code, _, _ = run(capsys, "score", clips.single, "--output", out, *TINY)
    assert code == 0
    before = _sha256(out)
    other_model = ["--model", "dvlta-vqa", *TINY[2:]]
    code, _, err = run(capsys, "score", clips.single, "--output", out, *other_model)
    assert code == 2 and "holds scores of model 'dvlta-vqa-tiny', not 'dvlta-vqa'" in err
    code, _, err = run(capsys, "score", clips.single, "--output", out, *TINY, "--seed", "1")
    assert code == 2 and "holds scores made with weights 'random (seed 0), fp32'" in err
    assert _sha256(out) == before


def test_a_write_error_keeps_the_rows_before_and_exits_74(capsys, tmp_path: Path, clips: Clips, monkeypatch) -> None:
    files = [clips.landscape, clips.single, clips.odd]
    out = tmp_path / "scores.csv"
    writes = []

    class FullDisk:  # the module's view of os: the third write (header, row, row) finds the disk full
        def __getattr__(self, name: str) -> object:
            return getattr(os, name)

        @staticmethod
        def write(fd: int, data: bytes) -> int:
            writes.append(data)
            if len(writes) == 3:
                os.write(fd, bytes(data)[:10])  # part of the row made it to the disk
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return os.write(fd, data)

    monkeypatch.setattr(dvlta_metric._results, "os", FullDisk())
    code, _, err = run(capsys, "score", *files, "--output", out, *TINY)
    assert code == EXIT_WRITE_ERROR == 74
    assert f"cannot write to {out}: No space left on device (ENOSPC)" in err and "Traceback" not in err
    assert "the 1 rows written before are kept" in err
    assert out.read_bytes().endswith(b"\n"), "no half row left behind"
    assert [r["path"] for r in _rows(out, "csv")] == [str(clips.landscape)]
    monkeypatch.undo()
    code, _, _ = run(capsys, "score", *files, "--output", out, *TINY)
    assert code == 0 and Counter(r["path"] for r in _rows(out, "csv")) == Counter(str(f) for f in files)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_file_size_limit_is_a_write_error_not_a_traceback(tmp_path: Path, clips: Clips) -> None:
    files = [str(clips.landscape), str(clips.single), str(clips.odd)]
    out = tmp_path / "scores.jsonl"
    limit = 600  # the first row is about 350 bytes, two are more
    script = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "from dvlta_metric.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "score", *files, "--output", str(out), *TINY],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 74, proc.stderr
    assert "File too large (EFBIG)" in proc.stderr and "Traceback" not in proc.stderr
    rows = _rows(out, "json")
    assert 1 <= len(rows) < 3 and [r["path"] for r in rows] == files[: len(rows)]


# ---------------------------------------------------------------------------------------------- odd names
class _Terminal(io.TextIOWrapper):
    def isatty(self) -> bool:
        return True


def _stdout(monkeypatch, terminal: bool = False) -> io.BytesIO:
    """Replace stdout by what a UTF-8 locale gives (strict encoding); returns the bytes written."""
    raw = io.BytesIO()
    stream = (_Terminal if terminal else io.TextIOWrapper)(raw, encoding="utf-8", errors="strict", newline="")
    monkeypatch.setattr(sys, "stdout", stream)
    return raw


@pytest.fixture
def odd_names(tmp_path: Path, clips: Clips) -> list[Path]:
    if sys.platform in ("win32", "darwin"):
        pytest.skip("needs a file system that allows any bytes in names")
    latin1 = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.mp4"))
    latin1.write_bytes(clips.single.read_bytes())
    hostile = tmp_path / "x\x1b[2K\rOK.mp4"  # clears the line and starts it again: would hide the failure
    hostile.write_bytes(b"not a video\n" * 10)
    return [latin1, hostile]


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_odd_file_names_on_stdout(capsys, monkeypatch, odd_names: list[Path], fmt: str) -> None:
    raw = _stdout(monkeypatch)
    code = main(["score", *map(str, odd_names), "--format", fmt, *TINY])
    sys.stdout.flush()
    err = capsys.readouterr().err
    out = raw.getvalue()
    assert code == 1, err
    assert "\x1b" not in err and "\r" not in err and "Traceback" not in err
    assert "failed: " + terminal_text(str(odd_names[1])) in err and "x\\x1b[2K\\x0dOK.mp4" in err
    if fmt == "table":
        assert b"\x1b" not in out and b"\r" not in out
        assert b"caf\\xe9.mp4" in out and b"x\\x1b[2K\\x0dOK.mp4" in out
    elif fmt == "csv":  # the names' bytes, as in --output files
        rows = list(csv.DictReader(io.StringIO(out.decode("utf-8", "surrogateescape"), newline="")))
        assert [r["path"] for r in rows] == list(map(str, odd_names))
    else:
        assert [r["path"] for r in json.loads(out)] == list(map(str, odd_names))


def test_csv_on_a_terminal_escapes_names(monkeypatch, capsys, odd_names: list[Path]) -> None:
    raw = _stdout(monkeypatch, terminal=True)
    code = main(["score", *map(str, odd_names), "--format", "csv", *TINY])
    sys.stdout.flush()
    assert code == 1
    assert b"\x1b" not in raw.getvalue() and b"caf\\xe9.mp4" in raw.getvalue()


def test_terminal_text() -> None:
    assert terminal_text("a\x1b[31mb\r\n\x7f\x9b") == "a\\x1b[31mb\\x0d\\x0a\\x7f\\x9b"
    assert terminal_text("caf\udce9 \u202eevil\u2066") == "caf\\xe9 \\u202eevil\\u2066"
    assert terminal_text("C:\\videos\\été 東京.mp4") == "C:\\videos\\été 東京.mp4"


# ---------------------------------------------------------------------------------------------- non-finite scores
@pytest.mark.parametrize("output", [None, "scores.jsonl", "scores.csv"])
def test_a_non_finite_score_is_an_error_row_and_json_stays_strict(
    capsys, tmp_path: Path, clips: Clips, monkeypatch, output: str | None
) -> None:
    def broken(model, paths, **kwargs):
        for value, path in zip([math.nan, math.inf, 0.5], paths):
            yield FileResult(str(path), value, model="dvlta-vqa-tiny", weights={"bvfe": 0.1} if value else None)

    monkeypatch.setattr(dvlta_metric.model, "score_files", broken)
    files = [clips.landscape, clips.single, clips.odd]
    where = ["--output", tmp_path / output] if output else ["--format", "json"]
    code, out, err = run(capsys, "score", *files, *where, *TINY)
    assert code == 1
    assert "non-finite result (score = nan" in err and "non-finite result (score = inf" in err

    def strict(constant: str) -> None:
        raise AssertionError(f"not strict JSON: {constant}")

    if output is None:
        rows = json.loads(out, parse_constant=strict)
    elif output.endswith(".jsonl"):
        rows = [json.loads(line, parse_constant=strict) for line in (tmp_path / output).read_text().splitlines()]
    else:
        rows = [{**r, "score": float(r["score"]) if r["score"] else None} for r in _rows(tmp_path / output, "csv")]
    assert [r["score"] for r in rows] == [None, None, 0.5]
    assert all("non-finite" in r["error"] for r in rows[:2])


def test_odd_file_names_in_a_csv_output_resume(capsys, tmp_path: Path, odd_names: list[Path]) -> None:
    out = tmp_path / "scores.csv"
    code, _, _ = run(capsys, "score", *odd_names, "--output", out, *TINY)
    assert code == 1
    with out.open(newline="", errors="surrogateescape") as fh:
        assert [r["path"] for r in csv.DictReader(fh)] == list(map(str, odd_names)), "a lone \\r is quoted"
    code, _, err = run(capsys, "score", *odd_names, "--output", out, *TINY)
    assert code == 1 and "2 of 2 files are already in" in err


def test_a_transient_failure_gets_no_row_and_the_next_run_retries_it(
    capsys, tmp_path: Path, clips: Clips, monkeypatch
) -> None:
    """Running out of memory is no verdict on a file: a row would make every resume skip it for good."""
    out = tmp_path / "scores.csv"
    real_read = dvlta_metric.DVLTAVQA.read

    def starved(self, path):
        if Path(path) == Path(clips.single):
            raise MemoryError
        return real_read(self, path)

    monkeypatch.setattr(dvlta_metric.DVLTAVQA, "read", starved)
    code, _, err = run(capsys, "score", clips.landscape, clips.single, "--output", out, *TINY)
    assert code == 1 and "not recorded (run again to retry)" in err and "TransientError" in err
    assert [r["path"] for r in _rows(out, "csv")] == [str(clips.landscape)]
    monkeypatch.setattr(dvlta_metric.DVLTAVQA, "read", real_read)
    code, _, err = run(capsys, "score", clips.landscape, clips.single, "--output", out, *TINY)
    assert code == 0 and "1 of 2 files are already in" in err
    rows = _rows(out, "csv")
    assert sorted(r["path"] for r in rows) == sorted([str(clips.landscape), str(clips.single)])
    assert all(r["error"] == "" for r in rows)


def test_the_decoding_limits_are_flags(capsys, clips: Clips) -> None:
    code, out, err = run(capsys, "score", clips.landscape, "--max-megapixels", "0.01", "--format", "json", *TINY)
    (row,) = json.loads(out)
    assert code == 1 and row["score"] is None and "VideoLimitError" in row["error"] and "pixel budget" in row["error"]
    code, _, err = run(capsys, "score", clips.landscape, "--decode-timeout", "nan", *TINY)
    assert code == 2 and "--decode-timeout: must be above 0" in err
    code, out, _ = run(capsys, "score", clips.landscape, "--decode-timeout", "inf", "--format", "json", *TINY)
    assert code == 0 and 0 < json.loads(out)[0]["score"] < 1


def test_a_file_named_twice_is_scored_once(capsys, tmp_path: Path, clips: Clips) -> None:
    link = tmp_path / "link.mp4"
    link.symlink_to(clips.landscape)
    out = tmp_path / "scores.csv"
    code, _, err = run(capsys, "score", clips.landscape, link, clips.single, "--output", out, *TINY)
    assert code == 0 and "1 paths name a file already listed" in err
    assert [r["path"] for r in _rows(out, "csv")] == [str(clips.landscape), str(clips.single)]


@pytest.mark.parametrize(
    "name, text",
    [
        ("mos.csv", "path,score,model,error\nx.mp4,3.1,raters,\ny.mp4,4.2,raters,"),
        ("mos.jsonl", '{"path": "x.mp4", "score": 3.1, "model": "raters", "error": null}\n{"path": "y.mp4", "sco'),
    ],
)
def test_a_refused_results_file_keeps_its_incomplete_last_record(
    capsys, tmp_path: Path, clips: Clips, name: str, text: str
) -> None:
    """The cut of an interrupted run's last record waits until every check has passed."""
    out = tmp_path / name
    out.write_text(text)
    code, _, err = run(capsys, "score", clips.single, "--output", out, *TINY)
    assert code == 2 and "holds scores of model 'raters'" in err
    assert out.read_text() == text
