"""Split a list of files into ``N`` shards for jobs that run side by side (``dvlta-metric score --shard I/N``).

A file's shard is a hash of its path string, as listed (ours): SHA-256 of the path's bytes (``os.fsencode``),
read as a big-endian integer, modulo ``N``. So the assignment

* is the same in every process, on every machine and in every Python version (no ``hash()`` salt);
* does not depend on the order of the list or on the other files in it: a file added to the corpus later
  lands in one shard and moves no other file, so each shard's ``--output`` stays resumable;
* covers every file exactly once over shards ``0 .. N-1``.

The path string is hashed as given, not its real path: every job must list the files under the same names
(run them from the same directory, or give absolute paths). Shards are balanced only on average (a binomial
spread: a few percent for thousands of files).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from typing import TypeVar

__all__ = ["parse_shard", "shard_of", "shard_paths"]

P = TypeVar("P", bound="str | os.PathLike[str]")

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def shard_of(path: str | os.PathLike[str], count: int) -> int:
    """The shard, in ``0 .. count-1``, that ``path`` belongs to.

    Args:
        path: A file, named as every shard job lists it.
        count: Number of shards.

    Returns:
        ``int(sha256(os.fsencode(path))) % count``.

    Raises:
        ValueError: ``count`` < 1.
        TypeError: ``path`` is not a ``str`` / ``os.PathLike`` or ``count`` not an ``int``.
    """
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"count must be an int, got {type(count).__name__}")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    digest = hashlib.sha256(os.fsencode(path)).digest()
    return int.from_bytes(digest, "big") % count


def shard_paths(paths: Iterable[P], index: int, count: int) -> list[P]:
    """The paths of shard ``index`` of ``count`` (:func:`shard_of`), in their order.

    Args:
        paths: The whole list, the same in every shard job.
        index: This job's shard, ``0 <= index < count``.
        count: Number of shards.

    Returns:
        The paths whose :func:`shard_of` is ``index``.

    Raises:
        ValueError: ``index`` is not in ``0 .. count-1`` or ``count`` < 1.
    """
    _check(index, count)
    return [p for p in paths if shard_of(p, count) == index]


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"I/N"`` (``--shard``): shard ``I`` of ``N``, counted from 0.

    Args:
        text: E.g. ``"0/4"`` ... ``"3/4"``; a SLURM array job passes ``"$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT"``.

    Returns:
        ``(I, N)``.

    Raises:
        ValueError: Not two whole numbers ``I/N`` with ``0 <= I < N``.
    """
    match = _SHARD.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"expected I/N, shard I of N counted from 0 (e.g. 0/4 ... 3/4), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    _check(index, count)
    return index, count


def _check(index: int, count: int) -> None:
    if count < 1:
        raise ValueError(f"the number of shards must be at least 1, got {count}")
    if not 0 <= index < count:
        raise ValueError(f"shard {index} of {count} does not exist: shards are numbered 0 to {count - 1}")
