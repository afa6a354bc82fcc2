"""Shared fixtures: the tiny model, synthetic videos, and the optional ../shared data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fake_hub import keep_registry, offline_hub_cache, save_tiny

import dvlta_metric

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model() -> dvlta_metric.DVLTAVQA:
    """The registered test configuration with fixed random weights, on CPU, eval mode."""
    torch.manual_seed(0)
    return dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")


@pytest.fixture(scope="session")
def tiny_loss_model() -> dvlta_metric.DVLTAVQA:
    """The tiny model created with ``as_loss=True``."""
    torch.manual_seed(0)
    return dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu", as_loss=True)


def export_videos() -> list[torch.Tensor]:
    """The two videos the export tests score: 40 float frames of 120 x 160, 20 uint8 frames of 96 x 128."""
    return [make_video(40, 120, 160, seed=1), make_video(20, 96, 128, seed=2, dtype=torch.uint8)]


@dataclass(frozen=True)
class TinyExport:
    """One trace of :func:`tiny_model` and the files written from it (``"pt2"``, and ``"onnx"`` when onnx and
    onnxscript are installed), with the model's eager scores of ``videos`` from just before the trace."""

    program: torch.export.ExportedProgram
    files: dict[str, Path]
    videos: list[torch.Tensor]
    eager: torch.Tensor


@pytest.fixture(scope="session")
def tiny_export(tiny_model: dvlta_metric.DVLTAVQA, tmp_path_factory: pytest.TempPathFactory) -> TinyExport:
    """The tiny model traced once for the session (:func:`dvlta_metric.export.export_program`) and written as
    ``.pt2`` and ONNX: ``tests/test_export.py`` checks these files, and the example of ``docs/export.md`` reuses the
    trace and the ONNX file instead of making its own (``tests/test_docs.py``; writing the ONNX file is most of
    the time an export takes)."""
    from dvlta_metric.export import export_model, export_program

    videos = export_videos()
    with torch.no_grad():
        eager = torch.stack([tiny_model(v) for v in videos])  # before the trace, whichever test asks first
    folder = tmp_path_factory.mktemp("export")
    program = export_program(tiny_model)
    written = {"pt2": export_model(tiny_model, folder / "tiny.pt2", program=program)}
    try:
        written["onnx"] = export_model(tiny_model, folder / "tiny.onnx", program=program)
    except ImportError:
        pass  # the ONNX tests skip
    return TinyExport(program, written, videos, eager)


def make_video(t: int, h: int, w: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A smooth random video ``(T, 3, H, W)`` in [0, 1] with some motion (deterministic per seed)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, max(2, h // 8), max(2, w // 8), generator=g)
    base = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    shifts = torch.arange(t) % max(1, w // 4)
    frames = torch.stack([torch.roll(base[0], int(s), dims=-1) for s in shifts])
    noise = 0.05 * torch.rand(t, 3, h, w, generator=g)
    video = (0.9 * frames + noise).clamp(0, 1)
    if dtype == torch.uint8:
        return (video * 255).round().to(torch.uint8)
    return video.to(dtype)


@pytest.fixture
def video_factory() -> Callable[..., torch.Tensor]:
    """``video_factory(t, h, w, seed=0, dtype=float32)`` -> synthetic video."""
    return make_video


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` of the development checkout; tests using it skip when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip("../shared/data is not present (fresh clone)")
    return SHARED_DIR


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache under ``tmp_path``, with the Hub offline (``tests/fake_hub.py`` lays repos out)."""
    return offline_hub_cache(tmp_path, monkeypatch)


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registry entries and aliases a test adds disappear after it."""
    keep_registry(monkeypatch)


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dvlta_metric.DVLTAVQA]:
    """A tiny model saved with ``save_pretrained`` (one folder per test module), and the model."""
    out = tmp_path_factory.mktemp("tiny")
    return out, save_tiny(out)
