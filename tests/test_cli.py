"""The ``dvlta-metric`` command: list, score in every format, errors, exit status, resuming."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from video_files import Clips, make_clips

import dvlta_metric.batch
from dvlta_metric.cli import main, weights_label

TINY = ["--model", "dvlta-vqa-tiny", "--random-weights", "--device", "cpu", "--no-progress"]
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    return make_clips(tmp_path_factory.mktemp("clips"))


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    torch.manual_seed(0)
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


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


def test_weights_label_names_registry_entries_by_their_full_name() -> None:
    label = weights_label("dvlta-vqa-konvid", random_weights=False, precision="fp16")
    assert (
        label == "dvlta-vqa.konvid, fp16" == weights_label("dvlta-vqa.konvid", random_weights=False, precision="fp16")
    )
    assert weights_label("hf-hub:org/x@v1", random_weights=False, precision="fp32") == "hf-hub:org/x@v1, fp32"
    assert weights_label("x", random_weights=True, precision="bf16", seed=3) == "random (seed 3), bf16"


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
