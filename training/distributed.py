"""Data-parallel helpers for ``torchrun``: process-group setup, a batch-norm that syncs over processes on any
backend, and a gather with gradients.

Why they exist: the training loss, ``1 - PLCC`` over the batch, is not a sum over samples, and the trained
modules (Temporal Context Module, CLIP adapter) contain batch norms. With plain DDP each process would see
only its share of the global batch in both. Here every process gathers the whole batch's predictions
(:func:`gather_with_grad`) and the batch norms use statistics of the whole global batch
(:class:`GlobalBatchNorm`), so a run on ``N`` processes with ``N * b`` videos per step computes the same loss
and gradients as one process with the same global batch. ``torch.nn.SyncBatchNorm`` does the latter on GPUs
only; :class:`GlobalBatchNorm` works with gloo on CPUs as well.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a ``torchrun`` job.

    Attributes:
        rank: Global rank.
        world_size: Number of processes.
        local_rank: Rank on this node.
        device: This process's device.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the process that writes files and prints)."""
        return self.rank == 0


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def setup(device: str | None = None) -> DistInfo:
    """Join the ``torchrun`` process group when launched by it (``WORLD_SIZE`` > 1), else run alone.

    The backend is nccl for CUDA and gloo otherwise. Under ``torchrun`` with CUDA each process takes
    ``cuda:LOCAL_RANK``.

    Args:
        device: Requested device (``None``: CUDA when available).

    Returns:
        This process's place and device.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and world > 1 and dev.index is None:
        dev = torch.device("cuda", local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, dev)


def cleanup() -> None:
    """Leave the process group, if one is running."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op when alone)."""
    if is_distributed():
        dist.barrier()


class _AllReduceSum(torch.autograd.Function):
    """``all_reduce(SUM)`` whose gradient is the ``all_reduce(SUM)`` of the output gradients."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        g = grad.contiguous().clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM)
        return g


class _GatherWithGrad(torch.autograd.Function):
    """``all_gather`` along dim 0 (equal sizes); the gradient of each slice is summed over processes."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        g = grad.contiguous().clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM)
        return g[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over processes (identity when alone)."""
    return _AllReduceSum.apply(x) if is_distributed() else x


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's ``x`` (same shape everywhere) in rank order, keeping gradients.

    Every process then computes the same loss on the global batch; DDP's gradient averaging over the ``N``
    processes and the summed slice gradients cancel, so the parameters get exactly the gradient of that loss.
    """
    return _GatherWithGrad.apply(x) if is_distributed() else x


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's ``x`` (no gradients; identity when alone)."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch of all processes, on any backend (gloo included).

    Same parameters, buffers and state-dict keys as ``nn.BatchNorm1d/2d/3d``; in eval mode, or in a single
    process, it is exactly ``torch.nn.functional.batch_norm``. In training with several processes the
    per-channel sums, and then the sums of squared deviations from the global mean, are summed over processes
    (differentiably), and the running
    statistics are updated with the global mean and unbiased variance, as one process would with the whole
    batch.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        if not (self.training and is_distributed()):
            return super().forward(input)
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, c] + [1] * (input.dim() - 2)
        count = torch.tensor([input.numel() / c], dtype=input.dtype, device=input.device)
        stats = all_reduce_sum(torch.cat([input.sum(dims), count]))
        n = stats[-1]
        mean = stats[:c] / n
        # the variance from the deviations from the global mean (a second reduction), not E[x^2] - E[x]^2,
        # which loses digits to cancellation when a channel's mean is large against its spread
        centred = input - mean.view(shape)
        var = all_reduce_sum((centred * centred).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                tracked = self.num_batches_tracked
                if tracked is not None:
                    tracked.add_(1)
                if self.momentum is None:  # cumulative moving average, as nn.BatchNorm
                    momentum = 1.0 / float(tracked) if tracked is not None else 0.0
                else:
                    momentum = float(self.momentum)
                unbiased = var * (n / (n - 1).clamp_min(1.0))
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach())
        out = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm1d/2d/3d`` inside ``module`` by a :class:`GlobalBatchNorm` (same state).

    Args:
        module: Module whose batch norms to replace (in place).

    Returns:
        The same module (or the replacement, if ``module`` itself is a batch norm).
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new.to(next(iter(module.state_dict().values())).device) if module.state_dict() else new
    for name, child in list(module.named_children()):
        replaced = convert_batchnorm(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module
