"""Build the feature cache: decode every video once and store what the frozen backbones make of it.

The format, and the reader training uses, are in :mod:`dvlta_metric_train.cache`. Here: the views of each
video (the inference views, and ``K`` training samples, each drawn from its own generator,
:func:`sample_generator`), their encoding by the frozen part of each branch (``model.encode``), and writing
each video's folder under a temporary name that is renamed into place (:func:`remove_stale_temporaries`
clears those of killed runs).

Decoding holds at most ``--max-frames`` decoded frames per read (the inference view alone needs
``num_clips * clip_len + T`` = 136 for the paper's model), and ``--workers`` reads run ahead of the model.

Command line::

    python -m dvlta_metric_train.features --model local-dir:weights/dvlta-vqa-init --dataset konvid \\
        --root /data/KoNViD --out cache/konvid --device cuda
    python -m dvlta_metric_train.features --model local-dir:weights/dvlta-vqa-init --csv mine.csv --out cache/mine
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import sys
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import dvlta_metric
from dvlta_metric.config import ModelConfig
from dvlta_metric.decoded import DecodedVideo
from dvlta_metric.model import DVLTAVQA, branch_dtypes, branch_view
from dvlta_metric.views import frames_to_decode

from .cache import (
    CACHE_VERSION,
    DTYPES,
    ERRORS_DIR,
    FP16_SHA_KEY,
    INDEX_NAME,
    META_NAME,
    VIDEOS_DIR,
    array_shapes,
    backbone_fingerprint,
    backbones_sha256,
    cache_bytes_per_video,
    sampled_branches,
    video_key,
    video_problem,
)
from .datasets import CheckReport, VQADataset, add_dataset_arguments, dataset_from_arguments
from .files import jsonable, prefetch, write_json_atomic

TMP_PREFIX = ".tmp-"
# this host in temporary folder names; no '-' or '@', so the names parse from the right
_HOST = re.sub(r"[^A-Za-z0-9.]+", "_", socket.gethostname()) or "host"


def video_seed(seed: int, path: str) -> int:
    """Per-video seed of the training samples: from the cache seed and the video's relative path."""
    return int(np.random.SeedSequence([seed, zlib.crc32(path.encode("utf-8"))]).generate_state(1)[0])


# ------------------------------------------------------------------------------------------------ temporaries
def _pid_running(pid: int) -> bool:
    """Whether a process with this id runs on this host (``True`` when that cannot be told)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there: never call a folder stale
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists under another user; anything else: keep its folder
        return True
    return True


def _tmp_name(key: str, suffix: str = "") -> str:
    """Name of this process's temporary folder for video ``key``: ``.tmp-<key><suffix>@<host>-<pid>``."""
    return f"{TMP_PREFIX}{key}{suffix}@{_HOST}-{os.getpid()}"


def remove_stale_temporaries(videos: Path) -> list[Path]:
    """Remove the temporary video folders that killed runs left in ``videos``.

    A folder ``.tmp-<key>@<host>-<pid>`` is removed when ``<host>`` is this host and no process ``<pid>``
    runs (checked with ``os.kill(pid, 0)``); folders of running processes (other ``--shard`` processes,
    this one) and of other hosts sharing the cache folder are kept. Folders of the older format
    ``.tmp-<key>-<pid>`` (no host) are taken to be this host's. A process id reused since the run died keeps
    its folder until that process ends. Nothing is removed on Windows.

    Args:
        videos: The cache's ``videos`` folder.

    Returns:
        The removed folders.
    """
    removed: list[Path] = []
    try:
        entries = list(videos.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(TMP_PREFIX):
            continue
        head, _, pid_text = entry.name.rpartition("-")
        if not pid_text.isdigit():
            continue
        host = head.rpartition("@")[2] if "@" in head else _HOST
        pid = int(pid_text)
        if host != _HOST or pid == os.getpid() or _pid_running(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)  # another process may be removing it too
            if not entry.exists():
                removed.append(entry)
    return removed


# ------------------------------------------------------------------------------------------------ computing
@dataclass(frozen=True)
class _Read:
    """One decoding pass of one video: the inference views and/or some training samples."""

    row: int
    eval_views: bool
    samples: tuple[int, ...]


def plan_reads(config: ModelConfig, samples: int, max_frames: int) -> list[tuple[bool, tuple[int, ...]]]:
    """Group the inference views and the ``K`` training samples into decoding passes of bounded size.

    Args:
        config: Model configuration.
        samples: ``K``.
        max_frames: Largest number of frames one pass may hold decoded (at least one item per pass).

    Returns:
        ``[(eval_views, sample indices), ...]``; the first pass has the inference views.
    """
    frag, frames = config.fragment_view, config.frame_view.num_frames
    views = {branch_view(name, config) for name in config.branches}
    sampled = {branch_view(name, config) for name in sampled_branches(config)}
    eval_cost = (frag.num_clips * frag.clip_len if "fragments" in views else 0) + frames * len(views - {"fragments"})
    per_sample = (frag.clip_len if "fragments" in sampled else 0) + (frames if "consecutive" in sampled else 0)
    k = samples if sampled else 0
    reads: list[tuple[bool, list[int]]] = [(True, [])]
    used = eval_cost
    for s in range(k):
        if used + per_sample > max_frames and (reads[-1][1] or reads[-1][0]):
            reads.append((False, []))
            used = 0
        reads[-1][1].append(s)
        used += per_sample
    return [(e, tuple(s)) for e, s in reads]


def sample_generator(video_seed_: int, sample: int) -> torch.Generator:
    """The generator of training sample ``sample`` of a video: it draws the sample's clip and patch offsets."""
    state = np.random.SeedSequence([video_seed_, sample]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))


def _decode(model: DVLTAVQA, path: Path, read: _Read, seed: int) -> DecodedVideo:
    from dvlta_metric.video_io import read_video

    def select(num_frames: int) -> list[int]:
        indices = [model.view_indices(num_frames)] if read.eval_views else []
        for s in read.samples:  # the same draws as features_of_read makes: a fresh generator per sample
            indices.append(model.view_indices(num_frames, train=True, generator=sample_generator(seed, s)))
        return sorted({i for views in indices for i in frames_to_decode(views)})

    return read_video(path, select=select)


@torch.no_grad()
def features_of_read(
    model: DVLTAVQA, decoded: DecodedVideo, read: _Read, seed: int, precision: str = "fp32"
) -> dict[str, torch.Tensor]:
    """The cached arrays one decoding pass contributes (float32, on the CPU): ``model.encode`` of its views.

    The inference views are ``model.make_views(decoded, train=False)``; training sample ``s`` is
    ``model.make_views(decoded, train=True, generator=sample_generator(seed, s))``, encoded for the
    :func:`~dvlta_metric_train.cache.sampled_branches` only.

    Args:
        model: The model.
        decoded: The frames of the pass.
        read: Which views the pass is for.
        seed: The video's seed (:func:`video_seed`).
        precision: How the frozen backbones compute (see :func:`build_cache`).

    Returns:
        ``<branch>`` arrays (eval pass) and ``<branch>_train:<s>`` per sample.
    """
    out: dict[str, torch.Tensor] = {}
    sampled = sampled_branches(model.config)
    if read.samples and sampled:
        views = [model.make_views(decoded, train=True, generator=sample_generator(seed, s)) for s in read.samples]
        batch = {k: torch.stack([v[k] for v in views]) for k in views[0]}
        for name, encoded in model.encode(batch, precision, names=sampled).items():
            out.update({f"{name}_train:{s}": e for s, e in zip(read.samples, encoded)})
    if read.eval_views:
        views = model.make_views(decoded, train=False)  # exactly the inference views
        encoded = model.encode({k: v[None] for k, v in views.items()}, precision)
        out.update({name: e[0] for name, e in encoded.items()})
    return {k: v.float().cpu() for k, v in out.items()}


@dataclass
class CacheSummary:
    """What :func:`build_cache` did.

    Attributes:
        cached: Videos computed in this run (``repaired`` included).
        skipped: Videos already in the cache.
        failed: ``{row: reason}`` for videos that could not be cached.
        repaired: ``{row: what was wrong}`` for videos whose folder was damaged (see :func:`video_problem`),
            so they were computed again.
        removed_temporaries: Temporary folders of killed runs removed (see :func:`remove_stale_temporaries`).
    """

    cached: int
    skipped: int
    failed: dict[int, str]
    repaired: dict[int, str] = field(default_factory=dict)
    removed_temporaries: int = 0


def _index_document(model_name: str, model: DVLTAVQA, data: VQADataset, settings: dict[str, Any]) -> dict[str, Any]:
    return jsonable(
        {
            "version": CACHE_VERSION,
            "model": model_name,
            "fingerprint": backbone_fingerprint(model),
            FP16_SHA_KEY: backbones_sha256(model, round_fp16=True),
            "settings": settings,
            "arrays": list(array_shapes(model.config, settings["samples"])),
            "shapes": {k: list(v) for k, v in array_shapes(model.config, settings["samples"]).items()},
            "dataset": {"name": data.name, "root": str(data.root), "labels": str(data.labels), "rows": len(data)},
            "entries": [
                {"row": i, "path": item.path, "mos": item.mos, "key": video_key(item.path)}
                for i, item in enumerate(data.items)
            ],
        }
    )


def build_cache(
    model: DVLTAVQA,
    data: VQADataset,
    out: str | Path,
    *,
    model_name: str = "",
    samples: int = 8,
    seed: int = 0,
    dtype: str = "float16",
    precision: str = "fp32",
    max_frames: int = 128,
    workers: int = 2,
    skip: Iterable[int] = (),
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
) -> CacheSummary:
    """Compute and store the features of every video of ``data`` (skipping those already cached).

    Args:
        model: The model whose frozen backbones make the features (e.g. the output of ``dvlta_metric_train.convert``).
        data: The dataset.
        out: Cache folder (created; an existing cache must have the same settings and model).
        model_name: How the model was named, for ``index.json``.
        samples: ``K``, augmented training samples per video.
        seed: Seed the per-video sample seeds derive from.
        dtype: ``"float16"`` or ``"float32"``: how the features are stored.
        precision: How the frozen backbones compute (:meth:`DVLTAVQA.set_precision`): ``"fp16"`` runs the
            Swin3D and CLIP towers in float16 (the whole model ran about 3x faster in fp16 than in fp32 on an
            H200) and moved the cached features by under 0.1 % (relative) in the tests.
        max_frames: Frames one decoding pass may hold.
        workers: Decoding threads running ahead of the model (0: decode in this thread).
        skip: Rows not to compute (e.g. missing videos found by the check).
        shard: ``(i, n)``: compute only rows with ``row % n == i`` (run ``n`` processes on one cache).
        progress: Show a tqdm progress bar.

    Returns:
        What was done.

    Videos whose folder is damaged (files missing or not of the size ``meta.json`` records, see
    :func:`video_problem`) are computed again; temporary folders left by killed runs are removed first
    (:func:`remove_stale_temporaries`).

    Raises:
        ValueError: For bad settings, an ``out`` that is not a folder, or an existing cache made with other
            settings or backbones.
        OSError: If the cache cannot be written (e.g. the disk is full); the videos finished before are kept.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    branch_dtypes(precision, model.device.type)  # raises ValueError for an unknown precision
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    shard_i, shard_n = shard
    if not 0 <= shard_i < shard_n:
        raise ValueError(f"shard {shard_i}/{shard_n}: expected 0 <= i < n")
    out = Path(out)
    for folder in (out, out / VIDEOS_DIR, out / ERRORS_DIR):
        if folder.exists() and not folder.is_dir():
            raise ValueError(
                f"{folder} exists and is not a folder: give a new folder for the feature cache, or an existing "
                "cache to continue"
            )
    (out / VIDEOS_DIR).mkdir(parents=True, exist_ok=True)
    (out / ERRORS_DIR).mkdir(exist_ok=True)
    settings = {"samples": samples, "seed": seed, "dtype": dtype, "precision": precision}
    doc = _index_document(model_name, model, data, settings)
    index_path = out / INDEX_NAME
    if index_path.is_file():
        old = json.loads(index_path.read_text(encoding="utf-8"))
        diff = [k for k in ("version", "fingerprint", "settings", "arrays", "entries") if old.get(k) != doc.get(k)]
        if diff:
            raise ValueError(
                f"{out} already holds a feature cache made with other {', '.join(diff)}; "
                "use a new --out folder (or delete this one) to build a cache with these settings"
            )
        if FP16_SHA_KEY not in old:  # written before the float16 digest was recorded: add it
            write_json_atomic(index_path, {**old, FP16_SHA_KEY: doc[FP16_SHA_KEY]})
    else:
        write_json_atomic(index_path, doc)
    removed = remove_stale_temporaries(out / VIDEOS_DIR)

    skip_set = set(skip)
    shapes = array_shapes(model.config, samples)
    plan = plan_reads(model.config, samples, max_frames)
    np_dtype = DTYPES[dtype]
    todo: list[int] = []
    repaired: dict[int, str] = {}
    mine = [r for r in range(len(data)) if r % shard_n == shard_i and r not in skip_set]
    for r in mine:
        folder = out / VIDEOS_DIR / video_key(data[r].path)
        if not folder.is_dir():
            todo.append(r)
            continue
        problem = video_problem(folder, shapes, np_dtype)
        if problem is not None:
            todo.append(r)
            repaired[r] = problem
    skipped = len(mine) - len(todo)
    reads = [_Read(r, e, s) for r in todo for e, s in plan]
    seeds = {r: video_seed(seed, data[r].path) for r in todo}

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"features {data.name}", unit="video")
    failed: dict[int, str] = {}
    parts: dict[str, torch.Tensor] = {}
    done = 0
    try:
        for read, result in prefetch(lambda rd: _decode(model, data.file(rd.row), rd, seeds[rd.row]), reads, workers):
            row = read.row
            if row in failed:
                continue
            try:
                if isinstance(result, BaseException):
                    raise result
                parts.update(features_of_read(model, result, read, seeds[row], precision))
                del result
            except (ValueError, FileNotFoundError, PermissionError, RuntimeError) as err:
                failed[row] = f"{type(err).__name__}: {err}"
                write_json_atomic(
                    out / ERRORS_DIR / f"{video_key(data[row].path)}.json",
                    {"row": row, "path": data[row].path, "reason": failed[row]},
                )
                parts.clear()
                if bar is not None:
                    bar.update(1)
                continue
            if read.samples == plan[-1][1] and read.eval_views == plan[-1][0]:  # last pass of this video
                arrays = _assemble(parts, samples)
                parts.clear()
                for name, shape in shapes.items():
                    if tuple(arrays[name].shape) != shape:
                        raise RuntimeError(f"{name}: computed shape {tuple(arrays[name].shape)} != expected {shape}")
                _write_video(out, data, row, arrays, np_dtype)
                done += 1
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    repaired = {r: why for r, why in repaired.items() if r not in failed}
    return CacheSummary(done, skipped, failed, repaired, len(removed))


def _assemble(parts: dict[str, torch.Tensor], samples: int) -> dict[str, torch.Tensor]:
    arrays = {k: v for k, v in parts.items() if ":" not in k}
    for name in {k.partition(":")[0] for k in parts if ":" in k}:
        arrays[name] = torch.stack([parts[f"{name}:{s}"] for s in range(samples) if f"{name}:{s}" in parts])
    return arrays


def _write_video(out: Path, data: VQADataset, row: int, arrays: dict[str, torch.Tensor], dtype: Any) -> None:
    """Write one video's folder under a temporary name and rename it into place (replacing a damaged one)."""
    item = data[row]
    key = video_key(item.path)
    videos = out / VIDEOS_DIR
    final = videos / key
    tmp = videos / _tmp_name(key)
    shapes = {name: tuple(value.shape) for name, value in arrays.items()}
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        sizes = {}
        for name, value in arrays.items():
            np.save(tmp / f"{name}.npy", value.numpy().astype(dtype))
            sizes[name] = int((tmp / f"{name}.npy").stat().st_size)
        meta = {"row": row, "path": item.path, "mos": item.mos, "bytes": sizes}
        (tmp / META_NAME).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        if final.is_dir():
            if video_problem(final, shapes, dtype) is None:  # another shard or a previous run got there first
                shutil.rmtree(tmp)
                return
            old = videos / _tmp_name(key, ".old")  # a damaged folder: set it aside, then replace it
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, final)
            except OSError:
                if final.is_dir() and video_problem(final, shapes, dtype) is None:  # lost a race to another shard
                    shutil.rmtree(tmp)
                    return
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # e.g. a full disk: leave no partial folder behind
        raise
    stale = out / ERRORS_DIR / f"{key}.json"
    if stale.exists():
        stale.unlink()


# ------------------------------------------------------------------------------------------------ CLI
def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard expects I/N, e.g. 0/4, got {text!r}") from None
    return i, n


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m dvlta_metric_train.features``."""
    parser = argparse.ArgumentParser(
        prog="python -m dvlta_metric_train.features",
        description="Decode each video once and cache the frozen backbones' features for training.",
    )
    parser.add_argument("--model", required=True, help="the model, e.g. local-dir:weights/dvlta-vqa-init")
    parser.add_argument("--out", required=True, help="cache folder (resumable: rerun to continue)")
    add_dataset_arguments(parser)
    parser.add_argument("--samples", type=int, default=8, help="augmented training samples per video (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training samples (default 0)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16", help="storage dtype (default float16)")
    parser.add_argument(
        "--precision",
        choices=["fp32", "fp16", "bf16"],
        default="fp32",
        help="how the frozen backbones compute: fp16 is much faster on a GPU (see DVLTAVQA.set_precision)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--max-frames", type=int, default=128, help="decoded frames held per pass (default 128)")
    parser.add_argument("--workers", type=int, default=2, help="decoding threads (default 2)")
    parser.add_argument("--skip-missing", action="store_true", help="cache the readable videos, skip the others")
    parser.add_argument("--no-check", action="store_true", help="do not probe the videos first")
    parser.add_argument("--shard", type=_shard, default=(0, 1), help="I/N: this process's share of the videos")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or continue) a feature cache.

    Returns:
        0 when every video is cached, 1 when some could not be (listed), 2 for a usage error.
    """
    args = build_parser().parse_args(argv)
    try:
        data = dataset_from_arguments(args)
        model = dvlta_metric.create(args.model, device=args.device)
    except (ValueError, FileNotFoundError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    skip: set[int] = set()
    missing = 0
    if not args.no_check:
        report: CheckReport = data.check(progress=not args.no_progress)
        if not report.ok:
            print(report.summary(), file=sys.stderr)
            if not args.skip_missing:
                print(
                    "error: fix or remove these videos, or rerun with --skip-missing to cache the others",
                    file=sys.stderr,
                )
                return 1
            skip = report.bad_indices
            missing = sum(1 for p in report.problems if p.reason == "missing")
    try:
        summary = build_cache(
            model,
            data,
            args.out,
            model_name=args.model,
            samples=args.samples,
            seed=args.seed,
            dtype=args.dtype,
            precision=args.precision,
            max_frames=args.max_frames,
            workers=args.workers,
            skip=skip,
            shard=args.shard,
            progress=not args.no_progress,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(
            f"error: writing the feature cache {args.out} failed: {err}. Fix the cause (e.g. free disk space) and "
            "rerun the same command: the videos cached so far are kept",
            file=sys.stderr,
        )
        return 1
    size = cache_bytes_per_video(model.config, args.samples, args.dtype)["total"]
    skipped = (
        f"{missing} skipped as missing, {len(skip) - missing} as unreadable"
        if missing
        else (f"{len(skip)} skipped as unreadable")
    )
    print(
        f"{data.name}: {summary.cached} videos cached, {summary.skipped} already there, "
        f"{len(summary.failed)} failed, {skipped}; {size / 2**20:.2f} MiB per video in {args.out}"
    )
    if summary.repaired:
        print(f"  {len(summary.repaired)} of the videos cached were recomputed because their folder was damaged:")
        for row, reason in sorted(summary.repaired.items())[:20]:
            print(f"  recomputed: {data[row].path}: {reason}")
    if summary.removed_temporaries:
        print(f"  removed {summary.removed_temporaries} temporary folder(s) left by interrupted runs")
    for row, reason in sorted(summary.failed.items())[:20]:
        print(f"  failed: {data[row].path}: {reason}", file=sys.stderr)
    return 0 if not summary.failed and not skip else 1


if __name__ == "__main__":
    raise SystemExit(main())
