"""Large host buffers stay in the process between training steps (glibc's malloc).

A training step allocates the same large arrays every time (a LeNet step: the convolutions'
outputs and gradients, 4.6 MB each). glibc's malloc serves blocks above a threshold with
fresh mmap'd pages and gives freed memory at the top of its heap back to the kernel, so
every step touched new pages: about 2,200 page faults a LeNet step, 5-30 ms of its 20-50 ms
on this 2-core VM, and most of the step-to-step variation. With blocks up to 32 MiB taken
from the heap and up to 256 MiB of freed heap kept, the same step makes no page faults and
runs in 20.6 ms; the process's peak memory is the same (the buffers are reused, not added).

`import knetc` calls keep_freed_buffers() once. KNETC_MALLOC=0 leaves malloc as it is, and
so does a MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ the user set (glibc reads those
itself). Elsewhere than glibc (macOS, musl) nothing changes.
"""
import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 256 << 20
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
KEPT = False  # whether keep_freed_buffers set the thresholds (`import knetc` calls it)


def keep_freed_buffers():
    """Set glibc's thresholds as above; True (and KEPT) when they were set."""
    global KEPT
    KEPT = _set_thresholds()
    return KEPT


def _set_thresholds():
    if os.environ.get("KNETC_MALLOC") == "0" or any(name in os.environ for name in USER_SETTINGS):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # (glibc only: musl has no mallopt thresholds)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
