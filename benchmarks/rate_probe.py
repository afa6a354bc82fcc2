"""The machine's matmul rate, measured robustly: what every "fraction of the matmul rate" divides by.

Not a test: ``bench.py`` and ``swin_cpu.py`` call it, and it runs alone too:

    python benchmarks/rate_probe.py --model dvlta-vqa --device cpu --output rate.json

One timed square product under-measures: a clock still ramping up, another process's burst, or a size the BLAS
library handles worse than the model's own shapes. Fractions above 1 followed from such a probe (an fp32 run
reported branches at 1.2 of its rate). This probe *(ours)*:

* times each shape ``runs`` times for ``seconds`` each and keeps the best run (disturbances only slow a run);
* probes two square products and the model's own largest matrix products, found by running the model once on a
  small input under a dispatch mode that records every ``mm``/``addmm``/``bmm``/``baddbmm`` with its FLOPs;
* reports the best rate of all as the machine's rate, with every shape's own rate beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

GemmShape = tuple[int, int, int, int]
"""A matrix product ``(batch, m, k, n)``: ``batch`` products of ``(m, k) @ (k, n)``."""

_SQUARES = (2048, 4096)
_SHORT = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _GemmRecorder(TorchDispatchMode):
    """Records the shape and FLOPs of every matrix product dispatched while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.flops: Counter[GemmShape] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        if name in ("mm", "addmm", "bmm", "baddbmm"):
            a, b = (args[0], args[1]) if name in ("mm", "bmm") else (args[1], args[2])
            if a.ndim == 2:
                shape = (1, a.shape[0], a.shape[1], b.shape[1])
            else:
                shape = (a.shape[0], a.shape[1], a.shape[2], b.shape[2])
            self.flops[shape] += 2 * shape[0] * shape[1] * shape[2] * shape[3]
        return func(*args, **(kwargs or {}))


def model_gemm_shapes(fn: Callable[[], Any], top: int = 6, min_share: float = 0.02) -> list[dict[str, Any]]:
    """The largest matrix products of one call, by their share of the call's matmul FLOPs.

    Args:
        fn: The call (e.g. a branch on one input); it runs once.
        top: Keep at most this many shapes.
        min_share: Drop shapes with less than this share of the FLOPs.

    Returns:
        ``[{"shape": [batch, m, k, n], "share": s}, ...]``, largest share first. Attention inside fused kernels
        is no ``mm`` and is not among them: the probe is for the dense products.
    """
    recorder = _GemmRecorder()
    with torch.no_grad(), recorder:
        fn()
    total = sum(recorder.flops.values()) or 1
    ranked = recorder.flops.most_common()
    return [
        {"shape": list(shape), "share": flops / total} for shape, flops in ranked[:top] if flops / total >= min_share
    ]


def gemm_rate(
    shape: GemmShape, device: torch.device, dtype: torch.dtype, seconds: float = 0.5, runs: int = 5
) -> dict[str, Any]:
    """Best FLOP/s of one product shape over ``runs`` timed runs of ``seconds`` each.

    Args:
        shape: ``(batch, m, k, n)``.
        device: Where to run it.
        dtype: Its dtype.
        seconds: Length of each timed run.
        runs: Timed runs; the best is kept.

    Returns:
        ``{"shape", "best_flops_per_s", "median_flops_per_s"}``.
    """
    batch, m, k, n = shape
    gen = torch.Generator(device=device).manual_seed(0)  # operands made where they are used
    a = torch.randn(batch, m, k, generator=gen, device=device, dtype=dtype)
    b = torch.randn(batch, k, n, generator=gen, device=device, dtype=dtype)
    out = torch.empty(batch, m, n, device=device, dtype=dtype)
    if batch == 1:
        a2, b2, out2 = a[0], b[0], out[0]

        def product() -> None:
            torch.mm(a2, b2, out=out2)
    else:

        def product() -> None:
            torch.bmm(a, b, out=out)

    flops = 2 * batch * m * k * n
    product()  # warm-up: first-touch of the output, the library's own set-up
    _sync(device)
    rates = []
    for _ in range(runs):
        reps, t0 = 0, time.perf_counter()
        while True:
            product()
            reps += 1
            if device.type == "cuda" and reps % 10 == 0:
                _sync(device)
            if time.perf_counter() - t0 >= seconds:
                break
        _sync(device)
        rates.append(flops * reps / (time.perf_counter() - t0))
    rates.sort()
    return {"shape": list(shape), "best_flops_per_s": rates[-1], "median_flops_per_s": rates[len(rates) // 2]}


def robust_rate(
    device: torch.device,
    dtype: torch.dtype,
    shapes: Iterable[GemmShape] = (),
    squares: Iterable[int] = _SQUARES,
    seconds: float = 0.5,
    runs: int = 5,
) -> dict[str, Any]:
    """The machine's matmul rate: the best of ``runs`` runs, over square products and the given shapes.

    Args:
        device: Where to measure.
        dtype: Dtype of the products (fp32 on CPU, bf16 on CUDA in ``bench.py``).
        shapes: The model's own products (:func:`model_gemm_shapes`).
        squares: Sizes of the square products.
        seconds: Length of each timed run.
        runs: Timed runs per shape.

    Returns:
        ``{"dtype", "flops_per_s", "probe": "robust", "runs", "seconds_per_run", "shapes": [...]}``:
        ``flops_per_s`` is the best over every shape, and each shape's entry carries its own best and median.
    """
    entries = [gemm_rate((1, s, s, s), device, dtype, seconds, runs) | {"kind": "square"} for s in squares]
    for shape in shapes:
        entries.append(gemm_rate(shape, device, dtype, seconds, runs) | {"kind": "model"})
    return {
        "dtype": _SHORT.get(dtype, str(dtype).removeprefix("torch.")),
        "flops_per_s": max(e["best_flops_per_s"] for e in entries),
        "probe": "robust",
        "runs": runs,
        "seconds_per_run": seconds,
        "shapes": entries,
    }


def machine_description(device: torch.device) -> dict[str, Any]:
    """What the rate belongs to: the processor's model name and vector ISA, or the GPU's name, and torch's threads."""
    if device.type == "cuda":
        return {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device),
            "threads": torch.get_num_threads(),
        }
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):  # no /proc/cpuinfo (not Linux): the platform's own name stays
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return {
        "device": str(device),
        "device_name": name,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dvlta-vqa", help="the model whose products are probed too")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=0.5, help="length of each timed run")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per shape (the best is kept)")
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args(argv)

    import dvlta_metric

    device = torch.device(args.device)
    if device.type == "cpu":
        dvlta_metric.tune_allocator()
    model = dvlta_metric.create(args.model, pretrained=False, device=device)
    views = {k: v[None, :1] if k == "fragments" else v[None] for k, v in model.make_views(_still_video()).items()}
    shapes = model_gemm_shapes(lambda: model.encode(views))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rate = robust_rate(device, dtype, [tuple(s["shape"]) for s in shapes], seconds=args.seconds, runs=args.runs)
    result = {**machine_description(device), "torch": torch.__version__, "model": args.model, "matmul_rate": rate}
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


def _still_video(frames: int = 64, size: tuple[int, int] = (240, 320)) -> torch.Tensor:
    """A small uint8 video ``(T, 3, H, W)`` to run a model on once (its products depend on the view sizes only)."""
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (frames, 3, *size), generator=gen, dtype=torch.uint8)


if __name__ == "__main__":
    raise SystemExit(main())
