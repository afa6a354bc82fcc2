"""Speed and memory of DVLTA-VQA, stage by stage, with FLOP counts and the machine's own matmul rate.

Not a test: run it by hand (or on a GPU machine) and read the table or the JSON.

    python benchmarks/bench.py --model dvlta-vqa --device cpu --json
    python benchmarks/bench.py --model dvlta-vqa --device cuda --precision bf16 --batch-sizes 1,4,16

Reports, for one video (a given file, or a generated H.264 clip of ``--resolution`` and ``--seconds``):

* time per stage: decode (the frames the model needs, the floor of the file path), views, each branch
  (fragments / Swin3D, Temporal Context Module, Video-Based Temporal CLIP), fusion;
* end-to-end time per video on the file path and on the tensor path;
* videos per second at several batch sizes (tensor path; views prepared once), and for ``score_files`` with
  decoding workers over copies of the file;
* peak memory (CPU RSS, CUDA max allocated);
* FLOPs per video counted with ``torch.utils.flop_counter`` and the achieved rate as a fraction of the
  matmul rate (fp32 on CPU, bf16 on CUDA), measured in the same run by ``rate_probe.py`` (the best of several
  runs over square products and the model's own largest products);
* optionally (``--as-loss``) one forward + backward with gradients on the pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rate_probe import machine_description, model_gemm_shapes, robust_rate  # this folder is on sys.path
from torch.utils.flop_counter import FlopCounterMode

import dvlta_metric
from dvlta_metric.video_io import read_video


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work so that wall-clock timings are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> tuple[float, Any]:
    """Median seconds of ``repeats`` calls after ``warmup`` calls; also returns the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call, counted by ``torch.utils.flop_counter`` (matmuls, convolutions, attention).

    Attention runs on the math backend and ``nn.MultiheadAttention`` off its fused fast path while counting:
    the counter knows the CUDA fused kernels but not every CPU one nor the fused MHA op, while the math
    path's matmuls are counted the same on every device and in every precision.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    counter = FlopCounterMode(display=False)
    try:
        with counter, sdpa_kernel(SDPBackend.MATH):
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return int(counter.get_total_flops())


def copy_bandwidth(device: torch.device, mib: int, seconds: float = 1.0) -> float:
    """Measured bytes/s of a device-to-device copy of ``mib`` MiB (bytes read plus bytes written).

    The memory bandwidth ``benchmarks/roofline.py`` prices operators with (``--bandwidth-tbs``).
    """
    src = torch.empty(mib * 2**20, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    for _ in range(2):
        dst.copy_(src)
    sync(device)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        dst.copy_(src)
        reps += 1
        if device.type == "cuda" and reps % 10 == 0:
            sync(device)
    sync(device)
    return 2 * src.numel() * reps / (time.perf_counter() - t0)


def make_video(path: Path, width: int, height: int, seconds: float, fps: int = 30) -> Path:
    """Encode a synthetic H.264 clip (moving gradients plus noise) with PyAV."""
    import av
    import numpy as np

    frames = round(seconds * fps)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for i in range(frames):
            r = (128 + 100 * np.sin((xx + 4 * i) / 37.0)).astype(np.float32)
            g = (128 + 100 * np.cos((yy - 3 * i) / 29.0)).astype(np.float32)
            b = ((xx + yy + 5 * i) % 256).astype(np.float32)
            img = np.stack([r, g, b], -1) + rng.normal(0, 6, (height, width, 3))
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def reference_swin(
    path: str, model: Any, views: dict[str, torch.Tensor], device: torch.device, reps: int
) -> dict[str, float]:
    """Time the official FAST-VQA-B backbone (a ``swin_backbone.py`` the user points to; never shipped here)
    against ours on the same fragment clip, with the same weights, in this run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fastvqa_swin_reference", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ref = module.SwinTransformer3D(use_checkpoint=False)
    ours = model.branches["bvfe"].encoder
    state = dict(ours.state_dict().items())
    missing, unexpected = ref.load_state_dict(state, strict=False)
    if unexpected or any("relative_position_index" not in k for k in missing):
        raise ValueError(f"reference keys differ: missing {missing[:5]}, unexpected {unexpected[:5]}")
    ref = ref.to(device)
    ref.train(False)
    clip = views["fragments"][0, :1]  # one (1, 3, 32, 224, 224) clip
    t_ref, out_ref = timed(lambda: ref(clip), device, reps)
    t_ours, out_ours = timed(lambda: ours(clip), device, reps)
    return {
        "reference_seconds_per_clip": t_ref,
        "ours_seconds_per_clip": t_ours,
        "speedup": t_ref / t_ours,
        "max_abs_diff": float((out_ref - out_ours).abs().max()),
    }


def command_line(script: str, argv: list[str]) -> str:
    """The command that produced a result, as the docs show it: the official backbone's path (never part of this
    repository) as its path inside the FAST-VQA repository."""
    words = []
    for a in argv:
        if a.endswith("swin_backbone.py"):
            a = (
                a.split("=", 1)[0] + "=fastvqa/models/swin_backbone.py"
                if "=" in a
                else "fastvqa/models/swin_backbone.py"
            )
        words.append(a)
    return f"python benchmarks/{script} " + " ".join(words)


def distinct_batch(views: dict[str, torch.Tensor], batch_size: int) -> dict[str, torch.Tensor]:
    """``batch_size`` copies of one video's views, each made distinct by a tiny offset.

    Plain copies would be timed at a fraction of their cost: the fragment branch runs clips that are equal element
    for element once (``BasicVisualFeatureExtraction.encode``), which is what a batch of one video repeated is.
    """
    copies = [{k: v + i * 1e-3 if v.is_floating_point() else v for k, v in views.items()} for i in range(batch_size)]
    return {k: torch.cat([c[k] for c in copies]) for k in views}


def profile_ops(fn: Callable[[], Any], device: torch.device, batch_size: int, top: int = 15) -> dict[str, Any]:
    """Where one call spends its time: the ``top`` operators by self time (CUDA kernels on a GPU).

    Args:
        fn: The call (run once to warm up, then once under :mod:`torch.profiler`).
        device: Its device.
        batch_size: Videos per call, recorded with the result.
        top: How many operators to keep.

    Returns:
        ``{"batch_size", "total_ms", "ops": [{"name", "ms", "share", "calls"}, ...]}``.
    """
    from torch.profiler import ProfilerActivity, profile

    fn()
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    if device.type == "cuda":  # the kernels alone: the operators that launch them carry the same device time
        events = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(getattr(e, attr) for e in events)
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    ops = [
        {"name": e.key[:80], "ms": getattr(e, attr) / 1e3, "share": getattr(e, attr) / total, "calls": e.count}
        for e in events[:top]
    ]
    return {"batch_size": batch_size, "total_ms": total / 1e3, "ops": ops, "kernels_only": device.type == "cuda"}


def rss_peak_mib() -> float:
    """Peak resident set size of this process so far (MiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    tuned = device.type == "cpu" and not args.no_tune_allocator and dvlta_metric.tune_allocator()
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    overrides = {"fragment_view": {"num_clips": args.num_clips}} if args.num_clips else {}
    model = dvlta_metric.create(args.model, pretrained=args.pretrained, device=device, **overrides)
    model.set_precision(args.precision).set_attention_kernel(args.attention_kernel)
    if args.swin_path != "default":
        model.set_low_memory(args.swin_path == "low-memory")
    compile_kwargs = {"mode": args.compile_mode} if args.compile_mode else {}
    if args.compile and not args.throughput_only:
        model.compile_branches(**compile_kwargs)

    workdir = Path(tempfile.mkdtemp(prefix="dvlta_bench_"))
    if args.video:
        video_path = Path(args.video)
    else:
        w, h = (int(x) for x in args.resolution.lower().split("x"))
        video_path = make_video(workdir / f"synthetic_{w}x{h}.mp4", w, h, args.seconds)

    result: dict[str, Any] = {
        "model": args.model,
        "device": str(device),
        **machine_description(device),
        "torch": torch.__version__,
        "precision": args.precision,
        "compile": args.compile,
        "compile_mode": args.compile_mode if args.compile else None,
        "attention_kernel": args.attention_kernel,
        "swin_path": args.swin_path,
        "tuned_allocator": bool(tuned),
        "video": str(video_path),
    }

    result["copy_bandwidth"] = {"bytes_per_s": copy_bandwidth(device, 2048 if device.type == "cuda" else 256)}
    result["branch_dtypes"] = {
        k: str(v or torch.float32).removeprefix("torch.")
        for k, v in dvlta_metric.model.branch_dtypes(args.precision, device.type).items()
    }

    # stages of one video
    reps = args.repeats
    t_decode, decoded = timed(lambda: model.read(video_path), torch.device("cpu"), reps, warmup=1)
    t_decode_all, full = timed(lambda: read_video(video_path), torch.device("cpu"), 1, warmup=0)
    t_views, views = timed(lambda: model.make_views(decoded), device, reps)
    batch_views = {k: v[None] for k, v in views.items()}

    # machine rate, measured in this run: the best of several runs over square products and the model's own
    # largest products (rate_probe.py); fp32 on CPU, bf16 on CUDA
    model.set_attention_kernel("sdpa")  # FlexAttention runs under no dispatch mode; the products are the same
    try:
        shapes = [tuple(s["shape"]) for s in model_gemm_shapes(lambda: model.encode(batch_views))]
    finally:
        model.set_attention_kernel(args.attention_kernel)
    if args.rate_squares is None:
        args.rate_squares = (4096, 8192) if device.type == "cuda" else (2048, 4096)
    rate_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    result["matmul_rate"] = robust_rate(
        device, rate_dtype, shapes, args.rate_squares, args.rate_seconds, args.rate_runs
    )
    rate = result["matmul_rate"]["flops_per_s"]
    if device.type == "cpu" and args.precision != "fp32":  # for reference: what the CPU's half-precision products reach
        half = dvlta_metric.model.PRECISIONS[args.precision]
        result["matmul_rate_half"] = robust_rate(
            device, half, shapes, args.rate_squares, args.rate_seconds, args.rate_runs
        )
    stages: dict[str, dict[str, float]] = {
        "decode (needed frames)": {"seconds": t_decode},
        "decode (all frames)": {"seconds": t_decode_all},
        "views": {"seconds": t_views},
    }

    def in_amp(branch: str, fn: Callable[[], Any]) -> Callable[[], Any]:
        def wrapped() -> Any:
            with model.branch_autocast(branch):
                return fn()

        return wrapped

    def batch_branch_calls(views: dict[str, torch.Tensor]) -> dict[str, Callable[[], Any]]:
        calls: dict[str, Callable[[], Any]] = {}
        if "bvfe" in model.branches:
            calls["fragments (Swin3D + head)"] = in_amp("bvfe", lambda: model.branches["bvfe"](views["fragments"]))
        if "tcm" in model.branches:
            calls["temporal context"] = in_amp("tcm", lambda: model.branches["tcm"](views["frames"].transpose(1, 2)))
        if "vbtc" in model.branches:
            calls["temporal CLIP"] = in_amp("vbtc", lambda: model.branches["vbtc"](views["frames"]))
        return calls

    branch_calls = batch_branch_calls(batch_views)
    features = model.branch_features(model.encode(batch_views))
    branch_calls["fusion + score"] = lambda: model.score_features(features)

    def count(fn: Callable[[], Any]) -> int:  # FLOPs are counted through sdpa: FlexAttention runs under no counter
        model.set_attention_kernel("sdpa")
        try:
            return count_flops(fn)
        finally:
            model.set_attention_kernel(args.attention_kernel)

    total_flops = 0
    if args.throughput_only:  # FLOPs counted uncompiled, then only the batch throughput (compiled if asked)
        total_flops = sum(count(fn) for fn in branch_calls.values())
        if args.compile:
            model.compile_branches(**compile_kwargs)
    for name, fn in branch_calls.items():
        if args.throughput_only:
            break
        seconds, _ = timed(fn, device, reps)
        flops = count(fn)
        total_flops += flops
        stages[name] = {"seconds": seconds, "gflops": flops / 1e9, "fraction_of_matmul_rate": flops / seconds / rate}
    result["stages"] = stages
    result["flops_per_video"] = total_flops

    if args.fastvqa_reference and "bvfe" in model.branches:
        result["fastvqa_reference"] = reference_swin(args.fastvqa_reference, model, batch_views, device, reps)

    # end to end, one video
    if not args.throughput_only:
        t_file, _ = timed(lambda: model(video_path), device, reps)
        t_tensor, _ = timed(lambda: model(full.frames), device, reps)
        compute = sum(stages[n]["seconds"] for n in branch_calls)
        result["end_to_end"] = {
            "file_path_seconds": t_file,
            "tensor_path_seconds": t_tensor,
            "decode_and_views_share_of_file_path": (t_decode + t_views) / t_file,
            "model_flops_fraction_of_matmul_rate": total_flops / compute / rate,
            "tensor_path_flops_fraction_of_matmul_rate": total_flops / t_tensor / rate,
        }

    # throughput at several batch sizes (views prepared once; model compute only)
    throughput = {}
    for bs in args.batch_sizes:
        batch = distinct_batch(batch_views, bs)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        def call(batch: dict[str, torch.Tensor] = batch) -> Any:
            return model.score_features(model.branch_features(model.encode(batch)))

        seconds, _ = timed(call, device, max(1, reps // 2 + 1))
        entry = {
            "videos_per_s": bs / seconds,
            "flops_fraction_of_matmul_rate": total_flops * bs / seconds / rate,
        }
        if args.branch_times:
            entry["branch_seconds"] = {
                name: timed(fn, device, max(1, reps // 2 + 1))[0] for name, fn in batch_branch_calls(batch).items()
            }
        if device.type == "cuda":
            entry["cuda_max_allocated_mib_per_video"] = torch.cuda.max_memory_allocated(device) / 2**20 / bs
        throughput[str(bs)] = entry
    result["throughput_tensor_path"] = throughput
    if args.profile:
        bs = max(args.batch_sizes)
        batch = distinct_batch(batch_views, bs)
        result["profile"] = profile_ops(
            lambda: model.score_features(model.branch_features(model.encode(batch))), device, bs, top=args.profile_top
        )

    # score_files: decoding in workers overlapped with compute, vs decoding alone with the same workers
    if args.files:
        from concurrent.futures import ThreadPoolExecutor

        paths = [video_path] * args.files
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
            list(pool.map(model.read, paths))
        decode_only = args.files / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        results = list(model.score_files(paths, batch_size=args.files_batch, num_workers=args.workers, progress=False))
        sync(device)
        files_rate = args.files / (time.perf_counter() - t0)
        result["score_files"] = {
            "files": args.files,
            "workers": args.workers,
            "batch_size": args.files_batch,
            "videos_per_s": files_rate,
            "decode_only_videos_per_s": decode_only,
            "fraction_of_decode_only": files_rate / decode_only,
            "errors": sum(1 for r in results if r.error),
        }

    if args.as_loss:
        loss_model = dvlta_metric.create(
            args.model, pretrained=args.pretrained, device=device, as_loss=True, **overrides
        )
        loss_model.set_precision(args.precision).set_grad_checkpointing(args.checkpointing)
        clip = full.frames[: args.loss_frames].to(device).float().div(255).requires_grad_(True)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        def fwd_bwd() -> None:
            with torch.enable_grad():
                loss_model(clip).backward()

        seconds, _ = timed(fwd_bwd, device, 1, warmup=0)
        entry = {
            "frames": int(clip.shape[0]),
            "size": list(clip.shape[-2:]),
            "seconds": seconds,
            "grad_checkpointing": args.checkpointing,
        }
        if device.type == "cuda":
            entry["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["as_loss_backward"] = entry

    # the rate again: on a shared host the machine's speed drifts, and a run is only as comparable as its two ends
    result["matmul_rate_after"] = robust_rate(
        device, rate_dtype, shapes, args.rate_squares, args.rate_seconds, max(1, args.rate_runs // 2)
    )
    result["peak_rss_mib"] = rss_peak_mib()
    if device.type == "cuda":
        result["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


SHORT = {"fragments (Swin3D + head)": "Swin3D", "temporal context": "TCM", "temporal CLIP": "CLIP"}


def print_table(r: dict[str, Any]) -> None:
    rate = r["matmul_rate"]
    print(
        f"model {r['model']} on {r['device']} ({r['device_name']}, {r['threads']} threads), "
        f"precision {r['precision']}, torch {r['torch']}, tuned allocator {r.get('tuned_allocator', False)}, "
        f"compiled {r.get('compile', False)}, attention {r.get('attention_kernel', 'sdpa')}"
    )
    print(f"measured matmul rate ({rate['dtype']}): {rate['flops_per_s'] / 1e9:.1f} GFLOP/s")
    if "matmul_rate_half" in r:
        half = r["matmul_rate_half"]
        print(f"measured matmul rate ({half['dtype']}): {half['flops_per_s'] / 1e9:.1f} GFLOP/s")
    if "copy_bandwidth" in r:
        print(f"measured copy bandwidth: {r['copy_bandwidth']['bytes_per_s'] / 1e9:.1f} GB/s")
    if "branch_dtypes" in r:
        print("branch dtypes: " + ", ".join(f"{k} {v}" for k, v in r["branch_dtypes"].items()))
    print(f"FLOPs per video: {r['flops_per_video'] / 1e9:.1f} GFLOP\n")
    print(f"{'stage':32s} {'ms':>10s} {'GFLOP':>9s} {'of rate':>8s}")
    for name, s in r["stages"].items():
        gf = f"{s['gflops']:.1f}" if "gflops" in s else ""
        fr = f"{s['fraction_of_matmul_rate']:.2f}" if "fraction_of_matmul_rate" in s else ""
        print(f"{name:32s} {s['seconds'] * 1e3:10.1f} {gf:>9s} {fr:>8s}")
    e = r.get("end_to_end")
    if e:
        print(
            f"\nfile path {e['file_path_seconds'] * 1e3:.1f} ms, tensor path {e['tensor_path_seconds'] * 1e3:.1f} ms; "
            f"decode+views {100 * e['decode_and_views_share_of_file_path']:.1f}% of the file path; "
            f"model at {e['model_flops_fraction_of_matmul_rate']:.2f} of the matmul rate"
        )
    print("\nbatch  videos/s  of rate")
    for bs, t in r["throughput_tensor_path"].items():
        mem = (
            f"  {t['cuda_max_allocated_mib_per_video']:.0f} MiB/video"
            if "cuda_max_allocated_mib_per_video" in t
            else ""
        )
        branches = "".join(f"  {SHORT.get(k, k)} {v * 1e3:.1f} ms" for k, v in t.get("branch_seconds", {}).items())
        print(f"{bs:>5s} {t['videos_per_s']:9.2f} {t['flops_fraction_of_matmul_rate']:8.2f}{mem}{branches}")
    if "fastvqa_reference" in r:
        f = r["fastvqa_reference"]
        print(
            f"\nfragment backbone, one clip: official FAST-VQA {f['reference_seconds_per_clip'] * 1e3:.0f} ms, "
            f"ours {f['ours_seconds_per_clip'] * 1e3:.0f} ms ({f['speedup']:.2f}x), max diff {f['max_abs_diff']:.1e}"
        )
    if "profile" in r:
        p = r["profile"]
        print(f"\nprofile at batch {p['batch_size']} ({p['total_ms']:.1f} ms of operator self time):")
        for op in p["ops"]:
            print(f"  {op['ms']:9.2f} ms {100 * op['share']:5.1f}%  {op['calls']:5d}x  {op['name']}")
    if "score_files" in r:
        f = r["score_files"]
        print(
            f"\nscore_files: {f['videos_per_s']:.2f} videos/s with {f['workers']} workers "
            f"({f['fraction_of_decode_only']:.2f} of decoding alone with the same workers, "
            f"{f['decode_only_videos_per_s']:.2f}/s)"
        )
    if "as_loss_backward" in r:
        a = r["as_loss_backward"]
        print(f"\nas_loss forward+backward, {a['frames']} frames {a['size']}: {a['seconds']:.1f} s")
    print(
        f"\npeak RSS {r['peak_rss_mib']:.0f} MiB"
        + (f", CUDA max allocated {r['cuda_max_allocated_mib']:.0f} MiB" if "cuda_max_allocated_mib" in r else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dvlta-vqa")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--pretrained", action="store_true", help="load weights (default: random, same cost)")
    parser.add_argument("--video", help="a video file (default: a generated H.264 clip)")
    parser.add_argument("--resolution", default="960x540", help="WxH of the generated clip")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the generated clip")
    parser.add_argument("--num-clips", type=int, default=0, help="override fragment clips (default: config)")
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the branches")
    parser.add_argument(
        "--compile-mode",
        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
        help="torch.compile mode for --compile (default: torch's default)",
    )
    parser.add_argument(
        "--attention-kernel",
        default="sdpa",
        choices=["sdpa", "flex"],
        help="window attention kernel of the fragment backbone",
    )
    parser.add_argument(
        "--swin-path",
        choices=["default", "low-memory", "batched"],
        default="default",
        help="the Swin3D's scoring path (model.set_low_memory: default: low-memory on CPU, batched elsewhere)",
    )
    parser.add_argument("--files", type=int, default=0, help="also time score_files over N copies of the video")
    parser.add_argument("--files-batch", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--as-loss", action="store_true", help="also time one forward+backward to the pixels")
    parser.add_argument("--loss-frames", type=int, default=32)
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing for --as-loss")
    parser.add_argument(
        "--fastvqa-reference",
        metavar="SWIN_BACKBONE_PY",
        help="path to the official FAST-VQA fastvqa/models/swin_backbone.py, to time it on the same clip",
    )
    parser.add_argument(
        "--no-tune-allocator",
        action="store_true",
        help="on CPU, leave glibc malloc as it is (see dvlta_metric.tune_allocator)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile one call at the largest batch size: top operators by self time",
    )
    parser.add_argument("--profile-top", type=int, default=15, help="operators kept by --profile")
    parser.add_argument("--branch-times", action="store_true", help="also time each branch alone at every batch size")
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="skip the per-stage and end-to-end timings of one video: FLOPs (counted uncompiled) and "
        "the batch throughput only, e.g. for a compiled model at one batch size",
    )
    parser.add_argument(
        "--rate-runs", type=int, default=5, help="timed runs per product shape of the matmul rate probe (best kept)"
    )
    parser.add_argument("--rate-seconds", type=float, default=0.5, help="length of each run of the matmul rate probe")
    parser.add_argument(
        "--rate-squares",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=None,
        help="sizes of the square products of the matmul rate probe (default: 2048,4096 on CPU, 4096,8192 on CUDA)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--output", help="also write the JSON to this file")
    args = parser.parse_args(argv)
    result = run(args)
    result["command"] = command_line("bench.py", sys.argv[1:] if argv is None else argv)
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
