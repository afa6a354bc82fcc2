"""Convert upstream checkpoints into an initial DVLTA-VQA model directory.

DVLTA-VQA starts from two frozen, pretrained backbones and prompt embeddings from a CLIP text tower:

* **CLIP** (the Video-Based Temporal CLIP's image encoder and the text tower for the prompts), either

  - ViFi-CLIP ViT-B/16 (the paper's choice; e.g. ``vifi_clip_10_epochs_k400_full_finetuned.pth``): a
    ``{"model": state_dict, "config": <yacs CfgNode>, ...}`` pickle whose keys carry a ``module.`` prefix.
    ``image_encoder.*`` is OpenAI's ``visual.*``; ``text_encoder.*`` holds OpenAI's text keys
    (``transformer.*``, ``positional_embedding``, ``ln_final.*``, ``text_projection``) but no
    ``token_embedding``, which is taken from OpenAI CLIP; ``prompt_learner.*`` is dropped; ``logit_scale``
    is kept (from OpenAI CLIP when absent). Or
  - OpenAI CLIP ViT-B/16 alone, in open_clip's layout: ``open_clip_model.safetensors`` of the Hub repository
    ``timm/vit_base_patch16_clip_224.openai`` (downloaded by default) or a local file.

* **FAST-VQA-B** (``FAST_VQA_B_1_4.pth``): ``{"state_dict": {"fragments_backbone.*", "vqa_head.*"}}``. The
  backbone keys, with ``fragments_backbone.`` stripped, are exactly those of
  :class:`dvlta_metric.branches.swin3d.SwinTransformer3D`, except the ``relative_position_index`` buffers,
  which upstream saves and this library recomputes (dropped). ``vqa_head.*`` is FAST-VQA's own regression
  head, which DVLTA-VQA replaces: dropped and reported.

The CLIP checkpoint's ``logit_scale`` (the log of the scale ``s`` of eq. 12) becomes the model's
``config.logit_scale = exp(logit_scale)``, capped at 100 as CLIP caps it during training; the converter prints
the value and records it in the sources metadata. OpenAI CLIP's is exactly 100.

Conversion is strict: every key of each source is either mapped onto the model or dropped by one of the
rules above, and every backbone key of the model is filled; anything else fails with the keys listed.

The trainable parts (CLIP adapter, Temporal Context Module, fragment head, text adapter) get a seeded random
initialisation. The directory is written with ``save_pretrained`` and its ``config.json`` metadata records
the sources (file names, SHA-256, what was dropped).

**Pickles.** ``.pth`` / ``.pt`` files are Python pickles, and unpickling an untrusted file can run arbitrary
code. Nothing is unpickled without ``--allow-pickle``. With it, tensors are loaded with
``torch.load(weights_only=True)`` when the file allows; ViFi-CLIP checkpoints also pickle their yacs
training config, which needs full unpickling (``weights_only=False``, and ``pip install yacs``).
Safetensors files never need the flag.

Command lines::

    # the paper's initialisation
    python -m dvlta_metric_train.convert --vificlip vifi_clip_10_epochs_k400_full_finetuned.pth \\
        --fastvqa FAST_VQA_B_1_4.pth --allow-pickle --out weights/dvlta-vqa-init
    # OpenAI CLIP instead of ViFi-CLIP (downloads open_clip_model.safetensors from the Hub)
    python -m dvlta_metric_train.convert --fastvqa FAST_VQA_B_1_4.pth --allow-pickle --out weights/dvlta-vqa-openai-init
    # a random initial directory (tests, smoke runs)
    python -m dvlta_metric_train.convert --model dvlta-vqa-tiny --random-init --seed 0 --out /tmp/tiny-init
"""

from __future__ import annotations

import argparse
import math
import pickle
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

import dvlta_metric
from dvlta_metric._checkpoint import load_weights_strict
from dvlta_metric._clip_towers import build_clip, encode_prompts
from dvlta_metric._hub import sha256_of
from dvlta_metric.config import LOGIT_SCALE_MAX
from dvlta_metric.errors import CheckpointError, WeightsNotFoundError
from dvlta_metric.model import DVLTAVQA

OPENAI_CLIP_FILE = "open_clip_model.safetensors"
_MAX_LISTED = 10


class ConvertError(RuntimeError):
    """A source checkpoint cannot be converted; the message says which keys or what to do."""


def _listing(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED else "")


PICKLE_HELP = (
    "it is a Python pickle (.pth/.pt), and unpickling an untrusted file can run arbitrary code, so nothing is "
    "unpickled unless you pass --allow-pickle. If you trust the file (e.g. the official ViFi-CLIP or FAST-VQA "
    "release), rerun with --allow-pickle: tensors are then read with torch.load(weights_only=True) where the "
    "file allows it; ViFi-CLIP checkpoints also pickle their yacs training config, which needs full unpickling "
    "(weights_only=False) and `pip install yacs`."
)


def load_checkpoint(path: str | Path, *, allow_pickle: bool = False) -> tuple[Any, str]:
    """Read a checkpoint file.

    Args:
        path: A ``.safetensors`` file, or a pickle (``.pth``, ``.pt``, ``.bin``, ...).
        allow_pickle: Permit unpickling (see the module docstring).

    Returns:
        ``(contents, how)``: the loaded object and how it was read (``"safetensors"``,
        ``"torch.load(weights_only=True)"`` or ``"torch.load(weights_only=False)"``).

    Raises:
        FileNotFoundError: If the file does not exist.
        ConvertError: For a pickle without ``allow_pickle``, or a file that cannot be read (not a PyTorch
            checkpoint, truncated, corrupt); the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu"), "safetensors"
        except (SafetensorError, OSError, ValueError) as err:
            raise ConvertError(f"{path}: not a readable safetensors file: {err}") from None
    if not allow_pickle:
        raise ConvertError(f"refusing to load {path}: {PICKLE_HELP}")
    if not _looks_like_torch_file(path):
        raise ConvertError(
            f"{path} is not a PyTorch checkpoint (it starts neither like the zip archive torch.save writes nor "
            "like a pickle); give the .pth file of the release (e.g. FAST_VQA_B_1_4.pth)"
        )
    # Unpickling a corrupt file fails with almost any exception (KeyError, ValueError, IndexError, ...), so
    # everything but a missing module is reported as an unreadable checkpoint naming the file.
    unreadable = f"{path}: cannot read the checkpoint: it is truncated, corrupt or not a PyTorch checkpoint"
    try:
        return torch.load(path, map_location="cpu", weights_only=True), "torch.load(weights_only=True)"
    except pickle.UnpicklingError:
        pass  # pickles more than tensors (ViFi-CLIP's yacs config): full unpickling, permitted by the flag
    except Exception as err:
        raise ConvertError(f"{unreadable} ({type(err).__name__}: {err})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False), "torch.load(weights_only=False)"
    except ModuleNotFoundError as err:
        raise ConvertError(
            f"{path}: the checkpoint pickles objects of the module {err.name!r}, which is not installed; "
            f"install it (ViFi-CLIP checkpoints need `pip install yacs`) and rerun"
        ) from None
    except Exception as err:
        raise ConvertError(f"{unreadable} ({type(err).__name__}: {err})") from None


def _looks_like_torch_file(path: Path) -> bool:
    """Whether ``path`` starts like a ``torch.save`` file: a zip archive, or (the legacy format) a pickle.

    Only the first bytes are looked at, so a truncated checkpoint still counts (and fails to load, named).
    """
    with path.open("rb") as fh:
        head = fh.read(4)
    if head == b"PK\x03\x04":  # a zip archive's first local file header
        return True
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5  # the PROTO opcode of pickle protocol 2-5


def _state_dict(obj: Any, keys: Sequence[str], what: str) -> dict[str, torch.Tensor]:
    """The tensor dictionary inside a loaded checkpoint (under one of ``keys``, or the object itself)."""
    if isinstance(obj, Mapping):
        for key in keys:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise ConvertError(
        f"{what}: no state dict found (expected a dict of tensors, or one under {list(keys)}); is this the right file?"
    )


def vificlip_to_open_clip(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """Map ViFi-CLIP keys onto open_clip's ``CLIP`` keys.

    Args:
        state: ViFi-CLIP's ``checkpoint["model"]``.

    Returns:
        ``(clip_state, dropped)``: the mapped tensors (no ``token_embedding.weight`` unless ViFi-CLIP has
        one) and the dropped keys by reason (``"prompt_learner"``).

    Raises:
        ConvertError: Listing keys that no rule accounts for.
    """
    out: dict[str, torch.Tensor] = {}
    dropped: dict[str, list[str]] = {"prompt_learner": []}
    unknown: list[str] = []
    for key, value in state.items():
        name = key.removeprefix("module.")
        if name.startswith("image_encoder."):
            out["visual." + name[len("image_encoder.") :]] = value
        elif name.startswith("text_encoder."):
            out[name[len("text_encoder.") :]] = value
        elif name.startswith("prompt_learner."):
            dropped["prompt_learner"].append(key)
        elif name == "logit_scale":
            out["logit_scale"] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConvertError(
            f"ViFi-CLIP checkpoint: {len(unknown)} key(s) belong to neither image_encoder, text_encoder, "
            f"prompt_learner nor logit_scale: {_listing(unknown)}. Is this a ViFi-CLIP ViT-B/16 checkpoint?"
        )
    return out, dropped


def fastvqa_to_swin(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """Map FAST-VQA-B keys onto :class:`~dvlta_metric.branches.swin3d.SwinTransformer3D` keys.

    Args:
        state: FAST-VQA's ``checkpoint["state_dict"]``.

    Returns:
        ``(swin_state, dropped)``; ``dropped`` has ``"vqa_head"`` (FAST-VQA's head, replaced by DVLTA-VQA)
        and ``"relative_position_index"`` (buffers this library recomputes).

    Raises:
        ConvertError: Listing keys that belong to neither ``fragments_backbone`` nor ``vqa_head``.
    """
    out: dict[str, torch.Tensor] = {}
    dropped: dict[str, list[str]] = {"vqa_head": [], "relative_position_index": []}
    unknown: list[str] = []
    for key, value in state.items():
        name = key.removeprefix("module.")
        if name.startswith("fragments_backbone."):
            rest = name[len("fragments_backbone.") :]
            if rest.endswith("relative_position_index"):
                dropped["relative_position_index"].append(key)
            else:
                out[rest] = value
        elif name.startswith("vqa_head."):
            dropped["vqa_head"].append(key)
        else:
            unknown.append(key)
    if unknown:
        raise ConvertError(
            f"FAST-VQA checkpoint: {len(unknown)} key(s) belong to neither fragments_backbone nor vqa_head: "
            f"{_listing(unknown)}. DVLTA-VQA uses FAST-VQA-B (fragments only, FAST_VQA_B_1_4.pth); "
            "FasterVQA, DOVER and other variants have other layouts."
        )
    return out, dropped


def _check_keys(mapped: Mapping[str, Any], expected: set[str], what: str, allowed_missing: set[str]) -> None:
    missing = sorted(expected - set(mapped) - allowed_missing)
    extra = sorted(set(mapped) - expected)
    problems = []
    if missing:
        problems.append(f"{len(missing)} key(s) of the model are not in the checkpoint: {_listing(missing)}")
    if extra:
        problems.append(f"{len(extra)} checkpoint key(s) have no place in the model: {_listing(extra)}")
    if problems:
        raise ConvertError(f"{what}: " + "; ".join(problems) + ". Does the checkpoint match --model's sizes?")


def _openai_clip_file(spec: str, cache_dir: str | None) -> Path:
    """``"hub"`` -> the open_clip safetensors of OpenAI ViT-B/16 from the Hub; otherwise a local path."""
    if spec != "hub":
        return Path(spec)
    from dvlta_metric._hub import hub_download
    from dvlta_metric._zeroshot import openai_clip_repo

    return hub_download(openai_clip_repo(), OPENAI_CLIP_FILE, cache_dir=cache_dir)


def _source(path: Path, how: str, **extra: Any) -> dict[str, Any]:
    return {"file": path.name, "sha256": sha256_of(path), "read_with": how, **extra}


def convert(
    model: DVLTAVQA,
    *,
    vificlip: str | Path | None = None,
    openai_clip: str | Path | None = "hub",
    fastvqa: str | Path | None = None,
    allow_pickle: bool = False,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Fill a model's frozen backbones and prompt embeddings from upstream checkpoints.

    Args:
        model: A freshly created (randomly initialised) model.
        vificlip: ViFi-CLIP checkpoint; ``None`` uses OpenAI CLIP alone.
        openai_clip: OpenAI CLIP weights in open_clip's layout: a file, or ``"hub"`` to download
            ``open_clip_model.safetensors``. With ``vificlip`` only its ``token_embedding`` (and
            ``logit_scale`` if ViFi-CLIP lacks it) are used.
        fastvqa: FAST-VQA-B checkpoint; required when the model has the fragment branch.
        allow_pickle: Permit unpickling ``.pth`` files.
        cache_dir: Hugging Face cache for the ``"hub"`` download.

    Returns:
        The ``sources`` metadata (files, SHA-256, dropped keys).

    Raises:
        ConvertError: For a missing source, a refused pickle, or keys that do not match.
        FileNotFoundError: For a missing file.
        dvlta_metric.WeightsNotFoundError: If the OpenAI CLIP weights cannot be downloaded.
    """
    cfg = model.config
    sources: dict[str, Any] = {}
    if openai_clip is None and vificlip is None:
        raise ConvertError("a CLIP source is needed (for the prompt embeddings): --vificlip and/or --openai-clip")
    if vificlip is not None and openai_clip is None:
        raise ConvertError(
            "ViFi-CLIP checkpoints have no token_embedding: give OpenAI CLIP too (--openai-clip hub or a file)"
        )
    if "bvfe" in model.branches and fastvqa is None:
        raise ConvertError(f"{cfg.name} has the fragment branch: give the FAST-VQA-B checkpoint with --fastvqa")

    clip = build_clip(cfg.clip_vision, cfg.clip_text, cfg.embed_dim)
    expected = set(clip.state_dict())
    openai_path = _openai_clip_file(str(openai_clip), cache_dir)
    openai_obj, openai_how = load_checkpoint(openai_path, allow_pickle=allow_pickle)
    openai_state = _state_dict(openai_obj, ("state_dict", "model"), f"OpenAI CLIP {openai_path}")
    if vificlip is None:
        _check_keys(openai_state, expected, f"OpenAI CLIP {openai_path}", set())
        clip_state = dict(openai_state)
        sources["clip"] = _source(openai_path, openai_how, kind="openai-clip")
    else:
        vifi_path = Path(vificlip)
        vifi_obj, vifi_how = load_checkpoint(vifi_path, allow_pickle=allow_pickle)
        mapped, dropped = vificlip_to_open_clip(
            _state_dict(vifi_obj, ("model", "state_dict"), f"ViFi-CLIP {vifi_path}")
        )
        taken = [k for k in ("token_embedding.weight", "logit_scale") if k not in mapped]
        _check_keys(mapped, expected, f"ViFi-CLIP {vifi_path}", set(taken))
        missing_openai = [k for k in taken if k not in openai_state]
        if missing_openai:
            raise ConvertError(f"OpenAI CLIP {openai_path} lacks {missing_openai}")
        clip_state = {**mapped, **{k: openai_state[k] for k in taken}}
        sources["clip"] = _source(
            vifi_path,
            vifi_how,
            kind="vificlip",
            dropped={k: len(v) for k, v in dropped.items()},
            from_openai_clip=taken,
        )
        sources["openai_clip"] = _source(openai_path, openai_how, kind="openai-clip", used_for=taken)
    load_weights_strict(clip, clip_state, source=sources["clip"]["file"])
    sources["clip"]["logit_scale"] = _keep_logit_scale(model, clip_state["logit_scale"], sources["clip"]["file"])
    prompts = [cfg.prompts.fusion, cfg.prompts.positive, cfg.prompts.negative]
    embeddings = encode_prompts(clip, prompts, cfg.clip_text.context_length)
    with torch.no_grad():
        if "vbtc" in model.branches:
            model.branches["vbtc"].encoder.load_state_dict(clip.visual.state_dict(), strict=True)
        prompts_buffer = model.get_buffer("prompt_embeddings")
        prompts_buffer.copy_(embeddings.to(prompts_buffer))

    if "bvfe" in model.branches and fastvqa is not None:
        fast_path = Path(fastvqa)
        fast_obj, fast_how = load_checkpoint(fast_path, allow_pickle=allow_pickle)
        swin_state, dropped = fastvqa_to_swin(_state_dict(fast_obj, ("state_dict", "model"), f"FAST-VQA {fast_path}"))
        backbone = model.branches["bvfe"].encoder
        _check_keys(swin_state, set(backbone.state_dict()), f"FAST-VQA {fast_path}", set())
        load_weights_strict(backbone, swin_state, source=str(fast_path))
        sources["fastvqa"] = _source(
            fast_path, fast_how, kind="fast-vqa-b", dropped={k: len(v) for k, v in dropped.items()}
        )
    return sources


def _keep_logit_scale(model: DVLTAVQA, log_scale: torch.Tensor, source: str) -> dict[str, float | bool]:
    """Set the model's ``s`` of eq. 12 from a CLIP checkpoint's ``logit_scale`` (its log), capped at 100.

    Returns:
        ``{"log": ..., "scale": ..., "capped": ...}`` for the sources metadata.

    Raises:
        ConvertError: If the stored value is not one finite number.
    """
    if log_scale.numel() != 1:
        raise ConvertError(f"{source}: logit_scale must hold one number, got shape {tuple(log_scale.shape)}")
    log = float(log_scale.double().reshape(()))
    scale = math.exp(log) if math.isfinite(log) and log < 700 else math.inf
    if not math.isfinite(scale) or scale <= 0:
        raise ConvertError(f"{source}: logit_scale = {log!r} does not give a finite positive scale exp(logit_scale)")
    kept = min(scale, LOGIT_SCALE_MAX)
    model.config = model.config.replace(logit_scale=kept)
    model.head.logit_scale = kept
    return {"log": log, "scale": kept, "capped": scale > LOGIT_SCALE_MAX}


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m dvlta_metric_train.convert``."""
    parser = argparse.ArgumentParser(
        prog="python -m dvlta_metric_train.convert",
        description="Upstream checkpoints (ViFi-CLIP / OpenAI CLIP, FAST-VQA-B) -> an initial model directory.",
    )
    parser.add_argument("--out", required=True, help="model directory to write (save_pretrained)")
    parser.add_argument("--model", default="dvlta-vqa", help="registry name of the architecture (default dvlta-vqa)")
    parser.add_argument("--vificlip", help="ViFi-CLIP ViT-B/16 checkpoint (.pth; needs --allow-pickle)")
    parser.add_argument(
        "--openai-clip",
        default=None,
        help="OpenAI CLIP ViT-B/16 in open_clip layout: 'hub' (default: download " + OPENAI_CLIP_FILE + ") or a file",
    )
    parser.add_argument("--fastvqa", help="FAST-VQA-B checkpoint FAST_VQA_B_1_4.pth (needs --allow-pickle)")
    parser.add_argument("--allow-pickle", action="store_true", help="permit unpickling .pth files you trust")
    parser.add_argument("--seed", type=int, default=0, help="seed of the trainable parts' random init (default 0)")
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="no sources: write a randomly initialised model (refused with --vificlip, --fastvqa, --openai-clip, "
        "--cache-dir)",
    )
    parser.add_argument("--fp16", action="store_true", help="store the weights as float16")
    parser.add_argument("--cache-dir", help="Hugging Face cache for the OpenAI CLIP download")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Convert upstream checkpoints (or write a random initial model).

    Returns:
        0 on success, 2 on a usage or conversion error (the message says what to do), 1 when the directory
        cannot be written.
    """
    args = build_parser().parse_args(argv)
    if args.random_init:
        given = [
            flag
            for flag, value in (
                ("--vificlip", args.vificlip),
                ("--fastvqa", args.fastvqa),
                ("--openai-clip", args.openai_clip),
                ("--cache-dir", args.cache_dir),
            )
            if value is not None
        ]
        if given:
            print(
                f"error: --random-init writes a model without sources, so {', '.join(given)} would be ignored: "
                "drop --random-init to convert checkpoints, or drop " + ", ".join(given),
                file=sys.stderr,
            )
            return 2
    try:
        torch.manual_seed(args.seed)
        model = dvlta_metric.create(args.model, pretrained=False, device="cpu")
        if args.random_init:
            sources: dict[str, Any] = {"random_init": True}
        else:
            sources = convert(
                model,
                vificlip=args.vificlip,
                openai_clip=args.openai_clip if args.openai_clip is not None else "hub",
                fastvqa=args.fastvqa,
                allow_pickle=args.allow_pickle,
                cache_dir=args.cache_dir,
            )
    except (ConvertError, CheckpointError, WeightsNotFoundError, FileNotFoundError, ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    metadata = {
        "description": f"{args.model}: initial weights (frozen backbones converted, trainable parts random), "
        "not trained; train with python -m dvlta_metric_train.train",
        "stage": "initial",
        "sources": sources,
        "init_seed": args.seed,
    }
    try:
        out = model.save_pretrained(args.out, fp16=args.fp16, metadata=metadata)
    except OSError as err:
        print(f"error: cannot write the model directory {args.out}: {err}", file=sys.stderr)
        return 1
    for role, src in sources.items():
        if isinstance(src, dict):
            dropped = src.get("dropped")
            extra = f", dropped {dropped}" if dropped else ""
            print(f"{role}: {src['file']} (sha256 {src['sha256'][:12]}..., {src['read_with']}){extra}")
            scale = src.get("logit_scale")
            if scale:
                capped = f", capped at {LOGIT_SCALE_MAX:g}" if scale["capped"] else ""
                value = f"exp({scale['log']:.4f}) = {scale['scale']:.4f}"
                print(f"logit scale s = {value} (eq. 12, kept from the {role} checkpoint{capped})")
    print(f"wrote {out} (load with dvlta_metric.create('local-dir:{out}'))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
