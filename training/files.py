"""File plumbing the steps share: JSON values, atomic writes, and reading ahead in threads."""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import torch

_T = TypeVar("_T")
_R = TypeVar("_R")


def jsonable(obj: Any) -> Any:
    """``obj`` as JSON reads it back (tuples become lists, keys strings): how it compares with a stored file."""
    return json.loads(json.dumps(obj))


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def prefetch(fn: Callable[[_T], _R], items: Iterable[_T], workers: int) -> Iterator[tuple[_T, _R | BaseException]]:
    """``(item, fn(item))`` in order, with up to ``workers`` calls running ahead; exceptions are returned."""

    def call(item: _T) -> _R | BaseException:
        try:
            return fn(item)
        except Exception as err:
            return err

    if workers <= 0:
        for item in items:
            yield item, call(item)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[tuple[_T, Future[_R | BaseException]]] = deque()
        for item in items:
            pending.append((item, pool.submit(call, item)))
            if len(pending) > workers:
                done_item, future = pending.popleft()
                yield done_item, future.result()
        while pending:
            done_item, future = pending.popleft()
            yield done_item, future.result()


def save_torch_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to ``<name>.tmp`` beside ``path``, then rename it into place (no half-written file)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
