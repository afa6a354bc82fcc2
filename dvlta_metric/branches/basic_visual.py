"""Basic Visual Feature Extraction Module (paper eqs. 8-9): the ventral stream on the fragment view.

A frozen FAST-VQA-B backbone (Video Swin-T with gated relative position bias; :meth:`~Branch.encode`) turns
each 32-frame fragment clip into ``(768, 16, 7, 7)`` features; a trained ``Conv3d(768, 512, 1) -> GELU ->
Conv3d(512, 512, 1)`` MLP (width 512 is ours) maps them into the joint space, and the result is averaged over
``(t, h, w)`` and over clips to give ``F_bvfe`` (:meth:`~Branch.head`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import SwinConfig
from .base import Branch, autocast_off, is_exporting
from .swin3d import SwinTransformer3D


def repeated_clips(clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Find clips that are equal element for element.

    Args:
        clips: ``(N, ...)`` clips.

    Returns:
        ``None`` when all ``N`` clips differ; else ``(unique, inverse)``: long tensors with
        ``clips[unique][inverse]`` equal to ``clips`` (``unique`` in order of first appearance).
    """
    n = clips.shape[0]
    if n < 2:
        return None
    with torch.no_grad():
        # a cheap fingerprint on a strided sample picks the candidates; torch.equal decides
        sample = clips[(slice(None), *(slice(None, None, 7) for _ in range(clips.dim() - 1)))]
        prints = sample.reshape(n, -1).double().sum(dim=1).tolist()
        unique: list[int] = []
        inverse: list[int] = []
        for i in range(n):
            for slot, j in enumerate(unique):
                if prints[i] == prints[j] and torch.equal(clips[i], clips[j]):
                    inverse.append(slot)
                    break
            else:
                inverse.append(len(unique))
                unique.append(i)
    if len(unique) == n:
        return None
    device = clips.device
    return torch.tensor(unique, device=device), torch.tensor(inverse, device=device)


class FragmentHead(nn.Module):
    """``Conv3d(C, H, 1) -> GELU -> Conv3d(H, D, 1)`` on backbone features.

    Args:
        in_channels: Backbone channels ``C`` (768).
        hidden: Hidden width ``H``.
        out_dim: Joint dimension ``D``.
    """

    def __init__(self, in_channels: int = 768, hidden: int = 512, out_dim: int = 512) -> None:
        super().__init__()
        self.fc_hid = nn.Conv3d(in_channels, hidden, 1)
        self.act = nn.GELU()
        self.fc_out = nn.Conv3d(hidden, out_dim, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, t, h, w)`` features to ``(N, D, t, h, w)``."""
        return self.fc_out(self.act(self.fc_hid(feats)))


class BasicVisualFeatureExtraction(Branch):
    """The Basic Visual Feature Extraction Module (eqs. 8-9), on the fragment view.

    Attributes:
        encoder: The frozen Swin3D backbone (eq. 8).
        mlp: The trained :class:`FragmentHead` (eq. 9).

    Args:
        swin: Backbone configuration (FAST-VQA-B's Swin-T by default).
        hidden: Head width.
        out_dim: Joint dimension ``D``.
    """

    def __init__(self, swin: SwinConfig, hidden: int = 512, out_dim: int = 512) -> None:
        super().__init__("fragments")
        self.encoder = SwinTransformer3D(
            patch_size=swin.patch_size,
            embed_dim=swin.embed_dim,
            depths=swin.depths,
            num_heads=swin.num_heads,
            window_size=swin.window_size,
            mlp_ratio=swin.mlp_ratio,
            frag_biases=swin.frag_biases,
            base_x_size=swin.base_x_size,
        )
        self.encoder.requires_grad_(False)
        self.mlp = FragmentHead(self.encoder.num_features, hidden, out_dim)

    def encode(self, view: torch.Tensor, cells: int | None = None) -> torch.Tensor:
        """Frozen backbone features of fragment clips (eq. 8).

        Clips that are equal element for element (the clips of a video shorter than their span, which read
        the same frames with the same patch offsets; or the same video twice in a batch) go through the
        backbone once and their features are repeated *(ours)*: the same numbers, less time. Not when the
        clips carry input gradients (a loss): equal values may come from different pixels, each of which must
        get its own gradient.

        Args:
            view: ``(B, K, 3, L, S, S)`` normalised fragment clips, ``K`` per video.
            cells: ``None`` for the model's features; a grid size for features of each fragment cell alone
                (:meth:`~dvlta_metric.branches.swin3d.SwinTransformer3D.forward`), for the isolated quality map.

        Returns:
            ``(B, K, 768, L/2, S/32, S/32)``.
        """
        flat = view.flatten(0, 1)
        grads = flat.requires_grad and torch.is_grad_enabled()
        repeats = None if grads or is_exporting() else repeated_clips(flat)
        if repeats is None:
            feats = self.encoder(flat, cells)
        else:
            unique, inverse = repeats
            feats = self.encoder(flat[unique], cells)[inverse]
        return feats.unflatten(0, view.shape[:2])

    def cell_features(self, encoded: torch.Tensor) -> torch.Tensor:
        """The MLP of eq. 9 at every cell of the feature grid, before pooling (for quality maps).

        Args:
            encoded: ``(B, K, C, t, h, w)`` backbone features.

        Returns:
            ``(B, K, D, t, h, w)`` in the MLP's weights' dtype; their mean over ``(t, h, w)`` and ``K`` is
            :meth:`head`'s result.
        """
        with autocast_off(encoded.device.type):
            out = self.mlp(encoded.flatten(0, 1).to(self.mlp.fc_hid.weight.dtype))
        return out.unflatten(0, encoded.shape[:2])

    def head(self, encoded: torch.Tensor) -> torch.Tensor:
        """MLP and pooling on backbone features (eq. 9).

        Args:
            encoded: ``(B, K, C, t, h, w)`` backbone features of ``K`` clips per video.

        Returns:
            ``(B, D)``: the MLP output averaged over ``(t, h, w)`` and over the clips. The MLP runs in its
            weights' dtype (float32 unless the whole model was converted) even under autocast.
        """
        with autocast_off(encoded.device.type):
            out = self.mlp(encoded.flatten(0, 1).to(self.mlp.fc_hid.weight.dtype)).mean(dim=(2, 3, 4))
        return out.unflatten(0, encoded.shape[:2]).mean(dim=1)

    def forward(self, view: torch.Tensor) -> torch.Tensor:
        """``F_bvfe`` of a batch of videos: ``head(encode(view))``, ``(B, K, 3, L, S, S)`` -> ``(B, D)``."""
        return self.head(self.encode(view))
