"""training/: label files, CSV datasets, the up-front video check, splits and metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from training_data import make_quality_dataset, write_video

from dvlta_metric_train import datasets, metrics, splits

EXPECTED = {
    # key: (rows, MOS min, MOS max, first path)
    "konvid": (1200, 1.22, 4.64, "KoNViD_1k_videos/4542323058.mp4"),
    "livevqc": (585, 6.22368, 94.2865, "Video/A001.mp4"),
    "ytugc": (1147, 1.242, 4.677, "Sports_2160P-4e9f_crf_10_ss_00_t_20.0.mp4"),
}


# ------------------------------------------------------------------------------------------------ labels
@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_shipped_label_files_parse(key: str) -> None:
    spec = datasets.DATASETS[key]
    items = datasets.read_label_file(spec.label_file)
    rows, lo, hi, first = EXPECTED[key]
    assert len(items) == rows == spec.rows
    mos = np.array([i.mos for i in items])
    assert mos.min() == pytest.approx(lo) and mos.max() == pytest.approx(hi)
    assert spec.mos_scale[0] <= mos.min() and mos.max() <= spec.mos_scale[1]
    assert items[0].path == first
    assert len({i.path for i in items}) == rows  # no duplicate videos
    if key == "ytugc":
        assert all(i.duration is None and i.fps is None for i in items)  # -1 means unknown
    else:
        assert all(i.duration and i.fps for i in items)


def test_shipped_label_files_match_shared_copies(shared_data: Path) -> None:
    for spec in datasets.DATASETS.values():
        shared = shared_data / "labels" / spec.label_dir / "labels.txt"
        assert spec.label_file.read_bytes() == shared.read_bytes()
    assert "FAST-VQA" in (datasets.LABELS_DIR / "SOURCES.txt").read_text()


def test_dataset_aliases_and_unknown_name() -> None:
    assert datasets.dataset_spec("KoNViD-1k").key == "konvid"
    assert datasets.dataset_spec("youtube-ugc").key == "ytugc"
    with pytest.raises(ValueError, match="--csv"):
        datasets.dataset_spec("lsvq")


def test_label_file_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "labels.txt"
    bad.write_text("a.mp4, 8.0, 30, 3.2\n\nb.mp4, 8.0, 3.5\n")
    with pytest.raises(ValueError, match=r"labels.txt:3"):
        datasets.read_label_file(bad)
    bad.write_text("a.mp4, 8.0, 30, high\n")
    with pytest.raises(ValueError, match="MOS 'high' is not a number"):
        datasets.read_label_file(bad)
    bad.write_text("a.mp4, 8.0, 30, 3.2\nb.mp4, 8.0, 30, 3.0\n./a.mp4, 8.0, 30, 2.9\n")
    with pytest.raises(ValueError, match=r"labels.txt:3: './a.mp4' is listed again \(first on line 1\)"):
        datasets.read_label_file(bad)


def test_csv_dataset(tmp_path: Path) -> None:
    (tmp_path / "scores.csv").write_text("id,Path,MOS\n1,a.mp4,3.5\n2,sub/b.mp4,4\n")
    data = datasets.load_dataset(csv_file=tmp_path / "scores.csv")
    assert data.root == tmp_path.resolve() and data.mos == [3.5, 4.0]
    assert data.file(1) == tmp_path.resolve() / "sub" / "b.mp4"
    (tmp_path / "bad.csv").write_text("file,score\na.mp4,3\n")
    with pytest.raises(ValueError, match="'path' and 'mos'"):
        datasets.load_dataset(csv_file=tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="--root"):
        datasets.load_dataset("konvid")
    (tmp_path / "twice.csv").write_text("path,mos\na.mp4,3\nsub/b.mp4,4\nsub//b.mp4,2\n")
    with pytest.raises(ValueError, match=r"twice.csv:4: 'sub//b.mp4' is listed again \(first on line 3\)"):
        datasets.load_dataset(csv_file=tmp_path / "twice.csv")


def test_check_reports_missing_and_unreadable_videos_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_quality_dataset(tmp_path, n=2, frames=4, height=64, width=64)
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"\x00\x01 not a video " * 50)
    (tmp_path / "videos" / "empty.mp4").write_bytes(b"")
    rows = list((tmp_path / "mos.csv").read_text().splitlines()[1:])
    extra = ["videos/gone.mp4,2.0", "videos/broken.mp4,3.0", "videos/empty.mp4,1.0"]
    (tmp_path / "all.csv").write_text("path,mos\n" + "\n".join(rows + extra) + "\n")
    data = datasets.load_dataset(csv_file=tmp_path / "all.csv")
    report = data.check(progress=False)
    assert not report.ok and report.total == 5
    assert report.bad_indices == {2, 3, 4}
    reasons = {Path(p.path).name: p.reason for p in report.problems}
    assert reasons["gone.mp4"] == "missing"
    assert reasons["empty.mp4"].startswith("empty")
    assert reasons["broken.mp4"].startswith("unreadable")
    assert "3 of 5 videos cannot be used (1 missing, 2 unreadable)" in report.summary()
    assert datasets.main(["--csv", str(tmp_path / "all.csv")]) == 1
    out = capsys.readouterr().out
    assert "gone.mp4: missing" in out
    assert datasets.main(["--csv", str(tmp_path / "mos.csv")]) == 0


def test_probe_accepts_a_generated_video(tmp_path: Path) -> None:
    import torch

    write_video(tmp_path / "v.mp4", torch.rand(3, 3, 32, 48))
    assert datasets.probe_video(tmp_path / "v.mp4") is None
    assert datasets.probe_video(tmp_path) == "is a directory"


# ------------------------------------------------------------------------------------------------ splits
def test_random_splits_follow_the_documented_recipe() -> None:
    for i in range(10):
        s = splits.random_split(1200, i)
        assert s.seed == 42 * (i + 1)
        perm = np.random.default_rng(s.seed).permutation(1200)
        assert s.train == tuple(sorted(perm[:960].tolist())) and s.test == tuple(sorted(perm[960:].tolist()))


@pytest.mark.parametrize("n, n_train", [(1200, 960), (585, 468), (1147, 918), (10, 8)])
def test_random_splits_are_80_20_disjoint_and_deterministic(n: int, n_train: int) -> None:
    all_splits = splits.random_splits(n)
    assert len(all_splits) == 10
    for s in all_splits:
        assert len(s.train) == n_train and len(s.test) == n - n_train
        assert not set(s.train) & set(s.test)
        assert set(s.train) | set(s.test) == set(range(n))
        assert s == splits.random_split(n, s.index)
    assert len({s.test for s in all_splits}) == 10  # different seeds, different splits


def test_split_errors_and_cross_dataset() -> None:
    with pytest.raises(ValueError):
        splits.random_split(1, 0)
    with pytest.raises(ValueError):
        splits.random_split(100, 0, train_fraction=1.0)
    desc = splits.cross_dataset("KoNViD-1k", ["LIVE-VQC", "YouTube-UGC"])
    assert desc == {
        "protocol": "cross-dataset",
        "train": "KoNViD-1k",
        "test": ["LIVE-VQC", "YouTube-UGC"],
    }
    with pytest.raises(ValueError, match="both"):
        splits.cross_dataset("KoNViD-1k", ["KoNViD-1k"])


# ------------------------------------------------------------------------------------------------ metrics
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correlations_agree_with_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=257)
    y = 0.6 * x + rng.normal(size=257)
    xt, yt = np.round(x * 2), np.round(y)  # with ties
    for a, b in ((x, y), (xt, yt)):
        assert metrics.srocc(a, b) == pytest.approx(scipy.stats.spearmanr(a, b)[0], abs=1e-12)
        assert metrics.krcc(a, b) == pytest.approx(scipy.stats.kendalltau(a, b)[0], abs=1e-12)
        assert metrics.pearson(a, b) == pytest.approx(scipy.stats.pearsonr(a, b)[0], abs=1e-12)
        assert metrics.plcc(a, b, fit=False) == pytest.approx(scipy.stats.pearsonr(a, b)[0], abs=1e-12)
    assert np.array_equal(metrics.rankdata(xt), scipy.stats.rankdata(xt))
    assert metrics.krcc(x, y, block=10) == pytest.approx(metrics.krcc(x, y))


def test_logistic_fit_recovers_known_parameters() -> None:
    x = np.linspace(-2.0, 3.0, 300)
    true = (4.6, 1.3, 0.4, 0.55)
    y = metrics.logistic4(x, *true) + np.random.default_rng(0).normal(0, 0.01, x.size)
    fit = metrics.fit_logistic(x, y)
    assert fit.method == "logistic"
    b1, b2, b3, b4 = fit.params
    assert (b1, b2, b3, abs(b4)) == pytest.approx(true, rel=0.03, abs=0.02)
    # PLCC after the fit is higher than on the raw, non-linear predictions; RMSE is near the noise
    assert metrics.plcc(x, y) > metrics.plcc(x, y, fit=False)
    assert metrics.rmse(x, y) == pytest.approx(0.01, rel=0.2)


def test_logistic_fit_handles_negative_correlation_and_falls_back() -> None:
    x = np.linspace(0, 1, 50)
    y = 5 - 4 * x
    assert metrics.plcc(x, y) == pytest.approx(1.0, abs=1e-3)  # the fit maps a decreasing relation too
    fit = metrics.fit_logistic(np.zeros(5), np.arange(5.0))  # constant predictions: no curve to fit
    assert fit.method == "linear" and np.allclose(fit(np.zeros(5)), 2.0)
    res = metrics.all_metrics(np.array([0.1, 0.5, 0.2, 0.9]), np.array([1.0, 3.0, 2.0, 4.0]))
    assert set(res) == {"srocc", "plcc", "krcc", "rmse", "n", "fit"} and res["srocc"] == pytest.approx(1.0)


def test_metric_input_errors() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        metrics.srocc([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        metrics.plcc([1], [1])
    with pytest.raises(ValueError, match="finite"):
        metrics.krcc([1, float("nan")], [1, 2])


@pytest.mark.parametrize("n", [2, 3, 4])
def test_fewer_videos_than_the_logistic_needs_use_the_linear_map(n: int) -> None:
    # curve_fit refuses 3 points for 4 parameters and interpolates 4; both must give the linear map
    x = np.array([0.1, 0.7, 0.4, 0.9][:n])
    y = np.array([1.0, 3.5, 3.0, 4.0][:n])
    res = metrics.all_metrics(x, y)
    assert res["fit"] == "linear" and res["n"] == n
    assert res["plcc"] == pytest.approx(metrics.pearson(x, y))
    assert metrics.fit_logistic(np.append(x, [0.2] * (5 - n)), np.append(y, [2.0] * (5 - n))).method == "logistic"


@pytest.mark.parametrize("n", [29, 30, 31, 957])
def test_training_steps_are_the_same_global_batches_on_any_number_of_processes(n: int) -> None:
    from dvlta_metric_train.train import train_sampler

    batch = 16

    def global_batches(world: int, epoch: int) -> list[set[int]]:
        per_rank = []
        for rank in range(world):
            sampler = train_sampler(list(range(n)), world, rank, seed=3)  # type: ignore[arg-type]
            sampler.set_epoch(epoch)
            order = list(sampler)
            per = batch // world
            per_rank.append([order[k * per : (k + 1) * per] for k in range(len(order) // per)])
        return [set().union(*steps) for steps in zip(*per_rank, strict=True)]

    for epoch in (0, 1):
        one = global_batches(1, epoch)
        assert len(one) == n // batch
        assert all(len(b) == batch for b in one)  # no video repeated to pad a batch
        for world in (2, 4, 8):
            assert global_batches(world, epoch) == one


def test_jobs_with_fewer_than_two_test_videos_are_refused_before_training(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from dvlta_metric_train.jobs import make_jobs

    class Cache(SimpleNamespace):
        def __len__(self) -> int:
            return self.n

    full = Cache(
        name="mine", directory=tmp_path, n=10, available_rows=lambda: list(range(10)), path=lambda r: f"{r}.mp4"
    )
    assert [len(j.tests["mine"][1]) for j in make_jobs(full, [], [0], 0.8)] == [2]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split 0: 1 of its 1 test videos .* at least 2"):
        make_jobs(full, [], [0], 0.9)  # type: ignore[arg-type]
    one = Cache(name="other", directory=tmp_path, n=5, available_rows=lambda: [3])
    with pytest.raises(ValueError, match="holds 1 video.*at least 2"):
        make_jobs(full, [one], [0], 0.8)  # type: ignore[arg-type]
