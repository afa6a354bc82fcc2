"""Weights: save_pretrained round trips, the real hf_hub_download path on a fake offline cache, the
zero-shot model from a small open_clip checkpoint, and every failure a user can hit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import huggingface_hub
import pytest
import torch
from fake_hub import lay_out_repo
from safetensors.torch import save_file

import dvlta_metric
from dvlta_metric import DVLTAVQA, CheckpointError, WeightsNotFoundError
from dvlta_metric.checkpoint import read_config
from dvlta_metric.clip_towers import build_clip, encode_prompts
from dvlta_metric.config import CLIPTextConfig, CLIPVisionConfig
from dvlta_metric.factory import (
    ModelName,
    available_devices,
    parse_model_name,
    resolve_device,
)
from dvlta_metric.hub import sha256_of
from dvlta_metric.registry import WeightSource, register_model
from dvlta_metric.zeroshot import OPENAI_CLIP_SAFETENSORS, openai_clip_repo

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hub cache under a temporary HF_HOME, with offline mode on."""
    home = tmp_path / "hf_home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these at import time: mirror the environment for this process
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def scratch_registry() -> object:
    """Registry entries a test adds are removed afterwards."""
    from dvlta_metric import registry

    saved = dict(registry._REGISTRY), dict(registry._WEIGHTS)
    yield None
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved[0])
    registry._WEIGHTS.clear()
    registry._WEIGHTS.update(saved[1])


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DVLTAVQA]:
    torch.manual_seed(1)
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    out = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(out, metadata={"datasets": ["KoNViD-1k"], "results": {"KoNViD-1k": {"SROCC": 0.5}}})
    return out, model


@pytest.mark.parametrize(
    ("name", "kind", "target", "revision"),
    [
        ("dvlta-vqa", "registry", "dvlta-vqa", None),
        ("hf-hub:org/name", "hf-hub", "org/name", None),
        ("hf-hub:org/name@v1.0", "hf-hub", "org/name", "v1.0"),
        ("hf-hub:org/name@" + "a" * 40, "hf-hub", "org/name", "a" * 40),
        ("local-dir:/tmp/model", "local-dir", "/tmp/model", None),
    ],
)
def test_parse_model_name(name: str, kind: str, target: str, revision: str | None) -> None:
    parsed = parse_model_name(name)
    assert (parsed.kind, parsed.target, parsed.revision) == (kind, target, revision)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("./weights", "local-dir:"),
        ("/abs/path/model", "local-dir:"),
        ("org/name", "local-dir:"),
        ("hf-hub:noslash", "hf-hub:org/name"),
        ("hf-hub:org/name@", "empty revision"),
        ("local-dir:", "local-dir:/path"),
        # ids the Hub itself refuses are a ValueError here, not a WeightsNotFoundError after a lookup
        ("hf-hub:org/..", "invalid Hub repository id 'org/..'"),
        ("hf-hub:org/name.", "invalid Hub repository id 'org/name.'"),
        ("hf-hub:org/a--b", "invalid Hub repository id 'org/a--b'"),
        ("hf-hub:org/name@a@b", "more than one '@'"),
    ],
)
def test_parse_model_name_errors(name: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_model_name(name)


def test_round_trip_bit_identical(saved_tiny: tuple[Path, DVLTAVQA], video_factory: Callable) -> None:
    directory, model = saved_tiny
    assert {p.name for p in directory.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    loaded = dvlta_metric.create(f"local-dir:{directory}", device="cpu")
    v = video_factory(10, 200, 260)
    assert torch.equal(loaded(v), model(v))
    doc = json.loads((directory / "config.json").read_text())
    assert doc["architecture"] == "dvlta-vqa"
    assert doc["library"]["name"] == "dvlta-metric" and doc["library"]["version"] == dvlta_metric.__version__
    assert doc["preprocessing"]["fragment_view"]["clip_len"] == 8
    assert doc["prompts"]["positive"] == "a photo of a high quality video."
    assert doc["metadata"]["datasets"] == ["KoNViD-1k"]
    card = (directory / "README.md").read_text()
    assert card.startswith('---\nlibrary_name: dvlta-metric\nlicense: "mit"')
    assert "KoNViD-1k" in card and "arXiv:2504.11733" in card


def test_fp16_storage(tmp_path: Path, saved_tiny: tuple[Path, DVLTAVQA], video_factory: Callable) -> None:
    directory, model = saved_tiny
    half = model.save_pretrained(tmp_path / "half", fp16=True)
    size32 = (directory / "model.safetensors").stat().st_size
    size16 = (half / "model.safetensors").stat().st_size
    assert 0.45 < size16 / size32 < 0.56
    loaded = dvlta_metric.create(f"local-dir:{half}", device="cpu")
    assert next(loaded.parameters()).dtype == torch.float32
    v = torch.stack([video_factory(10, 200, 260, seed=i) for i in range(3)])
    assert torch.allclose(loaded(v), model(v), atol=1e-3)


def _front_matter(card: str) -> str:
    assert card.startswith("---\n")
    return card[4 : card.index("\n---\n", 4) + 1]


HOSTILE_METADATA = {
    "license": "mit\ntags: hacked",
    "datasets": ["a: b", "- c", 'say "hi" \\ #x', "yes", "line\u2028break\x85", "emoji \U0001f600"],
    "results": {"KoNViD-1k": {"SROCC\nextra: 1": 0.5}},
}


def test_model_card_front_matter_is_escaped(tmp_path: Path, saved_tiny: tuple[Path, DVLTAVQA]) -> None:
    """Metadata cannot add keys to the YAML front matter or change its structure (checked without PyYAML)."""
    _, model = saved_tiny
    folder = model.save_pretrained(tmp_path / "card", metadata=HOSTILE_METADATA)
    front = _front_matter((folder / "README.md").read_text(encoding="utf-8"))
    keys, items = [], {}
    for line in front.splitlines():
        if line.startswith("  - "):
            items.setdefault(keys[-1], []).append(json.loads(line[4:]))  # each item is one quoted scalar
        else:
            key, _, value = line.partition(": ") if ": " in line else (line.rstrip(":"), "", "")
            keys.append(key)
            if value:
                items[key] = json.loads(value) if value.startswith('"') else value
    assert keys == ["library_name", "license", "tags", "datasets", "metrics"]
    assert items["license"] == "mit\ntags: hacked"
    assert items["datasets"] == HOSTILE_METADATA["datasets"]
    assert items["metrics"] == ["srocc\nextra: 1"]


def test_model_card_front_matter_parses_with_yaml(tmp_path: Path, saved_tiny: tuple[Path, DVLTAVQA]) -> None:
    yaml = pytest.importorskip("yaml")
    _, model = saved_tiny
    folder = model.save_pretrained(tmp_path / "card", metadata=HOSTILE_METADATA)
    doc = yaml.safe_load(_front_matter((folder / "README.md").read_text(encoding="utf-8")))
    assert set(doc) == {"library_name", "license", "tags", "datasets", "metrics"}
    assert doc["license"] == "mit\ntags: hacked" and doc["tags"][0] == "video-quality-assessment"
    assert doc["datasets"] == HOSTILE_METADATA["datasets"]
    assert doc["metrics"] == ["srocc\nextra: 1"]


def test_save_pretrained_converts_numpy_tensor_and_path_metadata(
    tmp_path: Path, saved_tiny: tuple[Path, DVLTAVQA]
) -> None:
    np = pytest.importorskip("numpy")
    _, model = saved_tiny
    metadata = {
        "results": {"KoNViD-1k": {"SROCC": np.float32(0.5), "n": np.int64(7), "PLCC": torch.tensor(0.25)}},
        "data": Path("/data/videos"),
        "split": (1, 2),
        "arr": np.arange(3),
    }
    folder = model.save_pretrained(tmp_path / "m", metadata=metadata)
    _, saved = read_config(folder / "config.json")
    assert saved == {
        "results": {"KoNViD-1k": {"SROCC": 0.5, "n": 7, "PLCC": 0.25}},
        "data": "/data/videos",
        "split": [1, 2],
        "arr": [0, 1, 2],
    }
    assert "| KoNViD-1k | 0.2500 | 0.5000 | 7.0000 |" in (folder / "README.md").read_text()


@pytest.mark.parametrize(
    ("metadata", "error", "words"),
    [
        (["a"], TypeError, "metadata must be a dict"),
        ({"results": {"x": {"srocc": object()}}}, TypeError, r"metadata\['results'\]\['x'\]\['srocc'\]: cannot store"),
        ({"preds": torch.zeros(3)}, TypeError, r"metadata\['preds'\]: cannot store a tensor of shape \(3,\)"),
        ({"splits": {1: "a"}}, TypeError, r"metadata\['splits'\]: keys must be strings"),
    ],
)
def test_bad_metadata_writes_nothing(
    tmp_path: Path, saved_tiny: tuple[Path, DVLTAVQA], metadata: object, error: type, words: str
) -> None:
    directory, model = saved_tiny
    fresh = tmp_path / "fresh"
    with pytest.raises(error, match=words):
        model.save_pretrained(fresh, metadata=metadata)  # type: ignore[arg-type]
    assert not fresh.exists()
    # overwriting an existing model directory: the old files stay as they were
    old = tmp_path / "old"
    old.mkdir()
    for name in ("config.json", "model.safetensors", "README.md"):
        (old / name).write_bytes((directory / name).read_bytes())
    other = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    with pytest.raises(error, match=words):
        other.save_pretrained(old, metadata=metadata)  # type: ignore[arg-type]
    assert sorted(p.name for p in old.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    for name in ("config.json", "model.safetensors", "README.md"):
        assert (old / name).read_bytes() == (directory / name).read_bytes()


def test_save_pretrained_is_all_or_nothing(
    tmp_path: Path, saved_tiny: tuple[Path, DVLTAVQA], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while writing leaves the previous directory intact and no temporary files behind."""
    _, model = saved_tiny
    target = tmp_path / "model"
    model.save_pretrained(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    other = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    real_write_text = Path.write_text

    def failing_write_text(self: Path, *args: object, **kwargs: object) -> int:
        if self.name.startswith(".README.md."):
            raise OSError("disk full")
        return real_write_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_text", failing_write_text)
    with pytest.raises(OSError, match="disk full"):
        other.save_pretrained(target)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    other.save_pretrained(target)  # and a successful save replaces all three files
    assert torch.equal(
        dvlta_metric.create(f"local-dir:{target}", device="cpu").prompt_embeddings, other.prompt_embeddings
    )
    assert sorted(p.name for p in target.iterdir()) == ["README.md", "config.json", "model.safetensors"]


def test_fp16_refuses_values_beyond_float16(tmp_path: Path) -> None:
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    key = "temporal_context.stem.bn.running_var"
    with torch.no_grad():
        model.get_buffer(key)[0] = 1e5
    with pytest.raises(ValueError, match=f"'{key}'.*up to 100000.*fp16=False"):
        model.save_pretrained(tmp_path / "half", fp16=True)
    assert not (tmp_path / "half").exists()
    model.save_pretrained(tmp_path / "full")  # float32 holds it
    loaded = dvlta_metric.create(f"local-dir:{tmp_path / 'full'}", device="cpu")
    assert float(loaded.get_buffer(key)[0]) == 1e5
    with pytest.raises(TypeError, match="fp16 must be True or False"):
        model.save_pretrained(tmp_path / "x", fp16="yes")  # type: ignore[arg-type]


def test_weights_of_another_dtype_kind_are_refused(tmp_path: Path, saved_tiny: tuple[Path, DVLTAVQA]) -> None:
    directory, model = saved_tiny
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    counter = next(k for k, v in state.items() if v.dtype == torch.int64)
    cases = {
        "int": (
            state | {"prompt_embeddings": (state["prompt_embeddings"] * 100).to(torch.int32)},
            "prompt_embeddings has int32, expected float32",
        ),
        "bool": (state | {"prompt_embeddings": state["prompt_embeddings"] > 0}, "prompt_embeddings has bool"),
        "float counter": (state | {counter: state[counter].float()}, f"{counter} has float32, expected int64"),
    }
    for name, (sd, match) in cases.items():
        d = tmp_path / name.replace(" ", "_")
        d.mkdir()
        (d / "config.json").write_bytes((directory / "config.json").read_bytes())
        save_file(sd, str(d / "model.safetensors"))
        with pytest.raises(CheckpointError, match=f"wrong dtypes: {match}"):
            dvlta_metric.create(f"local-dir:{d}", device="cpu")
    # half-precision floats into float32 slots still load (what save_pretrained(fp16=True) writes)
    d = tmp_path / "bf16"
    d.mkdir()
    (d / "config.json").write_bytes((directory / "config.json").read_bytes())
    save_file({k: v.bfloat16() if v.is_floating_point() else v for k, v in state.items()}, str(d / "model.safetensors"))
    loaded = dvlta_metric.create(f"local-dir:{d}", device="cpu")
    assert loaded.prompt_embeddings.dtype == torch.float32
    assert torch.allclose(loaded.prompt_embeddings, model.prompt_embeddings, rtol=1e-2, atol=1e-2)


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


def test_empty_cache_offline_error_is_actionable(hub_cache: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        dvlta_metric.create("hf-hub:test-org/missing", device="cpu")
    msg = str(info.value)
    assert "test-org/missing" in msg and str(hub_cache) in msg and "HF_HUB_OFFLINE" in msg


def test_unknown_revision_offline(hub_cache: Path, saved_tiny: tuple[Path, DVLTAVQA]) -> None:
    directory, _ = saved_tiny
    lay_out_repo(hub_cache, "test-org/tiny", {n: directory / n for n in ("config.json", "model.safetensors")})
    with pytest.raises(WeightsNotFoundError, match="nope"):
        dvlta_metric.create("hf-hub:test-org/tiny@nope", device="cpu")


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


def test_zeroshot_weights_do_not_cover_other_branches_or_adapters(hub_cache: Path, video_factory: Callable) -> None:
    _write_small_clip(hub_cache)
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


def test_truncated_weights(tmp_path: Path, saved_tiny: tuple[Path, DVLTAVQA]) -> None:
    directory, _ = saved_tiny
    bad = tmp_path / "truncated"
    bad.mkdir()
    (bad / "config.json").write_bytes((directory / "config.json").read_bytes())
    raw = (directory / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        dvlta_metric.create(f"local-dir:{bad}", device="cpu")


def test_config_for_another_architecture(tmp_path: Path, saved_tiny: tuple[Path, DVLTAVQA]) -> None:
    directory, _ = saved_tiny
    bad = tmp_path / "other"
    bad.mkdir()
    doc = json.loads((directory / "config.json").read_text())
    doc["architecture"] = "fast-vqa"
    (bad / "config.json").write_text(json.dumps(doc))
    (bad / "model.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="'fast-vqa'"):
        dvlta_metric.create(f"local-dir:{bad}", device="cpu")


def test_missing_unexpected_and_misshaped_keys(tmp_path: Path, saved_tiny: tuple[Path, DVLTAVQA]) -> None:
    directory, model = saved_tiny
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    drop = next(k for k in state if k.startswith("text_adapter"))
    cases = {
        "missing": ({k: v for k, v in state.items() if k != drop}, f"missing keys: {drop}"),
        "unexpected": (state | {"extra.weight": torch.zeros(2)}, "unexpected keys: extra.weight"),
        "shape": (state | {"prompt_embeddings": torch.zeros(3, 7)}, "wrong shapes"),
    }
    for name, (sd, match) in cases.items():
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_bytes((directory / "config.json").read_bytes())
        save_file(sd, str(d / "model.safetensors"))
        with pytest.raises(CheckpointError, match=match):
            dvlta_metric.create(f"local-dir:{d}", device="cpu")


def test_missing_directory() -> None:
    with pytest.raises(WeightsNotFoundError, match="not a directory"):
        dvlta_metric.create("local-dir:/definitely/not/here", device="cpu")


def test_unpublished_entries_say_what_to_do() -> None:
    for name in ("dvlta-vqa", "dvlta-vqa-konvid", "dvlta-vqa-livevqc", "dvlta-vqa-ytugc"):
        assert dvlta_metric.model_info(name).status == "not published yet"
        with pytest.raises(ValueError, match="not published yet") as info:
            dvlta_metric.create(name, device="cpu")
        assert "training/" in str(info.value) and "dvlta-vqa-zeroshot" in str(info.value)


SMALL_CLIP = {
    "embed_dim": 32,
    "clip_vision": CLIPVisionConfig(image_size=224, patch_size=32, width=64, layers=2, head_width=32),
    "clip_text": CLIPTextConfig(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
}


def _write_small_clip(hub_cache: Path) -> torch.nn.Module:
    torch.manual_seed(7)
    clip = build_clip(SMALL_CLIP["clip_vision"], SMALL_CLIP["clip_text"], SMALL_CLIP["embed_dim"])
    file = hub_cache.parent / OPENAI_CLIP_SAFETENSORS
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(file))
    lay_out_repo(hub_cache, openai_clip_repo(), {OPENAI_CLIP_SAFETENSORS: file, "open_clip_config.json": b"{}"})
    return clip


def test_zeroshot_from_cached_openai_clip(hub_cache: Path, video_factory: Callable) -> None:
    assert openai_clip_repo() == "timm/vit_base_patch16_clip_224.openai"
    clip = _write_small_clip(hub_cache)
    model = dvlta_metric.create("dvlta-vqa-zeroshot", device="cpu", **SMALL_CLIP)
    cfg = model.config
    assert model.branches == ("vbtc",) and model.text_adapter is None
    expected = encode_prompts(clip, [cfg.prompts.fusion, cfg.prompts.positive, cfg.prompts.negative], 77)
    assert torch.allclose(model.prompt_embeddings, expected)
    # the image tower carries CLIP's weights; no text tower is kept in the model
    for key, value in clip.visual.state_dict().items():
        assert torch.equal(model.temporal_clip.visual.state_dict()[key], value)
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


def test_real_environment_variables_in_a_fresh_process(hub_cache: Path, saved_tiny: tuple[Path, DVLTAVQA]) -> None:
    """HF_HOME and HF_HUB_OFFLINE set in the environment of a new interpreter, as a user would."""
    directory, model = saved_tiny
    lay_out_repo(hub_cache, "env-org/tiny", {n: directory / n for n in ("config.json", "model.safetensors")})
    code = (
        "import torch, dvlta_metric\n"
        "m = dvlta_metric.create('hf-hub:env-org/tiny', device='cpu')\n"
        "print(float(m.prompt_embeddings.sum()))\n"
        "try:\n"
        "    dvlta_metric.create('hf-hub:env-org/absent', device='cpu')\n"
        "except dvlta_metric.WeightsNotFoundError as e:\n"
        "    print('ERR', e)\n"
    )
    env = dict(os.environ, HF_HOME=str(hub_cache.parent), HF_HUB_OFFLINE="1")
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300
    )
    assert out.returncode == 0, out.stderr
    first, err = out.stdout.strip().splitlines()[:2]
    assert abs(float(first) - float(model.prompt_embeddings.sum())) < 1e-4
    assert err.startswith("ERR") and str(hub_cache) in err and "HF_HUB_OFFLINE" in err


def test_library_never_unpickles() -> None:
    for path in (REPO_ROOT / "dvlta_metric").rglob("*.py"):
        text = path.read_text()
        assert "torch.load(" not in text and "import pickle" not in text, path


def test_zeroshot_revision_and_pinned_sha256(hub_cache: Path, scratch_registry: object) -> None:
    _write_small_clip(hub_cache)
    snapshot = hub_cache / ("models--" + openai_clip_repo().replace("/", "--")) / "snapshots" / ("0" * 40)
    good = sha256_of(snapshot / OPENAI_CLIP_SAFETENSORS)
    model = dvlta_metric.create("dvlta-vqa-zeroshot", device="cpu", revision="0" * 40, **SMALL_CLIP)
    assert model.branches == ("vbtc",)
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
        ({"kind": "hub", "repo_id": "org/x", "filename": ""}, ValueError, "filename must not be empty"),
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


def test_scratch_registry_restored() -> None:
    for name in ("test-pinned", "my_tiny.v2", "my-tiny", "my-softmax"):
        assert name not in dvlta_metric.list_models()
    assert "zeroshot-pinned" not in dvlta_metric.list_models()
