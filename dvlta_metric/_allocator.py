"""CPU memory-allocator tuning for repeated large activations (glibc only; opt-in).

The Swin3D backbone allocates and frees activations of tens to hundreds of megabytes on every call.
glibc's ``malloc`` serves blocks that large with fresh ``mmap`` pages and returns them to the system on
``free``, so every call page-faults the same memory in again, which costs a sizeable part of the fragment
branch's time on CPU (``benchmarks/bench.py --no-tune-allocator`` measures it; see the Performance page).
:func:`tune_allocator` tells glibc to keep freed blocks in the heap instead. The price is that the
process keeps its peak memory until it exits, which is what a scoring job wants and a long-lived service
mixing other work may not: so the library never calls it on import; the ``dvlta-metric`` command line and
the benchmark do.

:func:`release_free_memory` goes the other way, once: it hands the free pages inside glibc's heaps back to the
system (``malloc_trim``) without changing any setting. A model with gradient checkpointing on calls it
between its branches on CPU (:meth:`~dvlta_metric.DVLTAVQA.set_grad_checkpointing`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    """The C library on Linux (the symbols the process already has, else ``find_library``), or ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    with contextlib.suppress(OSError):
        process = ctypes.CDLL(None)
        if hasattr(process, "mallopt"):
            return process
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def tune_allocator(mmap_threshold: int = 1 << 30, trim_threshold: int = (1 << 31) - 1, top_pad: int = 1 << 28) -> bool:
    """Keep large freed blocks in the heap (glibc ``mallopt``), so activations are reused, not re-faulted.

    Args:
        mmap_threshold: Blocks below this size come from the heap instead of fresh ``mmap`` pages.
        trim_threshold: Free memory at the top of the heap kept before returning it to the system.
        top_pad: Extra memory requested from the system on each heap growth.

    The settings apply to the whole process and stay until it ends (glibc has no way to undo them but
    setting other values), which is why the library never calls this by itself; the command line and the
    benchmarks do, on CPU.

    Returns:
        ``True`` if glibc accepted all three settings; ``False`` otherwise: on other platforms or C
        libraries nothing is changed, and if glibc refuses one setting the others are still applied.
    """
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, trim_threshold), (_M_TOP_PAD, top_pad))
    accepted = [mallopt(option, min(value, (1 << 31) - 1)) == 1 for option, value in settings]  # every one
    return all(accepted)


def release_free_memory() -> bool:
    """Hands the free memory inside glibc's heaps back to the system (``malloc_trim(0)``).

    Memory a process frees stays in the heap, counted in its resident set, until the heap's top is free or
    this is called; after a large pass (a branch's backward) it can be a gigabyte. Nothing else changes: the
    next allocations fault fresh pages in, as they would have at the start. It takes tens of milliseconds.

    Returns:
        What glibc's ``malloc_trim`` reports: ``True`` when it handed pages back (it does whenever the heap has
        free pages, which it may already have handed back before); ``False`` when it did not, or on other
        platforms and C libraries, where nothing is done.
    """
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))
