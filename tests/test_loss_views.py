"""Loss views (issue 16): a model created with ``as_loss=True`` draws fresh views on every call from a generator
it owns, so that a loss reaches every pixel over many calls; scoring stays fixed. Short videos: clips that
read the same frames are one clip, computed once; ``overrun="mirror"`` pads without a jump."""

from __future__ import annotations

import pytest
import torch

import dvlta_metric
import dvlta_metric.branches.basic_visual as basic_visual
from dvlta_metric.config import FragmentViewConfig, FrameViewConfig
from dvlta_metric.views import fragment_clip_indices, view_indices
from dvlta_metric.views.frames import random_crop_offset, resized_size
from dvlta_metric.views.temporal import fold_indices, loss_clip_indices, loss_segment_indices


def _touched(model: dvlta_metric.DVLTAVQA, video: torch.Tensor) -> torch.Tensor:
    """Which pixel-frames of ``video`` ``(T, 3, H, W)`` one loss call puts gradient on: ``(T, H, W)`` bool."""
    x = video.clone().requires_grad_(True)
    (1 - model(x)).backward()
    assert x.grad is not None
    return x.grad.abs().sum(dim=1) > 0


def test_two_loss_calls_touch_different_pixels_and_scoring_stays_fixed() -> None:
    torch.manual_seed(0)
    loss_model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", as_loss=True)
    video = torch.rand(16, 3, 135, 240, generator=torch.Generator().manual_seed(1))
    first, second = _touched(loss_model, video), _touched(loss_model, video)
    assert (first != second).any()
    scorer = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    scorer.load_state_dict(loss_model.state_dict())
    scores = [scorer(video) for _ in range(3)]
    assert all(torch.equal(scores[0], s) for s in scores)  # bit-identical


def test_loss_views_are_reproducible_from_the_model_seed() -> None:
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", as_loss=True)
    video = torch.rand(20, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    model.seed_views(5)
    a = [model(video).item() for _ in range(3)]
    model.seed_views(5)
    b = [model(video).item() for _ in range(3)]
    assert a == b and len(set(a)) == 3  # the same run again, and a fresh draw on every call


def test_64_loss_calls_reach_99_percent_of_pixel_positions_at_540p() -> None:
    """Coverage of the views themselves: the positions whose pixels a loss view reads (and so whose gradient a
    loss can be nonzero), over 64 fresh draws of a 960x540 clip."""
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", as_loss=True)
    video = torch.rand(16, 3, 540, 960, generator=torch.Generator().manual_seed(3), requires_grad=True)
    covered = torch.zeros(540, 960, dtype=torch.bool)
    first_call = None
    for _ in range(64):
        video.grad = None
        views = model.make_views(video)
        sum(view.sum() for view in views.values()).backward()
        touched = video.grad.abs().sum(dim=(0, 1)) > 0
        first_call = touched.float().mean().item() if first_call is None else first_call
        covered |= touched
    assert covered.float().mean().item() >= 0.99
    assert first_call < 0.9  # one call alone does not: coverage comes from the fresh draws
    scoring = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    video.grad = None
    sum(view.sum() for view in scoring.make_views(video).values()).backward()
    assert (video.grad.abs().sum(dim=(0, 1)) > 0).float().mean().item() < 0.9  # the fixed views do not


def test_loss_clip_and_segment_draws() -> None:
    frag, frames = FragmentViewConfig(), FrameViewConfig()
    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 100, 1000):
        clips = loss_clip_indices(n, frag, g)
        assert clips.shape == (4, 32) and 0 <= clips.min() and clips.max() < n
        for i, start in enumerate(clips[:, 0].tolist()):
            assert (i * n) // 4 <= start < max((i * n) // 4 + 1, ((i + 1) * n) // 4) or n < 4
        picks = loss_segment_indices(n, frames, g)
        assert picks.shape == (8,) and picks.max() < n
    starts = {tuple(loss_clip_indices(1000, frag, g)[:, 0].tolist()) for _ in range(20)}
    assert len(starts) == 20
    with pytest.raises(ValueError, match="two different samplings"):
        view_indices(100, frag, frames, train=True, loss=True, generator=g)


def test_random_crop_offsets_cover_every_position() -> None:
    cfg = FrameViewConfig()
    g = torch.Generator().manual_seed(0)
    h, w = resized_size(540, 960, cfg.resize)
    lefts = {random_crop_offset(540, 960, cfg, g)[1] for _ in range(2000)}
    assert min(lefts) == 0 and max(lefts) == w - cfg.crop
    assert random_crop_offset(224, 224, FrameViewConfig(resize=224, crop=224), g) == (0, 0)


def test_a_loss_model_reads_files_with_its_own_draw(tmp_path) -> None:
    from video_files import write_clip

    path = write_clip(tmp_path / "a.mp4", frames=40, width=128, height=96)
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", as_loss=True)
    decoded = model.read(path)
    assert decoded.training_indices is not None and decoded.training_indices["fragments"].shape[0] == 2
    assert set(decoded.indices.tolist()) == {
        i for idx in decoded.training_indices.values() for i in idx.flatten().tolist()
    }
    score = model(decoded)
    assert 0 < float(score) < 1  # decoded uint8 frames carry no gradient; the draw is what matters here


# ------------------------------------------------------------------------------------ short videos
def test_clips_that_read_the_same_frames_are_computed_once_with_the_same_score(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    video = torch.rand(6, 3, 96, 128, generator=torch.Generator().manual_seed(4))  # shorter than one clip
    indices = model.view_indices(6)["fragments"]
    assert torch.equal(indices[0], indices[1])  # every clip reads the same frames
    views = model.make_views(video)["fragments"]
    assert torch.equal(views[0], views[1])  # one clip: the same offsets too
    batches: list[int] = []
    hook = model.branches["bvfe"].encoder.register_forward_hook(lambda m, i, o: batches.append(i[0].shape[0]))
    once = model(video)
    assert batches == [1]  # computed once
    monkeypatch.setattr(basic_visual, "repeated_clips", lambda clips: None)
    every = model(video)
    assert batches == [1, 2]
    hook.remove()
    assert abs(once.item() - every.item()) < 1e-6
    long = torch.rand(60, 3, 96, 128, generator=torch.Generator().manual_seed(5))
    assert basic_visual.repeated_clips(model.make_views(long)["fragments"]) is None


def test_repeated_clips_finds_equal_clips_only() -> None:
    a, b = torch.rand(3, 4, 8, 8), torch.rand(3, 4, 8, 8)
    c = a.clone()
    c[0, 0, 0, 1] += 1e-3  # one element off, outside the fingerprint's stride
    found = basic_visual.repeated_clips(torch.stack([a, b, a.clone(), c, b]))
    assert found is not None
    unique, inverse = found
    assert unique.tolist() == [0, 1, 3] and inverse.tolist() == [0, 1, 0, 2, 1]
    assert basic_visual.repeated_clips(torch.stack([a, b])) is None


def test_mirror_overrun_has_no_jump() -> None:
    assert fold_indices(torch.arange(12), 4, "mirror").tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1]
    assert fold_indices(torch.arange(5), 1, "mirror").tolist() == [0] * 5
    assert fold_indices(torch.arange(6), 4, "wrap").tolist() == [0, 1, 2, 3, 0, 1]
    wrap = fragment_clip_indices(10, FragmentViewConfig())
    mirror = fragment_clip_indices(10, FragmentViewConfig(overrun="mirror"))
    assert (wrap[0].diff().abs() > 2).any()  # 8 -> 0: the jump
    assert (mirror[0].diff().abs() <= 2).all() and mirror.max() < 10
    with pytest.raises(ValueError, match="overrun"):
        FragmentViewConfig(overrun="loop")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ frame rates
def test_reference_fps_samples_encodes_at_two_frame_rates_at_the_same_moments(tmp_path) -> None:
    """A 60 fps version of a 30 fps clip (every frame twice) scores exactly as the clip with reference_fps=30;
    counting frames (the default) does not."""
    torch.manual_seed(0)
    timed = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", reference_fps=30.0)
    counting = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    counting.load_state_dict(timed.state_dict())
    clip30 = torch.rand(40, 3, 64, 80, generator=torch.Generator().manual_seed(6))
    clip60 = clip30.repeat_interleave(2, dim=0)
    assert torch.equal(timed(clip60, fps=60), timed(clip30, fps=30))
    assert torch.equal(timed(clip30, fps=30), counting(clip30))  # at the reference rate nothing changes
    assert not torch.equal(counting(clip60), counting(clip30))
    assert torch.equal(timed(clip60), counting(clip60))  # a tensor without fps: frames are counted
    assert timed.view_indices(80, fps=60)["consecutive"].tolist() == [36, 38, 40, 42]
    with pytest.raises(ValueError, match="fps must be a positive"):
        timed(clip30, fps=0)
    with pytest.raises(ValueError, match="reference_fps"):
        dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", reference_fps=-1.0)


def test_reference_fps_reads_files_by_their_frame_rate(tmp_path) -> None:
    from video_files import write_clip

    torch.manual_seed(0)
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", reference_fps=12.5)
    path = write_clip(tmp_path / "c.mp4", frames=50, width=96, height=64)
    decoded = model.read(path)
    assert decoded.fps and decoded.fps != 12.5
    assert decoded.indices.tolist() == model.needed_frames(50, fps=decoded.fps)
    assert torch.equal(model(path), model(decoded))
    timeline = model.timeline(path, window_frames=25)
    assert len(timeline.scores) == 2


# ------------------------------------------------------------------------------------ review fixes
def test_equal_clips_from_different_pixels_each_get_their_gradient() -> None:
    """The dedup of equal clips stays out of the way of input gradients: equal values from two tensors."""
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", as_loss=True)
    clips = torch.randn(1, 2, 3, 8, 224, 224)
    a, b = clips.clone().requires_grad_(True), clips.clone().requires_grad_(True)
    model.branches["bvfe"].encode(torch.cat([a, b])).sum().backward()
    assert a.grad is not None and b.grad is not None
    assert torch.allclose(a.grad, b.grad) and a.grad.abs().sum() > 0


def test_timeline_of_a_loss_model_uses_the_fixed_views() -> None:
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", as_loss=True)
    video = torch.rand(32, 3, 64, 80, generator=torch.Generator().manual_seed(7))
    model.seed_views(0)
    first = model.timeline(video, window_frames=16).scores
    assert torch.equal(first, model.timeline(video, window_frames=16).scores)
    after = model(video)
    model.seed_views(0)
    assert torch.equal(after, model(video))  # the timeline drew nothing from the model's generator


def test_a_video_read_for_training_views_is_refused_for_loss_views(tmp_path) -> None:
    from video_files import write_clip

    path = write_clip(tmp_path / "t.mp4", frames=40, width=96, height=64)
    trainer = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu").train()
    decoded = trainer.read(path)
    assert decoded.drawn_for == "train"
    loss_model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", as_loss=True)
    with pytest.raises(ValueError, match="read for train views and is cut for loss views"):
        loss_model.make_views(decoded)


def test_a_dash_line_in_a_file_list_is_a_file_named_dash(tmp_path) -> None:
    from dvlta_metric._cli_inputs import read_file_list

    listing = tmp_path / "list.txt"
    listing.write_text("-\na.mp4\n")
    assert read_file_list(str(listing)) == ["./-", "a.mp4"]
