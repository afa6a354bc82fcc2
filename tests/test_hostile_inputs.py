"""The adversarial corpus: hostile files the tests make themselves, and what scoring each must give.

Every case is one line in :data:`FILES`: a name, a function that writes the hostile file into a temporary
folder (given a good clip to start from), and what :func:`dvlta_metric.score_files` must report for it: an
error row whose message matches a pattern, or a score (with a warning pattern, if any). A case must finish
within :data:`DEADLINE_S` seconds, so a hang fails the test instead of stalling the suite. Add a new
failure mode as one more line; no binary fixtures are committed.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from video_files import write_clip

import dvlta_metric
from dvlta_metric import CheckpointError

DEADLINE_S = 60.0
"""Longest a hostile case may take (the tiny model scores a good clip in well under a second)."""


@dataclass(frozen=True)
class Hostile:
    """One hostile file and the verdict scoring must give it.

    Attributes:
        name: The test id.
        make: ``make(folder, good_clip) -> path`` writes the file.
        error: Pattern the result's ``error`` must match; ``None`` when the file must be scored.
        warning: Pattern the result's ``warning`` must match when it is scored (``None``: no check).
    """

    name: str
    make: Callable[[Path, Path], Path]
    error: str | None
    warning: str | None = None


def _bytes(name: str, data: Callable[[bytes], bytes]) -> Callable[[Path, Path], Path]:
    """A maker writing ``data(bytes of the good clip)`` as ``name``."""

    def make(folder: Path, good: Path) -> Path:
        path = folder / name
        path.write_bytes(data(good.read_bytes()))
        return path

    return make


def _flip(data: bytes, start: float, count: int, seed: int = 0) -> bytes:
    """``data`` with ``count`` random bits flipped after ``start`` (a fraction of the length)."""
    rng = np.random.default_rng(seed)
    out = bytearray(data)
    for pos in rng.integers(int(len(out) * start), len(out), count):
        out[pos] ^= 1 << int(rng.integers(8))
    return bytes(out)


FILES: list[Hostile] = [
    Hostile("empty", _bytes("empty.mp4", lambda _: b""), r"empty"),
    Hostile(
        "random bytes",
        _bytes("noise.mp4", lambda d: np.random.default_rng(0).bytes(len(d))),
        r"not a video file FFmpeg can read",
    ),
    Hostile(
        "text named .mp4",
        _bytes("notes.mp4", lambda _: b"this is not a video\n" * 40),
        r"not a video file FFmpeg can read",
    ),
    Hostile("cut after the header", _bytes("cut.mp4", lambda d: d[:64]), r"not a video file FFmpeg can read"),
    Hostile("bits flipped in the frames", _bytes("flipped.mp4", lambda d: _flip(d, 0.5, 64)), r"damaged"),
]
"""The corpus: one line per failure mode."""


@pytest.fixture(scope="module")
def good_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("good") / "good.mp4", frames=24, noise=True)


def score_within_deadline(model: dvlta_metric.DVLTAVQA, path: Path) -> dvlta_metric.FileResult:
    """Score one file in a thread; fail the test if it takes longer than :data:`DEADLINE_S`."""
    out: list[dvlta_metric.FileResult | BaseException] = []

    def run() -> None:
        try:
            out.extend(model.score_files([path], num_workers=0, progress=False))
        except BaseException as err:  # reported below, in the test's thread
            out.append(err)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(DEADLINE_S)
    if worker.is_alive():
        pytest.fail(f"scoring {path.name} did not finish within {DEADLINE_S:.0f} s")
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


@pytest.mark.parametrize("case", FILES, ids=lambda c: c.name)
def test_a_hostile_file_is_a_row_not_a_crash(case: Hostile, tmp_path: Path, good_clip: Path, tiny_model) -> None:
    result = score_within_deadline(tiny_model, case.make(tmp_path, good_clip))
    if case.error is not None:
        assert result.score is None and result.error and re.search(case.error, result.error), result.error
    else:
        assert result.error is None and result.score is not None and 0 < result.score < 1, result
        if case.warning is not None:
            assert result.warning and re.search(case.warning, result.warning), result


def _tamper_config(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    """A tamper that rewrites ``config.json`` with ``edit(doc)`` applied."""

    def tamper(folder: Path) -> None:
        doc = json.loads((folder / "config.json").read_text())
        edit(doc)
        (folder / "config.json").write_text(json.dumps(doc))

    return tamper


def _set(section: str, **values: object) -> Callable[[Path], None]:
    """A tamper that sets ``values`` in the dotted ``section`` of ``config.json``."""

    def edit(doc: dict) -> None:
        for part in section.split("."):
            doc = doc[part]
        doc.update(values)

    return _tamper_config(edit)


def _tamper_weight(value: float | None) -> Callable[[Path], None]:
    """A tamper that sets one float of the largest weight to ``value``, or (None) flips its exponent bits to ones."""

    def tamper(folder: Path) -> None:
        state = load_file(str(folder / "model.safetensors"))
        key = max((k for k, v in state.items() if v.is_floating_point()), key=lambda k: state[k].numel())
        flat = state[key].view(-1)
        if value is None:  # the bits a damaged disk or transfer flips: an all-ones exponent is inf or NaN
            flat.view(torch.int32)[:1] |= 0x7F800000
        else:
            flat[0] = value
        save_file(state, str(folder / "model.safetensors"))

    return tamper


def _write(name: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text(text)


TAMPERED: list[tuple[str, Callable[[Path], None], str]] = [
    ("NaN weight", _tamper_weight(float("nan")), r"NaN or infinity: "),
    ("infinite weight", _tamper_weight(float("inf")), r"NaN or infinity: "),
    ("bit flips in a weight's exponent", _tamper_weight(None), r"NaN or infinity: "),
    ("absurd logit_scale", _set("model_args", logit_scale=1e300), r"logit_scale must be at most 100"),
    ("huge frame count", _set("preprocessing.frame_view", num_frames=10**9), r"num_frames must be at most 256"),
    ("huge clip count", _set("preprocessing.fragment_view", num_clips=10**6), r"num_clips must be at most 64"),
    ("huge widths", _set("model_args.clip_vision", width=4096, layers=64), r"parameters, more than the bound"),
    ("sizes the weights do not fit", _set("model_args", bvfe_head_hidden=4096), r"wrong shapes"),
    ("deeply nested config.json", _write("config.json", "[" * 200_000 + "]" * 200_000), r"more than 32 levels deep"),
    ("config.json of 100 MB", _write("config.json", " " * (100 << 20) + "{}"), r"larger than 1048576 bytes"),
]
"""Tampered model folders: ``(name, tamper(folder), pattern of the CheckpointError)``, one line per case; each folder
starts as the tiny model's ``save_pretrained`` output and is loaded with ``create('local-dir:...')``."""


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("saved")
    dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", seed=1).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(("name", "tamper", "error"), TAMPERED, ids=[c[0] for c in TAMPERED])
def test_a_tampered_model_folder_is_refused(
    name: str, tamper: Callable[[Path], None], error: str, saved_model: Path, tmp_path: Path
) -> None:
    folder = Path(shutil.copytree(saved_model, tmp_path / "model"))
    tamper(folder)
    with pytest.raises(CheckpointError, match=error):
        dvlta_metric.create(f"local-dir:{folder}", device="cpu")
