"""What cuBLAS and cuDNN share: library handles that live and die with their CUDA context,
and the TF32 switch.

Handles. A cuBLAS or cuDNN handle belongs to the CUDA context current when it was created
and should not be used by two host threads at once, so ``HandleCache.get()`` keeps one per
(Numba context, thread). A handle is destroyed (with its context current)

- when that context is reset: ``numba.cuda.close()`` (in the main thread) and
  ``cuda.current_context().reset()`` both call the context's ``reset()``, which this module
  wraps once per context, before the context itself is destroyed;
- when the thread that created it ends;
- at process exit (``atexit``), for every handle still alive.

Callers may register ``on_release`` callbacks (e.g. clearing plan caches that hold
descriptors or device arrays of that context); they run after a context's handles are gone.

TF32. On Ampere and later GPUs cuDNN's default math and cuBLAS's TF32 mode round float32
inputs to 10 mantissa bits, about 1e-3 relative error. knetc keeps full float32 (FMA) math
unless the user asks otherwise: ``knetc.allow_tf32(True)``, or ``KNETC_ALLOW_TF32=1`` in the
environment before knetc is imported. ``allow_tf32()`` with no argument says which is in force.

Example::

    from knetc.runtime.handles import HandleCache, allow_tf32
    cache = HandleCache("cuFoo", create=make_handle, destroy=free_handle)
    h = cache.get()            # this thread's handle for Numba's current context
    allow_tf32(True)           # cuDNN convolutions/RNNs and cuBLAS GEMMs may use TF32 now
"""
import atexit
import os
import threading
import weakref

__all__ = ["allow_tf32", "tf32_allowed", "HandleCache"]

_TRUE = ("1", "true", "yes", "on")
_tf32 = [os.environ.get("KNETC_ALLOW_TF32", "0").strip().lower() in _TRUE]


def allow_tf32(enabled=None):
    """Let cuDNN (convolutions, RNNs) and cuBLAS (GEMMs) use TF32 tensor-core math for float32
    (``True``) or not (``False``, the default: full float32 FMA math). Without an argument,
    only report. Returns the setting in force after the call. Takes effect for the next
    library call; float64 and float16 are not affected. The environment variable
    ``KNETC_ALLOW_TF32=1`` sets the initial value.

    Example: ``kn.allow_tf32(True)  # faster float32 conv/GEMM on Ampere+, ~1e-3 relative error``
    """
    if enabled is not None:
        _tf32[0] = bool(enabled)
    return _tf32[0]


def tf32_allowed():
    """The current TF32 setting (see allow_tf32)."""
    return _tf32[0]


def _numba_context():
    from numba import cuda
    return cuda.current_context()  # also makes Numba's context current


class _Entry:
    """One live handle: its context (weakly), owning thread, value and per-handle state
    (e.g. the stream and math mode last set on it, so they are set only when they change)."""
    __slots__ = ("ctx_ref", "thread", "value", "state")

    def __init__(self, ctx, thread, value):
        self.ctx_ref, self.thread, self.value, self.state = weakref.ref(ctx), thread, value, {}


class _ThreadToken:
    """Lives in a thread-local slot: when the thread ends, it is dropped and its finalizer
    releases that thread's handles."""


class HandleCache:
    """Handles of one library per (CUDA context, thread), destroyed with the context.

    ``create()`` returns a new handle (a ctypes c_void_p) for the current context;
    ``destroy(handle)`` frees it (its status is ignored: nothing can be done about a failure
    during teardown). ``context`` (default: Numba's current context) is any object with
    ``reset()``, ``push()`` and ``pop()``, which is what tests pass as a fake.
    """

    def __init__(self, name, create, destroy, on_release=()):
        self.name, self._create, self._destroy = name, create, destroy
        self.on_release = list(on_release)
        self._entries = {}        # (id(context), thread id) -> _Entry
        self._watched = {}        # id(context) -> weakref to the context whose reset is wrapped
        self._local = threading.local()
        self._lock = threading.RLock()
        self.created = self.destroyed = 0
        _CACHES.add(self)

    # ------------------------------------------------------------------ lookup
    def entry(self, context=None):
        """This thread's _Entry for ``context`` (created on first use)."""
        ctx = _numba_context() if context is None else context
        tid = threading.get_ident()
        key = (id(ctx), tid)
        e = self._entries.get(key)
        if e is not None and e.ctx_ref() is ctx:
            return e
        with self._lock:
            e = self._entries.get(key)
            if e is not None and e.ctx_ref() is not ctx:  # id reused by a new context
                self._entries.pop(key, None)
                e = None
            if e is None:
                self._watch(ctx)
                self._thread_token()
                e = _Entry(ctx, tid, self._create())
                self.created += 1
                self._entries[key] = e
        return e

    def get(self, context=None):
        """This thread's handle for ``context`` (default: Numba's current context)."""
        return self.entry(context).value

    def live(self):
        """How many handles are alive (tests)."""
        return len(self._entries)

    # ------------------------------------------------------------------ release
    def _watch(self, ctx):
        """Wrap ctx.reset once so that the handles go before the context does. The wrapper
        holds the context weakly (no cycle) and chains to another cache's wrapper if any."""
        cid = id(ctx)
        ref = self._watched.get(cid)
        if ref is not None and ref() is ctx:
            return
        ctx_ref = weakref.ref(ctx)
        inner = vars(ctx).get("reset")  # another cache's wrapper on this context, or None
        cls_reset = type(ctx).reset

        def reset(*args, **kw):
            c = ctx_ref()
            if c is not None:
                self.release(c)
            return inner(*args, **kw) if inner is not None else cls_reset(c, *args, **kw)

        ctx.reset = reset  # an instance attribute: this context only
        self._watched[cid] = weakref.ref(ctx, lambda _r, cid=cid: self._forget(cid))

    def _forget(self, cid):
        """The context object is gone (without a reset we saw): drop its entries unreleased,
        since its CUDA context may no longer exist."""
        with self._lock:
            self._watched.pop(cid, None)
            for key in [k for k in self._entries if k[0] == cid]:
                del self._entries[key]

    def _thread_token(self):
        if getattr(self._local, "token", None) is None:
            token = _ThreadToken()
            weakref.finalize(token, self._thread_ended, threading.get_ident())
            self._local.token = token

    def _thread_ended(self, tid):
        with self._lock:
            entries = [self._entries.pop(k) for k in [k for k in self._entries if k[1] == tid]]
        for e in entries:
            ctx = e.ctx_ref()
            if ctx is not None:
                self._destroy_in(ctx, [e])

    def release(self, context=None):
        """Destroy every thread's handle for ``context`` (default: the current one), with the
        context pushed, then run the on_release callbacks. Called by the context's reset."""
        ctx = _numba_context() if context is None else context
        with self._lock:
            keys = [k for k in self._entries if k[0] == id(ctx) and self._entries[k].ctx_ref() is ctx]
            entries = [self._entries.pop(k) for k in keys]
        self._destroy_in(ctx, entries)
        for callback in self.on_release:
            try:
                callback()
            except Exception:  # teardown: a failing callback must not stop the reset
                pass

    def release_all(self):
        """Destroy every handle of every context (process exit)."""
        with self._lock:
            contexts = {}
            for e in self._entries.values():
                ctx = e.ctx_ref()
                if ctx is not None:
                    contexts[id(ctx)] = ctx
        for ctx in contexts.values():
            self.release(ctx)
        with self._lock:
            self._entries.clear()

    def _destroy_in(self, ctx, entries):
        if not entries:
            return
        pushed = False
        try:
            ctx.push()
            pushed = True
        except Exception:  # already destroyed or not pushable: destroy anyway
            pass
        try:
            for e in entries:
                try:
                    self._destroy(e.value)
                    self.destroyed += 1
                except Exception:
                    pass
        finally:
            if pushed:
                try:
                    ctx.pop()
                except Exception:
                    pass


_CACHES = weakref.WeakSet()


@atexit.register
def _release_at_exit():
    for cache in list(_CACHES):
        try:
            cache.release_all()
        except Exception:
            pass
