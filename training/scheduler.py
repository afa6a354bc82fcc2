"""Optimiser and learning-rate schedule: AdamW, linear warm-up then cosine decay to 0 (per step; from FAST-VQA)."""

from __future__ import annotations

import math

import torch

from .params import TrainSettings


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: linear warm-up ``(step + 1) / warmup`` then cosine decay to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(
    net: torch.nn.Module, settings: TrainSettings, steps_per_epoch: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters, and the per-step warm-up and cosine schedule (:func:`warmup_cosine`)."""
    total_steps = steps_per_epoch * settings.epochs
    warmup_steps = max(1, round(settings.warmup_epochs * steps_per_epoch)) if settings.warmup_epochs > 0 else 0
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps)
    )
    return optimizer, scheduler
