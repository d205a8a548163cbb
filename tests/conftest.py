"""Test session set-up.

CUDA kernels run under Numba's CUDA simulator unless KNETC_TEST_GPU=1 (a real GPU).
The simulator must be chosen before numba is first imported, hence here.
PTX compilation needs the real numba.cuda, so it runs in a subprocess (see ptx.py).
"""
import os
import tempfile

if os.environ.get("KNETC_TEST_GPU") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
# Generated kernels go to a per-session cache so tests never see a stale user cache.
os.environ.setdefault("KNETC_CACHE_DIR", tempfile.mkdtemp(prefix="knetc-test-cache-"))


def _lock_simulator_shared_arrays():
    """Numba's simulator gives a block's threads one shared array per source line, made by
    the first thread to reach it, but it checks and sets without a lock: two threads of a
    block can take different arrays, and a tree reduction then sums uninitialised memory
    (seen under load, and with the short thread switch interval the reduction tests set).
    The same allocation, under a lock."""
    import sys
    import threading
    import traceback

    import numpy as np
    from numba.core import types
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    original, lock = kernelapi.FakeCUDAShared.array, threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:  # (dynamic shared memory; alignment: refused)
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        caller = tuple(traceback.extract_stack(sys._getframe())[-2][0:2])
        with lock:
            if caller not in self._allocations:
                self._allocations[caller] = np.empty(shape, dtype)
            return self._allocations[caller]

    kernelapi.FakeCUDAShared.array = array


if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    _lock_simulator_shared_arrays()
