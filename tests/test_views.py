"""Fragment and frame views: temporal indices, native-resolution patches, resizing, determinism, elongated
frames, centre crop; the input checks in front of them (aspect ratio, dtype, device)."""

from __future__ import annotations

import pytest
import torch

from dvlta_metric._inputs import MAX_ASPECT_RATIO, check_video
from dvlta_metric.config import FragmentViewConfig, FrameViewConfig
from dvlta_metric.views import (
    center_crop,
    extract_fragments,
    fragment_clip_indices,
    fragment_view,
    frame_view,
    frames_to_decode,
    sample_fragment_offsets,
    segment_centre_indices,
    upsample_short_side,
    view_indices,
)
from dvlta_metric.views import fragments as fragments_module
from dvlta_metric.views import frames as frames_module


def test_fragment_clip_indices_match_fastvqa_test_sampling() -> None:
    cfg = FragmentViewConfig()  # clip_len 32, interval 2, 4 clips
    idx = fragment_clip_indices(240, cfg)
    assert idx.shape == (4, 32)
    avg = (240 - 64 + 1) / 4
    starts = [int(i * avg + avg / 2) for i in range(4)]
    assert idx[:, 0].tolist() == starts
    assert torch.equal(idx[:, 1] - idx[:, 0], torch.full((4,), 2))


def test_fragment_indices_wrap_for_short_videos() -> None:
    cfg = FragmentViewConfig()
    idx = fragment_clip_indices(10, cfg)
    assert idx.min() >= 0 and idx.max() < 10
    assert idx[0, :6].tolist() == [0, 2, 4, 6, 8, 0]
    assert fragment_clip_indices(1, cfg).eq(0).all()


def test_fragment_train_indices_are_one_random_clip() -> None:
    cfg = FragmentViewConfig()
    g = torch.Generator().manual_seed(3)
    idx = fragment_clip_indices(300, cfg, train=True, generator=g)
    assert idx.shape == (1, 32)
    assert 0 <= int(idx[0, 0]) <= 300 - 64


def test_segment_centres() -> None:
    cfg = FrameViewConfig(num_frames=8)
    assert segment_centre_indices(80, cfg).tolist() == [5, 15, 25, 35, 45, 55, 65, 75]
    assert segment_centre_indices(1, cfg).tolist() == [0] * 8
    assert segment_centre_indices(3, cfg).max() <= 2


def test_frames_to_decode_is_the_union_of_the_view_indices() -> None:
    frag, frames = FragmentViewConfig(), FrameViewConfig()
    indices = view_indices(240, frag, frames)
    assert indices["fragments"].equal(fragment_clip_indices(240, frag))
    assert indices["frames"].equal(segment_centre_indices(240, frames))
    assert list(view_indices(240, None, frames)) == ["frames"]
    need = frames_to_decode(indices)
    expected = set(fragment_clip_indices(240, frag).flatten().tolist()) | set(
        segment_centre_indices(240, frames).tolist()
    )
    assert need == sorted(expected)
    assert len(need) < 240


def test_fragment_cells_are_unresized_native_patches() -> None:
    cfg = FragmentViewConfig(clip_len=4, aligned=4, num_clips=1)
    frames = torch.rand(8, 3, 360, 640)
    g = torch.Generator().manual_seed(0)
    top, left = sample_fragment_offsets(360, 640, 2, cfg, g)
    out = extract_fragments(frames, top, left, 32, 4)
    assert out.shape == (8, 3, 224, 224)
    cell_h, cell_w = 360 // 7, 640 // 7
    for n in (0, 3, 5):
        r = n // 4
        for i in range(7):
            for j in range(7):
                t, l_ = int(top[r, i, j]), int(left[r, i, j])
                # the patch lies inside its grid cell and is copied pixel for pixel
                assert i * cell_h <= t <= i * cell_h + cell_h - 32
                assert j * cell_w <= l_ <= j * cell_w + cell_w - 32
                cell = out[n, :, i * 32 : (i + 1) * 32, j * 32 : (j + 1) * 32]
                assert torch.equal(cell, frames[n, :, t : t + 32, l_ : l_ + 32])


def test_positions_fixed_within_aligned_run() -> None:
    cfg = FragmentViewConfig(clip_len=8, aligned=4, num_clips=1)
    frames = torch.rand(1, 3, 300, 400).expand(8, -1, -1, -1).contiguous()
    out = fragment_view(frames, cfg, generator=torch.Generator().manual_seed(1))
    assert out.shape == (1, 3, 8, 224, 224)
    assert torch.equal(out[:, :, 0], out[:, :, 3])  # same run, same positions, same frame
    assert not torch.equal(out[:, :, 0], out[:, :, 4])  # next run moves the patches


def test_fragment_view_seeded_is_reproducible_and_random_otherwise() -> None:
    cfg = FragmentViewConfig(clip_len=4, aligned=4, num_clips=1)
    frames = torch.rand(4, 3, 480, 640)
    a = fragment_view(frames, cfg, generator=torch.Generator().manual_seed(cfg.seed))
    b = fragment_view(frames, cfg, generator=torch.Generator().manual_seed(cfg.seed))
    assert torch.equal(a, b)
    torch.manual_seed(0)
    c = fragment_view(frames, cfg)
    torch.manual_seed(1)
    d = fragment_view(frames, cfg)
    assert not torch.equal(c, d)


def test_small_frames_are_upsampled() -> None:
    frames = torch.rand(2, 3, 100, 150)
    up = upsample_short_side(frames, 224)
    assert min(up.shape[-2:]) == 224 and up.shape[-1] == 336
    cfg = FragmentViewConfig(clip_len=2, aligned=2, num_clips=1)
    out = fragment_view(frames, cfg, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 2, 224, 224)
    assert torch.isfinite(out).all()


def test_frame_view_resize_crop_normalise() -> None:
    cfg = FrameViewConfig()
    frames = torch.rand(8, 3, 540, 960)
    out = frame_view(frames, cfg)
    assert out.shape == (8, 3, 224, 224)
    # a constant grey frame normalises to (0.5 - mean) / std per channel
    grey = torch.full((1, 3, 300, 200), 0.5)
    g = frame_view(grey, cfg)
    mean, std = torch.tensor(cfg.mean), torch.tensor(cfg.std)
    assert torch.allclose(g[0, :, 100, 100], (0.5 - mean) / std, atol=1e-5)


def test_views_are_differentiable() -> None:
    frames = torch.rand(4, 3, 240, 320, requires_grad=True)
    cfg = FragmentViewConfig(clip_len=4, aligned=4, num_clips=1)
    out = fragment_view(frames, cfg, generator=torch.Generator().manual_seed(0)).sum()
    out = out + frame_view(frames, FrameViewConfig(num_frames=4)).sum()
    out.backward()
    assert frames.grad is not None and frames.grad.abs().sum() > 0


def test_cutting_from_the_whole_video_equals_cutting_from_gathered_frames() -> None:
    cfg = FragmentViewConfig(clip_len=4, aligned=2, num_clips=2)
    video = (torch.rand(30, 3, 300, 400) * 255).to(torch.uint8)
    idx = fragment_clip_indices(30, cfg).flatten()
    gathered = fragment_view(video[idx], cfg, generator=torch.Generator().manual_seed(5))
    direct = fragment_view(video, cfg, generator=torch.Generator().manual_seed(5), frame_index=idx)
    assert torch.equal(gathered, direct)
    small = (torch.rand(30, 3, 120, 160) * 255).to(torch.uint8)  # upsampled first: same result either way
    a = fragment_view(small[idx], cfg, generator=torch.Generator().manual_seed(5))
    b = fragment_view(small, cfg, generator=torch.Generator().manual_seed(5), frame_index=idx)
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------- elongated frames
def _record_interpolations(monkeypatch: pytest.MonkeyPatch, module: object) -> list[int]:
    """Replace ``module.F`` so that every interpolation's output size (pixels per channel) is recorded."""
    sizes: list[int] = []

    class Recorder:
        def __getattr__(self, name: str) -> object:
            return getattr(torch.nn.functional, name)

        @staticmethod
        def interpolate(x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
            out = torch.nn.functional.interpolate(x, *args, **kwargs)
            sizes.append(out.shape[0] * out.shape[-2] * out.shape[-1])
            return out

    monkeypatch.setattr(module, "F", Recorder())
    return sizes


def test_elongated_frames_are_upsampled_a_few_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """16 frames of 16x1200 upsample to 224x16800 each (60 M pixels together): never all at once."""
    cfg = FragmentViewConfig(clip_len=8, aligned=8, num_clips=2)
    video = (torch.rand(10, 3, 16, 1200) * 255).to(torch.uint8)
    idx = fragment_clip_indices(10, cfg).flatten()
    whole = fragment_view(video[idx], cfg, generator=torch.Generator().manual_seed(3))  # before recording
    sizes = _record_interpolations(monkeypatch, fragments_module)
    out = fragment_view(video, cfg, generator=torch.Generator().manual_seed(3), frame_index=idx)
    assert out.shape == (2, 3, 8, 224, 224)
    assert len(sizes) > 1 and max(sizes) <= fragments_module.UPSAMPLE_CHUNK_PIXELS
    assert torch.equal(out, whole)


@pytest.mark.parametrize("budget", [1, 3 * 224 * 336, 5 * 224 * 336])
def test_upsampling_in_chunks_gives_the_same_view(monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    """Chunks of 1, 3 and 5 frames (across run boundaries) give exactly the one-call view, gradients too."""
    cfg = FragmentViewConfig(clip_len=4, aligned=2, num_clips=2)
    video = torch.rand(12, 3, 100, 150)
    idx = torch.tensor([0, 2, 4, 6, 5, 7, 9, 11])
    reference = fragment_view(video, cfg, generator=torch.Generator().manual_seed(7), frame_index=idx)
    monkeypatch.setattr(fragments_module, "UPSAMPLE_CHUNK_PIXELS", budget)
    leaf = video.clone().requires_grad_(True)
    chunked = fragment_view(leaf, cfg, generator=torch.Generator().manual_seed(7), frame_index=idx)
    assert torch.equal(chunked, reference)
    chunked.sum().backward()
    assert leaf.grad is not None and leaf.grad[idx].abs().sum() > 0 and leaf.grad[1].abs().sum() == 0


def test_elongated_frame_view_is_resized_a_few_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = FrameViewConfig(num_frames=4)
    frames = torch.rand(4, 3, 16, 1200)  # 256x19200 each after resizing: 19.7 M pixels together
    whole = frame_view(frames, cfg)
    sizes = _record_interpolations(monkeypatch, frames_module)
    monkeypatch.setattr(frames_module, "RESIZE_CHUNK_PIXELS", 256 * 19200)
    chunked = frame_view(frames, cfg)
    assert sizes == [256 * 19200] * 4 and torch.equal(chunked, whole)
    monkeypatch.undo()
    sizes = _record_interpolations(monkeypatch, frames_module)
    assert torch.equal(frame_view(frames, cfg), whole) and max(sizes) <= frames_module.RESIZE_CHUNK_PIXELS


def test_too_elongated_frames_are_refused() -> None:
    ok = torch.zeros(1, 3, 16, 16 * MAX_ASPECT_RATIO, dtype=torch.uint8)
    check_video(ok)
    check_video(ok.transpose(-1, -2))
    for shape in [(1, 3, 16, 16 * MAX_ASPECT_RATIO + 1), (1, 3, 20000, 32)]:
        with pytest.raises(ValueError, match=rf"too elongated .*at most {MAX_ASPECT_RATIO} times"):
            check_video(torch.zeros(shape, dtype=torch.uint8))


# ---------------------------------------------------------------------------------------------- input checks
@pytest.mark.parametrize("dtype", [getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n)])
def test_float8_video_is_refused_by_the_input_check(tiny_model, dtype: torch.dtype) -> None:
    video = torch.rand(4, 3, 32, 40).to(dtype)
    with pytest.raises(TypeError, match=rf"unsupported dtype {dtype}; expected uint8 .* float16, bfloat16"):
        check_video(video)
    with pytest.raises(TypeError, match="unsupported dtype"):
        tiny_model(video)


def test_meta_and_sparse_videos_are_refused_by_the_input_check(tiny_model) -> None:
    for dtype in (torch.float32, torch.uint8):
        meta = torch.empty(4, 3, 32, 40, dtype=dtype, device="meta")
        with pytest.raises(ValueError, match="meta device holds no pixel values; expected a tensor on the CPU"):
            check_video(meta)
        with pytest.raises(ValueError, match="meta device"):
            tiny_model(meta)
    with pytest.raises(TypeError, match="expected a dense"):
        check_video(torch.rand(4, 3, 32, 40).to_sparse())
    for ok in (torch.float16, torch.bfloat16, torch.float64):
        check_video(torch.rand(4, 3, 32, 40).to(ok))


# ---------------------------------------------------------------------------------------------- centre crop
def test_center_crop_needs_frames_at_least_the_crop_size() -> None:
    frames = torch.rand(2, 3, 200, 300)
    assert center_crop(frames, 200).shape == (2, 3, 200, 200)
    assert torch.equal(center_crop(frames, 100), frames[..., 50:150, 100:200])
    for size in (224, 301):
        with pytest.raises(ValueError, match=rf"200x300 are smaller than the {size}x{size} crop"):
            center_crop(frames, size)
    with pytest.raises(ValueError, match="at least 1"):
        center_crop(frames, 0)


def test_training_view_indices_follow_the_generator() -> None:
    frag, frames = FragmentViewConfig(), FrameViewConfig()
    draws = [view_indices(300, frag, frames, train=True, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert draws[0]["fragments"].shape == (1, frag.clip_len)
    assert draws[0]["fragments"].equal(draws[1]["fragments"])
    assert not draws[0]["fragments"].equal(draws[2]["fragments"])
    assert draws[0]["frames"].equal(segment_centre_indices(300, frames))  # the frame view is not random
