"""The public model API: shapes, ranges, determinism, batching, gradients, input errors."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from video_files import write_clip

import dvlta_metric
from dvlta_metric import DVLTAVQA
from dvlta_metric.model import _check_finite

VideoFactory = Callable[..., torch.Tensor]


def test_registry_lists_both_configs() -> None:
    names = dvlta_metric.list_models()
    assert "dvlta-vqa" in names and "dvlta-vqa-tiny" in names
    assert dvlta_metric.list_models("*tiny*") == ["dvlta-vqa-tiny"]
    assert dvlta_metric.list_models("dvlta-vqa-*") == [n for n in names if n.startswith("dvlta-vqa-")]
    with_weights = dvlta_metric.list_models(pretrained=True)  # other tests may register models of their own
    assert "dvlta-vqa-zeroshot" in with_weights and not {"dvlta-vqa", "dvlta-vqa-tiny"} & set(with_weights)
    with pytest.raises(TypeError, match="pattern must be a string"):
        dvlta_metric.list_models(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown model"):
        dvlta_metric.create("no-such-model", pretrained=False)


def test_metric_attributes(tiny_model: DVLTAVQA) -> None:
    assert tiny_model.lower_better is False
    assert tiny_model.score_range == (0.0, 1.0)
    assert not tiny_model.training


def test_single_video_gives_0d_score_in_range(tiny_model: DVLTAVQA, video_factory: VideoFactory) -> None:
    s = tiny_model(video_factory(12, 240, 320))
    assert s.shape == ()
    assert 0.0 < float(s) < 1.0
    assert not s.requires_grad


def test_batch_and_list(tiny_model: DVLTAVQA, video_factory: VideoFactory) -> None:
    batch = torch.stack([video_factory(10, 200, 260, seed=i) for i in range(3)])
    s = tiny_model(batch)
    assert s.shape == (3,)
    assert ((s > 0) & (s < 1)).all()
    videos = [video_factory(5, 180, 320, seed=1), video_factory(17, 300, 200, seed=2), video_factory(1, 64, 64)]
    s_list = tiny_model(videos)
    assert s_list.shape == (3,)


def test_deterministic_bit_identical(tiny_model: DVLTAVQA, video_factory: VideoFactory) -> None:
    v = video_factory(20, 240, 320, seed=5)
    a, b = tiny_model(v), tiny_model(v)
    assert torch.equal(a, b)


def test_batch_equals_alone(tiny_model: DVLTAVQA, video_factory: VideoFactory) -> None:
    videos = [video_factory(16, 224, 288, seed=i) for i in range(3)]
    batch = tiny_model(torch.stack(videos))
    alone = torch.stack([tiny_model(v) for v in videos])
    assert torch.allclose(batch, alone, atol=1e-5, rtol=0)
    mixed = tiny_model([videos[1], video_factory(9, 120, 200, seed=9), videos[2]])
    assert torch.allclose(mixed[[0, 2]], alone[1:], atol=1e-5, rtol=0)


def test_uint8_equals_float(tiny_model: DVLTAVQA, video_factory: VideoFactory) -> None:
    v8 = video_factory(8, 128, 160, dtype=torch.uint8)
    vf = v8.float() / 255.0
    assert torch.allclose(tiny_model(v8), tiny_model(vf), atol=1e-6)
    assert torch.allclose(tiny_model(vf.double()), tiny_model(vf.half().float()), atol=5e-3)


def test_short_and_small_videos_are_valid(tiny_model: DVLTAVQA, video_factory: VideoFactory) -> None:
    one_frame = tiny_model(video_factory(1, 240, 320))
    small = tiny_model(video_factory(6, 48, 80))
    assert 0 < float(one_frame) < 1 and 0 < float(small) < 1


def test_explain(tiny_model: DVLTAVQA, video_factory: VideoFactory) -> None:
    v = video_factory(8, 200, 200)
    e = tiny_model.explain(v)
    assert e.branches == tiny_model.branch_names == ("bvfe", "tcm", "vbtc")
    assert e.weights.shape == (3,) and e.features.shape == (3, tiny_model.config.embed_dim)
    assert torch.equal(e.score, tiny_model(v))
    # eq. 11: the weights are the cosines of the branch features with the adapted fusion prompt
    text = tiny_model.text_features()[0]
    cos = torch.nn.functional.cosine_similarity(e.features, text[None], dim=-1)
    assert torch.allclose(e.weights, cos, atol=1e-6)
    rows = tiny_model.explain(torch.stack([v, v])).rows()
    # the technical score (the prompt head on the fragment feature alone) comes with every explanation
    assert len(rows) == 2 and set(rows[0]) == {"score", "weight_bvfe", "weight_tcm", "weight_vbtc", "technical"}


def test_as_loss_gradient_reaches_pixels(tiny_loss_model: DVLTAVQA, video_factory: VideoFactory) -> None:
    v = video_factory(8, 160, 224).requires_grad_(True)
    s = tiny_loss_model(torch.stack([v, v.flip(-1)]))
    assert s.requires_grad
    s.sum().backward()
    assert v.grad is not None
    assert torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0
    # frozen backbones stay frozen
    assert all(not p.requires_grad for p in tiny_loss_model.branches["bvfe"].encoder.parameters())
    assert all(not p.requires_grad for p in tiny_loss_model.branches["vbtc"].encoder.parameters())


def test_softmax_fusion_override(video_factory: VideoFactory) -> None:
    torch.manual_seed(0)
    m = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", fusion="softmax")
    e = m.explain(video_factory(4, 100, 100))
    assert torch.allclose(e.weights.sum(), torch.tensor(1.0), atol=1e-6)
    with pytest.raises(TypeError, match="unknown model option"):
        dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, no_such_option=1)
    with pytest.raises(TypeError, match="unknown option"):
        dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, fragment_view={"clips": 2})


def test_pretrained_without_weights_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="pretrained=False"):
        dvlta_metric.create("dvlta-vqa-tiny")


@pytest.mark.parametrize(
    ("make", "err", "match"),
    [
        (lambda: torch.rand(3, 64, 64), ValueError, "3-D"),
        (lambda: torch.rand(1, 1, 4, 3, 64, 64), ValueError, "6-D"),
        (lambda: torch.rand(4, 1, 64, 64), ValueError, "3 colour channels"),
        (lambda: torch.rand(4, 64, 64, 3), ValueError, "channels-last"),
        (lambda: torch.full((4, 3, 64, 64), float("nan")), ValueError, "NaN"),
        (lambda: torch.full((4, 3, 64, 64), float("inf")), ValueError, "NaN or infinite"),
        (lambda: torch.rand(4, 3, 64, 64) * 255, ValueError, "divide by 255"),
        (lambda: torch.rand(4, 3, 64, 64) * 1.0005, ValueError, r"max 1.000\d+ \(clamp it with video.clamp"),
        (lambda: torch.rand(4, 3, 64, 64) - 0.5, ValueError, r"\[0, 1\]"),
        (lambda: torch.rand(0, 3, 64, 64), ValueError, "empty"),
        (lambda: torch.rand(0, 4, 3, 64, 64), ValueError, "empty"),
        (lambda: torch.rand(4, 3, 15, 64), ValueError, "too small"),
        (lambda: torch.randint(0, 9, (4, 3, 64, 64)), TypeError, "dtype"),
        (list, ValueError, "empty list"),
        (lambda: [torch.rand(4, 3, 64, 64), "x"], TypeError, "video 1 of the list"),
        (lambda: 3.0, TypeError, "expected a video tensor"),
    ],
)
def test_bad_input_errors(tiny_model: DVLTAVQA, make: Callable[[], object], err: type, match: str) -> None:
    with pytest.raises(err, match=match):
        tiny_model(make())


def test_bad_device() -> None:
    with pytest.raises(ValueError, match="device"):
        dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="nonsense")


@pytest.mark.slow
def test_full_model_size_and_forward(video_factory: VideoFactory) -> None:
    torch.manual_seed(0)
    model = dvlta_metric.create("dvlta-vqa", pretrained=False, device="cpu", fragment_view={"num_clips": 1})
    total = sum(p.numel() for p in model.parameters())
    clip = sum(p.numel() for p in model.branches["vbtc"].encoder.parameters())
    swin = sum(p.numel() for p in model.branches["bvfe"].encoder.parameters())
    assert 110e6 < total < 120e6, total
    assert 85e6 < clip < 88e6, clip
    assert 27.5e6 < swin < 28.7e6, swin
    e = model.explain(video_factory(40, 240, 320))
    assert e.score.shape == () and 0.0 <= float(e.score) <= 1.0
    assert e.features.shape == (3, 512)


@pytest.fixture
def strict_fp32_cuda() -> object:
    """Compare CPU and CUDA in true float32: turn TF32 off for the test, restore it afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield None
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_agree(video_factory: VideoFactory, strict_fp32_cuda: object) -> None:
    torch.manual_seed(0)
    cpu = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    gpu = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cuda")
    gpu.load_state_dict(cpu.state_dict())
    videos = torch.stack([video_factory(12, 240, 320, seed=i) for i in range(2)])
    assert torch.allclose(cpu(videos), gpu(videos).cpu(), atol=1e-4)
    # inputs on the CPU are moved to the model's device
    assert gpu(videos).device.type == "cuda"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_full_model_agrees_with_cpu(video_factory: VideoFactory, strict_fp32_cuda: object) -> None:
    torch.manual_seed(0)
    cpu = dvlta_metric.create("dvlta-vqa", pretrained=False, device="cpu", fragment_view={"num_clips": 1})
    gpu = dvlta_metric.create("dvlta-vqa", pretrained=False, device="cuda", fragment_view={"num_clips": 1})
    gpu.load_state_dict(cpu.state_dict())
    v = video_factory(40, 240, 320)
    ec, eg = cpu.explain(v), gpu.explain(v.cuda())
    assert torch.allclose(ec.weights, eg.weights.cpu(), atol=1e-4)
    assert torch.allclose(ec.score, eg.score.cpu(), atol=1e-4)


def test_precision_and_checkpointing_options(video_factory: VideoFactory) -> None:
    torch.manual_seed(0)
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", as_loss=True)
    v = video_factory(8, 128, 160).requires_grad_(True)
    model.seed_views(1)  # loss views are drawn afresh on each call: the same draw for both
    plain = model(v)
    (g_plain,) = torch.autograd.grad(plain, v)
    model.set_grad_checkpointing(True)
    model.seed_views(1)
    ckpt = model(v)
    (g_ckpt,) = torch.autograd.grad(ckpt, v)
    assert torch.allclose(plain, ckpt, atol=1e-6)
    assert torch.allclose(g_plain, g_ckpt, atol=1e-6, rtol=1e-4)
    model.set_grad_checkpointing(False)
    model.seed_views(1)
    bf16 = model.set_precision("bf16")(v)
    model.set_precision("fp32")
    assert abs(float(bf16.detach()) - float(plain.detach())) < 0.05
    with pytest.raises(ValueError, match="precision"):
        model.set_precision("int8")


def test_tune_allocator_keeps_scores(tiny_model: DVLTAVQA, video_factory: VideoFactory) -> None:
    import platform
    import sys

    v = video_factory(8, 160, 200)
    before = tiny_model(v)
    accepted = dvlta_metric.tune_allocator()
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert accepted is True
    else:
        assert accepted is False
    assert torch.equal(tiny_model(v), before)


def test_whole_model_float64_runs_and_half_conversion_points_to_set_precision(video_factory: VideoFactory) -> None:
    torch.manual_seed(0)
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    video = video_factory(8, 64, 64)
    expected = float(model(video))
    assert float(model.double()(video)) == pytest.approx(expected, abs=1e-6)
    model.half()
    with pytest.raises(ValueError, match=r"converted to torch.float16.*set_precision"):
        model(video)
    with pytest.raises(ValueError, match="set_precision"):
        model.make_views(video)
    assert float(model.float()(video)) == pytest.approx(expected, abs=1e-2)  # weights rounded to fp16 and back


def test_training_mode_reads_every_frame_of_a_file_and_needs_two_videos(video_factory: VideoFactory) -> None:
    from importlib.resources import files

    sample = str(files("dvlta_metric") / "assets" / "sample.mp4")
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    inference = model.read(sample)
    assert inference.num_frames > len(inference.frames) and inference.training_indices is None  # a subset
    model.train()
    for seed in range(4):  # random training clips: each used to need frames the inference subset lacks
        model.seed_views(seed)
        decoded = model.read(sample)
        clip = decoded.training_indices["fragments"]
        assert clip is not None and clip.shape == (1, model.config.fragment_view.clip_len)
        run = decoded.training_indices["consecutive"]  # the TCM's consecutive frames, drawn after the clip
        assert torch.equal(run.diff(), torch.ones(len(run) - 1, dtype=torch.long))
        drawn = set(clip.flatten().tolist()) | set(run.tolist())
        assert drawn <= set(decoded.indices.tolist())  # the drawn frames, and no more:
        assert len(decoded.frames) <= clip.numel() + 2 * model.config.frame_view.num_frames
        assert model([sample, sample]).shape == (2,)
        assert model([decoded, decoded]).shape == (2,)
    draws_random = r"training and loss views draw random frames.*model.train\(\) or as_loss=True, then model.read"
    with pytest.raises(ValueError, match=draws_random):
        for _ in range(10):  # an inference-mode read lacks most frames a random clip needs
            model([inference, inference])
    with pytest.raises(ValueError, match="at least 2 videos per call, got 1.*model.eval"):
        model(video_factory(8, 64, 64))
    with pytest.raises(ValueError, match="empty sequence"):
        model.eval().score_views([])


def test_clear_bias_cache_after_editing_tables_through_data(video_factory: VideoFactory) -> None:
    torch.manual_seed(0)
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    video = video_factory(8, 64, 64)
    before = float(model(video))
    for name, p in model.named_parameters():
        if name.endswith("position_bias_table"):
            p.data.normal_(0, 5)  # .data: the version counter the cache follows does not move
    fresh = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    fresh.load_state_dict(model.state_dict())
    assert model.clear_bias_cache() is model
    after = float(model(video))
    assert after == pytest.approx(float(fresh(video)), abs=1e-6) and after != pytest.approx(before, abs=1e-5)


def test_lists_of_decoded_videos_and_paths_score_like_each_alone() -> None:
    from importlib.resources import files

    sample = str(files("dvlta_metric") / "assets" / "sample.mp4")
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    decoded = model.read(sample)
    alone = model(decoded)
    both = model([decoded, sample])
    assert both.shape == (2,) and torch.allclose(both, alone.expand(2), atol=1e-6)


def test_a_callers_autocast_does_not_reach_the_fusion_and_score(video_factory: VideoFactory) -> None:
    torch.manual_seed(0)
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    with torch.no_grad():
        model.prompt_embeddings.normal_(0, 1)  # distinct prompts, so that bf16 rounding shows in the score
    videos = torch.stack([video_factory(8, 64, 64, seed=i) for i in range(3)])
    plain = model(videos)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        wrapped = model(videos)
    assert wrapped.dtype == torch.float32
    assert torch.equal(wrapped, plain)  # fp32 branches and head: the outer autocast changes nothing


def test_a_loss_metric_is_frozen_and_stays_in_eval_mode_inside_a_training_module(video_factory: VideoFactory) -> None:
    torch.manual_seed(0)
    metric = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", as_loss=True)

    class Codec(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.filter = torch.nn.Conv2d(3, 3, 1)
            self.metric = metric

    codec = Codec().train()  # switches every submodule to training mode, except the loss metric
    assert not metric.training and all(not m.training for m in metric.modules())
    assert [p for p in codec.parameters() if p.requires_grad] == list(codec.filter.parameters())
    video = video_factory(8, 64, 64).requires_grad_(True)
    metric.seed_views(3)
    first = metric(video)
    metric.seed_views(3)
    assert torch.equal(first, metric(video))  # eval mode (batch norms use their statistics); seeded loss views
    assert not torch.equal(first, metric(video))  # a fresh draw of the loss views on the next call
    first.backward()
    assert video.grad is not None and video.grad.abs().sum() > 0
    plain = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    assert plain.train().training and any(p.requires_grad for p in plain.parameters())  # fine-tuning still works


def test_clear_bias_cache_also_frees_the_shape_caches(video_factory: VideoFactory) -> None:
    from dvlta_metric.branches import swin3d

    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    model(video_factory(8, 64, 64))
    assert swin3d._window_token_index.cache_info().currsize > 0
    model.clear_bias_cache()
    assert swin3d._window_token_index.cache_info().currsize == 0
    assert swin3d._cached_fragment_gate.cache_info().currsize == 0


def test_a_non_finite_score_is_an_error_never_a_result(video_factory: VideoFactory, tmp_path: Path) -> None:
    """Damaged weights (NaN in the score head's prompt) raise instead of scoring NaN; a file gets an error row."""
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    good = video_factory(8, 64, 64)
    with torch.no_grad():
        model.prompt_embeddings[1, 0] = float("nan")  # the "high quality" prompt
    with pytest.raises(ValueError, match=r"non-finite score or fusion weight .* for video\(s\) \[0, 1\] of the 2"):
        model(good.unsqueeze(0).expand(2, -1, -1, -1, -1))
    with pytest.raises(ValueError, match="non-finite score"):
        model.explain(good)
    clip = write_clip(tmp_path / "clip.mp4", frames=12)
    (result,) = model.score_files([clip], num_workers=0, progress=False)
    assert result.score is None and result.error and "non-finite score" in result.error


def test_the_finite_check_costs_nothing_measurable(tiny_model: DVLTAVQA, video_factory: VideoFactory) -> None:
    """One isfinite().all() per batch: far below 1% of a batch's time even for the tiny model."""
    scores, weights = torch.rand(64), torch.rand(64, 3)
    start = time.perf_counter()
    for _ in range(100):
        _check_finite(scores, weights)
    per_check = (time.perf_counter() - start) / 100
    views = [tiny_model.make_views(video_factory(8, 64, 64))]
    start = time.perf_counter()
    tiny_model.score_views(views)
    assert per_check < 0.01 * (time.perf_counter() - start), per_check


def test_a_training_read_cut_in_eval_mode_says_to_read_again(tiny_model: DVLTAVQA) -> None:
    from importlib.resources import files

    sample = str(files("dvlta_metric") / "assets" / "sample.mp4")
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu").train()
    decoded = model.read(sample)
    with pytest.raises(ValueError, match=r"read in training mode.*model.eval\(\), then model.read"):
        model.make_views(decoded, train=False)
