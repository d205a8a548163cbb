"""Optimizers and `update_` (Knet's `update!`): SGD, Momentum, Nesterov, Adagrad, Rmsprop,
Adadelta, Adam.

An optimizer object holds the hyperparameters and the state of ONE parameter (velocity,
moment estimates, Adam's step count t); its state arrays are created at the first update
with the parameter's shape and dtype, on the host or on the device like the parameter.
Each update is one fused kernel (knetc.kernels.optimizers) that reads the gradient once and
writes the weight and its state in place.

Given a weight w and its gradient g (Knet's formulas):

    SGD       w = w - lr * g
    Momentum  v = gamma * v - lr * g;  w = w + v
    Nesterov  w = w - gamma * v;  v = gamma * v - lr * g;  w = w + (1 + gamma) * v
    Adagrad   G = G + g^2;  w = w - lr * g / sqrt(G + eps)
    Rmsprop   G = rho * G + (1 - rho) * g^2;  w = w - lr * g / sqrt(G + eps)
    Adadelta  G = rho * G + (1 - rho) * g^2;  update = sqrt(delta + eps) * g / sqrt(G + eps)
              w = w - lr * update;  delta = rho * delta + (1 - rho) * update^2
    Adam      t = t + 1;  m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2
              w = w - lr / (sqrt(v / (1 - beta2^t)) + eps) * (m / (1 - beta1^t))

`gclip` (every optimizer): if norm(g) > gclip > 0, g is first scaled to norm gclip.

The constructors' defaults are those of Knet's reference (`Sgd(;lr=0.001)`, ...); the
training iterators (`kn.sgd(f, data)`, ... in knetc.train.iterators) use Knet's larger
per-iterator defaults.
"""
import numpy as np

from ..autograd import Param, value_of
from .io import serializable


def _kernels():
    # Imported on first use: it imports numba.cuda, which `import knetc` need not pay for.
    from ..kernels import optimizers
    return optimizers


class Optimizer:
    """The common part: subclasses name their kernel, hyperparameters and state arrays, and
    compute the kernel's scalars (`_scalars`). `opt.update_(w, g)` updates one array."""
    KERNEL = None     # name in knetc.kernels.optimizers.KERNELS
    HYPER = ()        # hyperparameter names, in the constructor's order
    STATE = ()        # names of the state arrays (None until the first update)

    def _scalars(self):
        raise NotImplementedError

    def clone(self):
        """A new optimizer with the same hyperparameters and fresh state (Knet's `clone`)."""
        return type(self)(**{name: getattr(self, name) for name in self.HYPER})

    def __repr__(self):
        hyper = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.HYPER)
        return f"{type(self).__name__}({hyper})"

    def update_(self, w, g):
        """Update the array w (numpy or device) in place with its gradient g: `opt.update_(w, g)`."""
        kernels = _kernels()
        target, w = w, _device_data(w)  # a KnetArray is updated through its Numba array
        on_device = kernels.is_device_array(w)
        if not on_device:
            if not isinstance(w, np.ndarray):
                raise TypeError(f"update_: cannot update a {type(w).__name__} in place; use an array or a Param")
            if not np.issubdtype(w.dtype, np.floating):
                raise TypeError(f"update_: weights must be floating point, got {w.dtype}")
            if not w.flags.writeable:
                raise ValueError("update_: the weight array is read-only")
        g = _device_data(_gradient_like(g, w, on_device))
        states = [_device_data(s) for s in self._states(w, on_device)]  # loaded state may be KnetArrays
        scale = 1.0
        if self.gclip > 0:  # Knet's per-parameter clipping: norm(g) > gclip > 0 scales g to norm gclip
            norm = kernels.device_norm(g) if on_device else float(np.linalg.norm(g))
            if norm > self.gclip:
                scale = self.gclip / norm
        if on_device or w.flags.c_contiguous:
            kernels.update(self.KERNEL, w, g, states, scale, self._scalars())
        else:  # the kernels want flat views: update a contiguous copy and write it back
            work = np.ascontiguousarray(w)
            kernels.update(self.KERNEL, work, g, states, scale, self._scalars())
            w[...] = work
        return target

    def _states(self, w, on_device):
        """The state arrays, created as zeros shaped like w at the first update."""
        states = []
        for name in self.STATE:
            state = getattr(self, name)
            if state is None:
                zeros = np.zeros(w.shape, dtype=w.dtype)
                state = _kernels().cuda.to_device(zeros) if on_device else zeros
                setattr(self, name, state)
            elif tuple(state.shape) != tuple(w.shape):
                raise ValueError(f"update_: this {type(self).__name__} holds state for shape {tuple(state.shape)} "
                                 f"but the weight is {tuple(w.shape)}; each parameter needs its own optimizer "
                                 f"(use opt.clone())")
            states.append(state)
        return states


def _device_data(x):
    """A KnetArray's Numba device array (the same memory), anything else as it is."""
    from ..knetarray import KnetArray
    return x.data if isinstance(x, KnetArray) else x


def _gradient_like(g, w, on_device):
    """g as an array of w's shape and dtype, where w is (host, C-contiguous, or device)."""
    g = value_of(g)
    if on_device:
        if not _kernels().is_device_array(g) or np.dtype(g.dtype) != np.dtype(w.dtype):
            host = g.copy_to_host() if _kernels().is_device_array(g) else np.asarray(g)
            g = _kernels().cuda.to_device(np.ascontiguousarray(host, dtype=w.dtype))
    else:
        if _kernels().is_device_array(g):
            g = g.copy_to_host()
        g = np.ascontiguousarray(g, dtype=w.dtype)
    if tuple(g.shape) != tuple(w.shape):
        raise ValueError(f"update_: the gradient has shape {tuple(g.shape)} but the weight has {tuple(w.shape)}")
    return g


@serializable
class SGD(Optimizer):
    """Stochastic gradient descent: w = w - lr * g.

    Example: `kn.update_(w, g, kn.SGD(lr=0.1))`"""
    KERNEL, HYPER = "sgd", ("lr", "gclip")

    def __init__(self, lr=0.001, gclip=0):
        self.lr, self.gclip = lr, gclip

    def _scalars(self):
        return (self.lr,)


@serializable
class Momentum(Optimizer):
    """Momentum: v = gamma * v - lr * g; w = w + v (v: `velocity`).

    Example: `w = kn.Param(np.zeros(3), kn.Momentum(lr=0.01, gamma=0.9))`"""
    KERNEL, HYPER, STATE = "momentum", ("lr", "gclip", "gamma"), ("velocity",)

    def __init__(self, lr=0.001, gclip=0, gamma=0.9, velocity=None):
        self.lr, self.gclip, self.gamma, self.velocity = lr, gclip, gamma, velocity

    def _scalars(self):
        return (self.lr, self.gamma)


@serializable
class Nesterov(Optimizer):
    """Nesterov momentum: w = w - gamma * v; v = gamma * v - lr * g; w = w + (1 + gamma) * v.

    Example: `kn.update_(w, g, kn.Nesterov(lr=0.01))`"""
    KERNEL, HYPER, STATE = "nesterov", ("lr", "gclip", "gamma"), ("velocity",)

    def __init__(self, lr=0.001, gclip=0, gamma=0.9, velocity=None):
        self.lr, self.gclip, self.gamma, self.velocity = lr, gclip, gamma, velocity

    def _scalars(self):
        return (self.lr, self.gamma, 1 + self.gamma)


@serializable
class Adagrad(Optimizer):
    """Adagrad: G = G + g^2; w = w - lr * g / sqrt(G + eps) (eps inside the square root).

    Example: `kn.update_(w, g, kn.Adagrad(lr=0.1))`"""
    KERNEL, HYPER, STATE = "adagrad", ("lr", "gclip", "eps"), ("G",)

    def __init__(self, lr=0.1, gclip=0, eps=1e-6, G=None):
        self.lr, self.gclip, self.eps, self.G = lr, gclip, eps, G

    def _scalars(self):
        return (self.lr, self.eps)


@serializable
class Rmsprop(Optimizer):
    """Rmsprop: G = rho * G + (1 - rho) * g^2; w = w - lr * g / sqrt(G + eps) (eps inside).

    Example: `kn.update_(w, g, kn.Rmsprop(lr=0.001, rho=0.9))`"""
    KERNEL, HYPER, STATE = "rmsprop", ("lr", "gclip", "rho", "eps"), ("G",)

    def __init__(self, lr=0.001, gclip=0, rho=0.9, eps=1e-6, G=None):
        self.lr, self.gclip, self.rho, self.eps, self.G = lr, gclip, rho, eps, G

    def _scalars(self):
        return (self.lr, self.rho, 1 - self.rho, self.eps)


@serializable
class Adadelta(Optimizer):
    """Adadelta: G = rho * G + (1 - rho) * g^2; update = sqrt(delta + eps) * g / sqrt(G + eps);
    w = w - lr * update; delta = rho * delta + (1 - rho) * update^2.

    Example: `kn.update_(w, g, kn.Adadelta(lr=0.01, rho=0.9))`"""
    KERNEL, HYPER, STATE = "adadelta", ("lr", "gclip", "rho", "eps"), ("G", "delta")

    def __init__(self, lr=0.01, gclip=0, rho=0.9, eps=1e-6, G=None, delta=None):
        self.lr, self.gclip, self.rho, self.eps, self.G, self.delta = lr, gclip, rho, eps, G, delta

    def _scalars(self):
        return (self.lr, self.rho, 1 - self.rho, self.eps)


@serializable
class Adam(Optimizer):
    """Adam: t = t + 1; m = beta1 * m + (1 - beta1) * g; v = beta2 * v + (1 - beta2) * g^2;
    w = w - lr / (sqrt(v / (1 - beta2^t)) + eps) * (m / (1 - beta1^t)) (eps outside the
    square root). m is `fstm`, v `scndm`, t the number of updates so far.

    Example: `w = kn.Param(np.zeros(3), kn.Adam(lr=0.01))`"""
    KERNEL, HYPER, STATE = "adam", ("lr", "gclip", "beta1", "beta2", "eps"), ("fstm", "scndm")

    def __init__(self, lr=0.001, gclip=0, beta1=0.9, beta2=0.999, eps=1e-8, t=0, fstm=None, scndm=None):
        self.lr, self.gclip, self.beta1, self.beta2, self.eps = lr, gclip, beta1, beta2, eps
        self.t, self.fstm, self.scndm = t, fstm, scndm

    def _scalars(self):
        self.t += 1  # the bias correction uses the count including this update
        return (self.lr, self.beta1, 1 - self.beta1, self.beta2, 1 - self.beta2,
                1 - self.beta1 ** self.t, 1 - self.beta2 ** self.t, self.eps)


OPTIMIZERS = (SGD, Momentum, Nesterov, Adagrad, Rmsprop, Adadelta, Adam)


def update_(w, g, opt=None, **sgd_options):
    """Update weights in place with their gradients (Knet's `update!`); returns w.

    - `update_(p, g)` for a Param uses `p.opt` (SGD when unset, not stored);
      `update_(p, g, opt)` uses `opt` and keeps it in `p.opt` when that is unset, so later
      calls continue its state.
    - `update_(w, g)` for an array uses `SGD(**sgd_options)` (e.g. `lr=0.1`, `gclip`);
      `update_(w, g, opt)` uses `opt`, whose state then belongs to w.
    - Tuples/lists and dicts of weights take matching gradients and optimizers (a dict's
      gradients may have fewer keys); a None gradient (no dependence) is skipped.

    Example: `kn.update_((w1, w2), (g1, g2), (kn.Adam(), kn.SGD(lr=0.1)))`
    """
    if g is None:
        return w
    if isinstance(w, Param):
        if opt is None:
            opt = w.opt if w.opt is not None else SGD(**sgd_options)
        elif w.opt is None:
            w.opt = opt
        if not isinstance(w.value, (np.ndarray, Param)) and not _kernels().is_device_array(w.value):
            w.value = np.array(w.value, dtype=np.float64)  # Param(3.0): a 0-d array, updated in place
        opt.update_(value_of(w), g)
        return w
    if isinstance(w, dict):
        opts = _matching(w, opt, sgd_options)
        for key in g:  # as Knet: g may have fewer keys than w
            update_(w[key], g[key], opts[key] if opts is not None else None, **sgd_options)
        return w
    if isinstance(w, (list, tuple)):
        opts = _matching(w, opt, sgd_options)
        if len(g) != len(w) or (opts is not None and len(opts) != len(w)):
            raise ValueError(f"update_: {len(w)} weights, {len(g)} gradients"
                             + ("" if opts is None else f" and {len(opts)} optimizers") + ": they must match")
        for i, (wi, gi) in enumerate(zip(w, g)):
            update_(wi, gi, opts[i] if opts is not None else None, **sgd_options)
        return w
    if opt is None:
        opt = SGD(**sgd_options)
    if not isinstance(opt, Optimizer):
        raise TypeError(f"update_: expected an optimizer for a single weight, got {type(opt).__name__}")
    opt.update_(w, g)
    return w


def _matching(w, opt, sgd_options):
    """The optimizers for the elements of a container: None (each element's default), a
    matching container, or one stateless SGD shared by all (as Knet's 2-argument form)."""
    if opt is None or isinstance(opt, (dict, list, tuple)):
        return opt
    if isinstance(opt, SGD):
        return {key: opt for key in w} if isinstance(w, dict) else [opt] * len(w)
    raise TypeError(f"update_: one {type(opt).__name__} for a {type(w).__name__} of weights; give one optimizer "
                    f"per weight in a matching {type(w).__name__} (each holds that weight's state)")
