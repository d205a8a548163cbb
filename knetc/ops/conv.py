"""Convolution: conv4 and deconv4 (Knet's names), 2-D on 4-D arrays and 3-D on 5-D arrays.

Translation from Knet: x is (N, C, H, W) (or (N, C, D, H, W)), w is (Cout, Cin/group, KH, KW);
deconv4's w is (Cx, Cy/group, KH, KW), PyTorch's conv_transpose weight layout. padding,
stride and dilation are a scalar or a tuple in Python dimension order ((pH, pW)).
mode=0 is a true convolution (the filter is flipped), mode=1 cross-correlation (PyTorch's
conv2d). Output sizes follow the seeds:

    conv4:   Y = 1 + (X + 2*padding - ((K-1)*dilation + 1)) // stride
    deconv4: Y = (X-1)*stride + ((K-1)*dilation + 1) - 2*padding

Three call ops (library routines in knetc/kernels/conv.py: im2col + BLAS on the CPU, the
batch split across threads; cuDNN or Numba kernels on CUDA) close under differentiation:
conv4's input gradient is a deconv4, its filter gradient the conv4_dw op, and the gradients
of those are again these three.
"""
import numpy as np

from ..errors import ShapeError
from .core import Aval, Op, aval_of, register
from .pooling import spatial, whole

__all__ = ["conv4", "deconv4"]

_LOWER = {
    "conv4": {"cpu": "knetc.kernels.conv:conv4_cpu", "cuda": "knetc.kernels.conv:conv4_cuda"},
    "deconv4": {"cpu": "knetc.kernels.conv:deconv4_cpu", "cuda": "knetc.kernels.conv:deconv4_cuda"},
    "conv4_dw": {"cpu": "knetc.kernels.conv:conv4_dw_cpu", "cuda": "knetc.kernels.conv:conv4_dw_cuda"},
}


# ------------------------------------------------------------------ shape rules

def _check_arrays(name, w, x, wname="w", xname="x"):
    for label, a in ((wname, w), (xname, x)):
        if a.ndim not in (4, 5):
            raise ShapeError(f"{name}: {label} must be 4-D (N, C, H, W) or 5-D (N, C, D, H, W) "
                             f"for a 2-D or 3-D convolution, got {a}")
        if a.dtype is not None and np.dtype(a.dtype) not in (np.float32, np.float64):
            raise ShapeError(f"{name}: expected float32 or float64 arrays (as Knet's conv4 and deconv4), got {label} {a}")
    if w.ndim != x.ndim:
        raise ShapeError(f"{name}: {wname} {w} and {xname} {x} must have the same number of dimensions")
    if w.dtype is not None and x.dtype is not None and w.dtype != x.dtype:
        raise ShapeError(f"{name}: {wname} {w} and {xname} {x} must have the same dtype")


def _check_params(name, nsp, padding, stride, dilation, group):
    for key, t, least in (("padding", padding, 0), ("stride", stride, 1), ("dilation", dilation, 1)):
        if len(t) != nsp or any(v < least for v in t):
            raise ShapeError(f"{name}: {key}={t} needs {nsp} entries >= {least}")
    if group < 1:
        raise ShapeError(f"{name}: group={group} must be >= 1")


def _conv_sizes(name, xsize, ksize, padding, stride, dilation):
    """conv4's output spatial size, with an error where the window does not fit."""
    out = []
    for i, (n, k, p, s, d) in enumerate(zip(xsize, ksize, padding, stride, dilation)):
        window = (k - 1) * d + 1
        if window > n + 2 * p:
            raise ShapeError(f"{name}: the window {window} (filter {k}, dilation {d}) is larger "
                             f"than the padded input {n} + 2*{p} in spatial dimension {i}")
        out.append(1 + (n + 2 * p - window) // s)
    return tuple(out)


def _check_channels(name, cin, w, group, cname="x"):
    cout, cg = w.shape[0], w.shape[1]
    if cout % group:
        raise ShapeError(f"{name}: group={group} does not divide the {cout} filters of w {w}")
    if cin % group:
        raise ShapeError(f"{name}: group={group} does not divide the {cin} channels of {cname}")
    if cg * group != cin:
        raise ShapeError(f"{name}: channel mismatch: {cname} has {cin} channels but w {w} expects "
                         f"{cg} per group x group={group} = {cg * group}")


def _conv4_rule(w, x, padding, stride, dilation, mode, alpha, group):
    _check_arrays("conv4", w, x)
    _check_params("conv4", x.ndim - 2, padding, stride, dilation, group)
    _check_channels("conv4", x.shape[1], w, group)
    ysize = _conv_sizes("conv4", x.shape[2:], w.shape[2:], padding, stride, dilation)
    return Aval((x.shape[0], w.shape[0]) + ysize, w.dtype or x.dtype)


def _deconv4_rule(w, x, padding, stride, dilation, mode, alpha, group, size):
    # w (Cx, Cy/group, k...), x (N, Cx, ...) -> (N, Cy, *size); conv4 maps that back to x
    _check_arrays("deconv4", w, x)
    _check_params("deconv4", x.ndim - 2, padding, stride, dilation, group)
    if len(size) != x.ndim - 2:
        raise ShapeError(f"deconv4: size={size} needs {x.ndim - 2} entries")
    if w.shape[0] != x.shape[1]:
        raise ShapeError(f"deconv4: channel mismatch: x {x} has {x.shape[1]} channels but w {w} "
                         f"expects {w.shape[0]} (w is (Cx, Cy/group, ...))")
    if w.shape[0] % group:
        raise ShapeError(f"deconv4: group={group} does not divide the {w.shape[0]} channels of x")
    back = _conv_sizes("deconv4", size, w.shape[2:], padding, stride, dilation)
    if back != tuple(x.shape[2:]):
        raise ShapeError(f"deconv4: an output of spatial size {size} does not convolve back to "
                         f"x {x} (it gives {back})")
    return Aval((x.shape[0], w.shape[1] * group) + tuple(size), w.dtype or x.dtype)


def _conv4_dw_rule(x, dy, padding, stride, dilation, mode, alpha, group, size):
    _check_arrays("conv4_dw", x, dy, "x", "dy")
    _check_params("conv4_dw", x.ndim - 2, padding, stride, dilation, group)
    if x.shape[0] != dy.shape[0] or x.shape[1] % group or dy.shape[1] % group:
        raise ShapeError(f"conv4_dw: x {x} and dy {dy} do not fit group={group}")
    if _conv_sizes("conv4_dw", x.shape[2:], size, padding, stride, dilation) != tuple(dy.shape[2:]):
        raise ShapeError(f"conv4_dw: a filter of size {size} does not map x {x} to dy {dy}")
    return Aval((dy.shape[1], x.shape[1] // group) + tuple(size), x.dtype or dy.dtype)


# ------------------------------------------------------------------ numpy-level (eager) impls

def _run(routine, shape, a, b, params):
    """Eager evaluation with the same routines the compiled CPU code calls."""
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    dtype = np.result_type(a.dtype, b.dtype)
    out = np.empty(shape, dtype)
    routine(a.astype(dtype, copy=False), b.astype(dtype, copy=False), out, **params)
    return out


def _conv4_impl(w, x, **params):
    from knetc.kernels import conv as k
    shape = _conv4_rule(aval_of(w), aval_of(x), **params).shape
    return _run(k.conv4_cpu, shape, w, x, params)


def _deconv4_impl(w, x, **params):
    from knetc.kernels import conv as k
    shape = _deconv4_rule(aval_of(w), aval_of(x), **params).shape
    return _run(k.deconv4_cpu, shape, w, x, params)


def _conv4_dw_impl(x, dy, **params):
    from knetc.kernels import conv as k
    shape = _conv4_dw_rule(aval_of(x), aval_of(dy), **params).shape
    return _run(k.conv4_dw_cpu, shape, x, dy, params)


# ------------------------------------------------------------------ gradients (written with ops)

def _spatial(a):
    return tuple(aval_of(a).shape[2:])


def _conv4_grads():
    def dw(dy, y, w, x, **p):
        return conv4_dw_(x, dy, size=_spatial(w), **p)

    def dx(dy, y, w, x, **p):
        return deconv4_(w, dy, size=_spatial(x), **p)
    return dw, dx


def _deconv4_grads():
    # y = conv^T_w(x): <g, y> = <conv_w(g), x>
    def dw(g, y, w, x, size, **p):
        return conv4_dw_(g, x, size=_spatial(w), **p)

    def dx(g, y, w, x, size, **p):
        return conv4_(w, g, **p)
    return dw, dx


def _conv4_dw_grads():
    # dw = D(x, dy), bilinear: <G, D(x, dy)> = <conv_G(x), dy>
    def dx(g, y, x, dy, size, **p):
        return deconv4_(g, dy, size=_spatial(x), **p)

    def ddy(g, y, x, dy, size, **p):
        return conv4_(g, x, **p)
    return dx, ddy


# blas="split": the CPU routines split the batch across threads, each calling BLAS (kernels/conv.py)
conv4_ = register(Op("conv4", _conv4_rule, _conv4_impl, _conv4_grads(), "call",
                     lowering=_LOWER["conv4"], blas="split"))
deconv4_ = register(Op("deconv4", _deconv4_rule, _deconv4_impl, _deconv4_grads(), "call",
                       lowering=_LOWER["deconv4"], blas="split"))
conv4_dw_ = register(Op("conv4_dw", _conv4_dw_rule, _conv4_dw_impl, _conv4_dw_grads(), "call",
                        lowering=_LOWER["conv4_dw"], blas="split"))


# ------------------------------------------------------------------ public functions

def _params(name, x, padding, stride, dilation, mode, alpha, group):
    ndim = aval_of(x).ndim
    if ndim not in (4, 5):
        raise ShapeError(f"{name}: x must be 4-D (N, C, H, W) or 5-D (N, C, D, H, W), "
                         f"got {aval_of(x)}")
    if mode not in (0, 1):
        raise ShapeError(f"{name}: mode={mode!r} must be 0 (convolution) or 1 (cross-correlation)")
    if not whole(group) or group < 1:
        raise ShapeError(f"{name}: group={group!r} must be a positive int")
    nsp = ndim - 2
    return dict(padding=spatial(name, "padding", padding, nsp), stride=spatial(name, "stride", stride, nsp),
                dilation=spatial(name, "dilation", dilation, nsp), mode=int(mode), alpha=float(alpha),
                group=int(group))


def conv4(w, x, padding=0, stride=1, dilation=1, mode=0, alpha=1, group=1):
    """Convolution of x (N, C, H, W) with filters w (Cout, C/group, KH, KW) -> (N, Cout, Y1, Y2).

    5-D x and w give a 3-D convolution. mode=0 flips the filter (a true convolution),
    mode=1 is cross-correlation (PyTorch's conv2d); alpha scales the result.

    >>> kn.conv4(np.array([1., 2, 3]).reshape(1, 1, 1, 3), np.arange(1., 8).reshape(1, 1, 1, 7))
    array([[[[10., 16., 22., 28., 34.]]]])
    """
    return conv4_(w, x, **_params("conv4", x, padding, stride, dilation, mode, alpha, group))


def deconv4(w, x, padding=0, stride=1, dilation=1, mode=0, alpha=1, group=1):
    """Transposed convolution: x (N, Cx, H, W), w (Cx, Cy/group, KH, KW) -> (N, Cy, Y1, Y2).

    Y = (X-1)*stride + (K-1)*dilation + 1 - 2*padding; conv4 with the same w and keywords
    maps the result back to x's shape (deconv4 is conv4's input gradient).

    >>> kn.deconv4(np.ones((3, 2, 2, 2)), np.ones((1, 3, 4, 4)), stride=2).shape
    (1, 2, 8, 8)
    """
    params = _params("deconv4", x, padding, stride, dilation, mode, alpha, group)
    w_aval, x_aval = aval_of(w), aval_of(x)
    if w_aval.ndim != x_aval.ndim:
        raise ShapeError(f"deconv4: w {w_aval} and x {x_aval} must have the same number of dimensions")
    size = tuple((n - 1) * s + (k - 1) * d + 1 - 2 * p for n, k, p, s, d in zip(
        x_aval.shape[2:], w_aval.shape[2:], params["padding"], params["stride"], params["dilation"]))
    if any(n < 1 for n in size):
        raise ShapeError(f"deconv4: padding={params['padding']} leaves no output for x {x_aval} "
                         f"and w {w_aval} (size {size})")
    return deconv4_(w, x, size=size, **params)
