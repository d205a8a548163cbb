"""Device memory pool with Knet's allocator, installed as Numba's memory manager.

Training allocates the same few array sizes over and over, and cuMemAlloc/cuMemFree
are slow (and cuMemFree synchronizes), so freed blocks are kept per size class and
handed out again. ``MemoryPool.alloc`` follows Knet:

1. reuse a cached block of the request's size class;
2. else allocate a new block from the raw allocator;
3. on out-of-memory, run ``gc.collect()`` (finalizers of dead arrays return their
   blocks to the pool) and retry 1 and 2;
4. still out of memory: release every cached block to the raw allocator, retry 2;
5. else raise MemoryError with the request and the pool's stats.

Size classes (``size_class``): requests up to 1 MiB round up to a multiple of 512
bytes (the driver's own granularity, so nothing is wasted); larger ones round up to
the next of 2**e * (1, 1.25, 1.5, 1.75), wasting at most 25% but letting similar
large sizes (batches of varying length) share blocks.

Reuse is safe because knetc issues all work on one stream: a block freed by one
kernel's output and reused by the next is ordered by the stream (Knet assumes the
same). Numba's ``defer_cleanup`` is honoured: blocks freed inside it return to the
pool only when it ends.

Example::

    pool = MemoryPool(HostAllocator(limit=1 << 20))
    h = pool.alloc(1000); pool.free(h); assert pool.alloc(900) == h  # same class, reused

On a GPU call ``install()`` before the first CUDA call; afterwards every Numba device
allocation (``cuda.device_array``, ``cuda.to_device``, kernel outputs) uses the pool.
"""
import contextlib
import gc
import importlib
import os
import threading
import warnings
import weakref

import numpy as np

from ..report import enabled, report
from . import launch
from .device import simulator_active

SMALL_STEP = 512          # size-class step for small requests, in bytes
SMALL_LIMIT = 1 << 20     # requests above this use quarter-power-of-two classes


class OutOfDeviceMemory(Exception):
    """Raised by a raw allocator when it has no room; the pool then collects and retries."""


# --------------------------------------------------------------------------- allocators

class HostAllocator:
    """Raw allocator backed by numpy byte buffers, with an optional byte limit.

    Stands in for the device under the simulator and in tests: hitting ``limit``
    raises OutOfDeviceMemory just like a full GPU. Handles are the buffers' addresses.
    Example: ``a = HostAllocator(limit=4096); h = a.alloc(512); a.buffer(h)[:] = 0``
    """

    def __init__(self, limit=None):
        self.limit = limit
        self.bytes_allocated = 0
        self._buffers = {}  # handle -> numpy buffer that owns the bytes

    def alloc(self, nbytes):
        if self.limit is not None and self.bytes_allocated + nbytes > self.limit:
            raise OutOfDeviceMemory("host allocator: %d bytes requested, %d of %d in use"
                                    % (nbytes, self.bytes_allocated, self.limit))
        buf = np.empty(max(nbytes, 1), dtype=np.uint8)  # never 0 bytes: handles stay unique
        handle = buf.ctypes.data
        self._buffers[handle] = (buf, nbytes)
        self.bytes_allocated += nbytes
        return handle

    def free(self, handle):
        _, nbytes = self._buffers.pop(handle)
        self.bytes_allocated -= nbytes

    def buffer(self, handle):
        """The numpy uint8 array behind ``handle`` (for tests and debugging)."""
        return self._buffers[handle][0]


class CudaDriverAllocator:
    """Raw allocator on the CUDA driver API (cuda-python's cuMemAlloc / cuMemFree).

    Needs a current CUDA context; Numba makes its context current before it asks the
    memory manager for memory. Handles are device addresses as ints.
    Example: ``pool = MemoryPool(CudaDriverAllocator())``
    """

    def __init__(self):
        from cuda.bindings import driver  # imported here: not needed under the simulator
        self._cu = driver

    def alloc(self, nbytes):
        cu = self._cu
        err, ptr = cu.cuMemAlloc(nbytes)
        if err == cu.CUresult.CUDA_ERROR_OUT_OF_MEMORY:
            raise OutOfDeviceMemory("cuMemAlloc(%d): out of memory" % nbytes)
        if err != cu.CUresult.CUDA_SUCCESS:
            raise RuntimeError("cuMemAlloc(%d) failed: %s" % (nbytes, err.name))
        return int(ptr)

    def free(self, handle):
        cu = self._cu
        (err,) = cu.cuMemFree(cu.CUdeviceptr(handle))
        if err != cu.CUresult.CUDA_SUCCESS:
            raise RuntimeError("cuMemFree(%#x) failed: %s" % (handle, err.name))


# --------------------------------------------------------------------------- the pool

def size_class(nbytes):
    """Bytes actually allocated for a request of ``nbytes`` (see the module docstring).

    Example: ``size_class(1) == 512; size_class(SMALL_LIMIT + 1) == 1.25 * SMALL_LIMIT``
    """
    if nbytes <= SMALL_LIMIT:
        return max(1, -(-nbytes // SMALL_STEP)) * SMALL_STEP
    step = 1 << ((nbytes - 1).bit_length() - 3)  # a quarter of the power of two below
    return -(-nbytes // step) * step


class MemoryPool:
    """Knet's caching allocator over a raw allocator (``alloc(n) -> handle``, ``free(h)``).

    ``alloc(nbytes) -> handle`` and ``free(handle)``; handles are whatever the raw
    allocator returns (ints). Thread-safe; ``free`` may be called from finalizers,
    including during the ``gc.collect()`` that ``alloc`` itself runs.
    Example: ``pool = MemoryPool(HostAllocator()); h = pool.alloc(100); pool.free(h)``
    """

    def __init__(self, allocator):
        self.allocator = allocator
        self._free = {}     # size class -> list of cached handles
        self._in_use = {}   # handle -> size class
        # Re-entrant: gc.collect() inside alloc runs finalizers that call free().
        self._lock = threading.RLock()
        self.generation = 0  # bumped by reset(): stale handles must not come back
        self.hits = 0              # requests served at once from the cache
        self.misses = 0            # all other requests (hits + misses == requests)
        self.cache_retry_hits = 0  # misses served from the cache after gc.collect()
        self.raw_allocs = 0        # successful raw allocations
        self.raw_frees = 0         # blocks given back to the raw allocator
        self.bytes_in_use = 0      # size-class bytes handed out and not yet freed
        self.bytes_cached = 0      # size-class bytes held in the free lists
        self.peak_bytes = 0        # max of bytes_in_use + bytes_cached
        self.gc_retries = 0        # times step 3 (gc.collect) ran
        self.free_all_retries = 0  # times step 4 (release the cache) ran
        self.oom_errors = 0        # MemoryErrors raised

    def on_event(self, kind, nbytes):
        """Hook called on every pool event; does nothing by default.

        kind is one of "hit", "raw_alloc", "free", "gc_retry", "free_all", "oom";
        nbytes is the size class (for "free_all", the bytes released).
        Example: ``pool.on_event = lambda kind, n: print(kind, n)``
        """

    def size_class(self, nbytes):
        """The size class of a request of ``nbytes``; see module-level size_class."""
        return size_class(nbytes)

    def alloc(self, nbytes):
        """A handle to a block of at least ``nbytes`` bytes (Knet's steps 1-5)."""
        size = size_class(nbytes)
        with self._lock:
            handle = self._take_cached(size)
            if handle is not None:
                self.hits += 1
                return self._hand_out(handle, size)
            self.misses += 1  # from here on the request counts as a miss
            handle = self._raw_alloc(size)
            if handle is None:
                # Dead arrays in reference cycles only return their blocks when the
                # cycle collector runs their finalizers.
                self.gc_retries += 1
                self.on_event("gc_retry", size)
                gc.collect()
                handle = self._take_cached(size)
                if handle is not None:
                    self.cache_retry_hits += 1
                else:
                    handle = self._raw_alloc(size)
            if handle is None:
                # Blocks cached in other classes are useless to this request: give
                # them all back so the raw allocator can carve them anew.
                self.free_all_retries += 1
                self.free_cached()
                handle = self._raw_alloc(size)
            if handle is None:
                self.oom_errors += 1
                self.on_event("oom", size)
                raise MemoryError(
                    "knetc memory pool: out of device memory allocating %d bytes (size class "
                    "%d) after gc.collect() and releasing the cache; pool stats: %s"
                    % (nbytes, size, self.stats()))
            return self._hand_out(handle, size)

    def free(self, handle):
        """Return a block from ``alloc`` to its size class's free list (not to the device)."""
        with self._lock:
            size = self._in_use.pop(handle)
            self.bytes_in_use -= size
            self._free.setdefault(size, []).append(handle)
            self.bytes_cached += size
            self.on_event("free", size)

    def free_cached(self):
        """Give every cached block back to the raw allocator (Knet's ``gc()``); returns bytes.

        Example: ``pool.free_cached()  # before handing the GPU to another library``
        """
        with self._lock:
            released = 0
            while self._free:
                size, handles = self._free.popitem()
                while handles:
                    self.allocator.free(handles.pop())
                    self.raw_frees += 1
                    self.bytes_cached -= size
                    released += size
            self.on_event("free_all", released)
            return released

    def reset(self, release=True):
        """Forget every block, e.g. when the CUDA context is destroyed.

        Cached blocks are released first when ``release``; blocks in use are dropped
        (their memory dies with the context) and their later ``free`` is ignored by
        callers that check ``generation`` (the memory manager below does).
        """
        with self._lock:
            if release:
                self.free_cached()
            self._free.clear()
            self._in_use.clear()
            self.bytes_in_use = self.bytes_cached = 0
            self.generation += 1

    def stats(self):
        """The counters as a dict. Example: ``pool.stats()["hits"]``"""
        with self._lock:
            return {
                "hits": self.hits, "misses": self.misses, "raw_allocs": self.raw_allocs,
                "raw_frees": self.raw_frees, "bytes_in_use": self.bytes_in_use,
                "bytes_cached": self.bytes_cached, "peak_bytes": self.peak_bytes,
                "blocks_in_use": len(self._in_use),
                "blocks_cached": sum(len(h) for h in self._free.values()),
                "cache_retry_hits": self.cache_retry_hits, "gc_retries": self.gc_retries,
                "free_all_retries": self.free_all_retries,
                "oom_errors": self.oom_errors,
            }

    def _hand_out(self, handle, size):
        self._in_use[handle] = size
        self.bytes_in_use += size
        self.peak_bytes = max(self.peak_bytes, self.bytes_in_use + self.bytes_cached)
        return handle

    def _take_cached(self, size):
        handles = self._free.get(size)
        if not handles:
            return None
        handle = handles.pop()
        self.bytes_cached -= size
        self.on_event("hit", size)
        return handle

    def _raw_alloc(self, size):
        try:
            handle = self.allocator.alloc(size)
        except OutOfDeviceMemory:
            return None
        self.raw_allocs += 1
        self.on_event("raw_alloc", size)
        return handle


_pools = {}  # device id -> MemoryPool


def get_pool(device_id=0):
    """The process-wide pool of a device (created on first use).

    On a GPU it allocates with cuMemAlloc; under the simulator (which has no device
    memory and no memory-manager hook) it is a HostAllocator pool nobody else uses.
    Example: ``get_pool().stats()["bytes_in_use"]``
    """
    pool = _pools.get(device_id)
    if pool is None:
        allocator = HostAllocator() if simulator_active() else CudaDriverAllocator()
        pool = _pools.setdefault(device_id, MemoryPool(allocator))
    return pool


# --------------------------------------------------------------------------- Numba EMM

try:
    from cuda.bindings.driver import CUdeviceptr
    from numba.cuda import GetIpcHandleMixin, HostOnlyCUDAMemoryManager, MemoryInfo
    from numba.cuda.cudadrv.driver import AutoFreePointer
    HAVE_NUMBA_EMM = True
except ImportError:
    # The simulator has no EMM interface; these stand-ins keep the class below
    # importable and testable there (install() refuses to register it).
    HAVE_NUMBA_EMM = False

    def CUdeviceptr(address):
        return address

    class GetIpcHandleMixin:
        def get_ipc_handle(self, memory):
            raise NotImplementedError("no IPC under the CUDA simulator")

    class HostOnlyCUDAMemoryManager:
        def __init__(self, *args, **kwargs):
            if "context" not in kwargs:
                raise RuntimeError("Memory manager requires a context")
            self.context = kwargs.pop("context")

        def reset(self):
            pass

        @contextlib.contextmanager
        def defer_cleanup(self):
            yield

    class AutoFreePointer:
        def __init__(self, context, pointer, size, owner=None, finalizer=None):
            self.context, self.device_pointer, self.size = context, pointer, size
            self.finalizer = finalizer

        def own(self):
            return _OwnedStandIn(self)

    class _OwnedStandIn:
        """The only owner of a stand-in pointer (no views): its death frees the block."""

        def __init__(self, mem):
            self.context, self.device_pointer, self.size = mem.context, mem.device_pointer, mem.size
            self._finalizer = weakref.finalize(self, mem.finalizer)

        def free(self):
            self._finalizer()

    from collections import namedtuple
    MemoryInfo = namedtuple("MemoryInfo", "free total")


class PoolMemoryManager(GetIpcHandleMixin, HostOnlyCUDAMemoryManager):
    """Numba External Memory Management plugin: device allocations come from a MemoryPool.

    Numba creates one per CUDA context (``context=`` keyword). Pinned/mapped host
    memory and IPC keep Numba's own implementations (inherited). ``pool=`` overrides
    the device's pool from get_pool (tests pass a HostAllocator pool and a fake context).
    Example: ``numba.cuda.set_memory_manager(PoolMemoryManager)``  (or just ``install()``)
    """

    def __init__(self, *args, pool=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._pool = pool
        self._live = {}      # handle -> AutoFreePointer: keeps it alive while owned
        self._defer_depth = 0
        self._deferred = []  # (handle, generation) freed during defer_cleanup

    @property
    def pool(self):
        if self._pool is None:
            self._pool = get_pool(self.context.device.id)
        return self._pool

    def initialize(self):
        # Like Numba's manager: size the pending-deallocation queue of host memory.
        deallocs = getattr(self, "deallocations", None)
        if deallocs is not None and not deallocs.memory_capacity:
            deallocs.memory_capacity = self.get_memory_info().total
        self.pool  # bind the pool of this context's device now

    def memalloc(self, size):
        """An owned pointer to a pool block; the block returns when no owner is left.

        Same scheme as Numba's own manager: an AutoFreePointer (a MemoryPointer) held
        here, handed out through ``own()``. Array views take further references, so a
        view keeps the block alive after its base array is gone.
        """
        pool = self.pool
        handle = pool.alloc(size)
        finalizer = self._make_finalizer(pool, handle, pool.generation)
        # A proxy, as in Numba's own manager: pointers must not keep the context alive.
        ctx = weakref.proxy(self.context) if self.context is not None else None
        mem = AutoFreePointer(ctx, CUdeviceptr(handle), size, finalizer=finalizer)
        self._live[handle] = mem
        return mem.own()

    def _make_finalizer(self, pool, handle, generation):
        # Must not reference the pointer itself (or the manager strongly): they must die.
        manager = weakref.ref(self)
        live = self._live

        def return_block():
            live.pop(handle, None)
            mm = manager()
            if mm is not None and mm._defer_depth:
                mm._deferred.append((handle, generation))
            elif pool.generation == generation:  # else the context was reset
                pool.free(handle)
        return return_block

    def get_memory_info(self):
        """Driver (free, total), counting the pool's cached blocks as free."""
        if not HAVE_NUMBA_EMM:
            raise NotImplementedError("no device memory under the CUDA simulator")
        from numba.cuda.cudadrv.driver import driver
        free, total = driver.cuMemGetInfo()
        return MemoryInfo(free=free + self.pool.bytes_cached, total=total)

    def reset(self):
        # The context is about to be destroyed: cached blocks can still be freed now;
        # blocks in use die with it (generation makes their finalizers no-ops).
        super().reset()
        if self._pool is not None:
            self._pool.reset(release=True)
        self._live.clear()

    @contextlib.contextmanager
    def defer_cleanup(self):
        """While active, freed blocks are held back (async work may still use them)."""
        with super().defer_cleanup():
            self._defer_depth += 1
            try:
                yield
            finally:
                self._defer_depth -= 1
                if not self._defer_depth:
                    deferred, self._deferred = self._deferred, []
                    for handle, generation in deferred:
                        if self.pool.generation == generation:
                            self.pool.free(handle)

    @property
    def interface_version(self):
        return 1  # the EMM interface version this plugin implements


def _context_exists():
    """True if Numba already created a CUDA context (too late for set_memory_manager)."""
    try:
        from numba.cuda.cudadrv.driver import driver
        return any(dev.primary_context is not None for dev in driver.devices.values())
    except Exception:
        return False


def install():
    """Make the pool Numba's memory manager; True if registered.

    Must run before Numba creates its CUDA context (the first device allocation or
    kernel launch): a context keeps the manager it was created with, so a late call
    warns and returns False. Under the simulator it is a no-op returning False (the
    simulator has no memory-manager hook). Without a GPU it still registers (harmless).
    Example: ``knetc.runtime.pool.install()  # at start-up, before any cuda.* call``
    """
    if simulator_active() or not HAVE_NUMBA_EMM:
        return False
    if _context_exists():
        warnings.warn("knetc pool: a CUDA context already exists; install() must run "
                      "before the first CUDA call, so Numba's own allocator stays in use")
        return False
    from numba import cuda
    cuda.set_memory_manager(PoolMemoryManager)
    return True


_installed = False
_FAST_ARRAYS = []  # install_once: [DeviceNDArray] on a real GPU (device_array makes arrays directly)


def _quiet_small_grids():
    """Turn off Numba's warning for grids under 128 blocks (unless the user's environment sets
    NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS): knetc sizes its grids to the work, and a 100-row
    softmax or a one-block sum would warn on every launch."""
    if "NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS" in os.environ:
        return
    for name in ("numba.cuda.core.config", "numba.core.config"):  # (numba-cuda's, then Numba's own)
        try:
            config = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(config, "CUDA_LOW_OCCUPANCY_WARNINGS"):
            config.CUDA_LOW_OCCUPANCY_WARNINGS = 0


def install_once():
    """install(), once per process (knetc calls it before its first CUDA allocation), with
    KNETC_LOG=memory reporting the pool's events."""
    global _installed
    if not _installed:
        _quiet_small_grids()
        if launch.enabled():  # a real GPU with numba-cuda's internals at hand, and not KNETC_PREPARED_LAUNCH=0
            from numba.cuda.cudadrv.devicearray import DeviceNDArray
            _FAST_ARRAYS[:] = [DeviceNDArray]
        install()  # False under the simulator, and (with a warning) after a context exists
        if enabled("memory"):
            get_pool().on_event = lambda kind, nbytes: report("memory", f"{kind} {nbytes} bytes")
        _installed = True


def device_array(shape, dtype=np.float32, stream=0):
    """An uninitialized C-contiguous device array; with ``install()`` done its memory comes
    from the pool.

    On a GPU it is made as ``numba.cuda.device_array`` makes it, less that function's checks
    of its arguments and of the context: on the H200's host those took about 14 of its 36 us
    (estimated from its parts, each measured), and drivers make one array per output.
    ``KNETC_PREPARED_LAUNCH=0`` keeps Numba's path. Under the simulator it is
    ``numba.cuda.device_array``.
    Example: ``out = device_array((64, 10), np.float32)``
    """
    from numba import cuda
    shape, dtype = ((shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)), np.dtype(dtype)
    if not _FAST_ARRAYS or not all(type(n) is int and n > 0 for n in shape):
        return cuda.device_array(shape, dtype=dtype, stream=stream)
    strides, step = [], dtype.itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return _FAST_ARRAYS[0](shape, tuple(reversed(strides)), dtype, stream, cuda.current_context().memalloc(step))
