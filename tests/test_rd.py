"""Rate-quality tooling: BD-rate against analytic and published values, monotonicity, manifests, ``dvlta-metric rd``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
from video_files import frame_image

from dvlta_metric import rd
from dvlta_metric.cli import main

pytest.importorskip("bjontegaard")

RATES = [9487.76, 4593.60, 2486.44, 1358.24]
PSNR = [40.037, 38.615, 36.845, 34.851]


# ---------------------------------------------------------------------------------------------- BD values
@pytest.mark.parametrize("method", rd.METHODS)
def test_scaled_rates_give_exactly_that_bd_rate(method: str) -> None:
    """B needs 0.9x A's bits at every quality: BD-rate is -10 % under any interpolation (analytic)."""
    assert rd.bd_rate(RATES, PSNR, [r * 0.9 for r in RATES], PSNR, method=method) == pytest.approx(-10.0, abs=1e-9)
    assert rd.bd_rate(RATES, PSNR, [r * 1.25 for r in RATES], PSNR, method=method) == pytest.approx(25.0, abs=1e-9)


@pytest.mark.parametrize("method", rd.METHODS)
def test_shifted_quality_gives_exactly_that_bd_quality(method: str) -> None:
    shifted = [q + 0.5 for q in PSNR]
    assert rd.bd_quality(RATES, PSNR, RATES, shifted, method=method) == pytest.approx(0.5, abs=1e-9)


@pytest.mark.parametrize("method", rd.METHODS)
def test_a_curve_against_itself_gives_zero(method: str) -> None:
    assert rd.bd_rate(RATES, PSNR, RATES, PSNR, method=method) == pytest.approx(0.0, abs=1e-12)
    assert rd.bd_quality(RATES, PSNR, RATES, PSNR, method=method) == pytest.approx(0.0, abs=1e-12)


# JCTVC-E137 data (http://phenix.it-sudparis.eu/jct/doc_end_user/documents/5_Geneva/wg11/JCTVC-E137-v1.zip) and
# the BD-rates pinned for it in Netflix/vmaf python/test/bd_rate_calculator_test.py (BDrateCalculatorJCTVCTest,
# given there as fractions: -0.00465215420752807 and -0.018779823450567612), computed with PCHIP as the JCT-VC
# spreadsheet does. The AOSP CTS bdrate tool's tests (com.android.media.videoquality.bdrate) reuse them.
JCTVC_E137 = [
    (
        [(108048.8736, 43.6471), (61279.976, 40.3953), (33905.6656, 37.247), (18883.6928, 34.2911)],
        [(108061.2784, 43.6768), (61299.9936, 40.4232), (33928.7472, 37.2761), (18910.912, 34.3147)],
        -0.465215420752807,
    ),
    (
        [(40433.8848, 37.5761), (7622.7456, 35.3756), (2394.488, 33.8977), (1017.6184, 32.0603)],
        [(40370.12, 37.5982), (7587.0024, 35.4025), (2390.0944, 33.9194), (1017.0984, 32.0822)],
        -1.8779823450567612,
    ),
]


@pytest.mark.parametrize(("anchor", "test", "percent"), JCTVC_E137)
def test_published_bd_rate(anchor: list, test: list, percent: float) -> None:
    (ra, qa), (rb, qb) = zip(*anchor), zip(*test)
    assert rd.bd_rate(ra, qa, rb, qb) == pytest.approx(percent, abs=1e-9)
    # the points' order does not matter
    assert rd.bd_rate(ra[::-1], qa[::-1], rb, qb) == pytest.approx(percent, abs=1e-9)


def test_bd_errors_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="does not rise"):
        rd.bd_rate(RATES, [40, 41, 39, 38], RATES, PSNR)
    with pytest.raises(ValueError, match="do not overlap"):
        rd.bd_rate(RATES, PSNR, RATES, [q + 20 for q in PSNR])
    with pytest.raises(ValueError, match="needs at least 4"):
        rd.bd_rate(RATES[:3], PSNR[:3], RATES, PSNR, method="cubic")
    with pytest.raises(ValueError, match="same rate"):
        rd.bd_quality([1, 1, 2], [1, 2, 3], RATES, PSNR)
    with pytest.raises(ValueError, match="positive"):
        rd.bd_quality([0, 1, 2], [1, 2, 3], RATES, PSNR)
    with pytest.raises(ValueError, match="method must be one of"):
        rd.bd_rate(RATES, PSNR, RATES, PSNR, method="linear")
    with pytest.raises(ValueError, match="scale must be one of"):
        rd.to_scale([0.5], "mos")
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        rd.to_scale([1.0], "logit")
    assert rd.to_scale([0.5, 0.75], "logit") == pytest.approx([0.0, math.log(3)])


# ---------------------------------------------------------------------------------------------- tables
def _result(path: str, source: str, codec: str, kbps: float, score: float | None, error: str | None = None):
    return rd.EncodeResult(rd.Encode(path, source, codec), kbps, "manifest", score, error)


def test_monotonicity_lists_a_planted_violation() -> None:
    results = [
        _result("a1", "s", "x264", 100, 0.3),
        _result("a2", "s", "x264", 200, 0.5),
        _result("a3", "s", "x264", 400, 0.45),  # planted: more bits, lower score
        _result("a4", "s", "x264", 800, 0.7),
        _result("b1", "s", "x265", 150, 0.9),  # another codec: never paired with x264
        _result("b2", "s", "x265", 300, 0.95),
        _result("c1", "t", "x264", 100, 0.2),
        _result("c2", "t", "x264", 200, None, "ValueError: broken"),  # failed: left out
    ]
    mono = rd.monotonicity(results)
    assert (mono["pairs"], mono["ordered"]) == (4, 3)
    assert mono["share"] == pytest.approx(0.75)
    assert mono["violations"] == [
        {
            "source": "s",
            "codec": "x264",
            "lower": {"path": "a2", "bitrate_kbps": 200, "score": 0.5},
            "higher": {"path": "a3", "bitrate_kbps": 400, "score": 0.45},
        }
    ]


def test_bd_table_every_ordered_pair_per_source_and_pooled() -> None:
    results = []
    for source, shift in (("s", 0.0), ("t", 0.05)):
        for kbps, q in zip([100, 200, 400, 800], [0.2, 0.4, 0.6, 0.8]):
            results.append(_result(f"{source}-a-{kbps}", source, "a", kbps, q + shift))
            results.append(_result(f"{source}-b-{kbps}", source, "b", kbps * 0.9, q + shift))
    table = rd.bd_table(results)
    assert table["scale"] == "score" and table["method"] == "pchip"
    assert [(p["anchor"], p["test"], p["source"]) for p in table["pairs"]] == [
        ("a", "b", "s"),
        ("a", "b", "t"),
        ("b", "a", "s"),
        ("b", "a", "t"),
    ]
    pooled = {(p["anchor"], p["test"]): p for p in table["pooled"]}
    assert pooled["a", "b"]["bd_rate_percent"] == pytest.approx(-10.0)
    assert pooled["b", "a"]["bd_rate_percent"] == pytest.approx(100 / 0.9 - 100)
    assert pooled["a", "b"]["sources_rate"] == 2
    logit = rd.bd_table(results, scale="logit")
    assert logit["pooled"][0]["bd_rate_percent"] == pytest.approx(-10.0)  # a rate scaling is a rate scaling


# ---------------------------------------------------------------------------------------------- manifests
def _encode(path: Path, crf: int, preset: str, frames: int = 16) -> Path:
    """A noisy 128x96 clip encoded with libx264 at ``crf`` and ``preset``."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}
        for i in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_image(i, 96, 128, rng), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def ladder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 presets x 3 CRFs of one source, and a manifest listing them (relative paths)."""
    root = tmp_path_factory.mktemp("ladder")
    lines = ["path,source,codec,crf"]
    for preset in ("ultrafast", "medium"):
        for crf in (18, 30, 42):
            _encode(root / f"{preset}_{crf}.mp4", crf, preset)
            lines.append(f"{preset}_{crf}.mp4,clip,{preset},{crf}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def test_container_bitrate(ladder: Path) -> None:
    rates = [rd.container_bitrate_kbps(ladder / f"ultrafast_{crf}.mp4") for crf in (18, 30, 42)]
    assert rates[0] > rates[1] > rates[2] > 0
    size = (ladder / "ultrafast_18.mp4").stat().st_size
    assert rates[0] < size * 8 / (16 / 24) / 1000  # the video stream only, without the container's overhead
    with pytest.raises(FileNotFoundError):
        rd.container_bitrate_kbps(ladder / "missing.mp4")
    with pytest.raises(ValueError, match="not a video"):
        rd.container_bitrate_kbps(ladder / "manifest.csv")


def test_read_manifest_csv_and_json(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,source,codec,bitrate_kbps,crf\na.mp4,s,x264,1200,23\n/abs/b.mp4,s,x265,,28\n")
    encodes = rd.read_manifest(tmp_path / "m.csv")
    assert encodes[0] == rd.Encode(str(tmp_path / "a.mp4"), "s", "x264", 1200.0, {"crf": "23"})
    assert encodes[1].path == "/abs/b.mp4" and encodes[1].bitrate_kbps is None
    (tmp_path / "m.json").write_text(json.dumps([{"path": "a.mp4", "source": "s", "codec": "x264"}]))
    assert rd.read_manifest(tmp_path / "m.json") == [rd.Encode(str(tmp_path / "a.mp4"), "s", "x264")]


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("m.csv", "path,codec\na.mp4,x264\n", "lacks the column(s) ['source']"),
        ("m.csv", "path,source,codec\n", "has no encodes"),
        ("m.csv", "path,source,codec\na.mp4,,x264\n", "line 2: empty ['source']"),
        ("m.csv", "path,source,codec,bitrate_kbps\na.mp4,s,x264,fast\n", "bitrate_kbps must be a number"),
        ("m.csv", "path,source,codec,bitrate_kbps\na.mp4,s,x264,-3\n", "must be above 0"),
        ("m.csv", "path,source,codec\na.mp4,s,x264\na.mp4,s,x265\n", "listed twice"),
        ("m.csv", "path,source,codec,score\na.mp4,s,x264,3\n", "written by the tool"),
        ("m.json", '{"path": "a.mp4"}', "expected a JSON list of objects"),
        ("m.json", '[{"path": "a.mp4", "codec": "x"}]', "lacks the column(s) ['source']"),
        ("m.json", "[", "not valid JSON"),
        ("missing.csv", None, "cannot be read"),
    ],
)
def test_manifest_errors(tmp_path: Path, name: str, text: str | None, words: str) -> None:
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(ValueError) as err:
        rd.read_manifest(tmp_path / name)
    assert words in str(err.value)


@pytest.fixture(scope="module")
def model():
    import dvlta_metric

    return dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")


def test_missing_file_is_an_error_row_and_the_rest_are_scored(ladder: Path, model) -> None:
    encodes = rd.read_manifest(ladder / "manifest.csv")[:3]
    encodes.append(rd.Encode(str(ladder / "gone.mp4"), "clip", "ultrafast", 50.0))
    results = rd.score_encodes(model, encodes, num_workers=0)
    assert [r.ok for r in results] == [True, True, True, False]
    assert "no such file" in results[3].error and results[3].score is None
    assert all(r.bitrate_from == "container" for r in results[:3]) and results[3].bitrate_from == "manifest"
    assert rd.monotonicity(results)["pairs"] == 2  # the failed encode is left out


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    results = [_result(f"{c}{k}", s, c, k, 0.1 + k / 1000) for s in "st" for c in "ab" for k in (100, 200, 400)]
    for by in ("source", "pooled"):
        rd.plot(results, tmp_path / f"{by}.png", by=by, scale="logit")
        assert (tmp_path / f"{by}.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="by must be"):
        rd.plot(results, tmp_path / "x.png", by="codec")


# ---------------------------------------------------------------------------------------------- the command
def _rd(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    code = main(["rd", *map(str, argv), "--model", "dvlta-vqa-tiny", "--random-weights", "--no-progress"])
    return code, capsys.readouterr().err


def test_command_end_to_end(capsys, ladder: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    code, err = _rd(capsys, ladder / "manifest.csv", "--out", out, "--workers", "0", "--scale", "logit")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["bd.json", "encodes.csv", "monotonicity.json", "rd.png"]
    with open(out / "encodes.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["codec"] for r in rows] == ["ultrafast"] * 3 + ["medium"] * 3
    assert all(float(r["bitrate_kbps"]) > 0 and r["bitrate_from"] == "container" and r["crf"] for r in rows)
    assert float(rows[0]["value"]) == pytest.approx(math.log(float(rows[0]["score"]) / (1 - float(rows[0]["score"]))))
    bd = json.loads((out / "bd.json").read_text())
    assert bd["scale"] == "logit" and bd["written_by"] == "dvlta-metric rd" and bd["weights"].startswith("random")
    assert {(p["anchor"], p["test"]) for p in bd["pairs"]} == {("medium", "ultrafast"), ("ultrafast", "medium")}
    for pair in bd["pairs"]:  # random weights: a value, or the reason there is none
        assert (pair["bd_rate_percent"] is None) != (pair["bd_rate_error"] is None)
    mono = json.loads((out / "monotonicity.json").read_text())
    assert mono["pairs"] == 4 and len(mono["violations"]) == 4 - mono["ordered"]
    # a second run writes over its own report
    code, err = _rd(capsys, ladder / "manifest.csv", "--out", out, "--workers", "0", "--no-plot")
    assert code == 0, err
    assert not (out / "rd.png").exists()  # the stale plot of the first run is gone with it


def test_command_failed_encode_exits_1(capsys, ladder: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        f"path,source,codec\n{ladder / 'ultrafast_18.mp4'},clip,x\n{ladder / 'ultrafast_42.mp4'},clip,x\n"
        f"{tmp_path / 'gone.mp4'},clip,x\n"
    )
    code, err = _rd(capsys, manifest, "--out", tmp_path / "out", "--workers", "0", "--no-plot")
    assert code == 1
    assert "failed:" in err and "gone.mp4" in err
    rows = list(csv.DictReader(open(tmp_path / "out" / "encodes.csv", newline="")))
    assert [bool(r["error"]) for r in rows] == [False, False, True]


def test_command_refuses_a_folder_it_did_not_write(capsys, ladder: Path, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, err = _rd(capsys, ladder / "manifest.csv", "--out", out)
    assert code == 2 and "holds notes.txt, which dvlta-metric rd did not write" in err
    (out / "notes.txt").unlink()
    (out / "bd.json").write_text('{"someone": "else"}')  # one of its names, not its content
    code, err = _rd(capsys, ladder / "manifest.csv", "--out", out)
    assert code == 2 and "holds bd.json" in err
    assert (out / "bd.json").read_text() == '{"someone": "else"}'


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["missing.csv", "--out", "o"], "cannot be read"),
        (["bad.csv", "--out", "o"], "lacks the column(s)"),
        (["good.csv", "--out", "file.txt"], "is a file"),
        (["good.csv"], "--out"),
        (["good.csv", "--out", "o", "--scale", "mos"], "invalid choice"),
        (["good.csv", "--out", "o", "--batch-size", "0"], "must be at least 1"),
    ],
)
def test_command_usage_errors_exit_2(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], words: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.csv").write_text("path\na.mp4\n")
    (tmp_path / "good.csv").write_text("path,source,codec\na.mp4,s,x\n")
    (tmp_path / "file.txt").write_text("")
    code, err = _rd(capsys, *argv)
    assert code == 2 and words in err
    assert not (tmp_path / "o").exists()  # nothing written
