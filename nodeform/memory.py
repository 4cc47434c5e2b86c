"""Process memory settings that make NumPy code here several times faster.

Every autodiff operation allocates fresh temporaries. glibc serves blocks above
its mmap threshold (128 KiB, adapting upwards) straight from the kernel and gives
them back when freed, and it trims the heap top eagerly; each new temporary then
costs page faults on fresh memory. On this project's benchmarks that was most of
the time: the continuous adjoint of the 2-64-2 MLP at batch 512 took 157 ms with
glibc's defaults and 57 ms with freed memory kept for reuse (PERF-NOTES found the
same for the convolution layer).

So ``import nodeform`` calls :func:`keep_freed_memory` once, unless
``NODEFORM_MALLOC_TUNING=0`` is set or the user already chose glibc's
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``. The cost: the process keeps
up to ``KEEP_TRIM_THRESHOLD`` bytes of freed memory instead of returning it to the
system, so its resident memory stays at the peak of the largest step it ran. On other C
libraries (macOS, musl) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Blocks below this come from the heap and are reused; 256 MiB covers the largest
#: temporaries of the chapters (the im2col rows of the Table 1 models' stem are 88 MiB at
#: batch 128; at 64 MiB they were mapped and page-faulted afresh at every call).
KEEP_MMAP_THRESHOLD = 256 << 20
#: Freed memory kept at the heap top before it is returned to the system. It must exceed
#: what one training step holds at its peak, or every step faults that memory in again:
#: backprop through dopri5 (the RK-Net, batch 128) keeps about 1.3 GiB of tape until
#: ``backward()``; with 256 MiB here its step took 1.5x the CPU time (bench/RESULTS-models.md).
KEEP_TRIM_THRESHOLD = 2 << 30

#: Whether :func:`keep_freed_memory` has been applied in this process.
STATE = {"applied": False, "reason": "not attempted"}


def keep_freed_memory(mmap_threshold=KEEP_MMAP_THRESHOLD, trim_threshold=KEEP_TRIM_THRESHOLD):
    """Ask glibc to keep freed large blocks for reuse (process-wide).

    The same as setting ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` in the
    environment before Python starts.

    Returns
    -------
    bool
        True when applied (glibc found), False elsewhere, where it does nothing.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
        ok = bool(ok and libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1)
    except (OSError, AttributeError):
        ok = False
    STATE.update(applied=ok, reason="applied" if ok else "no glibc mallopt here")
    return ok


def apply_default():
    """What ``import nodeform`` does: tune unless switched off or already chosen by the user."""
    if os.environ.get("NODEFORM_MALLOC_TUNING", "1") == "0":
        STATE.update(applied=False, reason="switched off by NODEFORM_MALLOC_TUNING=0")
    elif "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        STATE.update(applied=False, reason="left to the MALLOC_*_THRESHOLD_ variables already set")
    else:
        keep_freed_memory()
    return STATE["applied"]
