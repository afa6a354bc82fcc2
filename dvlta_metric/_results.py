"""The ``--output`` results file of ``dvlta-metric score``: locked, checked before it is touched, appended to.

A run on an ``--output`` file goes through :class:`ResultsFile`:

1. :meth:`ResultsFile.open` opens the file (creating it when missing) and takes an exclusive lock on it for the
   whole run, so a second run on the same file stops at once (:class:`OutputLockedError`) instead of scoring
   everything again and appending beside the first.
2. :meth:`ResultsFile.read` parses it, streaming, *before* changing a byte: a file that is not a results file
   written by dvlta-metric (a video, a JSON config, someone's MOS CSV) is refused with its bytes as they were
   (:class:`RefusedOutputError`). Only then is a record left incomplete by an interrupted writer cut off; what
   is complete is decided by parsing (the csv module for CSV, one JSON object per line for JSON Lines), so a
   quoted path holding a newline, or a header cut short, is handled right.
3. :meth:`ResultsFile.start` writes the CSV header of a fresh file; :meth:`ResultsFile.append` writes each row
   with one unbuffered write and, when that fails (full disk, file size limit), cuts the half-written row off
   again and raises :class:`OutputWriteError`: the rows written before are kept and the file stays resumable.

Files are recognised on resume by :func:`resume_key`, the normalised real path, which every row also records
in its ``realpath`` column; the ``path`` column keeps the path as it was given.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import io
import json
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .batch import FileResult

BASE_COLUMNS = ["path", "score", "model", "weights", "error", "warning", "seconds", "realpath"]
"""Columns of every output row; ``--explain`` adds ``weight_<branch>`` columns. ``weights`` says where the
weights came from and the precision, so that a resumed file holds the scores of one model; ``realpath`` is the
file's normalised real path (:func:`resume_key`), by which a resumed run recognises it."""

OUTPUT_ERRORS = "surrogateescape"
"""How results files encode file names that are not valid UTF-8: their bytes are kept as they are, so such a
file gets its row and is recognised again on resume (in JSON it is a ``\\udcXX`` escape)."""

RESUME_COLUMNS = ("path", "score", "model", "error")
"""Columns (CSV) or keys (JSON Lines) every results file has; a file without them is not one."""

JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
"""File name endings that make ``--output`` default to JSON Lines."""

MAX_LINE_BYTES = 1 << 20
"""Longest line a results file may have (a row holds two paths and a message: far less). A longer one means
the file is something else, such as a video, and it is refused without reading it all."""

_HEADER_START = ",".join(BASE_COLUMNS[:7])
"""How every CSV header this tool has written begins (older versions had no ``realpath`` column)."""
_JSON_ROW_START = '{"path": '
"""How every JSON Lines row this tool writes begins."""


class RefusedOutputError(Exception):
    """An ``--output`` file this run must not write to: another format, another model (exit status 2)."""


class OutputLockedError(RefusedOutputError):
    """Another run holds the lock on the ``--output`` file (exit status 2)."""


EXIT_WRITE_ERROR = 74
"""Exit status when results cannot be written (a full disk, a file size limit): ``EX_IOERR`` of sysexits.h."""


class OutputWriteError(Exception):
    """Writing results failed, e.g. on a full disk; the rows written before are kept."""


def resume_key(path: str | os.PathLike[str]) -> str:
    """How a file is recognised in a results file: its normalised real path.

    The same file named relative to another working directory, by an absolute path or through a symbolic link
    has the same key.

    Args:
        path: The file, as given.

    Returns:
        ``os.path.normcase(os.path.realpath(path))``.
    """
    return os.path.normcase(os.path.realpath(path))


def finite_or_error(result: FileResult) -> FileResult:
    """``result``, or an error row instead when its score or a fusion weight is not a finite number.

    A non-finite score is never a success: JSON cannot hold it, and it means the model misbehaved.

    Args:
        result: A file's result.

    Returns:
        ``result`` itself when every number in it is finite, else a copy with no score and an ``error``.
    """
    values = {"score": result.score, **{f"weight_{b}": w for b, w in (result.weights or {}).items()}}
    bad = {k: v for k, v in values.items() if isinstance(v, float) and not math.isfinite(v)}
    if not bad:
        return result
    what = ", ".join(f"{k} = {v}" for k, v in bad.items())
    return dataclasses.replace(
        result,
        score=None,
        weights=None,
        error=f"ValueError: the model gave a non-finite result ({what}); the weights or the configuration are "
        "broken: check them, or score the file with other weights",
    )


@dataclass
class Previous:
    """What a results file already holds.

    Attributes:
        keys: :func:`resume_key` of every file in it.
        failed: Keys of the files whose row is an error.
        models: The ``model`` values of its rows.
        weights: The non-empty ``weights`` values of its rows.
        header: A CSV file's own header (``None`` for JSON Lines or an empty file).
    """

    keys: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    models: set[str] = field(default_factory=set)
    weights: set[str] = field(default_factory=set)
    header: list[str] | None = None

    def add(self, row: dict[str, object]) -> None:
        """Record one row."""
        real = row.get("realpath")
        key = os.path.normcase(real) if isinstance(real, str) and real else resume_key(str(row["path"]))
        self.keys.add(key)
        if row.get("error"):
            self.failed.add(key)
        self.models.add(str(row.get("model")))
        if row.get("weights"):
            self.weights.add(str(row["weights"]))


class ResultsFile:
    """An ``--output`` file, locked for one run; use :meth:`open` as a context manager.

    Args:
        path: The file.
        fmt: ``"csv"`` or ``"json"`` (JSON Lines).
        fd: Its open, locked descriptor (read-write, appending).
        created: Whether this run created the file (it is removed again if the run writes nothing).
    """

    def __init__(self, path: Path, fmt: str, fd: int, created: bool) -> None:
        self.path, self.fmt, self.fd, self.created = path, fmt, fd, created
        self.columns: list[str] = list(BASE_COLUMNS)
        self.complete: int | None = None  # where the complete records end (set by read)

    @classmethod
    def open(cls, path: Path, fmt: str) -> ResultsFile:
        """Open ``path`` (created when missing) and lock it for this run.

        Args:
            path: The ``--output`` file.
            fmt: ``"csv"`` or ``"json"``.

        Returns:
            The locked file; close it (or leave its ``with`` block) to release the lock.

        Raises:
            OutputLockedError: If another run holds the lock.
            RefusedOutputError: If it cannot be opened, or is not a regular file (a FIFO, a device).
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RefusedOutputError(f"cannot create the folder of --output {path}: {err.strerror or err}") from None
        for _ in range(10):
            fd, created = _open(path)
            try:
                _lock(fd, path)
                # an earlier run may have removed the file (it wrote nothing) between our open and our lock
                with contextlib.suppress(FileNotFoundError):
                    if os.path.samestat(os.fstat(fd), os.stat(path)):
                        return cls(path, fmt, fd, created)
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        raise RefusedOutputError(f"--output {path} was replaced each time it was opened: is another program using it?")

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock; a file this run created and left empty is removed."""
        if self.fd < 0:
            return
        try:
            if self.created and os.fstat(self.fd).st_size == 0:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
        finally:
            os.close(self.fd)
            self.fd = -1

    # ------------------------------------------------------------------------------------------ reading
    def read(self) -> Previous:
        """Check that the file is a results file of this tool, and find where its complete records end.

        Nothing is changed here: an incomplete last record (of an interrupted run) is cut off by :meth:`start`,
        once the run has passed every check and is about to write; a refused run leaves the file as it was. A
        file that holds only blank lines, or only the beginning of a CSV header, is then written anew.

        Returns:
            What the file holds.

        Raises:
            RefusedOutputError: If it is not a results file written by dvlta-metric in this run's format (its
                bytes are left as they were).
        """
        with os.fdopen(os.dup(self.fd), "rb") as fh:
            fh.seek(0)
            previous, self.complete = _read_csv(fh, self.path) if self.fmt == "csv" else _read_jsonl(fh, self.path)
        return previous

    # ------------------------------------------------------------------------------------------ writing
    def start(self, columns: list[str], header: list[str] | None) -> None:
        """Get ready to append rows: a fresh CSV file gets its header, an existing one keeps its own.

        Args:
            columns: The columns of this run's rows.
            header: The file's own CSV header (:attr:`Previous.header`), ``None`` when it has none yet.

        Raises:
            OutputWriteError: If the header cannot be written.
        """
        if self.complete is not None and self.complete < os.fstat(self.fd).st_size:
            os.ftruncate(self.fd, self.complete)  # the incomplete last record of an interrupted run
        self.columns = list(header or columns)
        if self.fmt == "csv" and header is None:
            self._write(csv_line(self.columns, dict(zip(self.columns, self.columns))))

    def append(self, row: dict[str, object]) -> None:
        """Append one row with a single write, so that a failure leaves no partial row behind.

        Args:
            row: Column name to value; ``None`` is an empty CSV cell / JSON ``null``.

        Raises:
            OutputWriteError: If the write fails (the file is cut back to the rows before).
            ValueError: If a value is a non-finite float (use :func:`finite_or_error` first).
        """
        if any(isinstance(v, float) and not math.isfinite(v) for v in row.values()):
            raise ValueError(f"refusing to write a non-finite number into {self.path}: {row}")
        if self.fmt == "csv":
            self._write(csv_line(self.columns, row))
        else:
            self._write(json.dumps(row, allow_nan=False) + "\n")

    def _write(self, text: str) -> None:
        data = memoryview(text.encode("utf-8", OUTPUT_ERRORS))
        size = os.fstat(self.fd).st_size
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError as err:
            with contextlib.suppress(OSError):  # keep the file resumable: no half row
                os.ftruncate(self.fd, size)
            name = errno.errorcode.get(err.errno or 0, "")
            raise OutputWriteError(
                f"cannot write to {self.path}: {err.strerror or err}{f' ({name})' if name else ''}"
            ) from None


# ---------------------------------------------------------------------------------------------- helpers
def _open(path: Path) -> tuple[int, bool]:
    """Open ``path`` read-write for appending, creating it if missing; refuse what is not a regular file."""
    flags = os.O_RDWR | os.O_APPEND | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    created = False
    try:
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            fd, created = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666), True
    except FileExistsError:
        return _open(path)  # created by someone else in between: open theirs
    except OSError as err:
        raise RefusedOutputError(f"cannot open --output {path}: {err.strerror or err}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RefusedOutputError(
            f"--output {path} is not a regular file (a pipe, a device, ...): give the name of a file to write the "
            "results to, or leave --output out to print them"
        )
    return fd, created


def _lock(fd: int, path: Path) -> None:
    """Take an exclusive, non-blocking lock on the open file ``fd``; refuse when another run holds it."""
    busy = (
        f"--output {path} is locked by another dvlta-metric run (it holds an exclusive lock on the file): wait "
        "for that run to finish, or use another --output file"
    )
    try:
        import fcntl
    except ImportError:  # Windows: a mandatory lock on one byte far beyond the data
        import msvcrt

        here = os.lseek(fd, 0, os.SEEK_CUR)
        os.lseek(fd, 1 << 30, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            raise OutputLockedError(busy) from None
        finally:
            os.lseek(fd, here, os.SEEK_SET)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OutputLockedError(busy) from None
    except OSError as err:  # a file system without locks
        raise RefusedOutputError(
            f"cannot lock --output {path}: {err.strerror or err}; write it on a local file system"
        ) from None


class _Lines:
    """The lines of a binary file, decoded, counting the bytes handed out and whether the file ended."""

    def __init__(self, fh: IO[bytes], path: Path) -> None:
        self.fh, self.path = fh, path
        self.offset = 0
        self.ended = False
        self.newline = True  # whether the last line handed out ended with a newline

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raw = self.fh.readline(MAX_LINE_BYTES + 1)
        if not raw:
            self.ended = True
            raise StopIteration
        if len(raw) > MAX_LINE_BYTES:
            raise RefusedOutputError(_foreign(self.path, f"it has a line longer than {MAX_LINE_BYTES} bytes"))
        self.offset += len(raw)
        self.newline = raw.endswith(b"\n")
        return raw.decode("utf-8", OUTPUT_ERRORS)


def _foreign(path: Path, why: str, advice: str = "use another --output file") -> str:
    return f"cannot resume from {path}: {why}, so it is not a results file written by dvlta-metric; {advice}"


def _read_csv(fh: IO[bytes], path: Path) -> tuple[Previous, int]:
    """Parse a CSV results file; returns what it holds and the bytes of its complete records."""
    lines = _Lines(fh, path)
    reader = csv.reader(lines)
    previous, complete, number = Previous(), 0, 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            if lines.ended and previous.header is not None:
                break  # a quoted field cut by the end of the file: the incomplete last record
            raise RefusedOutputError(_foreign(path, f"it is not valid CSV ({err})")) from None
        if lines.ended or not lines.newline:
            break  # cut by the end of the file: the incomplete last record
        complete = lines.offset
        number += 1
        if not record:
            continue
        if previous.header is None:
            previous.header = _check_header(record, path)
        elif len(record) != len(previous.header):
            raise RefusedOutputError(
                _foreign(path, f"record {number} has {len(record)} fields where its header has {len(previous.header)}")
            )
        else:
            previous.add(dict(zip(previous.header, record)))
    if previous.header is None:  # blank lines, perhaps the beginning of a header cut short: written anew
        fh.seek(complete)
        tail = fh.read(MAX_LINE_BYTES).decode("utf-8", OUTPUT_ERRORS).strip()
        header = ",".join(BASE_COLUMNS)
        if tail and not (header.startswith(tail) or (tail.startswith(_HEADER_START) and _is_header_text(tail))):
            _check_header(tail.split(","), path)  # says what it lacks
            raise RefusedOutputError(_foreign(path, f"its first line {_shorten(tail)!r} is not a whole CSV record"))
        return previous, 0
    return previous, complete


def _is_header_text(text: str) -> bool:
    return all(c.isalnum() or c in ",_" for c in text)


def _check_header(record: list[str], path: Path) -> list[str]:
    lacking = [c for c in RESUME_COLUMNS if c not in record]
    if lacking:
        shown = _shorten(",".join(record))
        why = f"its CSV header {shown!r} lacks {lacking}"
        if path.suffix.lower() in JSON_SUFFIXES:
            raise RefusedOutputError(_foreign(path, why, "the file name says JSON Lines: drop --format csv"))
        raise RefusedOutputError(_foreign(path, why))
    return record


def _read_jsonl(fh: IO[bytes], path: Path) -> tuple[Previous, int]:
    """Parse a JSON Lines results file; returns what it holds and the bytes of its complete records."""
    lines = _Lines(fh, path)
    previous, complete, number = Previous(), 0, 0
    for line in lines:
        if not lines.newline:
            _check_cut_row(line, path)
            break
        complete, number = lines.offset, number + 1
        if not line.strip():
            continue
        previous.add(_json_row(line, number, path))
    return previous, complete


def _json_row(line: str, number: int, path: Path) -> dict[str, object]:
    try:
        row = json.loads(line)
    except ValueError:
        raise RefusedOutputError(_foreign(path, f"line {number} ({_shorten(line)!r}) is not JSON")) from None
    if not isinstance(row, dict) or not isinstance(row.get("path"), str):
        raise RefusedOutputError(_foreign(path, f"line {number} is not a JSON object with a 'path' string"))
    lacking = [c for c in RESUME_COLUMNS if c not in row]
    if lacking:
        raise RefusedOutputError(_foreign(path, f"line {number} lacks the keys {lacking}"))
    return row


def _check_cut_row(line: str, path: Path) -> None:
    """Refuse a last line without a newline unless it is a row of ours cut short."""
    try:
        json.loads(line)
    except ValueError:
        if _starts_like_a_row(line):
            return  # the beginning of a row: an interrupted write
        raise RefusedOutputError(_foreign(path, f"its last line ({_shorten(line)!r}) is not JSON")) from None
    _json_row(line, 0, path)  # a whole row but its newline: dropped and scored again, like any cut row


def _starts_like_a_row(line: str) -> bool:
    """Whether ``line`` is the beginning of a row as this tool writes it: ``{"path": "...", "score": ...``."""
    if not line.startswith(_JSON_ROW_START):
        return _JSON_ROW_START.startswith(line)
    try:
        _, end = json.JSONDecoder().raw_decode(line, len(_JSON_ROW_START))
    except ValueError:
        return True  # cut inside the path
    rest, then = line[end:], ', "score": '
    return rest.startswith(then) or then.startswith(rest)


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def csv_line(columns: list[str], row: dict[str, object]) -> str:
    """One CSV record (with its newline) of ``row``'s values in ``columns`` order; ``None`` is an empty cell.

    Args:
        columns: The header.
        row: Column name to value; keys not in ``columns`` are left out.

    Returns:
        The line.
    """
    values = {k: "" if v is None else v for k, v in row.items()}
    # the csv module quotes a field holding "\n" but not one holding a lone "\r", which readers take for a line
    # break: such a row is quoted whole
    carriage_return = any(isinstance(v, str) and "\r" in v for v in values.values())
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer,
        columns,
        extrasaction="ignore",
        lineterminator="\n",
        quoting=csv.QUOTE_ALL if carriage_return else csv.QUOTE_MINIMAL,
    )
    writer.writerow(values)
    return buffer.getvalue()
