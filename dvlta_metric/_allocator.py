"""CPU memory-allocator tuning for repeated large activations (glibc only; opt-in).

The Swin3D backbone allocates and frees activations of tens to hundreds of megabytes on every call.
glibc's ``malloc`` serves blocks that large with fresh ``mmap`` pages and returns them to the system on
``free``, so every call page-faults the same memory in again, which costs a sizeable part of the fragment
branch's time on CPU (``benchmarks/bench.py --no-tune-allocator`` measures it; see the Performance page).
:func:`tune_allocator` tells glibc to keep freed blocks in the heap instead. The price is that the
process keeps its peak memory until it exits, which is what a scoring job wants and a long-lived service
mixing other work may not: so the library never calls it on import; the ``dvlta-metric`` command line and
the benchmark do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


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
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, trim_threshold), (_M_TOP_PAD, top_pad))
    accepted = [mallopt(option, min(value, (1 << 31) - 1)) == 1 for option, value in settings]  # every one
    return all(accepted)
