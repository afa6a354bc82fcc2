"""Rate-quality tooling: score a bitrate ladder of encodes, compare codecs by BD-rate, check monotonicity.

An *encode* is a video file with the *source* it was encoded from, the *codec* group it belongs to (a codec, a
preset, an encoder build: any label) and its bitrate. :func:`read_manifest` reads them from a CSV or JSON file,
:func:`score_encodes` scores them with :meth:`~dvlta_metric.DVLTAVQA.score_files` (a file that fails is an error
row and stays out of the curves), and then:

* :func:`bd_rate` / :func:`bd_quality` compare two rate-quality curves (Bjontegaard, VCEG-M33), and
  :func:`bd_table` does so for every ordered pair of codec groups, per source and pooled;
* :func:`monotonicity` checks that, for one source and one codec group, the encode with more bits scores higher;
* :func:`plot` draws the curves (matplotlib).

Which scale enters the BD computation (:data:`SCALES`): ``"score"`` (default), the model's score ``Q`` in
``(0, 1)`` as users report it, so BD-quality reads in score units; or ``"logit"``, ``log(Q / (1 - Q))``, which
is the difference of the two scaled prompt similarities ``S+ - S-`` of eqs. 12-13 (``Q`` is their softmax) and
so does not saturate near 0 and 1 the way ``Q`` does. Rates enter as ``log10`` of the video stream's bitrate in
kbit/s, as in VCEG-M33.

The BD integrals are computed by the ``bjontegaard`` package (FAU-LMS, BSD-3-Clause; ``pip install
"dvlta-metric[rd]"``) with PCHIP interpolation by default, the interpolation of the JCT-VC / JVET common test
condition spreadsheets (JCTVC-L1100, JVET-T2010): its PCHIP result equals the JCTVC-E137 reference values that
Netflix's VMAF tests pin (``python/test/bd_rate_calculator_test.py``) to 12 digits, so it is used as it is;
this module only sorts and checks the points, and turns the package's warnings into errors a user can act on.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av

from .video_io import _check_file, _declared_duration, _open

if TYPE_CHECKING:
    from .model import DVLTAVQA

__all__ = [
    "METHODS",
    "REQUIRED_COLUMNS",
    "SCALES",
    "Encode",
    "EncodeResult",
    "bd_quality",
    "bd_rate",
    "bd_table",
    "container_bitrate_kbps",
    "monotonicity",
    "plot",
    "read_manifest",
    "score_encodes",
    "to_scale",
]

REQUIRED_COLUMNS = ("path", "source", "codec")
"""Columns (CSV) or keys (JSON) every manifest row must have; ``bitrate_kbps`` is optional."""

SCALES = ("score", "logit")
"""Scales the BD computation can use: the score ``Q`` itself, or ``log(Q / (1 - Q))`` (see the module)."""

METHODS = ("pchip", "akima", "cubic")
"""Interpolations of the ``bjontegaard`` package: ``pchip`` (JCT-VC / JVET CTC spreadsheets, the default),
``akima`` (Herglotz et al., ICIP 2022), ``cubic`` (one cubic polynomial fitted to all points, VCEG-M33's
original; needs 4 points)."""

_KNOWN = (*REQUIRED_COLUMNS, "bitrate_kbps")
_OUTPUT_FIELDS = ("bitrate_from", "score", "value", "error", "warning", "model")
_EXTRA = 'pip install "dvlta-metric[rd]"'


@dataclass(frozen=True)
class Encode:
    """One encode of a ladder.

    Attributes:
        path: The video file.
        source: Which source video it was encoded from.
        codec: Its codec group (codec, preset, encoder: any label); one curve per group.
        bitrate_kbps: Its video bitrate in kbit/s, or ``None`` to read it from the file
            (:func:`container_bitrate_kbps`).
        extra: Other manifest columns (such as ``crf``), copied to the result rows.
    """

    path: str
    source: str
    codec: str
    bitrate_kbps: float | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class EncodeResult:
    """An encode with its score.

    Attributes:
        encode: The encode.
        bitrate_kbps: Its bitrate in kbit/s (from the manifest or the file), ``None`` when it failed.
        bitrate_from: ``"manifest"`` or ``"container"``.
        score: The model's score in ``(0, 1)``, ``None`` when it failed.
        error: ``"<ExceptionType>: <message>"`` when the file could not be scored or its bitrate read.
        warning: What :class:`~dvlta_metric.FileResult` warned about (a truncated file, ...).
        model: Name of the model that scored it.
    """

    encode: Encode
    bitrate_kbps: float | None
    bitrate_from: str
    score: float | None
    error: str | None = None
    warning: str | None = None
    model: str = ""

    @property
    def ok(self) -> bool:
        """Whether the encode has a score and a bitrate (only those enter curves and checks)."""
        return self.error is None and self.score is not None and self.bitrate_kbps is not None

    def to_dict(self, scale: str = "score") -> dict[str, object]:
        """A flat row: ``path``, ``source``, ``codec``, ``bitrate_kbps``, ``bitrate_from``, ``score``,
        ``value`` (the score on ``scale``), ``error``, ``warning``, ``model``, then the manifest's other columns."""
        value = None
        if self.ok and self.score is not None:
            with contextlib.suppress(ValueError):  # a score of exactly 0 or 1 has no logit
                value = to_scale([self.score], scale)[0]
        e = self.encode
        row: dict[str, object] = {"path": e.path, "source": e.source, "codec": e.codec}
        row |= {"bitrate_kbps": self.bitrate_kbps, "bitrate_from": self.bitrate_from, "score": self.score}
        row |= {"value": value, "error": self.error, "warning": self.warning, "model": self.model}
        return row | e.extra


# ---------------------------------------------------------------------------------------------- manifest
def read_manifest(path: str | os.PathLike[str]) -> list[Encode]:
    """Read the encodes of a ladder from a CSV or JSON manifest.

    A CSV manifest has a header row with the columns ``path``, ``source``, ``codec`` and optionally
    ``bitrate_kbps``; a JSON manifest (``.json``) is a list of objects with those keys. An empty or missing
    ``bitrate_kbps`` is read from the file later (:func:`container_bitrate_kbps`). Relative paths are relative
    to the manifest's folder. Other columns (``crf``, ``preset``, ...) are kept in :attr:`Encode.extra`.

    Args:
        path: The manifest file.

    Returns:
        The encodes, in the manifest's order.

    Raises:
        ValueError: The manifest cannot be read, lacks a column, has an empty field, a bitrate that is not a
            positive number, the same file twice, or no rows. The message names the row.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"manifest {p}: cannot be read ({err})") from None
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"manifest {p}: not valid JSON ({err})") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError(f"manifest {p}: expected a JSON list of objects with keys {list(REQUIRED_COLUMNS)}")
        rows = [(f"item {i}", {str(k): v for k, v in r.items()}) for i, r in enumerate(data)]
        keys = set().union(*(r.keys() for _, r in rows)) if rows else set()
        missing = [c for c in REQUIRED_COLUMNS if any(c not in r for _, r in rows)]
    else:
        reader = csv.DictReader(text.splitlines())
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        keys = set(header)
        if not missing:
            rows = [(f"line {reader.line_num}", dict(r)) for r in reader]
    if missing:
        raise ValueError(
            f"manifest {p}: lacks the column(s) {missing}; every row needs {list(REQUIRED_COLUMNS)} "
            "(and optionally bitrate_kbps)"
        )
    clash = sorted(keys & set(_OUTPUT_FIELDS))
    if clash:
        raise ValueError(f"manifest {p}: the column(s) {clash} are written by the tool; rename them")
    if not rows:
        raise ValueError(f"manifest {p}: has no encodes")
    encodes, seen = [], {}
    for where, row in rows:
        if None in row:  # csv.DictReader puts cells beyond the header under None
            raise ValueError(f"manifest {p}, {where}: more cells than the header has columns")
        values = {c: "" if row.get(c) is None else str(row[c]).strip() for c in REQUIRED_COLUMNS}
        empty = [c for c, v in values.items() if not v]
        if empty:
            raise ValueError(f"manifest {p}, {where}: empty {empty}")
        file = values["path"] if os.path.isabs(values["path"]) else os.path.join(p.parent, values["path"])
        key = os.path.normpath(file)
        if key in seen:
            raise ValueError(f"manifest {p}, {where}: {values['path']} is listed twice (first at {seen[key]})")
        seen[key] = where
        encodes.append(
            Encode(
                path=file,
                source=values["source"],
                codec=values["codec"],
                bitrate_kbps=_bitrate(row.get("bitrate_kbps"), f"manifest {p}, {where}"),
                extra={k: "" if v is None else str(v) for k, v in row.items() if k not in _KNOWN},
            )
        )
    return encodes


def _bitrate(value: object, where: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        rate = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: bitrate_kbps must be a number of kbit/s, got {value!r}") from None
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"{where}: bitrate_kbps must be above 0 and finite, got {value!r}")
    return rate


def container_bitrate_kbps(path: str | os.PathLike[str]) -> float:
    """The video stream's bitrate in kbit/s, measured from the file: the bytes of its packets over its duration.

    Only the video stream counts (not audio, not the container's overhead), measured the same way for every
    container, so that encodes in different containers compare (ours; the container's own ``bit_rate`` field
    is missing in some formats and includes audio in others). The duration is the one the file declares for
    the video stream, else the span of its timestamps. The file is opened as :func:`~dvlta_metric.read_video`
    opens it: local files only, video containers only.

    Args:
        path: A video file.

    Returns:
        The bitrate in kbit/s.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a video file, or its duration cannot be told (give ``bitrate_kbps`` in the manifest).
    """
    p, name = Path(path), str(path)
    _check_file(p, name)
    container, stream = _open(p, name)
    try:
        size, first, last = 0, None, None
        for packet in container.demux(stream):
            if not packet.size:
                continue  # the demuxer's final empty packet
            size += packet.size
            if packet.pts is not None:
                end = packet.pts + (packet.duration or 0)
                first = packet.pts if first is None else min(first, packet.pts)
                last = end if last is None else max(last, end)
        duration = _declared_duration(container, stream)
        if not duration and first is not None and last is not None and stream.time_base is not None:
            duration = float((last - first) * stream.time_base)
    except av.error.FFmpegError as err:
        raise ValueError(f"{name}: cannot read the video stream's packets ({err})") from None
    finally:
        container.close()
    if not duration or duration <= 0 or size == 0:
        raise ValueError(f"{name}: cannot tell the video's duration or size; give its bitrate_kbps in the manifest")
    return size * 8 / duration / 1000


# ---------------------------------------------------------------------------------------------- scoring
def score_encodes(
    model: DVLTAVQA,
    encodes: Sequence[Encode],
    *,
    batch_size: int = 1,
    num_workers: int = 2,
    progress: bool = False,
    max_megapixels: float | None = None,
    decode_timeout: float | None = None,
) -> list[EncodeResult]:
    """Score encodes with :meth:`~dvlta_metric.DVLTAVQA.score_files` and attach their bitrates.

    A file that cannot be scored, or whose bitrate cannot be read, gives a result with ``error`` set; the
    others go on.

    Args:
        model: The model.
        encodes: The encodes (:func:`read_manifest`).
        batch_size: Videos per model call.
        num_workers: Decoding threads.
        progress: Show a progress bar on stderr.
        max_megapixels: Pixel budget of one decoded video (see :func:`~dvlta_metric.read_video`).
        decode_timeout: Most seconds one file's decoding may take.

    Returns:
        One result per encode, in order.
    """
    encodes = list(encodes)
    for e in encodes:
        if not isinstance(e, Encode):
            raise TypeError(f"encodes must be Encode objects (see read_manifest), got {type(e).__name__}")
    results = model.score_files(
        [e.path for e in encodes],
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        max_megapixels=max_megapixels,
        decode_timeout=decode_timeout,
    )
    out = []
    for encode, result in zip(encodes, results):
        origin = "manifest" if encode.bitrate_kbps is not None else "container"
        row = EncodeResult(encode, encode.bitrate_kbps, origin, result.score, result.error, result.warning)
        row.model = result.model
        if row.error is None and (row.score is None or not math.isfinite(row.score)):
            row.score, row.error = None, f"ValueError: the model gave a score that is not a number ({result.score})"
        if row.error is None and row.bitrate_kbps is None:
            try:
                row.bitrate_kbps = container_bitrate_kbps(encode.path)
            except (OSError, ValueError) as err:
                row.error = f"{type(err).__name__}: {err}"
        if row.error is not None:
            row.score = None
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------- BD
def to_scale(scores: Iterable[float], scale: str = "score") -> list[float]:
    """Scores on the scale the BD computation uses (:data:`SCALES`).

    Args:
        scores: Scores in ``(0, 1)``.
        scale: ``"score"`` (unchanged) or ``"logit"`` (``log(q / (1 - q))``).

    Returns:
        The values.

    Raises:
        ValueError: An unknown scale, or a score of exactly 0 or 1 on the ``logit`` scale (infinite there).
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")
    values = [float(q) for q in scores]
    if scale == "score":
        return values
    bad = [q for q in values if not 0.0 < q < 1.0]
    if bad:
        raise ValueError(f"the logit scale needs scores strictly between 0 and 1, got {bad[0]!r}; use scale='score'")
    return [math.log(q / (1.0 - q)) for q in values]


def _bjontegaard(method: str) -> Any:
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    try:
        import bjontegaard
    except ImportError:
        raise ImportError(f"BD-rate and BD-quality need the bjontegaard package: {_EXTRA}") from None
    return bjontegaard


def _curve(rates: Sequence[float], quality: Sequence[float], name: str, method: str) -> tuple[list[float], list[float]]:
    """The points sorted by rate, after checking them."""
    r, q = [float(x) for x in rates], [float(x) for x in quality]
    if len(r) != len(q):
        raise ValueError(f"curve {name}: {len(r)} rates but {len(q)} quality values; give one of each per encode")
    need = 4 if method == "cubic" else 2
    if len(r) < need:
        raise ValueError(f"curve {name}: {len(r)} points; {method!r} interpolation needs at least {need}")
    if not all(math.isfinite(x) for x in r + q) or min(r) <= 0:
        raise ValueError(f"curve {name}: rates must be positive and finite, quality values finite")
    pairs = sorted(zip(r, q))
    if any(a[0] == b[0] for a, b in itertools.pairwise(pairs)):
        raise ValueError(f"curve {name}: two points have the same rate; give one point per rate")
    return [a for a, _ in pairs], [b for _, b in pairs]


def _overlap(a: Sequence[float], b: Sequence[float], what: str) -> None:
    if min(max(a), max(b)) <= max(min(a), min(b)):
        raise ValueError(
            f"the curves do not overlap in {what} (A spans {min(a):.6g} to {max(a):.6g}, B {min(b):.6g} to "
            f"{max(b):.6g}): there is nothing to compare"
        )


def bd_rate(
    rates_a: Sequence[float],
    quality_a: Sequence[float],
    rates_b: Sequence[float],
    quality_b: Sequence[float],
    *,
    method: str = "pchip",
) -> float:
    """Bjontegaard delta rate: the average bitrate difference of curve B against anchor A at equal quality.

    ``log10`` of the rate is interpolated as a function of quality for each curve (VCEG-M33), integrated over
    the quality interval both curves span, and the mean difference turned into a percentage: ``-10`` means B
    needs 10 % fewer bits than A for the same quality. Computed by ``bjontegaard.bd_rate`` (see the module).

    Args:
        rates_a: Bitrates of anchor A (any unit, the same for both curves).
        quality_a: Quality of each point of A (on the scale of your choice, :func:`to_scale`).
        rates_b: Bitrates of B.
        quality_b: Quality of each point of B.
        method: Interpolation (:data:`METHODS`).

    Returns:
        The BD-rate in percent.

    Raises:
        ValueError: Too few points, rates that are not positive, two points at one rate, a curve whose quality
            does not rise with its rate (rate is then no function of quality), or curves whose quality ranges
            do not overlap.
        ImportError: The ``bjontegaard`` package is missing (``pip install "dvlta-metric[rd]"``).
    """
    bd = _bjontegaard(method)
    ra, qa = _curve(rates_a, quality_a, "A", method)
    rb, qb = _curve(rates_b, quality_b, "B", method)
    for name, q in (("A", qa), ("B", qb)):
        if any(y <= x for x, y in itertools.pairwise(q)):
            raise ValueError(
                f"curve {name}: its quality does not rise with its rate ({q}), so the rate at a given quality is "
                "not defined; BD-rate needs curves that rise (bd_quality does not)"
            )
    _overlap(qa, qb, "quality")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(bd.bd_rate(ra, qa, rb, qb, method=method, require_matching_points=False, min_overlap=0))


def bd_quality(
    rates_a: Sequence[float],
    quality_a: Sequence[float],
    rates_b: Sequence[float],
    quality_b: Sequence[float],
    *,
    method: str = "pchip",
) -> float:
    """Bjontegaard delta quality (BD-PSNR's analogue): the average quality difference of B against A at equal rate.

    Quality is interpolated as a function of ``log10`` rate for each curve and integrated over the rate
    interval both span; positive means B is better at the same bitrate. Computed by ``bjontegaard.bd_psnr``.

    Args:
        rates_a: Bitrates of anchor A (any unit, the same for both curves).
        quality_a: Quality of each point of A.
        rates_b: Bitrates of B.
        quality_b: Quality of each point of B.
        method: Interpolation (:data:`METHODS`).

    Returns:
        The mean quality difference, in the unit of the quality values.

    Raises:
        ValueError: Too few points, rates that are not positive, two points at one rate, or curves whose rate
            ranges do not overlap.
        ImportError: The ``bjontegaard`` package is missing (``pip install "dvlta-metric[rd]"``).
    """
    bd = _bjontegaard(method)
    ra, qa = _curve(rates_a, quality_a, "A", method)
    rb, qb = _curve(rates_b, quality_b, "B", method)
    _overlap(ra, rb, "rate")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(bd.bd_psnr(ra, qa, rb, qb, method=method, require_matching_points=False, min_overlap=0))


def _groups(results: Iterable[EncodeResult]) -> dict[tuple[str, str], list[EncodeResult]]:
    """The scored encodes by ``(source, codec)``, each sorted by bitrate."""
    groups: dict[tuple[str, str], list[EncodeResult]] = {}
    for r in results:
        if r.ok:
            groups.setdefault((r.encode.source, r.encode.codec), []).append(r)
    return {k: sorted(v, key=lambda r: (r.bitrate_kbps, r.encode.path)) for k, v in sorted(groups.items())}


def bd_table(results: Iterable[EncodeResult], *, scale: str = "score", method: str = "pchip") -> dict[str, object]:
    """BD-rate and BD-quality for every ordered pair of codec groups, per source and pooled over sources.

    Only encodes that were scored count. A pair that cannot be computed for a source (a curve too short, not
    rising, no overlap) gets ``None`` with the reason. The pooled values are the means of the per-source values
    that could be computed (as common test conditions average per-sequence BD-rates), with their number.

    Args:
        results: Scored encodes (:func:`score_encodes`).
        scale: Quality scale (:data:`SCALES`).
        method: Interpolation (:data:`METHODS`).

    Returns:
        ``{"scale", "method", "pairs": [{"anchor", "test", "source", "bd_rate_percent", "bd_quality",
        "bd_rate_error", "bd_quality_error"}, ...], "pooled": [{"anchor", "test", "bd_rate_percent",
        "bd_quality", "sources_rate", "sources_quality"}, ...]}``.
    """
    to_scale([], scale)
    _bjontegaard(method)
    groups = _groups(results)
    codecs = sorted({c for _, c in groups})
    sources = sorted({s for s, _ in groups})
    pairs, pooled = [], []
    for anchor, test in itertools.permutations(codecs, 2):
        found: dict[str, list[float]] = {"bd_rate_percent": [], "bd_quality": []}
        for source in sources:
            if (source, anchor) not in groups or (source, test) not in groups:
                continue
            a, b = groups[source, anchor], groups[source, test]
            entry: dict[str, object] = {"anchor": anchor, "test": test, "source": source}
            for key, fn in (("bd_rate_percent", bd_rate), ("bd_quality", bd_quality)):
                try:
                    value = fn(
                        [r.bitrate_kbps for r in a],  # type: ignore[misc]
                        to_scale([r.score for r in a], scale),  # type: ignore[misc]
                        [r.bitrate_kbps for r in b],  # type: ignore[misc]
                        to_scale([r.score for r in b], scale),  # type: ignore[misc]
                        method=method,
                    )
                    entry[key], entry[key.split("_percent")[0] + "_error"] = value, None
                    found[key].append(value)
                except ValueError as err:
                    entry[key], entry[key.split("_percent")[0] + "_error"] = None, str(err)
            pairs.append(entry)
        pooled.append(
            {
                "anchor": anchor,
                "test": test,
                "bd_rate_percent": _mean(found["bd_rate_percent"]),
                "bd_quality": _mean(found["bd_quality"]),
                "sources_rate": len(found["bd_rate_percent"]),
                "sources_quality": len(found["bd_quality"]),
            }
        )
    return {"scale": scale, "method": method, "pairs": pairs, "pooled": pooled}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


# ---------------------------------------------------------------------------------------------- monotonicity
def monotonicity(results: Iterable[EncodeResult]) -> dict[str, object]:
    """Check that more bits score higher: for each source and codec group, the encodes sorted by bitrate.

    Every adjacent pair of a group's encodes (sorted by bitrate; pairs at the same bitrate are skipped) is
    *ordered* when the encode with more bits has the strictly higher score, and a *violation* otherwise. Pairs
    across codec groups are not compared: another codec at a higher bitrate may rightly look worse.

    Args:
        results: Scored encodes (:func:`score_encodes`); failed ones are left out.

    Returns:
        ``{"pairs": n, "ordered": k, "share": k / n (None when n is 0), "violations": [{"source", "codec",
        "lower": {"path", "bitrate_kbps", "score"}, "higher": {...}}, ...]}``.
    """
    pairs = ordered = 0
    violations = []
    for (source, codec), group in _groups(results).items():
        for lo, hi in itertools.pairwise(group):
            if lo.bitrate_kbps == hi.bitrate_kbps:
                continue
            pairs += 1
            if hi.score > lo.score:  # type: ignore[operator]
                ordered += 1
            else:
                point = {"path": lo.encode.path, "bitrate_kbps": lo.bitrate_kbps, "score": lo.score}
                higher = {"path": hi.encode.path, "bitrate_kbps": hi.bitrate_kbps, "score": hi.score}
                violations.append({"source": source, "codec": codec, "lower": point, "higher": higher})
    return {"pairs": pairs, "ordered": ordered, "share": ordered / pairs if pairs else None, "violations": violations}


# ---------------------------------------------------------------------------------------------- plot
def plot(
    results: Iterable[EncodeResult],
    path: str | os.PathLike[str],
    *,
    by: str = "source",
    scale: str = "score",
    metadata: dict[str, str] | None = None,
) -> None:
    """Draw the rate-quality curves to a PNG file: one curve per codec group, log-scaled bitrate axis.

    Args:
        results: Scored encodes; failed ones are left out.
        path: The PNG file to write.
        by: ``"source"``: one panel per source; ``"pooled"``: all sources in one panel (one colour per codec
            group, one line per source).
        scale: Quality axis (:data:`SCALES`).
        metadata: PNG text entries to add (the CLI marks its files with them).

    Raises:
        ValueError: An unknown ``by`` or ``scale``, or no scored encode.
        ImportError: matplotlib is missing (``pip install "dvlta-metric[rd]"``).
    """
    if by not in ("source", "pooled"):
        raise ValueError(f"by must be 'source' or 'pooled', got {by!r}")
    to_scale([], scale)
    groups = _groups(results)
    if not groups:
        raise ValueError("no scored encode to plot")
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(f"the RD plot needs matplotlib: {_EXTRA}") from None
    sources = sorted({s for s, _ in groups}) if by == "source" else ["all sources"]
    codecs = sorted({c for _, c in groups})
    colours = {c: f"C{i % 10}" for i, c in enumerate(codecs)}
    fig, axes = plt.subplots(1, len(sources), figsize=(4.5 * len(sources), 3.6), squeeze=False)
    try:
        for ax, panel in zip(axes[0], sources):
            labelled = set()
            for (source, codec), group in groups.items():
                if by == "source" and source != panel:
                    continue
                label = None if codec in labelled else codec
                labelled.add(codec)
                values = to_scale([r.score for r in group], scale)  # type: ignore[misc]
                ax.plot([r.bitrate_kbps for r in group], values, "o-", color=colours[codec], label=label)
            ax.set_xscale("log")
            ax.set_title(panel)
            ax.set_xlabel("bitrate (kbit/s)")
            ax.set_ylabel("score" if scale == "score" else "logit(score)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100, metadata=metadata or {})
    finally:
        plt.close(fig)
