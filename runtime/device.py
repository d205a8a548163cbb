"""Tiny device probes: is the CUDA simulator on, is there a GPU to run kernels on, is this a
device array.

Example: ``if gpu_available(): run_cuda_path() else: run_cpu_path()``
"""
import functools
import os


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
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:  # no driver, broken install, ...: no GPU for us
        return False


def real_gpu_available():
    """True only for a real CUDA device (the simulator does not count): what target="auto" uses."""
    return gpu_available() and not simulator_active()


def is_device_array(x):
    """True for CUDA arrays: anything with __cuda_array_interface__, or a simulator array.
    Example: ``is_device_array(numba.cuda.to_device(np.zeros(3)))  # True``"""
    return hasattr(x, "__cuda_array_interface__") or getattr(x, "__cuda_ndarray__", False)
