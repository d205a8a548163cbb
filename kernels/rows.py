"""How the CPU library routines (pool, batchnorm, dropout) split their work across threads.

As the generated CPU kernels do (knetc.backend.cpu): a kernel is an `@kernel` function
(njit, nogil) whose outer loop runs over a range lo..hi of rows (slices, channels,
elements) it is given, and `run` calls it on blocks of rows across threads
(runtime.threads.in_parallel) when the work reaches PARALLEL_MIN_WORK, else once over all
the rows. No Numba parallel=True loops: their parfor passes cost seconds of compile time
per function, against a fraction of a second for the plain loop.
"""
from numba import njit

from knetc.runtime.threads import PARALLEL_MIN_WORK, in_parallel


def kernel(**options):
    """njit as the generated CPU kernels are compiled (also the convolutions' pieces,
    kernels/conv.py): cached, without the GIL, NumPy's error
    model (no exception paths for divisions) and no C-callable wrapper (called from Python
    or from other njit code only; the wrapper costs about 10 ms of compile time each)."""
    return njit(cache=True, nogil=True, error_model="numpy", no_cfunc_wrapper=True, **options)


def run(function, rows, work, *args):
    """function(*args, lo, hi) over the rows 0..rows: in blocks across threads when the work
    (elements x steps per element, roughly) is large enough, else in one call."""
    if work >= PARALLEL_MIN_WORK:
        in_parallel(function, rows, *args)
    else:
        function(*args, 0, rows)
