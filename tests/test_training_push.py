"""training.push, offline: the HfApi calls are replaced by a fake that writes a local Hub cache."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import huggingface_hub
import pytest
import torch
from fake_hub import lay_out_repo

import dvlta_metric
from dvlta_metric import registry
from dvlta_metric.hub import sha256_of
from dvlta_metric.registry import WeightSource
from training import push

COMMIT = "c0ffee" + "0" * 34


class FakeApi:
    """Records the calls; ``upload_folder`` lays the files out as a Hub cache snapshot at :data:`COMMIT`."""

    calls: ClassVar[list[tuple[str, dict[str, Any]]]] = []
    hub_cache: ClassVar[Path | None] = None

    def __init__(self, token: str | None = None) -> None:
        self.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id: str, **kwargs: Any) -> SimpleNamespace:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, **kwargs: Any) -> SimpleNamespace:
        self.calls.append(("upload_folder", kwargs))
        folder = Path(kwargs["folder_path"])
        if self.hub_cache is not None:
            files = {name: folder / name for name in kwargs["allow_patterns"]}
            lay_out_repo(self.hub_cache, kwargs["repo_id"], files, commit=COMMIT)
        return SimpleNamespace(
            oid=COMMIT,
            commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/{COMMIT}",
        )


@pytest.fixture
def trained_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    meta = {
        "datasets": ["KoNViD-1k"],
        "results": {"KoNViD-1k": {"srocc": 0.91, "plcc": 0.92}},
        "split": {"seed": 42},
    }
    return model.save_pretrained(tmp_path / "best", metadata=meta)


def test_push_uploads_and_prints_the_registry_entry(
    trained_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hub_cache = tmp_path / "hub"
    FakeApi.calls, FakeApi.hub_cache = [], hub_cache
    monkeypatch.setattr(push, "HfApi", FakeApi)
    digest = sha256_of(trained_dir / "model.safetensors")
    rc = push.main(
        [
            "--dir",
            str(trained_dir),
            "--repo",
            "test-org/dvlta-tiny",
            "--registry-name",
            "dvlta-vqa-konvid",
            "--private",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    entry = f'WeightSource("hub", repo_id="test-org/dvlta-tiny", revision="{COMMIT}", sha256="{digest}")'
    assert entry in out and "'dvlta-vqa-konvid'" in out
    names = [c[0] for c in FakeApi.calls]
    assert names == ["init", "create_repo", "upload_folder"]
    create = FakeApi.calls[1][1]
    assert (
        create["repo_type"] == "model"
        and create["private"] is True
        and create["exist_ok"] is True
    )
    upload = FakeApi.calls[2][1]
    assert (
        upload["repo_id"] == "test-org/dvlta-tiny"
        and Path(upload["folder_path"]) == trained_dir
    )
    assert sorted(upload["allow_patterns"]) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    assert "srocc 0.9100" in upload["commit_message"]
    card = (trained_dir / "README.md").read_text()
    assert "hf-hub:test-org/dvlta-tiny" in card and "ORG/NAME" not in card

    # the printed entry is valid Python for the registry, and create() then loads exactly these weights
    source = eval(
        re.search(r"WeightSource\(.*\)", out).group(0), {"WeightSource": WeightSource}
    )
    assert source == WeightSource(
        "hub", repo_id="test-org/dvlta-tiny", revision=COMMIT, sha256=digest
    )
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = dvlta_metric.get_model_config("dvlta-vqa-tiny").replace(
        name="test-pushed-tiny"
    )
    monkeypatch.setattr(
        registry, "_REGISTRY", dict(registry._REGISTRY)
    )  # the entry disappears after the test
    monkeypatch.setattr(registry, "_WEIGHTS", dict(registry._WEIGHTS))
    registry.register_model(config, source)
    loaded = dvlta_metric.create("test-pushed-tiny", device="cpu", cache_dir=hub_cache)
    expected = dvlta_metric.create(f"local-dir:{trained_dir}", device="cpu")
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), expected.state_dict().values())
    )


def test_push_refuses_an_incomplete_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    FakeApi.calls, FakeApi.hub_cache = [], None
    monkeypatch.setattr(push, "HfApi", FakeApi)
    (tmp_path / "config.json").write_text("{}")
    assert push.main(["--dir", str(tmp_path), "--repo", "test-org/x"]) == 2
    assert "model.safetensors" in capsys.readouterr().err
    assert FakeApi.calls == []  # nothing was contacted
