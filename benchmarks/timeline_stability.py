"""How long must a timeline window be for its score to be stable? Spread of window scores by window length.

    python benchmarks/timeline_stability.py --output benchmarks/results/cpu_2core_timeline_stability.json

For each window length ``w`` (frames), every video is cut into consecutive windows of ``w`` frames
(:meth:`DVLTAVQA.timeline`), and the spread of the window scores *within* one video is compared with the
spread of the whole-video scores *between* the videos. The test clips are short single-scene UGC clips
(``../shared/data/videos`` when present, else generated clips), so their windows show the same content and
a stable metric should give them nearly the same score: ``ratio`` is the mean within-video standard deviation
of the window scores divided by the between-video standard deviation of the whole-video scores, and the
shortest stable window is the shortest ``w`` whose ratio is below ``--threshold`` (default 0.1: windows of one
clip move less than a tenth as much as different clips do).

The result also records, from the configuration alone, the shortest window in which no view of the model
repeats a frame (``clip_len * frame_interval`` frames for the fragment clips, ``T`` for the frame views): in a
shorter window the fragment clips wrap around and read frames twice.

Limits: trained weights are not published yet, so by default this measures the tiny test model with seeded
random weights, whose scores say nothing about quality; it shows how much the *sampling* of a short window moves
a score, not how much a trained model's judgement does. Rerun it with ``--model dvlta-vqa --pretrained`` once
weights exist (the full model takes about a minute per window on two CPU cores: use a GPU).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = ROOT.parent / "shared" / "data" / "videos"


def structural_minimum(model_name: str) -> int:
    """Shortest window (frames) in which no view of ``model_name`` reads a frame twice."""
    import dvlta_metric

    cfg = dvlta_metric.get_model_config(model_name)
    return max(cfg.fragment_view.clip_len * cfg.fragment_view.frame_interval, cfg.frame_view.num_frames)


def generated_videos(folder: Path, count: int = 3) -> list[Path]:
    """Single-scene test clips: a textured picture panning slowly, a different picture and noise level each."""
    import av
    import numpy as np

    paths = []
    for k in range(count):
        rng = np.random.default_rng(k)
        base = rng.random((34, 60, 3))
        base = np.kron(base, np.ones((8, 8, 1)))  # 272 x 480 blocks
        path = folder / f"generated_{k}.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
            for t in range(120):
                crop = base[16 : 16 + 240, 4 * t // 3 : 4 * t // 3 + 320]
                noisy = np.clip(crop + rng.normal(0, 0.02 * (k + 1), crop.shape), 0, 1)
                frame = av.VideoFrame.from_ndarray((noisy * 255).astype(np.uint8), format="rgb24")
                out.mux(stream.encode(frame))
            out.mux(stream.encode())
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", nargs="*", type=Path, help="video files (default: ../shared/data/videos/*.mp4)")
    parser.add_argument("--model", default="dvlta-vqa-tiny", help="registry name (default: %(default)s)")
    parser.add_argument("--pretrained", action="store_true", help="trained weights (default: seeded random)")
    parser.add_argument("--windows", default="8,16,32,64,120", help="window lengths in frames (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=0.1, help="stable below this ratio (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per model call (default: %(default)s)")
    parser.add_argument("--output", type=Path, help="write the JSON result here (default: print it)")
    args = parser.parse_args(argv)

    import dvlta_metric

    started = time.perf_counter()
    windows = [int(w) for w in args.windows.split(",")]
    scratch = tempfile.TemporaryDirectory()
    videos = args.videos
    if not videos:
        videos = sorted(SHARED_VIDEOS.glob("*.mp4")) if SHARED_VIDEOS.is_dir() else []
    source = "files" if videos else "generated"
    if not videos:
        videos = generated_videos(Path(scratch.name))
    torch.manual_seed(0)
    model = dvlta_metric.create(args.model, pretrained=args.pretrained, device="cpu")

    whole: list[float] = []
    within: dict[int, list[float]] = {w: [] for w in windows}
    counts: dict[int, int] = dict.fromkeys(windows, 0)
    rates = []
    for path in videos:
        decoded = dvlta_metric.read_video(path)
        rates.append(decoded.fps)
        whole.append(float(model(decoded.frames)))
        for w in windows:
            if decoded.num_frames < 2 * w:
                continue  # fewer than two windows: no spread to measure
            tl = model.timeline(decoded, window_frames=w, batch_size=args.batch_size)
            within[w].append(statistics.pstdev(tl.scores.tolist()))
            counts[w] += len(tl)
        print(f"{Path(path).name}: {decoded.num_frames} frames, whole-video score {whole[-1]:.4f}", file=sys.stderr)
    between = statistics.pstdev(whole)
    rows = {}
    stable = None
    for w in windows:
        if not within[w]:
            continue
        mean_std = statistics.fmean(within[w])
        ratio = mean_std / between if between > 0 else math.inf
        rows[str(w)] = {"videos": len(within[w]), "windows": counts[w], "within_std": mean_std, "ratio": ratio}
        if stable is None and ratio < args.threshold:
            stable = w
    fps = statistics.median([r for r in rates if r]) if any(rates) else None
    result = {
        "benchmark": "timeline_stability",
        "command": "python benchmarks/timeline_stability.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "note": (
            "random weights: measures how much sampling a short window moves the score, not a trained model's "
            "judgement; rerun with --model dvlta-vqa --pretrained once weights are published"
            if not args.pretrained
            else "trained weights"
        ),
        "model": args.model,
        "weights": "trained" if args.pretrained else "random (seed 0)",
        "videos": source,
        "video_count": len(videos),
        "median_fps": fps,
        "no_repeated_frames_from": {
            args.model: structural_minimum(args.model),
            "dvlta-vqa": structural_minimum("dvlta-vqa"),
        },
        "between_video_std": between,
        "threshold_ratio": args.threshold,
        "by_window_frames": rows,
        "shortest_stable_window_frames": stable,
        "shortest_stable_window_s": stable / fps if stable is not None and fps else None,
        "runtime_s": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(result, indent=1) + "\n"
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    scratch.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
