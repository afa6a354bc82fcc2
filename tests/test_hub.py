"""The Hub wrapper: the real ``hf_hub_download`` on a fake offline cache, its errors, revisions and checksums."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_hub import lay_out_repo

import dvlta_metric
from dvlta_metric import DVLTAVQA, CheckpointError, WeightsNotFoundError
from dvlta_metric._hub import check_revision, hub_directory, sha256_of, verify_sha256

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_empty_cache_offline_error_is_actionable(hub_cache: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        dvlta_metric.create("hf-hub:test-org/missing", device="cpu")
    msg = str(info.value)
    assert "test-org/missing" in msg and str(hub_cache) in msg and "HF_HUB_OFFLINE" in msg


def test_unknown_revision_offline(hub_cache: Path, saved_tiny: tuple[Path, DVLTAVQA]) -> None:
    directory, _ = saved_tiny
    lay_out_repo(hub_cache, "test-org/tiny", {n: directory / n for n in ("config.json", "model.safetensors")})
    with pytest.raises(WeightsNotFoundError, match="nope"):
        dvlta_metric.create("hf-hub:test-org/tiny@nope", device="cpu")


def test_real_environment_variables_in_a_fresh_process(hub_cache: Path, saved_tiny: tuple[Path, DVLTAVQA]) -> None:
    """HF_HOME and HF_HUB_OFFLINE set in the environment of a new interpreter, as a user would."""
    directory, model = saved_tiny
    lay_out_repo(hub_cache, "env-org/tiny", {n: directory / n for n in ("config.json", "model.safetensors")})
    code = (
        "import torch, dvlta_metric\n"
        "m = dvlta_metric.create('hf-hub:env-org/tiny', device='cpu')\n"
        "print(float(m.prompt_embeddings.sum()))\n"
        "try:\n"
        "    dvlta_metric.create('hf-hub:env-org/absent', device='cpu')\n"
        "except dvlta_metric.WeightsNotFoundError as e:\n"
        "    print('ERR', e)\n"
    )
    env = dict(os.environ, HF_HOME=str(hub_cache.parent), HF_HUB_OFFLINE="1")
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300
    )
    assert out.returncode == 0, out.stderr
    first, err = out.stdout.strip().splitlines()[:2]
    assert abs(float(first) - float(model.prompt_embeddings.sum())) < 1e-4
    assert err.startswith("ERR") and str(hub_cache) in err and "HF_HUB_OFFLINE" in err


def test_hub_directory_is_the_snapshot_of_one_revision(hub_cache: Path) -> None:
    lay_out_repo(hub_cache, "org/r", {"a.json": b"1", "b.bin": b"2"}, commit="1" * 40, refs=("main",))
    lay_out_repo(hub_cache, "org/r", {"a.json": b"3"}, commit="2" * 40, refs=("v2",))
    folder = hub_directory("org/r", ("a.json", "b.bin"))
    assert folder.name == "1" * 40 and (folder / "b.bin").read_bytes() == b"2"
    assert (hub_directory("org/r", ("a.json",), revision="v2") / "a.json").read_bytes() == b"3"
    with pytest.raises(WeightsNotFoundError, match="b.bin"):
        hub_directory("org/r", ("a.json", "b.bin"), revision="v2")


@pytest.mark.parametrize(
    ("revision", "error", "words"),
    [(5, TypeError, "must be a string"), ("", ValueError, "branch, tag or commit"), ("a@b", ValueError, "got 'a@b'")],
)
def test_check_revision(revision: object, error: type, words: str) -> None:
    assert check_revision(None, what="r") is None and check_revision("v1", what="r") == "v1"
    with pytest.raises(error, match=f"r {words}" if error is TypeError else words):
        check_revision(revision, what="r")


def test_verify_sha256(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_bytes(b"abc")
    digest = sha256_of(file)
    verify_sha256(file, digest.upper(), what="f")
    with pytest.raises(CheckpointError, match="SHA-256 mismatch .*delete it from the cache"):
        verify_sha256(file, "0" * 64, what="f")


def test_no_network_fails_fast_and_falls_back_to_the_cache(tmp_path: Path, saved_tiny: tuple[Path, DVLTAVQA]) -> None:
    """No HF_HUB_OFFLINE and a Hub that refuses connections (a closed loopback port): one attempt, not 28 s of
    retries; the actionable error when nothing is cached, the cached snapshot when it is."""
    directory, _ = saved_tiny
    home = tmp_path / "hf_home"
    lay_out_repo(home / "hub", "org/cached", {n: directory / n for n in ("config.json", "model.safetensors")})
    code = (
        "import time, dvlta_metric\n"
        "for name in ('hf-hub:org/absent', 'hf-hub:org/cached'):\n"
        "    start = time.perf_counter()\n"
        "    try:\n"
        "        dvlta_metric.create(name, device='cpu')\n"
        "        print('OK', time.perf_counter() - start)\n"
        "    except dvlta_metric.WeightsNotFoundError as e:\n"
        "        print('ERR', time.perf_counter() - start, e)\n"
    )
    env = dict(os.environ, HF_HOME=str(home), HF_ENDPOINT="http://127.0.0.1:9")
    for key in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
        env.pop(key, None)
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    absent, cached = out.stdout.strip().splitlines()
    kind, seconds, message = absent.split(" ", 2)
    assert kind == "ERR" and float(seconds) < 5, absent
    assert "could not be reached" in message and "HF_HUB_OFFLINE=1" in message and "org/absent" in message
    kind, seconds = cached.split(" ")
    assert kind == "OK" and float(seconds) < 5, cached
