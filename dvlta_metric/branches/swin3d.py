"""Video Swin-T 3D backbone of FAST-VQA-B with gated relative position bias (GRPB).

This is the fragment backbone of the Basic Visual Feature Extraction Module of DVLTA-VQA (eqs. 8-9 of the
DVLTA-VQA paper): a Video Swin Transformer (tiny) applied to the spliced fragment view, following FAST-VQA
(Wu et al., "FAST-VQA: Efficient End-to-end Video Quality Assessment with Fragment Sampling", ECCV 2022).
It is our own implementation; it reproduces the numerics of the official FAST-VQA backbone so that
FAST-VQA-B checkpoints (the ``fragments_backbone.*`` keys, with that prefix stripped and the
``relative_position_index`` buffers dropped) load into it unchanged and give the same output.

Details that follow the official code exactly, including its quirks:

* **Adaptive window.** The base window (8, 7, 7) is scaled by ``input_size // base_x_size`` (integer floor
  of ``window * input / base``), then clipped per stage to the feature size; a clipped axis gets no shift.
  Shift sizes always come from the *base* window (``base // 2``), not from the scaled one.
* **GRPB.** In stages with a fragment bias, every token gets fragment coordinates by nearest-interpolating
  a ``(1, wh, ww)`` grid of fragment indices (``wh, ww``: the stage's effective window height and width)
  to the padded feature size, then rolling and partitioning it like the features. For a token pair
  ``(i, j)`` the gate is ``g = sum(|c_i - c_j|)`` over the three coordinates, and the attention bias is
  ``rel_bias * g + frag_bias * (1 - g)``. Note that ``g`` is an L1 distance between fragment indices, *not*
  a 0/1 "same fragment" indicator: it can be 2 or more (e.g. a diagonal neighbour fragment), which
  extrapolates the two tables. This is what the released checkpoints were trained with, so it is kept.
* **Padding.** Features are zero-padded to window multiples after ``norm1``; padded tokens take part in
  attention (they are not masked), as in the official code.
* **Shifted windows** use the additive -100 mask between tokens of different shift regions.

Deviations, only where the official code fails: the adaptive window is clamped to ``[1, base window]``
per axis (the official code divides by zero for very short/small inputs and indexes past its bias
tables for inputs larger than ``base_x_size``).

For speed, attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` with the
combined bias as an additive float mask (or, with :meth:`SwinTransformer3D.set_attention_kernel`, through
FlexAttention adding the same bias, faster on GPUs: see the Benchmarks page), and everything that depends
only on shapes (relative position indices, fragment gates, shift masks) is computed once and cached per
shape, window, shift and device.
These tensors (:class:`WindowTensors`) are looked up for all stages at once, outside any
:func:`torch.compile` graph, and enter the blocks as inputs, so a compiled backbone neither recomputes them
nor bakes them in as constants. With gradient checkpointing (a loss's backward pass) memory comes first
instead: each block is recomputed one clip at a time, builds its bias when it runs, and only the latest
block's bias is held (:class:`TransientWindowTensors`).

Under autocast the residual stream stays in the weights' dtype (float32) in every stage:
:class:`PatchEmbed3D` and :class:`PatchMerging` cast their outputs back, and each block adds its
half-precision branch outputs to the float32 stream. Only the matmuls and attention run in half precision.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from timm.layers import Mlp, trunc_normal_
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .._allocator import release_free_memory
from .base import is_exporting
from .flex_window import flex_attention_available, flex_window_attention

__all__ = [
    "ATTENTION_KERNELS",
    "BasicLayer",
    "PatchEmbed3D",
    "PatchMerging",
    "SwinTransformer3D",
    "SwinTransformerBlock3D",
    "TransientWindowTensors",
    "WindowAttention3D",
    "WindowTensors",
    "adaptive_window_size",
    "attention_dtype",
    "cell_isolation_mask",
    "check_attention_kernel",
    "clear_shape_caches",
    "clip_window_size",
    "fragment_coords",
    "fragment_gate",
    "shift_attention_mask",
    "shift_regions",
]

Size3 = tuple[int, int, int]
_T = TypeVar("_T")

_CACHE_SIZE = 64
_MASK_VALUE = -100.0
ATTENTION_KERNELS = ("sdpa", "flex")
"""Window attention kernels: ``"sdpa"`` (:func:`torch.nn.functional.scaled_dot_product_attention`) or ``"flex"``
(FlexAttention, :mod:`~dvlta_metric.branches.flex_window`); both add the same cached bias."""


# ----------------------------------------------------------------------------------------------------------
# Shape helpers (pure functions of shapes, cached)
# ----------------------------------------------------------------------------------------------------------


def adaptive_window_size(base_window: Size3, input_size: Size3, base_x_size: Size3) -> Size3:
    """Scales the base window to the input size, as FAST-VQA's ``get_adaptive_window_size``.

    Each axis becomes ``base_window * input_size // base_x_size`` (integer floor), clamped to
    ``[1, base_window]`` (the clamp only matters where the official code would fail).

    Args:
        base_window: Base window ``(Wd, Wh, Ww)``, e.g. ``(8, 7, 7)``.
        input_size: Input video size ``(D, H, W)`` in frames and pixels.
        base_x_size: Input size the base window is defined for, e.g. ``(32, 224, 224)``.

    Returns:
        The scaled window ``(wd, wh, ww)``.
    """
    return _size3([min(max((w * x) // b, 1), w) for w, x, b in zip(base_window, input_size, base_x_size, strict=True)])


def clip_window_size(feature_size: Size3, window: Size3, shift: Size3) -> tuple[Size3, Size3]:
    """Clips a window to the feature size, as FAST-VQA's ``get_window_size``.

    Where the feature is not larger than the window along an axis, the window takes the feature size
    and the shift along that axis becomes 0.

    Args:
        feature_size: Feature size ``(D, H, W)`` in tokens.
        window: Requested window ``(wd, wh, ww)``.
        shift: Requested shift ``(sd, sh, sw)``.

    Returns:
        ``(window, shift)`` after clipping.
    """
    out_w = list(window)
    out_s = list(shift)
    for i, (f, w) in enumerate(zip(feature_size, window, strict=True)):
        if f <= w:
            out_w[i] = f
            out_s[i] = 0
    return _size3(out_w), _size3(out_s)


def _size3(values: Sequence[int]) -> Size3:
    """Converts a length-3 sequence to a ``(d, h, w)`` tuple of ints."""
    if len(values) != 3:
        raise ValueError(f"expected 3 sizes (D, H, W), got {tuple(values)}")
    d, h, w = (int(v) for v in values)
    return d, h, w


def _padded_size(size: Size3, window: Size3) -> Size3:
    """Rounds each axis of ``size`` up to a multiple of ``window``."""
    return _size3([math.ceil(s / w) * w for s, w in zip(size, window, strict=True)])


def _window_partition(x: Tensor, window: Size3) -> Tensor:
    """Splits a padded feature volume into non-overlapping windows.

    Args:
        x: Features ``(B, Dp, Hp, Wp, C)`` with each spatial axis a multiple of ``window``.
        window: Window ``(wd, wh, ww)``.

    Returns:
        Windows ``(B, nW, N, C)`` with ``nW = Dp*Hp*Wp / N`` in (d, h, w) raster order and
        ``N = wd*wh*ww`` tokens per window in (d, h, w) raster order.
    """
    b, d, h, w, c = x.shape
    wd, wh, ww = window
    x = x.view(b, d // wd, wd, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, -1, wd * wh * ww, c)


@lru_cache(maxsize=_CACHE_SIZE)
def _window_token_index(
    feature_size: Size3, window: Size3, shift: Size3, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Gather/scatter indices that fuse zero-padding, cyclic shift and window partition.

    Gathering rows ``gather`` from the flattened features (with one zero row appended at index
    ``D*H*W`` when padding is needed) gives exactly ``window_partition(roll(pad(x), -shift))``; gathering
    rows ``scatter`` from the flattened windows inverts it and crops the padding. This replaces
    ``torch.roll`` and permute copies with one ``index_select`` each way.

    Args:
        feature_size: Unpadded feature size ``(D, H, W)``.
        window: Effective window ``(wd, wh, ww)``.
        shift: Effective cyclic shift ``(sd, sh, sw)``.
        device: Device of the result.

    Returns:
        ``gather`` (long ``(nW*N,)``, values in ``[0, D*H*W]``) and ``scatter`` (long ``(D*H*W,)``,
        values in ``[0, nW*N)``).
    """
    with torch.inference_mode(False), torch.no_grad():
        d, h, w = feature_size
        dp, hp, wp = _padded_size(feature_size, window)
        position = torch.full((dp, hp, wp), d * h * w, dtype=torch.long)  # padding -> the zero row
        position[:d, :h, :w] = torch.arange(d * h * w).view(d, h, w)
        position = torch.roll(position, shifts=tuple(-s for s in shift), dims=(0, 1, 2))
        gather = _window_partition(position[None, ..., None], window).reshape(-1)
        scatter = torch.empty(d * h * w + 1, dtype=torch.long)
        scatter[gather] = torch.arange(gather.numel())
        # scatter: its own storage, not a view of the longer one (an exported program saves each constant whole)
        return gather.to(device), scatter[: d * h * w].clone().to(device)


def _full_relative_position_index(window: Size3) -> Tensor:
    """Relative position index of every token pair in a full window.

    Args:
        window: Window ``(Wd, Wh, Ww)``.

    Returns:
        Long tensor ``(N, N)``, ``N = Wd*Wh*Ww``, indexing a table of ``(2Wd-1)(2Wh-1)(2Ww-1)`` rows.
    """
    wd, wh, ww = window
    grids = torch.meshgrid(torch.arange(wd), torch.arange(wh), torch.arange(ww), indexing="ij")
    coords = torch.stack(grids).flatten(1)  # (3, N)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (N, N, 3)
    rel = rel + torch.tensor([wd - 1, wh - 1, ww - 1])
    strides = torch.tensor([(2 * wh - 1) * (2 * ww - 1), 2 * ww - 1, 1])
    return (rel * strides).sum(-1)


@lru_cache(maxsize=_CACHE_SIZE)
def _relative_position_index(base_window: Size3, window: Size3, device: torch.device) -> Tensor:
    """Flattened relative position index of a (possibly smaller) window inside the base window.

    As in FAST-VQA, the index of the full base window is reshaped to ``(Wd, Wh, Ww, Wd, Wh, Ww)`` and
    sliced ``[:d, :h, :w, :d, :h, :w]``.

    Args:
        base_window: Window the bias tables are sized for.
        window: Effective window ``(d, h, w)``, each axis at most the base one.
        device: Device of the result.

    Returns:
        Long tensor ``(N*N,)`` with ``N = d*h*w``.
    """
    with torch.inference_mode(False), torch.no_grad():
        d, h, w = window
        full = _full_relative_position_index(base_window).view(*base_window, *base_window)
        return full[:d, :h, :w, :d, :h, :w].reshape(-1).to(device)


def fragment_coords(padded: Size3, window: Size3, shift: Size3) -> Tensor:
    """Fragment coordinates of every token in every window (uncached, on CPU).

    A ``(1, wh, ww)`` grid of fragment indices is nearest-interpolated to the padded feature size, rolled by
    ``-shift`` and split into windows, as in FAST-VQA's GRPB.

    Args:
        padded: Padded feature size ``(Dp, Hp, Wp)``.
        window: Effective window ``(wd, wh, ww)``.
        shift: Effective cyclic shift ``(sd, sh, sw)``.

    Returns:
        Float tensor ``(nW, N, 3)``.
    """
    _, wh, ww = window
    grids = torch.meshgrid(torch.arange(1), torch.arange(wh), torch.arange(ww), indexing="ij")
    frags = torch.stack(grids).float()[None]  # (1, 3, 1, wh, ww)
    coords = F.interpolate(frags, size=padded, mode="nearest").permute(0, 2, 3, 4, 1)  # (1, Dp, Hp, Wp, 3)
    coords = torch.roll(coords, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
    return _window_partition(coords, window)[0]


def fragment_gate(padded: Size3, window: Size3, shift: Size3) -> Tensor:
    """GRPB gate of every token pair in every window (uncached, on CPU).

    A ``(1, wh, ww)`` grid of fragment coordinates is nearest-interpolated to the padded feature size,
    rolled by ``-shift`` and split into windows; the gate of a token pair is the L1 distance
    ``sum(|c_i - c_j|)`` between their fragment coordinates. This is FAST-VQA's gate, which is *not* a
    0/1 indicator: it is 0 inside one fragment, 1 for horizontally/vertically adjacent fragments and can
    be 2 or more further apart.

    Args:
        padded: Padded feature size ``(Dp, Hp, Wp)``.
        window: Effective window ``(wd, wh, ww)``.
        shift: Effective cyclic shift ``(sd, sh, sw)``.

    Returns:
        Float tensor ``(nW, N, N)``.
    """
    return _gate_of(fragment_coords(padded, window, shift))


def _gate_of(coords: Tensor) -> Tensor:
    """The gate ``sum(|c_i - c_j|)`` ``(nW, N, N)`` of fragment coordinates ``(nW, N, 3)`` (their dtype, device)."""
    gate = coords.new_zeros(coords.shape[0], coords.shape[1], coords.shape[1])
    for axis in range(3):  # loop over the 3 coordinates, not over windows
        c = coords[..., axis]
        gate = gate + (c[:, :, None] - c[:, None, :]).abs()
    return gate


_WeakTensor = Callable[[], "Tensor | None"] | None
"""A weak reference to a tensor (``None`` for no tensor)."""


def _weak(t: Tensor | None) -> _WeakTensor:
    return None if t is None else weakref.ref(t)


def _same(ref: _WeakTensor, t: Tensor | None) -> bool:
    """Whether ``ref`` refers to the very tensor ``t`` (both ``None`` counts)."""
    return t is None if ref is None else (t is not None and ref() is t)


@lru_cache(maxsize=_CACHE_SIZE)
def _cached_fragment_gate(
    padded: Size3, window: Size3, shift: Size3, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Cached :func:`fragment_gate`, shaped ``(nW, 1, N, N)`` to broadcast over heads."""
    with torch.inference_mode(False), torch.no_grad():
        return fragment_gate(padded, window, shift).unsqueeze(1).to(device=device, dtype=dtype)


def _shift_region_labels(length: int, window: int, shift: int) -> Tensor:
    """Per-axis region label of FAST-VQA's ``compute_mask`` (slices assigned in order, later ones win)."""
    labels = torch.zeros(length, dtype=torch.long)
    for label, sl in enumerate((slice(-window), slice(-window, -shift), slice(-shift, None))):
        labels[sl] = label
    return labels


def shift_regions(padded: Size3, window: Size3, shift: Size3) -> Tensor:
    """Shift region of every token in every window (uncached, on CPU), as in FAST-VQA's ``compute_mask``.

    Args:
        padded: Padded feature size ``(Dp, Hp, Wp)``.
        window: Effective window ``(wd, wh, ww)``.
        shift: Effective cyclic shift ``(sd, sh, sw)``; all zeros gives one region.

    Returns:
        Long tensor ``(nW, N)`` of region labels in ``[0, 27)``.
    """
    ld, lh, lw = (_shift_region_labels(p, w, s) for p, w, s in zip(padded, window, shift, strict=True))
    region = ld[:, None, None] * 9 + lh[None, :, None] * 3 + lw[None, None, :]  # (Dp, Hp, Wp)
    return _window_partition(region[None, ..., None], window)[0, ..., 0]


def shift_attention_mask(padded: Size3, window: Size3, shift: Size3) -> Tensor:
    """Additive attention mask of shifted windows (uncached, on CPU), as FAST-VQA's ``compute_mask``.

    Token pairs from different regions of the cyclically shifted volume get -100, others 0.

    Args:
        padded: Padded feature size ``(Dp, Hp, Wp)``.
        window: Effective window ``(wd, wh, ww)``.
        shift: Effective cyclic shift ``(sd, sh, sw)``.

    Returns:
        Float tensor ``(nW, N, N)``.
    """
    return _mask_of(shift_regions(padded, window, shift), torch.float32)


def _mask_of(region: Tensor, dtype: torch.dtype) -> Tensor:
    """The additive mask ``(nW, N, N)`` of shift regions ``(nW, N)``: -100 between tokens of different regions."""
    differ = region[:, :, None] != region[:, None, :]
    return torch.zeros(differ.shape, dtype=dtype, device=region.device).masked_fill(differ, _MASK_VALUE)


def cell_isolation_mask(feature_size: Size3, window: Size3, shift: Size3, cells: int) -> Tensor:
    """Additive mask that keeps attention inside the cells of a ``cells x cells`` spatial grid (uncached, on CPU).

    Token ``(d, y, x)`` of a ``(D, H, W)`` feature volume belongs to cell ``(y // (H / cells), x // (W / cells))``
    (all frames); pairs of tokens in different cells get ``-inf``. The zero rows of the window padding form
    one group of their own: they carry no pixel. With the mask in every block a fragment cell's features depend
    only on its own pixels (patch embedding, MLPs, norms and patch merging are already local when the grid
    divides every stage's feature size) *(ours: for the isolated quality map, not part of the scoring model)*.

    Args:
        feature_size: Unpadded feature size ``(D, H, W)``; ``H`` and ``W`` multiples of ``cells``.
        window: Effective window ``(wd, wh, ww)``.
        shift: Effective cyclic shift ``(sd, sh, sw)``.
        cells: Cells per side of the grid.

    Returns:
        Float tensor ``(nW, N, N)`` of ``0`` and ``-inf``; every row keeps at least its own token.

    Raises:
        ValueError: If the grid does not divide ``H`` and ``W``.
    """
    d, h, w = feature_size
    if cells < 1 or h % cells or w % cells:
        raise ValueError(f"a {cells}x{cells} cell grid does not divide the {h}x{w} token grid of a Swin3D stage")
    rows = torch.arange(h) // (h // cells)
    cols = torch.arange(w) // (w // cells)
    cell = (rows[:, None] * cells + cols[None, :]).expand(d, h, w).reshape(-1)
    gather, _ = _window_token_index(feature_size, window, shift, torch.device("cpu"))
    ids = torch.cat([cell, cell.new_full((1,), -1)])[gather].view(-1, math.prod(window))  # (nW, N)
    differ = ids[:, :, None] != ids[:, None, :]
    return torch.zeros(differ.shape).masked_fill_(differ, float("-inf"))


@lru_cache(maxsize=_CACHE_SIZE)
def _cached_shift_mask(padded: Size3, window: Size3, shift: Size3, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Cached :func:`shift_attention_mask`, shaped ``(nW, 1, N, N)`` to broadcast over heads."""
    with torch.inference_mode(False), torch.no_grad():
        return shift_attention_mask(padded, window, shift).unsqueeze(1).to(device=device, dtype=dtype)


@lru_cache(maxsize=_CACHE_SIZE)
def _cached_fragment_coords(
    padded: Size3, window: Size3, shift: Size3, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Cached :func:`fragment_coords` ``(nW, N, 3)``: what an exported program builds its gates from."""
    with torch.inference_mode(False), torch.no_grad():
        return fragment_coords(padded, window, shift).to(device=device, dtype=dtype)


@lru_cache(maxsize=_CACHE_SIZE)
def _cached_shift_regions(padded: Size3, window: Size3, shift: Size3, device: torch.device) -> Tensor:
    """Cached :func:`shift_regions` ``(nW, N)``: what an exported program builds its shift masks from."""
    with torch.inference_mode(False), torch.no_grad():
        return shift_regions(padded, window, shift).to(device)


def check_attention_kernel(kernel: object) -> str:
    """Checks a window attention kernel name (see :meth:`SwinTransformer3D.set_attention_kernel`).

    Args:
        kernel: The name to check.

    Returns:
        ``kernel``, one of :data:`ATTENTION_KERNELS`.

    Raises:
        ValueError: If it is not one of them.
        RuntimeError: If it is ``"flex"`` and this torch has no FlexAttention.
    """
    if kernel not in ATTENTION_KERNELS:
        raise ValueError(f"attention kernel must be one of {ATTENTION_KERNELS}, got {kernel!r}")
    if kernel == "flex" and not flex_attention_available():
        raise RuntimeError(f"the 'flex' attention kernel needs torch>=2.5 (FlexAttention); this is {torch.__version__}")
    return str(kernel)


class WindowTensors(NamedTuple):
    """Shape-dependent inputs of one block's attention (see :meth:`SwinTransformerBlock3D.window_tensors`).

    Attributes:
        gather: Long ``(nW*N,)``: flattened tokens (plus one zero row for padding) to shifted windows.
        scatter: Long ``(D*H*W,)``: flattened windows back to tokens (undoing the shift, cropping padding).
        bias: Additive attention bias ``(1 or nW, nH, N, N)`` in the attention's dtype: relative position
            bias (gated by fragments with GRPB) plus the shift mask.
        kernel: The attention kernel that adds it, one of :data:`ATTENTION_KERNELS`.
    """

    gather: Tensor
    scatter: Tensor
    bias: Tensor
    kernel: str = "sdpa"


def attention_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """Dtype a block's attention computes in: autocast's on ``device`` if it is on there, else ``dtype``."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return dtype


def _shape_cached(cached: Callable[..., _T], *key: object) -> _T:
    """``cached(*key)`` for one of the ``lru_cache`` shape caches, also while :func:`torch.export.export` traces.

    A trace runs every tensor operation of its thread on placeholder tensors, which must never reach a cache (a later
    eager call would get them back). While it traces, the lookup therefore runs in a worker thread, where torch's
    tracing modes (thread-local) are not active: it gives real tensors, cached like those of any eager call, and the
    trace takes them as constants of the program *(ours)*. Only small tensors are looked up this way (indices, fragment
    coordinates, shift regions); the gates, masks and biases built from them are computed in the program.
    """
    if is_exporting():
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(cached, *key).result()
    return cached(*key)


def clear_shape_caches() -> None:
    """Frees the cached shape-dependent tensors (indices, gates, masks) on all devices."""
    _relative_position_index.cache_clear()
    _window_token_index.cache_clear()
    _cached_fragment_gate.cache_clear()
    _cached_shift_mask.cache_clear()
    _cached_fragment_coords.cache_clear()
    _cached_shift_regions.cache_clear()


# ----------------------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------------------


class PatchEmbed3D(nn.Module):
    """Video to patch embedding: a strided Conv3d, then LayerNorm.

    Args:
        patch_size: Patch ``(pd, ph, pw)``.
        in_chans: Input channels.
        embed_dim: Output channels.
    """

    def __init__(self, patch_size: Size3 = (2, 4, 4), in_chans: int = 3, embed_dim: int = 96) -> None:
        super().__init__()
        self.patch_size = _size3(patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Embeds a video, zero-padding it at the end of each axis to patch multiples.

        Args:
            x: Video ``(B, C_in, D, H, W)``.

        Returns:
            Tokens ``(B, D', H', W', embed_dim)`` (channels last), ``D' = ceil(D / pd)`` etc., in the
            dtype of the weights even under autocast.
        """
        d, h, w = x.shape[2:]
        pd, ph, pw = self.patch_size
        x = F.pad(x, (0, (-w) % pw, 0, (-h) % ph, 0, (-d) % pd))
        x = self.proj(x).permute(0, 2, 3, 4, 1)
        # in the weights' dtype: under autocast the residual stream starts (and stays) in float32
        return self.norm(x).to(self.norm.weight.dtype)


class WindowAttention3D(nn.Module):
    """Window multi-head self-attention with relative position bias and optional GRPB.

    Args:
        dim: Channels.
        window_size: Base window ``(Wd, Wh, Ww)``; the bias tables are sized for it and smaller
            effective windows use a slice of its relative position index.
        num_heads: Attention heads.
        qkv_bias: Whether the qkv projection has a bias.
        frag_bias: Whether to add the ``fragment_position_bias_table`` of GRPB.
    """

    def __init__(
        self,
        dim: int,
        window_size: Size3,
        num_heads: int,
        qkv_bias: bool = True,
        frag_bias: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.window_size = _size3(window_size)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        wd, wh, ww = self.window_size
        table_rows = (2 * wd - 1) * (2 * wh - 1) * (2 * ww - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table_rows, num_heads))
        self.fragment_position_bias_table: nn.Parameter | None
        if frag_bias:
            # Left at zero like the official code (only the relative table is trunc-normal initialised).
            self.fragment_position_bias_table = nn.Parameter(torch.zeros(table_rows, num_heads))
        else:
            self.register_parameter("fragment_position_bias_table", None)
        self.register_buffer(
            "relative_position_index", _full_relative_position_index(self.window_size), persistent=False
        )
        self._bias_cache: tuple[tuple[object, ...], _WeakTensor, _WeakTensor, Tensor] | None = None
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    @property
    def has_frag_bias(self) -> bool:
        """Whether this attention uses the gated fragment bias (GRPB)."""
        return self.fragment_position_bias_table is not None

    def position_bias(self, window: Size3, gate: Tensor | None) -> Tensor:
        """Relative position bias, gated by fragments where GRPB is on.

        Args:
            window: Effective window ``(wd, wh, ww)``, ``N = wd*wh*ww``.
            gate: Fragment gate ``(nW, 1, N, N)`` or ``None``; ignored without a fragment table.

        Returns:
            ``rel * gate + frag * (1 - gate)`` shaped ``(nW, nH, N, N)`` with GRPB, else the plain
            relative bias ``(1, nH, N, N)``.
        """
        table = self.relative_position_bias_table
        index = _shape_cached(_relative_position_index, self.window_size, window, table.device)
        n = math.prod(window)
        # gathered from the transposed table: a contiguous (nH, N, N) in one pass (no permute copy), which keeps the
        # large broadcast result below contiguous (and fast)
        rel = table.t().index_select(1, index).view(self.num_heads, n, n)
        frag_table = self.fragment_position_bias_table
        if frag_table is None or gate is None:
            return rel.unsqueeze(0)
        frag = frag_table.t().index_select(1, index).view(self.num_heads, n, n)
        return torch.lerp(frag, rel, gate)  # = rel * gate + frag * (1 - gate), in one pass

    def bias_tables(self) -> list[nn.Parameter]:
        """The relative position table, then the fragment table where GRPB is on."""
        tables = [self.relative_position_bias_table]
        if self.fragment_position_bias_table is not None:
            tables.append(self.fragment_position_bias_table)
        return tables

    def tables_key(self) -> tuple[tuple[torch.device, int, int], ...]:
        """Device, storage address and version counter of each bias table: changes when their values may have."""
        return tuple((t.device, t.data_ptr(), t._version) for t in self.bias_tables())

    def attention_bias(
        self, window: Size3, gate: Tensor | None, mask: Tensor | None, dtype: torch.dtype, keep: bool = True
    ) -> Tensor:
        """Position bias plus shift mask, as one additive attention mask in ``dtype``.

        When the bias tables are frozen (``requires_grad=False``, as in DVLTA-VQA) the result depends only on
        the shapes and on the table values, so the last one is kept and reused until the window, the masks,
        the dtype or the tables change (tracked by their version counters: ``load_state_dict``, ``.to()`` and
        in-place edits under ``torch.no_grad()`` are seen; edits through ``table.data`` bypass the counter,
        so call :meth:`SwinTransformer3D.clear_bias_cache` after those). With trainable tables the bias is rebuilt
        on every call: with grad enabled so that gradients reach them, and without grad (scoring a model being
        fine-tuned) because a fused optimizer steps them without moving their version counters. A bias built
        without grad never requires grad, whatever the tables do.

        Args:
            window: Effective window ``(wd, wh, ww)``.
            gate: Fragment gate ``(nW, 1, N, N)`` or ``None``.
            mask: Additive shift mask ``(nW, 1, N, N)`` or ``None``.
            dtype: Dtype of the attention computation.
            keep: Whether frozen tables may reuse and keep the block's last bias; ``False`` neither reads nor
                writes it (checkpointed passes hold one block's bias at a time instead, see
                :class:`TransientWindowTensors`).

        Returns:
            ``(1 or nW, nH, N, N)``.
        """
        exporting = is_exporting()
        grad = torch.is_grad_enabled()
        # only frozen tables' bias is kept: trainable ones may change without their version counters moving (fused
        # optimizers step them in place without bumping them), so a call without grad builds their bias afresh too
        frozen = keep and not exporting and not any(t.requires_grad for t in self.bias_tables())
        key = (window, dtype, self.tables_key()) if frozen else ()
        # the gate and mask are identified by object, through weak references: an address could be reused by
        # another input size's gate of the same shape once the shape caches let the first one go
        if frozen and self._bias_cache is not None:
            cached_key, cached_gate, cached_mask, cached_bias = self._bias_cache
            if cached_key == key and _same(cached_gate, gate) and _same(cached_mask, mask):
                return cached_bias
        # out of inference mode, so that a kept bias also serves later calls outside it; inference_mode(False)
        # turns grad mode on, so the caller's grad mode is put back: a bias that requires grad would send
        # scaled_dot_product_attention to its slow math backend on CPU (its fused kernels take no such mask)
        building = contextlib.ExitStack()
        if not exporting:
            building.enter_context(torch.inference_mode(False))
            building.enter_context(torch.set_grad_enabled(grad))
        with building:
            bias = self.position_bias(window, gate)
            if mask is not None:
                # the GRPB bias is a fresh (nW, nH, N, N) tensor: add in place to spare a large allocation
                bias = bias.add_(mask) if bias.shape[0] == mask.shape[0] else bias + mask
            bias = bias.to(dtype)
        if not exporting:  # a traced bias is no tensor to keep
            self._bias_cache = (key, _weak(gate), _weak(mask), bias.detach()) if frozen else None
        return bias

    def forward(self, x: Tensor, bias: Tensor, kernel: str = "sdpa") -> Tensor:
        """Attends within each window.

        Args:
            x: Windows ``(B, nW, N, C)``.
            bias: Additive bias ``(1 or nW, nH, N, N)`` from :meth:`attention_bias`.
            kernel: ``"sdpa"`` or ``"flex"`` (see :meth:`SwinTransformer3D.set_attention_kernel`).

        Returns:
            Windows ``(B, nW, N, C)``.
        """
        b, nw, n, c = x.shape
        nh, hd = self.num_heads, self.head_dim
        qkv = self.qkv(x).view(b, nw, n, 3, nh, hd).permute(3, 0, 1, 4, 2, 5)  # (3, B, nW, nH, N, hd)
        q, k, v = qkv.unbind(0)
        if bias.dtype != q.dtype:
            bias = bias.to(q.dtype)
        if kernel == "flex":
            shape = (b * nw, nh, n, hd)  # a view: windows join the batch
            out = flex_window_attention(q.reshape(shape), k.reshape(shape), v.reshape(shape), bias)
            return self.proj(out.view(b, nw, nh, n, hd).transpose(2, 3).reshape(b, nw, n, c))
        if bias.shape[0] == 1 or b == 1:
            # windows join the batch: q, k, v stay strided views, the bias broadcasts over it
            shape = (b * nw, nh, n, hd)
        else:  # per-window bias and B > 1: windows join the heads, the bias broadcasts over the batch
            shape = (b, nw * nh, n, hd)
            bias = bias.reshape(1, nw * nh, n, n)
        out = F.scaled_dot_product_attention(q.reshape(shape), k.reshape(shape), v.reshape(shape), attn_mask=bias)
        out = out.view(b, nw, nh, n, hd).transpose(2, 3).reshape(b, nw, n, c)
        return self.proj(out)


class SwinTransformerBlock3D(nn.Module):
    """(Shifted-)window transformer block: ``x + W-MSA(norm1(x))``, then ``x + MLP(norm2(x))``.

    Args:
        dim: Channels.
        num_heads: Attention heads.
        window_size: Base window ``(Wd, Wh, Ww)``.
        mlp_ratio: MLP hidden width relative to ``dim``.
        qkv_bias: Whether the qkv projection has a bias.
        frag_bias: Whether the attention uses GRPB.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Size3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        frag_bias: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3D(dim, window_size, num_heads, qkv_bias=qkv_bias, frag_bias=frag_bias)
        self.norm2 = nn.LayerNorm(dim)
        # timm's Mlp: fc1, GELU, fc2 (its dropouts at p=0 do nothing); keys mlp.fc1.*, mlp.fc2.* as FAST-VQA's
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def window_tensors(
        self,
        feature_size: Size3,
        window: Size3,
        shift: Size3,
        device: torch.device,
        dtype: torch.dtype,
        kernel: str = "sdpa",
        keep: bool = True,
    ) -> WindowTensors:
        """Gather/scatter indices and attention bias for a feature size (cached; see the module notes).

        Args:
            feature_size: Unpadded ``(D, H, W)`` of the block's input.
            window: Effective window (already clipped to ``feature_size``).
            shift: Effective cyclic shift; all zeros for a non-shifted block.
            device: Device of the input.
            dtype: Dtype the attention computes in (see :func:`attention_dtype`).
            kernel: Attention kernel, one of :data:`ATTENTION_KERNELS`. Bias tables that take gradients
                (``requires_grad`` while grad is enabled) always get ``"sdpa"``, through which their gradients
                flow.
            keep: Whether the attention keeps its bias for the next call
                (:meth:`WindowAttention3D.attention_bias`).

        Returns:
            The block's :class:`WindowTensors`.
        """
        gather, scatter = _shape_cached(_window_token_index, feature_size, window, shift, device)
        padded = _padded_size(feature_size, window)
        tables = [self.attn.relative_position_bias_table, self.attn.fragment_position_bias_table]
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tables):
            kernel = "sdpa"
        table_dtype = self.attn.relative_position_bias_table.dtype
        key = (padded, window, shift, device, table_dtype)
        shifted = any(s > 0 for s in shift)
        if is_exporting():  # as constants, the (nW, 1, N, N) gate and mask would take much of the file: from sources
            coords = _shape_cached(_cached_fragment_coords, *key) if self.attn.has_frag_bias else None
            regions = _shape_cached(_cached_shift_regions, padded, window, shift, device) if shifted else None
            gate = None if coords is None else _gate_of(coords).unsqueeze(1)
            mask = None if regions is None else _mask_of(regions, table_dtype).unsqueeze(1)
        else:
            gate = _cached_fragment_gate(*key) if self.attn.has_frag_bias else None
            mask = _cached_shift_mask(*key) if shifted else None
        return WindowTensors(gather, scatter, self.attn.attention_bias(window, gate, mask, dtype, keep), kernel)

    def forward(self, x: Tensor, window: Size3, shift: Size3, tensors: WindowTensors | None = None) -> Tensor:
        """Applies the block.

        Args:
            x: Tokens ``(B, D, H, W, C)``.
            window: Effective window (already clipped to ``(D, H, W)``).
            shift: Effective cyclic shift; all zeros for a non-shifted block.
            tensors: This block's :meth:`window_tensors` for ``x``; looked up here if ``None``.

        Returns:
            Tokens ``(B, D, H, W, C)``.
        """
        b, d, h, w, c = x.shape
        if tensors is None:
            dtype = attention_dtype(x.device, x.dtype)
            tensors = self.window_tensors((d, h, w), window, shift, x.device, dtype)
        n = math.prod(window)
        y = self.norm1(x).reshape(b, d * h * w, c)
        if _padded_size((d, h, w), window) != (d, h, w):  # zero padding after norm1; padded tokens attend
            y = torch.cat([y, y.new_zeros(b, 1, c)], dim=1)
        # == window_partition(roll(pad(y), -shift)): (B, nW, N, C)
        y = y.index_select(1, tensors.gather).view(b, -1, n, c)
        y = self.attn(y, tensors.bias, tensors.kernel)
        # == crop(roll(window_reverse(y), shift))
        y = y.reshape(b, -1, c).index_select(1, tensors.scatter).view(b, d, h, w, c)
        x = x + y
        return x + self.mlp(self.norm2(x))


class TransientWindowTensors:
    """Holds the :class:`WindowTensors` of one block at a time, for checkpointed passes *(ours)*.

    With gradient checkpointing each block runs twice, in the forward pass and again in the backward pass,
    in block order and then in reverse. Keeping every block's bias (as frozen blocks do when scoring, one
    ``(nW, nH, N, N)`` tensor each: 1.1 GB for FAST-VQA-B at 32x224x224) would hold all of them through the
    backward pass; building it inside each checkpointed call and keeping only the latest one builds each bias
    once per pass (the clips of a batch reuse it) and holds one at a time. A :class:`SwinTransformer3D`
    shares one of these among its stages.
    """

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._tensors: WindowTensors | None = None

    @torch.compiler.disable  # a lookup with Python state, as SwinTransformer3D.window_tensors
    def get(
        self,
        block: SwinTransformerBlock3D,
        feature_size: Size3,
        window: Size3,
        shift: Size3,
        device: torch.device,
        dtype: torch.dtype,
        kernel: str,
    ) -> WindowTensors:
        """The block's tensors: the held ones if they were built for the same block, shapes and table values.

        Args:
            block: The block about to run.
            feature_size: Unpadded ``(D, H, W)`` of the block's input.
            window: Effective window.
            shift: Effective cyclic shift.
            device: Device of the input.
            dtype: Attention dtype (:func:`attention_dtype`).
            kernel: Attention kernel.

        Returns:
            The block's :class:`WindowTensors`, built without the block keeping its own copy (and not held
            here either when the bias tables take gradients).
        """
        if torch.is_grad_enabled() and any(t.requires_grad for t in block.attn.bias_tables()):
            # trainable tables: each checkpointed call builds its own bias, in its own graph
            return block.window_tensors(feature_size, window, shift, device, dtype, kernel, keep=False)
        key = (id(block), feature_size, window, shift, device, dtype, kernel, block.attn.tables_key())
        if self._tensors is None or self._key != key:
            self._key, self._tensors = None, None  # let the previous bias go before the next one is built
            self._tensors = block.window_tensors(feature_size, window, shift, device, dtype, kernel, keep=False)
            self._key = key
        return self._tensors

    def clear(self) -> None:
        """Lets the held tensors go."""
        self._key, self._tensors = None, None


class PatchMerging(nn.Module):
    """Merges 2x2 spatial neighbours: concatenation, LayerNorm, then a linear map to ``2 * dim``.

    Args:
        dim: Input channels.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Halves the spatial size (zero-padding odd sizes).

        Args:
            x: Tokens ``(B, D, H, W, C)``.

        Returns:
            Tokens ``(B, D, ceil(H/2), ceil(W/2), 2C)`` in the dtype of ``x``: under autocast the reduction
            computes in half precision but the next stage's residual stream stays in float32.
        """
        h, w = x.shape[2:4]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x)).to(x.dtype)


class BasicLayer(nn.Module):
    """One stage: alternating regular and shifted window blocks, then an optional patch merging.

    Args:
        dim: Channels.
        depth: Number of blocks.
        num_heads: Attention heads.
        window_size: Base window ``(Wd, Wh, Ww)``; shifted blocks shift by ``Wd//2, Wh//2, Ww//2``.
        mlp_ratio: MLP hidden width relative to ``dim``.
        qkv_bias: Whether the qkv projections have a bias.
        frag_bias: Whether the blocks use GRPB.
        downsample: Whether to end with a :class:`PatchMerging`.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: Size3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        frag_bias: bool = False,
        downsample: bool = False,
    ) -> None:
        super().__init__()
        self.window_size = _size3(window_size)
        self.shift_size = _size3([w // 2 for w in self.window_size])
        self.grad_checkpointing = False
        self.transient = TransientWindowTensors()  # shared with the other stages by SwinTransformer3D
        self.blocks = nn.ModuleList(
            [
                SwinTransformerBlock3D(dim, num_heads, self.window_size, mlp_ratio, qkv_bias, frag_bias)
                for _ in range(depth)
            ]
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def block_windows(self, feature_size: Size3, window: Size3 | None = None) -> list[tuple[Size3, Size3]]:
        """Effective ``(window, shift)`` of each block for a feature size.

        Args:
            feature_size: ``(D, H, W)`` of the stage's input.
            window: Adaptive (input-scaled) window; the base window if ``None``. It is clipped to the
                feature size, and the shift is the base window's half, clipped likewise; even-numbered
                blocks do not shift.

        Returns:
            One ``(window, shift)`` per block.
        """
        eff_window, eff_shift = clip_window_size(feature_size, window or self.window_size, self.shift_size)
        return [(eff_window, eff_shift if i % 2 == 1 else (0, 0, 0)) for i in range(len(self.blocks))]

    def window_tensors(
        self,
        feature_size: Size3,
        window: Size3 | None,
        device: torch.device,
        dtype: torch.dtype,
        kernel: str = "sdpa",
    ) -> list[WindowTensors]:
        """Every block's :class:`WindowTensors` (see :meth:`SwinTransformer3D.window_tensors`).

        Args:
            feature_size: ``(D, H, W)`` of the stage's input.
            window: As for :meth:`block_windows`.
            device: Device of the input.
            dtype: Dtype of the input (the attention dtype follows :func:`attention_dtype`).
            kernel: Attention kernel, one of :data:`ATTENTION_KERNELS`.

        Returns:
            One :class:`WindowTensors` per block.
        """
        dtype = attention_dtype(device, dtype)
        windows = self.block_windows(feature_size, window)
        return [
            block.window_tensors(feature_size, w, s, device, dtype, kernel)
            for block, (w, s) in zip(self.blocks, windows, strict=True)
        ]

    def forward(
        self,
        x: Tensor,
        window: Size3 | None = None,
        tensors: list[WindowTensors] | None = None,
        kernel: str = "sdpa",
        lean: bool = False,
    ) -> Tensor:
        """Applies the stage.

        With :attr:`grad_checkpointing` on while grad is enabled, each block runs under
        :func:`torch.utils.checkpoint.checkpoint` one batch item (clip) at a time, so the backward pass
        recomputes one block of one clip at a time *(ours; the official code checkpoints whole blocks)*: the
        features are those of the whole batch up to float rounding. Without ``tensors`` the blocks then build
        their window tensors inside the checkpointed call and hold one block's at a time
        (:class:`TransientWindowTensors`).

        Args:
            x: Tokens ``(B, D, H, W, C)``.
            window: As for :meth:`block_windows`.
            tensors: This stage's :meth:`window_tensors` for ``x``; looked up here if ``None``.
            kernel: Attention kernel of tensors looked up here, one of :data:`ATTENTION_KERNELS`.
            lean: Without ``tensors`` and without checkpointing: run each block one batch item (clip) at a time,
                with window tensors built when the block runs and held for one block at a time
                (:class:`TransientWindowTensors`), as the checkpointed pass does *(ours)*: the low-memory
                scoring path of :attr:`SwinTransformer3D.low_memory`.

        Returns:
            Tokens ``(B, D, H', W', C')``: halved spatially with ``C' = 2C`` if downsampling, else as is.

        Raises:
            ValueError: If ``tensors`` were made for another feature size or number of blocks.
        """
        feature_size = _size3(x.shape[1:4])
        windows = self.block_windows(feature_size, window)
        checkpointed = (
            self.grad_checkpointing
            and torch.is_grad_enabled()
            and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        )
        lean = lean and tensors is None and not checkpointed
        if tensors is None and not checkpointed and not lean:
            tensors = self.window_tensors(feature_size, window, x.device, x.dtype, kernel)
        elif tensors is not None and (
            len(tensors) != len(self.blocks) or tensors[0].scatter.numel() != math.prod(feature_size)
        ):
            raise ValueError(f"window tensors do not match this stage's {len(self.blocks)} blocks at {feature_size}")
        if checkpointed and x.grad_fn is not None and x.device.type == "cpu":
            # after this stage's backward pass; not on a caller's leaf, which may come back call after call
            x.register_hook(self._after_backward)
        for i, (block, (w, s)) in enumerate(zip(self.blocks, windows, strict=True)):
            t = None if tensors is None else tensors[i]
            if checkpointed:
                clips = [
                    checkpoint(self._checkpointed_block, block, clip, w, s, t, kernel, use_reentrant=False)
                    for clip in x.split(1)
                ]
                x = clips[0] if len(clips) == 1 else torch.cat(clips)
            elif lean:
                b, d, h, w_, _ = x.shape
                t = self.transient.get(block, (d, h, w_), w, s, x.device, attention_dtype(x.device, x.dtype), kernel)
                clips = [block(clip, w, s, t) for clip in x.split(1)]
                x = clips[0] if len(clips) == 1 else torch.cat(clips)
            else:
                x = block(x, w, s, t)
        if self.downsample is not None:
            x = self.downsample(x)
        return x

    def _after_backward(self, grad: Tensor) -> None:
        """Tensor hook on a checkpointed stage's input, run once the stage's backward pass is done: lets the held
        window tensors go and hands the memory the recomputations freed back to the system
        (:func:`~dvlta_metric.release_free_memory`), so that glibc's heap does not carry each stage's peak into
        the next *(ours)*."""
        self.transient.clear()
        release_free_memory()

    def _checkpointed_block(
        self,
        block: SwinTransformerBlock3D,
        x: Tensor,
        window: Size3,
        shift: Size3,
        tensors: WindowTensors | None,
        kernel: str,
    ) -> Tensor:
        """One block under checkpointing, its window tensors from :attr:`transient` unless given."""
        if tensors is None:
            b, d, h, w, _ = x.shape
            dtype = attention_dtype(x.device, x.dtype)
            tensors = self.transient.get(block, (d, h, w), window, shift, x.device, dtype, kernel)
        return block(x, window, shift, tensors)


class SwinTransformer3D(nn.Module):
    """Video Swin-T 3D of FAST-VQA-B with gated relative position bias and adaptive windows.

    Parameter names equal the official FAST-VQA backbone's state-dict keys (without its
    non-persistent ``relative_position_index`` buffers).

    Args:
        patch_size: Patch ``(pd, ph, pw)`` of the embedding.
        in_chans: Input channels.
        embed_dim: Channels after patch embedding (doubled by each patch merging).
        depths: Blocks per stage.
        num_heads: Attention heads per stage.
        window_size: Base window ``(Wd, Wh, Ww)``.
        mlp_ratio: MLP hidden width relative to the channels.
        qkv_bias: Whether the qkv projections have a bias.
        frag_biases: Per stage, whether GRPB is used.
        base_x_size: Input size ``(D, H, W)`` the base window is defined for; other input sizes scale it.

    Example:
        >>> model = SwinTransformer3D().eval()
        >>> model(torch.randn(1, 3, 32, 224, 224)).shape
        torch.Size([1, 768, 16, 7, 7])
    """

    def __init__(
        self,
        *,
        patch_size: Sequence[int] = (2, 4, 4),
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: Sequence[int] = (8, 7, 7),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        frag_biases: Sequence[bool] = (True, True, True, False),
        base_x_size: Sequence[int] = (32, 224, 224),
    ) -> None:
        super().__init__()
        if not (len(depths) == len(num_heads) == len(frag_biases)):
            raise ValueError("depths, num_heads and frag_biases must have one entry per stage")
        if len(patch_size) != 3 or len(window_size) != 3 or len(base_x_size) != 3:
            raise ValueError("patch_size, window_size and base_x_size must have 3 entries (D, H, W)")
        self.in_chans = in_chans
        self.window_size = _size3(window_size)
        self.base_x_size = _size3(base_x_size)
        self.num_layers = len(depths)
        self.num_features = int(embed_dim * 2 ** (self.num_layers - 1))
        self.patch_embed = PatchEmbed3D(_size3(patch_size), in_chans, embed_dim)
        self.layers = nn.ModuleList(
            [
                BasicLayer(
                    dim=embed_dim * 2**i,
                    depth=depths[i],
                    num_heads=num_heads[i],
                    window_size=self.window_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    frag_bias=bool(frag_biases[i]),
                    downsample=i < self.num_layers - 1,
                )
                for i in range(self.num_layers)
            ]
        )
        self.norm = nn.LayerNorm(self.num_features)
        self.attention_kernel = "sdpa"
        self.low_memory: bool | None = None
        """Scoring path *(ours)*: ``True``: blocks run one clip at a time and build their attention bias when
        they run, holding one block's at a time (:class:`TransientWindowTensors`); ``False``: the whole batch
        at once, each frozen block keeping its bias for the next call (1.1 GB for FAST-VQA-B at 32x224x224);
        ``None`` (default): ``True`` on CPU, ``False`` elsewhere. Only for calls without gradients; the
        features agree up to float rounding."""
        transient = TransientWindowTensors()  # one block's tensors at a time across all stages
        self.transient = transient
        for layer in self.layers:
            layer.transient = transient
        self.apply(self._init_weights)

    def set_attention_kernel(self, kernel: str) -> SwinTransformer3D:
        """Chooses the kernel of the window attention.

        Both add the same cached bias ``(1 or nW, nH, N, N)`` (relative position bias gated by fragments, plus
        the shift mask) and give the same features up to rounding.

        Args:
            kernel: ``"sdpa"`` (default): :func:`torch.nn.functional.scaled_dot_product_attention` with the bias
                as its mask (cuDNN's kernel on Hopper GPUs). ``"flex"``: FlexAttention adding the bias in its
                score function (:mod:`~dvlta_metric.branches.flex_window`); it needs torch 2.5 or later and is
                compiled on first use for each shape. Timed alone on a GPU it is faster than cuDNN's kernel with
                the bias as a mask, on CPU slower than ``"sdpa"`` (timings: the Performance and Benchmarks
                pages). Calls that need gradients on CPU (FlexAttention has none there) and trainable bias
                tables use ``"sdpa"`` whatever is chosen.

        Returns:
            The backbone itself.

        Raises:
            ValueError: If ``kernel`` is not one of :data:`ATTENTION_KERNELS`.
            RuntimeError: If ``"flex"`` is asked for and this torch has no FlexAttention.
        """
        self.attention_kernel = check_attention_kernel(kernel)
        return self

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """Trunc-normal (std 0.02) Linear weights with zero bias; LayerNorm weight 1 and bias 0."""
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def clear_bias_cache(self) -> None:
        """Frees the attention biases kept by frozen blocks (see :meth:`WindowAttention3D.attention_bias`).

        They take one ``(1 or nW, nH, N, N)`` tensor per block (their size for FAST-VQA-B: the Basic Visual
        Feature Extraction page) and are rebuilt on the next call. Call it also after editing the bias tables
        through ``.data``, which their version counters do not see.
        """
        for module in self.modules():
            if isinstance(module, WindowAttention3D):
                module._bias_cache = None
            elif isinstance(module, BasicLayer):
                module.transient.clear()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recomputes each block in the backward pass instead of storing its activations.

        Args:
            enable: Whether to checkpoint (``torch.utils.checkpoint``, non-reentrant) while grad is on.
        """
        for layer in self.layers:
            if isinstance(layer, BasicLayer):
                layer.grad_checkpointing = enable

    def adaptive_window(self, input_size: Sequence[int]) -> Size3:
        """Window used for an input of the given size (before per-stage clipping).

        Args:
            input_size: Input ``(D, H, W)``.

        Returns:
            The base window scaled by ``input_size / base_x_size`` (see :func:`adaptive_window_size`).
        """
        return adaptive_window_size(self.window_size, _size3(input_size), self.base_x_size)

    def stage_sizes(self, input_size: Sequence[int]) -> list[Size3]:
        """Feature size ``(D, H, W)`` at the input of each stage.

        Args:
            input_size: Input ``(D, H, W)``.

        Returns:
            One size per stage: the patch grid ``ceil(input / patch)``, then ``H`` and ``W`` halved (rounded
            up) after each stage that merges patches.
        """
        d, h, w = (math.ceil(s / p) for s, p in zip(input_size, self.patch_embed.patch_size, strict=True))
        sizes: list[Size3] = []
        for layer in self.layers:
            sizes.append((d, h, w))
            if isinstance(layer, BasicLayer) and layer.downsample is not None:
                h, w = math.ceil(h / 2), math.ceil(w / 2)
        return sizes

    @torch.compiler.disable
    def window_tensors(
        self, input_size: Sequence[int], device: torch.device, dtype: torch.dtype, requires_grad: bool = False
    ) -> list[list[WindowTensors]]:
        """Every block's :class:`WindowTensors` for an input size, looked up eagerly.

        :func:`torch.compile` never traces this lookup (it would recompute the cached tensors in the graph
        or bake them in as constants): a compiled backbone breaks its graph once here, before the patch
        embedding, and takes the tensors as inputs.

        Args:
            input_size: Input ``(D, H, W)``.
            device: Device of the input.
            dtype: Dtype of the input (the attention dtype follows :func:`attention_dtype`).
            requires_grad: Whether the call needs gradients. FlexAttention has no backward on CPU, so such a
                call on CPU gets the ``"sdpa"`` tensors whatever :attr:`attention_kernel` says.

        Returns:
            Per stage, one :class:`WindowTensors` per block.
        """
        window = self.adaptive_window(input_size)
        kernel = self.attention_kernel
        if kernel == "flex" and requires_grad and device.type == "cpu":
            kernel = "sdpa"
        return [
            layer.window_tensors(size, window, device, dtype, kernel)
            for layer, size in zip(self.layers, self.stage_sizes(input_size), strict=True)
        ]

    def forward(self, x: Tensor, cells: int | None = None) -> Tensor:
        """Extracts fragment features.

        Args:
            x: Normalised video ``(B, in_chans, D, H, W)``, e.g. ``(B, 3, 32, 224, 224)`` fragments.
            cells: ``None`` (the model): attention as trained. ``G``: every block also masks attention between
                tokens of different cells of a ``G x G`` spatial grid (:func:`cell_isolation_mask`), so the
                features of each cell depend only on that cell's pixels: the isolated quality map *(ours)*.
                Not the scoring model's features.

        Returns:
            Features ``(B, num_features, D', H', W')``, e.g. ``(B, 768, 16, 7, 7)``.

        Raises:
            ValueError: If ``x`` is not 5-D or has the wrong number of channels; if the ``cells`` grid does not
                divide every stage's token grid.
        """
        if x.ndim != 5:
            raise ValueError(f"expected a 5-D video (B, C, D, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"expected {self.in_chans} input channels, got {x.shape[1]}")
        if cells is not None:
            return self._isolated_forward(x, cells)
        window = self.adaptive_window(x.shape[2:])
        requires_grad = (  # only the flex kernel needs to know (it falls back to sdpa for gradients on CPU)
            self.attention_kernel == "flex"
            and torch.is_grad_enabled()
            and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        )
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        if needs_grad and any(isinstance(la, BasicLayer) and la.grad_checkpointing for la in self.layers):
            # checkpointed: each block builds its tensors when it runs and none keeps them (BasicLayer.forward)
            self.clear_bias_cache()
            kernel = "sdpa" if requires_grad and x.device.type == "cpu" else self.attention_kernel
            tensors: list[list[WindowTensors] | None] = [None] * len(self.layers)
        elif (
            not needs_grad
            and not is_exporting()  # an exported program builds every bias in its graph (window_tensors)
            and (self.low_memory or (self.low_memory is None and x.device.type == "cpu"))
        ):
            # low memory: each block builds its tensors when it runs, one block's held at a time (BasicLayer)
            self.clear_bias_cache()
            kernel = self.attention_kernel
            x = self.patch_embed(x)
            for layer in self.layers:
                x = layer(x, window, None, kernel, lean=True)
            self.transient.clear()
            return self.norm(x).permute(0, 4, 1, 2, 3).contiguous()
        else:
            kernel = self.attention_kernel
            tensors = list(self.window_tensors(x.shape[2:], x.device, x.dtype, requires_grad))
        x = self.patch_embed(x)
        for layer, stage_tensors in zip(self.layers, tensors, strict=True):
            x = layer(x, window, stage_tensors, kernel)
        return self.norm(x).permute(0, 4, 1, 2, 3).contiguous()

    def _isolated_forward(self, x: Tensor, cells: int) -> Tensor:
        """:meth:`forward` with attention kept inside each cell of a ``cells x cells`` grid (``sdpa`` kernel)."""
        window = self.adaptive_window(x.shape[2:])
        stages = self.window_tensors(x.shape[2:], x.device, x.dtype)
        isolated = []
        for layer, size, tensors in zip(self.layers, self.stage_sizes(x.shape[2:]), stages, strict=True):
            blocks = []
            for t, (w, s) in zip(tensors, layer.block_windows(size, window), strict=True):
                mask = cell_isolation_mask(size, w, s, cells).unsqueeze(1).to(device=x.device, dtype=t.bias.dtype)
                blocks.append(t._replace(bias=t.bias + mask, kernel="sdpa"))
            isolated.append(blocks)
        self.clear_bias_cache()  # the masked biases above are this call's; the plain ones need not stay either
        x = self.patch_embed(x)
        for layer, stage_tensors in zip(self.layers, isolated, strict=True):
            x = layer(x, window, stage_tensors, "sdpa")
        return self.norm(x).permute(0, 4, 1, 2, 3).contiguous()
