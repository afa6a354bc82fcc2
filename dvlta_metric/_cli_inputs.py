"""The command line's inputs beyond plain paths: ``--files-from``, Y4M on standard input, raw ``.yuv`` files.

* ``--files-from FILE`` (``-``: standard input) lists one path per line. Only the line end (``\\n``, or
  ``\\r\\n``) is removed, so names with inner or trailing spaces survive; blank lines are skipped; bytes that
  are not valid UTF-8 are kept as the file system's bytes (``os.fsdecode``). The list is read into memory,
  never into the argument vector, so 100k files are fine.
* ``-`` as a path reads a Y4M stream from standard input (``ffmpeg -i in.mkv -f yuv4mpegpipe -``). The reader
  needs random access (it counts the frames, then seeks), so the stream is first copied (ours) to a private
  temporary file (mode 0600, in ``TMPDIR``) that is deleted when the run ends. The copy is refused if the
  stream does not start like Y4M, and stops with an error at :data:`STDIN_MAX_BYTES`, when less than
  :data:`STDIN_MIN_FREE_BYTES` would stay free on the disk, or when it takes longer than the decode time
  limit. Its row is named ``-``, and it is scored on every run (never skipped as already in ``--output``).
* A path ending in ``.yuv`` is a raw video: ``--size`` (required), ``--pix-fmt`` and ``--fps`` describe it
  (:class:`~dvlta_metric.raw_video.RawVideo`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import BinaryIO

from .batch import FileResult
from .raw_video import RawVideo

STDIN = "-"
"""The path that means standard input."""

DEFAULT_WORKERS = 2
"""Decoding threads of ``dvlta-metric score`` when ``--workers`` is not given."""

RAW_SUFFIX = ".yuv"
"""Paths ending in this (any case) are raw video files."""

STDIN_MAX_BYTES = 32 * 2**30
"""Most bytes of a Y4M stream read from standard input (32 GiB)."""

STDIN_MIN_FREE_BYTES = 2**30
"""Copying standard input stops before it leaves less than this free on the temporary directory's disk (1 GiB)."""

Y4M_MAGIC = b"YUV4MPEG2 "
"""How a Y4M stream starts."""

_CHUNK = 1 << 20


class InputError(Exception):
    """An input the command cannot take (exit status 2): a file list that cannot be read, stdin that is not Y4M."""


def read_file_list(source: str, stdin: BinaryIO | None = None) -> list[str]:
    """The paths listed in ``source``, one per line (``-``: standard input).

    Args:
        source: The ``--files-from`` argument.
        stdin: Binary standard input (default ``sys.stdin.buffer``).

    Returns:
        The paths in order, blank lines skipped, each line as written without its line end (a line ``-`` is a
        file named ``-``, read as ``./-``: standard input is only ever the command line's ``-``).

    Raises:
        InputError: The list cannot be read.
    """
    try:
        if source == STDIN:
            data = (stdin or sys.stdin.buffer).read()
        else:
            with open(source, "rb") as fh:
                data = fh.read()
    except OSError as err:
        raise InputError(f"--files-from {source}: cannot read the list: {err.strerror or err}") from None
    paths = []
    for line in data.split(b"\n"):
        line = line.removesuffix(b"\r")
        if line.strip():
            path = os.fsdecode(line)
            paths.append(os.path.join(os.curdir, path) if path == STDIN else path)
    return paths


def check_raw_options(files: list[str], size: tuple[int, int] | None, given: list[str]) -> None:
    """Refuse ``.yuv`` files without ``--size``, and raw options without ``.yuv`` files.

    Args:
        files: The paths to score.
        size: ``--size``.
        given: The raw options given (``["--size", "--fps"]``).

    Raises:
        InputError: A ``.yuv`` file and no ``--size``, or ``given`` options and no ``.yuv`` file.
    """
    raw = [f for f in files if is_raw(f)]
    if raw and size is None:
        raise InputError(
            f"{raw[0]} is a raw video (.yuv), which has no header: give its frame size with --size WIDTHxHEIGHT "
            "(and --pix-fmt, default yuv420p, and --fps, default 25)"
        )
    if given and not raw:
        verb = "describe" if len(given) > 1 else "describes"
        raise InputError(f"{' and '.join(given)} {verb} .yuv files (raw video), and no .yuv file is given")


def is_raw(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a raw video file (ends in :data:`RAW_SUFFIX`)."""
    return os.fspath(path).lower().endswith(RAW_SUFFIX)


@dataclass
class PreparedInputs:
    """What the model reads for each path, and how its results are named back.

    Attributes:
        raw: ``(width, height, pix_fmt, fps)`` of the ``.yuv`` files, or ``None``.
        spooled: The temporary copy of standard input, or ``None``.
    """

    raw: tuple[int, int, str, float] | None = None
    spooled: str | None = None
    names: dict[str, str] = field(default_factory=dict)

    def item(self, path: str) -> str | RawVideo:
        """What ``score_files`` gets for ``path``."""
        if path == STDIN and self.spooled is not None:
            return self.spooled
        if self.raw is not None and is_raw(path):
            return RawVideo(path, *self.raw)
        return path

    def result(self, result: FileResult) -> FileResult:
        """``result`` under the name the user gave (the copy of standard input is named ``-``)."""
        if self.spooled is None or result.path != self.spooled:
            return result
        texts = {k: getattr(result, k) for k in ("error", "warning")}
        fixed = {k: v.replace(self.spooled, STDIN) if v else v for k, v in texts.items()}
        return replace(result, path=STDIN, **fixed)


@contextlib.contextmanager
def prepared_inputs(
    files: list[str], raw: tuple[int, int, str, float] | None, timeout: float, stdin: BinaryIO | None = None
) -> Iterator[PreparedInputs]:
    """Copy standard input to a temporary file if ``-`` is among ``files``; delete it when the block ends.

    Args:
        files: The paths to score.
        raw: ``(width, height, pix_fmt, fps)`` for ``.yuv`` files, or ``None``.
        timeout: Most seconds the copy may take.
        stdin: Binary standard input (default ``sys.stdin.buffer``).

    Yields:
        The :class:`PreparedInputs`.

    Raises:
        InputError: Standard input is not a Y4M stream, or too large, or too slow.
    """
    prepared = PreparedInputs(raw)
    try:
        if STDIN in files:
            prepared.spooled = _spool(stdin or sys.stdin.buffer, timeout)
        yield prepared
    finally:
        if prepared.spooled is not None:
            with contextlib.suppress(OSError):
                os.unlink(prepared.spooled)


def _spool(stream: BinaryIO, timeout: float) -> str:
    """Copy a Y4M stream to a private temporary file; returns its path (the caller deletes it)."""
    deadline = time.monotonic() + timeout
    head = _read(stream, len(Y4M_MAGIC), deadline, timeout)
    if not head.startswith(Y4M_MAGIC):
        shown = repr(head[:10]) if head else "nothing"
        raise InputError(
            f"standard input (-) is not a Y4M stream (it starts with {shown}, not {Y4M_MAGIC!r}); pipe video as "
            "Y4M, e.g. ffmpeg -i IN -f yuv4mpegpipe - | dvlta-metric score -"
        )
    fd, path = tempfile.mkstemp(prefix="dvlta-stdin-", suffix=".y4m")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(head)
            total = len(head)
            while chunk := _read(stream, _CHUNK, deadline, timeout):
                total += len(chunk)
                if total > STDIN_MAX_BYTES:
                    limit = f"{STDIN_MAX_BYTES / 2**30:g} GiB"
                    raise InputError(f"standard input (-) is larger than {limit}: save it to a file and score that")
                if shutil.disk_usage(os.path.dirname(path)).free - len(chunk) < STDIN_MIN_FREE_BYTES:
                    raise InputError(
                        f"standard input (-): copying it to {os.path.dirname(path)} would leave less than "
                        f"{STDIN_MIN_FREE_BYTES / 2**30:g} GiB free; set TMPDIR to a larger disk, or save it to a file"
                    )
                out.write(chunk)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return path


def _read(stream: BinaryIO, size: int, deadline: float, timeout: float) -> bytes:
    """Up to ``size`` bytes (fewer only at the end), waiting no later than ``deadline``."""
    fileno = _fileno(stream)
    data = bytearray()
    while len(data) < size:
        left = deadline - time.monotonic()
        if fileno is not None and left > 0 and os.name == "posix":
            ready, _, _ = select.select([fileno], [], [], left)
            left = deadline - time.monotonic() if ready else 0
        if left <= 0:
            raise InputError(
                f"standard input (-): reading it took longer than the decode time limit of {timeout:g} s "
                "(--decode-timeout)"
            )
        chunk = os.read(fileno, size - len(data)) if fileno is not None else stream.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _fileno(stream: BinaryIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.BytesIO in tests
        return None


def decode_kwargs(args: argparse.Namespace) -> dict[str, object]:
    """The reading options of ``score``'s arguments, as keyword arguments of
    :func:`~dvlta_metric.batch.score_files` and :func:`~dvlta_metric.ray_scoring.score_files_ray`."""
    return {
        "max_megapixels": args.max_megapixels,
        "decode_timeout": args.decode_timeout,
        "color_matrix": args.color_matrix,
        "color_range": args.color_range,
        "keep_bit_depth": not args.eight_bit,
        "decoder": args.decoder,
    }
