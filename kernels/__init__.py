"""Hand-written kernels that generated code calls (CUDA and CPU); above knetc.runtime, which they call."""
from knetc.runtime import threads as _threads

_threads.start_numba_pool()  # before any parallel loop of these kernels runs
