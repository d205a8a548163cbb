"""The CPU's thread pools: knetc's own (the threads that split a generated kernel's or a
library routine's rows, in_parallel, and other work cut into calls, run_calls: the CPU
convolutions' batch) and the BLAS that Numba's np.dot calls (SciPy's OpenBLAS: the drivers'
and the convolutions' GEMMs, kernels/matmul.py). No kernel uses Numba's parallel=True loops
(their parfor passes cost seconds of compile time each), so Numba's own pool never starts.

BLAS thread count: BLAS's default, except in programs that call BLAS from several threads
at once (the CPU convolutions, which split the batch across threads), where nested BLAS
threads made them about 2x slower. (2 BLAS threads are faster than one from about 1e6 flops
up and no slower below, even with two busy processes on the 2 cores.) While BLAS runs on
several threads, in_parallel takes half of knetc's threads (row_threads: BLAS's workers
spin on their cores between GEMMs)."""
import concurrent.futures
import ctypes
import glob
import os
import threading

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
    """The BLAS thread count for a program; blas_in_prange: it calls BLAS from several
    threads at once (an op's flag, knetc/ops/core.py). KNETC_BLAS_THREADS overrides."""
    if _default is None:
        return None
    if os.environ.get("KNETC_BLAS_THREADS"):
        return int(os.environ["KNETC_BLAS_THREADS"])
    return 1 if blas_in_prange else min(_default, _share or _default)


_share = None  # the threads this process may use (share_cores), None: all


def share_cores(n):
    """Use at most n threads (several processes share the machine's cores: data-parallel
    ranks) for BLAS and the kernels' row blocks, where the user set no thread count
    (KNETC_BLAS_THREADS, NUMBA_NUM_THREADS)."""
    global _share, THREADS
    _share = max(1, int(n))
    if "NUMBA_NUM_THREADS" not in os.environ:
        THREADS = min(THREADS, _share)


def shared_cores():
    """The threads this process may use when it shares the cores (share_cores), else None."""
    return _share


def use_threads(n):
    """Set BLAS's thread count (no call when it is already n, so this is cheap per step)."""
    global _current
    if n is not None and n != _current and _set is not None:
        _set(n)
        _current = n


def row_threads():
    """The threads in_parallel splits a kernel's rows across: THREADS, or half of them while
    BLAS runs on several threads. OpenBLAS's workers spin for about 0.1 s after each GEMM,
    so in a program with GEMMs they hold their cores while the kernels between the GEMMs
    run; a kernel thread beside them waits for its core. On 2 cores a bias add after a GEMM
    took 0.40-0.46 ms on 2 threads and 0.28 ms on one, and the Transformer's training step
    127.5 ms with its kernels on one thread against 138.7 ms on two (2026-12-03)."""
    return THREADS if _current is None or _current <= 1 else max(1, THREADS // 2)


THREADS = numba.config.NUMBA_NUM_THREADS  # NUMBA_NUM_THREADS, else the number of CPUs
PARALLEL_MIN_WORK = 1 << 17  # elements x steps per element: below this, threads cost more than they save
_workers = None


def _forget_workers():
    global _workers
    _workers = None  # a forked child has none of its parent's threads: it starts its own


os.register_at_fork(after_in_child=_forget_workers)


def _pool():
    global _workers
    if _workers is None:
        _workers = concurrent.futures.ThreadPoolExecutor(max(1, THREADS - 1), thread_name_prefix="knetc-kernel")
    return _workers


def in_parallel(kernel, rows, *args):
    """kernel(*args, lo, hi) over the rows [0, rows), one block of rows per thread
    (row_threads() of them).

    Generated CPU kernels take their outer loop's range and release the GIL (njit with
    nogil=True), so plain threads run them in parallel: one compiled function serves small
    and large sizes alike, and no Numba parallel=True version (seconds of compile time per
    kernel) is built. The calling thread runs the first block."""
    n = min(rows, row_threads())
    if n <= 1:
        return kernel(*args, 0, rows)
    bounds = [rows * k // n for k in range(n + 1)]
    others = [_pool().submit(kernel, *args, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])]
    kernel(*args, bounds[0], bounds[1])
    for block in others:
        block.result()


def run_calls(calls):
    """Run each (function, args) of calls once, at the same time: the calling thread runs
    the first, the pool's threads the others (functions that release the GIL for most of
    their time: nogil Numba functions, BLAS), and returns when all have finished; an error
    in any of them is raised. A call from one of the pool's own threads runs them all on
    that thread, one after the other (the pool may be busy with its caller).

        run_calls([(piece, (a, b))] * 2)      # piece(a, b) on two threads"""
    if len(calls) == 1 or threading.current_thread().name.startswith("knetc-kernel"):
        for function, args in calls:
            function(*args)
        return
    others = [_pool().submit(function, *args) for function, args in calls[1:]]
    try:
        function, args = calls[0]
        function(*args)
    finally:
        for call in others:
            call.result()
