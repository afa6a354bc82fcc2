"""dvlta_metric_train.features: damaged cache folders, killed runs' leftovers, bad --out, write errors, fp16 models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from training_data import make_quality_dataset

import dvlta_metric
from dvlta_metric_train import features
from dvlta_metric_train.cache import FP16_SHA_KEY, FeatureCache, video_key


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three tiny clips, a random initial tiny model and its feature cache (1 sample per video, float16)."""
    root = tmp_path_factory.mktemp("features")
    csv = make_quality_dataset(root / "data", n=3, frames=8, height=64, width=80)
    torch.manual_seed(0)
    init = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu").save_pretrained(root / "init")
    paths = {"root": root, "csv": csv, "init": init, "cache": root / "cache"}
    assert features.main(_args(paths, paths["cache"])) == 0
    return paths


def _args(paths: dict[str, Path], out: Path) -> list[str]:
    return [
        "--model", f"local-dir:{paths['init']}", "--csv", str(paths["csv"]), "--out", str(out),
        "--samples", "1", "--device", "cpu", "--no-progress", "--workers", "0", "--no-check",
    ]  # fmt: skip


@pytest.fixture
def cache_copy(built: dict[str, Path], tmp_path: Path) -> Path:
    out = tmp_path / "cache"
    shutil.copytree(built["cache"], out)
    return out


def test_damaged_files_are_named_left_out_and_recomputed(
    built: dict[str, Path], cache_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = FeatureCache(cache_copy)
    before = {row: {k: np.array(v) for k, v in cache.arrays(row).items()} for row in range(3)}
    truncated = cache.video_dir(0) / "vbtc.npy"
    os.truncate(truncated, 100)
    (cache.video_dir(1) / "bvfe.npy").unlink()
    header = cache.video_dir(2) / "tcm.npy"  # same size, garbage where the .npy header was
    data = bytearray(header.read_bytes())
    data[:16] = b"x" * 16
    header.write_bytes(bytes(data))

    with pytest.warns(UserWarning, match=r"3 damaged video\(s\) left out") as record:
        assert cache.available_rows() == []
    assert str(truncated) in str(record[0].message)
    assert set(cache.damaged()) == {0, 1, 2}
    # reading one anyway (arrays() checks only what loading tells: it runs for every training sample)
    with pytest.raises(ValueError, match=r"cannot read .*vbtc.npy \(ValueError: EOF") as info:
        cache.arrays(0)
    assert str(truncated) in str(info.value) and "rerun python -m dvlta_metric_train.features" in str(info.value)
    with pytest.raises(ValueError, match=r"cannot read .*bvfe.npy \(FileNotFoundError"):
        cache.arrays(1)
    with pytest.raises(ValueError, match=r"cannot read .*tcm.npy"):
        cache.arrays(2)

    assert features.main(_args(built, cache_copy)) == 0
    out = capsys.readouterr().out
    assert "3 videos cached, 0 already there" in out and "3 of the videos cached were recomputed" in out
    assert "vbtc.npy has 100 bytes" in out
    assert cache.available_rows() == [0, 1, 2]
    for row in range(3):
        after = cache.arrays(row)
        assert all(np.array_equal(before[row][k], after[k]) for k in before[row])
    assert not [p for p in (cache_copy / "videos").iterdir() if p.name.startswith(".")]  # nothing set aside left


def test_temporary_folders_of_dead_processes_are_removed(
    built: dict[str, Path], cache_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)  # that process has ended
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host = features._HOST
    key = video_key("videos/some.mp4")
    names = {
        f".tmp-{key}@{host}-{dead_pid}": False,  # killed run on this host
        f".tmp-{key}-{dead_pid}": False,  # the format before the host was recorded
        f".tmp-{key}.old@{host}-{dead_pid}": False,  # a damaged folder set aside by a killed run
        f".tmp-{key}@{host}-{alive.pid}": True,  # a running process (another shard)
        f".tmp-{key}@{host}-{os.getpid()}": True,  # this process
        f".tmp-{key}@another.host-{dead_pid}": True,  # another host sharing the folder: cannot be told
    }
    try:
        for name in names:
            (cache_copy / "videos" / name).mkdir()
            (cache_copy / "videos" / name / "vbtc.npy").write_bytes(b"partial")
        assert features.main(_args(built, cache_copy)) == 0
    finally:
        alive.kill()
        alive.wait()
    assert "removed 3 temporary folder(s) left by interrupted runs" in capsys.readouterr().out
    for name, kept in names.items():
        assert (cache_copy / "videos" / name).exists() == kept, name
    assert FeatureCache(cache_copy).available_rows() == [0, 1, 2]


def test_out_that_is_a_file_and_write_errors_exit_with_a_message(
    built: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a cache")
    assert features.main(_args(built, a_file)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(a_file) in err and "not a folder" in err

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(features.np, "save", disk_full)
    out = tmp_path / "cache"
    assert features.main(_args(built, out)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "No space left on device" in err and "rerun" in err
    assert list((out / "videos").iterdir()) == []  # no temporary folder left behind


def test_a_model_saved_in_float16_is_accepted_with_a_warning(
    built: dict[str, Path], cache_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init = dvlta_metric.create(f"local-dir:{built['init']}", device="cpu")
    fp16_dir = init.save_pretrained(tmp_path / "fp16", fp16=True)
    rounded = dvlta_metric.create(f"local-dir:{fp16_dir}", device="cpu")
    cache = FeatureCache(cache_copy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.check_model(init)  # the cache's own model: no warning
    with pytest.warns(UserWarning, match="up to float16 rounding") as record:
        cache.check_model(rounded)
    assert "about 1e-4" in str(record[0].message)

    # a cache written before the float16 digest was recorded: its (local) model is loaded to tell
    index = json.loads((cache_copy / "index.json").read_text())
    del index[FP16_SHA_KEY]
    (cache_copy / "index.json").write_text(json.dumps(index))
    with pytest.warns(UserWarning, match="up to float16 rounding"):
        FeatureCache(cache_copy).check_model(rounded)
    # ... and when that model cannot be loaded, the error says how to add the digest; a rerun adds it
    index["model"] = f"local-dir:{tmp_path / 'gone'}"
    (cache_copy / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="predates the float16 digest") as info:
        FeatureCache(cache_copy).check_model(rounded)
    assert "rerun python -m dvlta_metric_train.features" in str(info.value)
    assert features.main(_args(built, cache_copy)) == 0
    assert FP16_SHA_KEY in json.loads((cache_copy / "index.json").read_text())
    with pytest.warns(UserWarning, match="up to float16 rounding"):
        FeatureCache(cache_copy).check_model(rounded)

    # other backbones are still refused
    other = dvlta_metric.create(f"local-dir:{fp16_dir}", device="cpu")
    with torch.no_grad():
        next(other.branches["bvfe"].encoder.parameters()).add_(0.01)
    with pytest.raises(ValueError, match="backbones_sha256 differ") as info:
        cache.check_model(other)
    assert "predates" not in str(info.value)
    capsys.readouterr()
