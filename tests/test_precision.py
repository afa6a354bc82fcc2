"""Half precision: which branch runs in which dtype, float32 residual streams, and the score error it costs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

import dvlta_metric
from dvlta_metric._clip_towers import encode_images
from dvlta_metric.branches.swin3d import PatchMerging, SwinTransformerBlock3D
from dvlta_metric.model import DVLTAVQA, branch_dtypes

VideoFactory = Callable[..., torch.Tensor]


@contextmanager
def output_dtypes(model: nn.Module, kinds: tuple[type[nn.Module], ...]) -> Iterator[dict[str, set[torch.dtype]]]:
    """Record the output dtypes of every submodule of the given kinds, by kind name."""
    seen: dict[str, set[torch.dtype]] = {}

    def hook(module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            seen.setdefault(type(module).__name__, set()).add(output.dtype)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def test_branch_dtypes_policy() -> None:
    assert branch_dtypes("fp32", "cuda") == {"bvfe": None, "tcm": None, "vbtc": None}
    assert branch_dtypes("fp16", "cpu") == {"bvfe": torch.float16, "tcm": None, "vbtc": torch.float16}
    assert branch_dtypes("bf16", "cuda") == {"bvfe": torch.float16, "tcm": None, "vbtc": torch.float16}
    assert branch_dtypes("bf16", "cpu") == {"bvfe": torch.bfloat16, "tcm": None, "vbtc": None}
    with pytest.raises(ValueError, match="precision must be one of"):
        branch_dtypes("fp8", "cuda")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_backbones_compute_in_half_with_float32_residuals(
    tiny_model: DVLTAVQA, video_factory: VideoFactory, precision: str
) -> None:
    v = video_factory(8, 128, 160)
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    swin_kinds = (nn.Linear, SwinTransformerBlock3D, PatchMerging, nn.Conv3d)
    clip_kinds = (nn.Linear, nn.Conv2d, ResidualAttentionBlock)
    try:
        tiny_model.set_precision(precision)
        with (
            output_dtypes(tiny_model.branches["bvfe"].encoder, swin_kinds) as swin,
            output_dtypes(tiny_model.branches["tcm"], (nn.Conv3d,)) as tcm,
            output_dtypes(tiny_model.branches["vbtc"].encoder, clip_kinds) as clip,
        ):
            features = tiny_model.explain(v).features
    finally:
        tiny_model.set_precision("fp32")
    assert swin["Linear"] == {half}  # qkv, proj, MLP, merging reduction
    assert swin["SwinTransformerBlock3D"] == {torch.float32}  # the residual stream
    assert swin["PatchMerging"] == {torch.float32}
    assert tcm["Conv3d"] == {torch.float32}  # the temporal context module stays in float32
    clip_dtype = branch_dtypes(precision, "cpu")["vbtc"] or torch.float32
    assert clip["Linear"] == {clip_dtype} and clip["Conv2d"] == {clip_dtype}
    assert clip["ResidualAttentionBlock"] == {torch.float32}
    assert features.dtype == torch.float32


def test_encode_images_matches_open_clip_in_float32() -> None:
    torch.manual_seed(0)
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False)
    visual = model.branches["vbtc"].encoder
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(encode_images(visual, x), visual(x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_float32_residual_stream_cuts_clip_half_precision_error(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    visual = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False).branches["vbtc"].encoder
    x = torch.randn(4, 3, 224, 224)
    with torch.no_grad():
        ref = visual(x)
        with torch.autocast("cpu", dtype=dtype):
            theirs = visual(x).float()  # open_clip keeps the residual stream in the autocast dtype
            ours = encode_images(visual, x)
    assert ours.dtype == torch.float32

    def rel(a: torch.Tensor) -> float:
        return float(((a - ref).norm(dim=-1) / ref.norm(dim=-1)).max())

    assert rel(ours) < 0.5 * rel(theirs)  # measured: about 4x smaller


@pytest.mark.parametrize(("precision", "tolerance"), [("bf16", 1e-3), ("fp16", 5e-4)])
def test_half_precision_scores_stay_close(
    tiny_model: DVLTAVQA, video_factory: VideoFactory, precision: str, tolerance: float
) -> None:
    videos = [video_factory(24, 192, 256, seed=i) for i in range(3)]
    ref = torch.stack([tiny_model(v) for v in videos])
    try:
        tiny_model.set_precision(precision)
        half = torch.stack([tiny_model(v) for v in videos])
        again = torch.stack([tiny_model(v) for v in videos])
    finally:
        tiny_model.set_precision("fp32")
    assert torch.equal(half, again)  # deterministic in half precision too
    assert (half - ref).abs().max() < tolerance  # measured: 2e-4 (bf16) and 4e-5 (fp16) on these sizes


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_half_precision_on_cuda_stays_close(video_factory: VideoFactory) -> None:
    torch.manual_seed(0)
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cuda")
    videos = [video_factory(24, 192, 256, seed=i) for i in range(3)]
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        ref = torch.stack([model(v) for v in videos])
        for precision in ("bf16", "fp16"):
            half = torch.stack([model.set_precision(precision)(v) for v in videos])
            assert (half - ref).abs().max() < 1e-3, precision
    finally:
        model.set_precision("fp32")
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert set(branch_dtypes("bf16", model.device.type).values()) == {torch.float16, None}
