"""dvlta_metric_train.push, offline: the HfApi calls are replaced by a fake that writes a local Hub cache."""

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
from dvlta_metric import _registry as registry
from dvlta_metric._hub import sha256_of
from dvlta_metric._registry import WeightSource
from dvlta_metric_train import push

COMMIT = "c0ffee" + "0" * 34


class FakeApi:
    """Records the calls; ``create_commit`` lays the files out as a Hub cache snapshot at :data:`COMMIT`."""

    calls: ClassVar[list[tuple[str, dict[str, Any]]]] = []
    hub_cache: ClassVar[Path | None] = None
    fail_with: ClassVar[BaseException | None] = None  # raised by create_repo, as the Hub client would

    def __init__(self, token: str | None = None) -> None:
        self.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id: str, **kwargs: Any) -> SimpleNamespace:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        if self.fail_with is not None:
            raise self.fail_with
        return SimpleNamespace(repo_id=repo_id)

    def create_commit(self, **kwargs: Any) -> SimpleNamespace:
        self.calls.append(("create_commit", kwargs))
        if self.hub_cache is not None:
            files = {op.path_in_repo: _content(op) for op in kwargs["operations"]}
            lay_out_repo(self.hub_cache, kwargs["repo_id"], files, commit=COMMIT)
        return SimpleNamespace(
            oid=COMMIT,
            commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/{COMMIT}",
        )


def _content(operation: Any) -> Path | bytes:
    """What a ``CommitOperationAdd`` uploads: a file or bytes."""
    src = operation.path_or_fileobj
    return src if isinstance(src, bytes) else Path(src)


def _uploaded(calls: list[tuple[str, dict[str, Any]]]) -> dict[str, bytes]:
    """``{path in repo: bytes}`` of the last ``create_commit`` call."""
    commit = [kwargs for name, kwargs in calls if name == "create_commit"][-1]
    out = {}
    for op in commit["operations"]:
        src = _content(op)
        out[op.path_in_repo] = src if isinstance(src, bytes) else src.read_bytes()
    return out


@pytest.fixture(autouse=True)
def fake_api(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeApi.calls, FakeApi.hub_cache, FakeApi.fail_with = [], None, None
    monkeypatch.setattr(push, "HfApi", FakeApi)


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
    FakeApi.hub_cache = hub_cache
    digest = sha256_of(trained_dir / "model.safetensors")
    card_before = (trained_dir / "README.md").read_bytes()
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
    assert names == ["init", "create_repo", "create_commit"]
    create = FakeApi.calls[1][1]
    assert create["repo_type"] == "model" and create["private"] is True and create["exist_ok"] is True
    upload = FakeApi.calls[2][1]
    assert upload["repo_id"] == "test-org/dvlta-tiny" and upload["repo_type"] == "model"
    files = _uploaded(FakeApi.calls)
    assert sorted(files) == ["README.md", "config.json", "model.safetensors"]
    assert files["model.safetensors"] == (trained_dir / "model.safetensors").read_bytes()
    assert "srocc 0.9100" in upload["commit_message"]
    card = files["README.md"].decode()
    assert 'create("hf-hub:test-org/dvlta-tiny")' in card and "ORG/NAME" not in card
    assert (trained_dir / "README.md").read_bytes() == card_before  # the local card is not modified

    # the printed entry is valid Python for the registry, and create() then loads exactly these weights
    source = eval(re.search(r"WeightSource\(.*\)", out).group(0), {"WeightSource": WeightSource})
    assert source == WeightSource("hub", repo_id="test-org/dvlta-tiny", revision=COMMIT, sha256=digest)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = dvlta_metric.get_model_config("dvlta-vqa-tiny").replace(name="test-pushed-tiny")
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the entry disappears after the test
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
    registry.register_model(config, source)
    loaded = dvlta_metric.create("test-pushed-tiny", device="cpu", cache_dir=hub_cache)
    expected = dvlta_metric.create(f"local-dir:{trained_dir}", device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), expected.state_dict().values()))


def test_push_refuses_an_incomplete_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert push.main(["--dir", str(tmp_path), "--repo", "test-org/x"]) == 2
    assert "model.safetensors" in capsys.readouterr().err
    assert FakeApi.calls == []  # nothing was contacted


def test_each_push_uploads_a_card_for_its_own_repository(trained_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    card = trained_dir / "README.md"
    original = card.read_bytes()
    assert push.main(["--dir", str(trained_dir), "--repo", "me/scratch-test"]) == 0
    assert 'create("hf-hub:me/scratch-test")' in _uploaded(FakeApi.calls)["README.md"].decode()
    assert push.main(["--dir", str(trained_dir), "--repo", "org/dvlta-vqa-konvid"]) == 0
    second = _uploaded(FakeApi.calls)["README.md"].decode()
    assert 'create("hf-hub:org/dvlta-vqa-konvid")' in second and "scratch-test" not in second
    assert card.read_bytes() == original
    # a card filled in by an earlier version of dvlta_metric_train.push (which edited it in place) is rendered again
    card.write_text(original.decode().replace("hf-hub:ORG/NAME", "hf-hub:me/scratch-test"))
    assert push.main(["--dir", str(trained_dir), "--repo", "org/dvlta-vqa-konvid"]) == 0
    third = _uploaded(FakeApi.calls)["README.md"].decode()
    assert 'create("hf-hub:org/dvlta-vqa-konvid")' in third and "scratch-test" not in third
    capsys.readouterr()


def test_truncated_weights_are_refused_before_any_upload(trained_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = trained_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert push.main(["--dir", str(trained_dir), "--repo", "test-org/x", "--dry-run"]) == 2
    assert push.main(["--dir", str(trained_dir), "--repo", "test-org/x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(weights) in err and "Traceback" not in err
    assert FakeApi.calls == []  # nothing was contacted


def test_dry_run_checks_and_prints_without_network(trained_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {p.name: p.read_bytes() for p in trained_dir.iterdir()}
    digest = sha256_of(trained_dir / "model.safetensors")
    argv = ["--dir", str(trained_dir), "--repo", "test-org/dvlta-tiny", "--registry-name", "dvlta-vqa-konvid"]
    assert push.main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "nothing was uploaded" in out and "https://huggingface.co/test-org/dvlta-tiny" in out
    for name in ("config.json", "model.safetensors", "README.md"):
        assert f"  {name} (" in out
    assert "hf-hub:test-org/dvlta-tiny" in out and "srocc 0.9100" in out
    assert f'repo_id="test-org/dvlta-tiny", revision="{push.PENDING_REVISION}", sha256="{digest}")' in out
    assert FakeApi.calls == []  # no HfApi was even created
    assert {p.name: p.read_bytes() for p in trained_dir.iterdir()} == before


def _transport_error() -> BaseException:
    """A connection error of the HTTP client huggingface_hub is built on (not an OSError for httpx)."""
    for module in ("httpx", "httpx2"):
        try:
            client = __import__(module)
        except ImportError:
            continue
        return client.ConnectError("[Errno 111] Connection refused")
    return ConnectionRefusedError(111, "Connection refused")  # requests-based huggingface_hub: an OSError


def _http_error() -> BaseException:
    """The ``HfHubHTTPError`` of a 401 answer, with a response object of the client huggingface_hub uses."""
    message = "401 Client Error: Unauthorized"
    for module in ("httpx", "httpx2"):
        try:
            client = __import__(module)
        except ImportError:
            continue
        request = client.Request("POST", "https://huggingface.co/api/repos/create")
        return huggingface_hub.errors.HfHubHTTPError(message, response=client.Response(401, request=request))
    import requests

    response = requests.Response()
    response.status_code = 401
    return huggingface_hub.errors.HfHubHTTPError(message, response=response)


@pytest.mark.parametrize(
    ("failure", "words"),
    [
        (_transport_error, "Connection refused"),
        (_http_error, "Unauthorized"),
        (lambda: huggingface_hub.errors.HFValidationError("Invalid token"), "Invalid token"),
    ],
    ids=["no network", "http error", "refused as invalid"],
)
def test_hub_and_network_failures_exit_1_with_a_message(
    trained_dir: Path, capsys: pytest.CaptureFixture[str], failure: Any, words: str
) -> None:
    FakeApi.fail_with = failure()
    assert push.main(["--dir", str(trained_dir), "--repo", "test-org/x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the upload to test-org/x failed") and words in err and "hf auth login" in err


def test_a_malformed_repository_id_is_a_usage_error(trained_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for repo in ("bad repo id", "a/b/c", "noslash"):
        assert push.main(["--dir", str(trained_dir), "--repo", repo]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and repr(repo) in err and "org/name" in err
    assert FakeApi.calls == []
