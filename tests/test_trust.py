"""Scores people can read and trust: MOS calibration, K views, quality maps, attributes, the technical score."""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_run import run
from conftest import make_video
from video_files import write_clip

import dvlta_metric
from dvlta_metric._checkpoint import write_calibration
from dvlta_metric.attributes import TEMPLATE, TextEncoder, attribute_queries
from dvlta_metric.branches.swin3d import cell_isolation_mask
from dvlta_metric.calibration import Calibration, fit_calibration, logistic4
from dvlta_metric.errors import CheckpointError
from dvlta_metric.model import DVLTAVQA
from dvlta_metric.quality_map import OVERLAY_MARKER, QualityMap, overlay, write_overlays
from dvlta_metric.uncertainty import student_t_cdf, student_t_quantile, view_interval
from dvlta_metric.views.normalize import normalize


@pytest.fixture(scope="module")
def video() -> torch.Tensor:
    return make_video(40, 240, 320, seed=3)


# ---------------------------------------------------------------- calibration
def _synthetic_pairs(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    rng = np.random.default_rng(seed)
    truth = (4.6, 1.3, 0.48, 0.06)
    scores = rng.uniform(0.3, 0.7, n)
    return scores, logistic4(scores, *truth) + rng.normal(0, 0.05, n), truth


def test_fit_recovers_the_logistic_and_matches_scipy() -> None:
    scores, mos, truth = _synthetic_pairs()
    cal = fit_calibration(scores, mos, mos_range=(1, 5), dataset="synthetic", split="all")
    assert cal.method == "logistic" and cal.num_videos == 60
    assert np.allclose(cal.params[:3], truth[:3], atol=0.08) and abs(abs(cal.params[3]) - truth[3]) < 0.02
    pytest.importorskip("scipy")
    from training.metrics import fit_logistic

    reference = fit_logistic(scores, mos)
    grid = np.linspace(0.3, 0.7, 21)
    assert np.allclose(logistic4(grid, *cal.params), reference(grid), atol=1e-4)


def test_fit_falls_back_to_a_line_and_refuses_bad_pairs() -> None:
    cal = fit_calibration([0.2, 0.4, 0.6], [1.0, 2.0, 3.0])
    assert cal.method == "linear" and cal.params[:2] == pytest.approx((5.0, 0.0))
    with pytest.raises(ValueError, match="differ in length"):
        fit_calibration([0.1, 0.2], [1.0])
    with pytest.raises(ValueError, match="all MOS values are equal"):
        fit_calibration([0.1, 0.2, 0.3], [2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        fit_calibration([0.1, float("nan")], [1.0, 2.0])


def test_calibration_round_trips_through_a_model_directory(
    tiny_model: DVLTAVQA, video: torch.Tensor, tmp_path: Path
) -> None:
    model = copy.deepcopy(tiny_model)
    scores, mos, _ = _synthetic_pairs()
    cal = model.calibrate(scores, mos, mos_range=(1.0, 5.0), dataset="synthetic", split="split 0, test")
    model.save_pretrained(tmp_path)
    doc = json.loads((tmp_path / "config.json").read_text())
    assert doc["calibration"]["function"] == "logistic4" and doc["calibration"]["dataset"] == "synthetic"
    loaded = dvlta_metric.create(f"local-dir:{tmp_path}", device="cpu")
    assert loaded.calibration == cal
    score = loaded(video)
    b1, b2, b3, b4 = cal.params
    expected = (b1 - b2) / (1 + math.exp(-(float(score) - b3) / abs(b4))) + b2
    assert float(loaded(video, scale="mos")) == pytest.approx(expected, rel=1e-6)
    assert float(loaded(video, scale="mos")) == pytest.approx(float(logistic4(float(score), *cal.params)), rel=1e-6)


def test_a_model_without_calibration_says_so(tiny_model: DVLTAVQA, video: torch.Tensor) -> None:
    assert tiny_model.calibration is None
    with pytest.raises(ValueError, match="no MOS calibration.*calibrate"):
        tiny_model(video, scale="mos")
    with pytest.raises(ValueError, match="scale must be one of"):
        tiny_model(video, scale="MOS")


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"function": "logistic4", "params": [1, 2, 3], "mos_range": [1, 5]}, "4 finite numbers"),
        ({"function": "logistic4", "params": [1, 2, 3, "x"], "mos_range": [1, 5]}, "4 finite numbers"),
        ({"function": "exec", "params": [1, 2, 3, 4], "mos_range": [1, 5]}, "function"),
        ({"function": "linear", "params": [1, 2, 0, 0], "mos_range": [5, 1]}, "mos_range"),
        ({"function": "linear", "params": [1, 2, 0, 0], "mos_range": [1, 5], "code": "x"}, "unknown"),
        ([1, 2], "JSON object"),
        ({"function": "logistic4", "params": [1, 2, 0.5, 10**400], "mos_range": [1, 5]}, "magnitude at most"),
        ({"function": "logistic4", "params": [1e308, -1e308, 0.5, 0.1], "mos_range": [1, 5]}, "magnitude at most"),
        ({"function": "linear", "params": [1, 2, 0, 0], "mos_range": [1, 10**400]}, "mos_range"),
        ({"function": "linear", "params": [1, 2, 0, 0], "mos_range": [1, 5], "num_videos": 10**400}, "num_videos"),
    ],
)
def test_a_hostile_calibration_section_is_refused(
    saved_tiny: tuple[Path, DVLTAVQA], tmp_path: Path, section: object, match: str
) -> None:
    source, _ = saved_tiny
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((source / name).read_bytes())
    doc = json.loads((tmp_path / "config.json").read_text())
    doc["calibration"] = section
    (tmp_path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=match):
        DVLTAVQA.from_pretrained(tmp_path)


# ---------------------------------------------------------------- K views
def test_one_view_is_todays_score_exactly(tiny_model: DVLTAVQA, video: torch.Tensor) -> None:
    plain = tiny_model.score_views([tiny_model.make_views(video)])[0][0]
    assert torch.equal(tiny_model(video), plain)
    assert torch.equal(tiny_model(video, views=1), plain)
    assert torch.equal(tiny_model.explain(video, views=1).score, plain)


def test_k_views_mean_is_the_mean_of_single_views(tiny_model: DVLTAVQA, video: torch.Tensor) -> None:
    k = 4
    singles = torch.stack([tiny_model.score_views([tiny_model.make_views(video, view=i)])[0][0] for i in range(k)])
    assert len(set(singles.tolist())) == k  # the views differ
    assert float(tiny_model(video, views=k)) == pytest.approx(float(singles.mean()), abs=1e-6)
    again = tiny_model.explain(video, views=k)
    assert torch.allclose(again.view_scores, singles, atol=1e-6)
    batch = tiny_model(torch.stack([video, video.flip(-1)]), views=k)
    assert float(batch[0]) == pytest.approx(float(singles.mean()), abs=1e-6)


def test_spread_and_interval(tiny_model: DVLTAVQA, video: torch.Tensor) -> None:
    e = tiny_model.explain(video, views=5)
    s = e.view_scores
    assert float(e.spread) == pytest.approx(float(s.std(correction=1)), rel=1e-6)
    half = student_t_quantile(0.975, 4) * float(e.spread) / math.sqrt(5)
    assert e.interval.tolist() == pytest.approx([float(s.mean()) - half, float(s.mean()) + half], rel=1e-6)
    assert tiny_model.explain(video).spread is None
    with pytest.raises(ValueError, match="views must be a whole number"):
        tiny_model(video, views=0)


def test_student_t_against_known_values() -> None:
    assert student_t_quantile(0.975, 1) == pytest.approx(12.7062047, rel=1e-7)
    assert student_t_quantile(0.975, 4) == pytest.approx(2.7764451, rel=1e-7)
    assert student_t_quantile(0.975, 30) == pytest.approx(2.0422725, rel=1e-7)
    assert student_t_cdf(0.0, 7) == pytest.approx(0.5)
    interval = view_interval(torch.tensor([[1.0, 3.0]]))
    assert interval.tolist()[0] == pytest.approx([2 - 12.7062047, 2 + 12.7062047], rel=1e-6)


def test_views_of_a_file_read_only_their_frames(tiny_model: DVLTAVQA, tmp_path: Path) -> None:
    path = write_clip(tmp_path / "clip.mp4", frames=40, width=256, height=240)
    all_frames = dvlta_metric.read_video(path).frames
    assert float(tiny_model(path, views=3)) == pytest.approx(float(tiny_model(all_frames, views=3)), abs=1e-6)
    needed = tiny_model.needed_frames(40, views=3)
    assert set(tiny_model.needed_frames(40)) <= set(needed) <= set(range(40))


def test_view_layout_replays_the_cut(tiny_model: DVLTAVQA, video: torch.Tensor) -> None:
    cfg = tiny_model.config.fragment_view
    for view in (0, 2):
        frag = tiny_model.make_views(video, view=view)["fragments"]  # (C, 3, L, S, S)
        layout = tiny_model.view_layout(video.shape[0], 240, 320, view)["fragments"]
        c, i, j, f = 1, 3, 5, 5
        top = int(layout.top[c, f // layout.aligned, i, j])
        left = int(layout.left[c, f // layout.aligned, i, j])
        patch = video[int(layout.frames[c, f]), :, top : top + cfg.fsize, left : left + cfg.fsize]
        expected = normalize(patch[None], cfg.mean, cfg.std)[0]
        s = cfg.fsize
        assert torch.allclose(frag[c, :, f, i * s : (i + 1) * s, j * s : (j + 1) * s], expected, atol=1e-6)


# ---------------------------------------------------------------- quality maps
def test_the_isolated_fragment_map_is_local(tiny_model: DVLTAVQA, video: torch.Tensor) -> None:
    half = video.shape[-1] // 2
    other = video.clone()
    other[..., :half] = make_video(40, 240, 320, seed=11)[..., :half]
    a, b = tiny_model.quality_map(video, isolated=True), tiny_model.quality_map(other, isolated=True)
    assert a.isolated and torch.equal(a.frames, b.frames) and torch.equal(a.boxes, b.boxes)
    # a value belongs to a temporal token that covers aligned pairs of fragment frames with the same patch
    sees_left = a.boxes[:, 1] < half
    changed = ~torch.isclose(a.values, b.values, atol=1e-5, rtol=1e-4)
    assert bool(changed[sees_left].all()) and not bool(changed[~sees_left].any())
    assert a.values.double().std() > 0  # not a constant map
    assert a.score == pytest.approx(float(tiny_model(video)), abs=1e-6)  # the score is the model's
    rendered = a.render(a.frame_indices()[0])
    assert rendered.shape == (240, 320) and bool(torch.isnan(rendered).any()) and bool(torch.isfinite(rendered).any())
    # the one-pass map is not local: the Swin3D's attention mixes the cells (docs/trust.md says so)
    c, d = tiny_model.quality_map(video), tiny_model.quality_map(other)
    assert not c.isolated and bool((~torch.isclose(c.values, d.values, atol=1e-5, rtol=1e-4))[~sees_left].any())


def test_isolated_maps_need_a_dividing_grid_and_the_fragment_source(tiny_model: DVLTAVQA, video: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="cell grid does not divide"):
        cell_isolation_mask((2, 56, 56), (2, 7, 7), (0, 0, 0), 5)
    with pytest.raises(ValueError, match="isolated=True is for the fragment map"):
        tiny_model.quality_map(video, source="clip", isolated=True)
    with pytest.raises(TypeError, match="isolated must be True or False"):
        tiny_model.quality_map(video, isolated=1)  # type: ignore[arg-type]


def test_cell_isolation_mask_keeps_attention_inside_cells() -> None:
    # 1 frame of 4x4 tokens, 2x2 cells, one 4x4 window shifted by 1: the shift moves tokens across cells
    mask = cell_isolation_mask((1, 4, 4), (1, 4, 4), (0, 1, 1), 2)
    assert mask.shape == (1, 16, 16) and bool((mask.diagonal(dim1=1, dim2=2) == 0).all())
    # window order after the roll by -1: token (y, x) at window position ((y - 1) % 4, (x - 1) % 4)
    rolled = (torch.arange(4) + 1) % 4 // 2  # cell row (or column) of the token at each window position
    cell = (rolled[:, None] * 2 + rolled[None, :]).reshape(-1)
    expected = torch.where(cell[:, None] == cell[None, :], 0.0, float("-inf"))
    assert torch.equal(mask[0], expected)


def test_the_fragment_map_averages_to_the_branch_projection(tiny_model: DVLTAVQA, video: torch.Tensor) -> None:
    e = tiny_model.explain(video, maps=True)
    with torch.no_grad():
        text = tiny_model.text_features()
    d = F.normalize(text[1], dim=0) - F.normalize(text[2], dim=0)
    bvfe = e.features[tiny_model.branch_names.index("bvfe")]
    assert e.maps is not None and e.maps[0].mean() == pytest.approx(float(bvfe @ d), rel=1e-4, abs=1e-6)
    assert torch.equal(e.score, tiny_model(video))


def test_clip_map_and_overlays(tiny_model: DVLTAVQA, video: torch.Tensor, tmp_path: Path) -> None:
    qmap = tiny_model.quality_map(video, source="clip", views=2)
    grid = 224 // tiny_model.config.clip_vision.patch_size
    assert qmap.values.numel() == 2 * tiny_model.config.frame_view.num_frames * grid * grid
    pngs = write_overlays(qmap, video, tmp_path / "png", frames=qmap.frame_indices()[:2])
    assert len(pngs) == 2 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    mp4 = write_overlays(tiny_model.quality_map(video), video, tmp_path / "map.mp4", fill="cell")
    assert mp4[0].stat().st_size > 0 and dvlta_metric.read_video(mp4[0]).num_frames > 1
    with pytest.raises(ValueError, match="one video"):
        tiny_model.quality_map(torch.stack([video, video]))


# ---------------------------------------------------------------- attributes and the technical score
@pytest.fixture(scope="module")
def zeroshot_arch(tiny_model: DVLTAVQA) -> DVLTAVQA:
    """The zero-shot architecture (the CLIP branch and the prompt head, no adapters) at tiny sizes, random weights."""
    torch.manual_seed(1)
    config = tiny_model.config.replace(name="tiny-zeroshot", branches=("vbtc",), use_adapters=False)
    model = DVLTAVQA(config)
    return model.set_text_encoder(TextEncoder.from_config(config))


def test_attributes_are_the_softmax_of_prompt_similarities(zeroshot_arch: DVLTAVQA, video: torch.Tensor) -> None:
    model = zeroshot_arch
    found = model.attributes(video, ["blurry", ("a photo of a rainy video.", "a photo of a sunny video.")])
    feature = model.explain(video).features[0]
    encoder = model.text_encoder
    assert encoder is not None
    prompts = [
        TEMPLATE.format("blurry"),
        TEMPLATE.format("sharp"),
        "a photo of a rainy video.",
        "a photo of a sunny video.",
    ]
    emb = encoder(prompts)
    cos = [float(F.cosine_similarity(feature, e, dim=0)) for e in emb]
    s = model.config.logit_scale
    expected = [math.exp(s * cos[0]) / (math.exp(s * cos[0]) + math.exp(s * cos[1]))]
    expected.append(math.exp(s * cos[2]) / (math.exp(s * cos[2]) + math.exp(s * cos[3])))
    assert found.names == ("blurry", "a photo of a rainy video.")
    assert found.scores.tolist() == pytest.approx(expected, rel=1e-5)
    default = model.attributes(video)
    assert len(default.names) == 7 and bool(((default.scores > 0) & (default.scores < 1)).all())


def test_the_quality_pair_as_an_attribute_is_the_score(tiny_model: DVLTAVQA, video: torch.Tensor) -> None:
    prompts = tiny_model.config.prompts
    e = tiny_model.explain(video, attributes=[(prompts.positive, prompts.negative)], views=2)
    assert e.attributes is not None
    assert float(e.attributes.scores[0]) == pytest.approx(float(e.score), abs=1e-6)


def test_attribute_errors(tiny_model: DVLTAVQA, zeroshot_arch: DVLTAVQA, video: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="attributes is empty"):
        zeroshot_arch.attributes(video, [])
    with pytest.raises(ValueError, match="no known antonym"):
        attribute_queries(["purple"])
    with pytest.raises(TypeError, match="list of words"):
        attribute_queries("blurry")  # type: ignore[arg-type]
    trained = copy.deepcopy(tiny_model)
    trained.weights_origin = "local-dir:/somewhere (sha256 0123456789ab)"  # as create() records loaded weights
    trained.set_text_encoder(None)
    with pytest.raises(ValueError, match="needs a text tower"):
        trained.attributes(video, ["blurry"])
    assert tiny_model.attributes(video, ["blurry"]).scores.shape == (1,)  # random weights: a random text tower


def test_technical_score(tiny_model: DVLTAVQA, zeroshot_arch: DVLTAVQA, video: torch.Tensor) -> None:
    e = tiny_model.explain(video)
    with torch.no_grad():
        text = tiny_model.text_features()
    bvfe = e.features[tiny_model.branch_names.index("bvfe")][None]
    assert float(tiny_model.technical_score(video)) == pytest.approx(
        float(tiny_model.head(bvfe, text[1], text[2])[0]), abs=1e-6
    )
    with pytest.raises(ValueError, match="fragment branch"):
        zeroshot_arch.technical_score(video)


def test_calibration_type_checks(zeroshot_arch: DVLTAVQA) -> None:
    with pytest.raises(ValueError, match="b4"):
        Calibration((1.0, 0.0, 0.5, 0.0))
    with pytest.raises(TypeError, match="Calibration or None"):
        zeroshot_arch.set_calibration("1-5")  # type: ignore[arg-type]


# ---------------------------------------------------------------- the command line
def test_cli_scale_mos(tiny_model: DVLTAVQA, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dvlta_metric.cli import main

    clip = write_clip(tmp_path / "clip.mp4", frames=20, width=256, height=240)
    plain = ["score", str(clip), "--device", "cpu", "--no-progress", "--format", "json"]
    assert main([*plain, "--model", "dvlta-vqa-tiny", "--random-weights", "--scale", "mos"]) == 2
    assert "has no MOS calibration" in capsys.readouterr().err
    model = copy.deepcopy(tiny_model)
    scores, mos, _ = _synthetic_pairs()
    cal = model.calibrate(scores, mos, mos_range=(1.0, 5.0))
    model.save_pretrained(tmp_path / "calibrated")
    assert main([*plain, "--model", f"local-dir:{tmp_path / 'calibrated'}", "--scale", "mos"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["mos"] == pytest.approx(float(logistic4(row["score"], *cal.params)), rel=1e-9)


def test_cli_views_adds_interval_columns(
    tiny_model: DVLTAVQA, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dvlta_metric.cli import main

    clip = write_clip(tmp_path / "clip.mp4", frames=20, width=256, height=240)
    argv = ["score", str(clip), "--model", "dvlta-vqa-tiny", "--random-weights", "--device", "cpu", "--no-progress"]
    torch.manual_seed(0)  # the CLI's random weights are tiny_model's (conftest seeds 0 too)
    assert main([*argv, "--format", "json", "--views", "3"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    e = tiny_model.explain(clip, views=3)
    assert row["score"] == pytest.approx(float(e.score), abs=1e-6)
    assert row["spread"] == pytest.approx(float(e.spread), rel=1e-5)
    assert [row["ci_low"], row["ci_high"]] == pytest.approx(e.interval.tolist(), rel=1e-5)


def test_cli_map_writes_overlays(tiny_model: DVLTAVQA, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dvlta_metric.cli import main

    clip = write_clip(tmp_path / "clip.mp4", frames=20, width=256, height=240)
    argv = ["map", str(clip), "--model", "dvlta-vqa-tiny", "--random-weights", "--device", "cpu"]
    torch.manual_seed(0)
    assert main([*argv, "--out", str(tmp_path / "maps"), "--frames", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "fragments" and out["score"] == pytest.approx(float(tiny_model(clip)), abs=1e-6)
    assert len(out["files"]) == 3 and all(Path(f).read_bytes()[:4] == b"\x89PNG" for f in out["files"])
    assert main([*argv, "--out", str(tmp_path / "clip.mp4.map.mp4"), "--source", "clip"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == [str(tmp_path / "clip.mp4.map.mp4")]
    assert main([*argv, "--out", str(tmp_path / "iso"), "--frames", "1", "--isolated"]) == 0
    assert json.loads(capsys.readouterr().out)["isolated"] is True
    assert main([*argv, "--out", str(tmp_path / "bad"), "--source", "clip", "--isolated"]) == 2
    assert "--isolated is for the fragment map" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_training_evaluation_writes_the_calibration(saved_tiny: tuple[Path, DVLTAVQA], tmp_path: Path) -> None:
    pytest.importorskip("scipy")
    from dvlta_metric._checkpoint import write_calibration
    from training.evaluate import calibration_from_fit
    from training.metrics import fit_logistic

    source, _ = saved_tiny
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((source / name).read_bytes())
    scores, mos, _ = _synthetic_pairs()
    fit = fit_logistic(scores, mos)
    cal = calibration_from_fit(fit, mos, dataset="KoNViD-1k", split="split 0 (test)", mos_range=(1.0, 5.0))
    write_calibration(tmp_path, cal)
    loaded = DVLTAVQA.from_pretrained(tmp_path)
    assert loaded.calibration == cal and loaded.calibration.params == fit.params
    assert loaded.to_mos(torch.tensor([0.5], dtype=torch.float64)).item() == pytest.approx(float(fit(0.5)), rel=1e-12)
    write_calibration(tmp_path, None)
    assert DVLTAVQA.from_pretrained(tmp_path).calibration is None


# ---------------------------------------------------------------- from the red-team review
@pytest.fixture(scope="module")
def small_map(tiny_model: DVLTAVQA) -> tuple[QualityMap, torch.Tensor]:
    video = make_video(20, 48, 64, seed=5)
    return tiny_model.quality_map(video), video


def test_overlays_never_replace_a_file_they_did_not_write(
    small_map: tuple[QualityMap, torch.Tensor], tmp_path: Path
) -> None:
    qmap, video = small_map
    first = qmap.frame_indices()[0]
    victim = tmp_path / "victim.mp4"
    victim.write_bytes(b"MY DATA")
    with pytest.raises(ValueError, match="victim.mp4 exists and was not written by dvlta-metric.*delete it"):
        write_overlays(qmap, video, victim)
    assert victim.read_bytes() == b"MY DATA"
    folder = tmp_path / "pngs"
    folder.mkdir()
    (folder / f"fragments_{first:06d}.png").write_bytes(b"MINE")
    with pytest.raises(ValueError, match=f"fragments_{first:06d}.png exists and was not written"):
        write_overlays(qmap, video, folder)
    assert sorted(os.listdir(folder)) == [f"fragments_{first:06d}.png"]  # checked before anything was written
    assert (folder / f"fragments_{first:06d}.png").read_bytes() == b"MINE"
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"OUTSIDE")
    links = tmp_path / "links"
    links.mkdir()
    (links / f"fragments_{first:06d}.png").symlink_to(outside)
    (links / "link.mp4").symlink_to(outside)
    with pytest.raises(ValueError, match="is a symbolic link"):
        write_overlays(qmap, video, links)
    with pytest.raises(ValueError, match="is a symbolic link"):
        write_overlays(qmap, video, links / "link.mp4")
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "linked").symlink_to(real, target_is_directory=True)
    with pytest.raises(ValueError, match="linked is a symbolic link"):
        write_overlays(qmap, video, tmp_path / "linked")
    assert outside.read_bytes() == b"OUTSIDE" and os.listdir(real) == []
    with pytest.raises(ValueError, match="source must be one of"):
        QualityMap("../x", qmap.frame_size, qmap.frames, qmap.boxes, qmap.cells, qmap.values)
    hand_made = copy.copy(qmap)
    hand_made.source = "../escape"
    with pytest.raises(ValueError, match="source must be one of"):
        write_overlays(hand_made, video, tmp_path / "escape")
    assert not (tmp_path / "escape").exists()


def test_a_rerun_replaces_its_own_overlays(small_map: tuple[QualityMap, torch.Tensor], tmp_path: Path) -> None:
    qmap, video = small_map
    pngs = write_overlays(qmap, video, tmp_path / "png", frames=qmap.frame_indices()[:2])
    head = pngs[0].read_bytes()
    assert b"Software\x00" + OVERLAY_MARKER.encode() in head[:80]
    assert write_overlays(qmap, video, tmp_path / "png", frames=qmap.frame_indices()[:2]) == pngs
    (mp4,) = write_overlays(qmap, video, tmp_path / "map.mp4")
    assert write_overlays(qmap, video, tmp_path / "map.mp4", fill="cell") == [mp4]
    assert dvlta_metric.read_video(mp4).num_frames == len(qmap.frame_indices())
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] and not list((tmp_path / "png").glob(".*"))


def test_write_overlays_checks_frames_fps_and_dtype(small_map: tuple[QualityMap, torch.Tensor], tmp_path: Path) -> None:
    qmap, video = small_map
    with pytest.raises(ValueError, match="frames is empty"):
        write_overlays(qmap, video, tmp_path / "a.mp4", frames=[])
    with pytest.raises(TypeError, match="whole numbers"):
        write_overlays(qmap, video, tmp_path / "b", frames=[1.5])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="whole numbers"):
        write_overlays(qmap, video, tmp_path / "b", frames=[True])
    for fps in (0, -5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="fps must be a finite number"):
            write_overlays(qmap, video, tmp_path / "c.mp4", fps=fps)
    with pytest.raises(TypeError, match="uint8.*uint16.*float"):
        write_overlays(qmap, (video * 255).to(torch.int16), tmp_path / "d")
    assert not any(tmp_path.iterdir())


def test_overlays_of_16_bit_frames_are_not_washed_out() -> None:
    frame8 = (torch.arange(3 * 8 * 10) % 256).to(torch.uint8).reshape(3, 8, 10)
    frame16 = frame8.to(torch.int32).mul(257).to(torch.uint16)  # the same brightness in 16 bits
    values = torch.linspace(-1, 1, 80).reshape(8, 10)
    values[0, 0] = float("nan")
    assert np.array_equal(overlay(frame16, values), overlay(frame8, values))
    with pytest.raises(TypeError, match="int32"):
        overlay(frame8.to(torch.int32), values)


def test_maps_refuse_random_views(
    tiny_model: DVLTAVQA, tiny_loss_model: DVLTAVQA, small_map: tuple[QualityMap, torch.Tensor]
) -> None:
    _, video = small_map
    with pytest.raises(ValueError, match="as_loss=True.*random draws.*model.eval"):
        tiny_loss_model.quality_map(video)
    with pytest.raises(ValueError, match="as_loss=True.*random draws"):
        tiny_loss_model.explain(video, maps=True)
    trained = copy.deepcopy(tiny_model).train()
    with pytest.raises(ValueError, match="training mode.*random draws"):
        trained.quality_map(video, source="clip")


def test_explain_maps_carry_the_score_and_confidence_is_checked(
    tiny_model: DVLTAVQA, small_map: tuple[QualityMap, torch.Tensor]
) -> None:
    qmap, video = small_map
    e = tiny_model.explain(video, maps=True)
    assert e.maps is not None and e.maps[0].score == pytest.approx(float(e.score)) == pytest.approx(qmap.score)
    with pytest.raises(ValueError, match="confidence must be a float in \\(0, 1\\)"):
        tiny_model.explain(video, confidence=1.5)


def test_calibration_bounds_and_fingerprint() -> None:
    cal = Calibration((4.6, 1.3, 0.48, 0.06), mos_range=(1.0, 5.0))
    assert cal.fingerprint() == Calibration((4.6, 1.3, 0.48, 0.06), mos_range=(1.0, 5.0)).fingerprint()
    assert cal.fingerprint() != Calibration((4.6, 1.3, 0.48, 0.07), mos_range=(1.0, 5.0)).fingerprint()
    for params in [(1e308, -1e308, 0.5, 0.1), (1, 2, 0.5, 10**400), (2e6, 0, 0.5, 0.1)]:
        with pytest.raises(ValueError, match="magnitude at most"):
            Calibration(params)  # type: ignore[arg-type]
    step = Calibration((5.0, 1.0, 0.5, 5e-324))  # a width below MIN_WIDTH: the same step in torch and NumPy
    x = torch.tensor([0.25, 0.75], dtype=torch.float64)
    assert step(x).tolist() == [step.map_score(0.25), step.map_score(0.75)] == [1.0, 5.0]
    with pytest.raises(ValueError, match="not a finite number"):
        cal.map_score(float("nan"))
    with pytest.raises(ValueError, match="above 1e\\+06.*hardly vary"):
        fit_calibration([0.5, 0.5 + 1e-9, 0.5 + 2e-9], [1.0, 3.0, 5.0])


def test_decoded_video_read_for_one_view_says_how_to_read_k(tiny_model: DVLTAVQA, tmp_path: Path) -> None:
    path = write_clip(tmp_path / "clip.mp4", frames=40, width=256, height=240)
    decoded = tiny_model.read(path)
    with pytest.raises(ValueError, match="scoring view 1 .*model.read\\(path, views=K\\)"):
        tiny_model(decoded, views=3)


def test_attribute_pairs_must_differ_and_fit_the_text_context(zeroshot_arch: DVLTAVQA) -> None:
    with pytest.raises(ValueError, match="same prompt twice"):
        attribute_queries([("a photo of a x video.", "A photo of a  x video.")])
    encoder = zeroshot_arch.text_encoder
    assert encoder is not None
    long = "a very " * 60 + "long prompt"
    with pytest.raises(ValueError, match="prompt 'a very a very .* tokens long.*shorten it"):
        encoder(["a photo of a sharp video.", long])


def test_score_files_checks_views_before_reading_any_file(tiny_model: DVLTAVQA, tiny_loss_model: DVLTAVQA) -> None:
    with pytest.raises(ValueError, match="from 1 to 64, got 65"):
        tiny_model.score_files(["/no/such/file.mp4"], views=65)
    with pytest.raises(ValueError, match="training mode or a loss"):
        tiny_loss_model.score_files(["/no/such/file.mp4"], views=2)


def test_cli_views_are_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.csv"
    code, _, err = run(capsys, "score", tmp_path, "--views", "65", "--output", out, "--random-weights")
    assert code == 2 and "--views: must be at most 64" in err and not out.exists()
    code, _, err = run(capsys, "map", tmp_path / "v.mp4", "--out", tmp_path / "m", "--views", "0")
    assert code == 2 and "--views: must be at least 1" in err


def test_cli_map_refuses_its_input_and_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = write_clip(tmp_path / "victim.mp4", frames=8)
    before = clip.read_bytes()
    argv = ["--model", "dvlta-vqa-tiny", "--random-weights", "--device", "cpu"]
    code, _, err = run(capsys, "map", clip, "--out", clip, *argv)
    assert code == 2 and "is the input video" in err and clip.read_bytes() == before
    code, _, err = run(capsys, "map", tmp_path / "missing.mp4", "--out", tmp_path / "m", *argv)
    assert code == 2 and "missing.mp4: no such file" in err and "Traceback" not in err
    (tmp_path / "taken.mp4").write_bytes(b"x")
    code, _, err = run(capsys, "map", clip, "--out", tmp_path / "taken.mp4", *argv)
    assert code == 2 and "taken.mp4 exists and was not written by dvlta-metric" in err
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    code, _, err = run(capsys, "map", broken, "--out", tmp_path / "b", *argv)
    assert code == 2 and "broken.mp4" in err and "Traceback" not in err


def test_cli_resume_refuses_rows_of_another_k_or_calibration(
    tiny_model: DVLTAVQA, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=20, width=256, height=240)
    out = tmp_path / "out.jsonl"
    argv = ["score", clip, "--model", "dvlta-vqa-tiny", "--random-weights", "--device", "cpu", "--no-progress"]
    assert run(capsys, *argv, "--views", "2", "--output", out)[0] == 0
    assert json.loads(out.read_text())["weights"] == "random (seed 0), fp32, views 2"
    code, _, err = run(capsys, *argv, "--views", "3", "--output", out)
    assert code == 2 and "views 2" in err and "views 3" in err
    model_dir = tmp_path / "calibrated"
    model = copy.deepcopy(tiny_model)
    scores, mos, _ = _synthetic_pairs()
    model.calibrate(scores, mos, mos_range=(1.0, 5.0))
    model.save_pretrained(model_dir)
    mos_out = tmp_path / "mos.jsonl"
    local = ["score", clip, "--model", f"local-dir:{model_dir}", "--device", "cpu", "--no-progress", "--scale", "mos"]
    assert run(capsys, *local, "--output", mos_out)[0] == 0
    row = json.loads(mos_out.read_text())
    assert row["weights"].endswith(f", calibration {model.calibration.fingerprint()}")
    write_calibration(model_dir, Calibration((4.0, 1.5, 0.5, 0.1), mos_range=(1.0, 5.0)))
    code, _, err = run(capsys, *local, "--output", mos_out)
    assert code == 2 and "calibration" in err and mos_out.read_text().count("\n") == 1


def test_evaluate_checks_calibrate_into_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training import evaluate

    with pytest.raises(ValueError, match="--calibrate-into .*config.json"):
        evaluate.check_calibration_target(tmp_path)
    argv = ["--model", "dvlta-vqa-tiny", "--out", str(tmp_path / "o"), "--calibrate-into", str(tmp_path / "none")]
    assert evaluate.main([*argv, "--dataset", "konvid"]) == 2  # before the model or a video is read
    assert "--calibrate-into" in capsys.readouterr().err and not (tmp_path / "o").exists()
