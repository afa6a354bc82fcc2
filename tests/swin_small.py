"""The small Swin3D configuration that the backbone tests share."""

from __future__ import annotations

from typing import Any

import torch

# Stage 0 pads 16x16 tokens to 20x20 windows of 5 and shifts them, stage 2 clips the window to the 4x4
# features (shift 0 there in H and W), stage 3 has no GRPB. Inputs are (B, 3, 8, 64, 64).
SMALL: dict[str, Any] = {
    "embed_dim": 16,
    "depths": (2, 2, 2, 1),
    "num_heads": (1, 2, 2, 4),
    "window_size": (2, 5, 5),
    "frag_biases": (True, True, True, False),
    "base_x_size": (8, 64, 64),
}


def randomise_bias_tables(model: torch.nn.Module, seed: int = 0) -> None:
    """Fragment tables start at zero; random tables make GRPB matter in the tests."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("position_bias_table"):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
