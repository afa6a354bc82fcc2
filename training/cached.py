"""The model's forward pass from cached encoder outputs, and a PyTorch dataset over a feature cache.

Training and cached evaluation run only what sits after the frozen encoders: each branch's trained
``head`` (the :class:`~dvlta_metric.branches.base.Branch` seam) on its cached ``encode`` output, stacked in
``model.branches`` order by ``model.branch_features``, then ``model.score_features`` (text adapter, trained;
fusion and prompt head). On the cached inference views this is exactly what ``model(video)`` computes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from dvlta_metric.model import DVLTAVQA

from .cache import FeatureCache


def trainable_modules(model: DVLTAVQA) -> dict[str, nn.Module]:
    """The parts of DVLTA-VQA that train: every child of each branch but its frozen ``encoder``, and the text
    adapter.

    Returns:
        ``{"<branch>_<child>": module, ..., "text_adapter": module}``, for the parts the model has.
    """
    parts = {f"{name}_{child}": module for name, b in model.branches.items() for child, module in b.trainable().items()}
    if model.text_adapter is not None:
        parts["text_adapter"] = model.text_adapter
    return parts


class CachedForward(nn.Module):
    """Scores from cached encoder outputs; its parameters are exactly the trainable parts of ``model``.

    The model itself is held outside the module tree, so that DDP only sees (and syncs) the trained
    parameters, not the frozen backbones.

    Args:
        model: The model (shared, not copied: training updates it in place).
    """

    def __init__(self, model: DVLTAVQA) -> None:
        super().__init__()
        self.parts = nn.ModuleDict(trainable_modules(model))
        self._model = (model,)

    @property
    def model(self) -> DVLTAVQA:
        """The wrapped model."""
        return self._model[0]

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores, fusion weights)`` of a batch from :class:`CachedVideos`.

        Args:
            batch: ``{branch name: (B, ...)}`` encoded views (e.g. ``bvfe`` ``(B, K, C, t, h, w)``, ``tcm``
                ``(B, T, 3, S, S)``, ``vbtc`` ``(B, T, D)``).

        Returns:
            ``(B,)`` scores and ``(B, n_branches)`` weights.
        """
        return self.model.score_features(self.model.branch_features(batch))


def sample_offset(seed: int, row: int, samples: int) -> int:
    """Which cached training sample row ``row`` starts with; epoch ``e`` uses ``(offset + e) % K``."""
    return int(np.random.default_rng([seed, row]).integers(samples))


class CachedVideos(torch.utils.data.Dataset):
    """Rows of a feature cache as training or evaluation samples.

    Training samples take one of the ``K`` cached fragment samples per video, cycling with the epoch from a
    seeded per-video offset (every sample is used once every ``K`` epochs); evaluation samples take the
    inference-view features.

    Args:
        cache: The feature cache.
        rows: Its rows to use.
        train: Training samples (one fragment sample) or evaluation samples (the inference clips).
        seed: Seed of the per-video offsets.
    """

    def __init__(self, cache: FeatureCache, rows: Sequence[int], *, train: bool, seed: int = 0) -> None:
        self.cache = cache
        self.rows = list(rows)
        self.train = train
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the fragment samples of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = self.rows[index]
        arrays = self.cache.arrays(row)
        item: dict[str, torch.Tensor] = {
            "mos": torch.tensor(self.cache.mos(row), dtype=torch.float32),
            "row": torch.tensor(row, dtype=torch.long),
        }
        for name in self.cache.branches:
            if self.train and f"{name}_train" in arrays:
                k = (sample_offset(self.seed, row, self.cache.samples) + self.epoch) % self.cache.samples
                encoded = arrays[f"{name}_train"][k]
            else:
                encoded = arrays[name]
            item[name] = torch.from_numpy(np.array(encoded, dtype=np.float32))
        return item


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move every tensor of a batch."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def predict_cached(
    model: DVLTAVQA,
    cache: FeatureCache,
    rows: Sequence[int],
    *,
    batch_size: int = 16,
    num_workers: int = 0,
) -> np.ndarray:
    """Scores of ``rows`` from their cached inference-view features (``model`` in eval mode).

    Args:
        model: The model (must match the cache's backbones; see :meth:`FeatureCache.check_model`).
        cache: The cache.
        rows: Rows to score (cached ones).
        batch_size: Videos per forward.
        num_workers: DataLoader workers.

    Returns:
        ``(len(rows),)`` float64 scores, in order.
    """
    was_training = model.training
    model.eval()
    forward = CachedForward(model)
    loader = torch.utils.data.DataLoader(
        CachedVideos(cache, rows, train=False),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
    )
    out = []
    for batch in loader:
        scores, _ = forward(to_device(batch, model.device))
        out.append(scores.double().cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0)
