"""Smoke tests of the benchmark scripts: they run on the tiny model and write the JSON the docs render.

The scripts are not tests (their numbers are read by people, see docs/benchmarks.md), but a GPU session is
short and a script that breaks there wastes it, so each runs here once on CPU with the smallest settings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def _run(script: str, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_bench_writes_stages_throughput_and_profile(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    _run(
        "bench.py",
        "--model",
        "dvlta-vqa-tiny",
        "--device",
        "cpu",
        "--resolution",
        "160x120",
        "--seconds",
        "1",
        "--batch-sizes",
        "1,2",
        "--repeats",
        "1",
        *("--rate-runs", "1", "--rate-seconds", "0.02", "--rate-squares", "256"),
        "--branch-times",
        "--profile",
        "--profile-top",
        "5",
        "--files",
        "2",
        "--workers",
        "1",
        "--output",
        str(out),
    )
    r = json.loads(out.read_text())
    assert set(r["stages"]) >= {"decode (needed frames)", "views", "fragments (Swin3D + head)", "fusion + score"}
    assert r["flops_per_video"] > 0 and r["end_to_end"]["file_path_seconds"] > 0
    assert r["copy_bandwidth"]["bytes_per_s"] > 0
    assert set(r["throughput_tensor_path"]) == {"1", "2"}
    assert set(r["throughput_tensor_path"]["2"]["branch_seconds"]) == {
        "fragments (Swin3D + head)",
        "temporal context",
        "temporal CLIP",
    }
    assert len(r["profile"]["ops"]) == 5 and r["score_files"]["errors"] == 0


def test_bench_throughput_only_skips_the_one_video_timings(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    _run(
        "bench.py",
        "--model",
        "dvlta-vqa-tiny",
        "--device",
        "cpu",
        "--resolution",
        "160x120",
        "--seconds",
        "1",
        "--batch-sizes",
        "2",
        "--repeats",
        "1",
        *("--rate-runs", "1", "--rate-seconds", "0.02", "--rate-squares", "256"),
        "--throughput-only",
        "--output",
        str(out),
    )
    r = json.loads(out.read_text())
    assert "end_to_end" not in r and "fragments (Swin3D + head)" not in r["stages"]
    assert r["flops_per_video"] > 0 and r["throughput_tensor_path"]["2"]["videos_per_s"] > 0


def test_attention_variants_agree_with_sdpa(tmp_path: Path) -> None:
    out = tmp_path / "attention.json"
    _run(
        "attention_variants.py",
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--clips",
        "1",
        "--stages",
        "4",
        "--repeats",
        "1",
        "--no-flex",
        "--output",
        str(out),
    )
    r = json.loads(out.read_text())
    assert [s["stage"] for s in r["stages"]] == [4, 4]
    for stage in r["stages"]:
        assert stage["max_abs_diff"]["sdpa_clips_in_heads"] < 1e-5
        assert stage["ms"]["sdpa_cudnn"] is None  # a CUDA-only variant is reported as failed, not fatal
    assert r["total_ms_all_blocks"]["sdpa"] > 0


def test_precision_check_reports_each_precision(tmp_path: Path) -> None:
    out = tmp_path / "precision.json"
    _run(
        "precision_check.py",
        "--model",
        "dvlta-vqa-tiny",
        "--device",
        "cpu",
        "--videos",
        "1",
        "--precisions",
        "bf16",
        "--output",
        str(out),
    )
    r = json.loads(out.read_text())
    assert r["bf16"]["max_score_diff"] < 2e-3
    assert set(r["bf16"]["branches"]) == {"bvfe", "tcm", "vbtc"}


def test_roofline_writes_bounds(tmp_path: Path) -> None:
    out = tmp_path / "roofline.json"
    _run(
        "roofline.py",
        "--model",
        "dvlta-vqa-tiny",
        "--frames",
        "16",
        "--height",
        "120",
        "--width",
        "160",
        "--batch-size",
        "4",
        "--output",
        str(out),
    )
    r = json.loads(out.read_text())
    assert r["kind"] == "roofline" and r["flops_per_video"] > 0
    every, matmuls = r["bounds"]["every operator"], r["bounds"]["matmuls only"]
    assert 0 < every["max_fraction_of_matmul_rate"] <= matmuls["max_fraction_of_matmul_rate"] <= 1.0
    assert set(r["branches"]) == {"fragments (Swin3D + head)", "temporal context", "temporal CLIP", "fusion + score"}


def test_roofline_prices_operators_by_their_flops_and_bytes() -> None:
    import importlib.util

    import torch

    import dvlta_metric

    def load(name: str):  # a benchmark script, loaded as a module
        spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[f"_bench_{name}"] = module  # dataclasses look their module up
        sys.path.insert(0, str(BENCHMARKS))  # the scripts import each other, as when run as files
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        finally:
            sys.path.remove(str(BENCHMARKS))
        return module

    roofline, bench = load("roofline"), load("bench")
    linear = torch.nn.Linear(96, 288)
    x = torch.rand(10, 96)
    with torch.no_grad():
        (op,) = [o for o in roofline.record(linear, lambda: linear(x)) if o.kind != "metadata"]
    assert (op.name, op.flops) == ("aten.addmm", 2 * 10 * 96 * 288)
    assert (op.activation_elems, op.weight_elems) == (10 * 96 + 10 * 288, 96 * 288 + 288)
    priced = roofline.price([op], batch=3, peak=1e12, bandwidth=1e9)["bounds"]["matmuls only"]
    assert priced["seconds_per_batch"] == (3 * (10 * 96 + 10 * 288) + 96 * 288 + 288) * 2 / 1e9  # bandwidth-bound

    # the whole tiny model: the same FLOPs as torch.utils.flop_counter counts for bench.py
    torch.manual_seed(0)
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    frames = torch.randint(0, 256, (16, 3, 120, 160), dtype=torch.uint8)
    views = {k: v[None] for k, v in model.make_views(frames).items()}
    with torch.no_grad():
        traced = sum(o.flops for o in roofline.record(model, lambda: model.branch_features(model.encode(views))))
        counted = bench.count_flops(lambda: model.branch_features(model.encode(views)))
    assert traced == counted


def test_soak_scores_every_file_once_through_faults(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    _run("soak.py", "--files", "8", "--broken", "2", "--rounds", "3", "--seed", "3", "--output", str(out))
    result = json.loads(out.read_text())
    assert result["scored_exactly_once"] == 8 and result["error_rows"] == 2
    assert result["lost"] == result["duplicated"] == result["unexpected_rows"] == []
    *faults, concurrent, last = result["rounds"]
    assert all(r.startswith(("kill: exit", "full-disk: exit")) for r in faults), faults
    # the second run is refused by the lock, or, when the first had already finished the few files, finds
    # nothing left to do: either way it scored nothing (no duplicates above)
    assert re.fullmatch(r"concurrent: exit 1; second run (refused: locked|nothing left: .*)", concurrent), concurrent
    assert last == "none: exit 1"  # nothing left to score; the broken files' rows make it 1


def test_backward_memory_measures_each_case_and_skips_over_budget(tmp_path: Path) -> None:
    out = tmp_path / "backward_memory.json"
    _run(
        "backward_memory.py",
        "--model",
        "dvlta-vqa-tiny",
        "--frames",
        "8",
        "--resolutions",
        "160x120",
        "--checkpointing",
        "on,off",
        "--malloc",
        "lean",
        "--output",
        str(out),
    )
    r = json.loads(out.read_text())
    assert r["benchmark"] == "backward_memory" and r["malloc_settings"]["mmap_threshold"] == 1 << 20
    on, off = r["cases"]
    assert (on["checkpointing"], off["checkpointing"]) == (True, False)
    for case in (on, off):
        assert case["size"] == [120, 160] and case["peak_rss_mib"] > 0 and case["backward_s"] > 0
        assert case["grad_norm"] > 0 and "skipped" not in case
    assert abs(on["score"] - off["score"]) < 1e-6  # checkpointing changes no score

    over = tmp_path / "over.json"
    _run("backward_memory.py", "--model", "dvlta-vqa-tiny", "--frames", "8", "--resolutions", "160x120",
         "--checkpointing", "on", "--budget-gib", "0.05", "--output", str(over))  # fmt: skip
    (case,) = json.loads(over.read_text())["cases"]
    assert case["skipped"].startswith("stopped at")

    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import gen_benchmarks
    finally:
        sys.path.pop(0)
    page = "\n".join(gen_benchmarks._backward_memory_section("cpu_backward_memory", r))
    assert "| 8 | 160x120 | on |" in page and "GiB" in page


def test_score_memory_measures_the_command_line_and_the_speed_path(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    _run(
        "score_memory.py",
        *("--models", "dvlta-vqa-tiny", "--precisions", "fp32", "--resolutions", "540p", "--seconds", "0.5"),
        *("--speed-path", "--output", str(out)),
    )
    cases = json.loads(out.read_text())["cases"]
    assert [c["path"].split()[0] for c in cases] == ["command", "speed"]
    assert all(0.2 < c["peak_rss_gib"] < 8 for c in cases)
    assert abs(cases[0]["score"] - cases[1]["score"]) < 1e-5  # the two paths agree


def test_gpu_decode_measures_each_decoder_and_writes_its_report(tmp_path: Path) -> None:
    """benchmarks/gpu_decode.py (gpu_session.sh part e) on CPU: PyAV always; torchcodec too where it can run here
    (its rows then hold a rate or the error, never a crash)."""
    _run("gpu_decode.py", "--device", "cpu", "--quick", "--sizes", "540p", "--no-score", "--output-dir", str(tmp_path))
    report = json.loads((tmp_path / "cpu_gpu_decode.json").read_text())
    pyav = [r for r in report["read"] if r["decoder"] == "pyav"]
    assert [r["workers"] for r in pyav] == [1, 2] and all(r["videos_per_s"] > 0 for r in pyav)
    assert {r["decoder"] for r in report["read"]} == {"pyav", "torchcodec"}
    for row in report.get("differences", []):
        assert "error" in row or row["same_indices"], row


def test_rate_probe_finds_the_model_products_and_keeps_the_best_run() -> None:
    """benchmarks/rate_probe.py: the products it probes are the model's own (by FLOPs), and the rate is the best."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import torch
        from rate_probe import model_gemm_shapes, robust_rate
    finally:
        sys.path.remove(str(BENCHMARKS))
    layer = torch.nn.Linear(48, 96)
    x = torch.randn(500, 48)
    shapes = model_gemm_shapes(lambda: torch.bmm(torch.randn(2, 7, 5), torch.randn(2, 5, 3)) + layer(x).sum())
    assert shapes[0]["shape"] == [1, 500, 48, 96] and shapes[0]["share"] > 0.9
    rate = robust_rate(torch.device("cpu"), torch.float32, [(1, 500, 48, 96)], squares=(64,), seconds=0.01, runs=3)
    assert [e["kind"] for e in rate["shapes"]] == ["square", "model"] and rate["probe"] == "robust"
    assert rate["flops_per_s"] == max(e["best_flops_per_s"] for e in rate["shapes"]) > 0
    assert all(e["best_flops_per_s"] >= e["median_flops_per_s"] for e in rate["shapes"])


def test_swin_cpu_times_the_branch_against_a_reference_and_groups_its_profile(tmp_path: Path) -> None:
    """benchmarks/swin_cpu.py on the tiny model, with a stand-in for the official backbone (the official file is
    never part of the repository): our own backbone behind the official constructor's signature."""
    reference = tmp_path / "swin_backbone.py"
    reference.write_text(
        "from dvlta_metric.branches.swin3d import SwinTransformer3D as _Ours\n\n\n"
        "class SwinTransformer3D(_Ours):\n"
        "    def __init__(self, use_checkpoint=True, mlp_ratio=4.0, **kwargs):\n"
        "        super().__init__(mlp_ratio=mlp_ratio, **kwargs)\n\n"
        "    def train(self, mode=True):  # as the official one: returns None\n"
        "        super().train(mode)\n"
    )
    out = tmp_path / "swin.json"
    _run(
        "swin_cpu.py",
        *("--model", "dvlta-vqa-tiny", "--repeats", "2", "--rate-runs", "1", "--rate-seconds", "0.02"),
        *("--rate-squares", "256"),
        *("--video-size", "120x160", "--fastvqa-reference", str(reference), "--alternatives", "--output", str(out)),
    )
    r = json.loads(out.read_text())
    assert r["benchmark"] == "swin_cpu" and r["clips"] == 2 and r["gflops_per_call"] > r["gflops_per_clip_backbone"]
    for path in r["branch"].values():
        assert path["runs"] == 2 and 0 < path["fraction_of_matmul_rate"] <= path["fraction_of_matmul_rate_best"]
        assert path["fraction_of_matmul_rate_paired"] > 0 and len(path["rates_flops_per_s"]) == 2
    one = r["one_clip"]
    assert set(one["seconds"]) == {"ours", "official FAST-VQA", "ours, trainable bias tables"}
    assert one["max_abs_diff"] == 0 and one["speedup"] > 0 and one["speedup_at_full_matmul_rate"] > 0
    alt = r["alternatives"]
    assert set(alt["attention_stage1"]["seconds"]) == {"fused kernel", "separate"}
    assert [m["stage"] for m in alt["mlp"]] == [0, 1, 2, 3] and all(m["equal"] for m in alt["mlp"])
    assert all(0 < p["distinct_patterns"] <= p["windows"] for p in alt["bias_patterns"])
    flops = {g["group"]: g.get("gflops") for g in r["profile"]["groups"]}
    assert flops["linear layers (qkv, proj, MLP; bias copies)"] > flops["window attention (SDPA kernel)"] > 0
    groups = {g["group"]: g["share"] for g in r["profile"]["groups"]}
    assert abs(sum(groups.values()) - 1) < 1e-6
    for group in ("linear layers", "window attention", "attention bias build", "GELU", "layer norms", "head"):
        assert any(g.startswith(group) for g in groups), (group, groups)
    page = tmp_path / "page.md"
    rendered = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_benchmarks.py"), "--results", str(tmp_path), "--page", str(page)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert rendered.returncode == 0, rendered.stderr
    text = page.read_text()
    assert "## swin" in text and "One clip through the backbone" in text and "`rate_probe.py`" in text


def test_bench_batches_distinct_copies_of_one_video() -> None:
    """bench.py's throughput batches: plain copies of one video would have their equal clips computed once."""
    import torch

    import dvlta_metric
    from dvlta_metric.branches.basic_visual import repeated_clips

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from bench import distinct_batch
    finally:
        sys.path.remove(str(BENCHMARKS))
    model = dvlta_metric.create("dvlta-vqa-tiny", pretrained=False, device="cpu")
    frames = torch.randint(0, 256, (64, 3, 120, 160), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    views = {k: v[None] for k, v in model.make_views(frames).items()}
    assert repeated_clips(views["fragments"].flatten(0, 1)) is None  # the video's own clips differ
    batch = distinct_batch(views, 3)
    assert all(batch[k].shape[0] == 3 for k in views)
    assert repeated_clips(batch["fragments"].flatten(0, 1)) is None
    assert repeated_clips(torch.cat([views["fragments"]] * 3).flatten(0, 1)) is not None  # what plain copies give
