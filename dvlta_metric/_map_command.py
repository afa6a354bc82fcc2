"""``dvlta-metric map VIDEO --out DIR``: draw a video's quality map over its frames.

The subcommand's parser (:func:`add_map_parser`) and runner (:func:`run_map`); :mod:`dvlta_metric.cli` registers
them and hands in how it creates models, so that ``map`` builds its model exactly as ``score`` does. One forward
pass gives the score and the map (:meth:`~dvlta_metric.model.DVLTAVQA.quality_map`; ``--isolated`` adds a second
fragment-branch pass with each cell on its own); the frames drawn are then
decoded once more at full resolution and written as PNGs into ``DIR`` or as one MP4 when ``--out`` ends in
``.mp4`` (:func:`~dvlta_metric.quality_map.write_overlays`). What a map can and cannot be trusted for is on the
"Trustworthy scores" docs page.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ._results import OutputWriteError
from .quality_map import FILL_MODES, check_overlay_output, write_overlays
from .uncertainty import MAX_VIEWS
from .video_io import read_video

if TYPE_CHECKING:
    from .model import DVLTAVQA


class MapUsageError(ValueError):
    """A model, input or ``--out`` that cannot give the map asked for (exit status 2)."""


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def view_count(text: str) -> int:
    """``--views K``: a whole number from 1 to :data:`~dvlta_metric.uncertainty.MAX_VIEWS` (an ``argparse`` type)."""
    value = _at_least_one(text)
    if value > MAX_VIEWS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_VIEWS} (views per video), got {value}")
    return value


def add_map_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``map`` subcommand to ``dvlta-metric``'s subparsers.

    Returns:
        The ``map`` parser (the caller sets its ``run``).
    """
    p = sub.add_parser(
        "map",
        help="draw a video's quality map over its frames (PNG per frame or an MP4)",
        description="Score one video and draw where its features lean to 'low quality' (red) or 'high quality' "
        "(green). Prints the score as JSON; writes PNGs into --out DIR, or one MP4 when --out ends in .mp4.",
    )
    p.add_argument("video", metavar="VIDEO", type=Path, help="the video file")
    p.add_argument("--out", required=True, type=Path, metavar="DIR|FILE.mp4", help="folder for PNGs, or an .mp4")
    p.add_argument("--model", default="dvlta-vqa-zeroshot", help="as for 'score' (default: %(default)s)")
    p.add_argument(
        "--source",
        choices=["fragments", "clip"],
        default=None,
        help="fragments (default when the model has the fragment branch) or clip (CLIP patch tokens)",
    )
    p.add_argument(
        "--fill",
        choices=list(FILL_MODES),
        default="patch",
        help="draw each value on its patch (default) or over its grid cell",
    )
    p.add_argument(
        "--isolated",
        action="store_true",
        help="fragment map with each cell encoded from its own pixels alone (local; one more fragment-branch pass)",
    )
    p.add_argument(
        "--views", type=view_count, default=1, metavar="K", help=f"scoring views on the map (1 to {MAX_VIEWS})"
    )
    p.add_argument("--frames", type=_at_least_one, default=8, metavar="N", help="most frames drawn (default: 8)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--random-weights", action="store_true", help="random weights, for testing only")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of --random-weights")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32", help="as for 'score'")
    p.set_defaults(attention_kernel="sdpa", compile=False)
    return p


def run_map(args: argparse.Namespace, *, create_model: Callable[[argparse.Namespace], DVLTAVQA]) -> int:
    """Run ``dvlta-metric map``: print ``{"path", "score", "source", "isolated", "files"}`` as JSON; write overlays.

    ``--out`` is checked before the model is built: it must not be the video itself, a symbolic link, or an
    existing file that this tool did not write (:func:`~dvlta_metric.quality_map.write_overlays`).

    Raises:
        MapUsageError: The video is missing or cannot be mapped (the model lacks the branch of the map asked for,
            the file cannot be read), or ``--out`` is refused.
        OutputWriteError: An overlay could not be written (e.g. a full disk).
    """
    _check_paths(args.video, args.out)
    model = create_model(args)
    source = args.source or ("fragments" if "bvfe" in model.branches else "clip")
    if args.isolated and source != "fragments":
        raise MapUsageError("--isolated is for the fragment map; it cannot be used with --source clip")
    try:
        qmap = model.quality_map(args.video, source=source, views=args.views, isolated=args.isolated)
        frames = qmap.frame_indices()
        step = max(1, len(frames) // args.frames)
        chosen = frames[::step][: args.frames]
        video = read_video(args.video, select=lambda n: chosen)
    except (ValueError, TypeError, OSError) as err:  # a file that cannot be read or mapped
        raise MapUsageError(f"{args.video}: {err}") from None
    try:
        files = write_overlays(qmap, video, args.out, frames=chosen, fill=args.fill)
    except (ValueError, TypeError) as err:
        raise MapUsageError(f"--out: {err}") from None
    except OSError as err:
        raise OutputWriteError(f"cannot write the overlays to {args.out}: {err.strerror or err}") from None
    score = qmap.score
    out = {"path": str(args.video), "score": score, "source": source, "isolated": qmap.isolated}
    print(json.dumps({**out, "files": [str(f) for f in files]}))
    return 0


def _check_paths(video: Path, out: Path) -> None:
    """Refuse a missing video, and an ``--out`` that is the video or would be refused by ``write_overlays``."""
    if not video.exists():
        raise MapUsageError(f"{video}: no such file")
    if video.is_dir():
        raise MapUsageError(f"{video} is a folder: give one video file")
    if os.path.realpath(out) == os.path.realpath(video) or (out.exists() and os.path.samefile(out, video)):
        raise MapUsageError(f"--out {out} is the input video {video}: give another path for the overlays")
    try:
        check_overlay_output(out)
    except ValueError as err:
        raise MapUsageError(f"--out: {err}") from None
