"""Evaluate a model on a dataset: SROCC, PLCC, KRCC, RMSE, and a scatter plot with the fitted logistic.

Two ways to get the predictions:

* from the video files (``--dataset``/``--csv``): each video is decoded and scored exactly as
  ``model(path)`` does; any model works, trained or not;
* from a feature cache (``--cache``): the cached inference-view features of the model's frozen backbones
  (fast; the model must have the backbones the cache was built with, which every model trained from that
  cache has).

``--split I`` restricts the evaluation to the test part of the paper's random split ``I`` (see
:mod:`dvlta_metric_train.splits`). Writes ``results.json`` (metrics and the logistic parameters), ``predictions.csv``
and ``scatter.png`` (MOS against prediction with the fitted curve, as the paper's Fig. 3) into ``--out``.

Command lines::

    python -m dvlta_metric_train.evaluate --model local-dir:runs/konvid/split_00/best --dataset konvid \\
        --root /data/KoNViD --split 0 --out eval/konvid-00
    python -m dvlta_metric_train.evaluate --model dvlta-vqa-zeroshot --csv mine.csv --out eval/mine
    python -m dvlta_metric_train.evaluate --model local-dir:runs/konvid/split_00/best --cache cache/konvid --split 0 \\
        --out eval/konvid-00-cached
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import dvlta_metric
from dvlta_metric._checkpoint import read_config, write_calibration
from dvlta_metric.calibration import Calibration
from dvlta_metric.model import DVLTAVQA

from .cache import FeatureCache
from .cached import predict_cached
from .datasets import VQADataset, add_dataset_arguments, dataset_from_arguments
from .files import prefetch, write_json_atomic
from .metrics import LogisticFit, all_metrics, fit_logistic
from .splits import PAPER_TRAIN_FRACTION, paths_digest, random_split


def predict_files(
    model: DVLTAVQA, files: Sequence[str | Path], *, workers: int = 2, progress: bool = True
) -> tuple[np.ndarray, dict[int, str]]:
    """Score video files as ``model(path)`` would, decoding ahead in threads.

    Args:
        model: The model (eval mode).
        files: Video files.
        workers: Decoding threads.
        progress: Show a tqdm progress bar.

    Returns:
        ``(scores, failures)``: ``(N,)`` float64 scores (NaN where a file failed) and ``{index: reason}``.
    """
    from dvlta_metric.video_io import read_video

    model.eval()
    scores = np.full(len(files), np.nan)
    failures: dict[int, str] = {}
    results = prefetch(lambda i: read_video(files[i], select=model.needed_frames), range(len(files)), workers)
    if progress:
        from tqdm.auto import tqdm

        results = tqdm(results, total=len(files), desc="scoring", unit="video")
    with torch.no_grad():
        for i, decoded in results:
            if isinstance(decoded, BaseException):
                failures[i] = f"{type(decoded).__name__}: {decoded}"
                continue
            try:
                scores[i] = float(model(decoded))
            except (ValueError, RuntimeError) as err:
                failures[i] = f"{type(err).__name__}: {err}"
    return scores, failures


def scatter_plot(
    pred: Sequence[float] | np.ndarray,
    mos: Sequence[float] | np.ndarray,
    path: str | Path,
    *,
    fit: LogisticFit | None = None,
    title: str = "",
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Save a MOS-vs-prediction scatter plot with the fitted logistic curve as PNG (Agg, no display needed).

    Args:
        pred: Predicted scores.
        mos: Mean opinion scores.
        path: PNG file to write.
        fit: The fitted map (computed when ``None``).
        title: Plot title.
        metrics: Shown in the legend box (``srocc``, ``plcc``, ...).

    Returns:
        The file.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(mos, dtype=np.float64)
    fit = fit or fit_logistic(x, y)
    fig = Figure(figsize=(5.0, 4.2), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(x, y, s=10, alpha=0.6, edgecolors="none", label="videos")
    grid = np.linspace(float(x.min()), float(x.max()), 200)
    ax.plot(grid, fit(grid), color="tab:red", linewidth=1.8, label=f"{fit.method} fit")
    ax.set_xlabel("predicted score")
    ax.set_ylabel("MOS")
    if title:
        ax.set_title(title)
    if metrics:
        text = "\n".join(f"{k.upper()} {metrics[k]:.4f}" for k in ("srocc", "plcc", "krcc", "rmse") if k in metrics)
        ax.text(0.03, 0.97, text, transform=ax.transAxes, va="top", fontsize=8,
                bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})  # fmt: skip
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def evaluate_predictions(
    pred: np.ndarray, mos: np.ndarray, out: str | Path, *, names: Sequence[str], title: str = ""
) -> dict[str, Any]:
    """Metrics, ``results.json``, ``predictions.csv`` and ``scatter.png`` for finished predictions.

    Args:
        pred: Scores (NaN entries are left out of the metrics).
        mos: Mean opinion scores.
        out: Output folder.
        names: Video path of each entry.
        title: Plot title.

    Returns:
        The results document.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ok = np.isfinite(pred)
    metrics = all_metrics(pred[ok], mos[ok])
    fit = fit_logistic(pred[ok], mos[ok])
    with (out / "predictions.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "mos", "pred"])
        for name, m, p in zip(names, mos, pred):
            writer.writerow([name, m, repr(float(p))])
    scatter_plot(pred[ok], mos[ok], out / "scatter.png", fit=fit, title=title, metrics=metrics)
    doc = {"metrics": metrics, "fit": {"method": fit.method, "params": list(fit.params)}, "videos": int(ok.sum())}
    doc["mos_range"] = [float(mos[ok].min()), float(mos[ok].max())]
    write_json_atomic(out / "results.json", doc)
    return doc


def trained_split(model_name: str) -> dict[str, Any] | None:
    """The split a model saved by ``dvlta_metric_train.train`` was trained on (``local-dir:`` models; else ``None``)."""
    if not model_name.startswith("local-dir:"):
        return None
    try:
        _, meta = read_config(Path(model_name[len("local-dir:") :]) / "config.json")
    except (OSError, ValueError):
        return None
    split = meta.get("split")
    return split if isinstance(split, dict) else None


def check_split(trained: dict[str, Any] | None, split: int, fraction: float, test_paths: Sequence[str]) -> None:
    """Refuse ``--split`` rows that are not the test rows of the split the model was trained on.

    Args:
        trained: The model's recorded split (:func:`trained_split`); nothing is checked without one.
        split: The ``--split`` asked for.
        fraction: The ``--train-fraction`` asked for.
        test_paths: The video paths of that split's test rows in this label file, in row order.

    Raises:
        ValueError: If the model was trained on another split or fraction, or this label file's split has
            other test videos than the one trained on (reordered, added or edited rows).
    """
    if not trained or trained.get("protocol") != "random":
        return
    index, trained_fraction = trained.get("index"), trained.get("train_fraction")
    if (index, trained_fraction) != (split, fraction):
        raise ValueError(
            f"the model was trained on random split {index} with --train-fraction {trained_fraction}: the test "
            f"rows of split {split} with {fraction} include videos it trained on. Evaluate it with --split "
            f"{index} --train-fraction {trained_fraction}"
        )
    digest = trained.get("test_paths_sha256")
    if digest and digest != paths_digest(test_paths):
        raise ValueError(
            f"split {split} of this label file or CSV has other test videos than the split the model was trained "
            "on (its rows were reordered, added or edited since), so they may include training videos: evaluate "
            "with the label file the model was trained with"
        )


def _rows(n: int, split: int | None, subset: str, fraction: float) -> list[int]:
    if split is None:
        if subset != "all":
            raise ValueError("--subset train/test needs --split I")
        return list(range(n))
    if subset == "all":
        return list(range(n))
    s = random_split(n, split, fraction)
    return list(s.test if subset == "test" else s.train)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m dvlta_metric_train.evaluate``."""
    p = argparse.ArgumentParser(
        prog="python -m dvlta_metric_train.evaluate", description="Evaluate a model on a dataset."
    )
    p.add_argument("--model", required=True, help="registry name, hf-hub:org/name or local-dir:/path")
    add_dataset_arguments(p)
    p.add_argument("--cache", help="evaluate from this feature cache instead of decoding the videos")
    p.add_argument("--split", type=int, help="only the paper's random split I (its --subset, default test)")
    p.add_argument("--subset", choices=["test", "train", "all"], help="rows of --split (default test)")
    p.add_argument("--train-fraction", type=float, default=PAPER_TRAIN_FRACTION)
    p.add_argument("--out", required=True, help="folder for results.json, predictions.csv, scatter.png")
    p.add_argument("--device", help="cpu, cuda (default: cuda when available)")
    p.add_argument("--workers", type=int, default=2, help="decoding threads (default 2)")
    p.add_argument("--batch-size", type=int, default=16, help="videos per forward with --cache")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--calibrate-into",
        metavar="DIR",
        help="store the logistic fit as the MOS calibration of the model directory DIR (its config.json; "
        "model(x, scale='mos') then uses it)",
    )
    return p


def calibration_from_fit(
    fit: LogisticFit, mos: np.ndarray, *, dataset: str, split: str, mos_range: tuple[float, float] | None = None
) -> Calibration:
    """The library's :class:`~dvlta_metric.calibration.Calibration` of an evaluation's logistic fit.

    Args:
        fit: :func:`~dvlta_metric_train.metrics.fit_logistic`'s result.
        mos: The MOS values it was fitted to (their range is the scale's unless ``mos_range`` is given).
        dataset: The dataset's name.
        split: Which part of it.
        mos_range: The MOS scale's ``(lowest, highest)``.
    """
    lo_hi = mos_range or (float(np.min(mos)), float(np.max(mos)))
    return Calibration(fit.params, fit.method, lo_hi, dataset=dataset, split=split, num_videos=int(np.size(mos)))


def check_calibration_target(directory: str | Path) -> None:
    """Refuse a ``--calibrate-into`` folder that :func:`~dvlta_metric._checkpoint.write_calibration` could not write
    into: one without a valid ``config.json`` (read as the library reads it), or one that is not writable.

    Raises:
        ValueError: ``DIR/config.json`` does not exist or is not a DVLTA-VQA configuration, or the folder is not
            writable (the message names ``--calibrate-into``).
    """
    folder = Path(directory)
    try:
        read_config(folder / "config.json")
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"--calibrate-into {folder}: {err}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--calibrate-into {folder}: the folder is not writable (its config.json is replaced)")


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate and write the results.

    Returns:
        0 on success, 1 when some videos failed (the others are evaluated), 2 for a usage error.
    """
    args = build_parser().parse_args(argv)
    subset = args.subset or ("test" if args.split is not None else "all")
    try:
        if args.calibrate_into:  # before any video is scored, not after the whole evaluation
            check_calibration_target(args.calibrate_into)
        model = dvlta_metric.create(args.model, device=args.device)
        if args.cache:
            if args.dataset or args.csv_file:
                raise ValueError("give either --cache or a dataset (--dataset/--csv), not both")
            cache = FeatureCache(args.cache)
            cache.check_model(model)
            if args.split is not None:
                test = random_split(len(cache), args.split, args.train_fraction).test
                check_split(trained_split(args.model), args.split, args.train_fraction, [cache.path(r) for r in test])
            rows = _rows(len(cache), args.split, subset, args.train_fraction)
            cached = cache.available_rows(rows)
            failures = {r: "not in the feature cache" for r in rows if r not in set(cached)}
            pred = np.full(len(rows), np.nan)
            pos = {r: i for i, r in enumerate(rows)}
            scores = predict_cached(model, cache, cached, batch_size=args.batch_size)
            for r, s in zip(cached, scores):
                pred[pos[r]] = s
            mos = np.array([cache.mos(r) for r in rows])
            names = [cache.path(r) for r in rows]
            title = cache.name
        else:
            data: VQADataset = dataset_from_arguments(args)
            if args.split is not None:
                test = random_split(len(data), args.split, args.train_fraction).test
                check_split(trained_split(args.model), args.split, args.train_fraction, [data[r].path for r in test])
            rows = _rows(len(data), args.split, subset, args.train_fraction)
            pred, fails = predict_files(
                model, [data.file(r) for r in rows], workers=args.workers, progress=not args.no_progress
            )
            failures = {rows[i]: reason for i, reason in fails.items()}
            mos = np.array([data[r].mos for r in rows])
            names = [data[r].path for r in rows]
            title = data.name
    except (ValueError, FileNotFoundError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if int(np.isfinite(pred).sum()) < 2:
        print(f"error: fewer than 2 videos could be scored ({len(failures)} failed)", file=sys.stderr)
        return 2
    if args.split is not None:
        title += f", split {args.split} ({subset})"
    doc = evaluate_predictions(pred, mos, args.out, names=names, title=f"{args.model} on {title}")
    doc["model"] = args.model
    doc["failures"] = {str(k): v for k, v in failures.items()}
    write_json_atomic(Path(args.out) / "results.json", doc)
    if args.calibrate_into:
        fit = LogisticFit(tuple(doc["fit"]["params"]), doc["fit"]["method"])
        split = f"split {args.split} ({subset})" if args.split is not None else "all"
        ok = np.isfinite(pred)
        try:
            calibration = calibration_from_fit(fit, mos[ok], dataset=title.split(",")[0], split=split)
        except ValueError as err:  # a fit the library cannot store (a parameter beyond its bounds)
            print(f"error: --calibrate-into: the fit cannot be stored as a calibration: {err}", file=sys.stderr)
            return 2
        print(f"wrote the MOS calibration into {write_calibration(args.calibrate_into, calibration)}")
    m = doc["metrics"]
    print(
        f"{title}: {m['n']} videos: SROCC {m['srocc']:.4f} PLCC {m['plcc']:.4f} KRCC {m['krcc']:.4f} "
        f"RMSE {m['rmse']:.4f} ({m['fit']} fit); wrote {args.out}"
    )
    for row, reason in list(failures.items())[:20]:
        print(f"  failed: row {row}: {reason}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
