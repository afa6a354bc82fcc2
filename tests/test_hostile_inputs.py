"""The adversarial corpus: hostile files the tests make themselves, and what scoring each must give.

Every case is one line in :data:`FILES`: a name, a function that writes the hostile file into a temporary
folder (given a good clip to start from), and what :func:`dvlta_metric.score_files` must report for it: an
error row whose message matches a pattern, or a score (with a warning pattern, if any). A case must finish
within :data:`DEADLINE_S` seconds, so a hang fails the test instead of stalling the suite. Add a new
failure mode as one more line; no binary fixtures are committed.

:data:`OUTPUTS` is the same for the command line's ``--output`` file: files that are not results files of
this tool, which ``dvlta-metric score --output`` must refuse (exit status 2, a message) with their bytes
unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from video_files import write_clip, write_pixel_bomb, write_reference_script

import dvlta_metric
from dvlta_metric import CheckpointError
from dvlta_metric.cli import main

_T = TypeVar("_T")
DEADLINE_S = 60.0
"""Longest a hostile case may take (the tiny model scores a good clip in well under a second)."""


@dataclass(frozen=True)
class Hostile:
    """One hostile file and the verdict scoring must give it.

    Attributes:
        name: The test id.
        make: ``make(folder, good_clip) -> path`` writes the file.
        error: Pattern the result's ``error`` must match; ``None`` when the file must be scored.
        warning: Pattern the result's ``warning`` must match when it is scored (``None``: no check). With both
            set, either verdict is right (how much of a damaged file still decodes can vary with the encode).
        options: Extra :func:`~dvlta_metric.batch.score_files` arguments (e.g. a small ``max_megapixels``).
    """

    name: str
    make: Callable[[Path, Path], Path]
    error: str | None
    warning: str | None = None
    options: dict[str, float] = field(default_factory=dict)


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


def _script(kind: str, names: str = "fifo") -> Callable[[Path, Path], Path]:
    """A maker of a reference-demuxer script (ffconcat, hls, dash, sdp) named ``.mp4`` that names a FIFO (reading
    it blocked forever) or the good clip (``names="clip"``: the work multiplies)."""

    def make(folder: Path, good: Path) -> Path:
        target = good
        if names == "fifo":
            target = folder / "pipe"
            os.mkfifo(target)
        return write_reference_script(folder / f"{kind}.mp4", kind, target)

    return make


def _fifo(folder: Path, good: Path) -> Path:
    os.mkfifo(folder / "stream.mp4")
    return folder / "stream.mp4"


def _symlink_loop(folder: Path, good: Path) -> Path:
    (folder / "a.mp4").symlink_to(folder / "b.mp4")
    (folder / "b.mp4").symlink_to(folder / "a.mp4")
    return folder / "a.mp4"


def _named(name: bytes) -> Callable[[Path, Path], Path]:
    """A maker copying the good clip to a file called ``name`` (bytes: any name the file system takes)."""

    def make(folder: Path, good: Path) -> Path:
        path = os.path.join(os.fsencode(folder), name)
        shutil.copyfile(good, path)
        return Path(os.fsdecode(path))

    return make


def _bomb(folder: Path, good: Path) -> Path:
    return write_pixel_bomb(folder / "bomb.mp4")  # 24 flat frames of 4096 x 4096 in about 50 KB


_NOT_A_CONTAINER = r"not a video (container|file FFmpeg can read)"

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
    Hostile("bits flipped in the frames", _bytes("flipped.mp4", lambda d: _flip(d, 0.5, 64)), r"damaged", r"truncated"),
    Hostile("ffconcat script naming a FIFO", _script("ffconcat"), r"an ffconcat script, not a video container"),
    Hostile("ffconcat script naming the clip", _script("ffconcat", "clip"), r"an ffconcat script, not a video contai"),
    Hostile("hls playlist named .mp4", _script("hls"), _NOT_A_CONTAINER),
    Hostile("dash manifest named .mp4", _script("dash"), _NOT_A_CONTAINER),
    Hostile("sdp description named .mp4", _script("sdp"), _NOT_A_CONTAINER),
    Hostile("FIFO named .mp4", _fifo, r"a FIFO \(named pipe\), not a regular file"),
    Hostile("symlink loop", _symlink_loop, r"a loop of symbolic links"),
    Hostile(
        "pixel bomb",
        _bomb,
        r"VideoLimitError: .*4096x4096.*pixel budget of 100 megapixels",
        options={"max_megapixels": 100},
    ),
    Hostile("name with spaces", _named(b"a clip with  spaces .mp4"), None),
    Hostile("name with a newline", _named(b"two\nlines.mp4"), None),
    Hostile("name not UTF-8", _named(b"caf\xe9 \xff.mp4"), None),
    Hostile("name with terminal escapes", _named(b"\x1b[2J\x1b[1;1Hok \x07.mp4"), None),
]
"""The corpus: one line per failure mode."""


@pytest.fixture(scope="module")
def good_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("good") / "good.mp4", frames=24, noise=True)


def within_deadline(call: Callable[[], _T], what: str) -> _T:
    """Run ``call()`` in a thread; fail the test if it takes longer than :data:`DEADLINE_S`."""
    out: list[_T | BaseException] = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as err:  # reported below, in the test's thread
            out.append(err)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(DEADLINE_S)
    if worker.is_alive():
        pytest.fail(f"{what} did not finish within {DEADLINE_S:.0f} s")
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def score_within_deadline(
    model: dvlta_metric.DVLTAVQA, path: Path, options: dict[str, float] | None = None
) -> dvlta_metric.FileResult:
    """Score one file (with ``options`` for :func:`~dvlta_metric.batch.score_files`) under the deadline."""

    def score() -> list[dvlta_metric.FileResult]:
        return list(dvlta_metric.score_files(model, [path], num_workers=0, progress=False, **(options or {})))

    return within_deadline(score, f"scoring {path.name}")[0]


@pytest.mark.parametrize("case", FILES, ids=lambda c: c.name)
def test_a_hostile_file_is_a_row_not_a_crash(case: Hostile, tmp_path: Path, good_clip: Path, tiny_model) -> None:
    result = score_within_deadline(tiny_model, case.make(tmp_path, good_clip), case.options)
    if case.error is not None and (case.warning is None or result.score is None):
        assert result.score is None and result.error and re.search(case.error, result.error), result.error
    else:
        assert result.error is None and result.score is not None and 0 < result.score < 1, result
        if case.warning is not None:
            assert result.warning and re.search(case.warning, result.warning), result


# ---------------------------------------------------------------------------------------------- --output files
def _text(name: str, text: str) -> Callable[[Path, Path], Path]:
    """A maker writing ``text`` as ``name``."""
    return _bytes(name, lambda _: text.encode())


def _fifo_output(folder: Path, good: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(folder / "scores.csv")
    return folder / "scores.csv"


FOREIGN = r"not a results file written by dvlta-metric"
OUTPUTS: list[Hostile] = [
    Hostile("a video as csv", _bytes("scores.csv", lambda d: d), FOREIGN),
    Hostile("a video as json lines", _bytes("scores.jsonl", lambda d: d), FOREIGN),
    Hostile("a video named .mp4", _bytes("clip.mp4", lambda d: d), FOREIGN),
    Hostile("json config, no final newline", _text("config.json", '{"name": "x", "fusion": "cosine"}'), FOREIGN),
    Hostile("json config, pretty", _text("config.json", '{\n  "name": "x"\n}\n'), FOREIGN),
    Hostile("MOS csv, no final newline", _text("mos.csv", "name,mos\na.mp4,3.2\nb.mp4,4.1"), FOREIGN),
    Hostile("MOS csv", _text("mos.csv", "name,mos\na.mp4,3.2\n"), FOREIGN),
    Hostile("MOS csv with a path column", _text("mos.csv", "path,mos\na.mp4,3.2"), FOREIGN),
    Hostile("one header line, no newline", _text("mos.csv", "path,score,model,error"), FOREIGN),
    Hostile("labels jsonl, no final newline", _text("labels.jsonl", '{"path": "a.mp4", "mos": 3.2}'), FOREIGN),
    Hostile("labels jsonl, cut", _text("labels.jsonl", '{"path": "a.mp4", "mos": 3.'), FOREIGN),
    Hostile(
        "a results file with text after it",
        _text("s.jsonl", '{"path": "a", "score": 0.5, "model": "m", "error": null}\nhello'),
        FOREIGN,
    ),  # fmt: skip
    Hostile("a FIFO", _fifo_output, r"not a regular file"),
]
"""``--output`` files that must be refused with their bytes unchanged: one line per kind."""


@pytest.mark.parametrize("case", OUTPUTS, ids=lambda c: c.name)
def test_a_foreign_output_file_is_refused_unchanged(case: Hostile, tmp_path: Path, good_clip: Path, capsys) -> None:
    output = case.make(tmp_path, good_clip)
    digest = hashlib.sha256(output.read_bytes()).hexdigest() if output.is_file() else None
    argv = ["score", str(good_clip), "--output", str(output), "--model", "dvlta-vqa-tiny", "--random-weights"]
    code = within_deadline(lambda: main([*argv, "--device", "cpu", "--no-progress"]), f"--output {output.name}")
    err = capsys.readouterr().err
    assert code == 2 and case.error and re.search(case.error, err) and "Traceback" not in err, err
    if digest is not None:
        assert hashlib.sha256(output.read_bytes()).hexdigest() == digest, "the file was changed"


def _peak_rss_of_check(dtype: str, contiguous: bool) -> tuple[int, int]:
    """``check_video`` on a 400 MB float video in a fresh process: (resident bytes before, peak resident bytes)."""
    code = f"""
import re, torch
from dvlta_metric._inputs import check_video
def kb(key):
    return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
video = torch.rand(64, 3, 512, 1024).to(torch.{dtype})
video = video if {contiguous} else video.transpose(2, 3)
open("/proc/self/clear_refs", "w").write("5")  # VmHWM from here
before = kb("VmRSS")
check_video(video)
print(before, kb("VmHWM"))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(dvlta_metric.__file__).parents[1])}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env, timeout=120)
    before, peak = out.stdout.split()
    return int(before), int(peak)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="resets VmHWM through /proc")
@pytest.mark.parametrize("dtype, contiguous", [("float32", True), ("bfloat16", True), ("float32", False)])
def test_checking_a_float_video_allocates_no_copy_of_it(dtype: str, contiguous: bool) -> None:
    """Validating a float tensor allocated about 1.7x the input (2.5x for half precision) in temporaries."""
    before, peak = _peak_rss_of_check(dtype, contiguous)
    size = 64 * 3 * 512 * 1024 * (4 if dtype == "float32" else 2)
    assert peak - before < 0.1 * size, f"{(peak - before) / 1e6:.0f} MB for a {size / 1e6:.0f} MB video"


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
