"""The metric as a loss inside a learned codec's training step (CompressAI, the ``codec`` extra)."""

from __future__ import annotations

import math

import pytest
import torch

import dvlta_metric

compressai_zoo = pytest.importorskip("compressai.zoo", reason="CompressAI is the optional extra 'codec'")


def test_a_compressai_codec_trains_against_the_metric_and_the_metric_stays_frozen() -> None:
    torch.manual_seed(0)
    codec = compressai_zoo.bmshj2018_factorized(quality=1, pretrained=False)
    metric = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", as_loss=True)
    metric.seed_views(0)
    frozen = {k: v.clone() for k, v in metric.state_dict().items()}
    assert not any(p.requires_grad for p in metric.parameters())
    params = [p for n, p in codec.named_parameters() if not n.endswith(".quantiles")]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    clip = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    codec.train()
    metric.train()  # as a holder module would: the metric stays in eval mode
    assert not metric.training
    before = codec.g_a[0].weight.detach().clone()
    for _ in range(3):
        out = codec(clip)
        decoded = out["x_hat"].clamp(0, 1)
        bpp = sum(torch.log(lik).sum() for lik in out["likelihoods"].values()) / (-math.log(2) * clip[:, 0].numel())
        quality = metric(decoded)
        loss = bpp + 10 * (1 - quality)
        optimizer.zero_grad()
        loss.backward()
        assert torch.isfinite(loss)
        # the gradient of the whole loss reaches the codec (its synthesis transform makes x_hat)
        assert codec.g_s[-1].weight.grad is not None and codec.g_s[-1].weight.grad.abs().sum() > 0
        optimizer.step()
    assert not torch.equal(codec.g_a[0].weight, before)  # the codec trained
    for key, value in metric.state_dict().items():
        assert torch.equal(value, frozen[key]), key  # the metric did not (BN statistics included)


def test_the_quality_term_alone_moves_the_codec_output() -> None:
    """Gradient of 1 - score w.r.t. the codec's parameters, without the rate term: nonzero on the synthesis
    transform, so the metric itself steers the codec."""
    torch.manual_seed(0)
    codec = compressai_zoo.bmshj2018_factorized(quality=1, pretrained=False)
    metric = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", as_loss=True)
    clip = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    (1 - metric(codec(clip)["x_hat"].clamp(0, 1))).backward()
    grads = [p.grad for n, p in codec.named_parameters() if n.startswith("g_s") and p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
