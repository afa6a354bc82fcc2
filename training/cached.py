"""The model's forward pass from cached backbone features, and a PyTorch dataset over a feature cache.

Training and cached evaluation run only what sits after the frozen backbones:

* ``F_bvfe = model.basic_visual.pool_head(fragment_features, K)`` (the fragment head, trained),
* ``F_tcm = model.temporal_context(normalise(frames).transpose(1, 2))`` (the Temporal Context Module, trained
  from scratch on the frame view's pixels),
* ``F_vbtc = model.temporal_clip.from_frame_embeddings(z)`` (the CLIP adapter, trained),

stacked in ``model.branches`` order and scored by ``model.score_features`` (text adapter, trained; fusion and
prompt head). On features of the inference views this is exactly what ``model(video)`` computes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from dvlta_metric.model import DVLTAVQA
from dvlta_metric.views import normalize

from .cache import FeatureCache


def trainable_modules(model: DVLTAVQA) -> dict[str, nn.Module]:
    """The parts of DVLTA-VQA that train (the backbones stay frozen).

    Returns:
        ``{"clip_adapter", "temporal_context", "fragment_head", "text_adapter"}``, those the model has.
    """
    parts: dict[str, nn.Module] = {}
    if model.temporal_clip is not None and model.temporal_clip.adapter is not None:
        parts["clip_adapter"] = model.temporal_clip.adapter
    if model.temporal_context is not None:
        parts["temporal_context"] = model.temporal_context
    if model.basic_visual is not None:
        parts["fragment_head"] = model.basic_visual.head
    if model.text_adapter is not None:
        parts["text_adapter"] = model.text_adapter
    return parts


class CachedForward(nn.Module):
    """Scores from cached features; its parameters are exactly the trainable parts of ``model``.

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
            batch: ``fragments`` ``(B, K, C, t, h, w)``, ``frames`` ``(B, T, 3, S, S)`` in ``[0, 1]``,
                ``clip`` ``(B, T, D)``, for the branches the model has.

        Returns:
            ``(B,)`` scores and ``(B, n_branches)`` weights.
        """
        model = self.model
        feats: dict[str, torch.Tensor] = {}
        if model.basic_visual is not None:
            frag = batch["fragments"]
            feats["bvfe"] = model.basic_visual.pool_head(frag.flatten(0, 1), frag.shape[1])
        if model.temporal_context is not None:
            fv = model.config.frame_view
            frames = normalize(batch["frames"], fv.mean, fv.std)
            feats["tcm"] = model.temporal_context(frames.transpose(1, 2))
        if model.temporal_clip is not None:
            feats["vbtc"] = model.temporal_clip.from_frame_embeddings(batch["clip"])
        features = torch.stack([feats[name] for name in model.branches], dim=1)
        return model.score_features(features)


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
        if "fragments_train" in arrays:
            if self.train:
                k = (sample_offset(self.seed, row, self.cache.samples) + self.epoch) % self.cache.samples
                frag = arrays["fragments_train"][k : k + 1]
            else:
                frag = arrays["fragments_eval"]
            item["fragments"] = torch.from_numpy(np.array(frag, dtype=np.float32))
        if "frames" in arrays:
            item["frames"] = torch.from_numpy(np.array(arrays["frames"], dtype=np.float32))
        if "clip" in arrays:
            item["clip"] = torch.from_numpy(np.array(arrays["clip"], dtype=np.float32))
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
