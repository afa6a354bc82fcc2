"""The ``dvlta-metric`` command (also ``python -m dvlta_metric``).

``dvlta-metric score PATH...`` scores video files and directories (searched recursively);
``dvlta-metric list`` shows the registered models; ``dvlta-metric rd`` scores a bitrate ladder
(:mod:`dvlta_metric._rd_command`); ``dvlta-metric export`` writes the network over views to a ``.pt2`` or ONNX
file (:mod:`dvlta_metric._export_command`). Exit status: 0 when every file was scored, 1 when some
files failed (each is named on stderr with its reason), 2 for bad usage (bad arguments, unknown model or
device, nothing to score, a model that cannot be created, an ``--output`` file that is not a results file or
is locked by another run), 74 when results cannot be written (a full disk), 130 when interrupted.

With ``--output FILE`` each result is appended to ``FILE`` as soon as it is ready, and a re-run with the same
``FILE`` skips the files already listed there, so an interrupted run loses nothing and resumes where it
stopped; :mod:`dvlta_metric._results` handles the file (lock, checks, repair, writes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

from ._allocator import tune_allocator
from ._checkpoint import CONFIG_NAME, WEIGHTS_NAME, read_config
from ._cli_inputs import (
    DEFAULT_WORKERS,
    STDIN,
    InputError,
    PreparedInputs,
    check_raw_options,
    decode_kwargs,
    prepared_inputs,
    read_file_list,
)
from ._export_command import ExportUsageError, add_export_parser, run_export
from ._factory import create, parse_model_name, weights_label
from ._hub import sha256_of
from ._map_command import MapUsageError, add_map_parser, run_map, view_count
from ._parquet_results import PARQUET_SUFFIX, ParquetResults, utf8_text
from ._ray_command import RayUsageError, add_ray_arguments, check_ray_arguments, run_ray
from ._rd_command import RdUsageError, add_rd_parser, run_rd
from ._registry import list_models, model_info
from ._results import (
    BASE_COLUMNS,
    EXIT_WRITE_ERROR,
    JSON_SUFFIXES,
    OUTPUT_ERRORS,
    OutputWriteError,
    Previous,
    RefusedOutputError,
    ResultsFile,
    csv_line,
    finite_or_error,
    resume_key,
)
from ._timeline_output import TimelineWriter, matplotlib_missing, window_seconds
from .batch import FileResult
from .calibration import Calibration
from .color import COLOR_MATRICES, COLOR_RANGES
from .errors import WeightsUnavailableError
from .model import DVLTAVQA
from .raw_video import DEFAULT_RAW_FPS, RAW_PIXEL_FORMATS, parse_size
from .sharding import parse_shard, shard_paths
from .torchcodec_io import check_torchcodec
from .uncertainty import MAX_VIEWS
from .version import __version__
from .video_io import (
    DECODERS,
    DEFAULT_DECODE_TIMEOUT_S,
    DEFAULT_MAX_MEGAPIXELS,
    VIDEO_EXTENSIONS,
    TransientError,
    check_decoder_options,
    find_videos,
    read_limits,
    read_options,
)


class UsageError(Exception):
    """A problem with how the command was called (exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dvlta-metric`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="dvlta-metric",
        description="Blind video quality assessment with DVLTA-VQA: a score in (0, 1), higher is better.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{score,list,rd,map,export}")

    score = sub.add_parser(
        "score",
        help="score video files",
        description="Score video files; directories are searched recursively for video files.",
        epilog="Exit status: 0 all files scored, 1 some files failed, 2 bad usage (also an --output file that is not "
        "a results file, or is locked by another run), 74 results could not be written (a full disk), 130 interrupted.",
    )
    score.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="video files or directories; - reads a Y4M stream from standard input; .yuv files are raw video "
        "(see --size)",
    )
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
        "--batch-size",
        type=_positive,
        default=None,
        metavar="N",
        help="videos per model call (default: 1; with --ray 16 on GPUs, 1 on CPUs)",
    )
    score.add_argument(
        "--workers",
        type=_non_negative,
        default=DEFAULT_WORKERS,
        metavar="N",
        help="decoding threads; 0 decodes between model calls (default: 2)",
    )
    score.add_argument(
        "--max-megapixels",
        type=_positive_number,
        default=DEFAULT_MAX_MEGAPIXELS,
        metavar="MP",
        help="pixel budget: most decoded RGB megapixels one video may hold at once; a file that needs more is "
        f"an error row (default: {DEFAULT_MAX_MEGAPIXELS:g}; inf: no limit)",
    )
    score.add_argument(
        "--decode-timeout",
        type=_positive_number,
        default=DEFAULT_DECODE_TIMEOUT_S,
        metavar="S",
        help=f"most seconds decoding one file may take before it is an error row (default: "
        f"{DEFAULT_DECODE_TIMEOUT_S:g}; inf: no limit)",
    )
    score.add_argument(
        "--format",
        choices=["table", "json", "csv", "parquet"],
        default=None,
        help="output format (default: table on stdout; with --output, csv unless FILE ends in "
        ".json/.jsonl/.ndjson, or parquet if it ends in .parquet). json on stdout is one JSON array; in --output "
        "FILE it is JSON Lines, one object per line; parquet is a directory of part files (needs pyarrow)",
    )
    score.add_argument(
        "--output",
        metavar="FILE",
        type=Path,
        help="append each result to FILE (csv or JSON Lines) as soon as it is ready, or to the directory "
        "FILE.parquet (Parquet part files, written whole every 1000 rows or as a result arrives 10 s after the "
        "oldest); files already in FILE, scored or failed, are skipped, so a re-run resumes an interrupted one "
        "(delete a row to score that file again)",
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
    _add_input_arguments(score)
    score.add_argument(
        "--shard",
        type=_shard,
        metavar="I/N",
        help="score only shard I of N (counted from 0) of the files: a file's shard is a hash of its path as "
        "listed, so N jobs given the same list (e.g. a SLURM array) score every file exactly once; give each "
        "its own --output",
    )
    add_ray_arguments(score, _positive)
    score.add_argument("--explain", action="store_true", help="add the fusion weight of each branch")
    score.add_argument(
        "--views",
        type=view_count,
        default=1,
        metavar="K",
        help=f"score K views of each file (1 to {MAX_VIEWS}: other fragment offsets and clip starts) and report "
        "their mean; K >= 2 adds the columns spread, ci_low and ci_high (95%% interval of the mean)",
    )
    score.add_argument(
        "--scale",
        choices=["score", "mos"],
        default="score",
        help="mos: add a mos column, the score mapped by the model's MOS calibration (an error for a model "
        "without one)",
    )
    score.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    score.add_argument(
        "--timeline",
        type=window_seconds,
        metavar="SECONDS",
        help="also score consecutive windows of SECONDS each (model.timeline) and write one JSON log per video, "
        "VMAF-style (segments plus pooled mean, harmonic mean, min, max, percentiles), into --timeline-out",
    )
    score.add_argument(
        "--timeline-out",
        type=Path,
        metavar="DIR",
        help="folder of the --timeline logs, one <video file name>.timeline.json per video; a file there that "
        "dvlta-metric did not write is never replaced",
    )
    score.add_argument(
        "--timeline-plot",
        action="store_true",
        help="also draw each video's curve as <video file name>.timeline.png in --timeline-out (needs matplotlib)",
    )
    score.set_defaults(run=_score)

    models = sub.add_parser("list", help="list the registered models", description="List the registered models.")
    models.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    models.set_defaults(run=_list)
    add_rd_parser(sub).set_defaults(run=_rd)
    add_map_parser(sub).set_defaults(run=_map)
    add_export_parser(sub).set_defaults(run=_export)
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
    except (UsageError, RefusedOutputError) as err:
        print(f"dvlta-metric: error: {terminal_text(str(err))}", file=sys.stderr)
        return 2
    except OutputWriteError as err:  # the CSV header of a new --output file, or stdout
        print(f"dvlta-metric: error: {terminal_text(str(err))}", file=sys.stderr)
        return EXIT_WRITE_ERROR
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
        _write_stdout(json.dumps(rows, indent=2) + "\n")
    else:
        _print_table(rows, ["name", "weights", "description"])
    return 0


# ---------------------------------------------------------------------------------------------- rd
def _rd(args: argparse.Namespace) -> int:
    """``dvlta-metric rd`` (:mod:`dvlta_metric._rd_command`), with the model creation and notes of ``score``."""
    try:
        return run_rd(args, create_model=_create, note=_note)
    except RdUsageError as err:
        raise UsageError(str(err)) from None


def _map(args: argparse.Namespace) -> int:
    """``dvlta-metric map`` (:mod:`dvlta_metric._map_command`), with the model creation of ``score``."""
    try:
        return run_map(args, create_model=_create)
    except MapUsageError as err:
        raise UsageError(str(err)) from None


def _export(args: argparse.Namespace) -> int:
    """``dvlta-metric export`` (:mod:`dvlta_metric._export_command`), with the model creation of ``score``."""
    try:
        return run_export(args, create_model=_create)
    except ExportUsageError as err:
        raise UsageError(str(err)) from None


# ---------------------------------------------------------------------------------------------- score
def _score(args: argparse.Namespace) -> int:
    try:  # the name is checked before any file is read; a Hub or local model is read when it is created
        parsed = parse_model_name(args.model)
        if parsed.kind == "registry":
            model_info(parsed.target)
    except ValueError as err:
        raise UsageError(str(err)) from None
    files = _input_files(args)
    _check_decoder(args)
    fmt = _output_format(args.format, args.output)
    if args.output is not None:
        _check_output(args.output, fmt)
    try:
        check_ray_arguments(args, files, fmt)
    except RayUsageError as err:
        raise UsageError(str(err)) from None
    if args.shard is not None:
        index, count = args.shard
        listed = len(files)
        files = shard_paths(files, index, count)
        _note(f"dvlta-metric: shard {index}/{count}: {len(files)} of {listed} files")
        if not files:
            return 0
    if args.ray is not None:
        _check_ray_output(args)
        try:
            return run_ray(args, files, note=_note)
        except RayUsageError as err:
            raise UsageError(str(err)) from None
        except KeyboardInterrupt:
            _note(f"\ndvlta-metric: interrupted; the results written to {args.output} are kept: run again to resume")
            return 130
    args.batch_size = args.batch_size or 1
    raw = (*args.size, args.pix_fmt, args.fps) if args.size else None
    try:
        with prepared_inputs([str(f) for f in files], raw, args.decode_timeout) as inputs:
            if args.output is None:
                return _score_files(args, files, fmt, None, Previous(), inputs)
            if fmt == "parquet":
                try:
                    parquet = ParquetResults.open(args.output)
                except ImportError as err:
                    raise UsageError(str(err)) from None
                with parquet as results:  # locked until the run ends
                    return _score_files(args, files, fmt, results, results.read(), inputs)
            with ResultsFile.open(args.output, fmt) as results:  # locked until the run ends
                return _score_files(args, files, fmt, results, results.read(), inputs)
    except InputError as err:
        raise UsageError(str(err)) from None


def _score_files(
    args: argparse.Namespace,
    files: list[str],
    fmt: str,
    results: ResultsFile | ParquetResults | None,
    previous: Previous,
    inputs: PreparedInputs | None = None,
) -> int:
    """Score the files not in ``previous`` into ``results`` (or stdout); returns the exit status."""
    inputs = inputs or PreparedInputs()
    unique = {}  # a file named twice (a link and its target, a folder given twice) is scored once
    for f in files:
        unique.setdefault(resume_key(f), f)
    if len(unique) < len(files):
        _note(f"dvlta-metric: {len(files) - len(unique)} paths name a file already listed: each file is scored once")
    files, keys = list(unique.values()), list(unique)
    if fmt == "parquet":  # Parquet stores text as UTF-8: names that are not are kept with \xNN escapes
        keys = [utf8_text(key) for key in keys]
    todo = [f for f, key in zip(files, keys) if key not in previous.keys or str(f) == STDIN]  # stdin: every run
    timelines = _timeline_writer(args, files)  # log names from every file: the same names on a resumed run
    failed = sum(1 for key in keys if key in previous.failed)
    known = known_weights_label(
        args.model, random_weights=args.random_weights, precision=args.precision, seed=args.seed
    )
    if known is not None:  # the calibration of --scale mos is known once the model is read
        known = None if args.scale == "mos" else run_label(known, views=args.views, calibration=None)
    name = _model_name(args.model)
    _check_same_model(args.output, previous, name, known)  # also when nothing is left to score
    if args.output and len(todo) < len(files):
        _note(f"dvlta-metric: {len(files) - len(todo)} of {len(files)} files are already in {args.output}")
    if not todo and ((name is not None and known is not None) or not previous.keys):
        return 1 if failed else 0
    model = _create(args)
    weights = weights_label(model)  # with the Hub commit actually loaded
    if args.scale == "mos" and model.calibration is None:
        raise UsageError(f"--scale mos: model {args.model!r} has no MOS calibration; use it without --scale mos")
    calibration = model.calibration if args.scale == "mos" else None
    label = run_label(weights, views=args.views, calibration=calibration)
    _check_same_model(args.output, previous, model.config.name, label)
    if not todo:
        return 1 if failed else 0
    columns = BASE_COLUMNS + ([f"weight_{b}" for b in model.branches] if args.explain else [])
    if args.views > 1:
        columns = [*columns, "spread", "ci_low", "ci_high"]
        if previous.header is not None and "spread" not in previous.header:
            raise UsageError(
                f"--views {args.views} adds interval columns, which {args.output} lacks: use another --output file"
            )
    to_mos: Callable[[float], float] | None = None
    if calibration is not None:
        to_mos = calibration.map_score
        columns = [*columns, "mos"]

        if previous.header is not None and "mos" not in previous.header:
            raise UsageError(f"--scale mos adds a mos column, which {args.output} lacks: use another --output file")
    if args.explain and previous.header is not None:
        lacking = [c for c in columns if c.startswith("weight_") and c not in previous.header]
        if lacking:
            raise UsageError(
                f"--explain adds the columns {lacking}, which {args.output} lacks (it was written without "
                "--explain): use another --output file, or drop --explain"
            )
    written = 0
    try:
        sink = _Sink(fmt, results, columns, previous.header, extra={"weights": label}, to_mos=to_mos)
        try:
            scored = model.score_files(
                [inputs.item(str(f)) for f in todo],
                batch_size=args.batch_size,
                num_workers=args.workers,
                progress=not args.no_progress,
                explain=args.explain,
                **decode_kwargs(args),
                views=args.views,
            )
            for result in scored:
                result = finite_or_error(inputs.result(result))
                if result.error and result.error.startswith(f"{TransientError.__name__}:"):
                    failed += 1  # not a verdict on the file: no row, so that the next run tries it again
                    why = _without_path(result.error, result.path)
                    _note(f"dvlta-metric: failed, not recorded (run again to retry): {result.path}: {why}")
                    continue
                sink.add(result)
                written += 1
                if result.error:
                    failed += 1
                    _note(f"dvlta-metric: failed: {result.path}: {_without_path(result.error, result.path)}")
                elif result.warning:
                    _note(f"dvlta-metric: warning: {result.path}: {result.warning}")
                if timelines is not None and not result.error:
                    failed += _write_timeline(timelines, model, args, result, weights)
        finally:
            sink.close()
    except KeyboardInterrupt:
        where = f" to {args.output}; run the same command again to resume" if args.output else ""
        _note(f"\ndvlta-metric: interrupted after {written} of {len(todo)} files{where}")
        return 130
    except OutputWriteError as err:
        kept = (
            f"; the {written} rows written before are kept: make room, then run the same command again to resume"
            if args.output
            else ""
        )
        _note(f"dvlta-metric: error: {err}{kept}")
        return EXIT_WRITE_ERROR
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------- inputs
def _add_input_arguments(score: argparse.ArgumentParser) -> None:
    """``--files-from``, the raw video options and the colour options of ``score`` (:mod:`._cli_inputs`)."""
    score.add_argument(
        "--files-from",
        metavar="FILE",
        help="also score the paths listed in FILE, one per line (- reads the list from standard input); blank "
        "lines are skipped, spaces are kept",
    )
    score.add_argument(
        "--size", type=_raw_size, metavar="WxH", help="frame size of the .yuv (raw video) files, e.g. 1920x1080"
    )
    score.add_argument(
        "--pix-fmt",
        choices=list(RAW_PIXEL_FORMATS),
        default=None,
        metavar="FMT",
        help=f"pixel format of the .yuv files: {', '.join(RAW_PIXEL_FORMATS)} (default: yuv420p)",
    )
    score.add_argument(
        "--fps",
        type=_raw_fps,
        default=None,
        metavar="N",
        help=f"frame rate of the .yuv files (default: {DEFAULT_RAW_FPS:g})",
    )
    score.add_argument(
        "--color-matrix",
        choices=list(COLOR_MATRICES),
        default=None,
        help="YUV to RGB matrix of videos not tagged with one (default: bt601); tagged videos use their tag",
    )
    score.add_argument(
        "--color-range",
        choices=list(COLOR_RANGES),
        default=None,
        help="range of videos not tagged with one: tv (limited) or pc (full) (default: tv); tagged videos use "
        "their tag",
    )
    score.add_argument(
        "--decoder",
        choices=list(DECODERS),
        default="pyav",
        help="pyav (default): decode on CPUs; torchcodec: decode on the --device, with NVDEC on a GPU (frames stay "
        "on the GPU through view cutting; pip install 'dvlta-metric[gpu-decode]' and FFmpeg's shared libraries)",
    )
    score.add_argument(
        "--8-bit",
        dest="eight_bit",
        action="store_true",
        help="convert sources above 8 bits to 8-bit RGB (by default their bits are kept, at twice the memory)",
    )


def _check_decoder(args: argparse.Namespace) -> None:
    """Refuse a ``--decoder`` that cannot run here (torchcodec or FFmpeg missing, no GPU for ``--device cuda``) or
    colour options it cannot apply, before the model is loaded. With ``--ray`` the nodes decode: only the options
    are checked here."""
    try:
        check_decoder_options(args.decoder, args.color_matrix, args.color_range)
        if args.decoder == "torchcodec" and args.ray is None:
            check_torchcodec(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except (ImportError, RuntimeError, ValueError) as err:
        raise UsageError(f"--decoder {args.decoder}: {err}") from None


def _input_files(args: argparse.Namespace) -> list[str]:
    """The files to score: ``PATH`` arguments and ``--files-from``, directories expanded; checked."""
    listed: list[str] = []
    if args.files_from is not None:
        if args.files_from == STDIN and STDIN in args.paths:
            raise UsageError("standard input cannot be both the file list (--files-from -) and a video (-)")
        try:
            listed = read_file_list(args.files_from)
        except InputError as err:
            raise UsageError(str(err)) from None
    elif not args.paths:
        raise UsageError("nothing to score: give video files or directories (PATH), or --files-from FILE")
    extensions = VIDEO_EXTENSIONS | {".yuv"} if args.size else VIDEO_EXTENSIONS
    files = [str(f) for f in find_videos([*args.paths, *listed], extensions=extensions)]
    if not files:
        where = ", ".join(args.paths) + (f" and the list {args.files_from}" if args.files_from else "")
        raise UsageError(f"no video files found in {where}")
    given = [o for o, v in (("--size", args.size), ("--pix-fmt", args.pix_fmt), ("--fps", args.fps)) if v]
    try:
        check_raw_options(files, args.size, given)
    except InputError as err:
        raise UsageError(str(err)) from None
    args.pix_fmt = args.pix_fmt or "yuv420p"
    args.fps = args.fps or DEFAULT_RAW_FPS
    return files


def _raw_size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _raw_fps(text: str) -> float:
    value = _positive_number(text)
    if value > 1000:
        raise argparse.ArgumentTypeError(f"must be at most 1000 frames per second, got {text}")
    return value


def _create(args: argparse.Namespace) -> DVLTAVQA:
    """The model the arguments ask for, ready to score."""
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
    return model


def _timeline_writer(args: argparse.Namespace, files: list[str]) -> TimelineWriter | None:
    """The writer of ``--timeline`` logs, its options and target files checked before anything is scored."""
    if args.timeline is None:
        if args.timeline_out is not None or args.timeline_plot:
            raise UsageError("--timeline-out and --timeline-plot go with --timeline SECONDS (the window length)")
        return None
    if args.timeline_out is None:
        raise UsageError("--timeline needs --timeline-out DIR, the folder for the per-video timeline logs")
    if any(str(f) == STDIN for f in files) or args.size is not None:
        raise UsageError(
            "--timeline reads each video file a second time, for its windows: it cannot be used with standard "
            "input (-) or raw .yuv input (--size); score such input without --timeline, or convert it to a file "
            "first (e.g. ffmpeg ... clip.y4m)"
        )
    missing = matplotlib_missing() if args.timeline_plot else None
    if missing:
        raise UsageError(missing)
    return TimelineWriter(args.timeline_out, files, plot=args.timeline_plot)


def _write_timeline(
    timelines: TimelineWriter, model: DVLTAVQA, args: argparse.Namespace, result: FileResult, weights: str
) -> int:
    """Score the windows of one scored file and write its log; returns 1 when that failed (noted), else 0."""
    try:
        with (
            read_limits(args.max_megapixels, args.decode_timeout),
            read_options(args.color_matrix, args.color_range, not args.eight_bit, args.decoder),
        ):
            timeline = model.timeline(result.path, window_s=args.timeline, batch_size=args.batch_size)
    except (ValueError, TypeError, OSError) as err:
        why = _without_path(f"{type(err).__name__}: {err}", result.path)
        _note(f"dvlta-metric: failed: timeline of {result.path}: {why}")
        return 1
    extra = {"version": __version__, "model": model.config.name, "weights": weights, "video_score": result.score}
    timelines.write(result.path, timeline, **extra)
    return 0


def _model_name(model: str) -> str | None:
    """The configuration name of ``--model`` when it is known without building the model (``None`` for a Hub
    repository, whose ``config.json`` may have to be downloaded, or an unreadable folder)."""
    parsed = parse_model_name(model)
    try:
        if parsed.kind == "registry":
            return model_info(parsed.target).config.name
        if parsed.kind == "local-dir":
            return read_config(Path(parsed.target) / CONFIG_NAME)[0].name
    except (ValueError, OSError):  # create() reports it
        return None
    return None


def _check_ray_output(args: argparse.Namespace) -> None:
    """Refuse a ``--ray`` run whose model or weights differ from the rows already in its Parquet directory, as the
    run without ``--ray`` does, before the cluster starts (where the weights label is known in advance)."""
    if not args.output.is_dir():
        return
    try:
        with ParquetResults.open(args.output) as existing:
            previous = existing.read()
    except ImportError as err:
        raise UsageError(str(err)) from None
    known = known_weights_label(
        args.model, random_weights=args.random_weights, precision=args.precision, seed=args.seed
    )
    _check_same_model(args.output, previous, _model_name(args.model), known)


def _check_same_model(output: Path | None, previous: Previous, name: str | None, weights: str | None) -> None:
    """Refuse to add rows of another model (``name``) or other weights (``weights``; ``None``: not known yet) to a
    results file."""
    others = previous.models - {name} if name is not None else set()
    if others:
        raise UsageError(f"{output} holds scores of model {min(others)!r}, not {name!r}: use another --output file")
    other_weights = previous.weights - {weights} if weights is not None else set()
    if other_weights:
        raise UsageError(
            f"{output} holds scores made with weights {min(other_weights)!r}, not {weights!r} (the label also "
            "names --views K and the MOS calibration of --scale mos when they are used): use another --output "
            "file, or the same weights, --views and calibration"
        )


def run_label(weights: str, *, views: int = 1, calibration: Calibration | None = None) -> str:
    """The ``weights`` value of a run's rows: :func:`~dvlta_metric._factory.weights_label`, then ``", views K"``
    when ``--views K`` (K >= 2) and ``", calibration <fingerprint>"`` with ``--scale mos``
    (:meth:`~dvlta_metric.calibration.Calibration.fingerprint`), so that a resumed run refuses a file of rows
    scored with other views or mapped by another calibration. A plain run's label is the weights label alone.

    Args:
        weights: The weights label.
        views: ``--views``.
        calibration: The calibration of ``--scale mos``, else ``None``.

    Returns:
        The label.
    """
    label = weights
    if views > 1:
        label += f", views {views}"
    if calibration is not None:
        label += f", calibration {calibration.fingerprint()}"
    return label


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def known_weights_label(model: str, *, random_weights: bool, precision: str, seed: int = 0) -> str | None:
    """The ``weights`` label of a run, where it is known before the model is built; else ``None``.

    It equals :func:`~dvlta_metric._factory.weights_label` of the model :func:`~dvlta_metric.create` builds:
    ``"random (seed <seed>), <precision>"`` for random weights, and for a ``local-dir:`` folder its absolute
    path and the first 12 hex digits of its ``model.safetensors``'s SHA-256 (retraining into the same folder
    changes it). Weights from the Hub are labelled by the commit actually loaded, which only a download
    resolves: ``None``.

    Args:
        model: The ``--model`` argument, a name :func:`~dvlta_metric._factory.parse_model_name` accepts.
        random_weights: ``--random-weights``.
        precision: ``--precision``.
        seed: ``--seed``.

    Returns:
        The label, or ``None``.
    """
    if random_weights:
        return f"random (seed {seed}), {precision}"
    parsed = parse_model_name(model)
    if parsed.kind != "local-dir":
        return None
    folder = Path(parsed.target).resolve()
    weights = folder / WEIGHTS_NAME
    digest = sha256_of(weights)[:12] if weights.is_file() else "?"
    return f"local-dir:{folder} (sha256 {digest}), {precision}"


def _shard(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number such as 300 or inf, got {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _note(message: str) -> None:
    """Print to stderr without breaking the progress bar; file names are escaped (:func:`terminal_text`)."""
    from tqdm.auto import tqdm

    tqdm.write(terminal_text(message), file=sys.stderr)


def _without_path(error: str, path: str) -> str:
    """``"ValueError: a.mp4: bad"`` -> ``"ValueError: bad"`` (the path is printed once already)."""
    kind, sep, message = error.partition(": ")
    return f"{kind}{sep}{message.removeprefix(f'{path}: ')}"


def _output_format(fmt: str | None, output: Path | None) -> str:
    if output is None:
        if fmt == "parquet":
            raise UsageError("--format parquet writes a directory of part files: add --output DIR.parquet")
        return fmt or "table"
    if fmt == "table":
        raise UsageError("--output writes csv, json (JSON Lines) or parquet; the table format is for the terminal")
    if fmt:
        return fmt
    if output.suffix.lower() == PARQUET_SUFFIX:
        return "parquet"
    return "json" if output.suffix.lower() in JSON_SUFFIXES else "csv"


def _check_output(output: Path, fmt: str = "csv") -> None:
    """Refuse an ``--output`` that cannot be written, before any model is built."""
    if fmt == "parquet":
        if output.exists() and not output.is_dir():
            raise UsageError(
                f"--output {output} is a file: Parquet output is a directory of part files; give a new directory "
                "name, such as scores.parquet"
            )
    elif output.is_dir():
        raise UsageError(f"--output {output} is a directory: give a file name, such as {output / 'scores.csv'}")
    existing = next(p for p in (output.parent, *output.parent.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"--output {output}: {existing} is a file, not a directory")
    target = output if output.exists() else existing
    if not os.access(target, os.W_OK):
        raise UsageError(f"--output {output}: {target} is not writable")


class _Sink:
    """Where results go: appended to the ``--output`` file one by one, or printed to stdout."""

    def __init__(
        self,
        fmt: str,
        results: ResultsFile | ParquetResults | None,
        columns: list[str],
        header: list[str] | None = None,
        extra: dict[str, object] | None = None,
        to_mos: Callable[[float], float] | None = None,
    ) -> None:
        self.fmt, self.results, self.columns, self.extra = fmt, results, columns, dict(extra or {})
        self.to_mos = to_mos
        self.rows: list[dict[str, object]] = []
        if results is not None:
            results.start(columns, header)
            self.columns = results.columns
        elif fmt == "csv":
            _write_stdout(self._csv(dict(zip(columns, columns))))

    def add(self, result: FileResult) -> None:
        """Write or keep one result (its numbers must be finite: see :func:`finite_or_error`)."""
        row = result.to_dict()
        if self.to_mos is not None:
            row["mos"] = None if result.score is None else self.to_mos(result.score)
        row = {**{k: v for k, v in row.items() if k not in self.extra}, **self.extra}
        row["realpath"] = STDIN if result.path == STDIN else os.path.realpath(result.path)  # stdin is no file
        row = {k: row[k] for k in [*BASE_COLUMNS, *row] if k in row}  # the columns' order, then the rest
        if self.results is not None:
            self.results.append(row)
        elif self.fmt == "csv":
            _write_stdout(self._csv(row))
        else:
            self.rows.append(row)

    def _csv(self, row: dict[str, object]) -> str:
        """A CSV line for stdout; on a terminal, names are escaped (:func:`terminal_text`) as ``ls`` does."""
        if sys.stdout.isatty():
            row = {k: terminal_text(v) if isinstance(v, str) else v for k, v in row.items()}
        return csv_line(self.columns, row)

    def close(self) -> None:
        """Print what is printed at the end: the JSON array or the table."""
        if self.results is not None:
            return
        if self.fmt == "json":
            _write_stdout(json.dumps(self.rows, indent=2, allow_nan=False) + "\n")
        elif self.fmt == "table" and self.rows:
            hidden = {"weights", "warning", "seconds", "error", "realpath"}
            _print_table([_table_row(r) for r in self.rows], [c for c in self.columns if c not in hidden] + ["error"])


def _table_row(row: dict[str, object]) -> dict[str, object]:
    out = dict(row)
    for key, value in row.items():
        if isinstance(value, float):
            out[key] = f"{value:.4f}"
    out["score"] = out["score"] if row["score"] is not None else "-"
    out["error"] = row["error"] or (f"warning: {row['warning']}" if row.get("warning") else "")
    return out


def _print_table(rows: Iterable[dict[str, object]], columns: list[str]) -> None:
    """Print rows as left-aligned columns with a header, every cell escaped for the terminal."""
    cells = [[str(c).upper() for c in columns]] + [
        [terminal_text("" if r.get(c) is None else str(r[c])) for c in columns] for r in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        _write_stdout("  ".join(text.ljust(w) for text, w in zip(line, widths)).rstrip() + "\n")


_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
"""What :func:`terminal_text` escapes: control characters (C0, DEL, C1), line and paragraph separators,
bidirectional text controls, and surrogates (the bytes of file names that are not valid UTF-8)."""


def terminal_text(text: str) -> str:
    """``text`` safe to print on a terminal: characters that could move the cursor, end or reorder a line, or
    that cannot be encoded, are written as escapes.

    A control character becomes ``\\xNN`` (ESC is ``\\x1b``, a newline ``\\x0a``); a byte of a file name that is
    not valid UTF-8 (a ``surrogateescape`` surrogate) becomes ``\\xNN`` with that byte's value; bidirectional
    controls and other surrogates become ``\\uNNNN``. Other text, backslashes included, is kept.

    Args:
        text: A file name, a message.

    Returns:
        The escaped text.
    """
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _write_stdout(text: str) -> None:
    """Write to stdout; text the stream's encoding cannot hold goes out as its bytes (a non-UTF-8 file name in
    CSV, as in ``--output`` files), or escaped. A write error other than a closed pipe is an
    :class:`OutputWriteError`."""
    try:
        try:
            sys.stdout.write(text)
        except UnicodeEncodeError:
            encoding = sys.stdout.encoding or "utf-8"
            try:
                data = text.encode(encoding, OUTPUT_ERRORS)
            except UnicodeEncodeError:
                data = text.encode(encoding, "backslashreplace")
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as err:
        raise OutputWriteError(f"cannot write to stdout: {err.strerror or err}") from None
