"""Roofline ceiling: the largest fraction of an accelerator's matmul rate the model's tensor path can reach.

Not a test, and it needs no accelerator: it runs the model once on the CPU (one video, random weights),
records every ATen operator of the steady-state branch calls (the attention biases are cached by a
warm-up call first, as on a GPU after the first batch), and prices each operator on a roofline of the
given card: ``time = max(FLOPs / peak, bytes / bandwidth, exponentials / exponential rate)`` (the last for
attention kernels' softmax), with half-precision (2-byte) tensors, as
``precision="fp16"`` runs the backbones. Everything but the weights scales linearly with the batch size.

Two lower bounds on the time of a batch come out of it, and so two upper bounds on the fraction of the
matmul rate (the ratio ``bench.py`` reports as ``tensor_path_flops_fraction_of_matmul_rate``):

* **matmuls only**: only the matrix products, convolutions and attention kernels run, each reading its
  inputs and writing its output once (every normalisation, activation, residual add and layout copy fused
  away for free). No implementation can beat this.
* **every operator**: each operator reads its inputs and writes its output once (an ideal eager run).

An attention kernel reads the additive bias once for every window it is applied to: the Swin3D's
per-window bias of one stage-1 block is 118 MB per clip in float16, more than a GPU's L2 cache holds.
(With the default rates the softmax exponentials never bound an attention kernel here: its bias traffic
takes longer.)

    python benchmarks/roofline.py --model dvlta-vqa --peak-tflops 664 --bandwidth-tbs 4.8 --card "H200" \\
        --batch-size 32 --output benchmarks/results/h200_roofline.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

import dvlta_metric

aten = torch.ops.aten

HALF_BYTES = 2
"""Bytes per element of every tensor priced: the backbones run in float16 under ``precision="fp16"``."""

METADATA_OPS = {
    "aten.view", "aten._unsafe_view", "aten.unsqueeze", "aten.squeeze", "aten.slice", "aten.select", "aten.permute",
    "aten.t", "aten.transpose", "aten.expand", "aten.alias", "aten.detach", "aten.unbind", "aten.lift_fresh",
    "aten.as_strided", "aten.split", "aten.split_with_sizes", "aten.chunk", "aten.reshape", "aten.flatten",
    "aten.empty", "aten.empty_like", "aten.scalar_tensor", "aten._reshape_alias", "aten.unflatten",
}  # fmt: skip
"""Operators that only make a new view (or an uninitialised buffer): no FLOPs, no memory traffic."""

ATTENTION_OPS = {
    "aten._scaled_dot_product_flash_attention_for_cpu", "aten._scaled_dot_product_flash_attention",
    "aten._scaled_dot_product_efficient_attention", "aten._scaled_dot_product_cudnn_attention",
}  # fmt: skip


@dataclass
class Op:
    """One recorded operator call, at the traced batch.

    Attributes:
        name: ATen operator (overload packet).
        kind: ``"matmul"`` (products, convolutions, attention), ``"memory"`` (everything else that moves
            data) or ``"metadata"`` (views).
        flops: Floating-point operations.
        activation_elems: Elements read or written that scale with the batch (inputs and output).
        weight_elems: Elements of the weights it reads (do not scale with the batch).
        exps: Exponentials of an attention kernel's softmax (one per query-key pair and head).
    """

    name: str
    kind: str
    flops: float
    activation_elems: float
    weight_elems: float
    exps: float = 0.0


def _tensors(values: Sequence[Any]) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for v in values:
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out += _tensors(v)
    return out


def _matmul_flops(func: Any, args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> float:
    """FLOPs of a product, convolution or attention operator; 0 for anything else.

    ``torch.utils.flop_counter``'s own formulas (those ``bench.py`` counts with), plus the CPU's fused
    attention operator, which it does not know: ``4 B H Lq Lk E`` (the two products of attention).
    """
    formula = flop_registry.get(func.overloadpacket)
    if formula is not None:
        return float(formula(*args, **kwargs, out_val=out))
    if str(func.overloadpacket) == "aten._scaled_dot_product_flash_attention_for_cpu":
        q, k = args[0], args[1]  # (B, H, Lq, E), (B, H, Lk, E)
        return 4.0 * q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] * q.shape[3]
    return 0.0


class OpRecorder(TorchDispatchMode):
    """Records every ATen call made inside it as an :class:`Op`.

    Args:
        weight_storages: Data pointers of the model's parameters and buffers (their reads are weights).
    """

    def __init__(self, weight_storages: set[int]) -> None:
        super().__init__()
        self.weights = weight_storages
        self.ops: list[Op] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = str(func.overloadpacket)
        if name in METADATA_OPS:
            self.ops.append(Op(name, "metadata", 0.0, 0.0, 0.0))
            return out
        activation, weight, exps = 0.0, 0.0, 0.0
        inputs = _tensors(list(args) + list((kwargs or {}).values()))
        if name in ATTENTION_OPS:  # q, k, v, then the additive bias, read once per window it applies to
            q = args[0]
            exps = float(q.shape[0] * q.shape[1] * q.shape[2] * args[1].shape[2])
            for t in args[:3]:
                activation += t.numel()
            mask = (kwargs or {}).get("attn_mask", args[3] if len(args) > 3 else None)
            if isinstance(mask, torch.Tensor):
                activation += q.shape[0] * q.shape[1] * q.shape[2] * args[1].shape[2]
        else:
            for t in inputs:
                if t.untyped_storage().data_ptr() in self.weights:
                    weight += t.numel()
                else:
                    activation += t.numel()
        result = out[0] if name in ATTENTION_OPS else out
        activation += sum(t.numel() for t in _tensors([result]))
        flops = _matmul_flops(func, args, kwargs or {}, out)
        self.ops.append(Op(name, "matmul" if flops > 0 else "memory", flops, activation, weight, exps))
        return out


def record(model: torch.nn.Module, call: Callable[[], Any]) -> list[Op]:
    """The operators of ``call()``, after one warm-up call (caches filled, as in steady state).

    Args:
        model: The module whose parameters and buffers count as weights.
        call: Runs (part of) the model.

    Returns:
        One :class:`Op` per ATen call.
    """
    call()
    storages = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # CLIP's attention as in_proj + SDPA, as on a GPU
    try:
        with OpRecorder(storages) as recorder:
            call()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return recorder.ops


def price(ops: Sequence[Op], batch: int, peak: float, bandwidth: float, exp_rate: float = 0.0) -> dict[str, Any]:
    """Roofline times of ``ops`` traced at batch 1, scaled to ``batch``.

    Args:
        ops: Recorded operators of one video.
        batch: Videos per call.
        peak: Matmul rate, FLOP/s.
        bandwidth: Memory bandwidth, bytes/s.
        exp_rate: Exponentials per second of the card's special-function units (0: not priced). An
            attention kernel with a head size of 32 does 128 FLOPs of products per softmax exponential,
            so on a card whose matmul rate is far above its exponential rate the softmax can bound it.

    Returns:
        FLOPs per video, the two time bounds (seconds per batch) and the share of each bound's time
        spent in operators limited by bandwidth rather than by the matmul rate.
    """
    flops = sum(op.flops for op in ops)
    bounds: dict[str, float] = defaultdict(float)
    memory_bound: dict[str, float] = defaultdict(float)
    by_op: dict[str, float] = defaultdict(float)
    for op in ops:
        if op.kind == "metadata":
            continue
        compute = op.flops * batch / peak
        traffic = (op.activation_elems * batch + op.weight_elems) * HALF_BYTES / bandwidth
        special = op.exps * batch / exp_rate if exp_rate > 0 else 0.0
        t = max(compute, traffic, special)
        bounds["every operator"] += t
        by_op[op.name] += t
        if traffic > compute:
            memory_bound["every operator"] += t
        if op.kind == "matmul":
            bounds["matmuls only"] += t
            if traffic > compute:
                memory_bound["matmuls only"] += t
    return {
        "flops_per_video": flops,
        "bounds": {
            k: {
                "seconds_per_batch": t,
                "videos_per_s": batch / t,
                "max_fraction_of_matmul_rate": flops * batch / t / peak,
                "bandwidth_bound_share": memory_bound[k] / t,
            }
            for k, t in bounds.items()
        },
        "top_operators_ms": {k: 1e3 * v for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])[:12]},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    model = dvlta_metric.create(args.model, pretrained=False, device="cpu")
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (args.frames, 3, args.height, args.width), dtype=torch.uint8, generator=g)
    views = {k: v[None] for k, v in model.make_views(frames).items()}
    calls: dict[str, Callable[[], Any]] = {}
    if "bvfe" in model.branches:
        calls["fragments (Swin3D + head)"] = lambda: model.branches["bvfe"](views["fragments"])
    if "tcm" in model.branches:
        calls["temporal context"] = lambda: model.branches["tcm"](views["frames"].transpose(1, 2))
    if "vbtc" in model.branches:
        calls["temporal CLIP"] = lambda: model.branches["vbtc"](views["frames"])
    features = model.branch_features(model.encode(views))
    calls["fusion + score"] = lambda: model.score_features(features)

    peak, bandwidth, exp_rate = args.peak_tflops * 1e12, args.bandwidth_tbs * 1e12, args.exp_rate_t * 1e12
    branches = {}
    every: list[Op] = []
    for name, call in calls.items():
        ops = record(model, call)
        every += ops
        branches[name] = price(ops, args.batch_size, peak, bandwidth, exp_rate)
    total = price(every, args.batch_size, peak, bandwidth, exp_rate)
    return {
        "kind": "roofline",
        "model": args.model,
        "card": args.card,
        "peak_flops_per_s": peak,
        "bandwidth_bytes_per_s": bandwidth,
        "exp_per_s": exp_rate,
        "batch_size": args.batch_size,
        "bytes_per_element": HALF_BYTES,
        "input": f"{args.frames}x{args.width}x{args.height}",
        "torch": torch.__version__,
        **total,
        "branches": branches,
    }


def print_table(r: dict[str, Any]) -> None:
    print(
        f"{r['model']} on {r['card']}: {r['peak_flops_per_s'] / 1e12:.0f} TFLOP/s, "
        f"{r['bandwidth_bytes_per_s'] / 1e12:.2f} TB/s, batch {r['batch_size']}, "
        f"{r['flops_per_video'] / 1e9:.0f} GFLOP per video"
    )
    print(f"{'part':28s} {'bound':16s} {'ms/batch':>9s} {'videos/s':>9s} {'max ratio':>9s} {'bw-bound':>9s}")
    for part, res in [("whole model", r), *r["branches"].items()]:
        for bound, b in res["bounds"].items():
            print(
                f"{part:28s} {bound:16s} {1e3 * b['seconds_per_batch']:9.1f} {b['videos_per_s']:9.0f} "
                f"{b['max_fraction_of_matmul_rate']:9.2f} {b['bandwidth_bound_share']:9.2f}"
            )
    print("\nlargest operators (every-operator bound, ms per batch):")
    for name, ms in r["top_operators_ms"].items():
        print(f"  {name:55s} {ms:8.1f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dvlta-vqa")
    parser.add_argument("--card", default="H200", help="name recorded with the result")
    parser.add_argument("--peak-tflops", type=float, default=664.0, help="matmul rate (bench.py measures it)")
    parser.add_argument("--bandwidth-tbs", type=float, default=4.8, help="memory bandwidth, TB/s")
    parser.add_argument(
        "--exp-rate-t",
        type=float,
        default=3.9,
        help="softmax exponentials per second, in 1e12 (default: the H100 SXM rate the FlashAttention-3 paper "
        "gives, see docs/benchmarks.md); 0 leaves them out",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--frames", type=int, default=240, help="frames of the generated input video")
    parser.add_argument("--height", type=int, default=540)
    parser.add_argument("--width", type=int, default=960)
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--output", help="also write the JSON to this file")
    args = parser.parse_args(argv)
    result = run(args)
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
