"""``dvlta-metric score ... --ray [ADDRESS] --output DIR.parquet``: the command line of :func:`score_files_ray`.

:mod:`dvlta_metric.cli` adds the arguments (:func:`add_ray_arguments`) and, when ``--ray`` is given, hands the
files it found to :func:`run_ray`, with its way of printing notes. The checks that do not need Ray come first, so
that a bad command line is refused before a cluster is started.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ._cli_inputs import DEFAULT_WORKERS, STDIN, decode_kwargs, is_raw
from ._results import EXIT_WRITE_ERROR, OutputWriteError, RefusedOutputError
from .batch import FileResult
from .ray_scoring import score_files_ray

RAY_LOCAL = "local"
"""``--ray`` without an address: join the cluster of ``RAY_ADDRESS`` or a running local one, else start one here."""


class RayUsageError(ValueError):
    """A ``--ray`` command line that cannot run (exit status 2)."""


def add_ray_arguments(score: argparse.ArgumentParser, positive: Callable[[str], int]) -> None:
    """Add ``--ray``, ``--ray-decoders`` and ``--ray-scorers`` to the ``score`` parser.

    Args:
        score: The parser.
        positive: The CLI's parser of whole numbers >= 1.
    """
    score.add_argument(
        "--ray",
        nargs="?",
        const=RAY_LOCAL,
        default=None,
        metavar="ADDRESS",
        help="score on a Ray cluster (pip install 'dvlta-metric[ray]'): decode tasks on CPUs, one model per GPU, "
        "results into --output DIR.parquet; ADDRESS as for ray.init (e.g. auto, ray://head:10001; default: "
        "RAY_ADDRESS or a running local cluster, else a new local one)",
    )
    score.add_argument(
        "--ray-decoders",
        type=positive,
        default=None,
        metavar="N",
        help="with --ray: decode tasks at once (default: every CPU not given to a GPU scorer; on a CPU-only cluster "
        "10%% of the CPUs)",
    )
    score.add_argument(
        "--ray-scorers",
        type=positive,
        default=None,
        metavar="N",
        help="with --ray: scoring actors, one model each (default: one per GPU; on a CPU-only cluster one per 8 CPUs)",
    )


def check_ray_arguments(args: argparse.Namespace, files: list[str], fmt: str) -> None:
    """Refuse what ``--ray`` cannot do, or ``--ray-*`` options without ``--ray``, before anything starts.

    Raises:
        RayUsageError: Saying what to change.
    """
    if args.ray is None:
        given = [o for o, v in (("--ray-decoders", args.ray_decoders), ("--ray-scorers", args.ray_scorers)) if v]
        if given:
            raise RayUsageError(f"{' and '.join(given)} size a --ray run; add --ray, or leave them out")
        return
    if args.output is None or fmt != "parquet":
        raise RayUsageError(
            "--ray writes its results into a Parquet directory: add --output DIR.parquet (resumable; read it with "
            "pandas.read_parquet(DIR) or DuckDB)"
        )
    if STDIN in files or any(is_raw(f) for f in files):
        raise RayUsageError(
            "--ray reads files that every node of the cluster can open: standard input (-) and raw .yuv files are "
            "scored without --ray"
        )
    if args.timeline is not None or args.timeline_out is not None or args.timeline_plot:
        raise RayUsageError("--timeline is not available with --ray: score the timelines without --ray")
    if args.device not in (None, "cpu"):
        raise RayUsageError(
            f"--device {args.device} is not used with --ray: each scoring actor takes one GPU where the cluster has "
            "GPUs (--device cpu: CPU actors only); size them with --ray-scorers"
        )
    if args.workers != DEFAULT_WORKERS:
        raise RayUsageError("--workers sizes the decoding threads of one process; with --ray use --ray-decoders")
    if getattr(args, "views", 1) != 1 or getattr(args, "scale", "score") != "score":
        raise RayUsageError(
            "--views and --scale mos are not available with --ray yet: score with them without --ray (the scores' "
            "mos column is model.to_mos(score) of the Parquet rows; see the Trustworthy scores page)"
        )


def run_ray(args: argparse.Namespace, files: list[str], *, note: Callable[[str], None]) -> int:
    """Score ``files`` on Ray into ``args.output``.

    Args:
        args: Parsed ``score`` arguments, checked by :func:`check_ray_arguments`.
        files: The files (after ``--files-from`` and ``--shard``).
        note: Prints a message on stderr.

    Returns:
        The exit status: 0 every file scored, 1 some failed (now or in an earlier run) or the job failed,
        ``EXIT_WRITE_ERROR`` (74) when the results could not be written.
    """
    failures = 0

    def report(result: FileResult) -> None:
        nonlocal failures
        if result.error:
            failures += 1
            transient = result.error.startswith("TransientError:")
            verb = "failed, not recorded (run again to retry)" if transient else "failed"
            note(f"dvlta-metric: {verb}: {result.path}: {result.error}")
        elif result.warning:
            note(f"dvlta-metric: warning: {result.path}: {result.warning}")

    kwargs: dict[str, object] = {"pretrained": not args.random_weights, "precision": args.precision, "seed": args.seed}
    try:
        summary = score_files_ray(
            files,
            Path(args.output),
            model=args.model,
            create_kwargs=kwargs,
            explain=args.explain,
            batch_size=args.batch_size,
            decoders=args.ray_decoders,
            scorers=args.ray_scorers,
            attention_kernel=args.attention_kernel,
            compile=args.compile,
            **decode_kwargs(args),
            address=None if args.ray == RAY_LOCAL else args.ray,
            use_gpus=args.device != "cpu",
            progress=not args.no_progress,
            on_result=report,
        )
    except (ImportError, ValueError, TypeError) as err:
        raise RayUsageError(str(err)) from None
    except RefusedOutputError:
        raise
    except OutputWriteError as err:  # as without --ray: the rows written before are kept
        note(
            f"dvlta-metric: error: {err}; the rows written before are kept: make room, then run the same command "
            "again to resume"
        )
        return EXIT_WRITE_ERROR
    except Exception as err:  # the job failed in Ray (a model that cannot be built in an actor, a lost cluster)
        note(
            f"dvlta-metric: error: the Ray job failed ({type(err).__name__}: {err}); the results written before are "
            f"kept in {args.output}: fix the cause, then run the same command again to resume"
        )
        return 1
    if summary.skipped:
        note(f"dvlta-metric: {summary.skipped} of {len(files)} files are already in {args.output}")
    if summary.plan is not None:
        plan = summary.plan
        device = f"{plan.scorer_gpus} GPU" if plan.scorer_gpus else f"{plan.scorer_threads} threads"
        note(
            f"dvlta-metric: {summary.scored} files scored on Ray ({plan.decoders} decode tasks, {plan.scorers} "
            f"scorers of {device}, batch {plan.batch_size}) into {summary.parts} new part files of {args.output} in "
            f"{summary.seconds:.1f} s"
        )
    return 1 if failures or summary.failed_before else 0
