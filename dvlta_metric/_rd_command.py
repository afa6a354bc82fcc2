"""``dvlta-metric rd MANIFEST --out DIR``: score a bitrate ladder and write its rate-quality report.

The subcommand's parser (:func:`add_rd_parser`) and runner (:func:`run_rd`); :mod:`dvlta_metric.cli` registers
them and hands in how it creates models and prints notes, so that ``rd`` builds its model exactly as ``score``
does. The library work is :mod:`dvlta_metric.rd`.

``DIR`` receives :data:`OUTPUT_FILES`: ``encodes.csv`` (one row per encode), ``bd.json`` (BD-rate and
BD-quality of every ordered pair of codec groups, per source and pooled, with the scale used),
``monotonicity.json`` and ``rd.png``. The tool never modifies a file it did not write: ``DIR`` must be new,
empty, or the output of an earlier ``rd`` run (every file in it one of these, carrying this tool's mark);
anything else is refused before the model is built. Each file is written whole to a temporary file in
``DIR`` and then renamed over the old one, so an interrupted run leaves the previous report intact.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import rd
from ._factory import weights_label
from ._results import OUTPUT_ERRORS, OutputWriteError, RefusedOutputError
from .version import __version__

if TYPE_CHECKING:
    from .model import DVLTAVQA

OUTPUT_FILES = ("encodes.csv", "bd.json", "monotonicity.json", "rd.png")
"""The files ``dvlta-metric rd`` writes into ``--out DIR``."""

MARK = "dvlta-metric rd"
"""How this tool marks what it writes: ``written_by`` in the JSON files, the PNG's ``Software`` text."""

_TMP_PREFIX = ".dvlta-rd-"
_CSV_HEAD = "path,source,codec,bitrate_kbps,bitrate_from,score,value,"


class RdUsageError(ValueError):
    """A manifest or ``--out`` folder that cannot be used, or a missing optional dependency (exit status 2)."""


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def add_rd_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``rd`` subcommand to ``dvlta-metric``'s subparsers.

    Args:
        sub: The subparsers of the main parser.

    Returns:
        The ``rd`` parser (the caller sets its ``run``).
    """
    p = sub.add_parser(
        "rd",
        help="score a bitrate ladder: RD curves, BD-rate, monotonicity",
        description="Score the encodes of a manifest (CSV or JSON: path, source, codec[, bitrate_kbps]) and write "
        "encodes.csv, bd.json, monotonicity.json and rd.png into --out DIR.",
        epilog="Exit status: 0 all encodes scored, 1 some encodes failed (named on stderr, left out of the curves), "
        "2 bad usage (also a bad manifest, or an --out folder holding files this command did not write), "
        "74 the report could not be written, 130 interrupted.",
    )
    p.add_argument("manifest", metavar="MANIFEST", type=Path, help="CSV or JSON file listing the encodes")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the report (created)")
    p.add_argument("--model", default="dvlta-vqa-zeroshot", help="as for 'score' (default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--random-weights", action="store_true", help="random weights, for testing only")
    p.add_argument("--seed", type=_at_least(0), default=0, metavar="N", help="seed of --random-weights")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32", help="as for 'score'")
    p.add_argument("--batch-size", type=_at_least(1), default=1, metavar="N", help="videos per model call")
    p.add_argument("--workers", type=_at_least(0), default=2, metavar="N", help="decoding threads (default: 2)")
    p.add_argument(
        "--scale",
        choices=list(rd.SCALES),
        default="score",
        help="quality scale of the BD computation: the score, or its logit (default: %(default)s)",
    )
    p.add_argument("--method", choices=list(rd.METHODS), default="pchip", help="BD interpolation (default: pchip)")
    p.add_argument(
        "--plot-by",
        choices=["source", "pooled"],
        default="source",
        help="rd.png: one panel per source, or all sources in one (default: %(default)s)",
    )
    p.add_argument("--no-plot", action="store_true", help="do not draw rd.png (no matplotlib needed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(attention_kernel="sdpa", compile=False)  # what the model creation of 'score' reads
    return p


def run_rd(
    args: argparse.Namespace, *, create_model: Callable[[argparse.Namespace], DVLTAVQA], note: Callable[[str], None]
) -> int:
    """Run ``dvlta-metric rd``.

    Args:
        args: Parsed arguments of :func:`add_rd_parser`.
        create_model: Builds the model the arguments ask for (the CLI's own, so errors read as for ``score``).
        note: Prints a message on stderr.

    Returns:
        The exit status: 0 every encode scored, 1 some failed.

    Raises:
        RdUsageError: A bad manifest, an ``--out`` that is a file, a missing optional dependency.
        RefusedOutputError: ``--out`` holds files this command did not write.
        OutputWriteError: The report could not be written.
    """
    _check_dependencies(plot=not args.no_plot)
    try:
        encodes = rd.read_manifest(args.manifest)
    except ValueError as err:
        raise RdUsageError(str(err)) from None
    out: Path = args.out
    _check_out(out)
    model = create_model(args)
    results = rd.score_encodes(
        model, encodes, batch_size=args.batch_size, num_workers=args.workers, progress=not args.no_progress
    )
    failed = [r for r in results if not r.ok]
    for r in failed:
        note(f"dvlta-metric: failed: {r.encode.path}: {r.error}")
    info = {"written_by": MARK, "version": __version__, "model": model.config.name, "weights": weights_label(model)}
    bd = rd.bd_table(results, scale=args.scale, method=args.method)
    mono = rd.monotonicity(results)
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write(out / "encodes.csv", _csv(results, args.scale).encode("utf-8", OUTPUT_ERRORS))
        bd_doc = {**info, "rate": "log10 of the video stream's bitrate (kbit/s)", **bd, "encodes_failed": len(failed)}
        _write(out / "bd.json", _json(bd_doc))
        _write(out / "monotonicity.json", _json({**info, **mono}))
        if not args.no_plot and any(r.ok for r in results):
            _plot(results, out / "rd.png", by=args.plot_by, scale=args.scale)
        elif (out / "rd.png").exists():
            (out / "rd.png").unlink()  # ours (checked): a stale plot would not match the new report
    except OSError as err:
        raise OutputWriteError(f"--out {out}: cannot write the report: {err}") from None
    share = mono["share"]
    note(
        f"dvlta-metric: {len(results) - len(failed)} of {len(results)} encodes scored; monotonicity "
        f"{'n/a' if share is None else f'{share:.0%}'} of {mono['pairs']} pairs; report in {out}"
    )
    return 1 if failed else 0


def _check_dependencies(*, plot: bool) -> None:
    """Refuse to start without the optional packages the report needs (before any video is scored)."""
    needed = [("bjontegaard", "BD-rate")] + ([("matplotlib", "rd.png")] if plot else [])
    for module, what in needed:
        try:
            __import__(module)
        except ImportError:
            extra = ", or --no-plot" if module == "matplotlib" else ""
            raise RdUsageError(f'{what} needs {module}: pip install "dvlta-metric[rd]"{extra}') from None


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that is a file, or a folder holding anything this command did not write."""
    if out.exists() and not out.is_dir():
        raise RdUsageError(f"--out {out} is a file; give a folder (it is created when missing)")
    if not out.is_dir():
        return
    for entry in sorted(out.iterdir()):
        if entry.name.startswith(_TMP_PREFIX) and entry.is_file():
            continue  # left by an interrupted run of ours; the next write replaces what it was for
        if entry.name not in OUTPUT_FILES or not _ours(entry):
            raise RefusedOutputError(
                f"--out {out} holds {entry.name}, which dvlta-metric rd did not write; it writes only into a new or "
                f"empty folder, or over its own earlier report ({', '.join(OUTPUT_FILES)}): use another --out folder"
            )


def _ours(path: Path) -> bool:
    """Whether one of :data:`OUTPUT_FILES` carries this tool's mark."""
    if not path.is_file() or path.is_symlink():
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    if path.suffix == ".csv":
        return head.startswith(_CSV_HEAD.encode())
    if path.suffix == ".png":
        return head.startswith(b"\x89PNG") and MARK.encode() in head
    return head.startswith(b"{") and f'"written_by": "{MARK}"'.encode() in head


def _csv(results: list[rd.EncodeResult], scale: str) -> str:
    rows = [r.to_dict(scale) for r in results]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return buf.getvalue()


def _json(doc: dict[str, object]) -> bytes:
    return (json.dumps(doc, indent=2, allow_nan=False, ensure_ascii=True) + "\n").encode()


def _write(path: Path, data: bytes) -> None:
    """Write ``path`` whole: to a temporary file beside it, then renamed over it."""
    tmp = _tmp(path)
    if tmp.is_symlink() or tmp.exists():  # a leftover of a killed run, or something else: never written through
        tmp.unlink()
    try:
        with open(tmp, "xb") as fh:  # created with the user's umask, like any file they write
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _tmp(path: Path) -> Path:
    """The temporary file that becomes ``path`` (one per process and file)."""
    return path.parent / f"{_TMP_PREFIX}{os.getpid()}-{path.name}"


def _plot(results: list[rd.EncodeResult], path: Path, *, by: str, scale: str) -> None:
    tmp = _tmp(path)
    try:
        rd.plot(results, tmp, by=by, scale=scale, metadata={"Software": MARK})
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
