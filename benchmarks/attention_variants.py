"""Window attention of the fragment backbone, timed in several implementations (not a test).

    python benchmarks/attention_variants.py --device cuda --clips 128 --output attention.json

The Swin3D of the fragment branch attends inside 8x7x7 windows (N = 392 tokens, head dim 32) with an additive
bias per window and head: the relative position bias gated by fragments (GRPB) plus the shift mask. The
library materialises that bias once per shape (``(nW, nH, N, N)``, cached) and passes it to
``scaled_dot_product_attention``. On a GPU the kernel then reads the whole bias once per clip, which at
stage 1 is 118 MB per block in fp16. This script times, per stage and block kind, the attention step of a
block (from the qkv projection's output to the input of the output projection, layout copies included) in:

* ``sdpa``: the library's default ``"sdpa"`` kernel (:meth:`WindowAttention3D.forward`);
* ``sdpa_clips_in_heads``: the same kernel with windows x heads as the batch and the clips as the heads, so
  that all clips of one window and head run together and the bias is read from the L2 cache;
* ``flex_bias``: the library's ``"flex"`` kernel (:func:`~dvlta_metric.branches.flex_window.flex_window_attention`):
  FlexAttention adding the cached bias in its score function;
* ``flex_tables``: FlexAttention computing the bias in the kernel from small tables (relative index, bias
  tables, per-token fragment coordinates and shift regions), so that no ``N x N`` bias is read (on an H200
  the gathers made it 4 times slower than ``sdpa``, so the library does not use it);
* ``sdpa_efficient``, ``sdpa_efficient_clips_in_heads``, ``sdpa_cudnn``: those with one backend forced
  (``sdpa`` lets torch choose: cuDNN on Hopper with torch 2.11);
* ``sdpa_no_bias``: the kernel without any bias (a floor, not a correct result).

Each variant is checked against the ``sdpa`` output on the same inputs (largest absolute difference).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from dvlta_metric.branches import swin3d
from dvlta_metric.branches.flex_window import flex_attention_available, flex_window_attention

Variant = Callable[[Tensor], Tensor]


def block_tables(
    block: swin3d.SwinTransformerBlock3D,
    padded: swin3d.Size3,
    window: swin3d.Size3,
    shift: swin3d.Size3,
    device: torch.device,
) -> dict[str, Tensor]:
    """Small per-block tables from which the bias can be computed inside the kernel.

    Returns:
        ``index`` int32 ``(N, N)``; ``frag``, ``diff`` float32 ``(nH, T)`` (the fragment table and the
        relative minus the fragment table; ``frag`` is the relative table and ``diff`` zero without GRPB);
        ``coords`` float32 ``(nW, N, 3)`` fragment coordinates; ``region`` int32 ``(nW, N)`` shift regions.
    """
    attn = block.attn
    n = swin3d.math.prod(window)
    index = swin3d._relative_position_index(attn.window_size, window, device).view(n, n).to(torch.int32)
    rel = attn.relative_position_bias_table.detach().float().t().contiguous()
    if attn.fragment_position_bias_table is not None:
        frag = attn.fragment_position_bias_table.detach().float().t().contiguous()
    else:
        frag = rel
    coords = swin3d.fragment_coords(padded, window, shift)
    if attn.fragment_position_bias_table is None:
        coords = torch.zeros_like(coords)
    region = swin3d.shift_regions(padded, window, shift)  # a single region when the block does not shift
    return {
        "index": index,
        "frag": frag,
        "diff": (rel - frag).contiguous(),
        "coords": coords.contiguous().to(device),
        "region": region.to(torch.int32).contiguous().to(device),
    }


def make_variants(bias: Tensor, tables: dict[str, Tensor], nh: int, use_flex: bool) -> dict[str, Variant]:
    """The attention implementations, each mapping qkv ``(B, nW, N, 3C)`` to ``(B, nW, N, C)``."""

    def split(qkv: Tensor) -> tuple[Tensor, Tensor, Tensor, int, int, int, int]:
        b, nw, n, c3 = qkv.shape
        hd = c3 // 3 // nh
        q, k, v = qkv.view(b, nw, n, 3, nh, hd).permute(3, 0, 1, 4, 2, 5).unbind(0)  # (B, nW, nH, N, hd)
        return q, k, v, b, nw, n, hd

    def sdpa(qkv: Tensor) -> Tensor:  # as WindowAttention3D.forward
        q, k, v, b, nw, n, hd = split(qkv)
        mask = bias
        if mask.shape[0] == 1 or b == 1:
            shape = (b * nw, nh, n, hd)
        else:
            shape = (b, nw * nh, n, hd)
            mask = mask.reshape(1, nw * nh, n, n)
        out = F.scaled_dot_product_attention(q.reshape(shape), k.reshape(shape), v.reshape(shape), attn_mask=mask)
        return out.view(b, nw, nh, n, hd).transpose(2, 3).reshape(b, nw, n, nh * hd)

    def sdpa_clips_in_heads(qkv: Tensor) -> Tensor:
        q, k, v, b, nw, n, hd = split(qkv)
        mask = bias.expand(nw, nh, n, n).reshape(nw * nh, 1, n, n)
        q, k, v = (t.permute(1, 2, 0, 3, 4).reshape(nw * nh, b, n, hd) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (nW*nH, B, N, hd)
        return out.view(nw, nh, b, n, hd).permute(2, 0, 3, 1, 4).reshape(b, nw, n, nh * hd)

    def sdpa_no_bias(qkv: Tensor) -> Tensor:
        q, k, v, b, nw, n, hd = split(qkv)
        shape = (b * nw, nh, n, hd)
        out = F.scaled_dot_product_attention(q.reshape(shape), k.reshape(shape), v.reshape(shape))
        return out.view(b, nw, nh, n, hd).transpose(2, 3).reshape(b, nw, n, nh * hd)

    def with_backend(fn: Variant, backend: SDPBackend) -> Variant:
        def run(qkv: Tensor) -> Tensor:
            with sdpa_kernel([backend]):
                return fn(qkv)

        return run

    variants: dict[str, Variant] = {
        "sdpa": sdpa,
        "sdpa_clips_in_heads": sdpa_clips_in_heads,
        "sdpa_efficient": with_backend(sdpa, SDPBackend.EFFICIENT_ATTENTION),
        "sdpa_efficient_clips_in_heads": with_backend(sdpa_clips_in_heads, SDPBackend.EFFICIENT_ATTENTION),
        "sdpa_cudnn": with_backend(sdpa, SDPBackend.CUDNN_ATTENTION),
        "sdpa_no_bias": sdpa_no_bias,
    }
    if not use_flex:
        return variants
    from torch.nn.attention.flex_attention import flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
    full_bias = bias.expand(-1, nh, -1, -1).contiguous()  # (1 or nW, nH, N, N)
    index, frag, diff, coords, region = (tables[k] for k in ("index", "frag", "diff", "coords", "region"))

    def flex_bias(qkv: Tensor) -> Tensor:  # the library's "flex" kernel
        q, k, v, b, nw, n, hd = split(qkv)
        shape = (b * nw, nh, n, hd)
        out = flex_window_attention(q.reshape(shape), k.reshape(shape), v.reshape(shape), full_bias)
        return out.view(b, nw, nh, n, hd).transpose(2, 3).reshape(b, nw, n, nh * hd)

    def flex_tables(qkv: Tensor) -> Tensor:
        q, k, v, b, nw, n, hd = split(qkv)
        shape = (b * nw, nh, n, hd)

        def score_mod(score: Tensor, bi: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
            w = bi % nw
            i = index[qi, ki]
            gate = (
                (coords[w, qi, 0] - coords[w, ki, 0]).abs()
                + (coords[w, qi, 1] - coords[w, ki, 1]).abs()
                + (coords[w, qi, 2] - coords[w, ki, 2]).abs()
            )
            value = frag[h, i] + gate * diff[h, i]
            return score + torch.where(region[w, qi] == region[w, ki], value, value - 100.0)

        out = flex(q.reshape(shape), k.reshape(shape), v.reshape(shape), score_mod=score_mod)
        return out.view(b, nw, nh, n, hd).transpose(2, 3).reshape(b, nw, n, nh * hd)

    variants["flex_bias"] = flex_bias
    variants["flex_tables"] = flex_tables
    return variants


def time_ms(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.precision]
    use_flex = flex_attention_available() and not args.no_flex
    for name in ("recompile_limit", "cache_size_limit"):  # one flex graph per stage, block kind and variant
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 256)
    torch.manual_seed(0)
    model = swin3d.SwinTransformer3D().to(device).eval()
    with torch.no_grad():  # bias tables as trained ones look: not all equal
        for module in model.modules():
            if isinstance(module, swin3d.WindowAttention3D):
                module.relative_position_bias_table.normal_(0, 0.5).requires_grad_(False)
                if module.fragment_position_bias_table is not None:
                    module.fragment_position_bias_table.normal_(0, 0.5).requires_grad_(False)
    input_size = (32, 224, 224)
    window = model.adaptive_window(input_size)
    sizes = model.stage_sizes(input_size)
    result: dict[str, Any] = {
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "precision": args.precision,
        "clips": args.clips,
        "stages": [],
    }
    totals: dict[str, float] = {}
    for stage, (layer, size) in enumerate(zip(model.layers, sizes, strict=True)):
        if stage not in args.stages:
            continue
        with torch.no_grad():
            tensors = layer.window_tensors(size, window, device, dtype)
        for kind, (blk, (w, s)) in enumerate(zip(layer.blocks, layer.block_windows(size, window), strict=False)):
            if kind > 1:
                break
            count = sum(1 for i in range(len(layer.blocks)) if i % 2 == kind)  # blocks of this kind in the stage
            padded = swin3d._padded_size(size, w)
            tables = block_tables(blk, padded, w, s, device)
            nh, n = blk.attn.num_heads, swin3d.math.prod(w)
            nw = swin3d.math.prod(p // x for p, x in zip(padded, w, strict=True))
            c = blk.attn.head_dim * nh
            qkv = torch.randn(args.clips, nw, n, 3 * c, device=device, dtype=dtype)
            variants = make_variants(tensors[kind].bias, tables, nh, use_flex)
            entry: dict[str, Any] = {
                "stage": stage + 1,
                "shifted": any(s),
                "blocks": count,
                "windows": nw,
                "heads": nh,
                "tokens": n,
                "bias_mib": tensors[kind].bias.numel() * tensors[kind].bias.element_size() / 2**20,
                "ms": {},
                "max_abs_diff": {},
            }
            with torch.no_grad():
                reference = variants["sdpa"](qkv).float()
                for name, fn in variants.items():
                    try:
                        out = fn(qkv)
                        entry["max_abs_diff"][name] = float((out.float() - reference).abs().max())
                        ms = time_ms(lambda fn=fn, qkv=qkv: fn(qkv), device, args.repeats)
                    except Exception as error:
                        entry["ms"][name] = None
                        entry["max_abs_diff"][name] = f"{type(error).__name__}: {str(error)[:200]}"
                        continue
                    entry["ms"][name] = ms
                    totals[name] = totals.get(name, 0.0) + ms * count
            result["stages"].append(entry)
            print(
                f"stage {stage + 1} {'shifted' if any(s) else 'regular'} x{count}: "
                + ", ".join(f"{k} {v:.2f} ms" if v is not None else f"{k} failed" for k, v in entry["ms"].items()),
                flush=True,
            )
            del qkv
    result["total_ms_all_blocks"] = totals
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp16", choices=["fp16", "bf16", "fp32"])
    parser.add_argument("--clips", type=int, default=128, help="clips per call (4 per video: 128 = 32 videos)")
    parser.add_argument(
        "--stages",
        type=lambda s: [int(x) - 1 for x in s.split(",")],
        default=[0, 1, 2, 3],
        help="stages to time, 1-based (default 1,2,3,4)",
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-flex", action="store_true", help="skip the FlexAttention variants")
    parser.add_argument("--output", help="write the JSON here")
    args = parser.parse_args(argv)
    result = run(args)
    print("total over all blocks (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in result["total_ms_all_blocks"].items()))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
