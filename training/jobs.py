"""What one training run is: its jobs (random splits or cross-dataset), which runs are the same, and their summary.

A job's :func:`run_identity` is stored with its checkpoint and result, so that a resumed run, or a finished
result reused, is refused when the split, the model, the settings or the cached rows differ.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cache import FeatureCache
from .files import jsonable
from .metrics import METRIC_NAMES
from .params import TrainSettings
from .splits import cross_dataset, paths_digest, random_split

RESULT_NAME = "result.json"


@dataclass
class Job:
    """One training run: training rows of one cache and the test sets.

    Attributes:
        name: Output folder name (``split_00``, ``cross``).
        train_cache: Cache of the training dataset.
        train_rows: Its training rows.
        tests: ``{test name: (cache, rows)}``.
        info: Split description for metadata.
        missing: Rows dropped because they are not in a cache.
    """

    name: str
    train_cache: FeatureCache
    train_rows: list[int]
    tests: dict[str, tuple[FeatureCache, list[int]]]
    info: dict[str, Any]
    missing: dict[str, int] = field(default_factory=dict)


def make_jobs(
    train_cache: FeatureCache, test_caches: Sequence[FeatureCache], splits: Sequence[int], train_fraction: float
) -> list[Job]:
    """The jobs of a run: one per random split, or one cross-dataset job when test caches are given."""
    available = set(train_cache.available_rows())
    if not available:
        raise ValueError(
            f"the feature cache {train_cache.directory} holds no video yet; run dvlta_metric_train.features"
        )
    if test_caches:
        names = [train_cache.name] + [c.name for c in test_caches]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(
                f"the training cache and the test caches must be different datasets, but {repeated} names more "
                "than one (a cache is named after its dataset, or its CSV file): give each test dataset once, "
                "and name CSV files apart"
            )
        desc = cross_dataset(train_cache.name, [c.name for c in test_caches])
        tests = {}
        for cache in test_caches:
            rows = cache.available_rows()
            if len(rows) < 2:
                raise ValueError(
                    f"the test cache {cache.directory} holds {len(rows)} video(s); the test metrics need at least 2"
                )
            tests[cache.name] = (cache, rows)
        missing = {train_cache.name: len(train_cache) - len(available)}
        missing.update({c.name: len(c) - len(tests[c.name][1]) for c in test_caches})
        return [Job("cross", train_cache, sorted(available), tests, desc, missing)]
    jobs = []
    for index in splits:
        split = random_split(len(train_cache), index, train_fraction)
        train = [r for r in split.train if r in available]
        test = [r for r in split.test if r in available]
        if len(test) < 2:
            raise ValueError(
                f"split {index}: {len(test)} of its {len(split.test)} test videos are in the cache "
                f"{train_cache.directory}; "
                "the test metrics need at least 2: cache more videos or lower --train-fraction"
            )
        info = {
            "protocol": "random",
            **split.to_dict(),
            "train_fraction": train_fraction,
            "test_paths_sha256": paths_digest([train_cache.path(r) for r in split.test]),
        }
        missing = {"train": len(split.train) - len(train), "test": len(split.test) - len(test)}
        jobs.append(
            Job(f"split_{index:02d}", train_cache, train, {train_cache.name: (train_cache, test)}, info, missing)
        )
    return jobs


def summarise(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median (and mean, std) over splits of each test set's metrics."""
    names = sorted({n for r in results for n in (r.get("results") or {})})
    out: dict[str, Any] = {}
    for name in names:
        rows = [r["results"][name] for r in results if r.get("results") and name in r["results"]]
        out[name] = {
            m: {
                "median": float(np.median([x[m] for x in rows])),
                "mean": float(np.mean([x[m] for x in rows])),
                "std": float(np.std([x[m] for x in rows])),
            }
            for m in METRIC_NAMES
        }
        out[name]["splits"] = len(rows)
    return out


RESUME_FREE_SETTINGS = ("num_workers", "save_fp16", "license")
"""Settings that may change between an interrupted run and its resumption: they change the speed or how the
saved model is stored and labelled, not the training or its results."""


def run_identity(job: Job, model_name: str, settings: TrainSettings) -> dict[str, Any]:
    """What a job's results depend on, stored with its checkpoint and result to check a resumed run against.

    Args:
        job: The job.
        model_name: The initial model.
        settings: Hyper-parameters.

    Returns:
        JSON-friendly ``{"model", "split", "settings", "rows"}``; ``rows`` is a SHA-256 of the training and
        test rows, so a feature cache that gained or lost videos since the run began is noticed.
    """
    rows = {"train": job.train_rows, "tests": {n: r for n, (_, r) in sorted(job.tests.items())}}
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode("utf-8")).hexdigest()
    kept = {k: v for k, v in asdict(settings).items() if k not in RESUME_FREE_SETTINGS}
    return jsonable({"model": model_name, "split": job.info, "settings": kept, "rows": digest})


def check_same_run(path: Path, stored: dict[str, Any] | None, current: dict[str, Any]) -> None:
    """Refuse to resume (or to reuse a finished result) under a different split, model or settings.

    Args:
        path: The checkpoint or ``result.json`` the stored identity came from (named in the error).
        stored: Its :func:`run_identity` (``None`` for files written before it was recorded: not checked).
        current: This command's :func:`run_identity`.

    Raises:
        ValueError: Naming every differing field, and what to do.
    """
    if stored is None or stored == current:
        return
    diffs = []
    for key in ("model", "split", "settings"):
        old, new = stored.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            diffs += [
                f"{key}.{k}: {old.get(k)!r} then, {new.get(k)!r} now"
                for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k)
            ]
        elif old != new:
            diffs.append(f"{key}: {old!r} then, {new!r} now")
    if stored.get("rows") != current.get("rows") and not diffs:
        diffs.append("the training or test rows (the feature cache gained or lost videos)")
    raise ValueError(
        f"{path} belongs to a run with other settings ({'; '.join(diffs)}); rerun with the same settings to "
        "resume it, or give another --out (or delete that folder) to start again"
    )


def _shared(identity: dict[str, Any]) -> dict[str, Any]:
    """The part of a :func:`run_identity` that every job of one ``--out`` folder shares."""
    split = identity.get("split") or {}
    return {
        "model": identity.get("model"),
        "settings": identity.get("settings"),
        "protocol": split.get("protocol"),
        "train_fraction": split.get("train_fraction"),
    }


def check_out_dir(out: Path, identities: Sequence[dict[str, Any]]) -> None:
    """Refuse an ``--out`` folder holding jobs run with another model, protocol or settings.

    ``summary.json`` takes its median over every job in the folder, so they must all be runs of one recipe
    (a job of this command is checked in full by :func:`dvlta_metric_train.train.run_job`).

    Args:
        out: The run's output folder.
        identities: This command's jobs' :func:`run_identity`.

    Raises:
        ValueError: Naming the first job of the folder that differs, and what to do.
    """
    if not identities or not out.is_dir():
        return
    wanted = _shared(identities[0])
    for path in sorted(out.glob(f"*/{RESULT_NAME}")):
        stored = json.loads(path.read_text(encoding="utf-8")).get("run")
        if stored is not None and _shared(stored) != wanted:
            diffs = [k for k in wanted if _shared(stored)[k] != wanted[k]]
            raise ValueError(
                f"{path} was trained with different values of {', '.join(diffs)}, and summary.json takes the "
                f"median over every job in {out}: give another --out, or rerun with that job's settings"
            )
