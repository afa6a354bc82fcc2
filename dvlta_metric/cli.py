"""The ``dvlta-metric`` command (also ``python -m dvlta_metric``).

``dvlta-metric score PATH...`` scores video files and directories (searched recursively);
``dvlta-metric list`` shows the registered models. Exit status: 0 when every file was scored, 1 when some
files failed (each is named on stderr with its reason), 2 for bad usage (bad arguments, unknown model or
device, nothing to score, a model that cannot be created), 130 when interrupted.

With ``--output FILE`` each result is appended to ``FILE`` and flushed as soon as it is ready, and a
re-run with the same ``FILE`` skips the files already listed there, so an interrupted run loses nothing
and resumes where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

from ._allocator import tune_allocator
from ._checkpoint import WEIGHTS_NAME
from ._factory import create, parse_model_name
from ._hub import sha256_of
from ._registry import list_models, model_info
from .batch import FileResult
from .errors import WeightsUnavailableError
from .version import __version__
from .video_io import find_videos

BASE_COLUMNS = ["path", "score", "model", "weights", "error", "warning", "seconds"]
"""Columns of every output row; ``--explain`` adds ``weight_<branch>`` columns. ``weights`` says where the
weights came from and the precision (see :func:`weights_label`), so that a resumed file holds the scores of
one model."""


class UsageError(Exception):
    """A problem with how the command was called (exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dvlta-metric`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="dvlta-metric",
        description="Blind video quality assessment with DVLTA-VQA: a score in (0, 1), higher is better.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{score,list}")

    score = sub.add_parser(
        "score",
        help="score video files",
        description="Score video files; directories are searched recursively for video files.",
        epilog="Exit status: 0 all files scored, 1 some files failed, 2 bad usage, 130 interrupted.",
    )
    score.add_argument("paths", nargs="+", metavar="PATH", help="video files or directories")
    score.add_argument(
        "--model",
        default="dvlta-vqa-zeroshot",
        help="a name from 'dvlta-metric list', hf-hub:org/name or local-dir:/path (default: %(default)s)",
    )
    score.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    score.add_argument(
        "--random-weights",
        action="store_true",
        help="use random weights (seeded, the same on every run) instead of trained ones: only for testing the "
        "pipeline, the scores mean nothing",
    )
    score.add_argument(
        "--seed", type=_whole, default=0, metavar="N", help="seed of --random-weights (default: %(default)s)"
    )
    score.add_argument(
        "--batch-size", type=_positive, default=1, metavar="N", help="videos per model call (default: 1)"
    )
    score.add_argument(
        "--workers",
        type=_non_negative,
        default=2,
        metavar="N",
        help="decoding threads; 0 decodes between model calls (default: 2)",
    )
    score.add_argument(
        "--format",
        choices=["table", "json", "csv"],
        default=None,
        help="output format (default: table on stdout; with --output, csv unless FILE ends in "
        ".json/.jsonl/.ndjson). json on stdout is one JSON array; in --output FILE it is JSON Lines, one "
        "object per line",
    )
    score.add_argument(
        "--output",
        metavar="FILE",
        type=Path,
        help="append each result to FILE (csv or JSON Lines) as soon as it is ready; files already in "
        "FILE, scored or failed, are skipped, so a re-run resumes an interrupted one (delete a row to "
        "score that file again)",
    )
    score.add_argument(
        "--precision",
        choices=["fp32", "fp16", "bf16"],
        default="fp32",
        help="run the Swin3D and CLIP backbones in half precision (scores move slightly; docs/benchmarks.md has "
        "the measurements); on CUDA bf16 computes in fp16; bf16 also speeds up CPUs with native bfloat16, fp16 is "
        "slow on CPUs",
    )
    score.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the branches (the first batch waits for the compilation; for GPUs and long runs)",
    )
    score.add_argument(
        "--attention-kernel",
        choices=["sdpa", "flex"],
        default="sdpa",
        help="window attention kernel of the fragment backbone: flex (FlexAttention, torch>=2.5) is faster than "
        "sdpa on GPUs and slower on CPUs",
    )
    score.add_argument("--explain", action="store_true", help="add the fusion weight of each branch")
    score.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    score.set_defaults(run=_score)

    models = sub.add_parser("list", help="list the registered models", description="List the registered models.")
    models.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    models.set_defaults(run=_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on errors (2) and on --help / --version (0)
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        return int(args.run(args))
    except UsageError as err:
        print(f"dvlta-metric: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before scoring began (finding files, loading the model): nothing to resume
        print("\ndvlta-metric: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`dvlta-metric list | head`): not an error of ours
        # so that the interpreter's final flush does not fail too; stdout may have no file descriptor
        # (e.g. captured in tests)
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# ---------------------------------------------------------------------------------------------- list
def _list(args: argparse.Namespace) -> int:
    rows: list[dict[str, object]] = [
        {"name": name, "weights": model_info(name).status, "description": model_info(name).description}
        for name in list_models()
    ]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, ["name", "weights", "description"])
    return 0


# ---------------------------------------------------------------------------------------------- score
def _score(args: argparse.Namespace) -> int:
    try:  # the name is checked before any file is read; a Hub or local model is read when it is created
        parsed = parse_model_name(args.model)
        if parsed.kind == "registry":
            model_info(parsed.target)
    except ValueError as err:
        raise UsageError(str(err)) from None
    files = find_videos(args.paths)
    if not files:
        raise UsageError(f"no video files found in {', '.join(args.paths)}")
    fmt = _output_format(args.format, args.output)
    if args.output:
        _check_output(args.output)
    done = _read_previous(args.output, fmt) if args.output else {}
    todo = [f for f in files if _key(f) not in done]
    failed = sum(1 for f in files if _key(f) in done and done[_key(f)].get("error"))
    if args.output and len(todo) < len(files):
        _note(f"dvlta-metric: {len(files) - len(todo)} of {len(files)} files are already in {args.output}")
    if not todo:
        return 1 if failed else 0

    try:
        model = create(
            args.model, pretrained=not args.random_weights, device=args.device, precision=args.precision, seed=args.seed
        )
    except WeightsUnavailableError as err:  # the library's advice, in this command's words
        raise UsageError(f"{err} (on the command line: --random-weights)") from None
    except Exception as err:
        raise UsageError(str(err)) from None
    try:
        model.set_attention_kernel(args.attention_kernel)
    except RuntimeError as err:  # flex on a torch without FlexAttention
        raise UsageError(str(err)) from None
    if args.compile:
        model.compile_branches()
    if model.device.type == "cpu":
        tune_allocator()  # this process only scores: keep activations' memory instead of re-faulting it
    others = {str(row.get("model")) for row in done.values()} - {model.config.name}
    if others:
        raise UsageError(
            f"{args.output} holds scores of model {min(others)!r}, not {model.config.name!r}: use another --output file"
        )
    weights = weights_label(args.model, random_weights=args.random_weights, precision=args.precision, seed=args.seed)
    other_weights = {str(row["weights"]) for row in done.values() if row.get("weights")} - {weights}
    if other_weights:
        raise UsageError(
            f"{args.output} holds scores made with weights {min(other_weights)!r}, not {weights!r}: use another "
            "--output file"
        )
    columns = BASE_COLUMNS + ([f"weight_{b}" for b in model.branches] if args.explain else [])
    if args.explain and fmt == "csv" and args.output and done:
        header = _csv_header(args.output)
        if not set(columns) <= set(header):
            raise UsageError(
                f"--explain adds the columns {[c for c in columns if c not in header]}, which {args.output} lacks "
                "(it was written without --explain): use another --output file, or drop --explain"
            )
    sink = _Sink(fmt, args.output, columns, extra={"weights": weights})
    written = 0
    try:
        results = model.score_files(
            todo,
            batch_size=args.batch_size,
            num_workers=args.workers,
            progress=not args.no_progress,
            explain=args.explain,
        )
        for result in results:
            sink.add(result)
            written += 1
            if result.error:
                failed += 1
                _note(f"dvlta-metric: failed: {result.path}: {_without_path(result.error, result.path)}")
            elif result.warning:
                _note(f"dvlta-metric: warning: {result.path}: {result.warning}")
    except KeyboardInterrupt:
        where = f" to {args.output}; run the same command again to resume" if args.output else ""
        print(f"\ndvlta-metric: interrupted after {written} of {len(todo)} files{where}", file=sys.stderr)
        return 130
    finally:
        sink.close()
    return 1 if failed else 0


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def weights_label(model: str, *, random_weights: bool, precision: str, seed: int = 0) -> str:
    """Where a run's weights come from, and its precision, as recorded in the ``weights`` column.

    Random weights are ``"random (seed <seed>), <precision>"``; a ``local-dir:`` folder is named by its
    absolute path and the first 12 hex digits of its ``model.safetensors``'s SHA-256 (retraining into the same
    folder changes it); ``hf-hub:`` names are kept as given and registry names by their full name (an alias
    such as ``dvlta-vqa-konvid`` is recorded as ``dvlta-vqa.konvid``).

    Args:
        model: The ``--model`` argument, a name :func:`~dvlta_metric._factory.parse_model_name` accepts.
        random_weights: ``--random-weights``.
        precision: ``--precision``.
        seed: ``--seed``.

    Returns:
        The label.
    """
    if random_weights:
        return f"random (seed {seed}), {precision}"
    parsed = parse_model_name(model)
    if parsed.kind == "local-dir":
        folder = Path(parsed.target).resolve()
        weights = folder / WEIGHTS_NAME
        digest = sha256_of(weights)[:12] if weights.is_file() else "?"
        return f"local-dir:{folder} (sha256 {digest}), {precision}"
    return f"{parsed.target if parsed.kind == 'registry' else model}, {precision}"


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8", errors=OUTPUT_ERRORS) as fh:
        return next(csv.reader(fh), [])


def _positive(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _note(message: str) -> None:
    """Print to stderr without breaking the progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


def _without_path(error: str, path: str) -> str:
    """``"ValueError: a.mp4: bad"`` -> ``"ValueError: bad"`` (the path is printed once already)."""
    kind, sep, message = error.partition(": ")
    return f"{kind}{sep}{message.removeprefix(f'{path}: ')}"


def _key(path: str | os.PathLike[str]) -> str:
    """How a file is recognised in an earlier output."""
    return os.path.normcase(os.path.abspath(path))


def _output_format(fmt: str | None, output: Path | None) -> str:
    if output is None:
        return fmt or "table"
    if fmt == "table":
        raise UsageError("--output writes csv or json (JSON Lines); the table format is for the terminal")
    if fmt:
        return fmt
    return "json" if output.suffix.lower() in {".json", ".jsonl", ".ndjson"} else "csv"


OUTPUT_ERRORS = "surrogateescape"
"""How ``--output`` files encode file names that are not valid UTF-8: their bytes are kept as they are, so
such a file gets its row and is recognised again on resume (in JSON it is a ``\\udcXX`` escape)."""

RESUME_COLUMNS = ("path", "score", "model", "error")
"""Columns a CSV ``--output`` file must have for new rows to be appended to it."""


def _check_output(output: Path) -> None:
    """Refuse an ``--output`` that cannot be written, before any model is built."""
    if output.is_dir():
        raise UsageError(f"--output {output} is a directory: give a file name, such as {output / 'scores.csv'}")
    existing = next(p for p in (output.parent, *output.parent.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"--output {output}: {existing} is a file, not a directory")
    target = output if output.exists() else existing
    if not os.access(target, os.W_OK):
        raise UsageError(f"--output {output}: {target} is not writable")


def _read_previous(output: Path, fmt: str) -> dict[str, dict[str, object]]:
    """Rows already in ``output`` by file key; a partly written last line is cut off first.

    A file holding only blank lines is emptied (it is written anew); a CSV whose header lacks
    :data:`RESUME_COLUMNS` is refused, since rows appended under it would lose their scores.
    """
    if not output.exists() or output.stat().st_size == 0:
        return {}
    with output.open("rb") as fh:
        blank = not any(line.strip() for line in fh)  # stops at the first line with content
    if blank:
        output.write_bytes(b"")
        return {}
    _drop_partial_line(output)
    try:
        with output.open(newline="", encoding="utf-8", errors=OUTPUT_ERRORS) as fh:
            if fmt == "csv":
                reader = csv.DictReader(fh)
                lacking = [c for c in RESUME_COLUMNS if c not in (reader.fieldnames or [])]
                if lacking:
                    looks_json = output.suffix.lower() in {".json", ".jsonl", ".ndjson"}
                    why = (
                        "the file name says JSON Lines: drop --format csv, or use another --output file"
                        if looks_json
                        else "it is not a CSV file written by dvlta-metric: use another --output file"
                    )
                    raise UsageError(
                        f"cannot resume from {output}: its CSV header {reader.fieldnames} lacks {lacking}; {why}"
                    )
                rows = list(reader)
            else:
                rows = [json.loads(line) for line in fh if line.strip()]
    except (ValueError, csv.Error) as err:
        raise UsageError(f"cannot resume from {output}: it is not a {fmt} file from this tool ({err})") from None
    if rows and not all(isinstance(r, dict) and "path" in r for r in rows):
        raise UsageError(f"cannot resume from {output}: its rows have no 'path'")
    return {_key(str(r["path"])): r for r in rows}


def _drop_partial_line(path: Path) -> None:
    """Cut a last line that an interrupted writer left without its newline."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


class _Sink:
    """Where results go: appended to ``--output`` one by one, or printed to stdout."""

    def __init__(
        self, fmt: str, output: Path | None, columns: list[str], extra: dict[str, object] | None = None
    ) -> None:
        self.fmt, self.output, self.columns, self.extra = fmt, output, columns, dict(extra or {})
        self.rows: list[dict[str, object]] = []
        self.fh: IO[str] | None = None
        self.csv: csv.DictWriter[str] | None = None
        if output is not None:
            fresh = not output.exists() or output.stat().st_size == 0
            if fmt == "csv" and not fresh:
                with output.open(newline="", encoding="utf-8", errors=OUTPUT_ERRORS) as fh:
                    self.columns = next(csv.reader(fh))  # keep the file's own header
            try:
                output.parent.mkdir(parents=True, exist_ok=True)
                self.fh = output.open("a", newline="", encoding="utf-8", errors=OUTPUT_ERRORS)
            except OSError as err:
                raise UsageError(f"cannot write --output {output}: {err.strerror or err}") from None
            if fmt == "csv":
                self._csv_writer(self.fh, header=fresh)
        elif fmt == "csv":
            self._csv_writer(sys.stdout, header=True)

    def _csv_writer(self, fh: IO[str], header: bool) -> None:
        self.csv = csv.DictWriter(fh, self.columns, extrasaction="ignore", lineterminator="\n")
        if header:
            self.csv.writeheader()
            fh.flush()

    def add(self, result: FileResult) -> None:
        row = result.to_dict()
        row = {**{k: v for k, v in row.items() if k not in self.extra}, **self.extra}
        row = {k: row[k] for k in [*BASE_COLUMNS, *row] if k in row}  # the columns' order, then the rest
        if self.csv is not None:
            self.csv.writerow({k: "" if v is None else v for k, v in row.items()})
            (self.fh or sys.stdout).flush()
        elif self.fh is not None:
            self.fh.write(json.dumps(row) + "\n")
            self.fh.flush()
        else:
            self.rows.append(row)

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
        elif self.fmt == "json":
            print(json.dumps(self.rows, indent=2))
        elif self.fmt == "table" and self.rows:
            _print_table(
                [_table_row(r) for r in self.rows],
                [c for c in self.columns if c not in {"weights", "warning", "seconds", "error"}] + ["error"],
            )


def _table_row(row: dict[str, object]) -> dict[str, object]:
    out = dict(row)
    for key, value in row.items():
        if isinstance(value, float):
            out[key] = f"{value:.4f}"
    out["score"] = out["score"] if row["score"] is not None else "-"
    out["error"] = row["error"] or (f"warning: {row['warning']}" if row.get("warning") else "")
    return out


def _print_table(rows: Iterable[dict[str, object]], columns: list[str]) -> None:
    """Print rows as left-aligned columns with a header."""
    cells = [[str(c).upper() for c in columns]] + [
        ["" if r.get(c) is None else str(r[c]) for c in columns] for r in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        print("  ".join(text.ljust(w) for text, w in zip(line, widths)).rstrip())
