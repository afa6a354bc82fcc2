"""The trainer's hyper-parameters and its command line (as open_clip_train keeps them in ``params.py``)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from .splits import PAPER_NUM_SPLITS, PAPER_TRAIN_FRACTION


@dataclass
class TrainSettings:
    """Hyper-parameters of one training run.

    Attributes:
        epochs: Training epochs.
        batch_size: Global batch (videos per optimizer step, over all processes).
        lr: Peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup_epochs: Linear warm-up length, in epochs (fractions allowed).
        rank_weight: Weight of FAST-VQA's rank loss added to ``1 - PLCC`` (0: the paper's loss).
        seed: Seed of the data order and of each video's fragment sample cycle.
        select: ``"best"`` (test SROCC) or ``"last"`` epoch is saved.
        eval_batch_size: Videos per forward in evaluation.
        num_workers: DataLoader workers.
        save_fp16: Store the saved model's weights in float16.
        license: Licence written into the saved model's card (``None``: the card's default). Trained weights
            inherit terms from the datasets and upstream checkpoints; check them before publishing.
    """

    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 2.5
    rank_weight: float = 0.0
    seed: int = 0
    select: str = "best"
    eval_batch_size: int = 16
    num_workers: int = 0
    save_fp16: bool = False
    license: str | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 2, f"--batch-size must be at least 2 (a correlation loss), got {self.batch_size}"),
            (math.isfinite(self.lr) and self.lr > 0, f"--lr must be a positive number, got {self.lr}"),
            (math.isfinite(self.weight_decay) and self.weight_decay >= 0,
             f"--weight-decay must be 0 or more, got {self.weight_decay}"),
            (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0,
             f"--warmup-epochs must be 0 or more, got {self.warmup_epochs}"),
            (math.isfinite(self.rank_weight) and self.rank_weight >= 0,
             f"--rank-weight must be 0 or more, got {self.rank_weight}"),
            (self.select in ("best", "last"), f"select must be 'best' or 'last', got {self.select!r}"),
            (self.eval_batch_size >= 1, f"--eval-batch-size must be at least 1, got {self.eval_batch_size}"),
            (self.num_workers >= 0, f"--num-workers must be 0 or more, got {self.num_workers}"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m dvlta_metric_train.train``."""
    d = TrainSettings()
    p = argparse.ArgumentParser(
        prog="python -m dvlta_metric_train.train", description="Train DVLTA-VQA from a feature cache."
    )
    p.add_argument("--cache", required=True, help="feature cache of the training dataset (dvlta_metric_train.features)")
    p.add_argument("--test-cache", action="append", default=[], help="cross-dataset: a test dataset's cache (repeat)")
    p.add_argument("--out", required=True, help="output folder (rerun the same command to resume)")
    p.add_argument("--model", help="initial model (default: the one the cache was built with)")
    p.add_argument("--splits", type=int, help=f"random splits 0..N-1 (default {PAPER_NUM_SPLITS})")
    p.add_argument("--split", type=int, action="append", help="run only this split (repeat for several)")
    p.add_argument(
        "--train-fraction", type=float, help=f"random splits' training share (default {PAPER_TRAIN_FRACTION})"
    )
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"default {d.epochs}")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"global batch (default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"default {d.lr}")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"default {d.weight_decay}")
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs, help=f"default {d.warmup_epochs}")
    p.add_argument("--rank-weight", type=float, default=d.rank_weight, help="rank loss weight (default 0)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    p.add_argument("--select", choices=["best", "last"], default=d.select, help="epoch to save (default best)")
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    p.add_argument("--num-workers", type=int, default=d.num_workers, help="DataLoader workers (default 0)")
    p.add_argument("--save-fp16", action="store_true", help="store the saved model in float16")
    p.add_argument("--license", help="licence for the saved model's card (e.g. cc-by-4.0)")
    p.add_argument("--device", help="cpu, cuda (default: cuda when available; cuda:LOCAL_RANK under torchrun)")
    p.add_argument("--threads", type=int, help="torch CPU threads per process")
    p.add_argument("--stop-after", type=int, help="stop after this many epochs (resume later with the same command)")
    return p
