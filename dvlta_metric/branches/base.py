"""The seam every branch of DVLTA-VQA is cut along: a frozen, cacheable encoder and a trained head.

DVLTA-VQA's three branches share one shape (paper Section III): a view of the video goes through a frozen
backbone (FAST-VQA-B's Swin3D for the fragments, ViFi-CLIP's image tower for the frames) and then through a
small trained part that maps it into the joint space. A :class:`Branch` names that split (ours):

* :attr:`Branch.view`: which view it reads, ``"fragments"``, ``"frames"`` or ``"consecutive"``;
* :meth:`Branch.encode`: the frozen part; its output depends only on frozen weights, so the feature cache
  of ``dvlta_metric_train`` stores it once per video and view sample;
* :meth:`Branch.head`: the trained part, from the encoded view to the branch feature ``F_k`` ``(B, D)``.

The model, the feature cache and cached training are loops over this seam: moving the frozen/trained line
of a branch, or adding a branch, touches only that branch's module.
"""

from __future__ import annotations

import contextlib
from abc import ABCMeta, abstractmethod
from typing import Any, Literal

import torch
from torch import Tensor, nn

ViewName = Literal["fragments", "frames", "consecutive"]


def is_exporting() -> bool:
    """Whether :func:`torch.export.export` is tracing the call now (``False`` on a torch that cannot tell).

    The branches' export-mode switch *(ours)*: while it traces, they keep nothing between calls and take no
    data-dependent shortcut (the Swin3D takes its small shape tensors as constants and builds its gates, masks and
    attention biases in the program instead of caching them; the fragment branch does not look for repeated clips),
    so the traced program computes what an eager call computes. Eager calls never see it on. See
    :mod:`dvlta_metric.export`.
    """
    check = getattr(torch.compiler, "is_exporting", None)  # torch>=2.5
    return bool(check is not None and check())


def autocast_off(device_type: str) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast(device_type, enabled=False)``: float32 inside a caller's autocast.

    While :func:`torch.export.export` traces (:func:`is_exporting`), nothing *(ours)*: an export runs in float32
    with no autocast to turn off, and torch.export would record each such region as a ``wrap_with_autocast``
    subgraph, which costs export time and which torch 2.14's own ``torch.export.load`` refuses
    ("missing val field").

    Args:
        device_type: ``"cpu"``, ``"cuda"``, ...

    Returns:
        The context manager.
    """
    if is_exporting():
        return contextlib.nullcontext()
    return torch.autocast(device_type, enabled=False)


class Branch(nn.Module, metaclass=ABCMeta):
    """One stream: ``head(encode(view))`` is its feature ``F_k``.

    Subclasses pass their :attr:`view` up, hold their frozen backbone (if any) as :attr:`encoder` and implement
    :meth:`head`; everything that is not :attr:`encoder` trains.

    Attributes:
        view: The view the branch reads: ``"fragments"`` ``(B, K, 3, L, S, S)``, or a frame view ``"frames"``
            (segment centres) or ``"consecutive"`` (consecutive frames), both ``(B, T, 3, S, S)``.
        encoder: The frozen backbone, or ``None`` for a branch that trains end to end (its encoded view is
            the view itself).
    """

    def __init__(self, view: ViewName) -> None:
        super().__init__()
        self.view: ViewName = view
        self.encoder: nn.Module | None = None

    def encode(self, view: Tensor) -> Tensor:
        """The frozen, cacheable part of the branch.

        Args:
            view: The branch's view, batched: ``(B, ...)``.

        Returns:
            ``(B, ...)``: what :meth:`head` takes (the view itself for a branch without an encoder).
        """
        return view

    @abstractmethod
    def head(self, encoded: Tensor) -> Tensor:
        """The trained part of the branch.

        Args:
            encoded: ``(B, ...)`` output of :meth:`encode`.

        Returns:
            ``(B, D)``: the branch feature ``F_k``.
        """

    def trainable(self) -> dict[str, nn.Module]:
        """The child modules that train: every child but :attr:`encoder`, by attribute name."""
        return {name: child for name, child in self.named_children() if child is not self.encoder}
