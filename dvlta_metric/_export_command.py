"""``dvlta-metric export --model NAME --format {pt2,onnx} --output FILE``: write the network over views to a file.

The subcommand's parser (:func:`add_export_parser`) and runner (:func:`run_export`); :mod:`dvlta_metric.cli`
registers them and hands in how it creates models, so that ``export`` builds its model exactly as ``score`` does.
The file is :func:`~dvlta_metric.export.export_model`'s; the command prints what it wrote as one JSON object.
Like the other commands' outputs, ``--output`` replaces only a file this command wrote (one that carries its
mark, :func:`~dvlta_metric.export.read_metadata`); anything else there is left alone.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ._results import OutputWriteError, RefusedOutputError
from .export import (
    EXPORT_FORMATS,
    check_target,
    export_format,
    export_metadata,
    export_model,
    read_metadata,
    require_onnx,
)

if TYPE_CHECKING:
    from .model import DVLTAVQA


class ExportUsageError(ValueError):
    """Arguments or a setup that cannot give the file asked for (exit status 2)."""


def add_export_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``export`` subcommand to ``dvlta-metric``'s subparsers.

    Returns:
        The ``export`` parser (the caller sets its ``run``).
    """
    p = sub.add_parser(
        "export",
        help="export the network over views to a torch.export program (.pt2) or an ONNX file",
        description="Write the model's network over views (branches, fusion and score; not the reading and view "
        "cutting) to a torch.export program (.pt2) or an ONNX file, with a dynamic batch dimension. Prints what it "
        "wrote as JSON. The Export docs page shows how to run the file.",
        epilog="Exit status: 0 written, 2 bad usage (also an --output file that dvlta-metric export did not write), "
        "74 the file could not be written (a full disk), 130 interrupted.",
    )
    p.add_argument("--model", default="dvlta-vqa-zeroshot", help="as for 'score' (default: %(default)s)")
    p.add_argument(
        "--format",
        choices=list(EXPORT_FORMATS),
        default=None,
        help='pt2 (torch.export.save) or onnx (needs pip install "dvlta-metric[export]"); default: from the '
        "--output suffix",
    )
    p.add_argument(
        "--output",
        required=True,
        type=Path,
        metavar="FILE",
        help="the file to write (.pt2 or .onnx); an existing FILE is replaced only if dvlta-metric export wrote it",
    )
    p.add_argument("--device", default="cpu", help="device the model is traced on (default: %(default)s)")
    p.add_argument("--random-weights", action="store_true", help="random weights, for testing only")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of --random-weights")
    p.set_defaults(precision="fp32", attention_kernel="sdpa", compile=False)
    return p


def run_export(args: argparse.Namespace, *, create_model: Callable[[argparse.Namespace], DVLTAVQA]) -> int:
    """Run ``dvlta-metric export``: write the file and print ``{"path", "format", "model", "weights", "inputs",
    "output", "bytes", "seconds"}`` as JSON.

    Raises:
        ExportUsageError: For a format and a file name that disagree or name no format, an ``--output`` that cannot
            be written, or ONNX without its packages.
        RefusedOutputError: For an ``--output`` file that this command did not write.
        OutputWriteError: When the file could not be written.
    """
    output: Path = args.output
    try:
        fmt = export_format(args.format, output)
        check_target(output)
    except ValueError as err:
        raise ExportUsageError(f"--output {output}: {err}") from None
    if fmt == "onnx":
        try:
            require_onnx()
        except ImportError as err:
            raise ExportUsageError(str(err)) from None
    if output.exists() and read_metadata(output) is None:
        raise RefusedOutputError(
            f"--output {output} exists and was not written by dvlta-metric export; it is left as it is: move it "
            "away, or give another --output file"
        )
    model = create_model(args)
    start = time.perf_counter()
    try:
        export_model(model, output, format=fmt)
    except ImportError as err:
        raise ExportUsageError(str(err)) from None
    except OSError as err:
        raise OutputWriteError(f"--output {output}: cannot write the file: {err.strerror or err}") from None
    seconds = time.perf_counter() - start
    meta = export_metadata(model, fmt)
    report = {"path": str(output), "format": fmt, "model": meta["model"], "weights": meta["weights"]}
    report |= {"inputs": meta["inputs"], "output": meta["output"]}
    report |= {"bytes": output.stat().st_size, "seconds": round(seconds, 1)}
    print(json.dumps(report))
    return 0
