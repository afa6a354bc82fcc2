"""``dvlta-vqa-zeroshot``: built from a small stand-in for OpenAI CLIP in a fake offline Hub cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from fake_hub import SMALL_CLIP, write_small_clip

import dvlta_metric
from dvlta_metric import CheckpointError, WeightsNotFoundError
from dvlta_metric._clip_towers import encode_prompts
from dvlta_metric._factory import weights_label
from dvlta_metric._hub import sha256_of
from dvlta_metric._registry import WeightSource, register_model
from dvlta_metric._zeroshot import CLIP_TOWER, OPENAI_CLIP_SAFETENSORS, load_clip_weights, openai_clip_repo


def test_zeroshot_from_cached_openai_clip(hub_cache: Path, video_factory: Callable) -> None:
    assert openai_clip_repo() == "timm/vit_base_patch16_clip_224.openai"
    clip = write_small_clip(hub_cache)
    model = dvlta_metric.create("dvlta-vqa-zeroshot", device="cpu", **SMALL_CLIP)
    cfg = model.config
    assert model.branch_names == ("vbtc",) and model.text_adapter is None
    expected = encode_prompts(clip, [cfg.prompts.fusion, cfg.prompts.positive, cfg.prompts.negative], 77)
    assert torch.allclose(model.prompt_embeddings, expected)
    # the image tower carries CLIP's weights; no text tower is kept in the model
    for key, value in clip.visual.state_dict().items():
        assert torch.equal(model.get_submodule(CLIP_TOWER).state_dict()[key], value)
    assert not any(k.startswith(("transformer.", "token_embedding")) for k in model.state_dict())
    v = video_factory(9, 180, 240)
    s1, s2 = model(v), model(v)
    assert torch.equal(s1, s2) and 0.0 < float(s1) < 1.0
    # scoring equals the CLIP definition: mean frame embedding vs the two prompts, scale 100
    frames = model.make_views(v)["frames"]
    z = torch.nn.functional.normalize(clip.encode_image(frames).mean(0), dim=-1)
    t = torch.nn.functional.normalize(expected[1:], dim=-1)
    assert torch.allclose(s1, (100 * z @ t.t()).softmax(-1)[0], atol=1e-5)


def test_zeroshot_offline_without_cache(hub_cache: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="HF_HUB_OFFLINE"):
        dvlta_metric.create("dvlta-vqa-zeroshot", device="cpu")


def test_zeroshot_revision_and_pinned_sha256(hub_cache: Path, scratch_registry: object) -> None:
    write_small_clip(hub_cache)
    snapshot = hub_cache / ("models--" + openai_clip_repo().replace("/", "--")) / "snapshots" / ("0" * 40)
    good = sha256_of(snapshot / OPENAI_CLIP_SAFETENSORS)
    model = dvlta_metric.create("dvlta-vqa-zeroshot", device="cpu", revision="0" * 40, **SMALL_CLIP)
    assert model.branch_names == ("vbtc",)
    assert weights_label(model) == f"dvlta-vqa-zeroshot (hf-hub:{openai_clip_repo()}@{'0' * 40}), fp32"
    with pytest.raises(WeightsNotFoundError, match="v9"):
        dvlta_metric.create("dvlta-vqa-zeroshot", device="cpu", revision="v9", **SMALL_CLIP)
    cfg = dvlta_metric.get_model_config("dvlta-vqa-zeroshot").replace(name="zeroshot-pinned")
    for digest, ok in ((good, True), ("f" * 64, False)):
        register_model(cfg, WeightSource("openai-clip", sha256=digest), overwrite=True)
        if ok:
            dvlta_metric.create("zeroshot-pinned", device="cpu", **SMALL_CLIP)
        else:
            with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
                dvlta_metric.create("zeroshot-pinned", device="cpu", **SMALL_CLIP)


def test_zeroshot_weights_do_not_cover_other_branches_or_adapters(hub_cache: Path, video_factory: Callable) -> None:
    write_small_clip(hub_cache)
    for override, words in (
        ({"use_adapters": True}, "use_adapters=True"),
        ({"branches": ("vbtc", "tcm")}, r"branches=\('vbtc', 'tcm'\)"),
        ({"branches": ("bvfe",)}, r"branches=\('bvfe',\)"),
    ):
        with pytest.raises(ValueError, match=f"only cover the CLIP branch without adapters.*{words}") as info:
            dvlta_metric.create("dvlta-vqa-zeroshot", device="cpu", **SMALL_CLIP, **override)
        assert "pretrained=False" in str(info.value) and "train" in str(info.value)
        # without weights the architecture can be built (random, as asked)
        dvlta_metric.create("dvlta-vqa-zeroshot", pretrained=False, device="cpu", **SMALL_CLIP, **override)


def test_load_clip_weights_needs_the_clip_branch(hub_cache: Path) -> None:
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", branches=("tcm",))
    with pytest.raises(ValueError, match=f"needs a model with the 'vbtc' branch \\(no '{CLIP_TOWER}'\\)"):
        load_clip_weights(model)
