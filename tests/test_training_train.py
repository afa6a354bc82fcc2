"""dvlta_metric_train.train's phases alone, on a small stand-in network: schedule, checkpoint and resume, done jobs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dvlta_metric_train import distributed as dd
from dvlta_metric_train.params import TrainSettings
from dvlta_metric_train.scheduler import make_optimizer, warmup_cosine
from dvlta_metric_train.train import Progress, finished_result, resume, save_checkpoint

IDENTITY = {"model": "local-dir:init", "split": {"protocol": "random"}, "settings": {"lr": 1e-3}, "rows": "abc"}
MAIN = dd.DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _setup(
    settings: TrainSettings, steps_per_epoch: int = 4
) -> tuple[torch.nn.Linear, torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    optimizer, scheduler = make_optimizer(net, settings, steps_per_epoch)
    return net, optimizer, scheduler


def test_schedule_warms_up_then_decays_per_step() -> None:
    settings = TrainSettings(epochs=3, lr=1e-2, warmup_epochs=0.5)
    net, optimizer, scheduler = _setup(settings)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([1e-2 * warmup_cosine(s, 2, 12) for s in range(12)])
    assert lrs[0] == pytest.approx(5e-3) and lrs[1] == pytest.approx(1e-2) and lrs[-1] < lrs[2]
    assert math.isclose(warmup_cosine(12, 2, 12), 0.0, abs_tol=1e-12)


def test_checkpoint_round_trip_restores_the_run(tmp_path: Path) -> None:
    settings = TrainSettings(epochs=3)
    net, optimizer, scheduler = _setup(settings)
    for _ in range(3):
        net(torch.ones(2, 3)).sum().backward()
        optimizer.step()
        scheduler.step()
    progress = Progress(2, {"score": 0.5, "epoch": 1, "results": {}}, {"step_loss": [0.3], "epochs": []})
    path = tmp_path / "last.pt"
    save_checkpoint(path, progress, net, optimizer, scheduler, {"protocol": "random"}, settings, IDENTITY)
    assert json.loads((tmp_path / "history.json").read_text()) == progress.history
    assert not list(tmp_path.glob("*.tmp"))
    expected_rng = torch.get_rng_state()
    torch.manual_seed(123)

    net2, optimizer2, scheduler2 = _setup(settings)
    restored = resume(path, IDENTITY, net2, optimizer2, scheduler2)
    assert restored == progress
    assert torch.equal(net2.weight, net.weight) and torch.equal(net2.bias, net.bias)
    assert scheduler2.last_epoch == 3
    assert optimizer2.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert torch.equal(torch.get_rng_state(), expected_rng)


def test_resume_without_checkpoint_or_with_another_run(tmp_path: Path) -> None:
    settings = TrainSettings(epochs=3)
    net, optimizer, scheduler = _setup(settings)
    path = tmp_path / "last.pt"
    assert resume(path, IDENTITY, net, optimizer, scheduler) is None
    save_checkpoint(path, Progress(1), net, optimizer, scheduler, {}, settings, IDENTITY)
    other = {**IDENTITY, "settings": {"lr": 2e-3}}
    with pytest.raises(ValueError, match=r"settings\.lr: 0\.001 then, 0\.002 now"):
        resume(path, other, net, optimizer, scheduler)


def test_finished_result_reuses_only_the_same_run(tmp_path: Path) -> None:
    class _Job:
        name = "split_00"

    assert finished_result(_Job(), tmp_path, IDENTITY, MAIN) is None  # type: ignore[arg-type]
    (tmp_path / "result.json").write_text(json.dumps({"job": "split_00", "run": IDENTITY}))
    assert finished_result(_Job(), tmp_path, IDENTITY, MAIN) == {"job": "split_00", "run": IDENTITY}  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="belongs to a run with other settings"):
        finished_result(_Job(), tmp_path, {**IDENTITY, "rows": "def"}, MAIN)  # type: ignore[arg-type]
