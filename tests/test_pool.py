"""The memory pool (Knet's allocator) on a HostAllocator, and its Numba EMM plugin."""
import gc
import json
import os
import random
import subprocess
import sys
import weakref

import numpy as np
import pytest

from knetc.runtime import device, pool
from knetc.runtime.pool import (
    SMALL_LIMIT, HostAllocator, MemoryPool, OutOfDeviceMemory, PoolMemoryManager,
    device_array, install, size_class)

MiB = 1 << 20


@pytest.fixture
def no_auto_gc():
    """Garbage cycles must survive until the pool itself runs gc.collect()."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


class CycleBlock:
    """Holds a pool block; only reachable through a self-cycle, so only gc frees it."""

    def __init__(self, pool, nbytes):
        self.handle = pool.alloc(nbytes)
        self.me = self  # the cycle
        weakref.finalize(self, pool.free, self.handle)  # does not reference self


def test_device_probes():
    assert device.simulator_active() == (os.environ.get("KNETC_TEST_GPU") != "1")
    assert device.gpu_available() is True


def test_size_classes():
    assert [size_class(n) for n in (0, 1, 512, 513, 1000)] == [512, 512, 512, 1024, 1024]
    assert size_class(SMALL_LIMIT) == SMALL_LIMIT
    assert size_class(SMALL_LIMIT + 1) == SMALL_LIMIT + SMALL_LIMIT // 4
    assert size_class(int(1.3 * MiB)) == int(1.5 * MiB)
    assert size_class(2 * MiB) == 2 * MiB
    assert size_class(2 * MiB + 1) == int(2.5 * MiB)
    sizes = list(range(0, 3 * MiB, 4099)) + [MiB * k + d for k in range(1, 70) for d in (-1, 0, 1)]
    for n in sizes:
        c = size_class(n)
        assert c >= n and c % 512 == 0
        if n > SMALL_LIMIT:
            assert c <= 1.25 * n  # quarter-power-of-two steps waste at most 25%
    classes = [size_class(n) for n in sorted(sizes)]
    assert classes == sorted(classes)


def test_reuse_same_class():
    alloc = HostAllocator()
    pool = MemoryPool(alloc)
    h = pool.alloc(1000)
    alloc.buffer(h)[:1000] = 7  # the block is real, writable memory
    pool.free(h)
    assert pool.alloc(900) == h  # same 1024-byte class: the cached block comes back
    other = pool.alloc(2000)     # another class: a fresh block
    assert other != h
    s = pool.stats()
    assert (s["hits"], s["misses"], s["raw_allocs"]) == (1, 2, 2)
    assert s["bytes_in_use"] == 1024 + 2048 and s["bytes_cached"] == 0


def test_oom_runs_gc_then_reuses(no_auto_gc):
    pool = MemoryPool(HostAllocator(limit=4096))
    block = CycleBlock(pool, 4096)
    first = block.handle
    del block  # unreachable, but its finalizer waits for the cycle collector
    assert pool.stats()["blocks_in_use"] == 1
    assert pool.alloc(4000) == first  # raw alloc failed -> gc.collect -> cache hit
    s = pool.stats()
    assert (s["gc_retries"], s["cache_retry_hits"], s["free_all_retries"]) == (1, 1, 0)
    assert (s["hits"], s["misses"], s["raw_allocs"]) == (0, 2, 1)  # both requests missed


def test_oom_releases_cache_then_retries(no_auto_gc):
    alloc = HostAllocator(limit=4096)
    pool = MemoryPool(alloc)
    small = pool.alloc(2048)
    pool.free(small)  # cached in the 2048 class, still held from the allocator
    big = pool.alloc(4096)  # needs the cached bytes back: gc (no help), then free-all
    s = pool.stats()
    assert (s["gc_retries"], s["free_all_retries"], s["raw_frees"]) == (1, 1, 1)
    assert s["bytes_cached"] == 0 and s["bytes_in_use"] == 4096
    assert alloc.bytes_allocated == 4096
    pool.free(big)


def test_final_memory_error(no_auto_gc):
    pool = MemoryPool(HostAllocator(limit=4096))
    keep = pool.alloc(3000)
    with pytest.raises(MemoryError) as info:
        pool.alloc(5000)
    msg = str(info.value)
    assert "5000 bytes" in msg and "size class 5120" in msg
    assert "'bytes_in_use': 3072" in msg and "'gc_retries': 1" in msg
    s = pool.stats()
    assert (s["gc_retries"], s["free_all_retries"], s["oom_errors"]) == (1, 1, 1)
    pool.free(keep)
    with pytest.raises(OutOfDeviceMemory):  # the raw allocator's own signal
        HostAllocator(limit=10).alloc(11)


def test_stats_stay_consistent():
    rng = random.Random(0)
    alloc = HostAllocator(limit=64 * 1024)
    pool = MemoryPool(alloc)
    events = []
    pool.on_event = lambda kind, nbytes: events.append(kind)
    live, requests = {}, 0
    for _ in range(400):
        if live and rng.random() < 0.45:
            pool.free(live.pop(rng.choice(list(live))))
        else:
            n = rng.choice([100, 600, 1500, 3000, 9000])
            requests += 1
            try:
                h = pool.alloc(n)
            except MemoryError:  # only when the blocks in use leave no room
                assert pool.bytes_in_use + size_class(n) > alloc.limit
                assert pool.bytes_cached == 0
                continue
            assert h not in live
            live[h] = h
        s = pool.stats()
        assert s["blocks_in_use"] == len(live)
        assert s["bytes_in_use"] + s["bytes_cached"] == alloc.bytes_allocated
        assert s["raw_allocs"] - s["raw_frees"] == s["blocks_in_use"] + s["blocks_cached"]
        assert s["hits"] + s["misses"] == requests
    s = pool.stats()
    assert s["hits"] > 0 and s["free_all_retries"] > 0  # the limit was hit along the way
    assert s["oom_errors"] > 0
    assert events.count("hit") == s["hits"] + s["cache_retry_hits"]
    assert events.count("raw_alloc") == s["raw_allocs"]
    for h in list(live):
        pool.free(live.pop(h))
    released = pool.free_cached()
    assert released > 0 and alloc.bytes_allocated == 0
    assert pool.stats()["bytes_cached"] == 0


class FakeDevice:
    id = 0


class FakeContext:
    device = FakeDevice()


def test_memory_manager_memalloc_returns_block():
    pool = MemoryPool(HostAllocator())
    mm = PoolMemoryManager(context=FakeContext(), pool=pool)
    assert mm.interface_version == 1
    mem = mm.memalloc(1000)
    assert mem.size == 1000 and pool.stats()["bytes_in_use"] == 1024
    handle = int(mem.device_pointer)
    del mem  # the finalizer returns the block to the pool, not to the allocator
    assert pool.stats()["bytes_cached"] == 1024 and pool.stats()["bytes_in_use"] == 0
    mem = mm.memalloc(700)
    assert int(mem.device_pointer) == handle and pool.stats()["hits"] == 1
    with mm.defer_cleanup():  # held back until the deferral ends
        del mem
        assert pool.stats()["blocks_in_use"] == 1
    assert pool.stats()["blocks_in_use"] == 0
    mem = mm.memalloc(100)
    mm.reset()  # context gone: the stale block must not come back to the new generation
    del mem
    assert pool.stats()["blocks_cached"] == 0 and pool.stats()["bytes_in_use"] == 0


def test_install_and_device_array_under_simulator():
    if not device.simulator_active():
        pytest.skip("simulator only")
    assert install() is False
    a = device_array((3, 4), np.float64)
    assert a.shape == (3, 4) and a.dtype == np.float64


_REAL_EMM_SCRIPT = r"""
import gc, json
from numba import cuda
from knetc.runtime import pool as P

class Dev: id = 0
class Ctx: device = Dev()
pool = P.MemoryPool(P.HostAllocator())
mm = P.PoolMemoryManager(context=Ctx(), pool=pool)  # would raise if a method were abstract
mem = mm.memalloc(3000)
out = {"emm": P.HAVE_NUMBA_EMM, "abstract": sorted(P.PoolMemoryManager.__abstractmethods__),
       "is_pointer": isinstance(mem._view, cuda.MemoryPointer), "size": mem.size,
       "ptr_ok": mem.device_pointer_value == next(iter(pool._in_use))}
view = mem.view(1024)  # what slicing a device array does
del mem
gc.collect()
out["kept_by_view"] = pool.stats()["bytes_in_use"]
del view
gc.collect()
out["returned"] = pool.stats()["bytes_cached"]
cuda.set_memory_manager(P.PoolMemoryManager)  # Numba's own interface check
out["registered"] = cuda.cudadrv.driver._memory_manager is P.PoolMemoryManager
print(json.dumps(out))
"""


def test_memory_manager_against_real_numba_interface():
    """The simulator lacks the EMM classes, so check against the real ones in a subprocess."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, "-c", _REAL_EMM_SCRIPT], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"emm": True, "abstract": [], "is_pointer": True, "size": 3000,
                   "ptr_ok": True, "kept_by_view": 3072, "returned": 3072, "registered": True}


def test_numbas_small_grid_warning_is_off_unless_the_user_sets_it(monkeypatch):
    """knetc launches grids sized to the work (a one-block sum): Numba would warn on each."""
    config = pytest.importorskip("numba.cuda.core.config")
    monkeypatch.setattr(config, "CUDA_LOW_OCCUPANCY_WARNINGS", 1)
    monkeypatch.setenv("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "1")
    pool._quiet_small_grids()
    assert config.CUDA_LOW_OCCUPANCY_WARNINGS == 1  # the user's choice stands
    monkeypatch.delenv("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS")
    pool._quiet_small_grids()
    assert config.CUDA_LOW_OCCUPANCY_WARNINGS == 0


FAST_ARRAYS = r"""
import ctypes
import numpy as np
from numba import cuda
from numba.cuda.cudadrv.devicearray import DeviceNDArray
from knetc.runtime import pool

asked = []

class Memory:
    device_ctypes_pointer = ctypes.c_void_p(4096)

class Context:
    def memalloc(self, nbytes):
        asked.append(nbytes)
        return Memory()

cuda.current_context = Context
pool._FAST_ARRAYS[:] = [DeviceNDArray]
for shape, dtype in [((3, 4), np.float32), ((2, 1, 5), np.int64), (7, np.float64)]:
    a, like = pool.device_array(shape, dtype), np.empty(shape, dtype)
    assert (a.shape, a.strides, a.dtype, a.size) == (like.shape, like.strides, like.dtype, like.size), (a.shape, a.strides)
    assert a.is_c_contiguous() and asked[-1] == like.nbytes
print("made", len(asked))
"""


def test_arrays_made_directly_on_a_gpu_are_those_numba_makes():
    """device_array's fast path (a real GPU): the shape, strides, dtype and bytes of numpy's C
    layout, from one allocation (checked with a stand-in context: no GPU needed)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-c", FAST_ARRAYS], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "made 3"
