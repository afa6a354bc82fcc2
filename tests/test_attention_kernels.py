"""Tests of the window attention kernels of the fragment Swin3D: scaled_dot_product_attention and FlexAttention."""

from __future__ import annotations

import pytest
import torch
from swin_small import SMALL, randomise_bias_tables

import dvlta_metric
from dvlta_metric.branches import swin3d
from dvlta_metric.branches.flex_window import flex_attention_available
from dvlta_metric.branches.swin3d import SwinTransformer3D

needs_flex = pytest.mark.skipif(not flex_attention_available(), reason="needs FlexAttention (torch>=2.5)")


def _small_model(seed: int = 0) -> SwinTransformer3D:
    torch.manual_seed(seed)
    model = SwinTransformer3D(**SMALL).eval()
    randomise_bias_tables(model, seed)
    for name, param in model.named_parameters():
        if name.endswith("position_bias_table"):
            param.requires_grad_(False)  # frozen, as in DVLTA-VQA
    return model


def test_window_tensors_carry_the_kernel() -> None:
    model = _small_model()
    size = model.stage_sizes((8, 64, 64))
    window = model.adaptive_window((8, 64, 64))
    for layer, feature_size in zip(model.layers, size, strict=True):
        sdpa = layer.window_tensors(feature_size, window, torch.device("cpu"), torch.float32, "sdpa")
        flex = layer.window_tensors(feature_size, window, torch.device("cpu"), torch.float32, "flex")
        for s, f in zip(sdpa, flex, strict=True):
            assert (s.kernel, f.kernel) == ("sdpa", "flex")
            assert torch.equal(s.bias, f.bias) and torch.equal(s.gather, f.gather)


@needs_flex
def test_flex_kernel_matches_sdpa() -> None:
    model = _small_model(2)
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        expected = model(x)
        model.set_attention_kernel("flex")
        assert model.attention_kernel == "flex"
        out = model(x)
        out_one = model(x[1:])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_one, expected[1:], atol=1e-5, rtol=1e-5)


@needs_flex
def test_flex_falls_back_where_gradients_are_needed() -> None:
    model = _small_model(3).set_attention_kernel("flex")
    size = (8, 64, 64)
    # on CPU FlexAttention has no backward: a call that needs gradients gets the sdpa kernel
    grad_tensors = model.window_tensors(size, torch.device("cpu"), torch.float32, requires_grad=True)
    assert all(t.kernel == "sdpa" for stage in grad_tensors for t in stage)
    assert all(
        t.kernel == "flex" for stage in model.window_tensors(size, torch.device("cpu"), torch.float32) for t in stage
    )
    x = torch.randn(1, 3, 8, 64, 64, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # trainable bias tables get sdpa, through which their gradients flow
    block = model.layers[0].blocks[1]
    block.attn.relative_position_bias_table.requires_grad_(True)
    args = ((4, 16, 16), (2, 5, 5), (1, 2, 2), torch.device("cpu"), torch.float32, "flex")
    assert block.window_tensors(*args).kernel == "sdpa"
    with torch.no_grad():
        assert block.window_tensors(*args).kernel == "flex"


def test_bad_attention_kernel_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _small_model()
    with pytest.raises(ValueError, match="attention kernel must be one of"):
        model.set_attention_kernel("xformers")
    assert model.attention_kernel == "sdpa"
    monkeypatch.setattr(swin3d, "flex_attention_available", lambda: False)
    with pytest.raises(RuntimeError, match="torch>=2.5"):
        model.set_attention_kernel("flex")


def test_model_sets_the_backbone_kernel() -> None:
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False)
    backbone = model.branches["bvfe"].encoder
    assert backbone.attention_kernel == "sdpa"
    if flex_attention_available():
        assert model.set_attention_kernel("flex") is model
        assert backbone.attention_kernel == "flex"
    with pytest.raises(ValueError):
        model.set_attention_kernel("nope")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or not flex_attention_available(), reason="needs CUDA and flex")
def test_flex_kernel_on_cuda_matches_sdpa_with_gradients() -> None:
    model = _small_model(5).cuda()
    x = torch.randn(2, 3, 8, 64, 64, device="cuda")
    with torch.no_grad():
        expected = model(x)
        with torch.autocast("cuda", dtype=torch.float16):
            expected_half = model(x)
    xg = x.clone().requires_grad_(True)
    model(xg).square().mean().backward()
    model.set_attention_kernel("flex")
    with torch.no_grad():
        out = model(x)
        with torch.autocast("cuda", dtype=torch.float16):
            out_half = model(x)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out_half.float(), expected_half.float(), atol=2e-2, rtol=2e-2)
    xf = x.clone().requires_grad_(True)
    model(xf).square().mean().backward()
    torch.testing.assert_close(xf.grad, xg.grad, atol=1e-5, rtol=1e-3)
