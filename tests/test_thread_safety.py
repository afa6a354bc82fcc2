"""One model in several threads: scoring is safe (and tested); drawing models refuse a second drawing thread."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import torch

import dvlta_metric
from dvlta_metric.model import _one_thread_draws


def _in_threads(count: int, work: Callable[[int], object]) -> list[object]:
    results: list[object] = [None] * count
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(i: int) -> None:
        try:
            start.wait()
            results[i] = work(i)
        except BaseException as err:  # reported below, in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_scoring_from_eight_threads_gives_the_scores_of_one(
    tiny_model: dvlta_metric.DVLTAVQA, video_factory: Callable[..., torch.Tensor]
) -> None:
    videos = [video_factory(12, 96, 128, seed=s) for s in range(8)]
    with torch.no_grad():
        alone = [tiny_model(v) for v in videos]

    def score(i: int) -> list[torch.Tensor]:
        with torch.no_grad():
            return [tiny_model(videos[i]) for _ in range(3)]

    for i, repeats in enumerate(_in_threads(8, score)):
        assert all(torch.equal(r, alone[i]) for r in repeats)  # type: ignore[union-attr]


def test_a_second_thread_drawing_from_a_loss_model_is_refused(
    tiny_loss_model: dvlta_metric.DVLTAVQA, video_factory: Callable[..., torch.Tensor]
) -> None:
    video = video_factory(12, 96, 128)
    with _one_thread_draws(tiny_loss_model):  # another thread is drawing
        with pytest.raises(RuntimeError, match="one model per thread|its own model"):
            _in_threads(1, lambda _: tiny_loss_model.make_views(video))
    assert set(_in_threads(1, lambda _: tiny_loss_model.make_views(video))[0]) == set(tiny_loss_model.views)  # type: ignore[arg-type]
    seeded = tiny_loss_model.make_views(video, generator=torch.Generator().manual_seed(0))  # its own generator
    assert set(seeded) == set(tiny_loss_model.views)
