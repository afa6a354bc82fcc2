"""The feature cache's format and its reader: what :mod:`dvlta_metric_train.features` writes and training reads.

Both backbones of DVLTA-VQA are frozen (the FAST-VQA-B Swin3D of the fragment branch and the CLIP image
encoder), so their outputs are computed once per video and training never decodes video. The cache stores,
for each branch of the model, what its frozen part gives (``branch.encode`` of the
:class:`~dvlta_metric.branches.base.Branch` seam, through ``model.encode``), each as one ``.npy`` file opened
with ``numpy.load(mmap_mode="r")``:

``<branch>`` (``bvfe``, ``tcm``, ``vbtc``)
    The encoded *inference* view, exactly as ``model(video)`` computes it (``make_views(train=False)``):
    ``bvfe`` ``(num_clips, C, t, h, w)`` Swin features, ``tcm`` ``(T, 3, S, S)`` the normalised frame view
    itself (the TCM has no frozen part), ``vbtc`` ``(T, D)`` CLIP frame embeddings ``z_t``. So a trained model
    evaluated from the cache scores as it does on the video file.
``<branch>_train`` ``(K, ...)``
    For branches whose view training draws at random (:data:`~dvlta_metric.views.RANDOM_IN_TRAINING`: the
    fragment view and the consecutive frames), the encoded views of ``K`` training samples, each stored whole
    (``(K, 1, C, t, h, w)`` for the one fragment clip of a training view). Sample ``s`` is
    ``make_views(video, train=True, generator=g)`` with ``g`` seeded by
    :func:`dvlta_metric_train.features.sample_generator` (from ``--seed``, the video's path and ``s``), so
    the cache is reproducible and independent of the order or sharding of the videos. Training uses one
    sample per video and epoch: ``(1, 768, 16, 7, 7)`` (``bvfe``) and ``(8, 3, 224, 224)`` (``tcm``, whose
    consecutive frames start at random) per sample for the paper's model.

Arrays are stored in the cache dtype (float16 by default): the encoded frame view is not a multiple of 1/255
after the resize anyway.

Arrays of branches the model does not have are not stored. A ``meta.json`` is written last, with the size
in bytes of each ``.npy`` file (``"bytes"``); each video's folder is written under a temporary name
(``videos/.tmp-<key>@<host>-<pid>``) and renamed into place, so an interrupted run leaves no partial video
and a rerun skips every video already cached (resumable). A video folder counts as cached only when its
``meta.json`` is readable and every array file has the size it records and an ``.npy`` header with the
expected shape and dtype (:func:`video_problem`): a rerun recomputes videos whose files were truncated,
overwritten or deleted, :meth:`FeatureCache.available_rows` leaves them out (with a warning) and
:meth:`FeatureCache.arrays` refuses them with a ``ValueError`` naming the file. A run also removes the
temporary folders that killed runs left behind: those named with this host and the id of a process that is
no longer running (folders of running processes, such as other ``--shard`` processes, and of other hosts
sharing the folder are left alone; on Windows none are removed).

``index.json`` records the settings, the model fingerprint (configuration and SHA-256 of the frozen
backbones: the trainer refuses a cache made with other backbones), the SHA-256 of the backbones rounded to
float16 (``backbones_sha256_fp16``) and the dataset rows; videos that could not be read get
``errors/<key>.json``. A model whose backbones equal the cache's **up to float16 rounding** (one saved by
``dvlta_metric_train.train --save-fp16``) is accepted with a warning (:meth:`FeatureCache.check_model`): its scores from
the cache are those of the unrounded backbones, about 1e-4 away from ``model(video)`` (7.7e-5 at most
measured on the tiny test model with a float32 cache, 1.2e-4 with a float16 one), far below what moves
SROCC or PLCC.

The cache dtype is float16 by default. ``--dtype float32`` doubles the size; with it, scores computed from
the cache equal ``model(video_file)`` to about 1e-7 (float32 rounding); with float16 they differ by about
1e-4 (5e-5 measured on the tiny test model), far below what moves SROCC or PLCC.

**Size per video** for the paper's model (``dvlta-vqa``: Swin-T features ``768 x 16 x 7 x 7``, 4 inference
clips, 8 frames at 224, ViT-B/16 embeddings of 512) with ``K = 8`` samples in float16: 9,633,792
(``bvfe_train``) + 4,816,896 (``bvfe``) + 19,267,584 (``tcm_train``) + 2,408,448 (``tcm``) + 8,192 (``vbtc``)
= 36,134,912 bytes = 34.5 MiB, so about 40.4 GiB for KoNViD-1k (1200 videos), 19.7 GiB for LIVE-VQC (585)
and 38.6 GiB for YouTube-UGC (1147). Each training sample is 3.45 MiB (1.15 MiB of Swin features and 2.30
MiB of consecutive frames); with ``frame_view.tcm_sampling = "segments"`` there is no ``tcm_train`` and a
video takes 16.1 MiB (:func:`cache_bytes_per_video` computes this for any config).
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

import dvlta_metric
from dvlta_metric.config import ModelConfig
from dvlta_metric.model import DVLTAVQA, branch_view
from dvlta_metric.views import RANDOM_IN_TRAINING

from .files import jsonable

CACHE_VERSION = 3  # 2: arrays named by branch (the Branch seam); 3: training samples keep their whole shape
INDEX_NAME = "index.json"
VIDEOS_DIR = "videos"
ERRORS_DIR = "errors"
META_NAME = "meta.json"
DTYPES = {"float16": np.float16, "float32": np.float32}
FP16_SHA_KEY = "backbones_sha256_fp16"


# ------------------------------------------------------------------------------------------------ layout
def sampled_branches(config: ModelConfig) -> tuple[str, ...]:
    """The branches whose view training draws at random: the cache stores ``K`` training samples of them."""
    return tuple(name for name in config.branches if branch_view(name, config) in RANDOM_IN_TRAINING)


def array_shapes(config: ModelConfig, samples: int) -> dict[str, tuple[int, ...]]:
    """Shape of each cached array for one video: ``<branch>`` and, for :func:`sampled_branches`, ``<branch>_train``.

    Args:
        config: Model configuration.
        samples: ``K``, augmented training samples per video.

    Returns:
        ``{name: shape}`` in ``config.branches`` order.
    """
    swin, frag, frame = config.swin, config.fragment_view, config.frame_view
    side = frag.size // (swin.patch_size[1] * 2 ** (len(swin.depths) - 1))
    per_clip = (swin.num_features, frag.clip_len // swin.patch_size[0], side, side)
    frames = (frame.num_frames, 3, frame.crop, frame.crop)
    encoded = {"bvfe": (frag.num_clips, *per_clip), "tcm": frames, "vbtc": (frame.num_frames, config.embed_dim)}
    one_sample = {**encoded, "bvfe": (1, *per_clip)}  # a training view has one fragment clip
    shapes: dict[str, tuple[int, ...]] = {}
    for name in config.branches:
        shapes[name] = encoded[name]
        if name in sampled_branches(config):
            shapes[f"{name}_train"] = (samples, *one_sample[name])
    return shapes


def cache_bytes_per_video(config: ModelConfig, samples: int = 8, dtype: str = "float16") -> dict[str, int]:
    """Bytes of array data per cached video (``.npy`` headers and ``meta.json`` add under 1 KiB).

    Args:
        config: Model configuration (e.g. ``dvlta_metric.get_model_config("dvlta-vqa")``).
        samples: ``K``.
        dtype: ``"float16"`` or ``"float32"``.

    Returns:
        ``{array name: bytes, ..., "total": bytes}``.
    """
    size = np.dtype(DTYPES[dtype]).itemsize
    out = {name: int(np.prod(shape)) * size for name, shape in array_shapes(config, samples).items()}
    out["total"] = sum(out.values())
    return out


def video_key(path: str) -> str:
    """Folder name of a video in the cache: its path made file-safe, plus a CRC32 against collisions."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", path).strip("._")[-80:] or "video"
    return f"{safe}-{zlib.crc32(path.encode('utf-8')):08x}"


def backbones_sha256(model: DVLTAVQA, *, round_fp16: bool = False) -> str:
    """SHA-256 of the frozen encoders' state (each branch's ``encoder``: the Swin3D and the CLIP image tower).

    Args:
        model: The model.
        round_fp16: Hash the floating-point tensors rounded to float16 (as ``save_pretrained(fp16=True)``
            stores them), so that a model and its float16-saved copy give the same digest.

    Returns:
        The hex digest (of the float32 values, with each tensor's name and shape).
    """
    digest = hashlib.sha256()
    encoders = [(name, branch.encoder) for name, branch in model.branches.items() if branch.encoder is not None]
    for prefix, module in encoders:
        for key, value in sorted(module.state_dict().items()):
            digest.update(f"{prefix}.{key}:{tuple(value.shape)}".encode())
            value = value.detach().to("cpu")
            if round_fp16 and value.is_floating_point():
                value = value.to(torch.float16)
            digest.update(value.to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def backbone_fingerprint(model: DVLTAVQA) -> dict[str, Any]:
    """What the cached arrays depend on: view and backbone configuration, and a hash of the frozen weights."""
    cfg = model.config
    return {
        "branches": list(cfg.branches),
        "embed_dim": cfg.embed_dim,
        "swin": asdict(cfg.swin),
        "clip_vision": asdict(cfg.clip_vision),
        "fragment_view": asdict(cfg.fragment_view),
        "frame_view": asdict(cfg.frame_view),
        "backbones_sha256": backbones_sha256(model),
    }


def video_problem(folder: Path, shapes: Mapping[str, Sequence[int]], dtype: Any) -> str | None:
    """Why the cached video in ``folder`` is not complete, or ``None`` when it is.

    Checks what can be checked without reading the arrays: ``meta.json`` is readable and records a size for
    each array, each ``.npy`` file exists, has exactly that size and a header with the expected shape and
    dtype. Catches truncated, overwritten and deleted files (not bytes flipped inside the data).

    Args:
        folder: The video's folder (``videos/<key>``).
        shapes: ``{array name: shape}`` the cache stores (its ``index.json`` ``"shapes"``).
        dtype: The cache's storage dtype.

    Returns:
        ``None``, or a sentence naming the file and what is wrong with it.
    """
    meta_path = folder / META_NAME
    if not meta_path.is_file():
        return f"{meta_path} is missing"
    try:
        sizes = json.loads(meta_path.read_text(encoding="utf-8"))["bytes"]
        if not isinstance(sizes, dict):
            raise TypeError("'bytes' is not an object")
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{meta_path} is unreadable ({type(err).__name__}: {err})"
    want_dtype = np.dtype(dtype)
    for name, shape in shapes.items():
        path = folder / f"{name}.npy"
        try:
            size = path.stat().st_size
        except OSError:
            return f"{path} is missing"
        recorded = sizes.get(name)
        if not isinstance(recorded, int):
            return f"{meta_path} records no size for {path.name}"
        if size != recorded:
            return f"{path} has {size} bytes but {META_NAME} records {recorded} (truncated or overwritten)"
        try:
            with path.open("rb") as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    header = np.lib.format.read_array_header_1_0(fh)
                else:
                    header = np.lib.format.read_array_header_2_0(fh)
        except (OSError, ValueError, EOFError) as err:
            return f"{path} has no valid .npy header ({err})"
        got_shape, fortran, got_dtype = header
        if tuple(got_shape) != tuple(shape) or fortran or np.dtype(got_dtype) != want_dtype:
            return (
                f"{path} holds a {np.dtype(got_dtype).name} array of shape {tuple(got_shape)}, "
                f"expected {want_dtype.name} {tuple(shape)}"
            )
    return None


# ------------------------------------------------------------------------------------------------ reading
class FeatureCache:
    """A feature cache written by :func:`dvlta_metric_train.features.build_cache`, read with memory maps.

    Args:
        directory: The cache folder (holding ``index.json``).

    Raises:
        FileNotFoundError: If there is no ``index.json``.
        ValueError: If it was written by another cache version.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        index = self.directory / INDEX_NAME
        if not index.is_file():
            raise FileNotFoundError(
                f"{self.directory} is not a feature cache (no {INDEX_NAME}); build one with "
                "python -m dvlta_metric_train.features"
            )
        self.index: dict[str, Any] = json.loads(index.read_text(encoding="utf-8"))
        if self.index.get("version") != CACHE_VERSION:
            raise ValueError(
                f"{index}: cache version {self.index.get('version')} != {CACHE_VERSION} (this version stores each "
                "branch's encoded view, and each training sample whole); "
                "rebuild it with python -m dvlta_metric_train.features into a new folder"
            )
        self.entries: list[dict[str, Any]] = self.index["entries"]
        self.samples: int = int(self.index["settings"]["samples"])
        self.arrays_names: tuple[str, ...] = tuple(self.index["arrays"])
        self.shapes: dict[str, tuple[int, ...]] = {
            name: tuple(self.index["shapes"][name]) for name in self.arrays_names
        }
        self.dtype: Any = DTYPES[self.index["settings"]["dtype"]]

    @property
    def branches(self) -> tuple[str, ...]:
        """The branches whose encoded views the cache holds, in the model's order."""
        return tuple(self.index["fingerprint"]["branches"])

    @property
    def name(self) -> str:
        """Dataset name."""
        return str(self.index["dataset"]["name"])

    def __len__(self) -> int:
        return len(self.entries)

    def video_dir(self, row: int) -> Path:
        """Folder of row ``row``."""
        return self.directory / VIDEOS_DIR / self.entries[row]["key"]

    def problem(self, row: int) -> str | None:
        """Why row ``row`` cannot be read from the cache (``None`` when it can): see :func:`video_problem`."""
        folder = self.video_dir(row)
        if not folder.is_dir():
            return f"{folder} does not exist (not cached)"
        return video_problem(folder, self.shapes, self.dtype)

    def available(self, row: int) -> bool:
        """Whether row ``row`` is cached, complete and with files of the recorded sizes."""
        return self.problem(row) is None

    def damaged(self, rows: Iterable[int] | None = None) -> dict[int, str]:
        """Rows (all, or of ``rows``) whose folder exists but is incomplete or damaged, with the reason."""
        rows = range(len(self.entries)) if rows is None else rows
        out: dict[int, str] = {}
        for row in rows:
            if self.video_dir(row).is_dir():
                reason = self.problem(row)
                if reason is not None:
                    out[row] = reason
        return out

    def available_rows(self, rows: Iterable[int] | None = None) -> list[int]:
        """The rows (all, or of ``rows``) that are cached, in order.

        Rows whose folder is damaged (see :meth:`damaged`) are left out with a ``UserWarning`` naming them
        and saying how to recompute them.
        """
        rows = list(range(len(self.entries)) if rows is None else rows)
        damaged = self.damaged(rows)
        ok = [row for row in rows if row not in damaged and self.video_dir(row).is_dir()]
        if damaged:
            shown = "; ".join(f"row {r}: {why}" for r, why in sorted(damaged.items())[:5])
            more = f" (and {len(damaged) - 5} more)" if len(damaged) > 5 else ""
            warnings.warn(
                f"feature cache {self.directory}: {len(damaged)} damaged video(s) left out: {shown}{more}. "
                "Rerun python -m dvlta_metric_train.features with the arguments that built the cache to recompute "
                "them.",
                stacklevel=2,
            )
        return ok

    def errors(self) -> dict[int, str]:
        """Rows that could not be cached, with the reason."""
        out: dict[int, str] = {}
        for row, entry in enumerate(self.entries):
            path = self.directory / ERRORS_DIR / f"{entry['key']}.json"
            if path.is_file() and not self.available(row):
                out[row] = str(json.loads(path.read_text(encoding="utf-8")).get("reason", "unknown"))
        return out

    def arrays(self, row: int) -> dict[str, np.ndarray]:
        """The arrays of row ``row``, memory-mapped (read-only).

        Called for every training sample, so it checks only what loading tells for free: each file maps
        (a truncated one does not) with the recorded shape and dtype. :meth:`available_rows`, which the
        trainer calls once, checks the files against the sizes ``meta.json`` records.

        Raises:
            FileNotFoundError: If the row is not cached.
            ValueError: If one of its files is damaged (truncated, overwritten, unreadable): names the file.
        """
        folder = self.video_dir(row)
        redo = "rerun python -m dvlta_metric_train.features with the arguments that built the cache to recompute it"
        if not folder.is_dir():
            raise FileNotFoundError(
                f"feature cache {self.directory}: row {row} ({self.path(row)}) is not cached ({folder} does not "
                f"exist); {redo}"
            )
        out: dict[str, np.ndarray] = {}
        for name in self.arrays_names:
            path = folder / f"{name}.npy"
            try:
                array = np.load(path, mmap_mode="r")
            except (OSError, ValueError, EOFError) as err:
                raise ValueError(
                    f"feature cache {self.directory}: cannot read {path} ({type(err).__name__}: {err}); {redo}"
                ) from None
            want = self.shapes.get(name)
            if (want is not None and tuple(array.shape) != tuple(want)) or array.dtype != np.dtype(self.dtype):
                raise ValueError(
                    f"feature cache {self.directory}: {path} holds {array.dtype} {tuple(array.shape)}, expected "
                    f"{np.dtype(self.dtype)} {tuple(want or ())}; {redo}"
                )
            out[name] = array
        return out

    def mos(self, row: int) -> float:
        """MOS of row ``row``."""
        return float(self.entries[row]["mos"])

    def path(self, row: int) -> str:
        """Video path (as in the label file) of row ``row``."""
        return str(self.entries[row]["path"])

    def check_model(self, model: DVLTAVQA) -> None:
        """Make sure the cache was computed with this model's frozen backbones and views.

        A model whose backbones equal the cache's up to float16 rounding (saved with
        ``dvlta_metric_train.train --save-fp16``, or the unrounded model of a cache built from such a one) is accepted
        with a ``UserWarning``: the cached features are those of the cache's backbones, so scores from the
        cache differ from ``model(video)`` by about 1e-4. This is told from the cache's
        ``backbones_sha256_fp16``, or for caches written before it was recorded, by loading the cache's model
        when it is a ``local-dir:`` that still exists.

        Raises:
            ValueError: Naming what differs.
        """
        ours = jsonable(backbone_fingerprint(model))
        theirs = self.index["fingerprint"]
        diff = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        if diff == ["backbones_sha256"] and self._equal_up_to_fp16(model):
            warnings.warn(
                f"the model's frozen backbones equal those the feature cache {self.directory} was computed with "
                f"({self.index.get('model')!r}) up to float16 rounding (a model saved with dvlta_metric_train.train "
                "--save-fp16): using the cache. Its features are those of the unrounded backbones, so scores "
                "from the cache differ from model(video) by about 1e-4, far below what moves SROCC or PLCC.",
                stacklevel=2,
            )
            return
        if diff:
            hint = ""
            if (
                diff == ["backbones_sha256"]
                and FP16_SHA_KEY not in self.index
                and backbones_sha256(model, round_fp16=True) == ours["backbones_sha256"]
            ):
                hint = (
                    " The model's backbones hold float16 values (saved with dvlta_metric_train.train --save-fp16?), "
                    "but this cache predates the float16 digest that tells whether they are its own rounded, and its "
                    "model cannot be loaded here to tell: rerun python -m dvlta_metric_train.features with the "
                    "arguments that built the cache (it adds the digest; cached videos are kept), or evaluate from "
                    "the video files."
                )
            raise ValueError(
                f"the feature cache {self.directory} was computed with a different model ({', '.join(diff)} "
                f"differ; cache made with {self.index.get('model')!r}). Train with the model the cache was built "
                f"with, or rebuild the cache with python -m dvlta_metric_train.features --model <yours>.{hint}"
            )

    def _equal_up_to_fp16(self, model: DVLTAVQA) -> bool:
        """Whether ``model``'s backbones and the cache's round to the same float16 values."""
        theirs = self.index.get(FP16_SHA_KEY)
        if theirs is None:  # a cache written before the float16 digest was recorded: ask its model
            theirs = _recorded_model_sha256_fp16(str(self.index.get("model") or ""))
        return theirs is not None and backbones_sha256(model, round_fp16=True) == theirs


def _recorded_model_sha256_fp16(spec: str) -> str | None:
    """The float16-rounded backbone digest of the model ``spec`` if it is a ``local-dir:`` that loads."""
    prefix = "local-dir:"
    if not spec.startswith(prefix) or not Path(spec[len(prefix) :]).is_dir():
        return None  # only local models: never download anything to explain an error
    try:
        recorded = dvlta_metric.create(spec, device="cpu")
    except Exception:
        return None
    return backbones_sha256(recorded, round_fp16=True)
