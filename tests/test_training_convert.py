"""dvlta_metric_train.convert on small synthetic checkpoints with ViFi-CLIP, OpenAI CLIP and FAST-VQA-B key layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from training_data import tiny_config, write_fastvqa, write_openai_clip, write_vificlip

import dvlta_metric
from dvlta_metric._checkpoint import read_config
from dvlta_metric._clip_towers import build_clip, encode_prompts
from dvlta_metric_train import convert

FIRST_SWIN_KEY = "fragments_backbone.layers.0.blocks.0.attn.qkv.weight"


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("upstream")
    out: dict[str, object] = {"root": root}
    out["openai_state"] = write_openai_clip(root / "open_clip_model.safetensors")
    out["vifi_state"] = write_vificlip(root / "vifi_clip.pth")
    out["swin_state"] = write_fastvqa(root / "FAST_VQA_B_1_4.pth")
    return out


def _expected_prompts(state: dict[str, torch.Tensor]) -> torch.Tensor:
    cfg = tiny_config()
    clip = build_clip(cfg.clip_vision, cfg.clip_text, cfg.embed_dim)
    clip.load_state_dict(state)
    return encode_prompts(clip, [cfg.prompts.fusion, cfg.prompts.positive, cfg.prompts.negative], 77)


def test_vificlip_and_fastvqa_convert_strictly(
    sources: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root: Path = sources["root"]  # type: ignore[assignment]
    rc = convert.main([
        "--model", "dvlta-vqa-tiny", "--out", str(tmp_path / "init"), "--allow-pickle",
        "--vificlip", str(root / "vifi_clip.pth"),
        "--openai-clip", str(root / "open_clip_model.safetensors"),
        "--fastvqa", str(root / "FAST_VQA_B_1_4.pth"),
    ])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    model = dvlta_metric.create(f"local-dir:{tmp_path / 'init'}", device="cpu")
    vifi: dict[str, torch.Tensor] = sources["vifi_state"]  # type: ignore[assignment]
    openai: dict[str, torch.Tensor] = sources["openai_state"]  # type: ignore[assignment]
    visual = model.branches["vbtc"].encoder.state_dict()
    assert visual.keys() == {k[len("visual.") :] for k in vifi if k.startswith("visual.")}
    for key, value in visual.items():
        assert torch.equal(value, vifi["visual." + key]), key
    swin: dict[str, torch.Tensor] = sources["swin_state"]  # type: ignore[assignment]
    backbone = model.branches["bvfe"].encoder.state_dict()
    assert backbone.keys() == swin.keys()
    assert all(torch.equal(backbone[k], swin[k]) for k in swin)
    # prompts: ViFi-CLIP's text tower with OpenAI's token embedding
    text_state = {**vifi, "token_embedding.weight": openai["token_embedding.weight"]}
    assert torch.allclose(model.prompt_embeddings, _expected_prompts(text_state), atol=1e-6)
    _, meta = read_config(tmp_path / "init" / "config.json")
    src = meta["sources"]
    assert src["clip"]["kind"] == "vificlip" and src["clip"]["dropped"] == {"prompt_learner": 2}
    assert src["clip"]["from_openai_clip"] == ["token_embedding.weight"]
    assert src["clip"]["read_with"] == "torch.load(weights_only=False)"  # the yacs-style config object
    assert src["fastvqa"]["read_with"] == "torch.load(weights_only=True)"
    n_blocks = sum(tiny_config().swin.depths)
    assert src["fastvqa"]["dropped"] == {
        "vqa_head": 4,
        "relative_position_index": n_blocks,
    }
    assert len(src["fastvqa"]["sha256"]) == 64 and meta["stage"] == "initial"
    out = capsys.readouterr().out
    assert "vqa_head" in out and "local-dir:" in out


def test_openai_clip_alone(sources: dict, tmp_path: Path) -> None:
    root: Path = sources["root"]  # type: ignore[assignment]
    rc = convert.main([
        "--model", "dvlta-vqa-tiny", "--out", str(tmp_path / "init"), "--allow-pickle",
        "--openai-clip", str(root / "open_clip_model.safetensors"), "--fastvqa", str(root / "FAST_VQA_B_1_4.pth"),
    ])  # fmt: skip
    assert rc == 0
    model = dvlta_metric.create(f"local-dir:{tmp_path / 'init'}", device="cpu")
    openai: dict[str, torch.Tensor] = sources["openai_state"]  # type: ignore[assignment]
    assert torch.equal(model.branches["vbtc"].encoder.conv1.weight, openai["visual.conv1.weight"])
    assert torch.allclose(model.prompt_embeddings, _expected_prompts(openai), atol=1e-6)


def test_refuses_to_unpickle_without_allow_pickle(
    sources: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root: Path = sources["root"]  # type: ignore[assignment]

    def no_unpickling(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load was called without --allow-pickle")

    monkeypatch.setattr(torch, "load", no_unpickling)
    for flags in (
        [
            "--vificlip",
            str(root / "vifi_clip.pth"),
            "--fastvqa",
            str(root / "FAST_VQA_B_1_4.pth"),
        ],
        ["--fastvqa", str(root / "FAST_VQA_B_1_4.pth")],
    ):
        rc = convert.main([
            "--model", "dvlta-vqa-tiny", "--out", str(tmp_path / "init"),
            "--openai-clip", str(root / "open_clip_model.safetensors"), *flags,
        ])  # fmt: skip
        assert rc == 2
        err = capsys.readouterr().err
        assert "refusing to load" in err and "--allow-pickle" in err and "arbitrary code" in err
    assert not (tmp_path / "init").exists()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", ("not in the checkpoint", "layers.0.blocks.0.attn.qkv.weight")),
        ("extra", ("no place in the model", "layers.9.blocks.0.mlp.fc1.weight")),
    ],
)
def test_missing_or_extra_backbone_keys_fail_listing_them(
    sources: dict,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    expected: tuple[str, str],
) -> None:
    root: Path = sources["root"]  # type: ignore[assignment]
    checkpoint = tmp_path / f"{case}.pth"
    if case == "missing":
        write_fastvqa(checkpoint, drop=FIRST_SWIN_KEY)
    else:
        write_fastvqa(checkpoint, extra={"fragments_backbone.layers.9.blocks.0.mlp.fc1.weight": torch.zeros(1)})
    argv = [
        "--model", "dvlta-vqa-tiny", "--allow-pickle",
        "--openai-clip", str(root / "open_clip_model.safetensors"),
        "--out", str(tmp_path / "out"), "--fastvqa", str(checkpoint),
    ]  # fmt: skip
    assert convert.main(argv) == 2
    err = capsys.readouterr().err
    assert all(text in err for text in expected), err


def test_missing_sources_are_named(sources: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root: Path = sources["root"]  # type: ignore[assignment]
    rc = convert.main([
        "--model", "dvlta-vqa-tiny", "--out", str(tmp_path / "a"), "--allow-pickle",
        "--openai-clip", str(root / "open_clip_model.safetensors"),
    ])  # fmt: skip
    assert rc == 2 and "--fastvqa" in capsys.readouterr().err
    rc = convert.main(
        [
            "--model",
            "dvlta-vqa-tiny",
            "--out",
            str(tmp_path / "b"),
            "--fastvqa",
            "nope.pth",
            "--openai-clip",
            "nope.safetensors",
        ]
    )
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_random_init_directory(tmp_path: Path) -> None:
    assert (
        convert.main(
            [
                "--model",
                "dvlta-vqa-tiny",
                "--random-init",
                "--seed",
                "5",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    a = dvlta_metric.create(f"local-dir:{tmp_path / 'r'}", device="cpu")
    torch.manual_seed(5)
    b = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    _, meta = read_config(tmp_path / "r" / "config.json")
    assert meta["sources"] == {"random_init": True} and meta["init_seed"] == 5


@pytest.mark.parametrize(
    "contents",
    [
        b"hello",  # a text file: torch's weights-only unpickler raised KeyError
        bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8)),  # random bytes
        b"\x80\x02I12ab\n.",  # a pickle that fails inside: ValueError "could not convert string to int"
        None,  # the first half of a real checkpoint (a truncated zip archive)
    ],
    ids=["text", "random", "bad pickle", "truncated"],
)
def test_a_file_that_is_not_a_checkpoint_is_named(
    sources: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], contents: bytes | None
) -> None:
    root: Path = sources["root"]  # type: ignore[assignment]
    bad = tmp_path / "x.pth"
    if contents is None:
        whole = (root / "FAST_VQA_B_1_4.pth").read_bytes()
        contents = whole[: len(whole) // 2]
    bad.write_bytes(contents)
    rc = convert.main([
        "--model", "dvlta-vqa-tiny", "--out", str(tmp_path / "init"), "--allow-pickle",
        "--openai-clip", str(root / "open_clip_model.safetensors"), "--fastvqa", str(bad),
    ])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}") and "not a PyTorch checkpoint" in err, err
    assert not (tmp_path / "init").exists()


def test_random_init_refuses_source_flags(sources: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root: Path = sources["root"]  # type: ignore[assignment]
    for flags in (
        ["--openai-clip", str(root / "open_clip_model.safetensors")],
        ["--openai-clip", "hub"],
        ["--fastvqa", str(root / "FAST_VQA_B_1_4.pth"), "--allow-pickle"],
        ["--vificlip", str(root / "vifi_clip.pth")],
        ["--cache-dir", str(tmp_path / "hf")],
    ):
        rc = convert.main(["--model", "dvlta-vqa-tiny", "--random-init", "--out", str(tmp_path / "r"), *flags])
        assert rc == 2, flags
        err = capsys.readouterr().err
        assert err.startswith("error: --random-init") and flags[0] in err, err
    assert not (tmp_path / "r").exists()


def _vifi_with_logit_scale(sources: dict, path: Path, log_scale: float) -> Path:
    """The ViFi-CLIP fixture checkpoint with its ``logit_scale`` replaced."""
    root: Path = sources["root"]  # type: ignore[assignment]
    ckpt = torch.load(root / "vifi_clip.pth", weights_only=False)
    ckpt["model"]["module.logit_scale"] = torch.tensor(log_scale)
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize(("log_scale", "kept", "capped"), [(np.log(80.0), 80.0, False), (np.log(150.0), 100.0, True)])
def test_the_checkpoint_logit_scale_is_kept(
    sources: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], log_scale: float, kept: float, capped: bool
) -> None:
    """A converted ViFi-CLIP checkpoint brings its own s of eq. 12 (capped at CLIP's 100), and says so."""
    root: Path = sources["root"]  # type: ignore[assignment]
    vifi = _vifi_with_logit_scale(sources, tmp_path / "vifi.pth", float(log_scale))
    rc = convert.main([
        "--model", "dvlta-vqa-tiny", "--out", str(tmp_path / "init"), "--allow-pickle", "--vificlip", str(vifi),
        "--openai-clip", str(root / "open_clip_model.safetensors"), "--fastvqa", str(root / "FAST_VQA_B_1_4.pth"),
    ])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"= {kept:.4f}" in out and ("capped at 100" in out) == capped
    model = dvlta_metric.create(f"local-dir:{tmp_path / 'init'}", device="cpu")
    assert model.config.logit_scale == pytest.approx(kept) and model.head.logit_scale == pytest.approx(kept)
    _, meta = read_config(tmp_path / "init" / "config.json")
    assert meta["sources"]["clip"]["logit_scale"] == {"log": pytest.approx(log_scale), "scale": pytest.approx(kept),
                                                        "capped": capped}  # fmt: skip


def test_a_logit_scale_that_is_not_a_number_is_refused(
    sources: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root: Path = sources["root"]  # type: ignore[assignment]
    vifi = _vifi_with_logit_scale(sources, tmp_path / "vifi.pth", float("nan"))
    rc = convert.main([
        "--model", "dvlta-vqa-tiny", "--out", str(tmp_path / "init"), "--allow-pickle", "--vificlip", str(vifi),
        "--openai-clip", str(root / "open_clip_model.safetensors"), "--fastvqa", str(root / "FAST_VQA_B_1_4.pth"),
    ])  # fmt: skip
    assert rc == 2 and "logit_scale" in capsys.readouterr().err
    assert not (tmp_path / "init").exists()
