"""Tests for TAdaConv2d and its routing function (Huang et al., ICLR 2022).

Oracles: at initialisation (``alpha == 1``) a TAdaConv2d is a per-frame
``conv2d`` with its base kernel; with any ``alpha`` it equals both the official
grouped calibrated-kernel convolution and a per-frame ``conv2d`` of ``x * alpha``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from oracles import calibrated_kernel_conv
from torch import Tensor, nn

from dvlta_metric.branches.tadaconv import RouteFunc, TAdaConv2d

ATOL = 1e-5


def _per_frame_conv(x: Tensor, weight: Tensor, stride: int, padding: int, bias: Tensor | None = None) -> Tensor:
    """Apply ``F.conv2d`` to every frame separately and restack on dim 2 (reference)."""
    frames = [F.conv2d(x[:, :, t], weight, bias, stride=stride, padding=padding) for t in range(x.shape[2])]
    return torch.stack(frames, dim=2)


def _randomise_route(route: RouteFunc, seed: int = 0) -> None:
    """Give ``conv_b`` non-zero weights so that ``alpha`` is non-trivial."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        route.conv_b.weight.copy_(torch.randn(route.conv_b.weight.shape, generator=generator) * 0.5)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize(("stride", "padding", "bias"), [(1, 1, False), (2, 1, False), (2, 0, True)])
def test_init_equals_per_frame_conv2d(stride: int, padding: int, bias: bool) -> None:
    route = RouteFunc(8, reduction=4)
    conv = TAdaConv2d(8, 12, kernel_size=3, stride=stride, padding=padding, bias=bias)
    x = torch.randn(2, 8, 5, 13, 11)
    alpha = route(x)
    assert torch.equal(alpha, torch.ones_like(alpha))
    out = conv(x, alpha)
    expected = _per_frame_conv(x, conv.base_weight, stride, padding, conv.bias)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize(("stride", "padding"), [(1, 1), (2, 1), (1, 0)])
def test_calibrated_matches_grouped_kernel_oracle_and_scaled_input(stride: int, padding: int) -> None:
    route = RouteFunc(8, reduction=2, kernels=(3, 5))
    _randomise_route(route)
    conv = TAdaConv2d(8, 6, kernel_size=3, stride=stride, padding=padding)
    x = torch.randn(3, 8, 4, 10, 9)
    alpha = route(x)
    assert not torch.allclose(alpha, torch.ones_like(alpha))
    out = conv(x, alpha)
    grouped = calibrated_kernel_conv(x, alpha, conv.weight, stride=stride, padding=padding)
    scaled = _per_frame_conv(x * alpha, conv.base_weight, stride, padding)
    torch.testing.assert_close(out, grouped, atol=ATOL, rtol=0)
    torch.testing.assert_close(out, scaled, atol=ATOL, rtol=0)


def test_grouped_oracle_accepts_4d_weight_and_bias() -> None:
    conv = TAdaConv2d(4, 5, kernel_size=(3, 1), padding=(1, 0), bias=True)
    x = torch.randn(2, 4, 3, 7, 6)
    alpha = torch.rand(2, 4, 3, 1, 1) + 0.5
    out = conv(x, alpha)
    oracle = calibrated_kernel_conv(x, alpha, conv.base_weight, padding=(1, 0), bias=conv.bias)
    torch.testing.assert_close(out, oracle, atol=ATOL, rtol=0)


def test_weight_layout_and_conv2d_init() -> None:
    conv = TAdaConv2d(16, 32, kernel_size=3)
    assert conv.weight.shape == (1, 1, 32, 16, 3, 3)
    assert conv.bias is None
    torch.manual_seed(1)
    reference = nn.Conv2d(16, 32, 3, bias=False)
    torch.manual_seed(1)
    conv = TAdaConv2d(16, 32, kernel_size=3)
    torch.testing.assert_close(conv.base_weight, reference.weight, atol=0, rtol=0)


def test_route_shape_and_ones_at_init() -> None:
    route = RouteFunc(16, reduction=4)
    x = torch.randn(2, 16, 6, 9, 9)
    for mode in (True, False):
        route.train(mode)
        alpha = route(x)
        assert alpha.shape == (2, 16, 6, 1, 1)
        assert torch.equal(alpha, torch.ones_like(alpha))


def test_route_depends_on_time_after_randomising() -> None:
    route = RouteFunc(16, reduction=4)
    _randomise_route(route)
    alpha = route(torch.randn(2, 16, 6, 9, 9))
    assert alpha.shape == (2, 16, 6, 1, 1)
    assert not torch.allclose(alpha[:, :, 0], alpha[:, :, 1])


def test_route_single_frame() -> None:
    route = RouteFunc(8, reduction=4).eval()
    _randomise_route(route)
    assert route(torch.randn(1, 8, 1, 5, 5)).shape == (1, 8, 1, 1, 1)


def test_zero_init_is_tagged_and_restorable() -> None:
    route = RouteFunc(8)
    assert getattr(route.conv_b, "skip_init", False) is True
    _randomise_route(route)
    route.reset_parameters()
    assert torch.count_nonzero(route.conv_b.weight) == 0


def test_routing_receives_gradient() -> None:
    route = RouteFunc(8, reduction=4)
    conv = TAdaConv2d(8, 4, kernel_size=3, padding=1)
    x = torch.randn(2, 8, 3, 6, 6, requires_grad=True)
    conv(x, route(x)).square().sum().backward()
    assert route.conv_b.weight.grad is not None
    assert route.conv_b.weight.grad.abs().sum() > 0
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_bad_inputs_raise_value_error() -> None:
    route = RouteFunc(8)
    conv = TAdaConv2d(8, 4, kernel_size=3, padding=1)
    x = torch.randn(2, 8, 3, 6, 6)
    with pytest.raises(ValueError, match=r"\(B, 8, T, H, W\)"):
        route(torch.randn(2, 8, 6, 6))
    with pytest.raises(ValueError, match=r"\(B, 8, T, H, W\)"):
        conv(torch.randn(2, 7, 3, 6, 6), torch.ones(2, 7, 3, 1, 1))
    with pytest.raises(ValueError, match="alpha"):
        conv(x, torch.ones(2, 8, 1, 1, 1))
    with pytest.raises(ValueError, match="reduction"):
        RouteFunc(3, reduction=4)
    with pytest.raises(ValueError, match="odd"):
        RouteFunc(8, kernels=(2, 3))
