"""``--output DIR.parquet``: results as a directory of Parquet part files, written atomically, resumable.

The directory holds only what this tool writes:

* ``part-<time>-<random>.parquet``: a batch of rows, the columns of the CSV output
  (:data:`~dvlta_metric._results.BASE_COLUMNS`, plus ``weight_<branch>`` with ``--explain``). Each part is
  written under a hidden temporary name (``.part-....parquet.tmp``), flushed to disk, then renamed: a reader
  or a resumed run sees a whole part or none, never half of one;
* ``.dvlta-metric.lock``: the lock a run holds on the directory (as on a CSV file, a second run stops at once).

Readers take the directory as it is: ``pandas.read_parquet(DIR)``, DuckDB ``read_parquet('DIR/*.parquet')``,
Spark ``spark.read.parquet(DIR)`` (pyarrow and Spark skip names starting with ``.`` or ``_``). A directory
holding anything else is refused before anything in it is touched; only the temporary files of an interrupted
run of this tool are removed.

Rows are buffered and written as one part when :attr:`ParquetResults.rows_per_part` rows are waiting, when the
oldest has waited :attr:`ParquetResults.flush_seconds`, and when the run ends (also when it is interrupted). A
process that is killed loses only the rows not yet in a part; a rerun scores those files again. Strings are
stored as UTF-8: a file name that is not valid UTF-8 has each such byte written as ``\\xNN``, in ``path`` and in
``realpath`` alike, so that it is recognised on resume. pyarrow is imported when a directory is opened (it
comes with the ``ray`` extra).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

from ._results import (
    BASE_COLUMNS,
    RESUME_COLUMNS,
    OutputWriteError,
    Previous,
    RefusedOutputError,
    _lock,
)

PARQUET_SUFFIX = ".parquet"
"""An ``--output`` ending in this is a Parquet directory."""

PART_PREFIX = "part-"
TEMP_PREFIX = ".part-"
TEMP_SUFFIX = ".parquet.tmp"
LOCK_NAME = ".dvlta-metric.lock"

ROWS_PER_PART = 1000
"""Default rows per part file."""

FLUSH_SECONDS = 10.0
"""Default age of the oldest waiting row at which the next row to arrive writes the part. The check runs when a row
arrives: rows wait longer while no result comes (a slow decode)."""

FLOAT_COLUMNS = frozenset({"score", "seconds", "spread", "ci_low", "ci_high", "mos"})
"""Columns stored as float64 (``weight_<branch>`` too); the others are strings. ``spread``, ``ci_low``, ``ci_high``
(``--views``) and ``mos`` (``--scale mos``) are empty for a file that failed."""


def import_pyarrow() -> Any:
    """``pyarrow`` and ``pyarrow.parquet``, or an ``ImportError`` that says how to install them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as err:
        raise ImportError(
            f"Parquet output needs pyarrow ({err}): pip install 'dvlta-metric[ray]' (or pip install pyarrow)"
        ) from None
    return pyarrow


def utf8_text(text: str) -> str:
    """``text`` as valid UTF-8 text: the ``surrogateescape`` bytes of a file name become ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_ours(name: str) -> bool:
    """Whether a directory entry is one this tool writes (a part, a temporary part, the lock)."""
    return name == LOCK_NAME or _is_part(name) or _is_temp(name)


def _is_part(name: str) -> bool:
    return name.startswith(PART_PREFIX) and name.endswith(PARQUET_SUFFIX)


def _is_temp(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


class ParquetResults:
    """An ``--output`` Parquet directory, locked for one run; use :meth:`open` as a context manager.

    It has the methods of :class:`~dvlta_metric._results.ResultsFile` that a run uses (:meth:`read`,
    :meth:`start`, :meth:`append`, :meth:`close`), plus :meth:`flush`.

    Args:
        path: The directory.
        fd: Its open, locked lock file.
        created: Whether this run created the directory (removed again if the run writes nothing).
        rows_per_part: Rows per part file.
        flush_seconds: Most seconds a row waits in memory before its part is written.
    """

    fmt = "parquet"

    def __init__(
        self,
        path: Path,
        fd: int,
        created: bool,
        rows_per_part: int = ROWS_PER_PART,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self.path, self.fd, self.created = path, fd, created
        self.rows_per_part, self.flush_seconds = rows_per_part, flush_seconds
        self.columns: list[str] = list(BASE_COLUMNS)
        self.parts_written = 0
        self._rows: list[dict[str, object]] = []
        self._oldest: float | None = None

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], rows_per_part: int = ROWS_PER_PART, flush_seconds: float = FLUSH_SECONDS
    ) -> ParquetResults:
        """Check ``path`` (created when missing), lock it for this run, remove temporary parts left by a killed run.

        Args:
            path: The directory.
            rows_per_part: Rows per part file (at least 1).
            flush_seconds: Most seconds a row waits before its part is written (0: a part per :meth:`append`).

        Returns:
            The locked directory; close it (or leave its ``with`` block) to write what is buffered and unlock.

        Raises:
            ImportError: pyarrow is not installed.
            ValueError: ``rows_per_part`` < 1 or ``flush_seconds`` not a number >= 0.
            RefusedOutputError: ``path`` is a file, or a directory holding files this tool did not write (nothing
                is changed), or cannot be created.
            OutputLockedError: Another run holds the lock.
        """
        import_pyarrow()
        if isinstance(rows_per_part, bool) or not isinstance(rows_per_part, int) or rows_per_part < 1:
            raise ValueError(f"rows_per_part must be an int of at least 1, got {rows_per_part!r}")
        if not isinstance(flush_seconds, (int, float)) or not flush_seconds >= 0 or math.isinf(flush_seconds):
            raise ValueError(f"flush_seconds must be a finite number >= 0, got {flush_seconds!r}")
        directory = Path(path)
        created = not directory.exists()
        if not created:
            check_directory(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RefusedOutputError(f"cannot create --output {directory}: {err.strerror or err}") from None
        lock = directory / LOCK_NAME
        for _ in range(10):
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as err:
                raise RefusedOutputError(f"cannot create {lock}: {err.strerror or err}") from None
            try:
                _lock(fd, directory)
                with contextlib.suppress(FileNotFoundError):
                    if os.path.samestat(os.fstat(fd), os.stat(lock)):  # not removed by a run that just ended
                        break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        else:
            raise RefusedOutputError(f"{lock} was replaced each time it was opened: is another program using it?")
        results = cls(directory, fd, created, rows_per_part, float(flush_seconds))
        try:
            check_directory(directory)  # again, now that no other run can write
            for entry in os.scandir(directory):
                if _is_temp(entry.name):  # a part an interrupted run had not finished: never counted
                    os.unlink(entry.path)
        except BaseException:
            results._release()
            raise
        return results

    def __enter__(self) -> ParquetResults:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ reading
    def read(self) -> Previous:
        """What the part files hold: the files already scored (by ``realpath``), the models and weights used.

        Returns:
            The rows' keys; ``header`` is the columns of the parts (``None`` when there is none yet).

        Raises:
            RefusedOutputError: A part file that is not Parquet, or lacks the columns every results file has.
        """
        pyarrow = import_pyarrow()
        previous = Previous()
        for part in self.parts():
            try:
                schema = pyarrow.parquet.read_schema(part)
                names = list(schema.names)
                lacking = [c for c in (*RESUME_COLUMNS, "realpath") if c not in names]
                if lacking:
                    raise RefusedOutputError(
                        f"cannot resume from {self.path}: {part.name} lacks the columns {lacking}, so it was not "
                        "written by dvlta-metric; use another --output directory"
                    )
                wanted = [c for c in ("path", "realpath", "model", "weights", "error") if c in names]
                table = pyarrow.parquet.read_table(part, columns=wanted)
            except (OSError, pyarrow.ArrowException) as err:
                raise RefusedOutputError(
                    f"cannot resume from {self.path}: {part.name} is not a readable Parquet file ({err}); it was "
                    "not written by dvlta-metric, or the disk is damaged: use another --output directory"
                ) from None
            if previous.header is None:
                previous.header = names
            for row in table.to_pylist():
                previous.add(row)
        return previous

    def parts(self) -> list[Path]:
        """The part files, oldest first."""
        return sorted(Path(e.path) for e in os.scandir(self.path) if _is_part(e.name) and e.is_file())

    # ------------------------------------------------------------------------------------------ writing
    def start(self, columns: list[str], header: list[str] | None) -> None:
        """Take the columns of the parts already there (``header``), else ``columns``.

        Args:
            columns: The columns of this run's rows.
            header: The columns of the existing parts (:attr:`Previous.header`).
        """
        self.columns = list(header or columns)

    def append(self, row: dict[str, object]) -> None:
        """Buffer one row; write a part when enough rows wait, or the oldest has waited long enough.

        Args:
            row: Column name to value; ``None`` is a null.

        Raises:
            ValueError: A value is a non-finite float (see :func:`~dvlta_metric._results.finite_or_error`).
            OutputWriteError: A part could not be written (the rows of earlier parts are kept).
        """
        if any(isinstance(v, float) and not math.isfinite(v) for v in row.values()):
            raise ValueError(f"refusing to write a non-finite number into {self.path}: {row}")
        self._rows.append(row)
        if self._oldest is None:
            self._oldest = time.monotonic()
        if len(self._rows) >= self.rows_per_part or time.monotonic() - self._oldest >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one part file: a temporary name, flushed to disk, then renamed.

        Raises:
            OutputWriteError: The part could not be written; the temporary file is removed and nothing counts.
        """
        if not self._rows:
            return
        pyarrow = import_pyarrow()
        table = self._table(pyarrow, self._rows)
        stem = f"{PART_PREFIX}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        final = self.path / f"{stem}{PARQUET_SUFFIX}"
        temp = self.path / f".{stem}{TEMP_SUFFIX}"
        try:
            with open(temp, "xb") as fh:
                pyarrow.parquet.write_table(table, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, final)
            _fsync_directory(self.path)
        except (OSError, pyarrow.ArrowException) as err:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise OutputWriteError(f"cannot write a part file into {self.path}: {err}") from None
        self._rows, self._oldest = [], None
        self.parts_written += 1

    def _table(self, pyarrow: Any, rows: list[dict[str, object]]) -> Any:
        arrays, fields = [], []
        for column in self.columns:
            values = [row.get(column) for row in rows]
            if column in FLOAT_COLUMNS or column.startswith("weight_"):
                kind = pyarrow.float64()
                values = [None if v is None else float(v) for v in values]  # type: ignore[arg-type]
            else:
                kind = pyarrow.string()
                values = [None if v is None else utf8_text(str(v)) for v in values]
            arrays.append(pyarrow.array(values, type=kind))
            fields.append(pyarrow.field(column, kind))
        return pyarrow.Table.from_arrays(arrays, schema=pyarrow.schema(fields))

    def close(self) -> None:
        """Write what is buffered, then release the lock; a directory this run created and left empty is removed.

        Raises:
            OutputWriteError: The last part could not be written (the lock is released anyway).
        """
        if self.fd < 0:
            return
        try:
            self.flush()
        finally:
            self._release()

    def _release(self) -> None:
        if self.fd < 0:
            return
        try:
            if self.created and not self.parts():
                with contextlib.suppress(OSError):
                    os.unlink(self.path / LOCK_NAME)
                    os.rmdir(self.path)
        finally:
            os.close(self.fd)
            self.fd = -1


def check_directory(directory: Path) -> None:
    """Refuse an ``--output`` Parquet directory that is a file or holds files this tool did not write.

    Args:
        directory: An existing path.

    Raises:
        RefusedOutputError: Naming up to three of the foreign entries; nothing is changed.
    """
    if not directory.is_dir():
        raise RefusedOutputError(
            f"--output {directory} is not a directory: Parquet output is a directory of part files; give the name "
            "of a new or earlier results directory ending in .parquet"
        )
    foreign = sorted(e.name for e in os.scandir(directory) if not is_ours(e.name) or e.is_dir())
    if foreign:
        shown = ", ".join(repr(utf8_text(n)) for n in foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise RefusedOutputError(
            f"--output {directory} holds {len(foreign)} entries that dvlta-metric did not write ({shown}); it writes "
            "only part-*.parquet files and its lock there, and never touches other files: use a new or empty "
            "directory"
        )


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where directories can be opened; not on Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
