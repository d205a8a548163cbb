"""Kernel launches without Numba's per-call dispatch (issue 16, "fewer host operations").

Calling a Numba CUDA kernel types every argument, looks its overload up and converts each
argument again: about 50 us of host time for a five-argument kernel on an H200's host,
against 7 us for the launch itself (benchmarks/RESULTS.md, 2026-12-04). A training step
launches the same kernels with arguments of the same types step after step, so

    k = prepared(dispatcher)      # what a driver binds (backend/cache.kernel)
    k[blocks, threads](a, b, 1.0) # the first call per argument types goes through Numba;
                                  # later ones launch its compiled kernel directly

A `Prepared` kernel keys its launches by each argument's kind (a Numba device array's
dtype, rank and contiguity; a number's type), finds the kernel Numba compiled for those
types once, and from then on packs the arguments as Numba's launcher does (an array as
meminfo, parent, size, itemsize, pointer, shape, strides; numbers as C values) and calls
cuda.core's launch on the default stream, the stream all of knetc's work runs on.
Anything else (other array types, records, complex numbers, the simulator, a Numba
without these internals, KNETC_PREPARED_LAUNCH=0) goes through Numba's own call.
"""
import ctypes
import os
import weakref

import numpy as np

from .device import real_gpu_available

_SCALARS = {  # a number's type -> the C type Numba passes it as (float: float64, int: int64)
    float: ctypes.c_double, np.float64: ctypes.c_double, np.float32: ctypes.c_float, int: ctypes.c_int64,
    np.int64: ctypes.c_int64, np.int32: ctypes.c_int32, np.uint64: ctypes.c_uint64, np.uint32: ctypes.c_uint32,
}


_ENABLED = []  # enabled()'s answer, found once
_CORE = {}  # enabled() fills it: cuda.core's LaunchConfig and launch, and the default stream


def enabled():
    """True where launches can skip Numba's dispatch: a real GPU, numba-cuda with cuda.core's
    launch, and no KNETC_PREPARED_LAUNCH=0 (read once per process)."""
    if not _ENABLED:
        ok = os.environ.get("KNETC_PREPARED_LAUNCH", "1") != "0" and real_gpu_available()
        if ok:
            try:
                from cuda.core import LaunchConfig, launch
                from numba.cuda.cudadrv.driver import _to_core_stream
                _CORE.update(config=LaunchConfig, launch=launch, stream=_to_core_stream(0))  # (the legacy stream)
            except ImportError:
                ok = False
        _ENABLED.append(ok)
    return _ENABLED[0]


def prepared(kernel):
    """`kernel` launched through a Prepared if it is a Numba CUDA kernel and enabled(), else
    `kernel` itself (a CPU kernel, the simulator's). Example: ``k = prepared(my_kernel)``"""
    if not enabled():
        return kernel
    from numba.cuda.dispatcher import CUDADispatcher
    return Prepared(kernel) if isinstance(kernel, CUDADispatcher) else kernel


def argument_key(value):
    """What decides a kernel's argument type: ("array", dtype, rank, C- and F-contiguous) for a
    Numba device array, the number's type for a number, None for anything else (Numba's call).
    Example: ``argument_key(1.0)  # <class 'float'>``"""
    if type(value) in _SCALARS:
        if type(value) is int and not -2 ** 63 <= value < 2 ** 63:
            return None
        return type(value)
    dummy = getattr(value, "_dummy", None)  # a Numba DeviceNDArray
    if dummy is None or not hasattr(value, "gpu_data"):
        return None
    return ("array", value.dtype.str, len(value.shape), dummy.is_c_contig, dummy.is_f_contig)


def pack(value, into):
    """Append `value`'s kernel arguments to `into` as Numba's launcher lays them out."""
    if type(value) in _SCALARS:
        into.append(_SCALARS[type(value)](value))
        return
    pointer = value.device_ctypes_pointer.value if value.size else 0
    into += [0, 0, value.size, value.dtype.itemsize, pointer or 0, *value.shape, *value.strides]


_PREPARED = {}  # Numba kernel -> prepared(kernel), for library routines that launch by name


def prepared_once(kernel):
    """prepared(kernel), made once per kernel (library routines: kernels/optimizers.py).
    Example: ``prepared_once(fill_cuda)[blocks, 256](out, 0.0)``"""
    found = _PREPARED.get(kernel)
    if found is None:
        found = _PREPARED[kernel] = prepared(kernel)
    return found


def library_launch(kernel, blocks, threads, *args):
    """A library routine's launch (kernels/*.py): prepared once per kernel, so that a GPU
    launches it without Numba's dispatch. Example: ``library_launch(fill, blocks, 256, out, 0.0)``"""
    prepared_once(kernel)[blocks, threads](*args)


_ALL = weakref.WeakSet()  # every Prepared, for forget()


def forget():
    """Drop every kernel found so far: they belong to the context current when found (call it
    when another device becomes current, as kn.gpu(d) does)."""
    for k in list(_ALL):
        k.compiled.clear()


class Prepared:
    """A Numba CUDA kernel whose launches skip the dispatcher once its argument types repeat."""

    def __init__(self, kernel):
        self.kernel, self.compiled = kernel, {}  # argument keys -> cuda.core kernel, or None
        self.configs = {}  # (blocks, threads) -> cuda.core LaunchConfig
        _ALL.add(self)

    def __getitem__(self, config):
        blocks, threads = config
        return lambda *args: self.launch(blocks, threads, args)

    def launch(self, blocks, threads, args):
        keys = tuple(argument_key(a) for a in args)
        compiled = self.compiled.get(keys, False)
        if compiled is False or compiled is None:
            self.kernel[blocks, threads](*args)  # Numba's call: compiles, checks and launches
            if compiled is False:
                self.compiled[keys] = self._find(keys, args)
            return
        config = self.configs.get((blocks, threads))
        if config is None:
            config = self.configs[blocks, threads] = _CORE["config"](grid=_dim3(blocks), block=_dim3(threads),
                                                                      shmem_size=0)
        packed = []
        for a in args:
            pack(a, packed)
        _CORE["launch"](_CORE["stream"], config, compiled, *packed)

    def _find(self, keys, args):
        """The cuda.core kernel Numba compiled for these arguments, or None (Numba's call, always)."""
        if None in keys:
            return None
        try:
            types = tuple(self.kernel.typeof_pyval(a) for a in args)
            overload = self.kernel.overloads.get(types)
            if overload is None or any(getattr(overload, flag, False)
                                       for flag in ("cooperative", "debug", "launch_config_sensitive")):
                return None
            return overload._codelibrary.get_cufunc().kernel
        except Exception:  # numba-cuda internals moved: keep Numba's call
            return None


def _dim3(n):
    return tuple(int(m) for m in n) + (1,) * (3 - len(n)) if isinstance(n, tuple) else (int(n), 1, 1)
