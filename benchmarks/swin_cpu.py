"""The fragment branch (Swin3D + head) on CPU: its fraction of the matmul rate, one clip against the official
FAST-VQA backbone, and where its time goes, operator by operator.

Not a test: run it by hand on a quiet machine (nothing else running) and read the JSON.

    python benchmarks/swin_cpu.py --model dvlta-vqa \\
        --fastvqa-reference /path/to/FAST-VQA-and-FasterVQA/fastvqa/models/swin_backbone.py \\
        --output benchmarks/results/cpu_2core_swin3d.json

It measures, in one process with the allocator tuned as the command line does and random weights (the cost does
not depend on them):

* the matmul rate (``rate_probe.py``: the best of several runs over square products and the branch's own
  largest products) and the branch's FLOPs (``torch.utils.flop_counter``, attention counted on the math backend);
* the branch on one video's fragment view (its ``K`` clips in one batch, 4 for ``dvlta-vqa``) on the default CPU
  path (low memory: one clip at a time, biases built when each block runs) and on the batched path (whole batch,
  biases kept between calls): median and best of ``--repeats`` calls, and the fraction of the rate;
* one 32x224x224 clip through our backbone and through the official one (``--fastvqa-reference``: a fetched
  copy, never part of this repository) with the same weights, the two calls alternating so that a disturbance
  hits both; the speedup, and the largest speedup any implementation doing the same FLOPs could reach here
  (the official time over the FLOPs at the full matmul rate);
* one clip through a stand-alone ``SwinTransformer3D`` whose bias tables train (a fine-tuned backbone scored
  under ``torch.no_grad``);
* a profile of one call at the batch, its operators' self time grouped by what they do;
* optionally (``--compile``) the backbone under :func:`torch.compile`, (``--bf16``) the branch in bfloat16
  autocast, and (``--alternatives``) ways of computing parts of it that were tried and left out
  (:func:`alternatives`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import json
import math
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench import (
    command_line,
    count_flops,
)  # benchmarks/bench.py: this script runs as a file, with its folder on sys.path
from rate_probe import gemm_rate, machine_description, model_gemm_shapes, robust_rate

import dvlta_metric
from dvlta_metric.branches.basic_visual import repeated_clips


def timings(
    fns: dict[str, Callable[[], Any]], repeats: int, rate: Callable[[], float] | None = None
) -> dict[str, dict[str, Any]]:
    """Median and best seconds of each call over ``repeats`` rounds, the calls alternating within each round.

    Each call runs once first (warm-up: shape caches, first-touch allocations). With ``rate``, a short matmul
    rate probe runs before each round, and each call's time is kept with the rate probed just before it: on a
    shared host whose speed drifts, a call and its rate are then measured at the same speed.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = defaultdict(list)
    rates: list[float] = []
    for _ in range(repeats):
        if rate is not None:
            rates.append(rate())
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    out: dict[str, dict[str, Any]] = {}
    for name, t in times.items():
        out[name] = {"median_s": statistics.median(t), "best_s": min(t), "runs": len(t), "seconds": t}
        if rates:
            out[name]["rates_flops_per_s"] = rates
    return out


def paired_fraction(flops: float, t: dict[str, Any]) -> float | None:
    """Median over the rounds of ``flops / seconds / rate``, each call against the rate probed just before it."""
    if "rates_flops_per_s" not in t:
        return None
    return statistics.median(flops / s / r for s, r in zip(t["seconds"], t["rates_flops_per_s"], strict=True))


def load_reference(path: str) -> type:
    """The official ``SwinTransformer3D`` class from a FAST-VQA ``swin_backbone.py`` the user points to."""
    spec = importlib.util.spec_from_file_location("fastvqa_swin_reference", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SwinTransformer3D


# Operator groups of the profile, from an operator's name and its ancestry in the profiler's tree (the aten ops,
# Python functions and ``nn.Module: Name_i`` events above it); the first rule that matches wins.
def _category(name: str, parents: list[str]) -> str:
    above = " | ".join(parents)
    modules = [p.removeprefix("nn.Module: ").rsplit("_", 1)[0] for p in parents if p.startswith("nn.Module: ")]
    module = modules[0] if modules else ""  # the nearest
    if "scaled_dot_product" in name or "aten::scaled_dot_product_attention" in above:
        return "window attention (SDPA kernel)"
    if any(f"): {f}" in above for f in ("attention_bias", "position_bias", "window_tensors", "_cached_fragment_gate")):
        return "attention bias build (tables, gate, shift mask)"
    if "PatchMerging" in modules:
        return "patch merging (gather, norm, linear)"
    if "PatchEmbed3D" in modules:
        return "patch embedding (Conv3d, norm)"
    if "SwinTransformer3D" not in modules:
        return "head (MLP of eq. 9, pooling)"
    if name in ("aten::addmm", "aten::mm") or "aten::linear" in above:
        return "linear layers (qkv, proj, MLP; bias copies)"
    if name == "aten::gelu":
        return "GELU"
    if "layer_norm" in name or "aten::layer_norm" in above:
        return "layer norms"
    if name == "aten::index_select":
        return "window partition and reverse (gather, scatter)"
    if name == "aten::cat" and module == "BasicLayer":
        return "joining clips (low-memory path)"
    if name in ("aten::add", "aten::add_") and module == "SwinTransformerBlock3D":
        return "residual adds"
    return "other (layout copies, views)"


_GROUP_FLOPS = {  # operator groups of the profile whose FLOPs the flop counter sees, by the backbone's operators
    "linear layers (qkv, proj, MLP; bias copies)": "aten.addmm",
    "window attention (SDPA kernel)": "aten.bmm",  # counted on the math backend
    "patch merging (gather, norm, linear)": "aten.mm",
    "patch embedding (Conv3d, norm)": "aten.convolution",
}


def group_flops(fn: Callable[[], Any]) -> dict[str, int]:
    """FLOPs of one call of the branch by profile group: the backbone's products by operator (attention on the
    math backend, as ``bench.count_flops``), the head's as the rest."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        fn()
    counts = counter.get_flop_counts()
    encoder = next(counts[k] for k in counts if k.endswith(".encoder"))
    flops = {
        group: int(encoder.get(getattr(torch.ops.aten, op.split(".")[1]), 0)) for group, op in _GROUP_FLOPS.items()
    }
    flops["head (MLP of eq. 9, pooling)"] = int(sum(counts["Global"].values()) - sum(encoder.values()))
    return flops


def profile_categories(fn: Callable[[], Any], top: int = 15) -> dict[str, Any]:
    """One call of ``fn`` under :mod:`torch.profiler`: self time by operator group, and the top operators."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_stack=True) as prof:
        fn()
    groups: dict[str, float] = defaultdict(float)
    total = 0.0
    for event in prof.events():
        own = event.self_cpu_time_total
        if own <= 0 or not event.name.startswith("aten::"):
            continue
        parents, parent = [], event.cpu_parent
        while parent is not None:
            parents.append(parent.name)
            parent = parent.cpu_parent
        groups[_category(event.name, parents)] += own
        total += own
    ops = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "total_ms": total / 1e3,
        "groups": [
            {"group": g, "ms": ms / 1e3, "share": ms / total}
            for g, ms in sorted(groups.items(), key=lambda kv: kv[1], reverse=True)
        ],
        "top_ops": [
            {
                "name": e.key,
                "shapes": str(e.input_shapes)[:120],
                "ms": e.self_cpu_time_total / 1e3,
                "share": e.self_cpu_time_total / total,
                "calls": e.count,
            }
            for e in ops[:top]
        ],
    }


def alternatives(encoder: Any, input_size: tuple[int, int, int], repeats: int) -> dict[str, Any]:
    """Ways of computing parts of the backbone that were tried and left out, timed against what it does *(ours)*.

    * a stage-1 block's window attention through the fused CPU kernel (what ``sdpa`` picks) and through separate
      products and a softmax (what the official code does), on random inputs of the block's shapes;
    * the first block's MLP of each stage as it runs, and with its first product and GELU in one operator
      (``aten._addmm_activation``), with the block's weights;
    * how many windows of each stage share their fragment-gate and shift-mask pattern (windows with equal
      patterns could share one bias).
    """
    import torch.nn.functional as F

    from dvlta_metric.branches import swin3d

    gen = torch.Generator().manual_seed(0)
    window = encoder.adaptive_window(input_size)
    sizes = encoder.stage_sizes(input_size)
    layer = encoder.layers[0]
    (win, _), (_, shift) = layer.block_windows(sizes[0], window)
    n, heads = math.prod(win), layer.blocks[0].attn.num_heads
    nw = math.prod(swin3d._padded_size(sizes[0], win)) // n
    q, k, v = (torch.randn(nw, heads, n, layer.blocks[0].attn.head_dim, generator=gen) for _ in range(3))
    bias = torch.randn(nw, heads, n, n, generator=gen)
    scale = q.shape[-1] ** -0.5

    def separate() -> torch.Tensor:
        scores = torch.baddbmm(bias.flatten(0, 1), (q * scale).flatten(0, 1), k.flatten(0, 1).transpose(1, 2))
        return torch.bmm(scores.softmax(-1), v.flatten(0, 1))

    attention = timings(
        {"fused kernel": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias), "separate": separate},
        repeats,
    )
    mlps = []
    for stage, (stage_layer, size) in enumerate(zip(encoder.layers, sizes, strict=True)):
        mlp = stage_layer.blocks[0].mlp
        x = torch.randn(math.prod(size), mlp.fc1.in_features, generator=gen)

        def fused(mlp: Any = mlp, x: torch.Tensor = x) -> torch.Tensor:
            hidden = torch.ops.aten._addmm_activation(mlp.fc1.bias, x, mlp.fc1.weight.t(), use_gelu=True)
            return mlp.fc2(hidden)

        t = timings({"as it runs": lambda mlp=mlp, x=x: mlp(x), "fc1 and GELU fused": fused}, repeats)
        mlps.append({"stage": stage, "tokens": x.shape[0], "seconds": t, "equal": bool(torch.equal(mlp(x), fused()))})
    patterns = []
    for stage, (stage_layer, size) in enumerate(zip(encoder.layers, sizes, strict=True)):
        for w, sh in dict.fromkeys(stage_layer.block_windows(size, window)):
            padded = swin3d._padded_size(size, w)
            gate = swin3d.fragment_gate(padded, w, sh)
            mask = swin3d.shift_attention_mask(padded, w, sh) if any(sh) else torch.zeros_like(gate)
            distinct = torch.unique(torch.cat([gate, mask], -1).flatten(1), dim=0).shape[0]
            patterns.append(
                {"stage": stage, "shift": list(sh), "windows": gate.shape[0], "distinct_patterns": distinct}
            )
    return {
        "attention_stage1": {"shape": [nw, heads, n, q.shape[-1]], "seconds": attention},
        "mlp": mlps,
        "bias_patterns": patterns,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    tuned = dvlta_metric.tune_allocator()
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    model = dvlta_metric.create(args.model, pretrained=False, device="cpu")
    branch = model.branches["bvfe"]
    encoder = branch.encoder
    gen = torch.Generator().manual_seed(0)
    video = torch.randint(0, 256, (args.frames, 3, *args.video_size), generator=gen, dtype=torch.uint8)
    fragments = model.make_views(video)["fragments"][None]  # (1, K, 3, L, S, S)
    if repeated_clips(fragments[0]) is not None:  # the branch would run the equal clips once (encode)
        raise ValueError(f"{args.frames} frames are too few: the view's clips repeat; give more --frames")
    clip = fragments[0, :1]  # (1, 3, L, S, S)

    def call_branch() -> Any:
        return branch(fragments)

    result: dict[str, Any] = {
        "benchmark": "swin_cpu",
        "model": args.model,
        **machine_description(torch.device("cpu")),
        "torch": torch.__version__,
        "tuned_allocator": bool(tuned),
        "clips": int(fragments.shape[1]),
        "clip_shape": list(clip.shape[1:]),
    }
    shapes = [tuple(s["shape"]) for s in model_gemm_shapes(lambda: branch(fragments[:, :1]))]
    rate = robust_rate(torch.device("cpu"), torch.float32, shapes, args.rate_squares, args.rate_seconds, args.rate_runs)
    result["matmul_rate"] = rate
    peak = rate["flops_per_s"]
    largest = [tuple(e["shape"]) for e in rate["shapes"][:1] + [e for e in rate["shapes"] if e["kind"] == "model"][:2]]

    def quick_rate() -> float:  # the rate now: the square product and the two largest model products, 1 run each
        return max(
            gemm_rate(shape, torch.device("cpu"), torch.float32, 0.3, 1)["best_flops_per_s"] for shape in largest
        )

    flops = count_flops(call_branch)
    clip_flops = count_flops(lambda: encoder(clip))
    result["gflops_per_call"] = flops / 1e9
    result["gflops_per_clip_backbone"] = clip_flops / 1e9

    # the branch on one video's K clips, on both CPU paths
    paths: dict[str, dict[str, Any]] = {}
    for name, low_memory in (("low_memory (CPU default)", None), ("batched (biases kept)", False)):
        model.set_low_memory(low_memory)
        t = timings({"branch": call_branch}, args.repeats, quick_rate)["branch"]
        paths[name] = t | {
            "fraction_of_matmul_rate": flops / t["median_s"] / peak,
            "fraction_of_matmul_rate_best": flops / t["best_s"] / peak,
            "fraction_of_matmul_rate_paired": paired_fraction(flops, t),
        }
    model.set_low_memory(None)
    result["branch"] = paths

    # one clip: ours against the official backbone, the same weights, alternating
    one: dict[str, Any] = {}
    calls: dict[str, Callable[[], Any]] = {"ours": lambda: encoder(clip)}
    if args.fastvqa_reference:
        # tuples as our config has them: the official code reads a *list* window_size as one window per stage
        ref = load_reference(args.fastvqa_reference)(use_checkpoint=False, **dataclasses.asdict(model.config.swin))
        missing, unexpected = ref.load_state_dict(encoder.state_dict(), strict=False)
        if unexpected or any("relative_position_index" not in k for k in missing):
            raise ValueError(f"reference keys differ: missing {missing[:5]}, unexpected {unexpected[:5]}")
        ref.train(False)  # the official train() returns None: no chaining
        calls["official FAST-VQA"] = lambda: ref(clip)
        one["max_abs_diff"] = float((ref(clip) - encoder(clip)).abs().max())
    standalone = copy.deepcopy(encoder).requires_grad_(True)  # as a backbone being fine-tuned
    calls["ours, trainable bias tables"] = lambda: standalone(clip)
    one["seconds"] = timings(calls, args.repeats, quick_rate)
    ours_s = one["seconds"]["ours"]["median_s"]
    one["fraction_of_matmul_rate"] = clip_flops / ours_s / peak
    one["fraction_of_matmul_rate_paired"] = paired_fraction(clip_flops, one["seconds"]["ours"])
    if "official FAST-VQA" in one["seconds"]:
        ref_s = one["seconds"]["official FAST-VQA"]["median_s"]
        one["speedup"] = ref_s / ours_s
        one["official_fraction_of_matmul_rate"] = clip_flops / ref_s / peak
        one["official_fraction_of_matmul_rate_paired"] = paired_fraction(
            clip_flops, one["seconds"]["official FAST-VQA"]
        )
        one["speedup_at_full_matmul_rate"] = ref_s / (clip_flops / peak)
    result["one_clip"] = one

    result["profile"] = profile_categories(call_branch, top=args.profile_top)
    for group, group_flop in group_flops(call_branch).items():
        for entry in result["profile"]["groups"]:
            if entry["group"] == group and entry["ms"] > 0:
                entry["gflops"] = group_flop / 1e9
                entry["fraction_of_matmul_rate"] = group_flop / (entry["ms"] / 1e3) / peak

    if args.compile:
        model.set_low_memory(False)  # what compile_branches does: the compiled backbone takes its tensors as inputs
        compiled = torch.compile(encoder, dynamic=False)
        t0 = time.perf_counter()
        out = compiled(clip)
        first = time.perf_counter() - t0
        eager = encoder(clip)
        t = timings({"compiled": lambda: compiled(clip), "eager batched": lambda: encoder(clip)}, args.repeats)
        model.set_low_memory(None)
        result["compile"] = {
            "first_call_s": first,
            "seconds": t,
            "speedup": t["eager batched"]["median_s"] / t["compiled"]["median_s"],
            "max_abs_diff": float((out - eager).abs().max()),
        }

    if args.alternatives:
        result["alternatives"] = alternatives(encoder, tuple(clip.shape[2:]), args.repeats)

    bf16_hw = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    result["cpu_bf16_hardware"] = bool(bf16_hw)
    if args.bf16:
        model.set_precision("bf16")
        with model.branch_autocast("bvfe"):
            t = timings({"bf16": call_branch}, args.repeats)["bf16"]
        model.set_precision("fp32")
        result["bf16_branch"] = t | {"fp32_median_s": paths["low_memory (CPU default)"]["median_s"]}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dvlta-vqa")
    parser.add_argument(
        "--fastvqa-reference", metavar="SWIN_BACKBONE_PY", help="the official fastvqa/models/swin_backbone.py"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of each measurement (median reported)")
    parser.add_argument("--rate-runs", type=int, default=5, help="timed runs per product shape of the rate probe")
    parser.add_argument("--rate-seconds", type=float, default=0.5, help="length of each run of the rate probe")
    parser.add_argument(
        "--rate-squares",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=(2048, 4096),
        help="sizes of the square products of the rate probe",
    )
    parser.add_argument("--frames", type=int, default=240, help="frames of the random input video")
    parser.add_argument(
        "--video-size", type=lambda s: tuple(int(x) for x in s.split("x")), default=(360, 640), help="HxW"
    )
    parser.add_argument("--profile-top", type=int, default=15)
    parser.add_argument("--compile", action="store_true", help="also time the backbone under torch.compile")
    parser.add_argument("--bf16", action="store_true", help="also time the branch in bfloat16 autocast")
    parser.add_argument(
        "--alternatives", action="store_true", help="also time the ways of computing parts that were left out"
    )
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args(argv)
    result = run(args)
    result["command"] = command_line("swin_cpu.py", sys.argv[1:] if argv is None else argv)
    text = json.dumps(result, indent=2)
    if args.output:
        Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
