"""The CPU's thread pools: knetc's own (the threads that split a generated kernel's rows, a
GEMM's rows or columns, or a library routine's work: in_parallel and run_calls) and the BLAS
that Numba's BLAS calls use (SciPy's OpenBLAS: the drivers' and the convolutions' GEMMs,
kernels/matmul.py). No kernel uses Numba's parallel=True loops (their parfor passes cost
seconds of compile time each), so Numba's own pool never starts.

Who splits a program's work (threads_for, per program and per eager library call):
- BLAS on one thread, knetc's threads splitting everything (its GEMMs by rows or columns,
  its kernels by rows), where the program's GEMMs are large (SPLIT_GEMMS_MIN multiply-adds
  on average) or a library routine calls BLAS from several threads at once (the CPU
  convolutions, which split the batch: nested BLAS threads made them about 2x slower).
- Else BLAS's own threads for the GEMMs, and half of knetc's threads for the kernels
  (row_threads): OpenBLAS's workers spin on their cores for about 0.1 s after each GEMM, so
  a kernel thread beside them waits. A library routine that calls BLAS from one thread (the
  CPU RNN's per-step GEMMs) keeps BLAS's threads.
Small GEMMs stay with BLAS's threads because waking a thread of knetc's costs about 60 us
on the 2-core VM of benchmarks/RESULTS.md (futexes through the hypervisor, and the GIL to
start a call), where OpenBLAS's spinning workers start at once: a 100x784x64 GEMM took 97
us on BLAS's 2 threads, 161 us split by knetc; 2048x128x512 1.62 and 1.63 ms. The
Transformer's step, whose kernels are as large as its GEMMs, took 106-114 ms with knetc
splitting everything against 126-138 ms with BLAS's threads (2026-12-05).

The pool's workers wait for work spinning on a flag (without the GIL) for about SPIN_SECONDS
after their last call, then sleep: a step's kernels follow each other closely. A round wakes
only the workers it has calls for."""
import ctypes
import glob
import os
import threading

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

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


SPLIT_GEMMS_MIN = 1 << 26  # mean multiply-adds of a program's GEMMs from which knetc splits them


def threads_for(blas=(), gemms=()):
    """The BLAS thread count for a program or an eager library call. blas: how its library
    routines call BLAS (Op.blas: "split" from several of knetc's threads at once, "threads"
    from one thread, wanting BLAS's; None: not at all), one value or a collection of them;
    gemms: the multiply-adds of each of its GEMMs. KNETC_BLAS_THREADS overrides."""
    if _default is None:
        return None
    if os.environ.get("KNETC_BLAS_THREADS"):
        return int(os.environ["KNETC_BLAS_THREADS"])
    blas = {blas} if blas is None or isinstance(blas, str) else set(blas)
    large = "threads" not in blas and gemms and sum(gemms) >= SPLIT_GEMMS_MIN * len(gemms)
    return 1 if "split" in blas or large else min(_default, _share or _default)


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


def splits_gemms():
    """Whether knetc splits GEMMs across its threads (BLAS runs on one thread)."""
    return _current == 1 and THREADS > 1


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
SPIN_SECONDS = 1e-3  # how long an idle worker spins before it sleeps (about 1 ns a spin)
_pool = None


def _forget_pool():
    global _pool
    _pool = None  # a forked child has none of its parent's threads: it starts its own


os.register_at_fork(after_in_child=_forget_pool)


@intrinsic
def _load_acquire(typingctx, flags, index):
    """flags[index], read from memory each time (a loop over it is not folded) and ordered
    before the reads that follow it."""
    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, signature.args[0], array, [args[1]])
        return builder.load_atomic(pointer, "acquire", 8)
    return types.int64(flags, index), codegen


@numba.njit(cache=True, nogil=True)
def _wait_for(flags, index, value, spins):
    """Whether flags[index] reached value within `spins` reads (without the GIL)."""
    for _ in range(spins):
        if _load_acquire(flags, index) >= value:
            return True
    return False


class _Pool:
    """Worker threads, each running a list of calls per round it takes part in. Worker k's
    round number is flags[16 * k] (advanced by the caller, who wakes it if it sleeps), its
    last finished round flags[16 * k + 8] (a cache line each)."""

    def __init__(self, n):
        self.flags = np.zeros(16 * n, np.int64)
        self.calls, self.errors = [[] for _ in range(n)], [None] * n
        self.wake, self.busy = threading.Condition(), threading.Lock()
        self.spins, self.closed = int(SPIN_SECONDS * 1e9), False
        for k in range(n):
            threading.Thread(target=self._work, args=(k,), name=f"knetc-kernel-{k}", daemon=True).start()

    def _work(self, k):
        flags, done = self.flags, 0
        while True:
            done += 1
            if not _wait_for(flags, 16 * k, done, self.spins):
                with self.wake:
                    self.wake.wait_for(lambda: flags[16 * k] >= done)
            if self.closed:
                return
            try:
                for function, args in self.calls[k]:
                    function(*args)
            except BaseException as error:
                self.errors[k] = error
            flags[16 * k + 8] = done

    def run(self, calls):
        """Run every (function, args) of calls, the first ones on the calling thread, the
        others on as many workers as there are calls; False (nothing run) when the pool is
        busy with another caller's round."""
        if not self.busy.acquire(blocking=False):
            return False
        try:
            n = min(len(self.calls) + 1, len(calls))
            mine, *theirs = [calls[k::n] for k in range(n)]
            for k, part in enumerate(theirs):
                self.calls[k], self.errors[k] = part, None
            with self.wake:
                self.flags[0:16 * len(theirs):16] += 1
                self.wake.notify_all()
            try:
                for function, args in mine:
                    function(*args)
            finally:
                for k in range(len(theirs)):  # (a worker without a core to run on: let it have ours)
                    while not _wait_for(self.flags, 16 * k + 8, self.flags[16 * k], self.spins):
                        os.sched_yield()
            error = next((e for e in self.errors[:len(theirs)] if e is not None), None)
            if error is not None:
                raise error
            return True
        finally:
            self.busy.release()

    def close(self):
        """End the workers (after the round under way)."""
        with self.busy, self.wake:
            self.closed = True
            self.flags[0::16] += 1
            self.wake.notify_all()


def _the_pool():
    global _pool
    if _pool is None:
        _pool = _Pool(max(1, THREADS - 1))
    return _pool


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
    run_calls([(kernel, args + (lo, hi)) for lo, hi in zip(bounds, bounds[1:])])


def run_calls(calls):
    """Run each (function, args) of calls once, at the same time: the calling thread runs
    the first, the pool's threads the others (functions that release the GIL for most of
    their time: nogil Numba functions, BLAS), and returns when all have finished; an error
    in any of them is raised. A call while the pool is busy (from one of its own threads,
    or from another thread of the user's) runs them all on the calling thread, one after
    the other.

        run_calls([(piece, (a, b))] * 2)      # piece(a, b) on two threads"""
    if len(calls) == 1 or THREADS <= 1 or not _the_pool().run(calls):
        for function, args in calls:
            function(*args)
