"""The registry: entries, weight tags (``arch.tag``) and their aliases, ``WeightSource`` checks, listing and
suggestions for misspelt names."""

from __future__ import annotations

import pytest

import dvlta_metric
from dvlta_metric._registry import WeightSource, register_model


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"kind": "foo"}, ValueError, "WeightSource.kind must be one of 'hub', 'unpublished', 'random', 'openai-clip'"),
        ({"kind": "hub"}, ValueError, r"WeightSource\('hub'\) needs repo_id='org/name'"),
        ({"kind": "hub", "repo_id": "noslash"}, ValueError, "form 'org/name'"),
        ({"kind": "hub", "repo_id": "org/a--b"}, ValueError, "invalid Hub repository id 'org/a--b'"),
        ({"kind": "hub", "repo_id": 5}, TypeError, "must be a string"),
        ({"kind": "random", "repo_id": "org/x"}, ValueError, "repo_id is only used by kind 'hub'"),
        ({"kind": "hub", "repo_id": "org/x", "sha256": "abc"}, ValueError, "sha256 must be 64 hexadecimal digits"),
        ({"kind": "hub", "repo_id": "org/x", "revision": ""}, ValueError, "WeightSource.revision must be"),
        ({"kind": "hub", "repo_id": "org/x", "sha256": 5}, TypeError, "sha256 must be a string or None"),
        # registry entries pin a commit: a branch, a tag or a short hash could move to other weights
        ({"kind": "hub", "repo_id": "org/x", "revision": "main", "sha256": "a" * 64}, ValueError, "full commit hash"),
        ({"kind": "hub", "repo_id": "org/x", "revision": "abc1234", "sha256": "a" * 64}, ValueError, "40 lowercase"),
        ({"kind": "hub", "repo_id": "org/x", "revision": "A" * 40, "sha256": "a" * 64}, ValueError, "full commit"),
        ({"kind": "openai-clip", "revision": "v1.0"}, ValueError, "WeightSource.revision must be a full commit hash"),
        ({"kind": "hub", "repo_id": "org/x", "sha256": "a" * 64}, ValueError, "needs revision=<40-hex commit>"),
        ({"kind": "hub", "repo_id": "org/x", "revision": "a" * 40}, ValueError, "and sha256=<64-hex digest"),
    ],
)
def test_weight_source_is_validated(kwargs: dict, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        WeightSource(**kwargs)


@pytest.mark.parametrize("name", ["", "org/tiny", "hf-hub:x", "local-dir:x", " tiny", "-tiny", "a b", "./x"])
def test_register_model_refuses_names_create_cannot_reach(name: str, scratch_registry: object) -> None:
    config = dvlta_metric.get_model_config("dvlta-vqa-tiny").replace(name=name)
    with pytest.raises(ValueError, match="a registry name must be non-empty, start with a letter or digit"):
        register_model(config)
    assert name not in dvlta_metric.list_models()


def test_register_model_checks_its_arguments(scratch_registry: object) -> None:
    config = dvlta_metric.get_model_config("dvlta-vqa-tiny").replace(name="my_tiny.v2")
    with pytest.raises(TypeError, match="register_model expects a ModelConfig, got dict"):
        register_model({"name": "x"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="weights must be a WeightSource .* got 'hub'"):
        register_model(config, "hub")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        register_model(config, overwrite=1)  # type: ignore[arg-type]
    assert "my_tiny.v2" not in dvlta_metric.list_models()
    register_model(config, WeightSource("random"))
    with pytest.raises(ValueError, match="already registered .*overwrite=True"):
        register_model(config)
    assert dvlta_metric.create("my_tiny.v2", pretrained=False, device="cpu").config.name == "my_tiny.v2"
    # an OpenAI CLIP source only fills a CLIP-branch model without adapters
    with pytest.raises(ValueError, match="only cover the CLIP branch without adapters.*use_adapters=True"):
        register_model(config.replace(name="clip-tiny"), WeightSource("openai-clip"))
    assert "clip-tiny" not in dvlta_metric.list_models()


def test_one_architecture_with_weight_tags() -> None:
    assert dvlta_metric.list_models("dvlta-vqa*") == [
        "dvlta-vqa",
        "dvlta-vqa-tiny",
        "dvlta-vqa-zeroshot",
        "dvlta-vqa.konvid",
        "dvlta-vqa.livevqc",
        "dvlta-vqa.ytugc",
    ]
    assert dvlta_metric.list_models("dvlta-vqa.*") == ["dvlta-vqa.konvid", "dvlta-vqa.livevqc", "dvlta-vqa.ytugc"]
    assert "dvlta-vqa-konvid" not in dvlta_metric.list_models()  # aliases are not listed
    assert dvlta_metric.list_models(pretrained=True) == ["dvlta-vqa-zeroshot"]
    base = dvlta_metric.get_model_config("dvlta-vqa")
    for tag, dataset in (("konvid", "KoNViD-1k"), ("livevqc", "LIVE-VQC"), ("ytugc", "YouTube-UGC")):
        info = dvlta_metric.model_info(f"dvlta-vqa-{tag}")  # the name used before tags
        assert info is dvlta_metric.model_info(f"dvlta-vqa.{tag}")
        assert info.name == info.config.name == f"dvlta-vqa.{tag}"
        assert info.description == f"DVLTA-VQA trained on {dataset}" and info.status == "not published yet"
        assert info.config.replace(name=base.name, description=base.description) == base


def test_register_a_tag_with_aliases(scratch_registry: None) -> None:
    config = dvlta_metric.get_model_config("dvlta-vqa-tiny").replace(name="arch", description="mine")
    registered = register_model(config, WeightSource("random"), tag="v2", aliases=["arch-v2"])
    assert registered == config.replace(name="arch.v2")
    assert dvlta_metric.model_info("arch-v2").name == "arch.v2" and "arch" not in dvlta_metric.list_models()
    assert dvlta_metric.list_models("arch*") == ["arch.v2"]
    assert dvlta_metric.create("arch-v2", pretrained=False, device="cpu").config.name == "arch.v2"
    for tag in ("", "a.b", "-x", 3):
        with pytest.raises(ValueError, match="tag must start with a letter or digit"):
            register_model(config, tag=tag)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'arch-v2' is already registered"):
        register_model(config.replace(name="other"), aliases=["arch-v2"])
    with pytest.raises(ValueError, match="cannot register a model named 'a/b'"):
        register_model(config.replace(name="other"), aliases=["a/b"])
    assert "other" not in dvlta_metric.list_models()  # a refused alias registers nothing
    register_model(config.replace(name="other"), aliases=["arch-v2"], overwrite=True)
    assert dvlta_metric.model_info("arch-v2").name == "other"
    with pytest.raises(ValueError, match="did you mean 'arch-v2'"):
        dvlta_metric.model_info("arch-v3")


def test_list_models_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="pattern must be a string"):
        dvlta_metric.list_models(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pretrained must be True or False"):
        dvlta_metric.list_models(pretrained=1)  # type: ignore[arg-type]
    assert dvlta_metric.list_models("*tiny*") == ["dvlta-vqa-tiny"]


def test_scratch_registry_restored() -> None:
    for name in ("test-pinned", "my_tiny.v2", "my-tiny", "my-softmax", "arch.v2", "arch-v2", "other"):
        assert name not in dvlta_metric.list_models()
    assert "zeroshot-pinned" not in dvlta_metric.list_models()


def test_the_zero_shot_entry_says_whether_it_is_pinned() -> None:
    """Its commit and SHA-256 could not be looked up offline: the entry and `dvlta-metric list` say so."""
    source = dvlta_metric.model_info("dvlta-vqa-zeroshot").weights
    if source.pinned:
        assert source.revision and len(source.revision) == 40 and source.sha256
        assert f"pinned @{source.revision[:12]}" in source.status
    else:
        assert "NOT pinned" in source.status and "not pinned yet" in source.note
    assert WeightSource("openai-clip", revision="b" * 40, sha256="c" * 64).status.endswith("pinned @bbbbbbbbbbbb)")
