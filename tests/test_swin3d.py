"""Tests of the FAST-VQA-B Video Swin-T 3D backbone (``dvlta_metric.branches.swin3d``)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from swin_small import SMALL, randomise_bias_tables

from dvlta_metric.branches import swin3d
from dvlta_metric.branches.swin3d import (
    SwinTransformer3D,
    SwinTransformerBlock3D,
    WindowAttention3D,
    adaptive_window_size,
    clear_shape_caches,
    clip_window_size,
    fragment_coords,
    fragment_gate,
    shift_attention_mask,
    shift_regions,
)


@pytest.fixture(scope="module")
def small_model() -> SwinTransformer3D:
    torch.manual_seed(0)
    model = SwinTransformer3D(**SMALL).eval()
    randomise_bias_tables(model)
    return model


@pytest.fixture(scope="module")
def full_model() -> SwinTransformer3D:
    torch.manual_seed(0)
    return SwinTransformer3D().eval()


def _expected_keys(depths: tuple[int, ...], frag_biases: tuple[bool, ...], patch_norm: bool = True) -> set[str]:
    keys = {"patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"}
    if patch_norm:
        keys |= {"patch_embed.norm.weight", "patch_embed.norm.bias"}
    for i, (depth, frag) in enumerate(zip(depths, frag_biases, strict=True)):
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            for mod in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
                keys |= {p + mod + ".weight", p + mod + ".bias"}
            keys.add(p + "attn.relative_position_bias_table")
            if frag:
                keys.add(p + "attn.fragment_position_bias_table")
        if i < len(depths) - 1:
            keys |= {f"layers.{i}.downsample.norm.weight", f"layers.{i}.downsample.norm.bias"}
            keys.add(f"layers.{i}.downsample.reduction.weight")
    return keys


# ---------------------------------------------------------------------------------------------------------
# Full FAST-VQA-B config
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_full_model_shape_and_size(full_model: SwinTransformer3D) -> None:
    assert full_model.num_features == 768
    n_params = sum(p.numel() for p in full_model.parameters())
    assert 27.5e6 < n_params < 28.7e6
    with torch.no_grad():
        out = full_model(torch.randn(1, 3, 32, 224, 224))
    assert out.shape == (1, 768, 16, 7, 7)
    assert torch.isfinite(out).all()


@pytest.mark.slow
def test_full_model_state_dict_keys(full_model: SwinTransformer3D) -> None:
    keys = set(full_model.state_dict())
    assert keys == _expected_keys((2, 2, 6, 2), (True, True, True, False))
    assert not any("relative_position_index" in k for k in keys)
    # the index buffer still exists, just not persistent
    assert any(n.endswith("relative_position_index") for n, _ in full_model.named_buffers())
    tables = dict(full_model.named_parameters())
    assert tables["layers.0.blocks.0.attn.relative_position_bias_table"].shape == (15 * 13 * 13, 3)
    assert tables["layers.2.blocks.5.attn.fragment_position_bias_table"].shape == (15 * 13 * 13, 12)


def test_small_state_dict_keys(small_model: SwinTransformer3D) -> None:
    assert set(small_model.state_dict()) == _expected_keys(SMALL["depths"], SMALL["frag_biases"])


# ---------------------------------------------------------------------------------------------------------
# Window sizes
# ---------------------------------------------------------------------------------------------------------


def test_adaptive_window_size() -> None:
    base, ref = (8, 7, 7), (32, 224, 224)
    assert adaptive_window_size(base, (32, 224, 224), ref) == (8, 7, 7)
    assert adaptive_window_size(base, (16, 224, 224), ref) == (4, 7, 7)
    assert adaptive_window_size(base, (32, 192, 160), ref) == (8, 6, 5)
    assert adaptive_window_size(base, (2, 16, 16), ref) == (1, 1, 1)  # clamped up (official: 0)
    assert adaptive_window_size(base, (64, 448, 448), ref) == (8, 7, 7)  # clamped to the base


def test_clip_window_size() -> None:
    assert clip_window_size((16, 56, 56), (8, 7, 7), (4, 3, 3)) == ((8, 7, 7), (4, 3, 3))
    assert clip_window_size((16, 7, 7), (8, 7, 7), (4, 3, 3)) == ((8, 7, 7), (4, 0, 0))
    assert clip_window_size((4, 5, 9), (8, 7, 7), (4, 3, 3)) == ((4, 5, 7), (0, 0, 3))


# ---------------------------------------------------------------------------------------------------------
# Oracles of the shape-only tensors
# ---------------------------------------------------------------------------------------------------------


def _window_tokens(padded: tuple[int, int, int], window: tuple[int, int, int]) -> list[list[tuple[int, ...]]]:
    """Positions (in the shifted volume) of the tokens of every window, both in raster order."""
    starts = itertools.product(*(range(0, p, w) for p, w in zip(padded, window, strict=True)))
    return [
        [
            tuple(s + o for s, o in zip(start, off, strict=True))
            for off in itertools.product(*(range(w) for w in window))
        ]
        for start in starts
    ]


@pytest.mark.parametrize(
    ("padded", "window", "shift"),
    [
        ((4, 6, 9), (2, 3, 3), (1, 1, 1)),
        ((2, 14, 7), (2, 7, 7), (0, 3, 3)),
        ((2, 6, 6), (1, 3, 3), (0, 0, 0)),
    ],
)
def test_fragment_gate_oracle(
    padded: tuple[int, int, int], window: tuple[int, int, int], shift: tuple[int, int, int]
) -> None:
    _, wh, ww = window
    gate = fragment_gate(padded, window, shift)
    wins = _window_tokens(padded, window)
    assert gate.shape == (len(wins), math.prod(window), math.prod(window))
    for w, tokens in enumerate(wins):
        # token at shifted position p holds the feature at (p + shift) mod padded; its fragment along H
        # is the nearest-neighbour source index floor(h * wh / Hp) of a wh-cell grid (D has one cell).
        frag = []
        for pos in tokens:
            d, h, x = ((p + s) % n for p, s, n in zip(pos, shift, padded, strict=True))
            frag.append((0, h * wh // padded[1], x * ww // padded[2]))
        for i, j in itertools.product(range(len(tokens)), repeat=2):
            expected = sum(abs(a - b) for a, b in zip(frag[i], frag[j], strict=True))
            assert gate[w, i, j].item() == expected
    # FAST-VQA's gate is an L1 distance, not a 0/1 indicator
    assert gate.max().item() >= 2


@pytest.mark.parametrize(
    ("padded", "window", "shift"),
    [
        ((4, 6, 9), (2, 3, 3), (1, 1, 1)),
        ((4, 10, 10), (2, 5, 5), (1, 2, 0)),
        ((2, 4, 4), (1, 2, 2), (1, 1, 1)),
    ],
)
def test_shift_mask_oracle(
    padded: tuple[int, int, int], window: tuple[int, int, int], shift: tuple[int, int, int]
) -> None:
    # literal 27-region labelling of Swin's compute_mask (later slices overwrite earlier ones)
    img = torch.zeros(padded)
    axes = [(slice(-w), slice(-w, -s), slice(-s, None)) for w, s in zip(window, shift, strict=True)]
    for cnt, (sd, sh, sw) in enumerate(itertools.product(*axes)):
        img[sd, sh, sw] = cnt
    mask = shift_attention_mask(padded, window, shift)
    for w, tokens in enumerate(_window_tokens(padded, window)):
        labels = [img[pos].item() for pos in tokens]
        for i, j in itertools.product(range(len(tokens)), repeat=2):
            assert mask[w, i, j].item() == (0.0 if labels[i] == labels[j] else -100.0)


def _naive_block(
    block: SwinTransformerBlock3D, x: torch.Tensor, window: tuple[int, int, int], shift: tuple[int, int, int]
) -> torch.Tensor:
    """Straightforward pad / roll / partition / softmax version of a block, with loop-built biases."""
    attn = block.attn
    b, d, h, w, c = x.shape
    dp, hp, wp = (math.ceil(s / k) * k for s, k in zip((d, h, w), window, strict=True))
    y = F.pad(block.norm1(x), (0, 0, 0, wp - w, 0, hp - h, 0, dp - d))
    y = torch.roll(y, tuple(-s for s in shift), (1, 2, 3))
    wins = _window_tokens((dp, hp, wp), window)
    n, nh = math.prod(window), attn.num_heads
    out = torch.zeros_like(y)
    gate = fragment_gate((dp, hp, wp), window, shift)
    mask = shift_attention_mask((dp, hp, wp), window, shift) if any(shift) else torch.zeros(len(wins), n, n)
    base = attn.window_size
    strides = ((2 * base[1] - 1) * (2 * base[2] - 1), 2 * base[2] - 1, 1)
    for wi, tokens in enumerate(wins):
        idx = torch.tensor(tokens)
        t = y[:, idx[:, 0], idx[:, 1], idx[:, 2]]  # (B, N, C)
        q, k, v = attn.qkv(t).view(b, n, 3, nh, -1).permute(2, 0, 3, 1, 4)
        bias = torch.zeros(nh, n, n)
        for i, j in itertools.product(range(n), repeat=2):
            r = sum((tokens[i][a] - tokens[j][a] + base[a] - 1) * strides[a] for a in range(3))
            rel = attn.relative_position_bias_table[r]
            if attn.fragment_position_bias_table is not None:
                g = gate[wi, i, j]
                rel = rel * g + attn.fragment_position_bias_table[r] * (1 - g)
            bias[:, i, j] = rel
        logits = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 + bias + mask[wi]
        o = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        out[:, idx[:, 0], idx[:, 1], idx[:, 2]] = attn.proj(o)
    out = torch.roll(out, shift, (1, 2, 3))[:, :d, :h, :w]
    x = x + out
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize("frag_bias", [True, False])
def test_block_matches_naive_oracle(frag_bias: bool) -> None:
    torch.manual_seed(1)
    block = SwinTransformerBlock3D(8, 2, (2, 3, 3), frag_bias=frag_bias).eval()
    randomise_bias_tables(block)
    x = torch.randn(2, 3, 5, 4, 8)  # padded to (4, 6, 6)
    with torch.no_grad():
        for shift in [(0, 0, 0), (1, 1, 1)]:
            expected = _naive_block(block, x, (2, 3, 3), shift)
            torch.testing.assert_close(block(x, (2, 3, 3), shift), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("train", [False, True])
def test_block_mlp_is_fc1_gelu_fc2(train: bool) -> None:
    """timm's ``Mlp`` in the block: FAST-VQA's ``fc2(GELU(fc1(x)))``, its p=0 dropouts inert in training mode."""
    torch.manual_seed(2)
    block = SwinTransformerBlock3D(8, 2, (2, 3, 3)).train(train)
    x = torch.randn(2, 3, 5, 4, 8)
    expected = F.linear(F.gelu(F.linear(x, block.mlp.fc1.weight, block.mlp.fc1.bias)), *block.mlp.fc2.parameters())
    assert torch.equal(block.mlp(x), expected)
    assert block.mlp.fc1.out_features == 32  # mlp_ratio 4


# ---------------------------------------------------------------------------------------------------------
# Small config: shapes, determinism, batching, gradients
# ---------------------------------------------------------------------------------------------------------


def test_small_shapes(small_model: SwinTransformer3D) -> None:
    assert small_model.num_features == 128
    with torch.no_grad():
        assert small_model(torch.randn(2, 3, 8, 64, 64)).shape == (2, 128, 4, 2, 2)
        assert small_model(torch.randn(1, 3, 7, 50, 46)).shape == (1, 128, 4, 2, 2)
        assert small_model(torch.randn(1, 3, 16, 96, 64)).shape == (1, 128, 8, 3, 2)


def test_small_deterministic_and_batch_invariant(small_model: SwinTransformer3D) -> None:
    torch.manual_seed(2)
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        out = small_model(x)
        assert torch.equal(out, small_model(x))
        for i in range(2):
            torch.testing.assert_close(small_model(x[i : i + 1]), out[i : i + 1], atol=1e-5, rtol=1e-5)


def test_gradient_reaches_input(small_model: SwinTransformer3D) -> None:
    x = torch.randn(1, 3, 7, 50, 46, requires_grad=True)
    small_model(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    table = dict(small_model.named_parameters())["layers.0.blocks.1.attn.fragment_position_bias_table"]
    assert table.grad is not None and table.grad.abs().sum() > 0
    small_model.zero_grad(set_to_none=True)


def test_grad_checkpointing_matches() -> None:
    torch.manual_seed(3)
    model = SwinTransformer3D(**SMALL).eval()
    randomise_bias_tables(model)
    x = torch.randn(2, 3, 8, 64, 64)

    def run(enable: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        model.set_grad_checkpointing(enable)
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        out.square().mean().backward()
        assert xi.grad is not None
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out.detach(), xi.grad, grads

    out0, gx0, gp0 = run(False)
    out1, gx1, gp1 = run(True)
    model.set_grad_checkpointing(False)
    torch.testing.assert_close(out1, out0, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gx1, gx0, atol=1e-6, rtol=1e-5)
    assert gp1.keys() == gp0.keys() and len(gp0) == len(list(model.parameters()))
    for name in gp0:
        torch.testing.assert_close(gp1[name], gp0[name], atol=1e-6, rtol=1e-5)


def test_cache_built_in_inference_mode_supports_grad(small_model: SwinTransformer3D) -> None:
    clear_shape_caches()
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.inference_mode():
        small_model(x)
    xg = x.clone().requires_grad_(True)
    small_model(xg).sum().backward()
    assert xg.grad is not None
    small_model.zero_grad(set_to_none=True)


def test_bad_input_raises(small_model: SwinTransformer3D) -> None:
    with pytest.raises(ValueError):
        small_model(torch.randn(3, 8, 64, 64))
    with pytest.raises(ValueError):
        small_model(torch.randn(1, 4, 8, 64, 64))


def test_per_token_gate_and_region_helpers() -> None:
    padded, window, shift = (4, 20, 20), (2, 5, 5), (1, 2, 2)
    coords = fragment_coords(padded, window, shift)
    regions = shift_regions(padded, window, shift)
    windows = math.prod(p // w for p, w in zip(padded, window, strict=True))
    assert coords.shape == (windows, 50, 3) and regions.shape == (windows, 50)
    assert shift_regions(padded, window, (0, 0, 0)).unique().numel() == 1
    # the gate and the mask are pairwise functions of these per-token values
    gate = fragment_gate(padded, window, shift)
    torch.testing.assert_close(gate, (coords[:, :, None] - coords[:, None]).abs().sum(-1))
    mask = shift_attention_mask(padded, window, shift)
    assert torch.equal(mask != 0, regions[:, :, None] != regions[:, None])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_autocast_runs() -> None:
    torch.manual_seed(4)
    model = SwinTransformer3D(**SMALL).eval()
    randomise_bias_tables(model)
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        expected = model(x)
        model.cuda()
        out = model(x.cuda())
        torch.testing.assert_close(out.cpu(), expected, atol=1e-4, rtol=1e-4)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out_bf16 = model(x.cuda())
    assert out_bf16.shape == expected.shape and torch.isfinite(out_bf16).all()
    assert (out_bf16.float().cpu() - expected).abs().mean() < 0.1
    xg = x.cuda().requires_grad_(True)
    model.set_grad_checkpointing(True)
    model(xg).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


def test_frozen_bias_cache_matches_and_follows_table_changes() -> None:
    torch.manual_seed(3)
    model = SwinTransformer3D(
        embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=(2, 7, 7), base_x_size=(8, 224, 224)
    ).eval()
    randomise_bias_tables(model)
    model.low_memory = False  # the speed path keeps the biases (on CPU the default is the low-memory path)
    x = torch.randn(2, 3, 8, 224, 224)
    trainable = model(x)  # tables require grad and grad is on: rebuilt every call, nothing kept
    assert all(m._bias_cache is None for m in model.modules() if isinstance(m, WindowAttention3D))
    with torch.no_grad():
        model.requires_grad_(False)
        first, second = model(x), model(x)  # the second call reuses the kept biases
        assert any(m._bias_cache is not None for m in model.modules() if isinstance(m, WindowAttention3D))
        assert torch.equal(first, second) and torch.allclose(first, trainable.detach(), atol=1e-6)
        attn = model.layers[0].blocks[0].attn
        attn.fragment_position_bias_table.add_(0.5)  # in-place change bumps the version: cache is stale
        changed = model(x)
        model.clear_bias_cache()
        assert torch.allclose(changed, model(x), atol=1e-6)
        assert not torch.allclose(changed, first, atol=1e-4)


@pytest.mark.parametrize("fused", [False, True])
def test_trainable_tables_without_grad_give_a_bias_without_grad_and_follow_every_step(
    monkeypatch: pytest.MonkeyPatch, fused: bool
) -> None:
    """Scoring a model whose bias tables train (fine-tuning, an evaluation between steps): under ``no_grad`` the
    attention mask must not require grad, or CPU attention drops to its slow math backend; and no bias is kept, so
    a step of any optimizer (a fused one moves no version counter) shows in the next call, with or without a grad
    pass in between; with grad on the tables get gradients."""
    torch.manual_seed(5)
    model = SwinTransformer3D(**SMALL).eval()
    randomise_bias_tables(model)
    model.low_memory = False
    masks: list[torch.Tensor] = []
    sdpa = swin3d.F.scaled_dot_product_attention

    def spy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor, **kw: object) -> torch.Tensor:
        masks.append(attn_mask)
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(swin3d.F, "scaled_dot_product_attention", spy)
    x = torch.randn(1, 3, 8, 64, 64)
    attns = [m for m in model.modules() if isinstance(m, WindowAttention3D)]
    tables = [t for m in attns for t in m.bias_tables()]
    optimizer = torch.optim.Adam(tables, lr=0.5, fused=fused)
    with torch.no_grad():
        first = model(x)
        assert masks and not any(m.requires_grad for m in masks)
        assert all(m._bias_cache is None for m in attns)
    gen = torch.Generator().manual_seed(0)
    for t in tables:  # a step right after a call without grad (no grad pass in between); not a constant shift,
        t.grad = torch.randn(t.shape, generator=gen)  # which the softmax would not see
    optimizer.step()
    with torch.no_grad():
        stepped = model(x)
        model.clear_bias_cache()
        assert torch.equal(stepped, model(x)) and not torch.allclose(stepped, first, atol=1e-5)
    loss = model(x).square().mean()  # grad on: the bias is built in the graph
    loss.backward()
    assert tables[0].grad is not None and tables[0].grad.abs().sum() > 0


def test_low_memory_path_keeps_nothing_and_matches_the_batched_one() -> None:
    torch.manual_seed(4)
    model = SwinTransformer3D(
        embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=(2, 7, 7), base_x_size=(8, 224, 224)
    ).eval()
    randomise_bias_tables(model)
    model.requires_grad_(False)
    x = torch.randn(3, 3, 8, 224, 224)
    attns = [m for m in model.modules() if isinstance(m, WindowAttention3D)]
    with torch.no_grad():
        assert model.low_memory is None  # default: the low-memory path on CPU
        lean = model(x)
        assert all(m._bias_cache is None for m in attns) and model.transient._tensors is None
        assert torch.equal(model(x[1:2]), lean[1:2])  # each clip alone: the same numbers in any batch
        model.low_memory = False
        batched = model(x)
        assert any(m._bias_cache is not None for m in attns)
        torch.testing.assert_close(lean, batched, atol=1e-5, rtol=1e-5)
        model.low_memory = True
        assert torch.equal(model(x), lean) and all(m._bias_cache is None for m in attns)


@pytest.mark.parametrize("size", [(8, 64, 64), (7, 50, 46), (16, 96, 64), (3, 33, 129)])
def test_stage_sizes_match_the_features_each_stage_sees(
    small_model: SwinTransformer3D, size: tuple[int, int, int]
) -> None:
    seen: list[tuple[int, ...]] = []
    handles = [
        layer.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[1:4])))
        for layer in small_model.layers
    ]
    try:
        with torch.no_grad():
            small_model(torch.randn(1, 3, *size))
    finally:
        for h in handles:
            h.remove()
    assert seen == small_model.stage_sizes(size)


def test_stage_rejects_window_tensors_of_another_size(small_model: SwinTransformer3D) -> None:
    layer = small_model.layers[0]
    x = torch.randn(1, 4, 16, 16, layer.blocks[0].norm1.normalized_shape[0])
    wrong = layer.window_tensors((4, 8, 8), None, x.device, x.dtype)
    with pytest.raises(ValueError, match="window tensors do not match"):
        layer(x, None, wrong)
    torch.testing.assert_close(layer(x, None, layer.window_tensors((4, 16, 16), None, x.device, x.dtype)), layer(x))


def test_bias_cache_is_not_fooled_by_a_reused_gate_address() -> None:
    """Another gate at the freed address of the last one (same shape) must not get the cached bias."""
    torch.manual_seed(0)
    model = SwinTransformer3D(
        embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=(2, 7, 7), base_x_size=(8, 224, 224)
    ).eval()
    randomise_bias_tables(model)
    model.requires_grad_(False)
    attn = model.layers[0].blocks[0].attn
    storage = torch.zeros(4, 1, 98, 98)
    first = storage.view(4, 1, 98, 98)  # two tensor objects over one buffer: the same data_ptr and shape
    cached = attn.attention_bias((2, 7, 7), first, None, torch.float32).clone()
    storage.fill_(1.0)  # what a new gate written at the old address looks like
    second = storage.view(4, 1, 98, 98)
    assert second.data_ptr() == first.data_ptr()
    fresh = attn.attention_bias((2, 7, 7), second, None, torch.float32)
    assert torch.equal(fresh, attn.position_bias((2, 7, 7), second))
    assert not torch.equal(fresh, cached)
