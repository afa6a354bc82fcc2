"""Tests for the Temporal Context Module (DVLTA-VQA eqs. 5-7) and CBAM."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dvlta_metric.branches.cbam import CBAM
from dvlta_metric.branches.temporal_context import (
    TemporalAggregation,
    TemporalAvgPool,
    TemporalContextModule,
)

TINY = {"stem_channels": 8, "channels": (16, 32), "out_dim": 64, "cbam_reduction": 4}
ATOL = 1e-5


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _activate(model: TemporalContextModule, clip: Tensor, steps: int = 3) -> TemporalContextModule:
    """Randomise ``conv_b`` and ``bn2``, fill BN running stats, switch to eval."""
    with torch.no_grad():
        for stage in model.stages:
            stage.route.conv_b.weight.normal_(std=0.3)
            stage.aggregate.bn2.weight.normal_()
            stage.aggregate.bn2.bias.normal_()
        model.train()
        for _ in range(steps):
            model(clip + 0.1 * torch.randn_like(clip))
    return model.eval()


# --- aggregation --------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
def test_aggregation_at_init_equals_relu_bn1(training: bool) -> None:
    block = TemporalAggregation(6).train(training)
    with torch.no_grad():
        block.bn1.weight.normal_()
        block.bn1.bias.normal_()
    x = torch.randn(2, 6, 4, 5, 5)
    torch.testing.assert_close(block(x), F.relu(block.bn1(x)), atol=ATOL, rtol=0)
    assert getattr(block.bn2, "skip_init", False) is True


@pytest.mark.parametrize("frames", [3, 8])
def test_temporal_pool_equals_avgpool3d(frames: int) -> None:
    x = torch.randn(2, 4, frames, 3, 5)
    reference = nn.AvgPool3d((3, 1, 1), stride=1, padding=(1, 0, 0))
    torch.testing.assert_close(TemporalAvgPool(3)(x), reference(x), atol=ATOL, rtol=0)


@pytest.mark.parametrize("frames", [1, 2])
def test_temporal_pool_short_clips(frames: int) -> None:
    x = torch.randn(1, 2, frames, 3, 3)
    padded = F.pad(x, (0, 0, 0, 0, 1, 1))
    expected = torch.stack([padded[:, :, t : t + 3].sum(2) / 3 for t in range(frames)], dim=2)
    torch.testing.assert_close(TemporalAvgPool(3)(x), expected, atol=ATOL, rtol=0)


def test_aggregation_mixes_neighbouring_frames() -> None:
    block = TemporalAggregation(3).eval()
    with torch.no_grad():
        block.bn2.weight.fill_(1.0)
    x = torch.randn(1, 3, 5, 4, 4)
    y = x.clone()
    y[:, :, 2] += 1.0
    changed = (block(x) - block(y)).abs().amax(dim=(0, 1, 3, 4)) > 0
    assert changed.tolist() == [False, True, True, True, False]


# --- CBAM ---------------------------------------------------------------------


def test_cbam_shapes_and_attention_ranges() -> None:
    cbam = CBAM(32, reduction=4).eval()
    x = torch.randn(2, 32, 3, 7, 5) * 5
    channel = cbam.channel.attention(x)
    spatial = cbam.spatial.attention(x)
    assert channel.shape == (2, 32, 1, 1, 1)
    assert spatial.shape == (2, 1, 3, 7, 5)
    for att in (channel, spatial):
        assert ((att > 0) & (att < 1)).all()
    assert cbam(x).shape == x.shape


def _spatial_map_by_hand(cbam: CBAM, f: torch.Tensor) -> torch.Tensor:
    """M_s of one frame ``(B, C, H, W)``: sigmoid(BN(conv7x7([mean_c; max_c])))."""
    pooled = torch.cat([f.mean(dim=1, keepdim=True), f.amax(dim=1, keepdim=True)], dim=1)
    return torch.sigmoid(cbam.spatial.bn(cbam.spatial.conv(pooled)))


def test_cbam_sequential_matches_manual_computation() -> None:
    """CBAM's order: the spatial map is computed on the channel-refined feature."""
    cbam = CBAM(16, reduction=4, order="sequential").eval()
    x = torch.randn(2, 16, 3, 6, 6)
    mlp = cbam.channel.mlp
    m_c = torch.sigmoid(mlp(x.mean(dim=(2, 3, 4))) + mlp(x.amax(dim=(2, 3, 4))))
    xc = x * m_c[:, :, None, None, None]
    frames = [xc[:, :, t] * _spatial_map_by_hand(cbam, xc[:, :, t]) for t in range(x.shape[2])]
    torch.testing.assert_close(cbam(x), torch.stack(frames, dim=2), atol=ATOL, rtol=0)


def test_cbam_parallel_is_eq_7_as_printed() -> None:
    """Eq. 7: F_tcm = F_agg * M_channel(F_agg) * M_spatial(F_agg), both maps from F_agg, by hand."""
    cbam = CBAM(16, reduction=4).eval()
    assert cbam.order == "parallel"  # the default is the printed formula
    f_agg = torch.randn(2, 16, 3, 6, 6)
    mlp = cbam.channel.mlp
    m_c = torch.sigmoid(mlp(f_agg.mean(dim=(2, 3, 4))) + mlp(f_agg.amax(dim=(2, 3, 4))))[:, :, None, None, None]
    m_s = torch.stack([_spatial_map_by_hand(cbam, f_agg[:, :, t]) for t in range(f_agg.shape[2])], dim=2)
    torch.testing.assert_close(cbam(f_agg), f_agg * m_c * m_s, atol=ATOL, rtol=0)
    # the two readings really differ (by about 12 % relative with random weights)
    sequential = CBAM(16, reduction=4, order="sequential").eval()
    sequential.load_state_dict(cbam.state_dict())
    gap = (cbam(f_agg) - sequential(f_agg)).norm() / cbam(f_agg).norm()
    assert gap > 0.01


def test_cbam_refuses_an_unknown_order() -> None:
    with pytest.raises(ValueError, match="parallel"):
        CBAM(16, order="serial")  # type: ignore[arg-type]


# --- TemporalContextModule ----------------------------------------------------


@pytest.mark.slow
def test_default_config_shape_params_and_time() -> None:
    model = TemporalContextModule().eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"TemporalContextModule default: {n_params:,} parameters")
    assert 0.5e6 < n_params < 0.7e6
    clip = torch.randn(1, 3, 8, 224, 224)
    with torch.no_grad():
        start = time.perf_counter()
        out = model(clip)
        print(f"forward (1, 3, 8, 224, 224): {time.perf_counter() - start:.3f} s")
        assert model.forward_features(clip).shape == (1, 256, 8, 14, 14)
    assert out.shape == (1, 512)
    assert torch.isfinite(out).all()


def test_tiny_forward_backward_reaches_every_parameter_and_input() -> None:
    model = TemporalContextModule(**TINY).train()
    clip = torch.randn(2, 3, 4, 32, 32, requires_grad=True)
    out = model(clip)
    assert out.shape == (2, 64)
    out.square().mean().backward()
    assert clip.grad is not None
    assert torch.isfinite(clip.grad).all() and clip.grad.abs().sum() > 0
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize("shape", [(1, 3, 1, 32, 32), (2, 3, 3, 50, 38)])
def test_any_frame_count_and_spatial_size(shape: tuple[int, ...]) -> None:
    model = TemporalContextModule(**TINY).eval()
    clip = torch.randn(shape)
    with torch.no_grad():
        out = model(clip)
    assert out.shape == (shape[0], 64)
    assert torch.isfinite(out).all()


def test_single_frame_trains_with_batch_of_two() -> None:
    model = TemporalContextModule(**TINY).train()
    model(torch.randn(2, 3, 1, 32, 32)).sum().backward()


def test_eval_deterministic_and_batch_independent() -> None:
    clip = torch.randn(3, 3, 4, 48, 48)
    model = _activate(TemporalContextModule(**TINY), clip)
    with torch.no_grad():
        batched = model(clip)
        again = model(clip)
        singles = torch.cat([model(clip[i : i + 1]) for i in range(clip.shape[0])])
    assert torch.equal(batched, again)
    torch.testing.assert_close(batched, singles, atol=ATOL, rtol=0)


def test_state_dict_names_are_stable() -> None:
    keys = set(TemporalContextModule(**TINY).state_dict())
    for key in (
        "stem.conv.weight",
        "stem.bn.running_mean",
        "stages.0.route.conv_g.weight",
        "stages.0.route.conv_a.weight",
        "stages.0.route.conv_b.weight",
        "stages.1.conv.weight",
        "stages.1.aggregate.bn1.weight",
        "stages.1.aggregate.bn2.weight",
        "cbam.channel.mlp.0.weight",
        "cbam.spatial.conv.weight",
        "cbam.spatial.bn.weight",
        "proj.weight",
    ):
        assert key in keys, key


def test_zero_inits_survive_construction() -> None:
    model = TemporalContextModule(**TINY)
    for stage in model.stages:
        assert torch.count_nonzero(stage.route.conv_b.weight) == 0
        assert torch.count_nonzero(stage.aggregate.bn2.weight) == 0
        assert torch.count_nonzero(stage.aggregate.bn2.bias) == 0


@pytest.mark.parametrize(
    "shape",
    [(2, 3, 32, 32), (1, 4, 2, 32, 32), (1, 2, 3, 32, 32, 1), (1, 2, 3, 32, 32)],
)
def test_bad_input_raises_value_error(shape: tuple[int, ...]) -> None:
    model = TemporalContextModule(**TINY)
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        model(torch.randn(shape))


def test_empty_stage_list_rejected() -> None:
    with pytest.raises(ValueError, match="channels"):
        TemporalContextModule(channels=())
