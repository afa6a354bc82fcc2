"""Window attention of the fragment Swin3D through FlexAttention.

The Swin3D blocks of the fragment branch add a bias to every attention score (FAST-VQA's gated relative
position bias, inside the backbone of eq. 8 of the DVLTA-VQA paper, plus the shifted-window mask), one
``N x N`` matrix per window and head with ``N = 392`` tokens and a head dimension of only 32. Given such a bias,
:func:`torch.nn.functional.scaled_dot_product_attention` runs cuDNN's kernel on Hopper GPUs, which takes
much longer with the bias than without it. The score function of
:func:`torch.nn.attention.flex_attention.flex_attention` adds the same cached bias tensor, read by window, head
and token pair, and its generated kernel runs about as fast as the unbiased one (the same computation timed
by ``benchmarks/attention_variants.py``; the timings are on the Performance and Benchmarks pages). This
module itself has not been timed on a GPU yet.

FlexAttention needs torch 2.5 or later and runs through :func:`torch.compile`: inside a compiled backbone it
becomes part of that graph, otherwise it is compiled here once per process and device type.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["flex_attention_available", "flex_window_attention"]

_COMPILED: dict[str, Any] = {}
_RECOMPILE_LIMIT = 64  # one graph per stage shape, dtype and grad mode; dynamo's default limit is 8


def flex_attention_available() -> bool:
    """Whether this torch has FlexAttention (``torch.nn.attention.flex_attention``, torch 2.5 and later)."""
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


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


def flex_window_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """Attention inside windows with an additive per-window bias, through FlexAttention.

    Args:
        q: Queries ``(B*nW, nH, N, hd)``, window-major within each clip (batch index ``b*nW + w``).
        k: Keys, shaped like ``q``.
        v: Values, shaped like ``q``.
        bias: Additive bias ``(1 or nW, nH, N, N)``: one for all windows, or one per window.

    Returns:
        ``softmax(q k^T / sqrt(hd) + bias) v``, shaped ``(B*nW, nH, N, hd)`` in the dtype of ``q``; the bias
        is added to the float32 scores.
    """
    windows = bias.shape[0]

    def score_mod(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
        return score + bias[b % windows, h, qi, ki].float()

    attend = _flex_attention(q.device.type)
    if torch.compiler.is_compiling():
        return attend(q, k, v, score_mod=score_mod)
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    with config.patch({name: max(getattr(config, name), _RECOMPILE_LIMIT)}):
        return attend(q, k, v, score_mod=score_mod)
