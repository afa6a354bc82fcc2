"""Helpers for the training tests: a generated video quality dataset and synthetic upstream checkpoints."""

from __future__ import annotations

import csv
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

DISTORTIONS = ("noise", "blur", "blocks")


class FakeCfgNode(dict):
    """Stands in for the yacs ``CfgNode`` that ViFi-CLIP pickles into its checkpoints (not weights_only-safe)."""


def _content(t: int, h: int, w: int, rng: np.random.Generator) -> torch.Tensor:
    """Smooth random texture with sharp-edged shapes, moving: ``(T, 3, H, W)`` in [0, 1]."""
    base = torch.from_numpy(rng.random((1, 3, h // 8, w // 8))).float()
    base = F.interpolate(base, size=(h, w), mode="bicubic", align_corners=False)[0]
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    for _ in range(4):  # a few hard-edged rectangles give the content detail that blur can remove
        y0, x0 = int(rng.integers(0, h - 24)), int(rng.integers(0, w - 24))
        hh, ww = int(rng.integers(12, 40)), int(rng.integers(12, 40))
        mask = (yy >= y0) & (yy < y0 + hh) & (xx >= x0) & (xx < x0 + ww)
        base[:, mask] = torch.from_numpy(rng.random(3)).float()[:, None]
    stripes = 0.5 + 0.5 * torch.sin(xx.float() * 0.6 + float(rng.uniform(0, 6.3)))
    base = 0.75 * base + 0.25 * stripes[None]
    dx = int(rng.integers(1, 4))
    return torch.stack([torch.roll(base, i * dx, dims=-1) for i in range(t)]).clamp(0, 1)


def _distort(video: torch.Tensor, kind: str, level: float, rng: np.random.Generator) -> torch.Tensor:
    """Apply one distortion of strength ``level`` in [0, 1]."""
    if level <= 0:
        return video
    if kind == "noise":
        noise = torch.from_numpy(rng.standard_normal(video.shape)).float()
        return (video + 0.25 * level * noise).clamp(0, 1)
    if kind == "blur":
        k = 1 + 2 * round(1 + 5 * level)
        pad = k // 2
        x = F.pad(video, (pad, pad, pad, pad), mode="replicate")
        return F.avg_pool2d(x, k, stride=1)
    if kind == "blocks":
        f = 1 + round(7 * level)
        if f < 2:
            return video
        h, w = video.shape[-2:]
        small = F.avg_pool2d(video, f, stride=f, ceil_mode=True)
        return F.interpolate(small, scale_factor=f, mode="nearest")[..., :h, :w]
    raise ValueError(kind)


def write_video(path: Path, frames: torch.Tensor, fps: int = 25, crf: int = 12) -> None:
    """Encode ``(T, 3, H, W)`` frames in [0, 1] as H.264 (yuv420p) with PyAV."""
    arr = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = arr.shape[2], arr.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for img in arr:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_quality_dataset(
    root: Path,
    n: int = 48,
    *,
    frames: int = 16,
    height: int = 128,
    width: int = 160,
    seed: int = 0,
) -> Path:
    """Write ``n`` clips with graded distortions and a MOS that falls with the distortion; return the CSV.

    Clip ``i`` gets blockiness, blur and noise, all graded by one level spread over [0, 1]; its MOS is
    ``5 - 4 * level`` plus a little noise (1-5 scale).
    """
    rng = np.random.default_rng(seed)
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    levels = rng.permutation(np.linspace(0.0, 1.0, n))
    rows = []
    for i in range(n):
        clip = _content(frames, height, width, rng)
        for kind in DISTORTIONS[::-1]:  # blocks, then blur, then noise, all at the clip's level
            clip = _distort(clip, kind, float(levels[i]), rng)
        name = f"videos/clip_{i:03d}_level{levels[i]:.2f}.mp4"
        write_video(root / name, clip)
        mos = float(np.clip(5.0 - 4.0 * levels[i] + rng.normal(0, 0.1), 1.0, 5.0))
        rows.append((name, round(mos, 4)))
    csv_path = root / "mos.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "mos"])
        writer.writerows(rows)
    return csv_path


# ------------------------------------------------------------------------------------------------ checkpoints
def tiny_config():
    """The configuration of ``dvlta-vqa-tiny``."""
    import dvlta_metric

    return dvlta_metric.get_model_config("dvlta-vqa-tiny")


def make_clip_state(seed: int) -> dict[str, torch.Tensor]:
    """State dict of a tiny open_clip ``CLIP`` (OpenAI key layout) with seeded random weights."""
    from dvlta_metric._clip_towers import build_clip

    cfg = tiny_config()
    torch.manual_seed(seed)
    clip = build_clip(cfg.clip_vision, cfg.clip_text, cfg.embed_dim)
    with torch.no_grad():
        for p in clip.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return {k: v.detach().clone().contiguous() for k, v in clip.state_dict().items()}


def write_openai_clip(path: Path, seed: int = 1) -> dict[str, torch.Tensor]:
    """open_clip-format safetensors of a tiny CLIP (as ``open_clip_model.safetensors``)."""
    from safetensors.torch import save_file

    state = make_clip_state(seed)
    save_file(state, str(path))
    return state


def write_vificlip(path: Path, seed: int = 2, *, drop: str | None = None) -> dict[str, torch.Tensor]:
    """A ViFi-CLIP-style checkpoint: ``{"model": {module.image_encoder.*, module.text_encoder.*, ...}, "config"}``.

    Returns the CLIP state it encodes (with the token embedding ViFi-CLIP does not store).
    """
    state = make_clip_state(seed)
    model: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("visual."):
            model["module.image_encoder." + key[len("visual.") :]] = value
        elif key == "logit_scale":
            model["module.logit_scale"] = value
        elif key != "token_embedding.weight":
            model["module.text_encoder." + key] = value
    model["module.prompt_learner.token_prefix"] = torch.randn(400, 1, 64)
    model["module.prompt_learner.token_suffix"] = torch.randn(400, 72, 64)
    if drop is not None:
        del model[drop]
    cfg = FakeCfgNode(
        MODEL=FakeCfgNode(ARCH="ViT-B/16"),
        TRAINER=FakeCfgNode(ViFi_CLIP=FakeCfgNode(N_CTX_TEXT=0)),
    )
    torch.save({"model": model, "config": cfg, "epoch": 9, "max_accuracy": 0.5}, path)
    return state


def make_swin_state(
    seed: int,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(parameters, relative_position_index buffers)`` of the tiny model's Swin3D backbone."""
    import dvlta_metric

    torch.manual_seed(seed)
    backbone = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu").branches["bvfe"].encoder
    with torch.no_grad():
        for p in backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))
    params = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
    index = {k: v.clone() for k, v in backbone.named_buffers() if k.endswith("relative_position_index")}
    return params, index


def write_fastvqa(
    path: Path,
    seed: int = 3,
    *,
    drop: str | None = None,
    extra: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """A FAST-VQA-B-style checkpoint ``{"state_dict": {fragments_backbone.*, vqa_head.*}}`` (tiny sizes)."""
    params, index = make_swin_state(seed)
    state = {f"fragments_backbone.{k}": v for k, v in {**params, **index}.items()}
    c = tiny_config().swin.num_features
    state.update(
        {
            "vqa_head.fc_hid.weight": torch.randn(64, c, 1, 1, 1),
            "vqa_head.fc_hid.bias": torch.randn(64),
            "vqa_head.fc_last.weight": torch.randn(1, 64, 1, 1, 1),
            "vqa_head.fc_last.bias": torch.randn(1),
        }
    )
    if drop is not None:
        del state[drop]
    state.update(extra or {})
    torch.save({"state_dict": state}, path)
    return params
