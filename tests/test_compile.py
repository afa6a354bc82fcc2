"""``DVLTAVQA.compile_branches``: torch.compile gives the eager scores, with the Swin3D caches already warm."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import dvlta_metric
from dvlta_metric.branches.flex_window import flex_attention_available
from dvlta_metric.branches.swin3d import WindowAttention3D


@pytest.mark.slow
def test_compiled_branches_match_eager(video_factory: Callable[..., torch.Tensor]) -> None:
    torch.manual_seed(0)
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False).set_low_memory(False)
    videos = torch.stack([video_factory(16, 144, 176, seed=i) for i in range(2)])
    eager = model(videos)
    # the eager calls filled the frozen blocks' bias caches: compiling must cope with them (it once failed here)
    assert any(m._bias_cache is not None for m in model.modules() if isinstance(m, WindowAttention3D))
    torch._dynamo.reset()
    assert model.compile_branches() is model
    compiled = model(videos)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=0)
    # the compiled model still takes every input the eager one takes, and stays deterministic
    assert torch.equal(model(list(videos)), compiled)
    # the FlexAttention kernel compiles inside the backbone's graph and gives the same scores
    if flex_attention_available():
        assert torch.equal(model.set_attention_kernel("flex")(videos), model(videos))
        torch.testing.assert_close(model(videos), eager, atol=1e-5, rtol=0)
