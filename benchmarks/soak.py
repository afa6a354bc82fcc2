"""Soak check of the command line's corpus runs under injected faults (not a test).

    python benchmarks/soak.py --files 300 --rounds 12 --output benchmarks/results/cpu_2core_soak.json

Generates a corpus of small clips (a few of them broken), then runs ``dvlta-metric score`` on it with the
tiny model until every file has a row, injecting one fault per round at a random moment, from a seeded
generator: first ``--rounds - 1`` runs each stopped early by one of

* ``kill``: the run is killed with SIGKILL (no clean-up of any kind);
* ``full-disk``: the run gets a file-size limit (``RLIMIT_FSIZE``) a little above what the output holds, so
  a write fails as on a full disk;

then a run during which a second run on the same ``--output`` starts (``concurrent``: the second must be
refused, the first finishes the job), then a last clean run (``none``) that must find nothing left to do.
Every round resumes the same output file. At the end it reports how many files were scored exactly once,
how many appear more than once or never (both must be 0), how the broken files were reported, the exit
codes seen per fault, and the peak RSS of the runs.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import platform
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np


def write_corpus(folder: Path, files: int, broken: int, seed: int) -> list[Path]:
    """``files`` clips of 8-16 frames at 64x48 (H.264), ``broken`` of them cut or replaced by noise."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(files):
        path = folder / f"clip_{i:04d}.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=24)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            for _ in range(int(rng.integers(8, 17))):
                img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
                out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            out.mux(stream.encode(None))
        paths.append(path)
    for path in rng.choice(paths, broken, replace=False):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3] if rng.random() < 0.5 else rng.bytes(len(data)))
    return paths


def command(corpus: Path, output: Path) -> list[str]:
    return [
        sys.executable, "-m", "dvlta_metric", "score", str(corpus), "--output", str(output),
        "--model", "dvlta-vqa-tiny", "--random-weights", "--device", "cpu", "--no-progress", "--workers", "2",
    ]  # fmt: skip


def run_round(fault: str, cmd: list[str], output: Path, rng: random.Random) -> dict[str, Any]:
    """One run of ``cmd`` with ``fault`` injected; returns the exit codes seen."""
    limit = None
    if fault == "full-disk":
        limit = (output.stat().st_size if output.exists() else 0) + 2048

    def set_limit() -> None:
        if limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=set_limit)
    seen: dict[str, Any] = {"fault": fault}
    if fault == "kill":
        time.sleep(rng.uniform(2.0, 8.0))
        proc.send_signal(signal.SIGKILL)
    elif fault == "concurrent":
        time.sleep(rng.uniform(2.0, 4.0))
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if second.returncode == 2 and "is locked by another dvlta-metric run" in second.stderr:
            seen["second"] = "refused: locked"
        elif proc.poll() is not None and re.search(r"(\d+) of \1 files are already in", second.stderr):
            seen["second"] = "nothing left: the first run had finished"  # a small corpus can end that fast
        else:
            seen["second"] = f"exit {second.returncode}: {second.stderr.strip().splitlines()[-1:]}"
    _, err = proc.communicate(timeout=1800)
    seen["exit"] = proc.returncode
    if proc.returncode not in (0, -signal.SIGKILL):
        seen["message"] = err.decode(errors="replace").strip().splitlines()[-2:]
    return seen


def summary(seen: dict[str, Any]) -> str:
    """One line for a round: ``"full-disk: exit 74"``, ``"concurrent: exit 1; second run refused: locked"``."""
    line = f"{seen['fault']}: exit {seen['exit']}"
    return line + (f"; second run {seen['second']}" if "second" in seen else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=300, help="clips in the corpus")
    parser.add_argument("--broken", type=int, default=12, help="how many of them are broken")
    parser.add_argument("--rounds", type=int, default=12, help="most runs with a fault before the final clean run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="write the JSON result here")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "clips").mkdir()
        paths = write_corpus(folder / "clips", args.files, args.broken, args.seed)
        output = folder / "scores.csv"
        cmd = command(folder / "clips", output)
        # faults that stop a run early first, so that each leaves work for the next; then a run with a
        # concurrent second one, which finishes the job; then a clean resume that must find nothing to do
        plan = [rng.choice(("kill", "full-disk")) for _ in range(max(0, args.rounds - 1))] + ["concurrent", "none"]
        rounds = [run_round(fault, cmd, output, rng) for fault in plan]
        with output.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    counts = collections.Counter(r["path"] for r in rows)
    expected = {str(p) for p in paths}
    result = {
        "benchmark": "soak",
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "files": len(paths),
        "broken": args.broken,
        "rounds": [summary(r) for r in rounds],
        "scored_exactly_once": sum(1 for p in expected if counts[p] == 1),
        "duplicated": sorted(p for p in expected if counts[p] > 1),
        "lost": sorted(expected - set(counts)),
        "unexpected_rows": sorted(set(counts) - expected),
        "error_rows": sum(1 for r in rows if r["error"]),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "command": " ".join(["python", "benchmarks/soak.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    for seen in rounds:  # the last lines each failed run printed, for a reader of the log
        print(summary(seen), *seen.get("message", []), sep="\n    ")
    print(json.dumps(result, indent=1))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if not result["duplicated"] and not result["lost"] and not result["unexpected_rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
