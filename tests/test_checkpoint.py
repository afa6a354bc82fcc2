"""Model directories: the ``PretrainedMixin`` round trip, float16 storage, metadata, writes that are all or
nothing, and weights that do not fit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import dvlta_metric
from dvlta_metric import DVLTAVQA, CheckpointError, WeightsNotFoundError
from dvlta_metric._checkpoint import PretrainedMixin, read_config

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_from_pretrained_is_the_inverse_of_save_pretrained(
    saved_tiny: tuple[Path, DVLTAVQA], video_factory: Callable, tmp_path: Path
) -> None:
    directory, model = saved_tiny
    loaded = DVLTAVQA.from_pretrained(directory)
    assert isinstance(loaded, DVLTAVQA) and loaded.config == model.config
    own, back = model.state_dict(), loaded.state_dict()
    assert own.keys() == back.keys() and all(torch.equal(own[k], back[k]) for k in own)
    v = video_factory(10, 200, 260)
    assert torch.equal(loaded(v), model(v))
    # a configuration passed in replaces config.json; constructor arguments pass through
    one_clip = model.config.replace(fragment_view={"num_clips": 1})
    other = DVLTAVQA.from_pretrained(directory, config=one_clip, as_loss=True)
    assert other.config == one_clip and other.as_loss
    with pytest.raises(CheckpointError, match="wrong shapes"):
        DVLTAVQA.from_pretrained(directory, config=model.config.replace(embed_dim=32))
    with pytest.raises(WeightsNotFoundError, match="is not a directory"):
        DVLTAVQA.from_pretrained(tmp_path / "absent")
    (tmp_path / "config_only").mkdir()
    (tmp_path / "config_only" / "config.json").write_bytes((directory / "config.json").read_bytes())
    with pytest.raises(WeightsNotFoundError, match="model.safetensors"):
        DVLTAVQA.from_pretrained(tmp_path / "config_only")


def test_the_mixin_needs_a_module(saved_tiny: tuple[Path, DVLTAVQA], tmp_path: Path) -> None:
    class NotAModule(PretrainedMixin):
        def __init__(self, config: object) -> None:
            self.config = config  # type: ignore[assignment]

    directory, model = saved_tiny
    with pytest.raises(TypeError, match="needs a torch.nn.Module subclass, got NotAModule"):
        NotAModule(model.config).save_pretrained(tmp_path / "x")
    with pytest.raises(TypeError, match="needs a torch.nn.Module subclass, got NotAModule"):
        NotAModule.from_pretrained(directory)
    assert not (tmp_path / "x").exists()


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
    key = "branches.tcm.stem.bn.running_var"
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


def test_library_never_unpickles() -> None:
    for path in (REPO_ROOT / "dvlta_metric").rglob("*.py"):
        text = path.read_text()
        assert "torch.load(" not in text and "import pickle" not in text, path


def _copy_with(directory: Path, target: Path, *, state: dict[str, torch.Tensor] | None = None, doc: str | None = None):
    """A copy of a model directory with its weights and/or its config.json replaced."""
    target.mkdir()
    (target / "config.json").write_text(doc if doc is not None else (directory / "config.json").read_text())
    if state is None:
        (target / "model.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
    else:
        save_file(state, str(target / "model.safetensors"))
    return target


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(
    value: float, saved_tiny: tuple[Path, DVLTAVQA], tmp_path: Path
) -> None:
    directory, model = saved_tiny
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 3)
    state[key].view(-1)[3] = value
    bad = _copy_with(directory, tmp_path / "bad", state=state)
    with pytest.raises(CheckpointError, match=rf"NaN or infinity: {key} \(1 of {state[key].numel()} values\)"):
        dvlta_metric.create(f"local-dir:{bad}", device="cpu")


def test_config_json_too_large_or_too_deep_is_refused(saved_tiny: tuple[Path, DVLTAVQA], tmp_path: Path) -> None:
    directory, _ = saved_tiny
    doc = json.loads((directory / "config.json").read_text())
    cases = {
        "deep": ("[" * 100_000 + "]" * 100_000, "more than 32 levels deep"),  # the parser's RecursionError
        "deep metadata": (json.dumps(doc | {"metadata": json.loads("[" * 40 + "]" * 40)}), "more than 32 levels"),
        "large": (json.dumps(doc | {"metadata": {"pad": "x" * (1 << 20)}}), "larger than 1048576 bytes"),
    }
    for name, (text, words) in cases.items():
        folder = _copy_with(directory, tmp_path / name.replace(" ", "_"), doc=text)
        with pytest.raises(CheckpointError, match=words):
            read_config(folder / "config.json")


def test_shapes_are_compared_before_the_model_is_built(
    saved_tiny: tuple[Path, DVLTAVQA], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config.json asking for a large model that its weights do not fit is refused on the meta device."""
    directory, _ = saved_tiny
    doc = json.loads((directory / "config.json").read_text())
    doc["model_args"]["embed_dim"] = 4096
    doc["model_args"]["text_adapter_hidden"] = 4096
    doc["model_args"]["clip_vision"] |= {"width": 2048, "layers": 8, "head_width": 64}  # 400 M parameters
    folder = _copy_with(directory, tmp_path / "large", doc=json.dumps(doc))
    devices: list[str] = []
    build = DVLTAVQA.__init__

    def recording(self: DVLTAVQA, *args: object, **kwargs: object) -> None:
        devices.append(torch.empty(0).device.type)  # "meta" inside `with torch.device("meta")`
        build(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(DVLTAVQA, "__init__", recording)
    with pytest.raises(CheckpointError, match="wrong shapes"):
        dvlta_metric.create(f"local-dir:{folder}", device="cpu")
    assert devices == ["meta"]  # never built for real
    doc["model_args"]["clip_vision"] |= {"width": 4096, "layers": 64}  # 13 G parameters: beyond the bound
    (folder / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="parameters, more than the bound of 1000000000"):
        dvlta_metric.create(f"local-dir:{folder}", device="cpu")
    assert devices == ["meta", "meta"]


def test_a_model_beyond_the_parameter_bound_is_not_built(
    saved_tiny: tuple[Path, DVLTAVQA], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, model = saved_tiny
    monkeypatch.setattr("dvlta_metric._checkpoint.MAX_PARAMETERS", 1000)
    total = sum(v.numel() for v in model.state_dict().values())
    with pytest.raises(CheckpointError, match=f"a model of {total} parameters, more than the bound of 1000"):
        DVLTAVQA.from_pretrained(directory)
