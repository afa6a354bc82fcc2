"""``--shard I/N`` (:mod:`dvlta_metric.sharding`), ``--files-from -``, and ``--output DIR.parquet`` without Ray."""

from __future__ import annotations

import csv
import io
import os
import sys
from collections import Counter
from pathlib import Path

import pytest
from cli_run import run
from video_files import Clips, make_clips

from dvlta_metric._parquet_results import LOCK_NAME, ParquetResults
from dvlta_metric._results import OutputLockedError
from dvlta_metric.sharding import parse_shard, shard_of, shard_paths

TINY = ["--model", "dvlta-vqa-tiny", "--random-weights", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    return make_clips(tmp_path_factory.mktemp("clips"))


# ---------------------------------------------------------------------------------------------- shards
def test_shards_cover_every_file_exactly_once_and_do_not_depend_on_order_or_neighbours() -> None:
    paths = [f"videos/{i:05d}.mp4" for i in range(2000)]
    for count in (1, 3, 8):
        shards = [shard_paths(paths, i, count) for i in range(count)]
        assert Counter(p for shard in shards for p in shard) == Counter(paths)
        assert min(len(s) for s in shards) > 0.8 * len(paths) / count  # balanced on average
        assert shard_paths(reversed(paths), 0, count) == list(reversed(shards[0]))
        assert shard_paths(paths[:10], count - 1, count) == [p for p in shards[-1] if p in paths[:10]]


def test_the_assignment_is_pinned() -> None:
    # sha256(b"videos/00000.mp4") mod N: the same in every process, machine and Python version (no hash() salt)
    assert [shard_of("videos/00000.mp4", n) for n in (2, 3, 7, 1000)] == [
        int.from_bytes(__import__("hashlib").sha256(b"videos/00000.mp4").digest(), "big") % n for n in (2, 3, 7, 1000)
    ]
    assert shard_of(Path("videos/00000.mp4"), 7) == shard_of("videos/00000.mp4", 7)
    assert shard_of("a\udcff.mp4", 5) == int.from_bytes(__import__("hashlib").sha256(b"a\xff.mp4").digest(), "big") % 5


@pytest.mark.parametrize(
    "text, words",
    [("3", "expected I/N"), ("a/b", "expected I/N"), ("4/4", "shards are numbered 0 to 3"), ("0/0", "at least 1")],
)
def test_bad_shards_are_refused(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_shard(text)


def test_parse_shard() -> None:
    assert parse_shard("0/4") == (0, 4) and parse_shard(" 3 / 4 ") == (3, 4)


def test_shard_jobs_with_their_own_outputs_score_every_file_once(
    capsys: pytest.CaptureFixture[str], clips: Clips, tmp_path: Path
) -> None:
    files = [str(f) for f in clips.good()]
    rows = []
    for index in range(3):
        out = tmp_path / f"shard{index}.csv"
        code, _, err = run(capsys, "score", *files, "--shard", f"{index}/3", "--output", out, *TINY)
        assert code == 0, err
        assert f"shard {index}/3:" in err
        if out.exists():
            rows += list(csv.DictReader(out.open(encoding="utf-8")))
    assert Counter(r["path"] for r in rows) == Counter(files)
    code, _, err = run(capsys, "score", *files, "--shard", "3/3", *TINY)
    assert code == 2 and "shards are numbered 0 to 2" in err


def test_files_from_stdin(capsys: pytest.CaptureFixture[str], clips: Clips, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = f"{clips.landscape}\n\n{clips.single}\r\n".encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(listing)))
    code, out, err = run(capsys, "score", "--files-from", "-", "--format", "csv", *TINY)
    assert code == 0, err
    assert [r["path"] for r in csv.DictReader(io.StringIO(out))] == [str(clips.landscape), str(clips.single)]


# ---------------------------------------------------------------------------------------------- Parquet output
@pytest.fixture
def pyarrow_parquet():
    if __import__("importlib").util.find_spec("pyarrow") is None:
        pytest.skip("pyarrow is not installed (pip install -e '.[dev,ray]'): Parquet output cannot be tested")
    import pyarrow.parquet

    return pyarrow.parquet


def test_parquet_output_without_ray_has_the_csv_rows_and_resumes(
    capsys: pytest.CaptureFixture[str], clips: Clips, tmp_path: Path, pyarrow_parquet
) -> None:
    files = [str(clips.landscape), str(clips.text), str(clips.odd)]
    csv_out, pq_out = tmp_path / "s.csv", tmp_path / "s.parquet"
    assert run(capsys, "score", *files, "--output", csv_out, "--explain", *TINY)[0] == 1
    assert run(capsys, "score", *files[:2], "--output", pq_out, "--explain", *TINY)[0] == 1
    code, _, err = run(capsys, "score", *files, "--output", pq_out, "--explain", *TINY)
    assert code == 1 and "2 of 3 files are already in" in err
    table = pyarrow_parquet.read_table(pq_out)  # the directory, as readers take it
    rows = {r["path"]: r for r in table.to_pylist()}
    expected = {r["path"]: r for r in csv.DictReader(csv_out.open(encoding="utf-8"))}
    assert list(table.column_names) == list(next(iter(expected.values())))
    assert set(rows) == set(expected) and len(table) == len(files)
    for path, want in expected.items():
        got = rows[path]
        assert (got["error"] or "") == want["error"]
        assert (got["model"], got["weights"]) == (want["model"], want["weights"])
        assert got["score"] is None if not want["score"] else got["score"] == pytest.approx(float(want["score"]), 1e-6)
    assert len(list(pq_out.glob("part-*.parquet"))) == 2  # one per run: rows are written together


def test_a_parquet_directory_holding_other_files_is_refused_untouched(
    capsys: pytest.CaptureFixture[str], clips: Clips, tmp_path: Path, pyarrow_parquet
) -> None:
    out = tmp_path / "s.parquet"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "score", clips.landscape, "--output", out, *TINY)
    assert code == 2 and "entries that dvlta-metric did not write ('notes.txt')" in err
    assert sorted(os.listdir(out)) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    a_file = tmp_path / "f.parquet"
    a_file.write_text("x")
    code, _, err = run(capsys, "score", clips.landscape, "--output", a_file, *TINY)
    assert code == 2 and "is a file: Parquet output is a directory" in err
    fake = tmp_path / "fake.parquet"
    fake.mkdir()
    (fake / "part-1.parquet").write_bytes(b"not parquet")
    code, _, err = run(capsys, "score", clips.landscape, "--output", fake, *TINY)
    assert code == 2 and "part-1.parquet is not a readable Parquet file" in err
    assert (fake / "part-1.parquet").read_bytes() == b"not parquet"


def test_parquet_parts_are_atomic_and_the_directory_is_locked(tmp_path: Path, pyarrow_parquet) -> None:
    out = tmp_path / "s.parquet"
    with ParquetResults.open(out, rows_per_part=2, flush_seconds=3600) as results:
        with pytest.raises(OutputLockedError):
            ParquetResults.open(out)
        results.start(["path", "score", "model", "weights", "error", "warning", "seconds", "realpath"], None)
        results.append({"path": "a.mp4", "score": 0.5, "model": "m", "realpath": "/a.mp4"})
        assert not results.parts()  # one row waits
        results.append({"path": "b\udcff.mp4", "score": 0.25, "model": "m", "realpath": "/b\udcff.mp4"})
        assert len(results.parts()) == 1
        (out / ".part-0-dead.parquet.tmp").write_bytes(b"half a part of a killed run")
        results.append({"path": "c.mp4", "score": None, "error": "ValueError: bad", "model": "m", "realpath": "/c"})
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("part-")) == sorted(
        [".part-0-dead.parquet.tmp", LOCK_NAME]
    )
    with ParquetResults.open(out) as results:  # a new run removes the temporary part, keeps the rest
        previous = results.read()
    assert not list(out.glob("*.tmp"))
    assert previous.keys == {"/a.mp4", "/b\\xff.mp4", "/c"} and previous.failed == {"/c"}
    assert [r["path"] for r in pyarrow_parquet.read_table(out).to_pylist()] == ["a.mp4", "b\\xff.mp4", "c.mp4"]
