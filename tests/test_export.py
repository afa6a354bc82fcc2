"""Export of the network over views: ``.pt2`` and ONNX files score within 1e-4 of the eager model.

The tiny model is traced once for the session (:func:`dvlta_metric.export.export_program`, conftest's
``tiny_export``, whose trace and ONNX file the example of docs/export.md reuses) and written in both formats; the
``.pt2`` file runs through ``torch.export.load``, the ONNX file through onnxruntime on the CPU (both at several
batch sizes: the batch dimension is dynamic). The command line writes one more ``.pt2``
file (one more trace). Everything else (bad formats and paths, refused models and files) fails before any trace.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_run import run
from conftest import TinyExport, export_videos

import dvlta_metric
from dvlta_metric.branches import swin3d
from dvlta_metric.export import (
    EXPORT_FORMATS,
    MARK,
    ViewNetwork,
    export_model,
    read_metadata,
    view_shapes,
)

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def videos() -> list[torch.Tensor]:
    return export_videos()


@pytest.fixture(scope="module")
def eager(tiny_export: TinyExport) -> torch.Tensor:
    """The eager model's scores of ``videos`` (the same videos), from before the model was traced."""
    return tiny_export.eager


@pytest.fixture(scope="module")
def views(tiny_model: dvlta_metric.DVLTAVQA, videos: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The views of both videos, stacked as one batch of 2."""
    return tuple(torch.cat(parts) for parts in zip(*(tiny_model.views_for_export(v) for v in videos)))


@pytest.fixture(scope="module")
def files(tiny_export: TinyExport) -> dict[str, Path]:
    """One trace of the tiny model, written as ``.pt2`` and (when onnx and onnxscript are installed) ONNX: the
    session's (conftest's ``tiny_export``, which the example of docs/export.md reuses)."""
    return tiny_export.files


def test_views_have_the_documented_shapes(tiny_model: dvlta_metric.DVLTAVQA, videos: list[torch.Tensor]) -> None:
    views = tiny_model.views_for_export(videos[0])
    shapes = view_shapes(tiny_model)
    assert list(shapes) == list(tiny_model.views) == ["fragments", "frames", "consecutive"]
    assert [tuple(v.shape) for v in views] == [(1, *s) for s in shapes.values()]
    assert shapes["fragments"] == (2, 3, 8, 224, 224) and shapes["frames"] == (4, 3, 224, 224)
    assert all(v.dtype == torch.float32 for v in views)


def test_view_network_is_the_model_after_its_views(
    tiny_model: dvlta_metric.DVLTAVQA, views: tuple[torch.Tensor, ...], eager: torch.Tensor
) -> None:
    with torch.no_grad():
        scores = ViewNetwork(tiny_model)(*views)
    assert scores.shape == (2,)
    torch.testing.assert_close(scores, eager, atol=1e-6, rtol=0)


def test_pt2_scores_match_eager(files: dict[str, Path], views: tuple[torch.Tensor, ...], eager: torch.Tensor) -> None:
    module = torch.export.load(files["pt2"]).module()
    with torch.no_grad():
        batch = module(*views)
        one = module(*(v[1:] for v in views))
        three = module(*(torch.cat([v, v[:1]]) for v in views))
    assert (batch - eager).abs().max() < TOLERANCE
    assert abs(float(one[0]) - float(eager[1])) < TOLERANCE
    assert three.shape == (3,) and abs(float(three[2]) - float(eager[0])) < TOLERANCE


def test_onnx_scores_match_eager_with_onnxruntime(
    files: dict[str, Path], views: tuple[torch.Tensor, ...], eager: torch.Tensor, tiny_model: dvlta_metric.DVLTAVQA
) -> None:
    ort = pytest.importorskip("onnxruntime", reason="ONNX export is optional: pip install 'dvlta-metric[export]'")
    if "onnx" not in files:
        pytest.skip("onnx and onnxscript are not installed: pip install 'dvlta-metric[export]'")
    session = ort.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(tiny_model.views)
    assert [o.name for o in session.get_outputs()] == ["score"]
    (batch,) = session.run(None, {i.name: v.numpy() for i, v in zip(session.get_inputs(), views)})
    (one,) = session.run(None, {i.name: v[:1].numpy() for i, v in zip(session.get_inputs(), views)})
    assert batch.shape == (2,) and abs(torch.from_numpy(batch) - eager).max() < TOLERANCE
    assert one.shape == (1,) and abs(float(one[0]) - float(eager[0])) < TOLERANCE


def test_files_carry_the_mark(files: dict[str, Path], tmp_path: Path) -> None:
    for fmt, path in files.items():
        meta = read_metadata(path)
        assert meta is not None and meta["written_by"] == MARK and meta["format"] == fmt
        assert meta["model"] == "dvlta-vqa-tiny" and meta["inputs"]["fragments"] == ["batch", 2, 3, 8, 224, 224]
    other = tmp_path / "other.pt2"
    other.write_bytes(b"not an archive")
    assert read_metadata(other) is None and read_metadata(tmp_path / "missing.onnx") is None


def test_export_leaves_the_eager_model_as_it_was(
    files: dict[str, Path], tiny_model: dvlta_metric.DVLTAVQA, videos: list[torch.Tensor], eager: torch.Tensor
) -> None:
    """Nothing a trace made (placeholder tensors) stays in the caches: later eager calls score bit for bit as before."""
    fake = torch._subclasses.fake_tensor.FakeTensor
    for module in tiny_model.modules():
        if isinstance(module, swin3d.WindowAttention3D) and module._bias_cache is not None:
            assert not isinstance(module._bias_cache[-1], fake)
    assert tiny_model.branches["bvfe"].encoder.attention_kernel == "sdpa"
    with torch.no_grad():
        again = torch.stack([tiny_model(v) for v in videos])
    assert torch.equal(again, eager)


@pytest.mark.parametrize(
    ("name", "format", "message"),
    [
        ("model.bin", None, "cannot tell the export format"),
        ("model.onnx", "tflite", "format must be one of"),
        ("model.pt2", "onnx", "ends in .pt2"),
    ],
)
def test_bad_formats_are_refused_before_tracing(
    tiny_model: dvlta_metric.DVLTAVQA, tmp_path: Path, name: str, format: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        export_model(tiny_model, tmp_path / name, format=format)
    assert not (tmp_path / name).exists()


def test_bad_paths_and_models_are_refused(
    tiny_model: dvlta_metric.DVLTAVQA, tiny_loss_model: dvlta_metric.DVLTAVQA, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="is a folder"):
        export_model(tiny_model, tmp_path, format="pt2")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        export_model(tiny_model, tmp_path / "file" / "model.pt2")
    with pytest.raises(ValueError, match="as_loss"):
        export_model(tiny_loss_model, tmp_path / "model.pt2")
    with pytest.raises(ValueError, match="as_loss"):
        tiny_loss_model.views_for_export(torch.rand(8, 3, 64, 64))
    with pytest.raises(ValueError, match="not a batch"):
        tiny_model.views_for_export(torch.rand(2, 8, 3, 64, 64))
    with pytest.raises(TypeError, match="DVLTAVQA"):
        export_model(torch.nn.Linear(2, 2), tmp_path / "model.pt2")  # type: ignore[arg-type]
    assert EXPORT_FORMATS == ("pt2", "onnx")


# ---------------------------------------------------------------------------------------------- command line
def test_cli_writes_the_file_and_replaces_its_own(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path
) -> None:
    """The command's own work: checks, the write, the mark, the report. The file is the one export_model writes,
    whose scores the tests above check; loading it again would add seconds and test nothing new."""
    target = tmp_path / "out.pt2"
    target.write_bytes(files["pt2"].read_bytes())  # a file of ours: replaced
    code, out, err = run(capsys, "export", "--model", "dvlta-vqa-tiny", "--random-weights", "--output", target)
    assert code == 0, err
    report = json.loads(out)
    assert report["format"] == "pt2" and report["path"] == str(target) and report["bytes"] == target.stat().st_size
    assert report["inputs"]["frames"] == ["batch", 4, 3, 224, 224] and report["weights"] == "random (seed 0)"
    assert [p.name for p in tmp_path.iterdir()] == ["out.pt2"]  # no temporary file left
    meta = read_metadata(target)
    assert meta is not None and meta["model"] == "dvlta-vqa-tiny" and meta["weights"] == "random (seed 0)"
    assert abs(target.stat().st_size - files["pt2"].stat().st_size) < 0.01 * target.stat().st_size


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "tflite", "--output", "m.tflite"], "invalid choice"),
        (["--output", "m.bin"], "cannot tell the export format"),
        (["--format", "onnx", "--output", "m.pt2"], "ends in .pt2"),
        (["--output", "taken.pt2"], "was not written by dvlta-metric export"),
        (["--output", "taken.pt2/m.pt2"], "is a file, not a folder"),
        (["--model", "no-such-model", "--output", "m.pt2"], "unknown model"),
    ],
)
def test_cli_refuses_bad_usage(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken.pt2").write_text("someone else's file")
    code, _, err = run(capsys, "export", "--random-weights", *argv)
    assert code == 2 and message in err
    assert (tmp_path / "taken.pt2").read_text() == "someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.pt2"]
