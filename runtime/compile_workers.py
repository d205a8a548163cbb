"""Compile a program's new kernels in several processes at once.

Numba compiles one function at a time in a process (a global lock), and a cold program's
first run is nearly all Numba's time: typing, lowering and LLVM, 0.06-0.25 s a kernel on
a 2.6 GHz core. Before such a run, the kernels still to compile are shared out between
this process and forked copies of it, largest first, each process taking the next from
a queue; the copies compile into Numba's on-disk cache (the kernel cache) and exit, and
this process loads what they built (a few ms a kernel) when the driver calls the kernels.

    KNETC_COMPILE_WORKERS=N   at most N processes compile at once, this one included
                              (default: the CPUs this process may run on, at most 8,
                              or its share of them: threads.share_cores; 1 compiles in
                              this process only)

Used on Linux only (fork), for kernels cached on disk, and not once the process has
started a CUDA driver. A copy that fails, dies or stops making progress (STALL_S) costs
nothing but time: what it did not finish, this process compiles itself when the driver
calls it, raising any compile error where it always did.
"""
import os
import select
import signal
import struct
import sys
import time
import types
import warnings

from . import threads

STALL_S = 60.0  # a copy that finishes no kernel in this long is stopped
MAX_DEFAULT = 8
_ITEM = struct.Struct("<I")  # a queue entry: an index into the work list
_DONE = struct.Struct("<II")  # a copy's report: (index, signatures it compiled rather than loaded)


def processes():
    """How many processes may compile at once (KNETC_COMPILE_WORKERS, else the CPUs)."""
    setting = os.environ.get("KNETC_COMPILE_WORKERS", "").strip()
    if setting:
        try:
            return max(1, int(setting))
        except ValueError:
            raise ValueError(f"knetc: KNETC_COMPILE_WORKERS={setting!r} is not a number of processes") from None
    if not hasattr(os, "sched_getaffinity"):
        return 1
    return min(len(os.sched_getaffinity(0)), threads.shared_cores() or MAX_DEFAULT, MAX_DEFAULT)


def usable():
    return sys.platform.startswith("linux") and hasattr(os, "fork") and processes() > 1 and not _cuda_started()


def _cuda_started():
    """Whether this process has initialised a CUDA driver (a forked copy must not inherit one)."""
    driver = getattr(sys.modules.get("numba.cuda.cudadrv.driver"), "driver", None)
    return getattr(driver, "pid", None) is not None and getattr(driver, "initialization_error", None) is None


def compile_calls(function, arguments, dispatchers):
    """Compile, across processes, what `function(*arguments)` would have Numba compile for
    those of `dispatchers` that are new: nothing compiled in this process, nothing in the
    cache on disk (whose code loads in a few ms). {dispatcher: signatures compiled by
    other processes}: their code is in the cache, loaded by this process on first call."""
    new = [d for d in dispatchers if not d.overloads and (index := _index(d)) and not os.path.exists(index)]
    if not (new and usable()):
        return {}  # (no dry run)
    try:
        calls = calls_made(function, arguments, new)
    except Exception:  # (code the dry run cannot run: the driver compiles as it runs, as without copies)
        return {}
    return compile_all([(d, signatures) for d, signatures in calls.items()])


def _index(dispatcher):
    """The path of Numba's cache index of the dispatcher; None when Numba does not cache it
    (cache=False: only this process can compile it) or keeps it elsewhere (an internal of
    Numba's that moved)."""
    return getattr(getattr(dispatcher._cache, "_cache_file", None), "_index_path", None)


def calls_made(function, arguments, dispatchers):
    """{dispatcher: [argument types of each distinct call]} that `function(*arguments)` makes
    to `dispatchers`, found by a dry run: it runs (with the functions of its module it
    calls, such as a generated driver's loop bodies) with each call to `dispatchers`
    recorded instead of made, a call through threads.in_parallel recorded as its first
    block's, and every other call of a callable global skipped. Meant for generated code
    that only allocates and takes views besides its compiled calls: nothing else runs."""
    calls, scope, recorded = {}, {}, {id(d): d for d in dispatchers}

    def dry(value):
        if id(value) in recorded:
            return lambda *args: calls.setdefault(value, {}).setdefault(tuple(map(value.typeof_pyval, args)))
        if value is threads.in_parallel:
            return lambda kernel, rows, *args: kernel(*args, 0, rows)  # (kernel: its dry stand-in)
        if isinstance(value, types.FunctionType) and value.__module__ == function.__module__:
            return types.FunctionType(value.__code__, scope)  # a loop's body: run dry too
        return (lambda *args, **kwargs: None) if callable(value) and not isinstance(value, (type, types.ModuleType)) else value
    scope.update((name, dry(value)) for name, value in function.__globals__.items())
    types.FunctionType(function.__code__, scope)(*arguments)
    return {d: list(signatures) for d, signatures in calls.items()}


def compile_all(work):
    """Compile work, a list of (dispatcher, [argument types, ...]) none of which this
    process has compiled, across processes(). Returns {dispatcher: signatures compiled by
    other processes}: their code is in Numba's cache, loaded by this process on first call."""
    count = min(processes(), len(work)) if usable() else 1
    if count < 2:
        return {}
    _load_numba_registries()  # once here, not again in every copy
    order = sorted(range(len(work)), key=lambda i: -_cost(work[i]))  # largest first: the last to end is small
    tasks_read, tasks_write = os.pipe()
    done_read, done_write = os.pipe()
    os.write(tasks_write, b"".join(_ITEM.pack(i) for i in order))  # (a few bytes a kernel: fits the pipe)
    os.close(tasks_write)
    children = []
    from numba.core.compiler_lock import global_compiler_lock
    try:
        # Fork holding Numba's compiler lock, so that no other thread of this process holds it
        # (or LLVM's state) half-way in a copy; Python >= 3.12 warns of fork in a process with
        # threads (BLAS's), but a copy runs no thread and no BLAS.
        with global_compiler_lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            for _ in range(count - 1):
                pid = os.fork()
                if pid == 0:
                    _copy(work, tasks_read, done_write)  # never returns
                children.append(pid)
        os.close(done_write)
        while (i := _take(tasks_read)) is not None:
            try:
                for signature in work[i][1]:
                    work[i][0].compile(signature)
            except Exception:  # raised again, where it always was, when the driver calls the kernel
                pass
        return _collect(work, children, done_read)
    finally:
        _stop(children)
        os.close(tasks_read)
        os.close(done_read)


def _copy(work, tasks, done):
    """A forked copy: compile what the queue hands out, report each, exit."""
    status = 1
    try:
        warnings.simplefilter("ignore")  # this process reports Numba's warnings, if any, when it compiles
        while (i := _take(tasks)) is not None:
            dispatcher, signatures = work[i]
            compiled = 0
            for signature in signatures:
                hits = dispatcher.stats.cache_hits[signature]
                dispatcher.compile(signature)
                compiled += dispatcher.stats.cache_hits[signature] == hits
            os.write(done, _DONE.pack(i, compiled))
        status = 0
    finally:
        os._exit(status)  # no atexit handlers, no buffers of the parent's flushed twice


def _take(tasks):
    entry = os.read(tasks, _ITEM.size)  # one reader at a time takes one whole entry
    return _ITEM.unpack(entry)[0] if len(entry) == _ITEM.size else None


def _collect(work, children, done):
    """Wait for the copies; {dispatcher: signatures compiled} of what they finished."""
    messages, deadline = b"", time.monotonic() + STALL_S
    while children and time.monotonic() < deadline:
        if select.select([done], [], [], 0.02)[0]:
            chunk = os.read(done, 4096)
            messages += chunk
            if chunk:  # progress
                deadline = time.monotonic() + STALL_S
        for pid in [pid for pid in children if os.waitpid(pid, os.WNOHANG)[0]]:
            children.remove(pid)
    while select.select([done], [], [], 0)[0] and (chunk := os.read(done, 4096)):  # what exited copies wrote
        messages += chunk
    built = {}
    for i, compiled in _DONE.iter_unpack(messages[:len(messages) - len(messages) % _DONE.size]):
        built[work[i][0]] = built.get(work[i][0], 0) + compiled
    return built


def _stop(children):
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _cost(item):
    dispatcher, signatures = item
    return len(dispatcher.py_func.__code__.co_code) * len(signatures)


def _load_numba_registries():
    """Numba loads its typing and lowering registries (and SciPy's BLAS) on the first
    compilation in a process, about 0.3 s: do it before forking, so that copies share it."""
    try:
        from numba.core.registry import cpu_target
        cpu_target.target_context.refresh()
    except Exception:  # an internal of Numba: without it, each copy loads them itself
        pass
