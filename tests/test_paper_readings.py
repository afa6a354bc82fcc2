"""The paper's literal readings as options (issue 15): consecutive frames for the TCM, FAST-VQA-B's random
test clips with a fixed seed, eq. 7 in parallel (tested in ``test_temporal_context.py``), mmcv's resize
rounding and TAdaConv's routing initialisation."""

from __future__ import annotations

import math

import pytest
import torch

import dvlta_metric
from dvlta_metric.branches.tadaconv import RouteFunc
from dvlta_metric.config import FragmentViewConfig, FrameViewConfig, TemporalContextConfig
from dvlta_metric.model import branch_view
from dvlta_metric.views import (
    consecutive_indices,
    fragment_clip_indices,
    frames_to_decode,
    segment_centre_indices,
    view_indices,
)
from dvlta_metric.views.frames import resized_size


# ------------------------------------------------------------------------------------ consecutive frames
def test_consecutive_frames_are_neighbours_centred_at_inference() -> None:
    cfg = FrameViewConfig()  # T = 8
    idx = consecutive_indices(300, cfg)
    assert idx.tolist() == list(range(146, 154))  # (300 - 8) // 2 = 146
    assert consecutive_indices(8, cfg).tolist() == list(range(8))
    assert consecutive_indices(9, cfg).tolist() == list(range(8))  # (9 - 8) // 2 = 0


def test_consecutive_frames_start_at_random_in_training() -> None:
    cfg = FrameViewConfig()
    starts = set()
    for seed in range(40):
        idx = consecutive_indices(100, cfg, train=True, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(idx.diff(), torch.ones(7, dtype=torch.long))
        assert 0 <= int(idx[0]) and int(idx[-1]) < 100
        starts.add(int(idx[0]))
    assert len(starts) > 10  # really drawn
    same = [consecutive_indices(100, cfg, train=True, generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    assert same[0].equal(same[1])


def test_a_video_shorter_than_the_run_repeats_its_last_frame() -> None:
    cfg = FrameViewConfig()
    assert consecutive_indices(3, cfg).tolist() == [0, 1, 2, 2, 2, 2, 2, 2]
    assert consecutive_indices(1, cfg, train=True).tolist() == [0] * 8
    with pytest.raises(ValueError, match="at least one frame"):
        consecutive_indices(0, cfg)


def test_view_indices_draw_the_fragment_clip_then_the_consecutive_start() -> None:
    frag, frames = FragmentViewConfig(), FrameViewConfig()
    out = view_indices(500, frag, frames, consecutive=frames, train=True, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    clip = fragment_clip_indices(500, frag, train=True, generator=g)
    run = consecutive_indices(500, frames, train=True, generator=g)
    assert list(out) == ["fragments", "frames", "consecutive"]
    assert out["fragments"].equal(clip) and out["consecutive"].equal(run)
    assert out["frames"].equal(segment_centre_indices(500, frames))  # never random


def test_the_paper_model_reads_consecutive_frames_in_its_tcm_and_segments_in_clip() -> None:
    cfg = dvlta_metric.get_model_config("dvlta-vqa")
    assert (cfg.frame_view.tcm_sampling, cfg.frame_view.vbtc_sampling) == ("consecutive", "segments")
    assert cfg.temporal_context.attention == "parallel"
    assert cfg.fragment_view.test_clips == "centre"
    assert {name: branch_view(name, cfg) for name in cfg.branches} == {
        "bvfe": "fragments",
        "tcm": "consecutive",
        "vbtc": "frames",
    }
    zeroshot = dvlta_metric.get_model_config("dvlta-vqa-zeroshot")
    assert [branch_view(name, zeroshot) for name in zeroshot.branches] == ["frames"]  # ViFi-CLIP's sampling


def test_tiny_model_views_follow_the_sampling_options() -> None:
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    assert model.views == ("fragments", "frames", "consecutive")
    assert model.branches["tcm"].view == "consecutive" and model.branches["vbtc"].view == "frames"
    video = torch.rand(60, 3, 64, 80)
    views = model.make_views(video)
    assert views["consecutive"].shape == views["frames"].shape
    t = model.config.frame_view.num_frames
    start = (60 - t) // 2
    indices = model.view_indices(60)
    assert indices["consecutive"].tolist() == list(range(start, start + t))
    assert set(indices["consecutive"].tolist()) <= set(model.needed_frames(60))
    # the consecutive view is the frame view of those frames (of T frames, the segment centres are all of them)
    expected = model.make_views(video[start : start + t])["frames"]
    assert torch.equal(views["consecutive"], expected)

    shared = dvlta_metric.create(
        "dvlta-vqa-tiny", pretrained=False, device="cpu", frame_view={"tcm_sampling": "segments"}
    )
    assert shared.views == ("fragments", "frames")
    literal = dvlta_metric.create(
        "dvlta-vqa-tiny", pretrained=False, device="cpu", frame_view={"vbtc_sampling": "consecutive"}
    )
    assert literal.views == ("fragments", "consecutive")
    assert frames_to_decode(literal.view_indices(60)) == literal.needed_frames(60)


def test_the_tcm_sampling_changes_the_score_and_only_the_tcm_feature() -> None:
    torch.manual_seed(0)
    a = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    b = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", frame_view={"tcm_sampling": "segments"})
    b.load_state_dict(a.state_dict())
    video = torch.rand(90, 3, 64, 80, generator=torch.Generator().manual_seed(3))
    ea, eb = a.explain(video), b.explain(video)
    names = list(a.branch_names)
    for i, name in enumerate(names):
        same = torch.allclose(ea.features[i], eb.features[i], atol=1e-6)
        assert same == (name != "tcm"), name


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("frame_view", "tcm_sampling", "continuous"),
        ("frame_view", "vbtc_sampling", "random"),
        ("fragment_view", "test_clips", "center"),
        ("temporal_context", "attention", "serial"),
    ],
)
def test_unknown_option_values_are_refused(section: str, field: str, value: str) -> None:
    with pytest.raises(ValueError, match=field):
        dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", **{section: {field: value}})


def test_attention_option_reaches_the_tcm() -> None:
    model = dvlta_metric.create(
        "dvlta-vqa-tiny", pretrained=False, device="cpu", temporal_context={"attention": "sequential"}
    )
    assert model.branches["tcm"].cbam.order == "sequential"
    assert TemporalContextConfig().attention == "parallel"


# ------------------------------------------------------------------------------------ FAST-VQA-B test clips
def _fastvqa_b_clip_starts(num_frames: int, cfg: FragmentViewConfig, draws: list[int]) -> list[int]:
    """FAST-VQA-B's ``FragmentSampleFrames(clip_len, num_clips, interval)``: each clip starts at a random point
    inside its ``num_frames // num_clips`` part (``draws`` are its random offsets)."""
    part = num_frames // cfg.num_clips
    span = cfg.clip_len * cfg.frame_interval
    return [i * part + (draws[i] if part > span else 0) for i in range(cfg.num_clips)]


def test_random_test_clips_start_inside_their_quarter_and_repeat_every_call() -> None:
    cfg = FragmentViewConfig(test_clips="random")
    idx = fragment_clip_indices(1000, cfg)
    assert idx.shape == (4, 32) and torch.equal(idx.diff(dim=1), torch.full((4, 31), 2))
    part, span = 250, 64
    draws = torch.randint(part - span, (4,), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    assert idx[:, 0].tolist() == _fastvqa_b_clip_starts(1000, cfg, draws)
    for i, start in enumerate(idx[:, 0].tolist()):
        assert i * part <= start < (i + 1) * part - span
    assert torch.equal(idx, fragment_clip_indices(1000, cfg))  # deterministic: the seed fixes the draw
    assert not torch.equal(idx, fragment_clip_indices(1000, FragmentViewConfig()))  # not the centred clips
    other_seed = fragment_clip_indices(1000, FragmentViewConfig(test_clips="random", seed=7))
    assert not torch.equal(idx, other_seed)


def test_random_test_clips_of_short_videos_start_at_their_quarter() -> None:
    cfg = FragmentViewConfig(test_clips="random")
    idx = fragment_clip_indices(200, cfg)  # parts of 50 frames are shorter than a 64-frame clip
    assert idx[:, 0].tolist() == [0, 50, 100, 150]
    assert idx.max() < 200 and fragment_clip_indices(3, cfg).max() < 3


def test_random_test_clips_give_the_same_score_every_call() -> None:
    model = dvlta_metric.create(
        "dvlta-vqa-tiny", pretrained=False, device="cpu", fragment_view={"test_clips": "random"}
    )
    video = torch.rand(300, 3, 48, 64, generator=torch.Generator().manual_seed(2))
    assert torch.equal(model(video), model(video))
    assert set(model.view_indices(300)["fragments"].flatten().tolist()) <= set(model.needed_frames(300))


# ------------------------------------------------------------------------------------ resize and init
@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [(512, 1001, (256, 501)), (1001, 512, (501, 256)), (288, 352, (256, 313)), (256, 455, (256, 455))],
)
def test_resize_rounds_halves_up_as_mmcv(height: int, width: int, expected: tuple[int, int]) -> None:
    assert resized_size(height, width, 256) == expected


def test_routing_convs_get_tadaconv_initialisation() -> None:
    torch.manual_seed(0)
    route = RouteFunc(256, reduction=4)
    for conv in (route.conv_g, route.conv_a):
        fan_out = conv.out_channels * math.prod(conv.kernel_size)
        std = math.sqrt(2.0 / fan_out)  # kaiming normal, fan_out, ReLU gain
        assert conv.weight.std().item() == pytest.approx(std, rel=0.05)
        assert abs(conv.weight.mean().item()) < 0.1 * std
        assert torch.count_nonzero(conv.bias) == 0
    assert torch.count_nonzero(route.conv_b.weight) == 0  # alpha == 1 at initialisation
    assert torch.allclose(route(torch.randn(2, 256, 4, 5, 5)), torch.ones(2, 256, 4, 1, 1))
