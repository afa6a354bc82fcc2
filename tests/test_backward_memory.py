"""The structures that keep a loss's backward pass small (issue 16): every view of a video is cut in one autograd
node with one gradient buffer; a checkpointed Swin3D recomputes one block of one clip at a time and holds one
block's attention bias at a time; a checkpointed model hands freed heap memory back between branches. The
memory itself is measured by ``benchmarks/backward_memory.py``, not here."""

from __future__ import annotations

import sys

import pytest
import torch

import dvlta_metric
import dvlta_metric.branches.swin3d as swin3d
import dvlta_metric.model as model_module
from dvlta_metric.branches.swin3d import SwinTransformer3D, WindowAttention3D
from dvlta_metric.config import FragmentViewConfig
from dvlta_metric.views.cuts import PatchCut, RowCut, cut
from dvlta_metric.views.fragments import finish_fragments, fragment_patch_cut, fragment_view, reads_native_pixels


def _cuts(video: torch.Tensor) -> list[PatchCut | RowCut]:
    """A 2x2 grid of 4-pixel patches over two runs of two frames (one run reads a frame twice), and three rows."""
    corners = [[[[0, 0], [5, 9]], [[10, 2], [1, 30]]], [[[2, 3], [4, 5]], [[6, 7], [8, 9]]]]
    return [PatchCut(corners, torch.tensor([[0, 1], [3, 3]]), 4), RowCut(torch.tensor([2, 0, 2]))]


def test_one_node_cuts_give_the_values_and_gradient_of_plain_indexing() -> None:
    video = torch.rand(5, 3, 20, 40, generator=torch.Generator().manual_seed(0), requires_grad=True)
    cuts = _cuts(video)
    patches, rows = cut(video, cuts)
    assert patches.grad_fn is rows.grad_fn  # one node for both
    w1 = torch.rand(patches.shape, generator=torch.Generator().manual_seed(1))
    w2 = torch.rand(rows.shape, generator=torch.Generator().manual_seed(2))
    ((patches * w1).sum() + (rows * w2).sum()).backward()
    assert video.grad is not None
    got = video.grad.clone()

    # oracle: the same cuts by ordinary slicing and indexing, autograd's own backward
    plain = video.detach().clone().requires_grad_(True)
    patch = cuts[0]
    assert isinstance(patch, PatchCut)
    fs, runs = patch.fsize, []
    for r in range(2):
        frames = plain[patch.runs_index[r]]
        grid = [torch.cat([frames[:, :, t : t + fs, l_ : l_ + fs] for t, l_ in row], -1) for row in patch.corners[r]]
        runs.append(torch.cat(grid, -2))
    expected_patches = torch.cat(runs)
    torch.testing.assert_close(patches.detach(), expected_patches.detach(), rtol=0, atol=0)
    torch.testing.assert_close(rows.detach(), plain.detach()[[2, 0, 2]], rtol=0, atol=0)
    ((expected_patches * w1).sum() + (plain[[2, 0, 2]] * w2).sum()).backward()
    torch.testing.assert_close(got, plain.grad, rtol=1e-6, atol=1e-6)


def test_a_cut_that_no_loss_uses_brings_no_gradient_and_no_grad_cuts_are_plain() -> None:
    video = torch.rand(5, 3, 20, 40, generator=torch.Generator().manual_seed(0), requires_grad=True)
    patches, rows = cut(video, _cuts(video))
    rows.sum().backward()  # the patches take no part
    expected = torch.zeros_like(video)
    expected.index_add_(0, torch.tensor([2, 0, 2]), torch.ones(3, 3, 20, 40))
    assert video.grad is not None and torch.equal(video.grad, expected)
    with torch.no_grad():
        plain = cut(video, _cuts(video))
    assert all(t.grad_fn is None for t in plain) and torch.equal(plain[1], rows.detach())


def test_make_views_with_gradients_cuts_once_and_matches_separate_views() -> None:
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", as_loss=True)
    video = torch.rand(20, 3, 240, 320, generator=torch.Generator().manual_seed(3))
    assert reads_native_pixels(video, model.config.fragment_view)
    x = video.clone().requires_grad_(True)
    views = model.make_views(x, generator=torch.Generator().manual_seed(4))
    weights = {k: torch.rand(v.shape, generator=torch.Generator().manual_seed(5)) for k, v in views.items()}
    sum((views[k] * weights[k]).sum() for k in views).backward()

    # the same draws, each view cut on its own (the path without gradients), then autograd on each
    with torch.no_grad():
        fixed = model.make_views(video, generator=torch.Generator().manual_seed(4), loss=True)
    assert fixed.keys() == views.keys()
    for name in views:
        torch.testing.assert_close(views[name].detach(), fixed[name], rtol=0, atol=0)
    nodes = {id(_cut_node(views[name])) for name in views}
    assert len(nodes) == 1, "every view should come out of one cut node"
    assert x.grad is not None and x.grad.abs().sum() > 0


def _cut_node(view: torch.Tensor) -> object:
    """The first node named after the one-node cut in ``view``'s graph."""
    stack, seen = [view.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if type(node).__name__ == "_CutsBackward":
            return node
        stack.extend(n for n, _ in node.next_functions)
    raise AssertionError("no _Cuts node in the view's graph")


def test_fragment_patch_cut_is_fragment_view() -> None:
    cfg = FragmentViewConfig(fragments=2, fsize=16, clip_len=4, frame_interval=1, num_clips=2, aligned=2)
    video = torch.rand(10, 3, 40, 48, generator=torch.Generator().manual_seed(6))
    rows = torch.tensor([0, 1, 2, 3, 5, 6, 7, 8])
    expected = fragment_view(video, cfg, torch.Generator().manual_seed(7), frame_index=rows)
    piece = fragment_patch_cut(video, cfg, torch.Generator().manual_seed(7), rows)
    torch.testing.assert_close(finish_fragments(cut(video, [piece])[0], cfg, torch.float32), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="upsampled"):
        fragment_patch_cut(video[..., :20, :20], cfg, None, rows)


def _frozen_swin() -> SwinTransformer3D:
    torch.manual_seed(3)
    model = SwinTransformer3D(
        embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=(2, 7, 7), base_x_size=(8, 112, 112)
    ).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, WindowAttention3D):
                for t in m.bias_tables():
                    t.normal_(0, 0.5, generator=torch.Generator().manual_seed(8))
    return model


def test_checkpointed_frozen_swin_matches_and_keeps_no_bias_per_block(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _frozen_swin()
    x = torch.randn(3, 3, 8, 112, 112, generator=torch.Generator().manual_seed(9))

    def run(enable: bool) -> tuple[torch.Tensor, torch.Tensor]:
        model.set_grad_checkpointing(enable)
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        out.square().mean().backward()
        assert xi.grad is not None
        return out.detach(), xi.grad

    out0, g0 = run(False)
    assert any(m._bias_cache is not None for m in model.modules() if isinstance(m, WindowAttention3D))
    built: list[int] = []
    original = WindowAttention3D.position_bias
    monkeypatch.setattr(WindowAttention3D, "position_bias", lambda self, *a: (built.append(1), original(self, *a))[1])
    out1, g1 = run(True)
    torch.testing.assert_close(out1, out0, atol=1e-5, rtol=1e-5)  # one clip at a time: float rounding only
    torch.testing.assert_close(g1, g0, atol=1e-6, rtol=1e-4)
    blocks = sum(len(layer.blocks) for layer in model.layers)
    # one bias per block in the forward pass and one in the backward pass, whatever the number of clips; the
    # backward pass starts with the last block, whose bias is still held
    assert len(built) == 2 * blocks - 1
    assert all(m._bias_cache is None for m in model.modules() if isinstance(m, WindowAttention3D))
    shared = {id(layer.transient) for layer in model.layers}
    assert len(shared) == 1 and model.layers[0].transient._tensors is None  # let go once the backward pass ends


def test_checkpointed_blocks_run_one_clip_at_a_time_and_only_when_gradients_are_needed() -> None:
    model = _frozen_swin()
    model.set_grad_checkpointing(True)
    x = torch.randn(3, 3, 8, 112, 112, generator=torch.Generator().manual_seed(9))
    batches: list[int] = []
    hooks = [
        block.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
        for layer in model.layers
        for block in layer.blocks
    ]
    model(x.clone().requires_grad_(True)).sum().backward()
    blocks = sum(len(layer.blocks) for layer in model.layers)
    assert batches == [1] * (2 * 3 * blocks)  # forward and recomputation, one clip each
    batches.clear()
    model.low_memory = False  # scoring on the batched path (the CPU default is the low-memory path)
    with torch.no_grad():
        model(x)
    model(x)  # grad enabled, but nothing needs it: the batched path with the kept biases
    assert batches == [3] * (2 * blocks)
    assert all(m._bias_cache is not None for m in model.modules() if isinstance(m, WindowAttention3D))
    batches.clear()
    model.low_memory = None
    model(x)  # the CPU default without gradients: one clip at a time, no bias kept
    assert batches == [1] * (3 * blocks)
    assert all(m._bias_cache is None for m in model.modules() if isinstance(m, WindowAttention3D))
    for hook in hooks:
        hook.remove()


def test_the_cut_backward_allocates_one_video_sized_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    video = torch.rand(5, 3, 20, 40, generator=torch.Generator().manual_seed(0), requires_grad=True)
    sizes: list[tuple[int, ...]] = []
    original = torch.Tensor.new_zeros

    def counted(self: torch.Tensor, *size: object, **kwargs: object) -> torch.Tensor:
        out = original(self, *size, **kwargs)
        sizes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch.Tensor, "new_zeros", counted)
    cuts = [*_cuts(video), RowCut(torch.tensor([4, 4])), *_cuts(video)]
    sum(out.sum() for out in cut(video, cuts)).backward()
    assert sizes.count(tuple(video.shape)) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="release_free_memory acts on glibc only")
def test_release_free_memory_hands_freed_heap_pages_back() -> None:
    def rss_mib() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    blocks = [bytearray(64 * 1024) for _ in range(3200)]  # 200 MiB of heap blocks (below the mmap threshold)
    for b in blocks:
        b[::4096] = b"x" * len(b[::4096])  # touch every page
    keep = bytearray(64 * 1024)  # a live block above them: the heap's top is not free, so free() keeps the pages
    del blocks
    before = rss_mib()
    assert dvlta_metric.release_free_memory() is True
    assert before - rss_mib() > 100, "malloc_trim should hand most of the 200 MiB back"
    del keep


def test_checkpointing_releases_freed_memory_between_branches_and_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(model_module, "release_free_memory", lambda: calls.append("branch") or True)
    monkeypatch.setattr(swin3d, "release_free_memory", lambda: calls.append("stage") or True)
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", as_loss=True)
    video = torch.rand(8, 3, 96, 128, generator=torch.Generator().manual_seed(10), requires_grad=True)
    model(video).backward()
    assert calls == []  # off by default
    model.set_grad_checkpointing(True)
    score = model(video)
    forward_calls = calls.count("branch")
    assert forward_calls == len(model.branches) and "stage" not in calls
    score.backward()
    assert calls.count("branch") == 2 * len(model.branches)  # and once as each branch's backward begins
    assert calls.count("stage") == len(model._swin().layers)  # after each Swin3D stage's backward pass
    calls.clear()
    model(video.detach())
    assert calls == []  # nothing to release for a pass that nothing takes gradients from


def test_release_free_memory_is_safe_to_call() -> None:
    assert isinstance(dvlta_metric.release_free_memory(), bool)
    assert isinstance(dvlta_metric.release_free_memory(), bool)
