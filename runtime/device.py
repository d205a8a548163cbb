"""Tiny device probes: is the CUDA simulator on, is there a GPU to run kernels on, is this a
device array.

Example: ``if gpu_available(): run_cuda_path() else: run_cpu_path()``
"""
import ctypes
import functools
import os

from ..report import transfer


def simulator_active():
    """True when Numba's CUDA simulator is (or will be) in use.

    numba reads NUMBA_ENABLE_CUDASIM once, at its import, so numba.config is the
    authority; the environment variable is the fallback if numba's config lacks it.
    Example: ``simulator_active()  # True under the test suite``
    """
    try:
        import numba
        return bool(int(numba.config.ENABLE_CUDASIM))
    except (ImportError, AttributeError, ValueError):
        return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


@functools.cache
def gpu_available():
    """True when CUDA kernels can run: the simulator is on or a real GPU is present.

    Never raises: a missing driver or library just means False. Cached (probing the
    driver costs milliseconds); call ``gpu_available.cache_clear()`` to re-probe.
    Example: ``gpu_available()  # False on a machine without a GPU or simulator``
    """
    if simulator_active():
        return True
    if not _driver_library_present():
        return False  # no CUDA driver: no need to import numba.cuda (most of a second) to say so
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:  # no driver, broken install, ...: no GPU for us
        return False


def _driver_library_present():
    """Can the CUDA driver library (libcuda) be loaded? Every GPU machine has it."""
    names = ("nvcuda.dll",) if os.name == "nt" else ("libcuda.so.1", "libcuda.so", "libcuda.dylib")
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def real_gpu_available():
    """True only for a real CUDA device (the simulator does not count): what target="auto" uses."""
    return gpu_available() and not simulator_active()


@functools.lru_cache(maxsize=None)
def cuda_compiler_available():
    """Can Numba compile CUDA kernels here (NVVM found: the `cuda` extra's toolkit wheels or a
    CUDA toolkit)? Example: ``cuda_compiler_available()  # False after a plain pip install -e .``"""
    try:
        from numba.cuda.cudadrv import nvvm
        return bool(nvvm.is_available())
    except Exception:  # (no numba-cuda, or a toolkit it cannot load)
        return False


def is_device_array(x):
    """True for CUDA arrays: anything with __cuda_array_interface__, or a simulator array.
    Example: ``is_device_array(numba.cuda.to_device(np.zeros(3)))  # True``"""
    return hasattr(x, "__cuda_array_interface__") or getattr(x, "__cuda_ndarray__", False)


_WRAPPERS = []  # array types wrapping a device array (KnetArray registers itself: knetc/knetarray.py)


def register_device_wrapper(cls):
    """Make `cls` a wrapper of device arrays that compiled CUDA programs understand: an input
    of that type is read through `.data` (its device array), and outputs come back as
    `cls._wrap(device_array)` when an input was one. Returns cls (usable as a decorator)."""
    if cls not in _WRAPPERS:
        _WRAPPERS.append(cls)
    return cls


def device_wrapper(arrays):
    """The registered wrapper type of the first of `arrays` that is one, or None."""
    return next((type(a) for a in arrays if type(a) in _WRAPPERS), None)


# ---------------------------------------------------------------- counted copies
# Every copy knetc makes between host and device goes through these two, so that
# kn.stats() counts them (host_to_device, device_to_host and their bytes).

def upload(host, to=None):
    """A device copy of the host array `host` (C-contiguous as given; a new device array
    from the pool, or written into the device array `to` of the same size), counted in
    kn.stats()["host_to_device"]. Example: ``d = upload(np.ones(3, np.float32))``"""
    import numpy as np
    if not gpu_available():
        raise RuntimeError("no CUDA GPU here (kn.gpu() is -1): KnetArrays and device copies need one, or Numba's "
                           "CUDA simulator (NUMBA_ENABLE_CUDASIM=1); kn.atype() gives the array type this machine has")
    from numba import cuda
    host = np.asarray(host)
    if not host.flags.c_contiguous:
        host = np.ascontiguousarray(host)
    transfer("host_to_device", host.nbytes)
    if to is not None:
        to.copy_to_device(host)
        return to
    return cuda.to_device(host)


def download(device):
    """The values of the device array `device` as a new numpy array, counted in
    kn.stats()["device_to_host"]. Example: ``download(d)  # array([1., 1., 1.], dtype=float32)``"""
    transfer("device_to_host", int(device.size) * device.dtype.itemsize)
    return device.copy_to_host()


def host_copy(x):
    """x as a numpy array: a KnetArray or Numba device array copied down (counted), anything
    else through numpy.asarray. Example: ``labels = host_copy(labels)  # to check them``"""
    import numpy as np
    if hasattr(x, "copy_to_host"):
        if getattr(type(x), "_knetc_kind", None) == "device":
            return np.asarray(x.copy_to_host())  # a KnetArray: counted there
        return download(x)
    return np.asarray(x)
