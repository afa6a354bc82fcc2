"""Scoring a corpus on a Ray cluster (Ray Data), into a resumable Parquet directory: :func:`score_files_ray`.

The shape is Ray Data's batch-inference pattern (Ray docs, "Batch inference"): a dataset of paths goes through

1. **decode tasks** (``map_batches`` with a function, 1 CPU each): each reads the frames one file's views need and
   cuts the views (:meth:`~dvlta_metric.model.DVLTAVQA.read`, :meth:`~dvlta_metric.model.DVLTAVQA.make_views`,
   the same code as :func:`~dvlta_metric.batch.score_files`), with a weightless copy of the model (its
   parameters on the ``meta`` device, ours) so that a decode worker holds no weights;
2. **scoring actors** (``map_batches`` with a class): one model each, ``num_gpus=1`` on a GPU cluster, CPU
   actors on a CPU-only one, scoring ``batch_size`` videos per call
   (:meth:`~dvlta_metric.model.DVLTAVQA.score_views`, with the one-by-one fallback of ``score_files``);
3. **the driver**, which takes the results as Ray produces them (``iter_batches``) and writes them into the
   Parquet directory (:mod:`dvlta_metric._parquet_results`): each part file under a temporary name, then
   renamed.

Exactly once: only the driver writes, a part counts only once renamed, a rerun skips every file already in a
part (by its real path), and the driver drops a file it has already written in this run (should Ray deliver a
retried batch twice). A scoring actor that dies is restarted by Ray Data and its in-flight batch scored again
(Ray Data's default ``max_restarts=-1``, ``max_task_retries=-1``); a driver that dies loses the rows still in
its buffer (the rows since the last part: a part is written once a row arrives
:data:`~dvlta_metric._parquet_results.FLUSH_SECONDS` or more after the oldest waiting one, so a long gap between
results can leave rows waiting longer), which the rerun scores. A file that cannot be read or scored is a row
with its ``error``, never a failed job.

With ``decoder="torchcodec"`` on a GPU cluster (ours) there are no decode tasks: each scoring actor reads its batch of
paths itself, decoding on its GPU with NVDEC in threads and cutting the views there from the frames on the GPU
(:func:`~dvlta_metric.batch.score_files` inside the actor), so no frame or view crosses the object store. On a
CPU-only cluster the decode tasks decode with torchcodec on their CPU.

Ray is imported when :func:`score_files_ray` runs (``pip install 'dvlta-metric[ray]'``); ``import dvlta_metric``
works without it. Decode workers and scoring actors import this module by name, so ``dvlta-metric`` must be
installed on every node of the cluster (as Ray requires of any library a job uses).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._factory import _locate, _unavailable, create, parse_model_name, weights_label
from ._parquet_results import FLUSH_SECONDS, ROWS_PER_PART, ParquetResults, import_pyarrow, utf8_text
from ._registry import LOADABLE_KINDS, model_info
from ._results import BASE_COLUMNS, RefusedOutputError, finite_or_error, resume_key
from .batch import FileResult, ReadOptions, _count, _Decoded, _read, _score, score_files
from .color import check_color_matrix, check_color_range
from .config import ModelConfig
from .model import DVLTAVQA
from .video_io import TransientError, check_decoder, check_decoder_options, check_limit

__all__ = ["RayScoringSummary", "ResourcePlan", "plan_resources", "score_files_ray"]

GPU_BATCH_SIZE = 16
"""Default videos per model call of a GPU actor (ours; on the H200 the Benchmarks page has fp16 batches of 1, 32 and
64 and fp32 batches of 1 and 16, not a sweep: 16 is a guess between them, to be measured)."""

CPU_BATCH_SIZE = 1
"""Default videos per model call of a CPU actor (a CPU gains nothing from larger batches)."""

CPU_DECODE_SHARE = 0.1
"""Share of a CPU-only cluster's CPUs given to decode tasks by default: decoding and cutting views take a few
percent of a file's time when the model runs on CPUs (see the Scoring at scale page)."""

CPUS_PER_CPU_SCORER = 8
"""CPUs per CPU scoring actor by default: one actor per 8 CPUs (a model's intra-op threads scale well to
about that many cores)."""

ACTOR_BATCHES = 4
"""With ``decoder="torchcodec"`` on GPUs, a scoring actor takes ``ACTOR_BATCHES`` model batches of paths per call, so
that its threads decode the next batch while the model scores one (:func:`~dvlta_metric.batch.score_files`)."""

DECODE_CALLS_PER_WORKER = 1000
"""Decode calls (files) after which Ray replaces a decode worker process (``max_calls``), so that memory a
decoder library keeps cannot grow without bound; the weightless model is built again in 0.2 s."""

_CREATE_ONLY_ON_ACTORS = frozenset({"device", "as_loss"})
"""``create()`` arguments the caller may not pass: each actor picks its device; a loss model does not score."""

_VIEW_PREFIX = "view_"


@dataclass(frozen=True)
class ResourcePlan:
    """How many decode tasks and scoring actors a run uses, and their resources.

    Attributes:
        decoders: Decode tasks running at once (1 CPU each); 0 when the scoring actors decode.
        scorers: Scoring actors (one model each).
        scorer_gpus: GPUs per scoring actor (1, or 0 on a CPU-only cluster).
        scorer_cpus: CPUs Ray reserves for each scoring actor.
        scorer_threads: PyTorch intra-op threads of each scoring actor (``torch.set_num_threads``).
        batch_size: Videos per model call.
        actor_decoders: Decoding threads of each scoring actor when the actors decode (NVDEC, ``decoder=
            "torchcodec"`` on GPUs), else 0.
    """

    decoders: int
    scorers: int
    scorer_gpus: int
    scorer_cpus: int
    scorer_threads: int
    batch_size: int
    actor_decoders: int = 0


def _check_fits(cpus: int, decoders: int, scorers: int, cpus_per_scorer: int) -> None:
    """Refuse sizes the cluster cannot hold at once: Ray would wait for CPUs that never come, silently."""
    needed = decoders + scorers * cpus_per_scorer
    if needed > cpus:
        raise ValueError(
            f"{scorers} scoring actors ({cpus_per_scorer} CPU each) and {decoders} decode tasks need {needed} CPUs at "
            f"once; the cluster has {cpus}: ask for fewer (--ray-scorers, --ray-decoders) or add nodes"
        )


def plan_resources(
    resources: Mapping[str, float],
    *,
    decoders: int | None = None,
    scorers: int | None = None,
    scorer_threads: int | None = None,
    batch_size: int | None = None,
    gpu_decode: bool = False,
) -> ResourcePlan:
    """The default sizes of a run on a cluster with ``resources`` (``ray.cluster_resources()``), ours.

    * **GPU cluster** (``G`` GPUs, ``C`` CPUs): ``G`` scoring actors with 1 GPU and 1 CPU each, batch
      :data:`GPU_BATCH_SIZE`; every other CPU decodes: ``max(1, C - G)`` decode tasks. A GPU scores a video in
      about 11 ms (H200, fp16, batch 64) while a CPU core decodes and cuts one 540p video in about 0.3-0.4 s, so a
      GPU can use 30 or more decoding cores: decoding is the limit, and every spare core should decode.
    * **CPU-only cluster** (``C`` CPUs): ``max(1, round(C * 0.1))`` decode tasks
      (:data:`CPU_DECODE_SHARE`), one scoring actor per :data:`CPUS_PER_CPU_SCORER` of the rest (at least one),
      each reserving its share of the rest, running ``round(C / scorers)`` threads (its share of all CPUs:
      decoding takes a few percent of the time and overlaps the model, as the threads of ``score_files`` do),
      batch :data:`CPU_BATCH_SIZE`.
    * **GPU cluster decoding on the GPUs** (``gpu_decode``, ``decoder="torchcodec"``): no decode tasks; ``G`` scoring
      actors with 1 GPU each share the CPUs (``C // G`` each, for demuxing and their threads), each decoding with
      that many threads (``decoders`` sets it instead), batch :data:`GPU_BATCH_SIZE`.

    Args:
        resources: ``{"CPU": ..., "GPU": ...}`` of the cluster.
        decoders: Decode tasks instead of the default.
        scorers: Scoring actors instead of the default (on a GPU cluster at most one per GPU).
        scorer_threads: Intra-op threads per scoring actor instead of the default.
        batch_size: Videos per model call instead of the default.
        gpu_decode: The scoring actors decode on their GPUs (ignored on a CPU-only cluster).

    Returns:
        The plan.

    Raises:
        TypeError, ValueError: An argument that is not a positive integer; more GPU scorers than GPUs; more
            scorers and decoders than the cluster's CPUs can hold at once (Ray would wait for them forever).
    """
    for name, value in (("decoders", decoders), ("scorers", scorers), ("scorer_threads", scorer_threads)):
        if value is not None:
            _count(name, value, 1)
    if batch_size is not None:
        _count("batch_size", batch_size, 1)
    cpus = max(1, int(resources.get("CPU", 1)))
    gpus = int(resources.get("GPU", 0))
    if gpus:
        if scorers is not None and scorers > gpus:
            raise ValueError(f"scorers={scorers} is more than the {gpus} GPUs of the cluster: one model per GPU")
        n = scorers or gpus
        if gpu_decode:
            share = max(1, cpus // n)
            _check_fits(cpus, 0, n, share)
            return ResourcePlan(
                decoders=0,
                scorers=n,
                scorer_gpus=1,
                scorer_cpus=share,
                scorer_threads=scorer_threads or 1,
                batch_size=batch_size or GPU_BATCH_SIZE,
                actor_decoders=decoders or share,
            )
        _check_fits(cpus, decoders or 1, n, 1)
        return ResourcePlan(
            decoders=decoders or max(1, cpus - n),
            scorers=n,
            scorer_gpus=1,
            scorer_cpus=1,
            scorer_threads=scorer_threads or 1,
            batch_size=batch_size or GPU_BATCH_SIZE,
        )
    d = decoders or max(1, round(cpus * CPU_DECODE_SHARE))
    rest = max(1, cpus - d)
    n = scorers or max(1, rest // CPUS_PER_CPU_SCORER)
    _check_fits(cpus, d, n, 1)
    return ResourcePlan(
        decoders=d,
        scorers=n,
        scorer_gpus=0,
        scorer_cpus=max(1, rest // n),
        scorer_threads=scorer_threads or max(1, round(cpus / n)),
        batch_size=batch_size or CPU_BATCH_SIZE,
    )


@dataclass
class RayScoringSummary:
    """What a :func:`score_files_ray` run did.

    Attributes:
        output: The Parquet directory.
        scored: Files scored in this run.
        failed: Files written with an ``error`` in this run.
        transient: Files that failed for want of resources (``TransientError``): no row, the next run retries them.
        skipped: Files already in ``output`` (and files named twice), not scored again.
        failed_before: Files already in ``output`` with an ``error`` (of the paths given as a list).
        parts: Part files written in this run.
        plan: The resources used.
        seconds: Wall time of the run, the start of Ray included.
    """

    output: Path
    scored: int = 0
    failed: int = 0
    transient: int = 0
    skipped: int = 0
    failed_before: int = 0
    parts: int = 0
    plan: ResourcePlan | None = None
    seconds: float = 0.0


def score_files_ray(
    paths: Iterable[str | os.PathLike[str]] | Any,
    output: str | os.PathLike[str],
    *,
    model: str = "dvlta-vqa-zeroshot",
    create_kwargs: Mapping[str, Any] | None = None,
    explain: bool = False,
    batch_size: int | None = None,
    decoders: int | None = None,
    scorers: int | None = None,
    scorer_threads: int | None = None,
    attention_kernel: str = "sdpa",
    compile: bool = False,
    max_megapixels: float | None = None,
    decode_timeout: float | None = None,
    color_matrix: str | None = None,
    color_range: str | None = None,
    keep_bit_depth: bool | None = None,
    decoder: str = "pyav",
    address: str | None = None,
    use_gpus: bool = True,
    rows_per_part: int = ROWS_PER_PART,
    flush_seconds: float = FLUSH_SECONDS,
    progress: bool = True,
    on_result: Callable[[FileResult], None] | None = None,
) -> RayScoringSummary:
    """Score video files on a Ray cluster into a Parquet directory; a rerun resumes where a run stopped.

    Each file gets one row in ``output`` (``path``, ``score``, ``model``, ``weights``, ``error``, ``warning``,
    ``seconds``, ``realpath``, and ``weight_<branch>`` with ``explain``): the same scores as
    :func:`~dvlta_metric.batch.score_files` with the same model (the same views, cut by the same code). Files
    already in ``output`` are skipped. See the module's documentation for the stages and the guarantees, and
    :func:`plan_resources` for the default sizes.

    Args:
        paths: Video files (a list of ``str`` / ``os.PathLike``, named as the cluster's nodes see them), or a
            ``ray.data.Dataset`` with a ``path`` column of strings (or bytes) that you already have.
        output: The results directory (conventionally ending in ``.parquet``), created when missing; a directory
            holding files this tool did not write is refused.
        model: A name :func:`~dvlta_metric.create` takes; each actor creates it.
        create_kwargs: More arguments of :func:`~dvlta_metric.create` (``pretrained``, ``precision``, ``seed``,
            ``revision``, ``cache_dir``, configuration overrides); not ``device`` (each actor uses its GPU, or
            the CPU) nor ``as_loss``.
        explain: Add each file's fusion weights (``weight_<branch>`` columns).
        batch_size: Videos per model call (default: :data:`GPU_BATCH_SIZE` on GPUs, :data:`CPU_BATCH_SIZE` on CPUs).
        decoders: Decode tasks at once (default: :func:`plan_resources`).
        scorers: Scoring actors (default: one per GPU; see :func:`plan_resources`).
        scorer_threads: PyTorch threads per scoring actor (default: :func:`plan_resources`).
        attention_kernel: ``"sdpa"`` or ``"flex"`` (:meth:`~dvlta_metric.model.DVLTAVQA.set_attention_kernel`).
        compile: ``torch.compile`` the branches in each actor.
        max_megapixels: Pixel budget of one file's decoding (see :func:`~dvlta_metric.batch.score_files`).
        decode_timeout: Most seconds one file's decoding may take.
        color_matrix: YUV -> RGB matrix of untagged streams.
        color_range: Range of untagged streams.
        keep_bit_depth: Keep the bits of sources above 8 bits (default ``True``).
        decoder: ``"pyav"`` (decode tasks on CPUs) or ``"torchcodec"``: on a GPU cluster each scoring actor decodes
            its files with NVDEC on its GPU (no decode tasks; ``decoders`` is then the decoding threads of each
            actor), on a CPU-only one the decode tasks decode with torchcodec on their CPU. torchcodec and the
            FFmpeg libraries must be installed on every node (:mod:`~dvlta_metric.torchcodec_io`).
        address: The cluster to connect to when Ray is not initialised in this process yet (``ray.init(address)``;
            ``None``: ``RAY_ADDRESS`` or a running local cluster, else a new local one). A Ray instance this
            function starts is shut down at the end.
        use_gpus: Whether scoring actors take the cluster's GPUs; ``False`` plans CPU actors as on a CPU-only
            cluster (``dvlta-metric score --ray --device cpu``).
        rows_per_part: Rows per part file.
        flush_seconds: Most seconds a result waits in the driver before its part is written.
        progress: Show Ray Data's progress bars.
        on_result: Called with each result as it is written (or dropped, for a ``TransientError``).

    Returns:
        What the run did.

    Raises:
        ImportError: Ray or pyarrow is not installed (``pip install 'dvlta-metric[ray]'``).
        TypeError: ``paths`` is a single path, or holds something that is not a path; a ``create_kwargs`` key
            that cannot be used here; a non-integer size.
        ValueError: A bad size, limit, colour option or model name; a Dataset without a ``path`` column.
        RefusedOutputError: ``output`` is not a results directory of this tool, is locked by another run, or holds
            the scores of another model or other weights.
    """
    start = time.perf_counter()
    ray = import_ray()
    kwargs = dict(create_kwargs or {})
    bad = sorted(_CREATE_ONLY_ON_ACTORS & set(kwargs))
    if bad:
        raise TypeError(
            f"create_kwargs may not hold {bad}: each scoring actor uses its GPU (or the CPU), and a loss model "
            "does not score"
        )
    config = model_config(model, kwargs)
    for name, value in (("max_megapixels", max_megapixels), ("decode_timeout", decode_timeout)):
        if value is not None:
            check_limit(name, value)
    check_color_matrix(color_matrix)
    check_color_range(color_range)
    if keep_bit_depth is not None and not isinstance(keep_bit_depth, bool):
        raise TypeError(f"keep_bit_depth must be True, False or None, got {type(keep_bit_depth).__name__}")
    check_decoder(decoder)
    check_decoder_options(decoder, color_matrix, color_range)
    # the arguments' types and ranges, before anything starts (the cluster's size is checked once Ray is up)
    big = {"CPU": float((decoders or 1) + (scorers or 1))}
    plan_resources(big, decoders=decoders, scorers=scorers, scorer_threads=scorer_threads, batch_size=batch_size)
    dataset = paths if _is_dataset(paths, ray) else None
    listed = None if dataset is not None else _paths(paths)
    summary = RayScoringSummary(Path(output))
    with ParquetResults.open(output, rows_per_part, flush_seconds) as results:
        previous = results.read()
        others = previous.models - {config.name}
        if others:
            raise RefusedOutputError(
                f"{output} holds scores of model {min(others)!r}, not {config.name!r}: use another output directory"
            )
        columns = BASE_COLUMNS + ([f"weight_{b}" for b in config.branches] if explain else [])
        if previous.header is not None and previous.header != columns:
            raise RefusedOutputError(
                f"{output} has the columns {previous.header}, this run writes {columns} (with explain={explain}): "
                "use another output directory, or the same explain setting"
            )
        if listed is not None:
            todo, summary.skipped, summary.failed_before = _todo(listed, previous)
            if not todo:
                summary.seconds = time.perf_counter() - start
                return summary
        started = not ray.is_initialized()
        if started:
            ray.init(address=address, logging_level="WARNING", log_to_driver=progress)
        context = ray.data.DataContext.get_current()
        bars = context.enable_progress_bars
        try:
            resources = dict(ray.cluster_resources())
            if not use_gpus:
                resources.pop("GPU", None)
            plan = plan_resources(
                resources,
                decoders=decoders,
                scorers=scorers,
                scorer_threads=scorer_threads,
                batch_size=batch_size,
                gpu_decode=decoder == "torchcodec",
            )
            summary.plan = plan
            context.enable_progress_bars = progress
            if dataset is None:
                dataset = ray.data.from_items(
                    [{"path": os.fsencode(p), "file": os.fsencode(os.path.abspath(p))} for p in todo],
                    override_num_blocks=max(1, min(len(todo), 1000)),
                )
                seen = None
            else:
                if "path" not in (dataset.columns() or []):
                    raise ValueError(
                        f"the Dataset must have a 'path' column of video files, it has the columns {dataset.columns()}"
                    )
                seen = ray.put(frozenset(previous.keys))
            scored = _pipeline(
                ray,
                dataset,
                plan,
                config=config,
                model=model,
                create_kwargs=kwargs,
                explain=explain,
                attention_kernel=attention_kernel,
                compile=compile,
                limits=(max_megapixels, decode_timeout),
                options=(color_matrix, color_range, keep_bit_depth, decoder),
                seen=seen,
            )
            results.start(columns, previous.header)
            _write(scored, results, previous, summary, on_result)
        finally:
            context.enable_progress_bars = bars
            if started:
                ray.shutdown()
    summary.parts = results.parts_written
    summary.seconds = time.perf_counter() - start
    return summary


# ---------------------------------------------------------------------------------------------- driver
def import_ray() -> Any:
    """``ray`` with ``ray.data``, or an ``ImportError`` that says how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise ImportError(f"scoring on Ray needs the ray extra ({err}): pip install 'dvlta-metric[ray]'") from None
    import_pyarrow()
    return ray


def model_config(model: str, create_kwargs: Mapping[str, Any]) -> ModelConfig:
    """The configuration :func:`~dvlta_metric.create` builds for ``model`` (only ``config.json`` is read).

    Args:
        model: A model name.
        create_kwargs: Other arguments of ``create`` (configuration overrides are applied).

    Returns:
        The configuration.

    Raises:
        WeightsUnavailableError: A registry entry whose weights are not published, with ``pretrained`` true.
    """
    arguments = {"pretrained", "cache_dir", "revision", "precision", "seed"}
    overrides = {k: v for k, v in create_kwargs.items() if k not in arguments}
    parsed = parse_model_name(model)
    if parsed.kind == "registry" and create_kwargs.get("pretrained", True):
        info = model_info(parsed.target)
        if info.weights.kind not in LOADABLE_KINDS:  # refused here, not in every actor
            raise _unavailable(model, info)
    revision = create_kwargs.get("revision") if parsed.kind == "hf-hub" else None
    config, _, _ = _locate(model, parsed, pretrained=False, revision=revision, cache_dir=create_kwargs.get("cache_dir"))
    return config.replace(**overrides) if overrides else config


def _is_dataset(paths: object, ray: Any) -> bool:
    return isinstance(paths, ray.data.Dataset)


def _paths(paths: object) -> list[str]:
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise TypeError(
            f"paths must be a list of video files or a ray.data.Dataset, got a single {type(paths).__name__} "
            f"({paths!r}); pass a list, e.g. [path]"
        )
    if not isinstance(paths, Iterable):
        raise TypeError(f"paths must be a list of video files or a ray.data.Dataset, got {type(paths).__name__}")
    names = []
    for i, path in enumerate(paths):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"paths[{i}] must be a str or os.PathLike path, got {type(path).__name__} {path!r}")
        names.append(os.fspath(path))
    return names


def _todo(paths: list[str], previous: Any) -> tuple[list[str], int, int]:
    """The files to score (each named once, none already in the output), how many were skipped, how many of those
    had failed before."""
    unique: dict[str, str] = {}
    for p in paths:
        unique.setdefault(utf8_text(resume_key(p)), p)
    todo = [p for key, p in unique.items() if key not in previous.keys]
    failed_before = sum(1 for key in unique if key in previous.failed)
    return todo, len(paths) - len(todo), failed_before


def _pipeline(
    ray: Any,
    dataset: Any,
    plan: ResourcePlan,
    *,
    config: ModelConfig,
    model: str,
    create_kwargs: Mapping[str, Any],
    explain: bool,
    attention_kernel: str,
    compile: bool,
    limits: tuple[float | None, float | None],
    options: ReadOptions,
    seen: Any,
) -> Any:
    """The decode and scoring stages of a dataset of paths (one stage when the scoring actors decode)."""
    actor = {
        "model": model,
        "create_kwargs": dict(create_kwargs),
        "explain": explain,
        "attention_kernel": attention_kernel,
        "compile": compile,
        "threads": plan.scorer_threads,
        "device": "cuda" if plan.scorer_gpus else "cpu",
    }
    if plan.actor_decoders:
        return dataset.map_batches(
            DecodingScorer,
            batch_size=plan.batch_size * ACTOR_BATCHES,
            batch_format="numpy",
            num_cpus=plan.scorer_cpus,
            num_gpus=plan.scorer_gpus,
            compute=ray.data.ActorPoolStrategy(size=plan.scorers),
            fn_constructor_kwargs={
                **actor,
                "workers": plan.actor_decoders,
                "batch_size": plan.batch_size,
                "limits": limits,
                "options": options,
                "seen": seen,
            },
        )
    decoded = dataset.map_batches(
        decode_batch,
        batch_size=1,
        batch_format="numpy",
        num_cpus=1,
        compute=ray.data.TaskPoolStrategy(size=plan.decoders),
        # also keeps the stages apart: Ray Data fuses a task stage into the actor stage that follows when their
        # remote arguments are equal, which would make each actor decode, then score, one after the other
        max_calls=DECODE_CALLS_PER_WORKER,
        fn_kwargs={"config": config, "limits": limits, "options": options, "seen": seen},
    )
    return decoded.map_batches(
        Scorer,
        batch_size=plan.batch_size,
        batch_format="numpy",
        num_cpus=plan.scorer_cpus,
        num_gpus=plan.scorer_gpus,
        compute=ray.data.ActorPoolStrategy(size=plan.scorers),
        fn_constructor_kwargs=actor,
    )


def _write(
    scored: Any,
    results: ParquetResults,
    previous: Any,
    summary: RayScoringSummary,
    on_result: Callable[[FileResult], None] | None,
) -> None:
    """Write the rows as Ray produces them, each file once."""
    written: set[str] = set()
    for table in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
        for raw in table.to_pylist():
            key = utf8_text(os.fsdecode(raw["realpath"]))
            if key in written or key in previous.keys:
                continue  # a batch Ray delivered twice, or a Dataset that names a file twice or already scored
            error = _message(raw["error"])
            weights = {k.removeprefix("weight_"): v for k, v in raw.items() if k.startswith("weight_")}
            result = FileResult(
                path=os.fsdecode(raw["path"]),
                score=None if error else raw["score"],
                error=error,
                model=raw["model"],
                weights=None if error else weights or None,
                seconds=raw["seconds"],
                warning=_message(raw["warning"]),
            )
            result = finite_or_error(result)
            if result.error and result.error.startswith(f"{TransientError.__name__}:"):
                summary.transient += 1  # no verdict on the file: no row, the next run tries it again
                if on_result is not None:
                    on_result(result)
                continue
            others = previous.weights - {raw["weights"]}
            if others:
                raise RefusedOutputError(
                    f"{results.path} holds scores made with weights {min(others)!r}, not {raw['weights']!r}: use "
                    "another output directory"
                )
            row = result.to_dict()
            row["weights"] = raw["weights"]
            row["realpath"] = key
            results.append(row)
            written.add(key)
            summary.scored += 1
            summary.failed += 1 if result.error else 0
            if on_result is not None:
                on_result(result)


# ---------------------------------------------------------------------------------------------- decode tasks
_CUTTERS: dict[str, DVLTAVQA] = {}
"""Weightless models of this worker process, by configuration (built once, used by every decode task)."""

_SEEN: dict[str, frozenset[str]] = {}
"""The keys already in the output, fetched once per worker process (Dataset input only)."""


def view_cutter(config: ModelConfig) -> DVLTAVQA:
    """A model of ``config`` that reads files and cuts views on the CPU but holds no weights (ours).

    Its branches are built on the ``meta`` device (no memory, no initialisation cost); only the prompt buffer,
    by which the model knows its device and dtype, is a real CPU tensor. Views depend on the configuration
    alone, so they are those of the real model. It cannot score.

    Args:
        config: The model's configuration.

    Returns:
        The model, in eval mode (scoring views).
    """
    key = json.dumps(config.to_dict(), sort_keys=True)
    if key not in _CUTTERS:
        with torch.device("meta"):
            cutter = DVLTAVQA(config)
        cutter.prompt_embeddings = torch.zeros(cutter.prompt_embeddings.shape, dtype=torch.float32)
        _CUTTERS[key] = cutter.eval()
    return _CUTTERS[key]


def view_shapes(cutter: DVLTAVQA) -> dict[str, tuple[int, ...]]:
    """The shape of each view ``cutter`` cuts (the same for every video of one configuration)."""
    with torch.no_grad():
        views = cutter.make_views(torch.zeros(1, 3, 64, 64))
    return {name: tuple(view.shape) for name, view in views.items()}


def decode_batch(
    batch: dict[str, np.ndarray],
    *,
    config: ModelConfig,
    limits: tuple[float | None, float | None],
    options: ReadOptions,
    seen: Any = None,
) -> dict[str, np.ndarray]:
    """A decode task: read the files of ``batch["path"]`` and cut their views; never raises for a bad file.

    Args:
        batch: ``{"path": array of str or bytes}``, the files as named in the results, and optionally ``"file"``, the
            same files as this task opens them (absolute paths: a Ray worker's working directory is not the
            driver's).
        config: The model's configuration.
        limits: ``(max_megapixels, decode_timeout)``.
        options: ``(color_matrix, color_range, keep_bit_depth, decoder)`` (:data:`~dvlta_metric.batch.ReadOptions`).
        seen: A Ray object reference to the keys already in the output (to skip), or ``None``.

    Returns:
        ``path`` and ``realpath`` (bytes), ``error`` and ``warning`` (strings, ``""`` for none), ``seconds``, and one
        ``view_<name>`` array ``(n, *shape)`` per view (zeros for a file that failed).
    """
    cutter = view_cutter(config)
    shapes = view_shapes(cutter)
    skip = _seen(seen)
    rows: list[tuple[bytes, bytes, _Decoded]] = []
    files = batch.get("file", batch["path"])
    for item, opened in zip(batch["path"], files):
        raw = _bytes(item)
        path = os.fsdecode(_bytes(opened))
        real = resume_key(path)
        if utf8_text(real) in skip:
            continue
        job = _read(cutter, path, limits, options)  # never raises for a bad file
        given = os.fsdecode(raw)
        if given != path:  # messages name the file as the results do
            job.error = job.error and job.error.replace(path, given)
            job.warning = job.warning and job.warning.replace(path, given)
        rows.append((raw, os.fsencode(real), job))
    out: dict[str, np.ndarray] = {
        "path": np.array([r[0] for r in rows], dtype=object),
        "realpath": np.array([r[1] for r in rows], dtype=object),
        "error": np.array([_text(r[2].error) for r in rows], dtype=object),
        "warning": np.array([_text(r[2].warning) for r in rows], dtype=object),
        "seconds": np.array([r[2].seconds for r in rows], dtype=np.float64),
    }
    for name, shape in shapes.items():
        stacked = np.zeros((len(rows), *shape), dtype=np.float32)
        for i, (_, _, job) in enumerate(rows):
            if job.views is not None:
                stacked[i] = job.views[name].numpy()
        out[f"{_VIEW_PREFIX}{name}"] = stacked
    return out


def _bytes(item: object) -> bytes:
    return item if isinstance(item, bytes) else os.fsencode(str(item))


def _seen(ref: Any) -> frozenset[str]:
    if ref is None:
        return frozenset()
    key = ref.hex()
    if key not in _SEEN:
        import ray

        _SEEN[key] = ray.get(ref)
    return _SEEN[key]


def _text(value: str | None) -> str:
    """A message as it travels between the stages: UTF-8, ``""`` for none (an all-null column would reach the next
    stage as floats)."""
    return "" if value is None else utf8_text(value)


def _message(value: object) -> str | None:
    """The message of a :func:`_text` value: ``None`` for ``""``."""
    return str(value) if isinstance(value, str) and value else None


# ---------------------------------------------------------------------------------------------- scoring actors
class Scorer:
    """A scoring actor: one model, on its GPU (or the CPU), scoring the views the decode tasks cut.

    Args:
        model: The model name.
        create_kwargs: Other arguments of :func:`~dvlta_metric.create`.
        explain: Return each file's fusion weights.
        attention_kernel: ``"sdpa"`` or ``"flex"``.
        compile: ``torch.compile`` the branches.
        threads: PyTorch intra-op threads.
        device: ``"cuda"`` (the GPU Ray gave this actor) or ``"cpu"``.
    """

    def __init__(
        self,
        model: str,
        create_kwargs: dict[str, Any],
        explain: bool,
        attention_kernel: str,
        compile: bool,
        threads: int,
        device: str,
    ) -> None:
        torch.set_num_threads(threads)
        self.model = create(model, device=device, **create_kwargs)
        self.model.set_attention_kernel(attention_kernel)
        if compile:
            self.model.compile_branches()
        self.explain = explain
        self.weights = weights_label(self.model)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Score one batch of decoded files.

        Args:
            batch: A :func:`decode_batch` output, several concatenated.

        Returns:
            ``path``, ``realpath``, ``score``, ``error``, ``warning``, ``seconds``, ``model``, ``weights`` and, when
            explaining, ``weight_<branch>``.
        """
        device = self.model.device
        jobs = []
        names = [k.removeprefix(_VIEW_PREFIX) for k in batch if k.startswith(_VIEW_PREFIX)]
        for i in range(len(batch["path"])):
            error, warning = _message(batch["error"][i]), _message(batch["warning"][i])
            seconds = float(batch["seconds"][i])
            path = os.fsdecode(batch["path"][i])
            if error is not None:
                jobs.append(_Decoded(path, None, error, seconds))
                continue
            with warnings.catch_warnings():  # Ray hands read-only arrays; the model never writes into its views
                warnings.simplefilter("ignore", UserWarning)
                views = {n: torch.from_numpy(batch[f"{_VIEW_PREFIX}{n}"][i]).to(device) for n in names}
            jobs.append(_Decoded(path, views, None, seconds, warning))
        results = _score(self.model, jobs, self.explain) if jobs else []
        return self._rows(list(batch["path"]), list(batch["realpath"]), results)

    def _rows(self, paths: list[Any], realpaths: list[Any], results: list[FileResult]) -> dict[str, np.ndarray]:
        """The output columns of ``results`` (one per path)."""
        out: dict[str, np.ndarray] = {
            "path": np.array(paths, dtype=object),
            "realpath": np.array(realpaths, dtype=object),
            "score": np.array([math.nan if r.score is None else r.score for r in results], dtype=np.float64),
            "error": np.array([_text(r.error) for r in results], dtype=object),
            "warning": np.array([_text(r.warning) for r in results], dtype=object),
            "seconds": np.array([r.seconds for r in results], dtype=np.float64),
            "model": np.array([self.model.config.name] * len(results), dtype=object),
            "weights": np.array([self.weights] * len(results), dtype=object),
        }
        if self.explain:
            for branch in self.model.branch_names:
                out[f"weight_{branch}"] = np.array(
                    [math.nan if r.weights is None else r.weights[branch] for r in results], dtype=np.float64
                )
        return out


class DecodingScorer(Scorer):
    """A scoring actor that also decodes: ``decoder="torchcodec"`` on a GPU cluster (ours).

    Each call reads a batch of paths with :func:`~dvlta_metric.batch.score_files` on the actor's model: NVDEC decodes
    in ``workers`` threads on the actor's GPU, the views are cut there from the frames on the GPU, and the model
    scores ``batch_size`` videos per call while the threads decode the next ones.

    Args:
        workers: Decoding threads.
        batch_size: Videos per model call.
        limits: ``(max_megapixels, decode_timeout)``.
        options: :data:`~dvlta_metric.batch.ReadOptions`.
        seen: A Ray object reference to the keys already in the output (to skip), or ``None``.
        **kwargs: The arguments of :class:`Scorer`.
    """

    def __init__(
        self,
        *,
        workers: int,
        batch_size: int,
        limits: tuple[float | None, float | None],
        options: ReadOptions,
        seen: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.workers, self.batch_size, self.seen = workers, batch_size, seen
        self.limits, self.options = limits, options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Decode and score one batch of paths.

        Args:
            batch: ``{"path": ...}`` and optionally ``"file"``, as for :func:`decode_batch`.

        Returns:
            As :meth:`Scorer.__call__`.
        """
        skip = _seen(self.seen)
        given, real, opened = [], [], []
        for item, file in zip(batch["path"], batch.get("file", batch["path"])):
            path = os.fsdecode(_bytes(file))
            key = resume_key(path)
            if utf8_text(key) in skip:
                continue
            given.append(_bytes(item))
            real.append(os.fsencode(key))
            opened.append(path)
        matrix, range_, keep, decoder = self.options
        results = list(
            score_files(
                self.model,
                opened,
                batch_size=self.batch_size,
                num_workers=self.workers,
                progress=False,
                explain=self.explain,
                max_megapixels=self.limits[0],
                decode_timeout=self.limits[1],
                color_matrix=matrix,
                color_range=range_,
                keep_bit_depth=keep,
                decoder=decoder or "torchcodec",
            )
        )
        for raw, path, result in zip(given, opened, results):
            name = os.fsdecode(raw)
            if name != path:  # messages name the file as the results do
                result.error = result.error and result.error.replace(path, name)
                result.warning = result.warning and result.warning.replace(path, name)
        return self._rows(given, real, results)
