"""KnetArray: an array on the active CUDA device (Knet's KnetArray), and the device utilities
`cpucopy`, `gpucopy`, `gpu`, `gc` and `dir`.

A KnetArray wraps a Numba device array (memory from knetc's pool). Every op in the op table
works on it: an op whose arguments include a KnetArray is compiled, once per (op,
parameters, argument shapes and dtypes), into a one-equation program for the "cuda" target
(the same generated kernels, cuBLAS/GEMM and library routines as `kn.compile`) and run on
the device. Numpy arrays and numbers mixed in are moved to the device first. Under Numba's
CUDA simulator the same CUDA code runs on the host.

    import numpy as np, knetc as kn
    x = kn.KnetArray(np.random.randn(4, 3).astype(np.float32))
    y = kn.relu(x @ x.T) + 1          # a KnetArray: kernels ran on the device
    np.asarray(y)                     # back to numpy (also kn.cpucopy(y))
    float(kn.sum(y))                  # full reductions return a numpy scalar, as Knet's sum

0-d results of single ops (full reductions, losses) come back to the host as numpy scalars,
as Knet returns a number for `sum(x)`. A `kn.compile` function given KnetArrays returns its
0-d results (a loss) as 0-d KnetArrays instead, kept on the device until read (`float(loss)`),
so that a training step copies nothing down unless the loss is looked at. Every copy between
host and device, and every launch, is counted in `kn.stats()`. Python operators, `np.exp(x)`, `np.sum(x, axis=1)` and
`kn.grad` with `Param(KnetArray(...))` work as for numpy arrays; numpy functions outside
the op table (`np.allclose`, `np.isfinite`, ...) run on a host copy and return numpy.
"""
import copy as _copy
import gc as _python_gc
import os
import re
import types

import numpy as np

from . import context, pytree
from .autograd import Param, Tracked, _recorded
from .errors import ShapeError, user_frame
from .compiler import CompiledFunction, compile_program
from .ir.core import Builder, Program
from .ops import elementwise, indexing
from .ops.core import Aval, Op, astype, bind, evaluate, register
from .ops.methods import ArrayMethods
from .report import report, transfer
from .runtime import launch
from .runtime.device import download, is_device_array, real_gpu_available, register_device_wrapper, upload

__all__ = ["KnetArray", "cpucopy", "gpucopy", "gpu", "gc", "dir"]


def _cuda():
    # Imported on first use: `import knetc` need not pay for numba.cuda.
    from numba import cuda
    return cuda


def _as_numba(x):
    """A Numba view of a CUDA array (Numba's own arrays as they are)."""
    if getattr(x, "__cuda_ndarray__", False):
        return x
    return _cuda().as_cuda_array(x)  # e.g. CuPy or PyTorch memory, shared


def _install_pool():
    """knetc's pool becomes Numba's allocator, once, before this process's first CUDA call."""
    from .runtime import pool  # (imports numba.cuda: only where a device is used)
    pool.install_once()


def _upload(host):
    """A new device array holding the host array's values (C order), from knetc's pool."""
    _install_pool()  # the pool must become Numba's allocator before its first CUDA call
    return upload(host)  # 0-d stays 0-d; counted in kn.stats()["host_to_device"]


def _device_copy(data):
    """A new device array with the same values (a device-to-device copy)."""
    from .runtime.pool import device_array
    if not data.is_c_contiguous():  # a strided array of another library: through the host
        return _upload(download(data))
    out = device_array(tuple(data.shape), np.dtype(data.dtype))
    if data.size:
        out.copy_to_device(data)
    return out


@pytree.register_leaf_type
@register_device_wrapper  # compiled CUDA programs take and return KnetArrays (runtime/device.py)
class KnetArray(ArrayMethods):
    """An array on the active CUDA device (Knet's KnetArray).

    `KnetArray(x)` copies host data (numpy arrays, lists, numbers) to the device;
    `KnetArray(x, dtype=np.float32)` converts too. Given a device array (a KnetArray, a
    Numba device array, or anything with `__cuda_array_interface__`, e.g. CuPy) it shares
    that memory unless `copy=True` or a different dtype is asked for. `np.asarray(k)` (or
    `kn.cpucopy(k)`) copies back to the host.

        k = kn.KnetArray(np.ones((2, 3), np.float32)); k2 = k * 2 + 1; np.asarray(k2)

    `k.data` is the Numba device array (C-contiguous).
    """
    _knetc_kind = "device"  # (knetc/context.py: processed by KnetArray evaluation, at the bottom of the stack)

    def __new__(cls, x=None, dtype=None, copy=False):
        if isinstance(x, (Param, Tracked)) and _recorded((x,), {}):  # inside diff: a recorded move up
            moved = to_device(x)
            return moved if dtype is None else astype(moved, dtype=np.dtype(dtype))
        return super().__new__(cls)

    def __init__(self, x, dtype=None, copy=False):
        while isinstance(x, (Param, Tracked)):
            x = x.value
        if isinstance(x, KnetArray):
            data = x.data
        elif is_device_array(x):
            data = _as_numba(x)
            if not data.is_c_contiguous():
                data, copy = _device_copy(data), False
        else:
            host = np.asarray(x, dtype=dtype)
            if host.dtype.hasobject:
                raise TypeError(f"KnetArray: cannot hold an array of dtype {host.dtype}")
            self.data = _upload(host)
            return
        if dtype is not None and np.dtype(dtype) != np.dtype(data.dtype):
            self.data = _converted(data, np.dtype(dtype))
        else:
            self.data = _device_copy(data) if copy else data

    @classmethod
    def _wrap(cls, data):
        """A KnetArray around a Numba device array, sharing it (no checks, no copy)."""
        k = object.__new__(cls)
        k.data = data
        return k

    @classmethod
    def empty(cls, shape, dtype=np.float32):
        """An uninitialised KnetArray (Knet's `KnetArray{T}(undef, dims)`): `KnetArray.empty((2, 3))`."""
        from .runtime.pool import device_array
        _install_pool()
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(n) for n in shape)
        return cls._wrap(device_array(shape, np.dtype(dtype)))

    # ------------------------------------------------------------------ array protocol
    @property
    def aval(self):
        return Aval(tuple(self.data.shape), np.dtype(self.data.dtype))

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return np.dtype(self.data.dtype)

    def copy_to_host(self):
        """The values as a new numpy array (as Numba's device arrays): `k.copy_to_host()`."""
        return np.asarray(download(self.data)).reshape(self.shape)

    def __array__(self, dtype=None, copy=None):
        if copy is False:
            raise ValueError("a KnetArray lives on the device: converting it to numpy always copies")
        host = self.copy_to_host()
        return host if dtype is None else host.astype(dtype, copy=False)

    @property
    def __cuda_array_interface__(self):
        data = self.data
        interface = getattr(data, "__cuda_array_interface__", None)
        if interface is not None:
            return interface
        # Numba's simulator keeps "device" memory in a numpy array: its address is the pointer.
        host = data._ary
        return {"shape": tuple(host.shape), "typestr": host.dtype.str, "data": (host.ctypes.data, False),
                "strides": None if host.flags.c_contiguous else tuple(host.strides), "version": 3}

    def copy(self):
        """A new KnetArray with the same values (copied on the device)."""
        return KnetArray._wrap(_device_copy(self.data))

    __copy__ = copy

    def __deepcopy__(self, memo):
        return self.copy()

    def __reduce__(self):  # pickled as host data, unpickled onto the device
        return (KnetArray, (self.copy_to_host(),))

    def astype(self, dtype):
        """A new KnetArray with the values converted to `dtype` (on the device): `k.astype(np.float64)`."""
        dtype = np.dtype(dtype)
        return KnetArray._wrap(_converted(self.data, dtype)) if dtype != self.dtype else self.copy()

    def item(self):
        return self.copy_to_host().item()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        return bool(self.copy_to_host())  # numpy's rule: only one-element arrays have a truth value

    def __repr__(self):
        return f"KnetArray({self.copy_to_host()!r})"

    def __str__(self):
        return str(self.copy_to_host())

    # ------------------------------------------------------------------ in place
    def _update(self, result):
        """Write `result` into this array's memory (numpy's `x += y`: same shape, x's dtype)."""
        if tuple(np.shape(result)) != self.shape:
            raise ShapeError(f"in-place update: a result of shape {tuple(np.shape(result))} does not fit "
                             f"a KnetArray of shape {self.shape}")
        dtype = result.dtype if isinstance(result, KnetArray) else np.result_type(result)
        if not np.can_cast(dtype, self.dtype, "same_kind"):
            raise TypeError(f"in-place update: cannot cast a {dtype} result to the "
                            f"KnetArray's {self.dtype} (numpy's same_kind rule)")
        if not isinstance(result, KnetArray):  # 0-d results arrive as host scalars
            result = KnetArray(np.asarray(result, self.dtype))
        elif result.dtype != self.dtype:
            result = result.astype(self.dtype)
        self.data.copy_to_device(result.data)
        return self

    # Elementwise, as on Params and numpy arrays (the seed lists == and != among KnetArray's
    # broadcasting functions); hashing stays by identity.
    def __eq__(self, other): return elementwise.eq(self, other)
    def __ne__(self, other): return elementwise.ne(self, other)
    __hash__ = object.__hash__

    def __iadd__(self, other): return self._update(self + other)
    def __isub__(self, other): return self._update(self - other)
    def __imul__(self, other): return self._update(self * other)
    def __itruediv__(self, other): return self._update(self / other)

    # ------------------------------------------------------------------ indexing
    def __getitem__(self, index):
        view = self._contiguous_view(index)
        if view is not None:
            return view
        shared = getattr(ArrayMethods, "__getitem__", None)
        if shared is not None:  # indexing as ops (knetc.ops.indexing): it runs on the device
            return shared(self, index)
        return indexing.getindex(self, index)

    def _contiguous_view(self, index):
        """k[i], k[i, 2:5], k[1:3]: basic indices selecting one contiguous block give a view
        sharing the memory (as Knet's getindex on ranges, and numpy's basic indexing) or, for
        a single entry, a host scalar; no kernel, no program per index. Else None."""
        items = index if isinstance(index, tuple) else (index,)
        if len(items) > self.ndim:
            return None
        for axis, i in enumerate(items):
            if isinstance(i, (bool, np.bool_)):
                return None
            if isinstance(i, (int, np.integer)):
                if not -self.shape[axis] <= i < self.shape[axis]:
                    raise IndexError(f"index {i} is out of bounds for axis {axis} with size {self.shape[axis]}")
            elif not (isinstance(i, slice) and i.step in (None, 1)):
                return None
        view = self.data[tuple(int(i) % self.shape[axis] if isinstance(i, (int, np.integer)) else i
                               for axis, i in enumerate(items))]
        if not is_device_array(view):  # one entry: a number, as numpy's (Numba copied it down)
            transfer("device_to_host", self.dtype.itemsize)
            return np.asarray(view)[()]
        return KnetArray._wrap(view) if view.is_c_contiguous() else None

    def __setitem__(self, index, value):
        # In place. A host round trip: setindex is functional (it returns a new array), and
        # assignments are rare next to the kernels that read the arrays.
        host = self.copy_to_host()
        host[indexing.host_index(_to_host(index))] = np.asarray(value)  # (k[k > 5] = 0: a 0/1 mask)
        upload(host, to=self.data)

    # ------------------------------------------------------------------ numpy functions
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        result = super().__array_ufunc__(ufunc, method, *inputs, **kwargs)
        if result is not NotImplemented:
            return result
        if any(isinstance(o, KnetArray) for o in kwargs.get("out", ())):
            return NotImplemented  # writing into a KnetArray through numpy: not supported
        # A ufunc outside the op table: evaluated on a host copy.
        return getattr(ufunc, method)(*_to_host(inputs), **_to_host(kwargs))

    def __array_function__(self, func, types, args, kwargs):
        result = super().__array_function__(func, types, args, kwargs)
        if result is not NotImplemented:
            return result
        if func in (np.shape, np.ndim, np.size) and isinstance(args[0], KnetArray):
            # Only the shape matters: a zero-byte stand-in instead of copying the data.
            return func(np.broadcast_to(np.empty((), np.bool_), args[0].shape), *args[1:], **kwargs)
        if func is np.copyto and isinstance(args[0], KnetArray):  # (Julia's copyto!: into the device array)
            args[0][...] = _to_host(args[1]) if isinstance(args[1], KnetArray) else args[1]
            return None
        if isinstance(args[0], KnetArray) and func in (np.put, np.place, np.putmask, np.fill_diagonal) \
                or any(isinstance(o, KnetArray) for o in np.atleast_1d(kwargs.get("out", None) or ())):
            raise TypeError(f"np.{func.__name__} cannot write into a KnetArray (it would change a host copy); "
                            "assign with k[...] = value or kn.copyto_(k, value)")
        # A numpy function outside the op table (np.allclose, np.isfinite, ...): on host copies.
        return func(*_to_host(args), **_to_host(kwargs))


def _to_host(x):
    """x with every KnetArray (inside lists, tuples and dicts too) replaced by a numpy copy."""
    if isinstance(x, KnetArray):
        return x.copy_to_host()
    if type(x) in (list, tuple):
        return type(x)(_to_host(v) for v in x)
    if type(x) is dict:
        return {k: _to_host(v) for k, v in x.items()}
    return x


def _converted(data, dtype):
    """A new device array with data's values converted to dtype (by the astype op's kernel)."""
    if not data.shape:  # 0-d results of ops come back as host scalars: convert on the host
        return _upload(np.asarray(download(data), dtype))
    return _apply(astype, (KnetArray._wrap(data),), {"dtype": dtype}).data


# ---------------------------------------------------------------------------- dispatch
# An op on KnetArrays runs as a one-equation program for the "cuda" target, compiled once
# per (op, params, argument kinds, shapes and dtypes) and cached here.
_PROGRAMS = {}
_CACHE_INFO = {"hits": 0, "misses": 0}
_SCALARS = {}  # (value, dtype) -> a one-element device array holding it


def program_cache_info():
    """How many one-op programs KnetArray operations compiled (`misses`) and reused (`hits`)."""
    return {"programs": len(_PROGRAMS), **_CACHE_INFO}


def _freeze(v):
    """A hashable, type-exact stand-in for an op parameter (1, 1.0 and True differ)."""
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, tuple(_freeze(x) for x in v))
    if isinstance(v, dict):
        return ("dict", tuple(sorted((k, _freeze(x)) for k, x in v.items())))
    if isinstance(v, (bool, int, float, str, type(None))):
        return (type(v).__name__, v)
    if isinstance(v, np.dtype) or isinstance(v, type) and issubclass(v, (np.generic, bool, int, float, complex)):
        return ("dtype", str(np.dtype(v)))
    return (type(v).__name__, v)  # unhashable values make the key unhashable: no caching


def _device_scalar(value, dtype):
    """A Python number as a one-element device array of `dtype` (cached: no copy per call)."""
    key = (type(value), value, dtype.str)
    data = _SCALARS.get(key)
    if data is None:
        if len(_SCALARS) > 4096:
            _SCALARS.clear()
        data = _SCALARS[key] = _upload(np.full((1,), value, dtype))
    return data


def _apply(op, args, params):
    """Evaluate `op` on arguments among which are KnetArrays: on the device, as a KnetArray."""
    avals, devices, kinds = [], [], []
    for a in args:
        if isinstance(a, KnetArray):
            devices.append(a.data)
            kinds.append("array")
            avals.append(a.aval)
        elif type(a) in (bool, int, float):  # Python's numbers are weak; a numpy scalar has its dtype (below)
            devices.append(a)
            kinds.append("number")
            avals.append(Aval((), None))
        elif is_device_array(a):
            data = _as_numba(a)
            devices.append(data)
            kinds.append("array")
            avals.append(Aval(tuple(data.shape), np.dtype(data.dtype)))
        else:  # numpy arrays, numpy scalars, lists: moved to the device
            host = np.asarray(a)
            devices.append(host)
            kinds.append("host")
            avals.append(Aval(host.shape, host.dtype))
    try:
        out = op.rule(*avals, **params)
    except ShapeError as error:
        raise error.located(*user_frame()) from None
    # Numbers in elementwise ops become device inputs in the result's dtype (what the kernel
    # would convert a constant to anyway), so `x * lr` compiles once for every lr.
    numbers_as_inputs = op.kind == "elementwise" and out.dtype is not None and np.issubdtype(out.dtype, np.floating) \
        and "number" in kinds and _same_result(op, params, out, [Aval((), out.dtype) if kind == "number" else aval
                                                                  for kind, aval in zip(kinds, avals)])
    specs, inputs = [], []
    for kind, aval, value in zip(kinds, avals, devices):
        if kind == "number" and numbers_as_inputs:
            specs.append(("input", (), out.dtype.str))
            inputs.append(_device_scalar(value, out.dtype))
        elif kind == "number":
            specs.append(("number", type(value).__name__, value))
        else:
            specs.append(("input", aval.shape, aval.dtype.str))
            inputs.append(_upload(value) if kind == "host" else value)
    key = (op, _freeze(params), tuple(specs))
    try:
        executable = _PROGRAMS.get(key)
    except TypeError:  # a parameter that cannot be hashed: compile without caching
        key, executable = None, None
    if executable is None:
        _CACHE_INFO["misses"] += 1
        try:
            executable = _build(op, params, specs)
        except NotImplementedError as error:  # a case the CUDA generator refuses: numpy on the host
            report("compile", f"{op.name} on KnetArrays runs on the host: {error}")
            return _on_host(op, args, params)
        if key is not None:
            _PROGRAMS[key] = executable
    else:
        _CACHE_INFO["hits"] += 1
    (result,) = executable.run(inputs)
    if not out.shape:  # a scalar: returned to the host, as Knet's sum(x) returns a number
        return np.asarray(download(result)).reshape(())[()]
    if executable.program.outputs[0] in executable.program.inputs:
        result = _device_copy(result)  # an identity (e.g. a cast to the same dtype): a new array
    return KnetArray._wrap(result)


def _same_result(op, params, out, avals):
    """True if the op gives `out` for these avals too (numbers as typed inputs change nothing)."""
    try:
        return op.rule(*avals, **params) == out
    except ShapeError:
        return False


def _build(op, params, specs):
    with Builder() as builder:
        inputs, ir_args = [], []
        for spec in specs:
            if spec[0] == "number":
                ir_args.append(spec[2])
            else:
                var = builder.input(Aval(spec[1], np.dtype(spec[2])))
                inputs.append(var)
                ir_args.append(var)
        out = bind(op, *ir_args, **params)
    name = "knetarray_" + re.sub(r"\W", "_", op.name)
    return compile_program(Program(name, inputs, builder.eqns, [out], builder.constants), "cuda")


def _on_host(op, args, params):
    result = evaluate(op, _to_host(tuple(args)), params)  # the eager path: checks, BLAS threads
    return KnetArray(result) if np.ndim(result) else np.asarray(result)[()]


class _Evaluation(context.Trace):
    """KnetArray evaluation: a permanent trace at the bottom of the context's stack (tapes and
    builders above it see KnetArrays first)."""

    def owns(self, x):
        return isinstance(x, KnetArray)

    def process(self, op, args, params):
        if op is to_host or op is to_device:  # (a move is its own reference: no kernel)
            return op.impl(*args, **params)
        return _apply(op, args, params)


context.install(_Evaluation())


# ---------------------------------------------------------------------------- copies
_KEEP = (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType,
         str, bytes, int, float, complex, bool, type(None), np.generic, np.dtype)


def _deep_convert(x, convert, memo):
    """A deep copy of x in which `convert(leaf)` replaces the arrays it handles (not None)."""
    if id(x) in memo:
        return memo[id(x)]
    new = convert(x)
    if new is not None:
        pass
    elif isinstance(x, _KEEP) or callable(x) and not hasattr(x, "__dict__") or _is_function(x):
        return x
    elif isinstance(x, np.ndarray):
        new = x.copy()
    elif isinstance(x, list):
        new = memo[id(x)] = []
        new.extend(_deep_convert(v, convert, memo) for v in x)
    elif isinstance(x, tuple):
        items = [_deep_convert(v, convert, memo) for v in x]
        new = type(x)(*items) if hasattr(x, "_fields") else type(x)(items)
    elif isinstance(x, dict):
        new = memo[id(x)] = type(x)() if type(x) is dict else _copy.copy(x)
        new.clear()
        new.update((k, _deep_convert(v, convert, memo)) for k, v in x.items())
    elif hasattr(x, "__dict__"):  # a model, layer, Param or optimizer: its attributes converted
        new = memo[id(x)] = _copy.copy(x)
        for k, v in vars(x).items():
            setattr(new, k, _deep_convert(v, convert, memo))
    else:
        new = _copy.deepcopy(x)
    memo[id(x)] = new
    return new


def _is_function(x):
    return isinstance(x, (CompiledFunction, Op))


def _gpu_leaf(x):
    if isinstance(x, KnetArray):
        return x.copy()
    if isinstance(x, np.ndarray) and x.dtype.kind in "biufc":
        return KnetArray(x)
    if is_device_array(x) and not isinstance(x, (Param, Tracked)):
        return KnetArray(x, copy=True)
    return None


def _cpu_leaf(x):
    if isinstance(x, KnetArray):
        return x.copy_to_host()
    if is_device_array(x) and not isinstance(x, (Param, Tracked)):
        return np.asarray(download(_as_numba(x)))
    return None


def gpucopy(x):
    """A deep copy of x with its numeric arrays on the device (Knet's gpucopy): numpy arrays
    become KnetArrays, KnetArrays are copied; lists, tuples, dicts, Params (and their
    optimizer state) and model objects are copied with their structure. Inside `diff`, a
    recorded value moves up recorded: its gradient comes back down.

        model_gpu = kn.gpucopy(model)   # e.g. [(w1, b1), (w2, b2)] of Params
    """
    if isinstance(x, (Param, Tracked)) and _recorded((x,), {}):
        return to_device(x)
    return _deep_convert(x, _gpu_leaf, {})


def cpucopy(x):
    """A deep copy of x with its device arrays (KnetArrays, Numba arrays) as numpy arrays
    (Knet's cpucopy): `kn.cpucopy(model)` before pickling or on a machine without a GPU.
    Inside `diff`, a recorded value moves down recorded: its gradient goes back up.

    Example:
        >>> import numpy as np, knetc as kn
        >>> model = [(kn.Param(np.ones((2, 2))), np.zeros(2))]
        >>> copy = kn.cpucopy(model)              # same structure, new arrays
        >>> type(copy[0][0]).__name__, copy[0][0] is model[0][0]
        ('Param', False)
    """
    if isinstance(x, (Param, Tracked)) and _recorded((x,), {}):
        return to_host(x)
    return _deep_convert(x, _cpu_leaf, {})


# Moves between the host and the device that a tape records (Knet's gradcheck of
# x -> Array(sin.(KnetArray(x)))): each one's gradient is the move back.
def _to_host_impl(x):
    host = _cpu_leaf(x)  # (cpucopy's conversion of one array; a host array is copied)
    return np.array(x, copy=True) if host is None else host


to_device = register(Op("to_device", lambda x: x, lambda x: KnetArray(np.asarray(x) if not is_device_array(x) else x),
                        (lambda dy, y, x: to_host(dy),), "elementwise", lambda k, x: x))
to_host = register(Op("to_host", lambda x: x, _to_host_impl, (lambda dy, y, x: to_device(dy),), "elementwise",
                      lambda k, x: x))


def from_saved(array):
    """An array that kn.save stored from the device: a KnetArray again when a GPU is active,
    else the numpy array (as Knet's load)."""
    return KnetArray(array) if gpu() >= 0 else array


# ---------------------------------------------------------------------------- devices
_active = True  # False after gpu(-1) / gpu(False): atype() then gives numpy arrays


def gpu(device=None):
    """The active GPU's number, or -1 when none is (Knet's gpu()).

    -1 without a real GPU (Numba's CUDA simulator counts as none, though KnetArrays work
    under it). `gpu(d)` activates device d (0 <= d < number of GPUs) and returns it; `gpu(-1)`
    or `gpu(False)` deactivates (atype() then gives numpy arrays); `gpu(True)` activates
    the current device again. Unlike Knet, devices are never reset.

        kn.gpu()    # 0 on a machine with one GPU, -1 without
    """
    global _active
    if device is not None:
        if isinstance(device, bool):
            _active = device
        elif not isinstance(device, (int, np.integer)):
            raise TypeError(f"gpu: expected a device number or a bool, got {device!r}")
        elif 0 <= device and real_gpu_available() and device < len(_cuda().gpus):
            _install_pool()
            _cuda().select_device(int(device))
            launch.forget()  # (prepared launches hold the previous device's kernels)
            _active = True
        else:
            _active = False
    if not _active or not real_gpu_available():
        return -1
    return int(_cuda().get_current_device().id)


def gc(device=None):
    """Give the memory pool's cached device blocks back to the driver (Knet's `Knet.gc`);
    returns the bytes released. Python's garbage collector runs first, so unreachable
    KnetArrays return their blocks to the pool and are released too.

        kn.gc()   # e.g. before handing the GPU to another library
    """
    from .runtime.pool import get_pool
    _python_gc.collect()
    if device is None:
        device = max(gpu(), 0)
    return get_pool(int(device)).free_cached()


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dir(*path):
    """A path relative to the knetc root (Knet's `Knet.dir`): the directory holding the knetc
    package, examples/ and tests/ (the repository, for an editable install).

        kn.dir("examples", "mnist_mlp.py")   # '/.../knetc-repo/examples/mnist_mlp.py'
    """
    return os.path.join(_ROOT, *path)
