"""Export the network over views to a ``torch.export`` program (``.pt2``) or an ONNX file *(ours)*.

A score is two steps: cutting the views of a video (:meth:`~dvlta_metric.model.DVLTAVQA.make_views`: reading
frames, index arithmetic, patch cutting, resizing; Python that depends on the video's size and length) and the
**network over views** (:class:`ViewNetwork`: the three branches, the text-guided fusion and the prompt score),
whose inputs have fixed shapes for a model configuration (:func:`view_shapes`). Only the second step is exported:
the program takes the view tensors and returns the scores ``(B,)``, with a dynamic batch dimension.
:meth:`~dvlta_metric.model.DVLTAVQA.views_for_export` cuts the views of a video for it.

How it is exported, and why:

* :func:`torch.export.export`, non-strict (``strict=False``), under ``torch.no_grad()``, in float32 with the
  ``"sdpa"`` attention kernel. TorchScript is not used: ``torch.jit.script`` refuses the branches' Python
  (variable arguments, ``lru_cache`` lookups, dataclass configurations) and ``torch.jit.trace`` fails its own
  sanity check (the search for repeated clips and the shape caches are Python that a trace freezes). Strict
  export (TorchDynamo) is not needed: with the export-mode switch on, the network has no control flow that depends
  on tensor values.
* While it traces, the branches switch to their export mode
  (:func:`~dvlta_metric.branches.base.is_exporting`): the Swin3D looks its small shape tensors (gather and
  scatter indices, relative position indices, fragment coordinates, shift regions) up outside the trace, so that
  they are constants of the program, and builds its fragment gates, shift masks and attention biases from them in
  the program (as constants those would take much of the file); it keeps no bias between calls. The fragment
  branch does not look for repeated clips (a data-dependent shortcut), the float32 regions that guard against a
  caller's autocast are left out (there is none while exporting), and the Temporal Context Module pools frames
  with a mean (ONNX has no adaptive 3-D pooling to ``(T, 1, 1)``) and hands its batch norms contiguous
  features (torch's batch norm on a transposed layout returns another layout than its traced one once decomposed).
  Eager calls never see the switch: their scores do not change.
* The ``.pt2`` file is :func:`torch.export.save` of that program as traced (torch.export's default IR; a user
  who wants core ATen calls ``program.run_decompositions()``, which about doubles the export time). It holds the
  weights and the prompt embeddings (buffers: the text tower and the tokenizer are no part of it, the program
  never runs them), and no example inputs.
* The ONNX file is the same program through ``torch.onnx.export(program, dynamo=True)`` (the ``torch.export``
  based exporter, with onnxscript's graph optimisation, which onnxruntime needs here: without it a Conv bias
  comes out with the wrong shape). The TorchScript-based ONNX exporter traces like ``torch.jit.trace`` and is
  not used. Opset: the exporter's default.
* Both files carry a mark (:data:`MARK`, with the model's name, weights and input shapes): in ``.pt2`` as the
  extra file :data:`METADATA_NAME`, in ONNX as ``metadata_props``. ``dvlta-metric export`` replaces only files
  that carry it.

Scores of both files are within 1e-4 of eager scores (measured on the Benchmarks page; ``tests/test_export.py``
checks both on the test configuration, the ONNX file with onnxruntime on the CPU).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .model import DVLTAVQA
from .version import __version__

EXPORT_FORMATS: tuple[str, ...] = ("pt2", "onnx")
"""File formats :func:`export_model` writes: ``"pt2"`` (:func:`torch.export.save`) and ``"onnx"``."""

MARK = "dvlta-metric export"
"""``written_by`` of the metadata of every file :func:`export_model` writes."""

METADATA_NAME = "dvlta_metric.json"
"""Name of the metadata: an extra file of a ``.pt2`` archive, a ``metadata_props`` key of an ONNX model."""

OUTPUT_NAME = "score"
"""Name of the exported program's output (the ONNX output), ``(B,)`` scores in ``(0, 1)``."""

EXAMPLE_BATCH = 2
"""Batch size of the example views the program is traced with; the exported batch dimension is dynamic
(torch.export specialises a traced size of 1, so the example has 2)."""


class ViewNetwork(nn.Module):
    """The network over views of a model: branches, text-guided fusion and score, on view tensors alone.

    ``ViewNetwork(model)(*model.views_for_export(video))`` equals ``model(video)`` (``(1,)`` instead of 0-d):
    it runs :meth:`~dvlta_metric.model.DVLTAVQA.encode` (in float32),
    :meth:`~dvlta_metric.model.DVLTAVQA.branch_features` and :meth:`~dvlta_metric.model.DVLTAVQA.score_features`
    of the model it wraps (whose weights it shares) and nothing else: no reading, no view cutting, no input
    checks. It is what :func:`export_program` exports.

    Attributes:
        model: The wrapped model.
        view_names: The names of the inputs, in order (:attr:`~dvlta_metric.model.DVLTAVQA.views`).

    Args:
        model: A model in eval mode.
    """

    def __init__(self, model: DVLTAVQA) -> None:
        super().__init__()
        self.model = model
        self.view_names: tuple[str, ...] = model.views

    def forward(self, *views: torch.Tensor) -> torch.Tensor:
        """Score a batch of videos from their views.

        Args:
            *views: One tensor per name of :attr:`view_names`, in that order, as
                :meth:`~dvlta_metric.model.DVLTAVQA.views_for_export` gives them: ``"fragments"``
                ``(B, K, 3, L, S, S)``, ``"frames"`` and ``"consecutive"`` ``(B, T, 3, S, S)``; normalised float32
                (:func:`view_shapes` has the sizes of a model).

        Returns:
            ``(B,)`` scores in ``(0, 1)``, higher is better.
        """
        encoded = self.model.encode(dict(zip(self.view_names, views)), precision="fp32")
        scores, _ = self.model.score_features(self.model.branch_features(encoded))
        return scores


def view_shapes(model: DVLTAVQA) -> dict[str, tuple[int, ...]]:
    """The shape of each view of one video, without the batch dimension, in the order the program takes them.

    With the paper's settings (``dvlta-vqa``): ``{"fragments": (4, 3, 32, 224, 224), "frames": (8, 3, 224, 224),
    "consecutive": (8, 3, 224, 224)}``: ``K = num_clips`` fragment clips of ``L = clip_len`` frames of
    ``S = fragments * fsize`` pixels, and ``T = num_frames`` frames cropped to ``crop`` pixels
    (:class:`~dvlta_metric.config.FragmentViewConfig`, :class:`~dvlta_metric.config.FrameViewConfig`).

    Args:
        model: The model.

    Returns:
        ``{view name: shape}`` for :attr:`~dvlta_metric.model.DVLTAVQA.views`.
    """
    fragments, frames = model.config.fragment_view, model.config.frame_view
    shapes = {
        "fragments": (fragments.num_clips, 3, fragments.clip_len, fragments.size, fragments.size),
        "frames": (frames.num_frames, 3, frames.crop, frames.crop),
        "consecutive": (frames.num_frames, 3, frames.crop, frames.crop),
    }
    return {name: shapes[name] for name in model.views}


def export_program(model: DVLTAVQA) -> torch.export.ExportedProgram:
    """Trace the network over views of ``model`` with :func:`torch.export.export` (see the module notes).

    The program takes the views of :func:`view_shapes` with a batch dimension in front (dynamic: any batch
    size from 1 on) and returns ``(B,)`` scores. ``program.module()(*model.views_for_export(video))`` scores a
    video; :func:`export_model` writes the program to a file. The model is left as it was (its attention kernel is
    ``"sdpa"`` while it is traced). torch's "exporting" flag is one for the whole process: while this runs, models
    that score in other threads take the export paths too (the same scores up to float rounding, more slowly, and
    without their float32 guards under autocast); export while nothing else scores.

    Args:
        model: A model in eval mode, not a loss model, with float32 weights.

    Returns:
        The exported program (without example inputs).

    Raises:
        TypeError: If ``model`` is not a :class:`~dvlta_metric.model.DVLTAVQA`.
        ValueError: For a model in training mode, a loss model (``as_loss=True``) or weights converted to half
            precision.
        RuntimeError: On a torch before 2.5, which cannot tell its branches that they are being exported.
    """
    _check_model(model)
    network = ViewNetwork(model).eval()
    example = tuple(
        torch.zeros((EXAMPLE_BATCH, *shape), dtype=model.dtype, device=model.device)
        for shape in view_shapes(model).values()
    )
    batch = torch.export.Dim("batch", min=1)
    swin = model._swin()
    kernel = swin.attention_kernel if swin is not None else None
    try:
        if swin is not None:
            swin.set_attention_kernel("sdpa")  # FlexAttention has no ONNX form and compiles at run time
        with torch.no_grad():
            program = torch.export.export(
                network, example, strict=False, dynamic_shapes=(tuple({0: batch} for _ in example),)
            )
    finally:
        if swin is not None and kernel is not None:
            swin.set_attention_kernel(kernel)
    with contextlib.suppress(AttributeError):  # torch < 2.6 has no setter; the file then also holds the zeros
        program.example_inputs = None  # type: ignore[misc]
    return program


def export_metadata(model: DVLTAVQA, format: str) -> dict[str, Any]:
    """What :func:`export_model` records in the file: :data:`MARK`, versions, the model, its inputs and output.

    Args:
        model: The exported model.
        format: One of :data:`EXPORT_FORMATS`.

    Returns:
        ``{"written_by", "version", "torch", "format", "model", "weights", "inputs", "output"}``; ``inputs`` maps
        each view name to its shape with ``"batch"`` in front.
    """
    return {
        "written_by": MARK,
        "version": __version__,
        "torch": torch.__version__,
        "format": format,
        "model": model.config.name,
        "weights": model.weights_origin,
        "inputs": {name: ["batch", *shape] for name, shape in view_shapes(model).items()},
        "output": [OUTPUT_NAME, ["batch"]],
    }


def export_model(
    model: DVLTAVQA,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    program: torch.export.ExportedProgram | None = None,
) -> Path:
    """Write the network over views of ``model`` to ``path`` as a ``.pt2`` program or an ONNX model.

    The file is written whole (in a temporary folder beside ``path``, then renamed over it) and replaces an
    existing ``path`` (``dvlta-metric export`` replaces only files it wrote). Running it (the Export docs page has
    complete examples)::

        views = model.views_for_export("clip.mp4")
        scores = torch.export.load("model.pt2").module()(*views)                         # .pt2
        session = onnxruntime.InferenceSession("model.onnx")                              # ONNX
        (scores,) = session.run(None, {i.name: v.numpy() for i, v in zip(session.get_inputs(), views)})

    Args:
        model: A model in eval mode, not a loss model, with float32 weights.
        path: The file to write; missing parent folders are created.
        format: ``"pt2"`` or ``"onnx"`` (:data:`EXPORT_FORMATS`); by default from the suffix of ``path``
            (``.pt2`` or ``.onnx``).
        program: A program :func:`export_program` made of this model, to write one trace in both formats;
            traced here if ``None``.

    Returns:
        ``path``.

    Raises:
        ValueError: For an unknown format (or, without ``format``, a suffix that names none), a ``path`` that is a
            folder, under a file, or in a folder that cannot be written; and as :func:`export_program`.
        ImportError: For ``"onnx"`` without the ``onnx`` and ``onnxscript`` packages
            (``pip install "dvlta-metric[export]"``).
        OSError: When the file cannot be written (a full disk); no partial file is left.
    """
    target = Path(path)
    fmt = export_format(format, target)
    check_target(target)
    if fmt == "onnx":
        require_onnx()
    _check_model(model)
    if program is None:
        program = export_program(model)
    metadata = export_metadata(model, fmt)
    target.parent.mkdir(parents=True, exist_ok=True)
    # written under its own name in a private folder beside it (a .pt2 archive is named after its file), then moved
    folder = Path(tempfile.mkdtemp(prefix=".dvlta-export-", dir=target.parent))
    tmp = folder / target.name
    try:
        if fmt == "pt2":
            torch.export.save(program, tmp, extra_files={METADATA_NAME: json.dumps(metadata)})
        else:
            _write_onnx(program, model, tmp, metadata)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return target


def export_format(format: str | None, path: Path) -> str:
    """The format to write: ``format`` checked, or the one the suffix of ``path`` names.

    Raises:
        ValueError: For a format not in :data:`EXPORT_FORMATS`, no format and a suffix other than ``.pt2`` and
            ``.onnx``, or a format and the suffix of the other one.
    """
    if format is None:
        suffix = path.suffix.lower().lstrip(".")
        if suffix not in EXPORT_FORMATS:
            raise ValueError(
                f"cannot tell the export format from the name {path.name!r}: give the format (pt2 or onnx), or a "
                "file name ending in .pt2 or .onnx"
            )
        return suffix
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {EXPORT_FORMATS}, got {format!r}")
    named = path.suffix.lower().lstrip(".")
    if named in EXPORT_FORMATS and named != format:
        raise ValueError(f"the format is {format!r} but the file name {path.name!r} ends in .{named}: make them agree")
    return format


def check_target(path: Path) -> None:
    """Refuse a path that cannot become the exported file, before anything is traced.

    Raises:
        ValueError: If ``path`` is a folder, lies under a file, or its nearest existing folder is not writable.
    """
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give a file name, such as {path / 'model.onnx'}")
    existing = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"cannot write {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise ValueError(f"cannot write {path}: the folder {existing} is not writable")


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The metadata :func:`export_model` wrote into a file (:func:`export_metadata`), or ``None``.

    ``None`` for a file without it: not a ``.pt2`` archive or ONNX model, written by another tool, or an ONNX
    file when the ``onnx`` package is not installed.

    Args:
        path: The file.

    Returns:
        The metadata, or ``None``.
    """
    path = Path(path)
    if not path.is_file():
        return None
    text: str | None = None
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith(f"/extra/{METADATA_NAME}")), None)
                text = archive.read(name).decode("utf-8") if name else None
        except (OSError, zipfile.BadZipFile, UnicodeDecodeError):
            return None
    elif importlib.util.find_spec("onnx") is not None:
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception:  # not an ONNX model: onnx raises DecodeError and others
            return None
        text = next((p.value for p in proto.metadata_props if p.key == METADATA_NAME), None)
    try:
        found = json.loads(text) if text else None
    except ValueError:
        return None
    return found if isinstance(found, dict) and found.get("written_by") == MARK else None


def _write_onnx(program: torch.export.ExportedProgram, model: DVLTAVQA, path: Path, metadata: dict[str, Any]) -> None:
    """The program through the ``torch.export`` based ONNX exporter, with the metadata, into one file."""
    example = tuple(
        torch.zeros((EXAMPLE_BATCH, *shape), dtype=model.dtype, device=model.device)
        for shape in view_shapes(model).values()
    )
    with contextlib.redirect_stdout(sys.stderr):  # the exporter reports its steps on stdout
        onnx_program = torch.onnx.export(
            program, example, dynamo=True, input_names=list(model.views), output_names=[OUTPUT_NAME], verbose=False
        )
    if onnx_program is None:  # only the TorchScript-based exporter returns None
        raise RuntimeError("torch.onnx.export returned no ONNX program")
    onnx_program.model.metadata_props[METADATA_NAME] = json.dumps(metadata)
    onnx_program.model.doc_string = f"{MARK}: network over views of {model.config.name} (dvlta-metric {__version__})"
    onnx_program.save(path, external_data=False)


def require_onnx() -> None:
    """Refuse ONNX export without the packages it needs (:func:`export_model` checks before it traces).

    Raises:
        ImportError: Naming the missing packages and the extra that installs them.
    """
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f'ONNX export needs {" and ".join(missing)}: pip install "dvlta-metric[export]" (it also brings '
            "onnxruntime, to run the file)"
        )


def _check_model(model: object) -> None:
    if not isinstance(model, DVLTAVQA):
        raise TypeError(f"expected a DVLTAVQA model made by dvlta_metric.create(), got {type(model).__name__}")
    if model.training or model.as_loss:
        raise ValueError(
            "export writes the scoring network; this model is in training mode or a loss (as_loss=True): call "
            "model.eval(), or create it without as_loss"
        )
    model._check_dtype()
    if not hasattr(torch.compiler, "is_exporting"):
        raise RuntimeError(f"export needs torch>=2.5 (torch.compiler.is_exporting); this is torch {torch.__version__}")
