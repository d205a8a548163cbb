"""The CPU's two thread pools: Numba's (parallel loops of the generated and library
kernels) and the BLAS that Numba's np.dot calls (SciPy's OpenBLAS).

Numba's pool is started with passive waiting (OMP_WAIT_POLICY=PASSIVE for its OpenMP
runtime, unless the user set the variable): a compiled step alternates parallel kernels
with BLAS calls on the same cores, and OpenMP workers spinning after each kernel took the
cores from the BLAS threads (CharLM step 50 -> 38 ms on 2 cores; LeNet unchanged). PyTorch
loaded later in the same process shares that OpenMP runtime, and with it the policy.

BLAS thread count: BLAS's default, except in programs that call BLAS from their own
parallel loops (the CPU convolutions), where nested BLAS threads made them about 2x
slower. (Small GEMMs used to be kept on one thread too, when Numba's workers spun: with
them passive, 2 threads are faster from about 1e6 flops up and no slower below, even with
two busy processes on the 2 cores: the MLP step 0.25 -> 0.18 ms.)"""
import concurrent.futures
import ctypes
import glob
import os

import numba

_set, _default, _current = None, None, None


def _load():
    global _set, _default
    try:
        import scipy
    except ImportError:
        return
    pattern = os.path.join(os.path.dirname(scipy.__file__), os.pardir, "scipy.libs", "*openblas*")
    for path in glob.glob(pattern):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            setter, getter = getattr(lib, prefix + "set_num_threads", None), getattr(lib, prefix + "get_num_threads", None)
            if setter is not None and getter is not None:
                setter.argtypes, getter.restype = [ctypes.c_int], ctypes.c_int
                _set, _default = setter, getter()
                return


_load()


def threads_for(blas_in_prange=False):
    """The BLAS thread count for a program; blas_in_prange: it calls BLAS from inside its
    parallel loops. KNETC_BLAS_THREADS overrides."""
    if _default is None:
        return None
    if os.environ.get("KNETC_BLAS_THREADS"):
        return int(os.environ["KNETC_BLAS_THREADS"])
    return 1 if blas_in_prange else min(_default, _share or _default)


_share = None  # the threads this process may use (share_cores), None: all


def share_cores(n):
    """Use at most n threads (several processes share the machine's cores: data-parallel
    ranks) for BLAS, Numba's parallel loops and the kernels' row blocks, where the user set
    no thread count (KNETC_BLAS_THREADS, NUMBA_NUM_THREADS)."""
    global _share, THREADS
    _share = max(1, int(n))
    if "NUMBA_NUM_THREADS" not in os.environ:
        THREADS = min(THREADS, _share)
        numba.set_num_threads(min(numba.get_num_threads(), _share))


def use_threads(n):
    """Set BLAS's thread count (no call when it is already n, so this is cheap per step)."""
    global _current
    if n is not None and n != _current and _set is not None:
        _set(n)
        _current = n


_pool_started = False


def start_numba_pool():
    """Start Numba's thread pool (once, before its first parallel loop) with passive waiting."""
    global _pool_started
    if _pool_started:
        return
    _pool_started = True
    if "OMP_WAIT_POLICY" in os.environ:
        numba.get_num_threads()
        return
    # The OpenMP runtime reads the variable once, when it is loaded by the pool's start.
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        numba.get_num_threads()
    finally:
        del os.environ["OMP_WAIT_POLICY"]


THREADS = numba.config.NUMBA_NUM_THREADS  # NUMBA_NUM_THREADS, else the number of CPUs
_workers = None


def _forget_workers():
    global _workers
    _workers = None  # a forked child has none of its parent's threads: it starts its own


os.register_at_fork(after_in_child=_forget_workers)


def in_parallel(kernel, rows, *args):
    """kernel(*args, lo, hi) over the rows [0, rows), one block of rows per thread.

    Generated CPU kernels take their outer loop's range and release the GIL (njit with
    nogil=True), so plain threads run them in parallel: one compiled function serves small
    and large sizes alike, and no Numba parallel=True version (seconds of compile time per
    kernel) is built. The calling thread runs the first block."""
    global _workers
    n = min(rows, THREADS)
    if n <= 1:
        return kernel(*args, 0, rows)
    if _workers is None:
        _workers = concurrent.futures.ThreadPoolExecutor(THREADS - 1, thread_name_prefix="knetc-kernel")
    bounds = [rows * k // n for k in range(n + 1)]
    others = [_workers.submit(kernel, *args, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])]
    kernel(*args, bounds[0], bounds[1])
    for block in others:
        block.result()
