"""``create()`` and its name and device parsing: every kind of name, the revision rules, the registered
configuration of Hub entries, devices, seeded random weights and the errors a user can hit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from fake_hub import lay_out_repo

import dvlta_metric
from dvlta_metric import DVLTAVQA, CheckpointError, WeightsNotFoundError
from dvlta_metric._factory import ModelName, available_devices, parse_model_name, resolve_device, weights_label
from dvlta_metric._hub import sha256_of
from dvlta_metric._registry import WeightSource, register_model
from dvlta_metric.errors import WeightsUnavailableError


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dvlta-vqa", ModelName("registry", "dvlta-vqa")),
        ("dvlta-vqa.konvid", ModelName("registry", "dvlta-vqa.konvid")),
        ("dvlta-vqa-konvid", ModelName("registry", "dvlta-vqa.konvid")),  # an alias parses as its full name
        ("not-registered", ModelName("registry", "not-registered")),  # create() then says it is unknown
        ("hf-hub:org/name", ModelName("hf-hub", "org/name")),
        ("hf-hub:org/name@v1.0", ModelName("hf-hub", "org/name", "v1.0")),
        ("hf-hub:org/name@" + "a" * 40, ModelName("hf-hub", "org/name", "a" * 40)),
        ("local-dir:/tmp/model", ModelName("local-dir", "/tmp/model")),
        ("./weights", ValueError("looks like a path.*local-dir:")),
        ("/abs/path/model", ValueError("local-dir:")),
        ("org/name", ValueError("local-dir:")),
        ("hf-hub:noslash", ValueError("hf-hub:org/name")),
        ("hf-hub:org/name@", ValueError("empty revision")),
        ("local-dir:", ValueError("local-dir:/path")),
        # ids the Hub itself refuses are a ValueError here, not a WeightsNotFoundError after a lookup
        ("hf-hub:org/..", ValueError("invalid Hub repository id 'org/..'")),
        ("hf-hub:org/name.", ValueError("invalid Hub repository id 'org/name.'")),
        ("hf-hub:org/a--b", ValueError("invalid Hub repository id 'org/a--b'")),
        ("hf-hub:org/name@a@b", ValueError("more than one '@'")),
        (None, TypeError("model name must be a string")),
    ],
)
def test_parse_model_name(name: str, expected: ModelName | Exception) -> None:
    if isinstance(expected, Exception):
        with pytest.raises(type(expected), match=str(expected)):
            parse_model_name(name)
    else:
        assert parse_model_name(name) == expected


def test_hf_hub_offline_cache_and_revisions(
    hub_cache: Path, saved_tiny: tuple[Path, DVLTAVQA], tmp_path: Path, video_factory: Callable
) -> None:
    directory, model = saved_tiny
    files = {n: directory / n for n in ("config.json", "model.safetensors")}
    lay_out_repo(hub_cache, "test-org/tiny", files, commit="1" * 40, refs=("main",))
    other = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    with torch.no_grad():
        other.prompt_embeddings.mul_(-1)  # a different model, to tell the snapshots apart
    old = other.save_pretrained(tmp_path / "old")
    lay_out_repo(hub_cache, "test-org/tiny", {n: old / n for n in files}, commit="2" * 40, refs=("v0",))
    v = video_factory(8, 160, 200)
    assert torch.equal(dvlta_metric.create("hf-hub:test-org/tiny", device="cpu")(v), model(v))
    assert torch.equal(dvlta_metric.create("hf-hub:test-org/tiny@v0", device="cpu")(v), other(v))
    by_hash = dvlta_metric.create("hf-hub:test-org/tiny", revision="2" * 40, device="cpu")
    assert torch.equal(by_hash(v), other(v))
    config_only = dvlta_metric.create("hf-hub:test-org/tiny", pretrained=False, device="cpu")
    assert config_only.config == model.config
    with pytest.raises(ValueError, match="revision"):
        dvlta_metric.create("hf-hub:test-org/tiny@v0", revision="main")


def test_registry_entry_with_sha256(
    hub_cache: Path, saved_tiny: tuple[Path, DVLTAVQA], tmp_path: Path, scratch_registry: object
) -> None:
    directory, model = saved_tiny
    commit = "3" * 40
    snap = lay_out_repo(
        hub_cache, "test-org/pinned", {n: directory / n for n in ("config.json", "model.safetensors")}, commit=commit
    )
    good = sha256_of(snap / "model.safetensors")
    cfg = model.config.replace(name="test-pinned")
    register_model(cfg, WeightSource("hub", repo_id="test-org/pinned", revision=commit, sha256=good), overwrite=True)
    loaded = dvlta_metric.create("test-pinned", device="cpu")
    assert dvlta_metric.model_info("test-pinned").status.startswith("published: hf-hub:test-org/pinned@3333")
    assert loaded.config == cfg  # the registered configuration, the repository's weights
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    # a tampered file: same size, one byte changed
    data = bytearray((snap / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (snap / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        dvlta_metric.create("test-pinned", device="cpu")


def test_registry_hub_entry_uses_its_registered_config(
    hub_cache: Path, saved_tiny: tuple[Path, DVLTAVQA], scratch_registry: object, video_factory: Callable
) -> None:
    directory, model = saved_tiny
    commit = "4" * 40
    snap = lay_out_repo(
        hub_cache, "test-org/tiny", {n: directory / n for n in ("config.json", "model.safetensors")}, commit=commit
    )
    source = WeightSource("hub", repo_id="test-org/tiny", revision=commit, sha256=sha256_of(snap / "model.safetensors"))
    # sampling fields, name and description follow the registered entry
    mine = model.config.replace(
        name="my-tiny", description="mine", fragment_view={"num_clips": 1, "seed": 3}, frame_view={"num_frames": 2}
    )
    register_model(mine, source)
    loaded = dvlta_metric.create("my-tiny", device="cpu")
    assert loaded.config == mine == dvlta_metric.model_info("my-tiny").config
    assert dvlta_metric.create("my-tiny", pretrained=False, device="cpu").config == mine
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    # a field the weights depend on must agree with the repository's config.json
    wrong = model.config.replace(name="my-softmax", fusion="softmax", logit_scale=20.0)
    register_model(wrong, source)
    with pytest.raises(CheckpointError) as info:
        dvlta_metric.create("my-softmax", device="cpu")
    msg = str(info.value)
    assert "fusion: registered 'softmax', config.json 'cosine'" in msg
    assert "logit_scale: registered 20.0, config.json 10.0" in msg and "hf-hub:test-org/tiny" in msg
    assert dvlta_metric.create("my-softmax", pretrained=False, device="cpu").config.fusion == "softmax"
    # overrides still apply on top of the registered configuration
    assert dvlta_metric.create("my-tiny", device="cpu", fusion="softmax").config.fusion == "softmax"


def test_a_file_or_folder_does_not_hide_a_registry_name(
    tmp_path: Path, saved_tiny: tuple[Path, DVLTAVQA], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, model = saved_tiny
    monkeypatch.chdir(tmp_path)
    model.save_pretrained("dvlta-vqa-tiny")  # a folder named like the model, in the working directory
    (tmp_path / "dvlta-vqa").write_text("")
    assert parse_model_name("dvlta-vqa-tiny") == ModelName("registry", "dvlta-vqa-tiny")
    created = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    assert created.config == dvlta_metric.get_model_config("dvlta-vqa-tiny")
    with pytest.raises(ValueError, match="not published yet"):
        dvlta_metric.create("dvlta-vqa", device="cpu")
    # an unregistered name that exists here is still taken for a path
    model.save_pretrained("my-model")
    with pytest.raises(ValueError, match="looks like a path.*local-dir:my-model"):
        dvlta_metric.create("my-model", device="cpu")


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"as_loss": "no"}, TypeError, "as_loss must be True or False, got 'no'"),
        ({"pretrained": "False"}, TypeError, "pretrained must be True or False, got 'False'"),
        ({"pretrained": 0}, TypeError, "pretrained must be True or False"),
        ({"revision": 5}, TypeError, "revision must be a string"),
        ({"revision": ""}, ValueError, "revision must be a branch, tag or commit"),
        ({"revision": "v1", "pretrained": False}, ValueError, "no effect with pretrained=False"),
    ],
)
def test_create_checks_its_flags(kwargs: dict, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        dvlta_metric.create("dvlta-vqa-tiny", device="cpu", **{"pretrained": False, **kwargs})


def test_revision_with_a_local_directory_is_an_error(saved_tiny: tuple[Path, DVLTAVQA]) -> None:
    directory, _ = saved_tiny
    for pretrained in (True, False):
        with pytest.raises(ValueError, match="a local directory has no revisions"):
            dvlta_metric.create(f"local-dir:{directory}", revision="main", pretrained=pretrained, device="cpu")


def test_resolve_device_checks_every_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.xpu, "is_available", lambda: False)
    monkeypatch.delattr(torch, "hpu", raising=False)
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(None) == torch.device("cpu")
    for device in ("cuda", "cuda:1", "mps", "xpu", "hpu", torch.device("xpu", 0)):
        with pytest.raises(ValueError, match=f"device '{device}' was requested but .* is not available") as info:
            resolve_device(device)
        assert "available device types: cpu" in str(info.value)
    with pytest.raises(ValueError, match="'meta' cannot run the model: meta tensors hold no data"):
        dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="meta")
    with pytest.raises(ValueError, match="invalid device 'gpu'"):
        resolve_device("gpu")

    def broken() -> bool:
        raise AssertionError("Torch not compiled with XPU enabled")

    monkeypatch.setattr(torch.xpu, "is_available", broken)
    with pytest.raises(ValueError, match="'xpu' was requested but xpu is not available"):
        resolve_device("xpu")
    # an available backend is accepted, and its device index is checked against the device count
    monkeypatch.setattr(torch.xpu, "is_available", lambda: True)
    monkeypatch.setattr(torch.xpu, "device_count", lambda: 2)
    assert resolve_device("xpu:1") == torch.device("xpu", 1)
    with pytest.raises(ValueError, match="'xpu:2' was requested but this machine has 2 xpu device"):
        resolve_device("xpu:2")
    assert available_devices() == ["cpu", "xpu"]


def test_missing_directory() -> None:
    with pytest.raises(WeightsNotFoundError, match="not a directory"):
        dvlta_metric.create("local-dir:/definitely/not/here", device="cpu")


def test_unpublished_entries_say_what_to_do() -> None:
    for name in ("dvlta-vqa", "dvlta-vqa-konvid", "dvlta-vqa-livevqc", "dvlta-vqa-ytugc"):
        assert dvlta_metric.model_info(name).status == "not published yet"
        with pytest.raises(ValueError, match="not published yet") as info:
            dvlta_metric.create(name, device="cpu")
        assert "python -m dvlta_metric_train.train" in str(info.value) and "dvlta-vqa-zeroshot" in str(info.value)


def test_unknown_names_suggest_a_close_match() -> None:
    for typo, meant in (("dvlta-vqa-tyni", "dvlta-vqa-tiny"), ("DVLTA-VQA-Zeroshot", "dvlta-vqa-zeroshot")):
        with pytest.raises(ValueError, match=f"unknown model '{typo}' \\(did you mean '{meant}'\\?\\)"):
            dvlta_metric.create(typo, pretrained=False, device="cpu")
        with pytest.raises(ValueError, match=f"did you mean '{meant}'"):
            dvlta_metric.model_info(typo)
    with pytest.raises(ValueError) as info:
        dvlta_metric.get_model_config("something-else")
    assert "did you mean" not in str(info.value) and "registered models: dvlta-vqa," in str(info.value)
    with pytest.raises(TypeError, match="model name must be a string"):
        dvlta_metric.get_model_config(None)  # type: ignore[arg-type]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_random_weights_are_seeded_and_leave_the_callers_generator_alone() -> None:
    torch.manual_seed(0)
    before = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", seed=None)  # the old way
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    seeded = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")  # seed=0 by default
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator did not move
    assert _same_weights(seeded, before)  # bit for bit what torch.manual_seed(0) gave
    other = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", seed=1)
    assert not _same_weights(other, seeded)
    assert _same_weights(other, dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", seed=1))
    # seed=None draws from the caller's generator, which then moves on
    torch.manual_seed(0)
    first = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", seed=None)
    second = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", seed=None)
    assert _same_weights(first, seeded) and not _same_weights(second, seeded)
    for bad in ("0", 1.5, True):
        with pytest.raises(TypeError, match="seed must be an integer or None"):
            dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", seed=bad)


def test_the_seed_does_not_change_loaded_weights(saved_tiny: tuple[Path, DVLTAVQA]) -> None:
    directory, model = saved_tiny
    for seed in (0, 5, None):
        assert _same_weights(dvlta_metric.create(f"local-dir:{directory}", device="cpu", seed=seed), model)


def test_aliases_create_the_tagged_model() -> None:
    for alias, tag in (("dvlta-vqa-konvid", "konvid"), ("dvlta-vqa-livevqc", "livevqc"), ("dvlta-vqa-ytugc", "ytugc")):
        with pytest.raises(WeightsUnavailableError, match=f"weights for '{alias}' are not published yet"):
            dvlta_metric.create(alias, device="cpu")
        model = dvlta_metric.create(alias, pretrained=False, device="cpu", fragment_view={"num_clips": 1})
        assert model.config.name == f"dvlta-vqa.{tag}"
        untagged = dvlta_metric.get_model_config("dvlta-vqa")
        # one architecture: the tagged configuration differs only in its name and description
        assert model.config.replace(name="dvlta-vqa", description=untagged.description) == untagged.replace(
            fragment_view={"num_clips": 1}
        )


def test_weights_label_names_the_revision_actually_used(
    hub_cache: Path, saved_tiny: tuple[Path, DVLTAVQA], tmp_path: Path, scratch_registry: object
) -> None:
    """A branch asked for is recorded as the commit loaded, so a resumed results file cannot mix two versions."""
    directory, model = saved_tiny
    files = {n: directory / n for n in ("config.json", "model.safetensors")}
    snap = lay_out_repo(hub_cache, "test-org/tiny", files, commit="5" * 40, refs=("main",))
    assert (
        weights_label(dvlta_metric.create("hf-hub:test-org/tiny", device="cpu"))
        == f"hf-hub:test-org/tiny@{'5' * 40}, fp32"
    )
    lay_out_repo(hub_cache, "test-org/tiny", files, commit="6" * 40, refs=("main",))  # main moved
    moved = dvlta_metric.create("hf-hub:test-org/tiny", device="cpu", precision="bf16")
    assert weights_label(moved) == f"hf-hub:test-org/tiny@{'6' * 40}, bf16"
    source = WeightSource(
        "hub", repo_id="test-org/tiny", revision="5" * 40, sha256=sha256_of(snap / "model.safetensors")
    )
    register_model(model.config.replace(name="label-tiny"), source)
    assert (
        weights_label(dvlta_metric.create("label-tiny", device="cpu"))
        == f"label-tiny (hf-hub:test-org/tiny@{'5' * 40}), fp32"
    )
    digest = sha256_of(directory / "model.safetensors")[:12]
    local = dvlta_metric.create(f"local-dir:{directory}", device="cpu")
    assert weights_label(local) == f"local-dir:{directory.resolve()} (sha256 {digest}), fp32"
    assert weights_label(dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, seed=3)) == "random (seed 3), fp32"
    with pytest.raises(TypeError, match="weights_label expects a DVLTAVQA"):
        weights_label("dvlta-vqa-tiny")  # type: ignore[arg-type]


def test_pretrained_false_refuses_a_huge_config_json_before_building(
    saved_tiny: tuple[Path, DVLTAVQA], tmp_path: Path
) -> None:
    directory, _ = saved_tiny
    doc = json.loads((directory / "config.json").read_text())
    doc["model_args"]["clip_vision"] |= {"width": 4096, "layers": 64, "head_width": 64}  # 13 G parameters
    (tmp_path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="parameters, more than the bound"):
        dvlta_metric.create(f"local-dir:{tmp_path}", pretrained=False, device="cpu")
