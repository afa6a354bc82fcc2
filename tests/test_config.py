"""Configuration checks: a bad override or config.json value fails when the configuration is made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import dvlta_metric
from dvlta_metric.config import FragmentViewConfig, ModelConfig, SwinConfig, check_fields
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
        ({"frame_view": {"crop": 200, "resize": 256}}, ValueError, "must equal clip_vision.image_size"),
        ({"clip_vision": {"width": 100}}, ValueError, "must be a multiple of head_width"),
        ({"clip_text": {"heads": 7}}, ValueError, "must be a multiple of heads"),
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
    assert FragmentViewConfig(seed=-3).seed == -3  # the seed is any integer
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
