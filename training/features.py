"""Feature cache: decode every video once and store what the frozen backbones make of it.

Both backbones of DVLTA-VQA are frozen (the FAST-VQA-B Swin3D of the fragment branch and the CLIP image
encoder), so their outputs are computed once per video and training never decodes video. Per video the
cache holds, each as one ``.npy`` file opened with ``numpy.load(mmap_mode="r")``:

``fragments_train`` ``(K, C, t, h, w)``
    Swin backbone features of ``K`` augmented training samples. Each is literally ``model.train()`` then
    ``model.make_views(video)``: one clip at a random position with random fragment offsets
    (``fragment_clip_indices(train=True)``), with torch's global CPU generator seeded by
    :func:`sample_seed` (from ``--seed``, the video's path and the sample number), so the cache is
    reproducible and independent of the order or sharding of the videos. Training uses one sample per video
    and epoch. ``(768, 16, 7, 7)`` per sample for the paper's model.
``fragments_eval`` ``(num_clips, C, t, h, w)``
    Swin features of exactly the inference view (``model.eval()``; ``make_views`` with its seeded offsets
    and ``num_clips`` clips), so a trained model evaluated from the cache scores as it does on the video file.
``frames`` ``(T, 3, S, S)``
    The inference frame view (short side resized, centre-cropped) that the Temporal Context Module trains
    on, stored **before normalisation** (``make_views(...)["frames"] * std + mean``, values in ``[0, 1]``;
    the trainer normalises again with the config's mean/std). Stored in the cache dtype, not uint8: float16
    keeps ``[0, 1]`` values to within 2.4e-4, uint8 would round to 2e-3, and the resize makes values that
    are not multiples of 1/255 anyway. The frame view is deterministic, so training and evaluation share it.
``clip`` ``(T, D)``
    CLIP frame embeddings ``z_t`` of the (normalised) frame view, as ``temporal_clip.frame_embeddings``.

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
clips, 8 frames at 224, ViT-B/16 embeddings of 512) with ``K = 8`` samples in float16:
9,633,792 (train) + 4,816,896 (eval) + 2,408,448 (frames) + 8,192 (clip) = 16,867,328 bytes = 16.1 MiB,
so about 18.9 GiB for KoNViD-1k (1200 videos), 9.2 GiB for LIVE-VQC (585) and 18.0 GiB for YouTube-UGC
(1147). Each training sample is 1.15 MiB (:func:`cache_bytes_per_video` computes this for any config).

Decoding holds at most ``--max-frames`` decoded frames per read (the inference view alone needs
``num_clips * clip_len + T`` = 136 for the paper's model), and ``--workers`` reads run ahead of the model.

Command line::

    python -m dvlta_metric_train.features --model local-dir:weights/dvlta-vqa-init --dataset konvid \\
        --root /data/KoNViD --out cache/konvid --device cuda
    python -m dvlta_metric_train.features --model local-dir:weights/dvlta-vqa-init --csv mine.csv --out cache/mine
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import threading
import warnings
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

import dvlta_metric
from dvlta_metric.config import ModelConfig
from dvlta_metric.decoded import DecodedVideo
from dvlta_metric.model import DVLTAVQA, branch_dtypes
from dvlta_metric.views import fragment_clip_indices, segment_centre_indices

from .datasets import (
    CheckReport,
    VQADataset,
    add_dataset_arguments,
    dataset_from_arguments,
)

CACHE_VERSION = 1
INDEX_NAME = "index.json"
VIDEOS_DIR = "videos"
ERRORS_DIR = "errors"
META_NAME = "meta.json"
DTYPES = {"float16": np.float16, "float32": np.float32}
FP16_SHA_KEY = "backbones_sha256_fp16"
TMP_PREFIX = ".tmp-"
# this host in temporary folder names; no '-' or '@', so the names parse from the right
_HOST = re.sub(r"[^A-Za-z0-9.]+", "_", socket.gethostname()) or "host"

_T = TypeVar("_T")
_R = TypeVar("_R")


# ------------------------------------------------------------------------------------------------ layout
def arrays_for(config: ModelConfig) -> tuple[str, ...]:
    """Names of the cached arrays a model with this configuration needs."""
    names: list[str] = []
    if "bvfe" in config.branches:
        names += ["fragments_train", "fragments_eval"]
    if "tcm" in config.branches:
        names.append("frames")
    if "vbtc" in config.branches:
        names.append("clip")
    return tuple(names)


def array_shapes(config: ModelConfig, samples: int) -> dict[str, tuple[int, ...]]:
    """Shape of each cached array for one video.

    Args:
        config: Model configuration.
        samples: ``K``, augmented training samples per video.

    Returns:
        ``{name: shape}`` for :func:`arrays_for`.
    """
    swin, frag, frame = config.swin, config.fragment_view, config.frame_view
    side = frag.size // (swin.patch_size[1] * 2 ** (len(swin.depths) - 1))
    feat = (swin.num_features, frag.clip_len // swin.patch_size[0], side, side)
    shapes = {
        "fragments_train": (samples, *feat),
        "fragments_eval": (frag.num_clips, *feat),
        "frames": (frame.num_frames, 3, frame.crop, frame.crop),
        "clip": (frame.num_frames, config.embed_dim),
    }
    return {name: shapes[name] for name in arrays_for(config)}


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


def video_seed(seed: int, path: str) -> int:
    """Per-video seed of the training samples: from the cache seed and the video's relative path."""
    return int(np.random.SeedSequence([seed, zlib.crc32(path.encode("utf-8"))]).generate_state(1)[0])


def backbones_sha256(model: DVLTAVQA, *, round_fp16: bool = False) -> str:
    """SHA-256 of the frozen backbones' state (the Swin3D of the fragment branch and the CLIP image encoder).

    Args:
        model: The model.
        round_fp16: Hash the floating-point tensors rounded to float16 (as ``save_pretrained(fp16=True)``
            stores them), so that a model and its float16-saved copy give the same digest.

    Returns:
        The hex digest (of the float32 values, with each tensor's name and shape).
    """
    digest = hashlib.sha256()
    modules: list[tuple[str, torch.nn.Module]] = []
    if model.basic_visual is not None:
        modules.append(("swin", model.basic_visual.backbone))
    if model.temporal_clip is not None:
        modules.append(("clip", model.temporal_clip.visual))
    for prefix, module in modules:
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


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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


def _pid_running(pid: int) -> bool:
    """Whether a process with this id runs on this host (``True`` when that cannot be told)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there: never call a folder stale
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists under another user; anything else: keep its folder
        return True
    return True


def _tmp_name(key: str, suffix: str = "") -> str:
    """Name of this process's temporary folder for video ``key``: ``.tmp-<key><suffix>@<host>-<pid>``."""
    return f"{TMP_PREFIX}{key}{suffix}@{_HOST}-{os.getpid()}"


def remove_stale_temporaries(videos: Path) -> list[Path]:
    """Remove the temporary video folders that killed runs left in ``videos``.

    A folder ``.tmp-<key>@<host>-<pid>`` is removed when ``<host>`` is this host and no process ``<pid>``
    runs (checked with ``os.kill(pid, 0)``); folders of running processes (other ``--shard`` processes,
    this one) and of other hosts sharing the cache folder are kept. Folders of the older format
    ``.tmp-<key>-<pid>`` (no host) are taken to be this host's. A process id reused since the run died keeps
    its folder until that process ends. Nothing is removed on Windows.

    Args:
        videos: The cache's ``videos`` folder.

    Returns:
        The removed folders.
    """
    removed: list[Path] = []
    try:
        entries = list(videos.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(TMP_PREFIX):
            continue
        head, _, pid_text = entry.name.rpartition("-")
        if not pid_text.isdigit():
            continue
        host = head.rpartition("@")[2] if "@" in head else _HOST
        pid = int(pid_text)
        if host != _HOST or pid == os.getpid() or _pid_running(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)  # another process may be removing it too
            if not entry.exists():
                removed.append(entry)
    return removed


# ------------------------------------------------------------------------------------------------ reading
class FeatureCache:
    """A feature cache written by :func:`build_cache`, read with memory maps.

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
            raise ValueError(f"{index}: cache version {self.index.get('version')} != {CACHE_VERSION}; rebuild it")
        self.entries: list[dict[str, Any]] = self.index["entries"]
        self.samples: int = int(self.index["settings"]["samples"])
        self.arrays_names: tuple[str, ...] = tuple(self.index["arrays"])
        self.shapes: dict[str, tuple[int, ...]] = {
            name: tuple(self.index["shapes"][name]) for name in self.arrays_names
        }
        self.dtype: Any = DTYPES[self.index["settings"]["dtype"]]

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
        ours = _jsonable(backbone_fingerprint(model))
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


# ------------------------------------------------------------------------------------------------ computing
@dataclass(frozen=True)
class _Read:
    """One decoding pass of one video: the inference views and/or some training samples."""

    row: int
    eval_views: bool
    samples: tuple[int, ...]


def plan_reads(config: ModelConfig, samples: int, max_frames: int) -> list[tuple[bool, tuple[int, ...]]]:
    """Group the inference views and the ``K`` training samples into decoding passes of bounded size.

    Args:
        config: Model configuration.
        samples: ``K``.
        max_frames: Largest number of frames one pass may hold decoded (at least one item per pass).

    Returns:
        ``[(eval_views, sample indices), ...]``; the first pass has the inference views.
    """
    frag = config.fragment_view
    eval_cost = (frag.num_clips * frag.clip_len if "bvfe" in config.branches else 0) + config.frame_view.num_frames
    per_sample = frag.clip_len
    k = samples if "bvfe" in config.branches else 0
    reads: list[tuple[bool, list[int]]] = [(True, [])]
    used = eval_cost
    for s in range(k):
        if used + per_sample > max_frames and (reads[-1][1] or reads[-1][0]):
            reads.append((False, []))
            used = 0
        reads[-1][1].append(s)
        used += per_sample
    return [(e, tuple(s)) for e, s in reads]


_GLOBAL_RNG = threading.Lock()  # only one thread at a time seeds and draws from torch's global generator


def sample_seed(video_seed_: int, sample: int) -> int:
    """Seed of training sample ``sample`` of a video (seeds the global CPU generator around ``make_views``)."""
    state = np.random.SeedSequence([video_seed_, sample]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _train_clip(num_frames: int, config: ModelConfig, seed: int) -> torch.Tensor:
    """Frame indices of the clip ``make_views`` draws in training mode after ``torch.manual_seed(seed)``.

    Uses its own generator seeded the same way (same algorithm, same draws), never the global one: this runs
    in the decoding threads while the main thread seeds the global generator for ``make_views``.
    """
    gen = torch.Generator().manual_seed(seed)
    return fragment_clip_indices(num_frames, config.fragment_view, train=True, generator=gen)


def _decode(model: DVLTAVQA, path: Path, read: _Read, seed: int) -> DecodedVideo:
    from dvlta_metric.video_io import read_video

    cfg = model.config

    def select(num_frames: int) -> list[int]:
        needed: set[int] = set()
        if read.eval_views:
            needed.update(model.needed_frames(num_frames))
        if read.samples:
            if model.uses_frames:  # make_views also cuts the frame view
                needed.update(segment_centre_indices(num_frames, cfg.frame_view).tolist())
            for s in read.samples:
                needed.update(_train_clip(num_frames, cfg, sample_seed(seed, s)).flatten().tolist())
        return sorted(needed)

    return read_video(path, select=select)


@torch.no_grad()
def features_of_read(
    model: DVLTAVQA, decoded: DecodedVideo, read: _Read, seed: int, precision: str = "fp32"
) -> dict[str, torch.Tensor]:
    """The cached arrays one decoding pass contributes (float32, on the CPU).

    Views always come from ``model.make_views``: in eval mode for the inference views; in training mode,
    with the global CPU generator seeded by :func:`sample_seed`, for each training sample.

    Args:
        model: The model (left in eval mode).
        decoded: The frames of the pass.
        read: Which views the pass is for.
        seed: The video's seed (:func:`video_seed`).
        precision: How the frozen backbones compute (see :func:`build_cache`).

    Returns:
        Some of ``fragments_eval``, ``frames``, ``clip`` (eval pass) and ``fragments_train:<s>`` per sample.
    """
    cfg = model.config
    out: dict[str, torch.Tensor] = {}
    if read.samples and model.basic_visual is not None:
        clips = []
        model.train()
        try:
            for s in read.samples:
                with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
                    torch.manual_seed(sample_seed(seed, s))
                    clips.append(model.make_views(decoded)["fragments"])
        finally:
            model.eval()
        with model.branch_autocast("bvfe", precision):
            feats = model.basic_visual.backbone_features(torch.cat(clips)).float()
        for s, f in zip(read.samples, feats):
            out[f"fragments_train:{s}"] = f[None]
    model.eval()
    if read.eval_views:
        views = model.make_views(decoded)  # exactly the inference views
        if model.basic_visual is not None:
            with model.branch_autocast("bvfe", precision):
                out["fragments_eval"] = model.basic_visual.backbone_features(views["fragments"]).float()
        if model.temporal_clip is not None:
            with model.branch_autocast("vbtc", precision):
                out["clip"] = model.temporal_clip.frame_embeddings(views["frames"][None])[0].float()
        if model.temporal_context is not None:
            fv = cfg.frame_view
            mean = torch.tensor(fv.mean, dtype=views["frames"].dtype, device=views["frames"].device)[:, None, None]
            std = torch.tensor(fv.std, dtype=views["frames"].dtype, device=views["frames"].device)[:, None, None]
            out["frames"] = views["frames"] * std + mean  # un-normalised: values in [0, 1]
    return {k: v.float().cpu() for k, v in out.items()}


def _prefetch(fn: Callable[[_T], _R], items: Iterable[_T], workers: int) -> Iterator[tuple[_T, _R | BaseException]]:
    """``(item, fn(item))`` in order, with up to ``workers`` calls running ahead; exceptions are returned."""

    def call(item: _T) -> _R | BaseException:
        try:
            return fn(item)
        except Exception as err:
            return err

    if workers <= 0:
        for item in items:
            yield item, call(item)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[tuple[_T, Future[_R | BaseException]]] = deque()
        for item in items:
            pending.append((item, pool.submit(call, item)))
            if len(pending) > workers:
                done_item, future = pending.popleft()
                yield done_item, future.result()
        while pending:
            done_item, future = pending.popleft()
            yield done_item, future.result()


@dataclass
class CacheSummary:
    """What :func:`build_cache` did.

    Attributes:
        cached: Videos computed in this run (``repaired`` included).
        skipped: Videos already in the cache.
        failed: ``{row: reason}`` for videos that could not be cached.
        repaired: ``{row: what was wrong}`` for videos whose folder was damaged (see :func:`video_problem`),
            so they were computed again.
        removed_temporaries: Temporary folders of killed runs removed (see :func:`remove_stale_temporaries`).
    """

    cached: int
    skipped: int
    failed: dict[int, str]
    repaired: dict[int, str] = field(default_factory=dict)
    removed_temporaries: int = 0


def _index_document(model_name: str, model: DVLTAVQA, data: VQADataset, settings: dict[str, Any]) -> dict[str, Any]:
    return _jsonable(
        {
            "version": CACHE_VERSION,
            "model": model_name,
            "fingerprint": backbone_fingerprint(model),
            FP16_SHA_KEY: backbones_sha256(model, round_fp16=True),
            "settings": settings,
            "arrays": list(arrays_for(model.config)),
            "shapes": {k: list(v) for k, v in array_shapes(model.config, settings["samples"]).items()},
            "dataset": {
                "name": data.name,
                "root": str(data.root),
                "labels": str(data.labels),
                "rows": len(data),
            },
            "entries": [
                {
                    "row": i,
                    "path": item.path,
                    "mos": item.mos,
                    "key": video_key(item.path),
                }
                for i, item in enumerate(data.items)
            ],
        }
    )


def build_cache(
    model: DVLTAVQA,
    data: VQADataset,
    out: str | Path,
    *,
    model_name: str = "",
    samples: int = 8,
    seed: int = 0,
    dtype: str = "float16",
    precision: str = "fp32",
    max_frames: int = 128,
    workers: int = 2,
    skip: Iterable[int] = (),
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
) -> CacheSummary:
    """Compute and store the features of every video of ``data`` (skipping those already cached).

    Args:
        model: The model whose frozen backbones make the features (e.g. the output of ``dvlta_metric_train.convert``).
        data: The dataset.
        out: Cache folder (created; an existing cache must have the same settings and model).
        model_name: How the model was named, for ``index.json``.
        samples: ``K``, augmented training samples per video.
        seed: Seed the per-video sample seeds derive from.
        dtype: ``"float16"`` or ``"float32"``: how the features are stored.
        precision: How the frozen backbones compute (:meth:`DVLTAVQA.set_precision`): ``"fp16"`` runs the
            Swin3D and CLIP towers in float16 (the whole model ran about 3x faster in fp16 than in fp32 on an
            H200) and moved the cached features by under 0.1 % (relative) in the tests.
        max_frames: Frames one decoding pass may hold.
        workers: Decoding threads running ahead of the model (0: decode in this thread).
        skip: Rows not to compute (e.g. missing videos found by the check).
        shard: ``(i, n)``: compute only rows with ``row % n == i`` (run ``n`` processes on one cache).
        progress: Show a tqdm progress bar.

    Returns:
        What was done.

    Videos whose folder is damaged (files missing or not of the size ``meta.json`` records, see
    :func:`video_problem`) are computed again; temporary folders left by killed runs are removed first
    (:func:`remove_stale_temporaries`).

    Raises:
        ValueError: For bad settings, an ``out`` that is not a folder, or an existing cache made with other
            settings or backbones.
        OSError: If the cache cannot be written (e.g. the disk is full); the videos finished before are kept.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    branch_dtypes(precision, model.device.type)  # raises ValueError for an unknown precision
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    shard_i, shard_n = shard
    if not 0 <= shard_i < shard_n:
        raise ValueError(f"shard {shard_i}/{shard_n}: expected 0 <= i < n")
    out = Path(out)
    for folder in (out, out / VIDEOS_DIR, out / ERRORS_DIR):
        if folder.exists() and not folder.is_dir():
            raise ValueError(
                f"{folder} exists and is not a folder: give a new folder for the feature cache, or an existing "
                "cache to continue"
            )
    (out / VIDEOS_DIR).mkdir(parents=True, exist_ok=True)
    (out / ERRORS_DIR).mkdir(exist_ok=True)
    settings = {"samples": samples, "seed": seed, "dtype": dtype, "precision": precision}
    doc = _index_document(model_name, model, data, settings)
    index_path = out / INDEX_NAME
    if index_path.is_file():
        old = json.loads(index_path.read_text(encoding="utf-8"))
        diff = [k for k in ("version", "fingerprint", "settings", "arrays", "entries") if old.get(k) != doc.get(k)]
        if diff:
            raise ValueError(
                f"{out} already holds a feature cache made with other {', '.join(diff)}; "
                "use a new --out folder (or delete this one) to build a cache with these settings"
            )
        if FP16_SHA_KEY not in old:  # written before the float16 digest was recorded: add it
            write_json_atomic(index_path, {**old, FP16_SHA_KEY: doc[FP16_SHA_KEY]})
    else:
        write_json_atomic(index_path, doc)
    removed = remove_stale_temporaries(out / VIDEOS_DIR)

    skip_set = set(skip)
    shapes = array_shapes(model.config, samples)
    plan = plan_reads(model.config, samples, max_frames)
    np_dtype = DTYPES[dtype]
    todo: list[int] = []
    repaired: dict[int, str] = {}
    mine = [r for r in range(len(data)) if r % shard_n == shard_i and r not in skip_set]
    for r in mine:
        folder = out / VIDEOS_DIR / video_key(data[r].path)
        if not folder.is_dir():
            todo.append(r)
            continue
        problem = video_problem(folder, shapes, np_dtype)
        if problem is not None:
            todo.append(r)
            repaired[r] = problem
    skipped = len(mine) - len(todo)
    reads = [_Read(r, e, s) for r in todo for e, s in plan]
    seeds = {r: video_seed(seed, data[r].path) for r in todo}

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"features {data.name}", unit="video")
    failed: dict[int, str] = {}
    parts: dict[str, torch.Tensor] = {}
    done = 0
    try:
        for read, result in _prefetch(
            lambda rd: _decode(model, data.file(rd.row), rd, seeds[rd.row]),
            reads,
            workers,
        ):
            row = read.row
            if row in failed:
                continue
            try:
                if isinstance(result, BaseException):
                    raise result
                parts.update(features_of_read(model, result, read, seeds[row], precision))
                del result
            except (
                ValueError,
                FileNotFoundError,
                PermissionError,
                RuntimeError,
            ) as err:
                failed[row] = f"{type(err).__name__}: {err}"
                write_json_atomic(
                    out / ERRORS_DIR / f"{video_key(data[row].path)}.json",
                    {"row": row, "path": data[row].path, "reason": failed[row]},
                )
                parts.clear()
                if bar is not None:
                    bar.update(1)
                continue
            if read.samples == plan[-1][1] and read.eval_views == plan[-1][0]:  # last pass of this video
                arrays = _assemble(parts, samples)
                parts.clear()
                for name, shape in shapes.items():
                    if tuple(arrays[name].shape) != shape:
                        raise RuntimeError(f"{name}: computed shape {tuple(arrays[name].shape)} != expected {shape}")
                _write_video(out, data, row, arrays, np_dtype)
                done += 1
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    repaired = {r: why for r, why in repaired.items() if r not in failed}
    return CacheSummary(done, skipped, failed, repaired, len(removed))


def _assemble(parts: dict[str, torch.Tensor], samples: int) -> dict[str, torch.Tensor]:
    arrays = {k: v for k, v in parts.items() if ":" not in k}
    train = [parts[f"fragments_train:{s}"] for s in range(samples) if f"fragments_train:{s}" in parts]
    if train:
        arrays["fragments_train"] = torch.cat(train)
    return arrays


def _write_video(out: Path, data: VQADataset, row: int, arrays: dict[str, torch.Tensor], dtype: Any) -> None:
    """Write one video's folder under a temporary name and rename it into place (replacing a damaged one)."""
    item = data[row]
    key = video_key(item.path)
    videos = out / VIDEOS_DIR
    final = videos / key
    tmp = videos / _tmp_name(key)
    shapes = {name: tuple(value.shape) for name, value in arrays.items()}
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        sizes = {}
        for name, value in arrays.items():
            np.save(tmp / f"{name}.npy", value.numpy().astype(dtype))
            sizes[name] = int((tmp / f"{name}.npy").stat().st_size)
        meta = {"row": row, "path": item.path, "mos": item.mos, "bytes": sizes}
        (tmp / META_NAME).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        if final.is_dir():
            if video_problem(final, shapes, dtype) is None:  # another shard or a previous run got there first
                shutil.rmtree(tmp)
                return
            old = videos / _tmp_name(key, ".old")  # a damaged folder: set it aside, then replace it
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, final)
            except OSError:
                if final.is_dir() and video_problem(final, shapes, dtype) is None:  # lost a race to another shard
                    shutil.rmtree(tmp)
                    return
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # e.g. a full disk: leave no partial folder behind
        raise
    stale = out / ERRORS_DIR / f"{key}.json"
    if stale.exists():
        stale.unlink()


# ------------------------------------------------------------------------------------------------ CLI
def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard expects I/N, e.g. 0/4, got {text!r}") from None
    return i, n


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m dvlta_metric_train.features``."""
    parser = argparse.ArgumentParser(
        prog="python -m dvlta_metric_train.features",
        description="Decode each video once and cache the frozen backbones' features for training.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="the model, e.g. local-dir:weights/dvlta-vqa-init",
    )
    parser.add_argument("--out", required=True, help="cache folder (resumable: rerun to continue)")
    add_dataset_arguments(parser)
    parser.add_argument(
        "--samples",
        type=int,
        default=8,
        help="augmented training samples per video (default 8)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the training samples (default 0)")
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="float16",
        help="storage dtype (default float16)",
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "fp16", "bf16"],
        default="fp32",
        help="how the frozen backbones compute: fp16 is much faster on a GPU (see DVLTAVQA.set_precision)",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:1 (default: cuda when available)",
    )
    parser.add_argument(
        "--max-frames",
        type=int,
        default=128,
        help="decoded frames held per pass (default 128)",
    )
    parser.add_argument("--workers", type=int, default=2, help="decoding threads (default 2)")
    parser.add_argument(
        "--skip-missing",
        action="store_true",
        help="cache the readable videos, skip the others",
    )
    parser.add_argument("--no-check", action="store_true", help="do not probe the videos first")
    parser.add_argument(
        "--shard",
        type=_shard,
        default=(0, 1),
        help="I/N: this process's share of the videos",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or continue) a feature cache.

    Returns:
        0 when every video is cached, 1 when some could not be (listed), 2 for a usage error.
    """
    args = build_parser().parse_args(argv)
    try:
        data = dataset_from_arguments(args)
        model = dvlta_metric.create(args.model, device=args.device)
    except (ValueError, FileNotFoundError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    skip: set[int] = set()
    missing = 0
    if not args.no_check:
        report: CheckReport = data.check(progress=not args.no_progress)
        if not report.ok:
            print(report.summary(), file=sys.stderr)
            if not args.skip_missing:
                print(
                    "error: fix or remove these videos, or rerun with --skip-missing to cache the others",
                    file=sys.stderr,
                )
                return 1
            skip = report.bad_indices
            missing = sum(1 for p in report.problems if p.reason == "missing")
    try:
        summary = build_cache(
            model,
            data,
            args.out,
            model_name=args.model,
            samples=args.samples,
            seed=args.seed,
            dtype=args.dtype,
            precision=args.precision,
            max_frames=args.max_frames,
            workers=args.workers,
            skip=skip,
            shard=args.shard,
            progress=not args.no_progress,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(
            f"error: writing the feature cache {args.out} failed: {err}. Fix the cause (e.g. free disk space) and "
            "rerun the same command: the videos cached so far are kept",
            file=sys.stderr,
        )
        return 1
    size = cache_bytes_per_video(model.config, args.samples, args.dtype)["total"]
    skipped = (
        f"{missing} skipped as missing, {len(skip) - missing} as unreadable"
        if missing
        else (f"{len(skip)} skipped as unreadable")
    )
    print(
        f"{data.name}: {summary.cached} videos cached, {summary.skipped} already there, "
        f"{len(summary.failed)} failed, {skipped}; {size / 2**20:.2f} MiB per video in {args.out}"
    )
    if summary.repaired:
        print(f"  {len(summary.repaired)} of the videos cached were recomputed because their folder was damaged:")
        for row, reason in sorted(summary.repaired.items())[:20]:
            print(f"  recomputed: {data[row].path}: {reason}")
    if summary.removed_temporaries:
        print(f"  removed {summary.removed_temporaries} temporary folder(s) left by interrupted runs")
    for row, reason in sorted(summary.failed.items())[:20]:
        print(f"  failed: {data[row].path}: {reason}", file=sys.stderr)
    return 0 if not summary.failed and not skip else 1


if __name__ == "__main__":
    raise SystemExit(main())
