"""Train DVLTA-VQA from a feature cache: the paper's 10 random splits, or cross-dataset.

Only the trainable parts learn (CLIP adapter, Temporal Context Module, fragment head, text adapter; see
:func:`dvlta_metric_train.cached.trainable_modules`); the frozen backbones' outputs come from the cache built by
:mod:`dvlta_metric_train.features`, so no video is decoded here.

Recipe (paper section III-F / IV-C; warm-up and cosine decay from FAST-VQA): loss ``1 - PLCC`` over the
batch (``--rank-weight 0.3`` adds FAST-VQA's rank loss), AdamW with lr 1e-3 and weight decay 0.05, linear
warm-up over ``--warmup-epochs`` then cosine decay to 0 (per step), batch 16 videos, ``--epochs`` 30. After
every epoch the model is evaluated on the test split from the cached *inference* views (SROCC, PLCC after
the logistic fit, KRCC, RMSE); the best epoch by test SROCC (``--select best``, as FAST-VQA reports) or the
last one (``--select last``) is saved with ``save_pretrained``.

Layout of ``--out``::

    split_00/best/            config.json (metadata: dataset, split seed, epoch, results), model.safetensors, README.md
    split_00/last.pt          checkpoint to resume: trainable weights, optimizer, scheduler, epoch, RNG, history
    split_00/history.json     per-step loss, per-epoch lr and test metrics
    split_00/result.json      the selected epoch's metrics (a split with this file is done and skipped)
    split_00/predictions_<test>.csv   row, path, MOS, prediction of the selected epoch
    summary.json              every split's results and the median over splits

Rerunning the same command resumes: finished splits are skipped and an interrupted one continues from its
``last.pt`` (the data order and the fragment sample of each video depend only on the seed and the epoch,
so a resumed run gives the same result as an uninterrupted one).

Several GPUs or nodes: launch with ``torchrun`` (DDP over ``torch.distributed``: nccl on GPUs, gloo on CPUs).
``--batch-size`` stays the global batch; each of the ``N`` processes takes ``batch / N`` videos of every
step, the predictions are gathered so the PLCC loss is over the whole global batch, and batch norms use
global-batch statistics (:mod:`dvlta_metric_train.distributed`), so the loss curve matches one process.

This module runs the jobs (:func:`main`) and each job's phases (:func:`run_job`: set up, resume, train one
epoch, evaluate, keep the selected epoch, checkpoint); the settings and command line are in
:mod:`dvlta_metric_train.params`, the jobs and their identity in :mod:`dvlta_metric_train.jobs`, the optimiser
and its schedule in :mod:`dvlta_metric_train.scheduler`.

Command lines::

    python -m dvlta_metric_train.train --cache cache/konvid --out runs/konvid  # 10 random splits
    python -m dvlta_metric_train.train --cache cache/konvid --out runs/konvid --split 0 --split 1  # some splits
    python -m dvlta_metric_train.train --cache cache/konvid --test-cache cache/livevqc --test-cache cache/ytugc \\
        --out runs/konvid-cross  # cross-dataset
    torchrun --nproc_per_node 4 -m dvlta_metric_train.train --cache cache/konvid --out runs/konvid --device cuda
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

import dvlta_metric
from dvlta_metric._checkpoint import read_config
from dvlta_metric.loss import quality_loss
from dvlta_metric.model import DVLTAVQA

from . import distributed as dd
from .cache import FeatureCache
from .cached import CachedForward, CachedVideos, predict_cached, to_device, trainable_modules
from .files import save_torch_atomic, write_json_atomic
from .jobs import RESULT_NAME, Job, check_out_dir, check_same_run, make_jobs, run_identity, summarise
from .metrics import METRIC_NAMES, all_metrics
from .params import TrainSettings, build_parser
from .scheduler import make_optimizer
from .splits import PAPER_NUM_SPLITS, PAPER_TRAIN_FRACTION

CHECKPOINT_NAME = "last.pt"
HISTORY_NAME = "history.json"
SUMMARY_NAME = "summary.json"
BEST_DIR = "best"

PAPER_RESULTS: dict[str, dict[str, float]] = {
    "KoNViD-1k": {"srocc": 0.9121, "plcc": 0.9127},
    "LIVE-VQC": {"srocc": 0.8918, "plcc": 0.9027},
    "YouTube-UGC": {"srocc": 0.9180, "plcc": 0.9053},
}
"""Table II of the paper (median over 10 random 80/20 splits)."""


def _log(info: dd.DistInfo, text: str) -> None:
    if info.is_main:
        print(text, flush=True)


def _evaluate(
    model: DVLTAVQA, tests: dict[str, tuple[FeatureCache, list[int]]], settings: TrainSettings
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    results: dict[str, dict[str, Any]] = {}
    preds: dict[str, np.ndarray] = {}
    for name, (cache, rows) in tests.items():
        pred = predict_cached(model, cache, rows, batch_size=settings.eval_batch_size)
        mos = np.array([cache.mos(r) for r in rows])
        preds[name] = pred
        results[name] = all_metrics(pred, mos)
    return results, preds


def _selection_score(results: dict[str, dict[str, Any]]) -> float:
    values = [r["srocc"] for r in results.values()]
    score = float(np.mean(values))
    return score if math.isfinite(score) else -math.inf


def _write_predictions(
    directory: Path, tests: dict[str, tuple[FeatureCache, list[int]]], preds: dict[str, np.ndarray]
) -> None:
    for name, (cache, rows) in tests.items():
        path = directory / f"predictions_{_safe(name)}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["row", "path", "mos", "pred"])
            for row, pred in zip(rows, preds[name]):
                writer.writerow([row, cache.path(row), cache.mos(row), repr(float(pred))])


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def train_sampler(
    dataset: CachedVideos, world_size: int, rank: int, seed: int
) -> DistributedSampler[dict[str, torch.Tensor]]:
    """The training order of one process: every step's global batch is the same on any number of processes.

    The sampler shuffles all ``n`` rows by ``seed`` and the epoch, keeps the first ``n - n mod world_size``
    and gives process ``rank`` every ``world_size``-th of them. With the loader's ``batch_size / world_size``
    videos per process and ``drop_last``, step ``k`` covers positions ``[k B, (k + 1) B)`` of the shuffled
    order on every process count, and there are ``n // B`` steps, as on one process. (Padding instead of
    dropping, the sampler's default, would repeat videos and add a step when ``n mod B > B - world_size``.)

    Args:
        dataset: The training videos.
        world_size: Number of processes.
        rank: This process.
        seed: The run's seed.

    Returns:
        The sampler; call ``set_epoch`` before each epoch.
    """
    return DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)


@dataclass
class Progress:
    """Where a job stands, kept in its checkpoint.

    Attributes:
        start_epoch: The next epoch to train (0-based; the number of epochs done).
        best: ``{"score", "epoch", "results"}`` of the selected epoch so far.
        history: ``{"step_loss": [...], "epochs": [...]}``.
    """

    start_epoch: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"score": -math.inf, "epoch": None, "results": None})
    history: dict[str, Any] = field(default_factory=lambda: {"step_loss": [], "epochs": []})


def finished_result(job: Job, directory: Path, identity: dict[str, Any], info: dd.DistInfo) -> dict[str, Any] | None:
    """The ``result.json`` of a job already done (checked to be the same run), or ``None``.

    Raises:
        ValueError: If it was written by a run with other settings (see :func:`check_same_run`).
    """
    path = directory / RESULT_NAME
    if not path.is_file():
        return None
    done: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    check_same_run(path, done.get("run"), identity)
    _log(info, f"{job.name}: already done ({path}); skipping")
    return done


def prepare_model(job: Job, model_name: str, device: torch.device) -> tuple[DVLTAVQA, CachedForward]:
    """The initial model, checked against the job's caches, with only its trainable parts learning.

    Batch norms of the trainable parts are converted to global-batch ones for torchrun (same state dict keys).

    Returns:
        ``(model, net)``: the model, and the :class:`CachedForward` over it that trains.

    Raises:
        ValueError: If a cache was computed with other frozen backbones.
    """
    model = dvlta_metric.create(model_name, device=device)
    job.train_cache.check_model(model)
    for cache, _ in job.tests.values():
        cache.check_model(model)
    model.requires_grad_(False)
    for part in trainable_modules(model).values():
        dd.convert_batchnorm(part)
    net = CachedForward(model)
    net.requires_grad_(True)
    net.to(device)
    return model, net


def make_loader(job: Job, settings: TrainSettings, info: dd.DistInfo) -> DataLoader[dict[str, torch.Tensor]]:
    """This process's share of the training videos: ``batch_size / world_size`` per step (see :func:`train_sampler`).

    Raises:
        ValueError: If the batch does not divide among the processes, or the videos do not fill one batch.
    """
    world = info.world_size
    if settings.batch_size % world:
        raise ValueError(f"--batch-size {settings.batch_size} is not divisible by the {world} processes")
    train_set = CachedVideos(job.train_cache, job.train_rows, train=True, seed=settings.seed)
    loader = DataLoader(
        train_set,
        batch_size=settings.batch_size // world,
        sampler=train_sampler(train_set, world, info.rank, settings.seed),
        drop_last=True,
        num_workers=settings.num_workers,
        persistent_workers=False,
    )
    if len(loader) < 1:
        raise ValueError(
            f"{len(job.train_rows)} training videos do not fill one batch of {settings.batch_size}; lower --batch-size"
        )
    return loader


def wrap_ddp(net: torch.nn.Module, info: dd.DistInfo) -> torch.nn.Module:
    """``net`` under :class:`DistributedDataParallel` when several processes run, else ``net`` itself."""
    if info.world_size == 1:
        return net
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=device_ids, broadcast_buffers=False)


def resume(
    path: Path,
    identity: dict[str, Any],
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> Progress | None:
    """Load the checkpoint ``path`` (if there is one) into ``net``, the optimizer, the scheduler and torch's RNG.

    Returns:
        Where the interrupted run stood, or ``None`` when there is no checkpoint.

    Raises:
        ValueError: If the checkpoint belongs to a run with other settings (see :func:`check_same_run`).
    """
    if not path.is_file():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    check_same_run(path, ckpt.get("run"), identity)
    net.load_state_dict(ckpt["trainable"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    return Progress(int(ckpt["epoch"]), ckpt["best"], ckpt["history"])


def train_one_epoch(
    ddp: torch.nn.Module,
    loader: DataLoader[dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    rank_weight: float,
    device: torch.device,
) -> list[float]:
    """One epoch over ``loader``: the loss over each global batch (gathered from every process), one step each.

    Args:
        ddp: The trained network (under DDP when several processes run).
        loader: From :func:`make_loader`; its sampler and dataset are set to ``epoch``.
        optimizer: The optimizer.
        scheduler: Stepped after every optimizer step.
        epoch: The epoch (0-based): fixes the data order and each video's training sample.
        rank_weight: Weight of the rank loss added to ``1 - PLCC``.
        device: Where the batches go.

    Returns:
        The loss of each step.
    """
    loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
    loader.dataset.set_epoch(epoch)  # type: ignore[attr-defined]
    ddp.train()
    losses = []
    for batch in loader:
        batch = to_device(batch, device)
        scores, _ = ddp(batch)
        pred = dd.gather_with_grad(scores)
        mos = dd.gather(batch["mos"])
        loss = quality_loss(pred, mos, rank_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    return losses


def save_checkpoint(
    path: Path,
    progress: Progress,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    job_info: dict[str, Any],
    settings: TrainSettings,
    identity: dict[str, Any],
) -> None:
    """Write ``last.pt`` (atomically) after epoch ``progress.start_epoch``, and ``history.json`` beside it."""
    ckpt = {
        "epoch": progress.start_epoch,
        "trainable": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "best": progress.best,
        "history": progress.history,
        "rng": {"torch": torch.get_rng_state()},
        "job": job_info,
        "settings": asdict(settings),
        "run": identity,
    }
    save_torch_atomic(ckpt, path)
    write_json_atomic(path.parent / HISTORY_NAME, progress.history)


def run_job(
    job: Job, model_name: str, out: Path, settings: TrainSettings, info: dd.DistInfo, *, stop_after: int | None = None
) -> dict[str, Any] | None:
    """Train one split (or the cross-dataset run), resuming from its checkpoint if there is one.

    Args:
        job: What to train and test on.
        model_name: The initial model (``create()`` name).
        out: The run's output folder (``out / job.name`` is this job's).
        settings: Hyper-parameters.
        info: Distributed context.
        stop_after: Stop after this many epochs of this call (the checkpoint allows resuming).

    Returns:
        The job's result (``result.json``), or ``None`` if it stopped early.
    """
    directory = out / job.name
    identity = run_identity(job, model_name, settings)
    done = finished_result(job, directory, identity, info)
    if done is not None:
        return done
    if info.is_main:
        directory.mkdir(parents=True, exist_ok=True)
    dd.barrier()

    model, net = prepare_model(job, model_name, info.device)
    loader = make_loader(job, settings, info)
    optimizer, scheduler = make_optimizer(net, settings, len(loader))
    ddp = wrap_ddp(net, info)
    ckpt_path = directory / CHECKPOINT_NAME
    progress = resume(ckpt_path, identity, net, optimizer, scheduler)
    if progress is None:
        progress = Progress()
    else:
        _log(info, f"{job.name}: resuming at epoch {progress.start_epoch + 1} from {ckpt_path}")

    _log(
        info,
        f"{job.name}: {len(job.train_rows)} training videos, "
        + ", ".join(f"{n}: {len(r)} test videos" for n, (_, r) in job.tests.items())
        + f"; {len(loader)} steps/epoch on {info.world_size} process(es)",
    )
    for epochs_run, epoch in enumerate(range(progress.start_epoch, settings.epochs)):
        if stop_after is not None and epochs_run >= stop_after:
            return None
        t0 = time.perf_counter()
        losses = train_one_epoch(ddp, loader, optimizer, scheduler, epoch, settings.rank_weight, info.device)
        progress.history["step_loss"].extend(losses)
        results, preds = _evaluate(model, job.tests, settings)
        lr = optimizer.param_groups[0]["lr"]
        progress.history["epochs"].append(
            {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": lr, "results": results}
        )
        summary = " | ".join(
            f"{n}: " + " ".join(f"{m.upper()} {r[m]:.4f}" for m in METRIC_NAMES) for n, r in results.items()
        )
        _log(
            info,
            f"{job.name} epoch {epoch + 1}/{settings.epochs} loss {np.mean(losses):.4f} lr {lr:.2e} "
            f"({time.perf_counter() - t0:.1f}s) | {summary}",
        )
        score = _selection_score(results)
        is_last = epoch + 1 == settings.epochs
        if (settings.select == "best" and score > progress.best["score"]) or (settings.select == "last" and is_last):
            progress.best = {"score": score, "epoch": epoch + 1, "results": results}
            if info.is_main:
                save_selected(model, directory, job, model_name, settings, epoch + 1, results, preds)
        progress.start_epoch = epoch + 1
        if info.is_main:
            save_checkpoint(ckpt_path, progress, net, optimizer, scheduler, job.info, settings, identity)
        dd.barrier()
    return finish(job, directory, settings, progress, identity, info)


def save_selected(
    model: DVLTAVQA,
    directory: Path,
    job: Job,
    model_name: str,
    settings: TrainSettings,
    epoch: int,
    results: dict[str, dict[str, Any]],
    preds: dict[str, np.ndarray],
) -> None:
    """Save the selected epoch's model (``best/``, with its metadata) and its test predictions."""
    model.eval()
    model.save_pretrained(
        directory / BEST_DIR, fp16=settings.save_fp16, metadata=_metadata(job, model_name, settings, epoch, results)
    )
    _write_predictions(directory, job.tests, preds)


def finish(
    job: Job, directory: Path, settings: TrainSettings, progress: Progress, identity: dict[str, Any], info: dd.DistInfo
) -> dict[str, Any]:
    """The job's result (the selected epoch's metrics), written to ``result.json`` by the main process."""
    result = {
        "job": job.name,
        "split": job.info,
        "selected_epoch": progress.best["epoch"],
        "select": settings.select,
        "results": progress.best["results"],
        "missing": job.missing,
        "run": identity,
    }
    if info.is_main:
        write_json_atomic(directory / RESULT_NAME, result)
    dd.barrier()
    return result


def _metadata(
    job: Job, model_name: str, settings: TrainSettings, epoch: int, results: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    init: dict[str, Any] = {"model": model_name}
    if model_name.startswith("local-dir:"):
        try:
            _, meta = read_config(Path(model_name[len("local-dir:") :]) / "config.json")
            init["sources"] = meta.get("sources")
        except (OSError, ValueError) as err:  # provenance only: record why it is missing, train on
            init["sources"] = f"unknown ({type(err).__name__}: {err})"
    datasets = [job.train_cache.name]
    return {
        "description": f"DVLTA-VQA trained on {job.train_cache.name} ({job.name}, epoch {epoch})",
        "datasets": datasets,
        "results": {name: {m: r[m] for m in METRIC_NAMES} for name, r in results.items()},
        "split": job.info,
        "epoch": epoch,
        "selected_by": "test SROCC (best epoch)" if settings.select == "best" else "last epoch",
        "training": asdict(settings),
        "init": init,
        "feature_cache": {"dir": str(job.train_cache.directory), **job.train_cache.index["settings"]},
        **({"license": settings.license} if settings.license else {}),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Train every requested split, then write ``summary.json``.

    Returns:
        0 on success, 2 on a usage error, 3 when stopped early by ``--stop-after``.
    """
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        settings = TrainSettings(
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
            warmup_epochs=args.warmup_epochs, rank_weight=args.rank_weight, seed=args.seed, select=args.select,
            eval_batch_size=args.eval_batch_size, num_workers=args.num_workers, save_fp16=args.save_fp16,
            license=args.license,
        )  # fmt: skip
        if args.test_cache and (args.split or args.splits is not None or args.train_fraction is not None):
            raise ValueError(
                "--test-cache trains one cross-dataset model on every video of --cache; --split, --splits and "
                "--train-fraction are for random splits of one dataset: drop them, or drop --test-cache"
            )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    info = dd.setup(args.device)
    try:
        try:
            train_cache = FeatureCache(args.cache)
            test_caches = [FeatureCache(c) for c in args.test_cache]
            model_name = args.model or str(train_cache.index.get("model") or "")
            if not model_name:
                raise ValueError("the cache does not record its model: give --model")
            splits = args.split if args.split else list(range(PAPER_NUM_SPLITS if args.splits is None else args.splits))
            fraction = PAPER_TRAIN_FRACTION if args.train_fraction is None else args.train_fraction
            jobs = make_jobs(train_cache, test_caches, splits, fraction)
            out = Path(args.out)
            check_out_dir(out, [run_identity(job, model_name, settings) for job in jobs])
        except (ValueError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        results = []
        for job in jobs:
            try:
                result = run_job(job, model_name, out, settings, info, stop_after=args.stop_after)
            except (ValueError, FileNotFoundError) as err:
                print(f"error: {job.name}: {err}", file=sys.stderr)
                return 2
            if result is None:
                _log(info, f"{job.name}: stopped after {args.stop_after} epoch(s); rerun the command to resume")
                return 3
            results.append(result)
        if info.is_main:
            done = sorted(p.parent.name for p in out.glob(f"*/{RESULT_NAME}"))
            everything = [json.loads((out / n / RESULT_NAME).read_text(encoding="utf-8")) for n in done]
            summary: dict[str, Any] = {
                "dataset": train_cache.name,
                "protocol": "cross-dataset" if test_caches else "random splits",
                "jobs": everything,
                "median": summarise(everything),
                "paper": PAPER_RESULTS,
                "settings": asdict(settings),
                "model": model_name,
            }
            write_json_atomic(out / SUMMARY_NAME, summary)
            median: dict[str, dict[str, Any]] = summary["median"]
            for name, res in median.items():
                print(
                    f"{name}: median over {res['splits']} run(s): "
                    + " ".join(f"{m.upper()} {res[m]['median']:.4f}" for m in METRIC_NAMES)
                )
        return 0
    finally:
        dd.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
