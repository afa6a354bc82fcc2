"""Train/test splits: the paper's 10 random 80/20 splits, and cross-dataset.

Random splits (the protocol of Table II): split ``i`` (``i = 0 .. 9``) uses the seed ``42 * (i + 1)``.
Exactly how it is drawn::

    perm = numpy.random.default_rng(seed).permutation(n)   # n = rows of the label file
    n_train = round(0.8 * n)                                # Python's round (half to even)
    train, test = sorted(perm[:n_train]), sorted(perm[n_train:])

Indices are rows of the dataset's label file, in file order, so a split does not depend on which videos
are on disk: a missing video is simply dropped from whichever side it falls on (and reported). For the
paper's datasets ``n_train`` is 960 of 1200 (KoNViD-1k), 468 of 585 (LIVE-VQC), 918 of 1147 (YouTube-UGC).

Cross-dataset (Table V): train on every video of one dataset, test on every video of the others.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PAPER_NUM_SPLITS = 10
PAPER_TRAIN_FRACTION = 0.8


@dataclass(frozen=True)
class Split:
    """One train/test split of a dataset's rows.

    Attributes:
        index: Split number ``i``.
        seed: Seed of the permutation (``42 * (i + 1)`` for the paper's splits).
        train: Sorted training rows.
        test: Sorted test rows.
    """

    index: int
    seed: int
    train: tuple[int, ...]
    test: tuple[int, ...]

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly description (sizes and seed; the rows themselves are re-derivable)."""
        return {"index": self.index, "seed": self.seed, "train": len(self.train), "test": len(self.test)}


def paths_digest(paths: Sequence[str]) -> str:
    """SHA-256 of a list of video paths, in order: recognises a split's test rows in another label file.

    A trained model records the digest of its split's test paths (``metadata["split"]["test_paths_sha256"]``),
    so that ``dvlta_metric_train.evaluate --split I`` can refuse a label file whose split ``I`` has other test videos
    (reordered, extended or edited rows would put training videos among them).

    Args:
        paths: Video paths as the label file or CSV lists them.

    Returns:
        64 hexadecimal digits.
    """
    return hashlib.sha256(json.dumps(list(paths)).encode("utf-8")).hexdigest()


def split_seed(index: int) -> int:
    """The seed of random split ``index``: ``42 * (index + 1)``."""
    if index < 0:
        raise ValueError(f"split index must be >= 0, got {index}")
    return 42 * (index + 1)


def random_split(n: int, index: int, train_fraction: float = PAPER_TRAIN_FRACTION) -> Split:
    """Random split ``index`` of ``n`` rows (see the module docstring for the exact recipe).

    Args:
        n: Rows in the dataset.
        index: Split number; its seed is ``42 * (index + 1)``.
        train_fraction: Share of rows for training.

    Returns:
        The split.

    Raises:
        ValueError: If ``n < 2`` or the fraction leaves one side empty.
    """
    if n < 2:
        raise ValueError(f"a split needs at least 2 videos, got {n}")
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    seed = split_seed(index)
    perm = np.random.default_rng(seed).permutation(n)
    n_train = round(train_fraction * n)
    if n_train < 1 or n_train >= n:
        raise ValueError(f"{train_fraction:.0%} of {n} videos leaves one side of the split empty")
    train = tuple(sorted(int(i) for i in perm[:n_train]))
    test = tuple(sorted(int(i) for i in perm[n_train:]))
    return Split(index, seed, train, test)


def random_splits(
    n: int, num_splits: int = PAPER_NUM_SPLITS, train_fraction: float = PAPER_TRAIN_FRACTION
) -> list[Split]:
    """The first ``num_splits`` random splits of ``n`` rows (the paper uses 10)."""
    return [random_split(n, i, train_fraction) for i in range(num_splits)]


def cross_dataset(train_name: str, test_names: list[str]) -> dict[str, object]:
    """Describe a cross-dataset experiment: every row of ``train_name`` trains, every row of the others tests.

    Args:
        train_name: The training dataset.
        test_names: The test datasets (must not include ``train_name``).

    Returns:
        ``{"protocol": "cross-dataset", "train": ..., "test": [...]}`` for metadata.

    Raises:
        ValueError: If a test dataset is the training dataset, or there is none.
    """
    if not test_names:
        raise ValueError("cross-dataset evaluation needs at least one test dataset")
    if train_name in test_names:
        raise ValueError(f"{train_name} is both the training and a test dataset; use random splits instead")
    return {"protocol": "cross-dataset", "train": train_name, "test": list(test_names)}
