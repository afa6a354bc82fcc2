"""Peak CPU memory of one ``as_loss`` forward + backward pass, by frames x resolution, with and without checkpointing.

Not a test: run it by hand and read the table or the JSON.

    python benchmarks/backward_memory.py --output benchmarks/results/cpu_2core_backward_memory.json

Each case (``frames`` x ``resolution`` x checkpointing) runs in a fresh child process
(``python benchmarks/backward_memory.py --case T,H,W,on``) that creates the model with ``as_loss=True``
(seeded random weights: the same cost as trained ones), makes a float32 video ``(T, 3, H, W)`` in ``[0, 1]``
with ``requires_grad=True`` and computes ``(1 - model(video)).backward()``. The parent reads the child's peak
resident set size from outside (``os.wait4``'s ``ru_maxrss``), so it counts everything the process held: the
weights, the input and its gradient, the views, the activations kept for backward, and the allocator's slack.
While a child runs the parent also polls its RSS and stops it once it passes ``--budget-gib``: such a case is
recorded as skipped, with the RSS it had reached.

glibc's allocator settings move RSS a lot here: by default it serves blocks below a threshold that grows to
32 MiB from its heap, and pages freed inside the heap stay resident. The children leave ``malloc`` as the
library does on import unless ``--malloc`` says otherwise (see :data:`MALLOC_SETTINGS`); the JSON records the
choice and the ``MALLOC_*`` environment variables.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESOLUTIONS = {"540p": (540, 960), "720p": (720, 1280), "1080p": (1080, 1920), "2160p": (2160, 3840)}
"""Named resolutions ``--resolutions`` accepts, as ``(height, width)``; ``WxH`` works too."""

MALLOC_SETTINGS: dict[str, dict[str, int]] = {
    "tuned": {},
    "lean": {"mmap_threshold": 1 << 20, "trim_threshold": 1 << 20, "top_pad": 0},
}
"""``--malloc`` choices: keyword arguments of :func:`dvlta_metric.tune_allocator` (``default`` calls nothing)."""

POLL_S = 0.05
"""How often the parent reads a running child's RSS for the budget."""


def parse_resolution(text: str) -> tuple[str, int, int]:
    """``"1080p"`` or ``"1920x1080"`` -> ``(label, height, width)``."""
    if text in RESOLUTIONS:
        return (text, *RESOLUTIONS[text])
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"resolution {text!r}: expected one of {sorted(RESOLUTIONS)} or WxH")
    w, h = int(match[1]), int(match[2])
    return text, h, w


def run_case(model_name: str, frames: int, height: int, width: int, checkpointing: bool, malloc: str) -> dict[str, Any]:
    """One forward + backward in this process; returns timings, the score and the input gradient's norm."""
    import torch

    import dvlta_metric

    settings = MALLOC_SETTINGS.get(malloc)
    tuned = dvlta_metric.tune_allocator(**settings) if settings is not None else False
    torch.manual_seed(0)
    model = dvlta_metric.create(model_name, pretrained=False, device="cpu", as_loss=True)
    model.set_grad_checkpointing(checkpointing)
    video = torch.rand(frames, 3, height, width, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    t0 = time.perf_counter()
    score = model(video)
    t1 = time.perf_counter()
    (1 - score).backward()
    t2 = time.perf_counter()
    grad = video.grad
    if grad is None:
        raise RuntimeError("the video got no gradient")
    return {
        "score": float(score),
        "grad_norm": float(grad.norm()),
        "forward_s": t1 - t0,
        "backward_s": t2 - t1,
        "malloc_settings_accepted": tuned,
    }


def measure(args: argparse.Namespace, frames: int, label: str, height: int, width: int, ckpt: bool) -> dict[str, Any]:
    """Run one case in a child process and read its peak RSS from outside."""
    case = f"{frames},{height},{width},{'on' if ckpt else 'off'}"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", case, "--model", args.model]
    cmd += ["--malloc", args.malloc]
    entry: dict[str, Any] = {"frames": frames, "resolution": label, "size": [height, width], "checkpointing": ckpt}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    budget_kib = int(args.budget_gib * 2**20)
    over = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        rss = _rss_kib(proc.pid)
        if rss > budget_kib:
            over = rss
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(POLL_S)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.communicate()
    entry["wall_s"] = time.perf_counter() - t0
    entry["peak_rss_mib"] = usage.ru_maxrss / 1024  # KiB on Linux
    if over:
        entry["skipped"] = f"stopped at {over / 2**20:.1f} GiB RSS, over the {args.budget_gib:g} GiB budget"
        return entry
    if proc.returncode != 0:
        raise RuntimeError(f"case {case} failed (exit {proc.returncode}):\n{err[-3000:]}")
    entry |= json.loads(out.strip().splitlines()[-1])
    return entry


def _rss_kib(pid: int) -> int:
    """Current resident set size of a process (KiB), 0 if it is gone."""
    with contextlib.suppress(OSError):  # the process may have ended between the poll and the read
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    return 0


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dvlta-vqa")
    parser.add_argument("--frames", default="8,32", help="comma-separated frame counts")
    parser.add_argument("--resolutions", default="540p,1080p", help=f"comma-separated, {sorted(RESOLUTIONS)} or WxH")
    parser.add_argument("--checkpointing", default="on,off", help="comma-separated: on, off")
    parser.add_argument("--budget-gib", type=float, default=12.0, help="stop a case whose RSS passes this")
    parser.add_argument(
        "--malloc",
        choices=["default", "tuned", "lean"],
        default="default",
        help="glibc malloc in the children: as the library leaves it; dvlta_metric.tune_allocator() (large "
        "blocks kept in the heap, fast, peak RSS kept); or lean: tune_allocator(mmap_threshold=1 MiB, "
        "trim_threshold=1 MiB, top_pad=0), blocks of 1 MiB and more mapped and returned on free",
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)  # T,H,W,on|off: run one case in this process
    parser.add_argument("--note", help="a note for the reader of the JSON")
    parser.add_argument("--output", type=Path, help="write the JSON result here")
    args = parser.parse_args(argv)

    if args.case:
        t, h, w, ckpt = args.case.split(",")
        print(json.dumps(run_case(args.model, int(t), int(h), int(w), ckpt == "on", args.malloc)))
        return 0

    frames = [int(x) for x in args.frames.split(",")]
    resolutions = [parse_resolution(x) for x in args.resolutions.split(",")]
    modes = [{"on": True, "off": False}[x] for x in args.checkpointing.split(",")]
    cases = []
    for ckpt in modes:
        for label, h, w in resolutions:
            for t in frames:
                entry = measure(args, t, label, h, w, ckpt)
                cases.append(entry)
                shown = entry.get("skipped") or f"{entry['peak_rss_mib']:.0f} MiB, {entry['wall_s']:.1f} s"
                print(f"{t:3d} frames {label:>9} checkpointing {'on ' if ckpt else 'off'}: {shown}", flush=True)
    import torch  # here, after the cases: the parent holds no torch while they run

    result: dict[str, Any] = {
        "benchmark": "backward_memory",
        "model": args.model,
        "device": "cpu",
        "device_name": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git_commit": _git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "input": "float32 (T, 3, H, W) in [0, 1], requires_grad; loss = 1 - score",
        "malloc": args.malloc,
        "malloc_settings": MALLOC_SETTINGS.get(args.malloc),
        "malloc_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(("MALLOC_", "GLIBC_TUNABLES"))},
        "budget_gib": args.budget_gib,
        "cases": cases,
        "command": " ".join(["python", "benchmarks/backward_memory.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    if args.note:
        result["note"] = args.note
    print(json.dumps(result, indent=1))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
