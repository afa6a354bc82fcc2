"""Cuts of one video (patches, frames) that share one gradient buffer in the backward pass *(ours)*.

A view is cut out of the video by indexing. Autograd's own backward of an indexing operation writes the view's
gradient into a fresh zero tensor the size of the whole video, and the gradients of several views are then
added: with the fragment view and two frame views of a 32-frame 1080p clip that is two or three video-sized
tensors (0.8 GB each) alive at once at the end of the backward pass, beside the video and its gradient.
:func:`cut` makes all the cuts of one video in one autograd node whose backward pass allocates one
video-sized gradient and adds every cut's gradient into it in place.

Two kinds of cut:

* :class:`PatchCut`: the fragment view's native-resolution patches (FAST-VQA's grid mini-patch sampling):
  one strided window per (run, grid cell), gathered over the run's frames;
* :class:`RowCut`: whole frames (the frame views, which resize them afterwards).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

Corners = list[list[list[list[int]]]]
"""Patch corners ``(R, G, G, 2)`` (top, left) as nested Python ints."""


@dataclass(frozen=True)
class PatchCut:
    """Native-resolution patches spliced into fragment frames.

    Attributes:
        corners: ``(R, G, G, 2)`` top-left corner of each run's grid cells.
        runs_index: Long ``(R, A)``: the rows of the video each run reads, ``A`` frames per run.
        fsize: Patch side.
    """

    corners: Corners
    runs_index: torch.Tensor
    fsize: int

    def apply(self, frames: torch.Tensor) -> torch.Tensor:
        """Cuts the patches: ``(N, C, H, W)`` -> ``(R * A, C, G * fsize, G * fsize)``.

        Cell ``(i, j)`` of output frame ``r * A + a`` is
        ``frames[runs_index[r, a], :, top:top + fsize, left:left + fsize]`` with ``(top, left) = corners[r][i][j]``.
        """
        c, fs = frames.shape[1], self.fsize
        runs, aligned = self.runs_index.shape
        g = len(self.corners[0])
        # One strided window per (run, cell), gathered over the run's frames: R * G * G small copies that read
        # only patch pixels (much faster than one advanced-indexing gather over all of them).
        cells = [
            frames[:, :, t : t + fs, l_ : l_ + fs].index_select(0, self.runs_index[r])
            for r in range(runs)
            for row in self.corners[r]
            for t, l_ in row
        ]
        out = torch.stack(cells).view(runs, g, g, aligned, c, fs, fs)
        return out.permute(0, 3, 4, 1, 5, 2, 6).reshape(runs * aligned, c, g * fs, g * fs)

    def add_grad(self, into: torch.Tensor, grad: torch.Tensor) -> None:
        """Adds the gradient of :meth:`apply`'s output to the video-sized ``into``, in place."""
        runs, aligned = self.runs_index.shape
        g, fs, c = len(self.corners[0]), self.fsize, grad.shape[1]
        cells = grad.reshape(runs, aligned, c, g, fs, g, fs).permute(0, 3, 5, 1, 2, 4, 6)  # (R, G, G, A, C, fs, fs)
        for r in range(runs):
            for i, row in enumerate(self.corners[r]):
                for j, (t, l_) in enumerate(row):
                    into[:, :, t : t + fs, l_ : l_ + fs].index_add_(0, self.runs_index[r], cells[r, i, j])


@dataclass(frozen=True)
class RowCut:
    """Whole frames.

    Attributes:
        rows: Long ``(T,)`` rows of the video, on its device.
    """

    rows: torch.Tensor

    def apply(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(T, C, H, W)``: the frames at :attr:`rows`."""
        return frames.index_select(0, self.rows)

    def add_grad(self, into: torch.Tensor, grad: torch.Tensor) -> None:
        """Adds the gradient of :meth:`apply`'s output to the video-sized ``into``, in place (``index_put_`` with
        ``accumulate``, deterministic on CUDA where ``index_add_`` is not)."""
        into.index_put_((self.rows,), grad, accumulate=True)


Cut = PatchCut | RowCut
"""One cut of a video."""


def cut(frames: torch.Tensor, cuts: Sequence[Cut]) -> tuple[torch.Tensor, ...]:
    """Makes every cut of ``frames``; with gradients, in one autograd node (see the module notes).

    Args:
        frames: ``(N, C, H, W)`` video (any dtype; gradients need a floating-point one).
        cuts: The cuts, their indices on the device of ``frames``.

    Returns:
        One tensor per cut, in order.
    """
    if torch.is_grad_enabled() and frames.requires_grad:
        return _Cuts.apply(frames, tuple(cuts))
    return tuple(c.apply(frames) for c in cuts)


class _Cuts(torch.autograd.Function):
    """:func:`cut` with a backward pass that writes every cut's gradient into one video-sized tensor."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, frames: torch.Tensor, cuts: tuple[Cut, ...]
    ) -> tuple[torch.Tensor, ...]:
        ctx.frames_shape = frames.shape  # type: ignore[attr-defined]
        ctx.cuts = cuts  # type: ignore[attr-defined]
        ctx.set_materialize_grads(False)  # a cut no loss used brings None, not a zero tensor
        return tuple(c.apply(frames) for c in cuts)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, *grads: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, None]:
        into: torch.Tensor | None = None
        for c, grad in zip(ctx.cuts, grads, strict=True):  # type: ignore[attr-defined]
            if grad is None:
                continue
            if into is None:
                into = grad.new_zeros(ctx.frames_shape)  # type: ignore[attr-defined]
            c.add_grad(into, grad)
        return into, None
