"""Optimizers and `update_` (Knet's `update!`): SGD, Momentum, Nesterov, Adagrad, Rmsprop,
Adadelta, Adam.

An optimizer object holds the hyperparameters and the state of ONE parameter (velocity,
moment estimates, Adam's step count t); its state arrays are created at the first update
with the parameter's shape and dtype, on the host or on the device like the parameter.
Each update is one fused kernel (knetc.kernels.optimizers) that reads the gradient once and
writes the weight and its state in place.

Given a weight w and its gradient g (Knet's formulas):

    SGD       w = w - lr * g
    Momentum  v = gamma * v + lr * g;  w = w - v
    Nesterov  w = w - gamma * v;  v = gamma * v - lr * g;  w = w + (1 + gamma) * v
    Adagrad   G = G + g^2;  w = w - lr * g / sqrt(G + eps)
    Rmsprop   G = rho * G + (1 - rho) * g^2;  w = w - lr * g / sqrt(G + eps)
    Adadelta  G = rho * G + (1 - rho) * g^2;  update = sqrt(delta + eps) * g / sqrt(G + eps)
              w = w - lr * update;  delta = rho * delta + (1 - rho) * update^2
    Adam      t = t + 1;  m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2
              w = w - lr / (sqrt(v / (1 - beta2^t)) + eps) * (m / (1 - beta1^t))

`gclip` (every optimizer): if norm(g) > gclip > 0, g is first scaled to norm gclip (a NaN
norm, as Knet's `gnorm <= gclip ? g : g * gclip/gnorm`, makes all of g NaN).

The defaults are Knet 1.4's (the table DEFAULTS below), shared by the constructors and the
training iterators (`kn.sgd(f, data)`, ... in knetc.train.iterators), so they cannot drift.

A step is all or nothing: `update_` first checks every (weight, gradient, optimizer) it is
given (writeable floating-point weight, matching shape, a gradient castable to the weight's
dtype, state of the right shape) and prepares the gradients and any new
state, then runs the kernels; a bad pair raises before any weight or state has changed.
"""
import math
import numbers

import numpy as np

from ..autograd import Param, value_of
from ..knetarray import KnetArray
from ..runtime.device import download, upload
from .io import serializable


_KERNELS = None


def _kernels():
    # Imported on first use: it imports numba.cuda, which `import knetc` need not pay for.
    global _KERNELS
    if _KERNELS is None:
        from ..kernels import optimizers
        _KERNELS = optimizers
    return _KERNELS


# Knet 1.4's defaults (the optimizer types and the training iterators agree there). The
# classes' constructors and the iterators in knetc.train.iterators both read this table.
DEFAULTS = {
    "SGD": {"lr": 0.1, "gclip": 0},
    "Momentum": {"lr": 0.05, "gclip": 0, "gamma": 0.95},
    "Nesterov": {"lr": 0.05, "gclip": 0, "gamma": 0.95},
    "Adagrad": {"lr": 0.05, "gclip": 0, "eps": 1e-6},
    "Rmsprop": {"lr": 0.01, "gclip": 0, "rho": 0.9, "eps": 1e-6},
    "Adadelta": {"lr": 1.0, "gclip": 0, "rho": 0.9, "eps": 1e-6},
    "Adam": {"lr": 0.001, "gclip": 0, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
}
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # what the fused kernels are compiled for


class _Step:
    """One prepared update: everything checked and computed, nothing changed yet. `apply()`
    runs the kernel; before it, dropping the step leaves weight and optimizer untouched."""
    __slots__ = ("opt", "w", "g", "new_states", "scale", "param", "param_value", "keep_opt")

    def apply(self):
        opt, w = self.opt, self.w
        if self.param is not None:
            if self.param_value is not None:
                self.param.value = self.param_value
            if self.keep_opt and self.param.opt is None:
                self.param.opt = opt
        for name, state in self.new_states:  # state created (or moved to w's side) for this step
            setattr(opt, name, state)
        states = [_device_data(getattr(opt, name)) for name in opt.STATE]
        kernels = _kernels()
        if kernels.is_device_array(w) or w.flags.c_contiguous:
            kernels.update(opt.KERNEL, w, self.g, states, self.scale, opt._scalars())
        else:  # the kernels want flat views: update a contiguous copy and write it back
            work = np.ascontiguousarray(w)
            kernels.update(opt.KERNEL, work, self.g, states, self.scale, opt._scalars())
            w[...] = work
        opt._stepped()  # (after the kernel: a step that raised is not counted)


class Optimizer:
    """The common part: subclasses name their kernel, hyperparameters and state arrays, and
    compute the kernel's scalars (`_scalars`). `opt.update_(w, g)` updates one array."""
    KERNEL = None     # name in knetc.kernels.optimizers.KERNELS
    HYPER = ()        # hyperparameter names, in the constructor's order
    STATE = ()        # names of the state arrays (None until the first update)

    def _scalars(self):
        raise NotImplementedError

    def _stepped(self):
        """Count an update that has been applied (Adam's step count)."""

    def _check(self):
        """Refuse hyperparameters that are not finite real numbers (None would reach the
        kernels as NaN), a negative gclip and an Adam step count that is not a count. Called
        by the constructors and again before an update changes anything."""
        for name in self.HYPER:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise TypeError(f"{type(self).__name__}: {name} must be a finite real number, got {value!r}")
        if self.gclip < 0:
            raise ValueError(f"{type(self).__name__}: gclip must be 0 (no clipping) or positive, got {self.gclip!r}")
        t = getattr(self, "t", 0)
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 0:
            raise TypeError(f"{type(self).__name__}: t (the number of updates so far) must be an int >= 0, got {t!r}")

    def clone(self):
        """A new optimizer with the same hyperparameters and fresh state (Knet's `clone`)."""
        return type(self)(**{name: getattr(self, name) for name in self.HYPER})

    def __repr__(self):
        hyper = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.HYPER)
        return f"{type(self).__name__}({hyper})"

    def update_(self, w, g):
        """Update the array w (numpy or device) in place with its gradient g: `opt.update_(w, g)`.
        On a bad argument it raises and changes neither w nor the optimizer's state."""
        self._prepare(w, g, {}).apply()
        return w

    def _prepare(self, w, g, pending):
        """Check (w, g) and compute what the update needs, changing nothing: a _Step.
        `pending` maps id(optimizer) to the state arrays created earlier in the same step."""
        self._check()
        kernels = _kernels()
        w = _device_data(w)  # a KnetArray is updated through its Numba array
        on_device = kernels.is_device_array(w)
        if not on_device:
            if not isinstance(w, np.ndarray):
                raise TypeError(f"update_: cannot update a {type(w).__name__} in place; use an array or a Param")
            if not w.flags.writeable:
                raise ValueError(f"update_: the weight array {_describe(w)} is read-only")
        if np.dtype(w.dtype) not in _KERNEL_DTYPES:
            kind = "floating point" if not np.issubdtype(w.dtype, np.floating) else "float32 or float64"
            raise TypeError(f"update_: weights must be {kind}, got {_describe(w)}")
        step = _Step()
        step.opt, step.w, step.param, step.param_value, step.keep_opt = self, w, None, None, False
        step.g = _device_data(_gradient_like(g, w, on_device))
        step.new_states = []
        created = pending.setdefault(id(self), {})
        for name in self.STATE:
            state = created.get(name, getattr(self, name))
            if state is None:  # the first update: zeros shaped like w, on w's side (made there)
                state = created[name] = (kernels.device_zeros(w.shape, w.dtype) if on_device
                                         else np.zeros(w.shape, dtype=w.dtype))
            if tuple(state.shape) != tuple(w.shape):
                raise ValueError(f"update_: this {type(self).__name__} holds state for shape {tuple(state.shape)} "
                                 f"but the weight is {tuple(w.shape)}; each parameter needs its own optimizer "
                                 f"(use opt.clone())")
            if kernels.is_device_array(_device_data(state)) != on_device and name not in created:
                # e.g. state loaded on the host for a weight now on the device: a copy on w's side
                data = _device_data(state)
                state = created[name] = (upload(data) if on_device
                                         else np.array(download(data)).reshape(data.shape))
            if not on_device and not state.flags.writeable:
                raise ValueError(f"update_: this {type(self).__name__}'s {name} array is read-only")
            if name in created:
                step.new_states.append((name, state))
        step.scale = 1.0
        if self.gclip > 0 and on_device:  # Knet's per-parameter clipping, decided on the device:
            step.g = kernels.device_clipped(step.g, self.gclip)  # a scaled copy, nothing comes down
        elif self.gclip > 0:  # norm(g) > gclip > 0 scales g to norm gclip
            with np.errstate(over="ignore"):  # (an overflow is answered below, not warned of)
                norm = float(np.linalg.norm(step.g))
            if norm == np.inf:  # float32's sum of squares overflows above 1.8e19: gclip/inf would stop the weight
                norm = float(np.linalg.norm(np.asarray(step.g, np.float64)))
            if not norm <= self.gclip:  # (as Knet: a NaN norm makes the whole gradient NaN)
                step.scale = self.gclip / norm
        return step


def _describe(w):
    return f"({type(w).__name__} of shape {tuple(w.shape)}, dtype {np.dtype(w.dtype)})"


def _device_data(x):
    """A KnetArray's Numba device array (the same memory), anything else as it is."""
    return x.data if isinstance(x, KnetArray) else x


def _gradient_like(g, w, on_device):
    """g as an array of w's shape and dtype, where w is (host, C-contiguous, or device).
    Only same-kind casts (float64 to float32, say): a complex, string or object gradient
    is refused rather than silently truncated."""
    g = _device_data(value_of(g))
    if type(g) is np.ndarray and g.dtype == w.dtype and g.shape == w.shape and not on_device \
            and g.flags.c_contiguous:
        return g  # the common case: nothing to check or convert
    kernels = _kernels()
    if not kernels.is_device_array(g):
        try:
            g = np.asarray(g)
        except (TypeError, ValueError) as e:
            raise TypeError(f"update_: the gradient is not an array of numbers: {e}") from None
    if tuple(g.shape) != tuple(w.shape):
        raise ValueError(f"update_: the gradient has shape {tuple(g.shape)} but the weight has {tuple(w.shape)}")
    if not np.can_cast(np.dtype(g.dtype), np.dtype(w.dtype), casting="same_kind"):
        raise TypeError(f"update_: a gradient of dtype {np.dtype(g.dtype)} cannot be cast to the weight's "
                        f"dtype {np.dtype(w.dtype)}")
    if on_device:
        if not kernels.is_device_array(g) or np.dtype(g.dtype) != np.dtype(w.dtype):
            host = download(g) if kernels.is_device_array(g) else g
            g = upload(np.asarray(host, dtype=w.dtype).reshape(w.shape))
    else:
        if kernels.is_device_array(g):
            g = download(g)
        g = np.ascontiguousarray(g, dtype=w.dtype)
    return g


@serializable
class SGD(Optimizer):
    """Stochastic gradient descent: w = w - lr * g.

    Example: `kn.update_(w, g, kn.SGD(lr=0.01))`"""
    KERNEL, HYPER = "sgd", ("lr", "gclip")

    def __init__(self, lr=DEFAULTS["SGD"]["lr"], gclip=DEFAULTS["SGD"]["gclip"]):
        self.lr, self.gclip = lr, gclip
        self._check()

    def _scalars(self):
        return (self.lr,)


@serializable
class Momentum(Optimizer):
    """Momentum: v = gamma * v + lr * g; w = w - v (v: `velocity`, as Knet's).

    Example: `w = kn.Param(np.zeros(3), kn.Momentum(lr=0.01, gamma=0.9))`"""
    KERNEL, HYPER, STATE = "momentum", ("lr", "gclip", "gamma"), ("velocity",)

    def __init__(self, lr=DEFAULTS["Momentum"]["lr"], gclip=DEFAULTS["Momentum"]["gclip"],
                 gamma=DEFAULTS["Momentum"]["gamma"], velocity=None):
        self.lr, self.gclip, self.gamma, self.velocity = lr, gclip, gamma, velocity
        self._check()

    def _scalars(self):
        return (self.lr, self.gamma)


@serializable
class Nesterov(Optimizer):
    """Nesterov momentum: w = w - gamma * v; v = gamma * v - lr * g; w = w + (1 + gamma) * v.

    Example: `kn.update_(w, g, kn.Nesterov(lr=0.01))`"""
    KERNEL, HYPER, STATE = "nesterov", ("lr", "gclip", "gamma"), ("velocity",)

    def __init__(self, lr=DEFAULTS["Nesterov"]["lr"], gclip=DEFAULTS["Nesterov"]["gclip"],
                 gamma=DEFAULTS["Nesterov"]["gamma"], velocity=None):
        self.lr, self.gclip, self.gamma, self.velocity = lr, gclip, gamma, velocity
        self._check()

    def _scalars(self):
        return (self.lr, self.gamma, 1 + self.gamma)


@serializable
class Adagrad(Optimizer):
    """Adagrad: G = G + g^2; w = w - lr * g / sqrt(G + eps) (eps inside the square root).

    Example: `kn.update_(w, g, kn.Adagrad(lr=0.1))`"""
    KERNEL, HYPER, STATE = "adagrad", ("lr", "gclip", "eps"), ("G",)

    def __init__(self, lr=DEFAULTS["Adagrad"]["lr"], gclip=DEFAULTS["Adagrad"]["gclip"],
                 eps=DEFAULTS["Adagrad"]["eps"], G=None):
        self.lr, self.gclip, self.eps, self.G = lr, gclip, eps, G
        self._check()

    def _scalars(self):
        return (self.lr, self.eps)


@serializable
class Rmsprop(Optimizer):
    """Rmsprop: G = rho * G + (1 - rho) * g^2; w = w - lr * g / sqrt(G + eps) (eps inside).

    Example: `kn.update_(w, g, kn.Rmsprop(lr=0.001, rho=0.9))`"""
    KERNEL, HYPER, STATE = "rmsprop", ("lr", "gclip", "rho", "eps"), ("G",)

    def __init__(self, lr=DEFAULTS["Rmsprop"]["lr"], gclip=DEFAULTS["Rmsprop"]["gclip"],
                 rho=DEFAULTS["Rmsprop"]["rho"], eps=DEFAULTS["Rmsprop"]["eps"], G=None):
        self.lr, self.gclip, self.rho, self.eps, self.G = lr, gclip, rho, eps, G
        self._check()

    def _scalars(self):
        return (self.lr, self.rho, 1 - self.rho, self.eps)


@serializable
class Adadelta(Optimizer):
    """Adadelta: G = rho * G + (1 - rho) * g^2; update = sqrt(delta + eps) * g / sqrt(G + eps);
    w = w - lr * update; delta = rho * delta + (1 - rho) * update^2.

    Example: `kn.update_(w, g, kn.Adadelta(lr=0.01, rho=0.9))`"""
    KERNEL, HYPER, STATE = "adadelta", ("lr", "gclip", "rho", "eps"), ("G", "delta")

    def __init__(self, lr=DEFAULTS["Adadelta"]["lr"], gclip=DEFAULTS["Adadelta"]["gclip"],
                 rho=DEFAULTS["Adadelta"]["rho"], eps=DEFAULTS["Adadelta"]["eps"], G=None, delta=None):
        self.lr, self.gclip, self.rho, self.eps, self.G, self.delta = lr, gclip, rho, eps, G, delta
        self._check()

    def _scalars(self):
        return (self.lr, self.rho, 1 - self.rho, self.eps)


@serializable
class Adam(Optimizer):
    """Adam: t = t + 1; m = beta1 * m + (1 - beta1) * g; v = beta2 * v + (1 - beta2) * g^2;
    w = w - lr / (sqrt(v / (1 - beta2^t)) + eps) * (m / (1 - beta1^t)) (eps outside the
    square root). m is `fstm`, v `scndm`, t the number of updates so far.

    Example: `w = kn.Param(np.zeros(3), kn.Adam(lr=0.01))`"""
    KERNEL, HYPER, STATE = "adam", ("lr", "gclip", "beta1", "beta2", "eps"), ("fstm", "scndm")

    def __init__(self, lr=DEFAULTS["Adam"]["lr"], gclip=DEFAULTS["Adam"]["gclip"], beta1=DEFAULTS["Adam"]["beta1"],
                 beta2=DEFAULTS["Adam"]["beta2"], eps=DEFAULTS["Adam"]["eps"], t=0, fstm=None, scndm=None):
        self.lr, self.gclip, self.beta1, self.beta2, self.eps = lr, gclip, beta1, beta2, eps
        self.t, self.fstm, self.scndm = t, fstm, scndm
        self._check()

    def _scalars(self):
        t = self.t + 1  # the bias correction uses the count including this update
        return (self.lr, self.beta1, 1 - self.beta1, self.beta2, 1 - self.beta2,
                1 - self.beta1 ** t, 1 - self.beta2 ** t, self.eps)

    def _stepped(self):
        self.t += 1


OPTIMIZERS = (SGD, Momentum, Nesterov, Adagrad, Rmsprop, Adadelta, Adam)


def update_(w, g, opt=None, **sgd_options):
    """Update weights in place with their gradients (Knet's `update!`); returns w.

    - `update_(p, g)` for a Param uses `p.opt` (SGD when unset, not stored);
      `update_(p, g, opt)` uses `opt` and keeps it in `p.opt` when that is unset, so later
      calls continue its state.
    - `update_(w, g)` for an array uses `SGD(**sgd_options)` (e.g. `lr=0.1`, `gclip`);
      `update_(w, g, opt)` uses `opt`, whose state then belongs to w.
    - Tuples/lists and dicts of weights take matching gradients and optimizers (a dict's
      gradients may have fewer keys); a None gradient (no dependence) is skipped. A Param
      at several places (tied weights) steps once, at its first place: kn.grad gives it
      its total gradient at each.

    All or nothing: every pair is checked (and its gradient prepared) before any weight or
    optimizer state changes, so an error (a read-only weight, a gradient of the wrong shape
    or of a dtype that cannot be cast) leaves them all as they were.

    Example: `kn.update_((w1, w2), (g1, g2), (kn.Adam(), kn.SGD(lr=0.1)))`
    """
    steps = []
    _plan(w, g, opt, sgd_options, steps, {}, set())
    for step in steps:
        step.apply()
    return w


def _plan(w, g, opt, sgd_options, steps, pending, stepped):
    """Append the prepared _Steps of update_(w, g, opt) to `steps`, changing nothing;
    `stepped`: the ids of the Params given a step already."""
    if g is None or isinstance(w, Param) and id(w) in stepped:
        return
    if isinstance(w, Param):
        stepped.add(id(w))
        keep = False
        if opt is None:
            opt = w.opt if w.opt is not None else SGD(**sgd_options)
        elif w.opt is None:
            keep = True  # kept in w.opt when the step is applied
        value = value_of(w)
        new_value = None
        if not isinstance(value, (np.ndarray, Param)) and not _kernels().is_device_array(value):
            # Param(3.0): a 0-d array, updated in place; a numpy float scalar keeps its type
            dtype = value.dtype if isinstance(value, np.floating) else np.float64
            value = new_value = np.array(value, dtype=dtype)
        step = _single(opt, value, g, pending)
        step.param, step.param_value, step.keep_opt = w, new_value, keep
        steps.append(step)
        return
    if isinstance(w, (dict, list, tuple)) and isinstance(g, dict) != isinstance(w, dict):
        raise TypeError(f"update_: the weights are a {type(w).__name__} but the gradients a {type(g).__name__}; "
                        f"give the gradients in the weights' structure")
    if isinstance(w, dict):
        opts = _matching(w, opt, sgd_options)
        for key in g:  # as Knet: g may have fewer keys than w
            if key not in w:
                raise KeyError(f"update_: a gradient for {key!r}, which is not among the weights")
            if opts is not None and key not in opts:
                raise KeyError(f"update_: a gradient for {key!r} but no optimizer for it (the optimizers have "
                               f"{sorted(map(repr, opts))})")
            if not _unoptimized(w[key], opts, key):
                _plan(w[key], g[key], opts[key] if opts is not None else None, sgd_options, steps, pending, stepped)
        return
    if isinstance(w, (list, tuple)):
        opts = _matching(w, opt, sgd_options)
        if len(g) != len(w) or (opts is not None and len(opts) != len(w)):
            raise ValueError(f"update_: {len(w)} weights, {len(g)} gradients"
                             + ("" if opts is None else f" and {len(opts)} optimizers") + ": they must match")
        for i, (wi, gi) in enumerate(zip(w, g)):
            if not _unoptimized(wi, opts, i):
                _plan(wi, gi, opts[i] if opts is not None else None, sgd_options, steps, pending, stepped)
        return
    steps.append(_single(SGD(**sgd_options) if opt is None else opt, w, g, pending))


def _unoptimized(w, opts, key):
    """A number (or string) of the model that its optimizers give None, as kn.optimizers does
    for what is not an array: not a weight, so update_ leaves it (its gradient from kn.grad,
    a 0-d array, has nowhere to go: a Python number cannot change in place)."""
    return opts is not None and opts[key] is None and isinstance(w, (numbers.Number, str, bytes))


def _single(opt, w, g, pending):
    if not isinstance(opt, Optimizer):
        raise TypeError(f"update_: expected an optimizer for a single weight, got {type(opt).__name__}")
    return opt._prepare(w, g, pending)


def _matching(w, opt, sgd_options):
    """The optimizers for the elements of a container: None (each element's default), a
    matching container, or one stateless SGD shared by all (as Knet's 2-argument form)."""
    if opt is None or isinstance(opt, (dict, list, tuple)):
        return opt
    if isinstance(opt, SGD):
        return {key: opt for key in w} if isinstance(w, dict) else [opt] * len(w)
    raise TypeError(f"update_: one {type(opt).__name__} for a {type(w).__name__} of weights; give one optimizer "
                    f"per weight in a matching {type(w).__name__} (each holds that weight's state)")


Sgd = SGD  # (Knet 0.x's name)


def optimizers(model, otype, **options):
    """Knet's optimizers(model, otype; options...): the model's structure with an optimizer
    `otype(**options)` for each numeric array (or Param) and None elsewhere, for
    `update_(model, grads, opts)`.

    >>> import numpy as np, knetc as kn
    >>> w = [np.zeros(2), (np.ones(3), "relu")]
    >>> opts = kn.optimizers(w, kn.Adam, lr=0.01); type(opts[1][0]).__name__, opts[1][1]
    ('Adam', None)
    """
    if isinstance(model, dict):
        return {key: optimizers(value, otype, **options) for key, value in model.items()}
    if isinstance(model, (list, tuple)):
        return type(model)(optimizers(value, otype, **options) for value in model)
    value = getattr(model, "value", model)
    numeric = hasattr(value, "shape") and hasattr(value, "dtype") and np.dtype(value.dtype).kind in "fiuc"
    return otype(**options) if numeric else None
