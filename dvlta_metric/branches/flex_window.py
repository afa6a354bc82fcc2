"""Window attention of the fragment Swin3D through FlexAttention, with the bias computed in the kernel.

The Swin3D blocks of the fragment branch add a bias to every attention score (eq. 9 of the DVLTA-VQA paper,
FAST-VQA's gated relative position bias, plus the shifted-window mask)::

    bias[w, h, i, j] = frag[h, r(i, j)] + g_w(i, j) * (rel[h, r(i, j)] - frag[h, r(i, j)]) + mask_w(i, j)

with ``r`` the relative position index of the token pair, ``g_w`` the L1 distance between the fragment
coordinates of the two tokens in window ``w``, and ``mask_w`` -100 between tokens of different shift
regions. The default path materialises this ``(nW, nH, N, N)`` tensor and hands it to
:func:`torch.nn.functional.scaled_dot_product_attention`, whose kernel then reads it once per clip. Here the
score function of :func:`torch.nn.attention.flex_attention.flex_attention` computes it from small tables
(:class:`FlexTables`: a few hundred kilobytes) instead, so no ``N x N`` bias moves through memory. It is the
same function, up to rounding: the bias is added in float32 to the float32 scores.

FlexAttention needs torch 2.5 or later and runs through :func:`torch.compile` (compiled once per shape;
inside a compiled backbone it becomes part of that graph).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["SHIFT_MASK_VALUE", "FlexTables", "flex_attention_available", "flex_window_attention"]

SHIFT_MASK_VALUE = -100.0
"""Bias between tokens of different shift regions (FAST-VQA's ``compute_mask``)."""


class FlexTables(NamedTuple):
    """What the in-kernel bias of one block is computed from.

    Attributes:
        index: Int32 ``(N, N)``: relative position index of each token pair (into the bias tables).
        frag: Float32 ``(nH, T)``: the fragment bias table, transposed (the relative one without GRPB).
        diff: Float32 ``(nH, T)``: relative minus fragment table (zeros without GRPB).
        coords: Float32 ``(nW, N, 3)``: fragment coordinates of each token (zeros without GRPB).
        region: Int32 ``(nW, N)``: shift region of each token (zeros in a block that does not shift).
    """

    index: Tensor
    frag: Tensor
    diff: Tensor
    coords: Tensor
    region: Tensor


def flex_attention_available() -> bool:
    """Whether this torch has FlexAttention (``torch.nn.attention.flex_attention``, torch 2.5 and later)."""
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


_COMPILED: dict[str, Any] = {}


def _flex_attention(device_type: str) -> Any:
    """FlexAttention for a call: as is inside a :func:`torch.compile` trace (the enclosing graph compiles it),
    else compiled once per process and device type.

    It is compiled with automatic dynamic shapes on GPUs (the four stages and each batch size differ in
    shape), with static shapes on CPU, where inductor's C++ FlexAttention template fails to build with
    dynamic ones (torch 2.14).
    """
    from torch.nn.attention.flex_attention import flex_attention

    if torch.compiler.is_compiling():
        return flex_attention
    if device_type not in _COMPILED:
        _COMPILED[device_type] = torch.compile(flex_attention, dynamic=False if device_type == "cpu" else None)
    return _COMPILED[device_type]


def flex_window_attention(q: Tensor, k: Tensor, v: Tensor, tables: FlexTables) -> Tensor:
    """Attention inside windows with the gated position bias and shift mask added in the kernel.

    Args:
        q: Queries ``(B*nW, nH, N, hd)``, window-major within each clip (batch index ``b*nW + w``).
        k: Keys, shaped like ``q``.
        v: Values, shaped like ``q``.
        tables: The block's :class:`FlexTables` for this window layout.

    Returns:
        ``softmax(q k^T / sqrt(hd) + bias) v``, shaped ``(B*nW, nH, N, hd)`` in the dtype of ``q``.
    """
    index, frag, diff, coords, region = tables
    num_windows = coords.shape[0]

    def score_mod(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
        w = b % num_windows
        r = index[qi, ki]
        gate = (
            (coords[w, qi, 0] - coords[w, ki, 0]).abs()
            + (coords[w, qi, 1] - coords[w, ki, 1]).abs()
            + (coords[w, qi, 2] - coords[w, ki, 2]).abs()
        )
        bias = frag[h, r] + gate * diff[h, r]
        return score + torch.where(region[w, qi] == region[w, ki], bias, bias + SHIFT_MASK_VALUE)

    return _flex_attention(q.device.type)(q, k, v, score_mod=score_mod)
