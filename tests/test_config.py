"""Configuration checks: a bad override or config.json value fails when the configuration is made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import dvlta_metric
from dvlta_metric.config import (
    FragmentViewConfig,
    ModelConfig,
    SwinConfig,
    check_fields,
    config_differences,
)
from dvlta_metric.errors import CheckpointError


@pytest.mark.parametrize(
    ("overrides", "error", "words"),
    [
        ({"fragment_view": 5}, TypeError, "ModelConfig.fragment_view must be a FragmentViewConfig"),
        ({"fragment_view": {"num_clips": "two"}}, TypeError, "FragmentViewConfig.num_clips must be an integer"),
        ({"fragment_view": {"num_clips": 0}}, ValueError, "FragmentViewConfig.num_clips must be at least 1"),
        ({"frame_view": {"num_frames": True}}, TypeError, "FrameViewConfig.num_frames must be an integer"),
        ({"frame_view": {"std": (0.2, 0.0, 0.2)}}, ValueError, "FrameViewConfig.std[1] must be positive"),
        ({"frame_view": {"mean": (0.5, 0.5)}}, ValueError, "FrameViewConfig.mean must have 3 entries"),
        ({"swin": {"window_size": [8, 7]}}, ValueError, "SwinConfig.window_size must have 3 entries"),
        ({"swin": {"depths": (2, 0)}}, ValueError, "SwinConfig.depths[1] must be at least 1"),
        ({"logit_scale": "big"}, TypeError, "ModelConfig.logit_scale must be a number"),
        ({"logit_scale": -1.0}, ValueError, "ModelConfig.logit_scale must be positive"),
        ({"clip_adapter_ratio": 1.5}, ValueError, "between 0 and 1"),
        ({"use_adapters": 1}, TypeError, "ModelConfig.use_adapters must be True or False"),
        ({"prompts": {"positive": 3}}, TypeError, "PromptConfig.positive must be a string"),
        ({"frame_view": {"crop": 300}}, ValueError, "FrameViewConfig.crop .300. must not exceed resize"),
        ({"fragment_view": {"aligned": 64}}, ValueError, "aligned .64. must divide clip_len .8."),  # was replaced
        ({"frame_view": {"crop": 200, "resize": 256}}, ValueError, "must equal clip_vision.image_size"),
        ({"clip_vision": {"width": 100}}, ValueError, "must be a multiple of head_width"),
        ({"clip_text": {"heads": 7}}, ValueError, "must be a multiple of heads"),
        # non-finite floats would give NaN scores (or an OverflowError deep inside the model)
        ({"logit_scale": float("inf")}, ValueError, "ModelConfig.logit_scale must be a finite number, got inf"),
        ({"logit_scale": float("nan")}, ValueError, "ModelConfig.logit_scale must be a finite number, got nan"),
        ({"frame_view": {"mean": (float("nan"), 0.4, 0.4)}}, ValueError, "FrameViewConfig.mean[0] must be a finite"),
        ({"frame_view": {"std": (0.2, float("inf"), 0.2)}}, ValueError, "FrameViewConfig.std[1] must be a finite"),
        ({"fragment_view": {"mean": (0.5, 0.5, -float("inf"))}}, ValueError, "FragmentViewConfig.mean[2] must be a"),
        ({"swin": {"mlp_ratio": float("inf")}}, ValueError, "SwinConfig.mlp_ratio must be a finite number"),
        ({"swin": {"mlp_ratio": 10**400}}, ValueError, "SwinConfig.mlp_ratio must be a finite number"),
        ({"clip_adapter_ratio": float("nan")}, ValueError, "ModelConfig.clip_adapter_ratio must be a finite"),
        ({"frame_view": {"std": (0.2, -0.1, 0.2)}}, ValueError, "FrameViewConfig.std[1] must be positive"),
        # integers must fit int64: the seed goes to torch.Generator.manual_seed
        ({"fragment_view": {"seed": 2**70}}, ValueError, "FragmentViewConfig.seed must fit a signed 64-bit integer"),
        ({"fragment_view": {"seed": -(2**63) - 1}}, ValueError, "FragmentViewConfig.seed must fit a signed 64-bit"),
        ({"fragment_view": {"num_clips": 2**64}}, ValueError, "FragmentViewConfig.num_clips must fit a signed 64"),
        # documented upper bounds (config.LIMITS and friends): a config.json cannot ask for unbounded sizes
        ({"logit_scale": 100.5}, ValueError, "ModelConfig.logit_scale must be at most 100.0, got 100.5"),
        ({"logit_scale": 1e300}, ValueError, "ModelConfig.logit_scale must be at most 100.0"),
        ({"fragment_view": {"num_clips": 65}}, ValueError, "FragmentViewConfig.num_clips must be at most 64"),
        ({"frame_view": {"num_frames": 10**6}}, ValueError, "FrameViewConfig.num_frames must be at most 256"),
        ({"swin": {"depths": (2, 2, 100, 2)}}, ValueError, "SwinConfig.depths[2] must be at most 64"),
        ({"swin": {"depths": (1,) * 9}}, ValueError, "SwinConfig.depths must have at most 8 entries"),
        ({"clip_vision": {"width": 8192, "head_width": 64}}, ValueError, "CLIPVisionConfig.width must be at most"),
        ({"text_adapter_hidden": 10**9}, ValueError, "ModelConfig.text_adapter_hidden must be at most 4096"),
        ({"prompts": {"fusion": "x" * 10_001}}, ValueError, "PromptConfig.fusion must be at most 10000 characters"),
        ({"fragment_view": {"fragments": 32, "fsize": 64}}, ValueError, "fragments . fsize = 2048 must be at most"),
        ({"fragment_view": {"num_clips": 64, "clip_len": 256, "aligned": 8}}, ValueError, "MAX_VIEW_PIXELS"),
        ({"swin": {"embed_dim": 1024, "depths": (2,) * 5}}, ValueError, "16384 output channels, more than the bound"),
    ],
)
def test_bad_overrides_fail_when_the_model_is_made(overrides: dict[str, Any], error: type, words: str) -> None:
    with pytest.raises(error, match=words.replace("[", r"\[").replace("]", r"\]")):
        dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, **overrides)


def test_good_values_in_other_forms_are_accepted() -> None:
    config = dvlta_metric.get_model_config("dvlta-vqa").replace(
        frame_view={"mean": [0, 0, 0]},  # a list of ints where floats are expected
        swin={"window_size": [8, 7, 7]},
        fragment_view=FragmentViewConfig(num_clips=1),
        logit_scale=50,
    )
    assert config.frame_view.mean == (0, 0, 0) and config.swin.window_size == (8, 7, 7)
    assert config.fragment_view.num_clips == 1 and config.logit_scale == 50
    assert FragmentViewConfig(seed=-3).seed == -3  # the seed is any 64-bit integer
    for seed in (2**63 - 1, -(2**63)):
        assert FragmentViewConfig(seed=seed).seed == seed
        torch.Generator().manual_seed(seed)  # what the model does with it at inference
    assert FragmentViewConfig(mean=(-1.5, 0.0, 2.0)).mean == (-1.5, 0.0, 2.0)  # any finite mean
    for name in dvlta_metric.list_models():  # every registered configuration passes its own checks
        check_fields(dvlta_metric.get_model_config(name))
    with pytest.raises(TypeError, match="SwinConfig.mlp_ratio must be a number"):
        SwinConfig(mlp_ratio="4")  # type: ignore[arg-type]


def test_bad_config_json_is_a_checkpoint_error(tmp_path: Path, tiny_model: dvlta_metric.DVLTAVQA) -> None:
    folder = tiny_model.save_pretrained(tmp_path / "model")
    doc = json.loads((folder / "config.json").read_text())
    doc["preprocessing"]["fragment_view"]["num_clips"] = 0
    (folder / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="num_clips must be at least 1"):
        dvlta_metric.create(f"local-dir:{folder}")
    assert ModelConfig.from_dict(tiny_model.config.to_dict()) == tiny_model.config


def test_finite_config_scores_are_finite(video_factory: Any) -> None:
    """The largest accepted values still give a finite score (the guard is on non-finite input only)."""
    model = dvlta_metric.create(
        "dvlta-vqa-tiny", pretrained=False, device="cpu", logit_scale=100.0, fragment_view={"seed": 2**63 - 1}
    )
    assert torch.isfinite(model(video_factory(8, 64, 64))).all()


def test_config_differences() -> None:
    base = dvlta_metric.get_model_config("dvlta-vqa-tiny")
    assert config_differences(base, base) == []
    other = base.replace(fusion="softmax", swin={"embed_dim": 32}, fragment_view={"num_clips": 1})
    assert config_differences(base, other) == ["fusion", "swin.embed_dim", "fragment_view.num_clips"]
    with pytest.raises(TypeError, match="two ModelConfig"):
        config_differences(base, base.to_dict())  # type: ignore[arg-type]
