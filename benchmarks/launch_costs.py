"""Host cost of the pieces of a CUDA kernel launch and of a device array (needs a real GPU).

    python benchmarks/launch_costs.py

Prints microseconds of host time per call (mean of 3000 calls, then a synchronize) for:
Numba's call of a five-argument kernel, knetc's prepared launch of it (runtime/launch.py),
cuda.core's launch with the arguments packed beforehand (the floor), knetc's pool and Numba's
device_array, the allocation alone, a DeviceNDArray on given memory, a reshape, a 64^3 cuBLAS
GEMM, and PyTorch's torch.mm and torch.empty beside them when PyTorch sees the GPU. The
2026-12-04 H200 figures in benchmarks/RESULTS.md came from the same measurements in a
one-off script; this script was written from it after that session's device time was spent,
and benchmarks/device_check.sh runs it. Exit status 3 without a GPU.
"""
import sys
import time

import numpy as np

import knetc  # noqa: F401  (its NumPy compatibility fix comes before numba.cuda compiles)
from knetc.runtime.device import real_gpu_available


def per_call_us(fn, sync, n=3000):
    fn()
    sync()
    started = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - started) / n * 1e6


def main():
    if not real_gpu_available():
        print("launch_costs.py: no CUDA GPU (numba.cuda.is_available() is False, or the simulator is on)")
        return 3
    from numba import cuda
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    from knetc.runtime import cublas, launch, pool
    pool.install_once()
    sync = cuda.synchronize

    @cuda.jit
    def axpy(x, y, out, a, b):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = a * x[i] + y[i] + b

    x, y, out = (pool.device_array((1000,), np.float32) for _ in range(3))
    rows = [("Numba's call, 5 arguments", lambda: axpy[4, 256](x, y, out, 1.0, 0.0))]
    if not launch.enabled():
        print("launch_costs.py: prepared launches are off (KNETC_PREPARED_LAUNCH=0, or numba-cuda without cuda.core)")
        return 3
    prepared = launch.Prepared(axpy)
    rows.append(("knetc's prepared launch (runtime/launch.py)", lambda: prepared[4, 256](x, y, out, 1.0, 0.0)))
    kernel = next(iter(axpy.overloads.values()))._codelibrary.get_cufunc().kernel
    packed = []
    for a in (x, y, out, 1.0, 0.0):
        launch.pack(a, packed)
    core = launch._CORE
    config = core["config"](grid=(4, 1, 1), block=(256, 1, 1), shmem_size=0)
    rows.append(("cuda.core launch, arguments packed before", lambda: core["launch"](core["stream"], config, kernel,
                                                                                      *packed)))
    context = cuda.current_context()
    memory = context.memalloc(25600)
    rows += [("knetc pool.device_array((100, 64))", lambda: pool.device_array((100, 64), np.float32)),
             ("numba.cuda.device_array((100, 64))", lambda: cuda.device_array((100, 64), np.float32)),
             ("the allocation alone (context.memalloc)", lambda: context.memalloc(25600)),
             ("a DeviceNDArray on given memory", lambda: DeviceNDArray((100, 64), (256, 4), np.float32, gpu_data=memory)),
             ("a reshape (a view)", lambda: x.reshape((10, 100)))]
    a, b, c = (pool.device_array((64, 64), np.float32) for _ in range(3))
    if cublas.available():
        rows.append(("knetc cublas.gemm 64x64x64", lambda: cublas.gemm(a, b, c)))
    try:
        import torch
        if torch.cuda.is_available():
            ta, tb = torch.ones(64, 64, device="cuda"), torch.ones(64, 64, device="cuda")
            rows += [("torch.mm 64x64x64", lambda: torch.mm(ta, tb)),
                     ("torch.empty(6400)", lambda: torch.empty(6400, device="cuda"))]
    except ImportError:
        pass
    print(f"host time per call, microseconds (mean of 3000 calls), {cuda.get_current_device().name}")
    for name, fn in rows:
        print(f"  {name:48s} {per_call_us(fn, sync):8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
