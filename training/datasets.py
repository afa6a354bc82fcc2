"""Video quality datasets: KoNViD-1k, LIVE-VQC, YouTube-UGC, or your own videos with a CSV of scores.

A dataset is a video root directory plus a label file. The three paper datasets use the label files of the
FAST-VQA / DOVER code bases, copies of which ship in ``training/labels/<dataset>/labels.txt`` (see
``training/labels/SOURCES.txt``). That format has no header and one video per line::

    <path relative to the root>, <duration in s or -1>, <fps or -1>, <MOS>

Your own data is a CSV file with a header that has (at least) the columns ``path`` and ``mos``; paths are
relative to ``--root`` (default: the CSV's folder) or absolute.

Every file is checked up front (:meth:`VQADataset.check`): it is opened with PyAV, must have a video stream
and its first frame must decode. Missing or unreadable videos are reported together (how many, which)
before any feature is computed.

Command line::

    python -m dvlta_metric_train.datasets --dataset konvid --root /data/KoNViD      # check a dataset
    python -m dvlta_metric_train.datasets --csv my_scores.csv --root /data/mine
    python -m dvlta_metric_train.datasets --list                                     # the known datasets
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

LABELS_DIR = Path(__file__).resolve().parent / "labels"
"""Folder of the shipped label files (``<label_dir>/labels.txt`` per dataset)."""

_MAX_LISTED = 20


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset the paper trains and tests on.

    Attributes:
        key: Short name used on the command line (``konvid``, ``livevqc``, ``ytugc``).
        name: Display name.
        label_dir: Folder of its ``labels.txt`` under :data:`LABELS_DIR`.
        rows: Videos in the label file.
        mos_scale: Range of the MOS scale ``(low, high)``.
        where: Where to get the videos.
    """

    key: str
    name: str
    label_dir: str
    rows: int
    mos_scale: tuple[float, float]
    where: str

    @property
    def label_file(self) -> Path:
        """The shipped label file."""
        return LABELS_DIR / self.label_dir / "labels.txt"


DATASETS: dict[str, DatasetSpec] = {
    "konvid": DatasetSpec(
        "konvid", "KoNViD-1k", "KoNViD", 1200, (1.0, 5.0),
        "https://database.mmsp-kn.de/konvid-1k-database.html (root: the folder holding KoNViD_1k_videos/)",
    ),
    "livevqc": DatasetSpec(
        "livevqc", "LIVE-VQC", "LIVE_VQC", 585, (0.0, 100.0),
        "https://live.ece.utexas.edu/research/LIVEVQC/ (root: the folder holding Video/)",
    ),
    "ytugc": DatasetSpec(
        "ytugc", "YouTube-UGC", "YouTubeUGC", 1147, (1.0, 5.0),
        "https://media.withyoutube.com/ (the 20 s clips as MP4; root: the folder holding the .mp4 files)",
    ),
}  # fmt: skip
"""The paper's datasets by key."""

_ALIASES: dict[str, str] = {
    "konvid": "konvid", "konvid1k": "konvid", "konvid-1k": "konvid", "kv1k": "konvid",
    "livevqc": "livevqc", "live-vqc": "livevqc", "live_vqc": "livevqc",
    "ytugc": "ytugc", "youtubeugc": "ytugc", "youtube-ugc": "ytugc", "yt-ugc": "ytugc", "youtube_ugc": "ytugc",
}  # fmt: skip


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` for a dataset name or alias (case-insensitive, e.g. ``KoNViD-1k``).

    Raises:
        ValueError: For an unknown name (the message lists the known ones).
    """
    key = _ALIASES.get(name.strip().lower())
    if key is None:
        raise ValueError(
            f"unknown dataset {name!r}; known: {', '.join(DATASETS)} "
            "(for your own videos use --csv FILE with 'path' and 'mos' columns)"
        )
    return DATASETS[key]


@dataclass(frozen=True)
class VideoItem:
    """One labelled video.

    Attributes:
        path: Path relative to the dataset root (or absolute).
        mos: Mean opinion score.
        duration: Duration in seconds, if the label file gives it.
        fps: Frame rate, if the label file gives it.
    """

    path: str
    mos: float
    duration: float | None = None
    fps: float | None = None


@dataclass(frozen=True)
class Problem:
    """A video that cannot be used.

    Attributes:
        index: Its row in the dataset.
        path: Its file.
        reason: What is wrong.
    """

    index: int
    path: str
    reason: str


@dataclass
class CheckReport:
    """Result of :meth:`VQADataset.check`.

    Attributes:
        dataset: Dataset name.
        total: Videos checked.
        problems: The videos that are missing or unreadable.
    """

    dataset: str
    total: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every video is readable."""
        return not self.problems

    @property
    def bad_indices(self) -> set[int]:
        """Rows of the unusable videos."""
        return {p.index for p in self.problems}

    def summary(self, max_listed: int = _MAX_LISTED) -> str:
        """A report for people: the counts, then the first ``max_listed`` problems."""
        if self.ok:
            return f"{self.dataset}: all {self.total} videos are readable"
        missing = sum(p.reason == "missing" for p in self.problems)
        head = (
            f"{self.dataset}: {len(self.problems)} of {self.total} videos cannot be used "
            f"({missing} missing, {len(self.problems) - missing} unreadable):"
        )
        lines = [head]
        lines += [f"  {p.path}: {p.reason}" for p in self.problems[:max_listed]]
        if len(self.problems) > max_listed:
            lines.append(f"  ... and {len(self.problems) - max_listed} more")
        return "\n".join(lines)


@dataclass
class VQADataset:
    """Videos under a root folder with their mean opinion scores, in label-file order.

    Attributes:
        name: Dataset name (``KoNViD-1k``, ... or the CSV's file name).
        root: Folder that relative paths are resolved against.
        items: The labelled videos.
        labels: The label file they were read from.
    """

    name: str
    root: Path
    items: list[VideoItem]
    labels: Path | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> VideoItem:
        return self.items[index]

    def __iter__(self) -> Iterator[VideoItem]:
        return iter(self.items)

    @property
    def mos(self) -> list[float]:
        """All scores, in order."""
        return [item.mos for item in self.items]

    def file(self, index: int) -> Path:
        """Absolute file of video ``index``."""
        path = Path(self.items[index].path)
        return path if path.is_absolute() else self.root / path

    def check(self, *, workers: int = 8, progress: bool = True) -> CheckReport:
        """Probe every video cheaply (open, find a video stream, decode the first frame).

        Args:
            workers: Probing threads (PyAV releases the GIL while it reads).
            progress: Show a tqdm progress bar.

        Returns:
            The report; ``report.ok`` is true when every video is usable.
        """
        files = [self.file(i) for i in range(len(self))]
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results: Iterator[str | None] = pool.map(probe_video, files)
            if progress:
                from tqdm.auto import tqdm

                results = tqdm(results, total=len(files), desc=f"checking {self.name}", unit="video")
            reasons = list(results)
        problems = [Problem(i, str(files[i]), reason) for i, reason in enumerate(reasons) if reason is not None]
        return CheckReport(self.name, len(files), problems)


def probe_video(path: str | Path) -> str | None:
    """Check that a file is a video whose first frame decodes.

    Args:
        path: The file.

    Returns:
        ``None`` when the file is usable, otherwise the reason (``"missing"`` for a file that does not
        exist).
    """
    import av

    p = Path(path)
    if not p.exists():
        return "missing"
    if p.is_dir():
        return "is a directory"
    try:
        if p.stat().st_size == 0:
            return "empty file (0 bytes)"
        with av.open(str(p), mode="r", metadata_errors="replace") as container:
            if container.format.name == "tty":
                return "a text file, not a video"
            attached = av.stream.Disposition.attached_pic
            streams = [s for s in container.streams.video if not (s.disposition & attached)]
            if not streams:
                return "no video stream"
            for frame in container.decode(streams[0]):
                del frame
                return None
            return "no frame could be decoded"
    except PermissionError:
        return "permission denied"
    except (av.error.FFmpegError, OSError, ValueError) as err:
        return f"unreadable ({type(err).__name__}: {err})"


def _first_listing(seen: dict[str, int], video: str, number: int, where: str) -> None:
    """Record ``video`` as listed on line ``number``; raise if it was listed before."""
    key = os.path.normcase(os.path.normpath(video))
    if key in seen:
        raise ValueError(
            f"{where}: {video!r} is listed again (first on line {seen[key]}); a video listed twice can land "
            "in both the training and the test rows of a split: remove the duplicate row"
        )
    seen[key] = number


def _number(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {what} {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {what} is {text.strip()!r}")
    return value


def read_label_file(path: str | Path) -> list[VideoItem]:
    """Read a FAST-VQA / DOVER label file (``path, duration, fps, MOS`` per line, no header).

    Blank lines are skipped; ``-1`` for the duration or the frame rate means unknown.

    Args:
        path: The label file.

    Returns:
        The videos in file order.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: For a line that does not have four fields, whose numbers do not parse, or that lists a
            video again (the message gives the line number).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file {path} does not exist")
    items: list[VideoItem] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        fields = [f.strip() for f in line.rsplit(",", 3)]
        if len(fields) != 4 or not fields[0]:
            raise ValueError(f"{where}: expected '<path>, <duration or -1>, <fps or -1>, <MOS>', got {line.strip()!r}")
        duration = _number(fields[1], "duration", where)
        fps = _number(fields[2], "fps", where)
        mos = _number(fields[3], "MOS", where)
        _first_listing(seen, fields[0], number, where)
        items.append(VideoItem(fields[0], mos, duration if duration > 0 else None, fps if fps > 0 else None))
    if not items:
        raise ValueError(f"{path}: the label file has no rows")
    return items


def read_csv(path: str | Path) -> list[VideoItem]:
    """Read a CSV of your own scores: a header with ``path`` and ``mos`` columns (others are ignored).

    Args:
        path: The CSV file.

    Returns:
        The videos in file order.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: For a missing column, an empty path, a MOS that is not a number, or a path listed again.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV file {path} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = {c.strip().lower(): c for c in (reader.fieldnames or [])}
        if "path" not in columns or "mos" not in columns:
            raise ValueError(
                f"{path}: the CSV needs a header with the columns 'path' and 'mos' "
                f"(found {list(reader.fieldnames or [])})"
            )
        items = []
        seen: dict[str, int] = {}
        for number, row in enumerate(reader, start=2):
            where = f"{path}:{number}"
            video = (row.get(columns["path"]) or "").strip()
            if not video:
                raise ValueError(f"{where}: empty path")
            _first_listing(seen, video, number, where)
            items.append(VideoItem(video, _number(row.get(columns["mos"]) or "", "mos", where)))
    if not items:
        raise ValueError(f"{path}: the CSV has no rows")
    return items


def load_dataset(
    dataset: str | None = None,
    root: str | Path | None = None,
    *,
    labels: str | Path | None = None,
    csv_file: str | Path | None = None,
) -> VQADataset:
    """A paper dataset (``dataset`` + ``root``) or your own (``csv_file``, optional ``root``).

    Args:
        dataset: ``konvid``, ``livevqc`` or ``ytugc`` (or an alias such as ``KoNViD-1k``).
        root: Video root folder. Required for a paper dataset; for a CSV it defaults to the CSV's folder.
        labels: A label file to use instead of the shipped one (same format).
        csv_file: A CSV with ``path`` and ``mos`` columns (instead of ``dataset``).

    Returns:
        The dataset (nothing is read from the videos yet; call :meth:`VQADataset.check`).

    Raises:
        ValueError: If neither or both of ``dataset`` and ``csv_file`` are given, or ``root`` is missing.
        FileNotFoundError: If the root folder or the label file does not exist.
    """
    if (dataset is None) == (csv_file is None):
        raise ValueError("give either a dataset name (--dataset) or a CSV file (--csv), not both or neither")
    if csv_file is not None:
        csv_path = Path(csv_file)
        items = read_csv(csv_path)
        base = Path(root) if root is not None else csv_path.resolve().parent
        if not base.is_dir():
            raise FileNotFoundError(f"video root {base} is not a directory")
        return VQADataset(csv_path.stem, base, items, csv_path)
    spec = dataset_spec(str(dataset))
    if root is None:
        raise ValueError(f"{spec.name}: give the folder holding its videos with --root ({spec.where})")
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"{spec.name}: video root {base} is not a directory ({spec.where})")
    label_path = Path(labels) if labels is not None else spec.label_file
    return VQADataset(spec.name, base, read_label_file(label_path), label_path)


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--dataset``, ``--csv``, ``--root`` and ``--labels`` to a command line."""
    group = parser.add_argument_group("dataset")
    group.add_argument("--dataset", help=f"a paper dataset: {', '.join(DATASETS)}")
    group.add_argument("--csv", dest="csv_file", help="your own data: a CSV with 'path' and 'mos' columns")
    group.add_argument("--root", help="folder holding the videos (for --csv: default the CSV's folder)")
    group.add_argument("--labels", help="label file to use instead of the shipped one")


def dataset_from_arguments(args: argparse.Namespace) -> VQADataset:
    """The dataset named by :func:`add_dataset_arguments`'s options."""
    return load_dataset(args.dataset, args.root, labels=args.labels, csv_file=args.csv_file)


def main(argv: Sequence[str] | None = None) -> int:
    """Check a dataset: report every missing or unreadable video.

    Returns:
        0 when every video is readable, 1 when some are not, 2 for a usage error.
    """
    parser = argparse.ArgumentParser(prog="python -m dvlta_metric_train.datasets", description=main.__doc__)
    add_dataset_arguments(parser)
    parser.add_argument("--workers", type=int, default=8, help="probing threads (default 8)")
    parser.add_argument("--list", action="store_true", help="list the known datasets and exit")
    args = parser.parse_args(argv)
    if args.list:
        for spec in DATASETS.values():
            print(f"{spec.key:8s} {spec.name:12s} {spec.rows:5d} videos, MOS {spec.mos_scale}: {spec.where}")
        return 0
    try:
        data = dataset_from_arguments(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = data.check(workers=args.workers)
    print(report.summary(max_listed=len(report.problems) or 1))
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
