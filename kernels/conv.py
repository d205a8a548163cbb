"""Convolution routines for the call ops conv4, deconv4 and conv4_dw (knetc/ops/conv.py).

Three products, each with a CPU routine (Numba njit: im2col + BLAS GEMMs, the batch split
over threads with prange) and a CUDA routine (cuDNN when ``knetc.runtime.cudnn.available()``,
else knetc's own Numba CUDA kernels, one thread per output element):

  conv4     y  = alpha * conv(w, x)              w (K, C/g, *k), x (N, C, *s), y (N, K, *o)
  deconv4   dx = alpha * conv^T(w, dy)            the gradient of conv4 with respect to x
  conv4_dw  dw = alpha * d<conv(w, x), dy>/dw     the gradient of conv4 with respect to w

Every routine has the call-op signature ``routine(a, b, out, padding, stride, dilation, mode,
alpha, group[, size])``; ``out`` is preallocated and its shape says what to compute. 2-D
convolutions (4-D arrays) run as 3-D ones with depth 1, so there is one set of loops.
mode 0 is a true convolution (the filter is flipped), mode 1 cross-correlation.

Example: ``conv4_cpu(w, x, y, (0, 0), (1, 1), (1, 1), 0, 1.0, 1)``
"""
import numpy as np
from numba import cuda, njit, prange
from numba.extending import overload

from knetc.report import report
from knetc.runtime import cudnn


# ------------------------------------------------------------------ shape helpers (njit)

def _as5(x):
    """(N, C, H, W) -> (N, C, 1, H, W); 5-D arrays unchanged (only used inside njit)."""
    raise NotImplementedError


@overload(_as5)
def _as5_overload(x):
    if x.ndim == 5:
        return lambda x: np.ascontiguousarray(x)
    if x.ndim == 4:
        return lambda x: np.ascontiguousarray(x).reshape(
            (x.shape[0], x.shape[1], 1, x.shape[2], x.shape[3]))
    return None


def _pad3(t, fill):
    """A 2-tuple (h, w) -> (fill, h, w); 3-tuples unchanged (only used inside njit)."""
    raise NotImplementedError


@overload(_pad3)
def _pad3_overload(t, fill):
    n = len(t.types)
    if n == 3:
        return lambda t, fill: (t[0], t[1], t[2])
    if n == 2:
        return lambda t, fill: (fill, t[0], t[1])
    return None


@njit(cache=True)
def _cdiv(a, b):
    """ceil(a / b) for b > 0 and any sign of a."""
    return -((-a) // b)


@njit(cache=True)
def _effective_weight(w, mode, alpha):
    """alpha * w, spatially flipped for mode 0 (a true convolution), C-contiguous 5-D."""
    K, C, KD, KH, KW = w.shape
    out = np.empty(w.shape, w.dtype)
    for k in range(K):
        for c in range(C):
            for a in range(KD):
                for b in range(KH):
                    for e in range(KW):
                        if mode == 0:
                            out[k, c, a, b, e] = alpha * w[k, c, KD - 1 - a, KH - 1 - b, KW - 1 - e]
                        else:
                            out[k, c, a, b, e] = alpha * w[k, c, a, b, e]
    return out


@njit(cache=True)
def _ow_range(off, sw, W, OW):
    """The output columns ow with 0 <= ow*sw + off < W, as [lo, hi)."""
    lo = max(0, _cdiv(-off, sw))
    hi = min(OW, _cdiv(W - off, sw))
    return lo, max(lo, hi)


# Inner loops index with uint64 (every index here is known to be >= 0): with int64 indices
# Numba adds a negative-index wraparound to each access, which keeps LLVM from vectorizing
# the short row copies (LeNet's 5x5x20 im2col: 49 -> 9 us a sample). uint64 and int64 must
# not meet in one expression (Numba would make it a float).

@njit(cache=True)
def _im2col(xs, cols, col0, C, D, H, W, ksize, pad, st, dil, osize):
    """cols[(c, kd, kh, kw), col0 + (od, oh, ow)] = xs[c, od*sd + kd*dd - pd, ...] (0 outside),
    xs one sample flattened to C*D*H*W."""
    KD, KH, KW = ksize
    OD, OH, OW = osize
    sd, sh, sw = st
    swu = np.uint64(sw)
    row = 0
    for c in range(C):
        for kd in range(KD):
            for kh in range(KH):
                for kw in range(KW):
                    crow = cols[row]
                    off = kw * dil[2] - pad[2]
                    lo, hi = _ow_range(off, sw, W, OW)
                    for od in range(OD):
                        i_d = od * sd + kd * dil[0] - pad[0]
                        for oh in range(OH):
                            i_h = oh * sh + kh * dil[1] - pad[1]
                            base = col0 + (od * OH + oh) * OW
                            if i_d < 0 or i_d >= D or i_h < 0 or i_h >= H:
                                crow[base:base + OW] = 0
                                continue
                            if lo > 0:
                                crow[base:base + lo] = 0
                            if hi > lo:
                                s0 = np.uint64(((c * D + i_d) * H + i_h) * W + off + lo * sw)
                                d0 = np.uint64(base + lo)
                                if sw == 1:
                                    for j in range(np.uint64(hi - lo)):
                                        crow[d0 + j] = xs[s0 + j]
                                else:
                                    for j in range(np.uint64(hi - lo)):
                                        crow[d0 + j] = xs[s0 + j * swu]
                            if hi < OW:
                                crow[base + max(lo, hi):base + OW] = 0
                    row += 1


@njit(cache=True)
def _col2im(cols, col0, dxs, C, D, H, W, ksize, pad, st, dil, osize):
    """The adjoint of _im2col: dxs[c, i_d, i_h, i_w] += cols[(c, kd, kh, kw), col0 + (od, oh, ow)]
    (dxs one sample flattened, zeroed by the caller)."""
    KD, KH, KW = ksize
    OD, OH, OW = osize
    sd, sh, sw = st
    swu = np.uint64(sw)
    row = 0
    for c in range(C):
        for kd in range(KD):
            for kh in range(KH):
                for kw in range(KW):
                    crow = cols[row]
                    off = kw * dil[2] - pad[2]
                    lo, hi = _ow_range(off, sw, W, OW)
                    if hi > lo:
                        for od in range(OD):
                            i_d = od * sd + kd * dil[0] - pad[0]
                            if i_d < 0 or i_d >= D:
                                continue
                            for oh in range(OH):
                                i_h = oh * sh + kh * dil[1] - pad[1]
                                if i_h < 0 or i_h >= H:
                                    continue
                                s0 = np.uint64(col0 + (od * OH + oh) * OW + lo)
                                d0 = np.uint64(((c * D + i_d) * H + i_h) * W + off + lo * sw)
                                if sw == 1:
                                    for j in range(np.uint64(hi - lo)):
                                        dxs[d0 + j] += crow[s0 + j]
                                else:
                                    for j in range(np.uint64(hi - lo)):
                                        dxs[d0 + j * swu] += crow[s0 + j]
                    row += 1


@njit(cache=True)
def _take_columns(src, col0, dst):
    """dst[:, :] = src[:, col0:col0 + dst.shape[1]] (2-D, C-contiguous rows)."""
    n = np.uint64(dst.shape[1])
    c0 = np.uint64(col0)
    for r in range(dst.shape[0]):
        s, d = src[r], dst[r]
        for j in range(n):
            d[j] = s[c0 + j]


@njit(cache=True)
def _put_columns(src, dst, col0):
    """dst[:, col0:col0 + src.shape[1]] = src (2-D, C-contiguous rows)."""
    n = np.uint64(src.shape[1])
    c0 = np.uint64(col0)
    for r in range(src.shape[0]):
        s, d = src[r], dst[r]
        for j in range(n):
            d[c0 + j] = s[j]


MAX_CHUNKS = 16         # batch pieces for prange (a constant: get_num_threads() blocks caching)
MAX_COLS = 1 << 17      # elements of a chunk's im2col buffer (512 KiB of float32: stays in L2)


@njit(cache=True)
def _chunks(n):
    """How many pieces to split a batch of n into (prange hands them to the threads)."""
    return max(1, min(MAX_CHUNKS, n))


@njit(cache=True)
def _per_gemm(rows, npix, n):
    """Samples per GEMM: several, so that the products are large enough for BLAS to be efficient,
    within MAX_COLS elements of im2col buffer."""
    return max(1, min(n, MAX_COLS // max(1, rows * npix)))


# The im2col routines split the batch into chunks (one prange iteration each) and run BLAS on
# one thread inside them. A chunk's samples go through im2col side by side, (rows, b * npix),
# so one GEMM per group covers b samples: OpenBLAS runs LeNet's 5x5x20 -> 50 product at about
# 2.4x the speed for 4 samples than for one (57 -> 24 us a sample).

@njit(cache=True, parallel=True)
def _conv_fwd5(w, x, y, pad, st, dil, mode, alpha, group):
    N, C, D, H, W = x.shape
    K, Cg, KD, KH, KW = w.shape
    OD, OH, OW = y.shape[2], y.shape[3], y.shape[4]
    Kg, rows, npix = K // group, Cg * KD * KH * KW, OD * OH * OW
    wm = _effective_weight(w, mode, alpha).reshape((K, rows))
    xf = x.reshape((N, C * D * H * W))
    ym = y.reshape((N, K, npix))
    T = _chunks(N)
    B = _per_gemm(C * KD * KH * KW, npix, (N + T - 1) // T)
    for t in prange(T):
        colbuf = np.empty(C * KD * KH * KW * B * npix, x.dtype)
        prodbuf = np.empty(Kg * B * npix, x.dtype)
        hi = (t + 1) * N // T
        for n0 in range(t * N // T, hi, B):
            b = min(B, hi - n0)
            # flat buffers reshaped: C-contiguous views, as np.dot's out= needs
            cols = colbuf[:C * KD * KH * KW * b * npix].reshape((C * KD * KH * KW, b * npix))
            prod = prodbuf[:Kg * b * npix].reshape((Kg, b * npix))
            for j in range(b):
                _im2col(xf[n0 + j], cols, j * npix, C, D, H, W, (KD, KH, KW), pad, st, dil, (OD, OH, OW))
            for g in range(group):
                if b == 1:  # straight into y
                    np.dot(wm[g * Kg:(g + 1) * Kg], cols[g * rows:(g + 1) * rows], ym[n0, g * Kg:(g + 1) * Kg])
                else:
                    np.dot(wm[g * Kg:(g + 1) * Kg], cols[g * rows:(g + 1) * rows], prod)
                    for j in range(b):
                        _take_columns(prod, j * npix, ym[n0 + j, g * Kg:(g + 1) * Kg])


@njit(cache=True, parallel=True)
def _conv_bwd_data5(w, dy, dx, pad, st, dil, mode, alpha, group):
    N, C, D, H, W = dx.shape
    K, Cg, KD, KH, KW = w.shape
    OD, OH, OW = dy.shape[2], dy.shape[3], dy.shape[4]
    Kg, rows, npix = K // group, Cg * KD * KH * KW, OD * OH * OW
    wm = _effective_weight(w, mode, alpha).reshape((K, rows))
    wt = np.empty((group, rows, Kg), w.dtype)  # each group's filter matrix, transposed
    for g in range(group):
        wt[g] = wm[g * Kg:(g + 1) * Kg].T
    dym = np.ascontiguousarray(dy).reshape((N, K, npix))
    dxf = dx.reshape((N, C * D * H * W))
    T = _chunks(N)
    B = _per_gemm(C * KD * KH * KW, npix, (N + T - 1) // T)
    for t in prange(T):
        colbuf = np.empty(C * KD * KH * KW * B * npix, dx.dtype)
        dybuf = np.empty(K * B * npix, dx.dtype)  # the chunk's dy side by side
        hi = (t + 1) * N // T
        for n0 in range(t * N // T, hi, B):
            b = min(B, hi - n0)
            cols = colbuf[:C * KD * KH * KW * b * npix].reshape((C * KD * KH * KW, b * npix))
            dyb = dybuf[:K * b * npix].reshape((K, b * npix))
            for j in range(b):
                _put_columns(dym[n0 + j], dyb, j * npix)
            for g in range(group):
                np.dot(wt[g], dyb[g * Kg:(g + 1) * Kg], cols[g * rows:(g + 1) * rows])
            for j in range(b):
                dxf[n0 + j] = 0
                _col2im(cols, j * npix, dxf[n0 + j], C, D, H, W, (KD, KH, KW), pad, st, dil, (OD, OH, OW))


@njit(cache=True, parallel=True)
def _conv_bwd_filter5(x, dy, dw, pad, st, dil, mode, alpha, group):
    N, C, D, H, W = x.shape
    K, Cg, KD, KH, KW = dw.shape
    OD, OH, OW = dy.shape[2], dy.shape[3], dy.shape[4]
    Kg, rows, npix = K // group, Cg * KD * KH * KW, OD * OH * OW
    dym = np.ascontiguousarray(dy).reshape((N, K, npix))
    xf = x.reshape((N, C * D * H * W))
    T = _chunks(N)
    B = _per_gemm(C * KD * KH * KW, npix, (N + T - 1) // T)
    partial = np.zeros((T, K, rows), dw.dtype)  # one accumulator per chunk, summed below
    for t in prange(T):
        colbuf = np.empty(C * KD * KH * KW * B * npix, x.dtype)
        dybuf = np.empty(K * B * npix, x.dtype)
        prod = np.empty((Kg, rows), x.dtype)
        hi = (t + 1) * N // T
        for n0 in range(t * N // T, hi, B):
            b = min(B, hi - n0)
            cols = colbuf[:C * KD * KH * KW * b * npix].reshape((C * KD * KH * KW, b * npix))
            dyb = dybuf[:K * b * npix].reshape((K, b * npix))
            for j in range(b):
                _im2col(xf[n0 + j], cols, j * npix, C, D, H, W, (KD, KH, KW), pad, st, dil, (OD, OH, OW))
                _put_columns(dym[n0 + j], dyb, j * npix)
            for g in range(group):
                np.dot(dyb[g * Kg:(g + 1) * Kg], cols[g * rows:(g + 1) * rows].T, prod)
                partial[t, g * Kg:(g + 1) * Kg] += prod
    for t in range(1, T):
        partial[0] += partial[t]
    total = partial[0].reshape((K, Cg, KD, KH, KW))
    for k in range(K):
        for c in range(Cg):
            for a in range(KD):
                for b in range(KH):
                    for e in range(KW):
                        v = alpha * total[k, c, a, b, e]
                        if mode == 0:  # the filter was flipped in the forward pass
                            dw[k, c, KD - 1 - a, KH - 1 - b, KW - 1 - e] = v
                        else:
                            dw[k, c, a, b, e] = v


@njit(cache=True)
def conv4_cpu(w, x, out, padding, stride, dilation, mode, alpha, group):
    """out = alpha * conv(w, x) (mode 0) or cross-correlation (mode 1); 4-D or 5-D arrays."""
    _conv_fwd5(_as5(w), _as5(x), _as5(out), _pad3(padding, 0), _pad3(stride, 1),
               _pad3(dilation, 1), mode, alpha, group)


@njit(cache=True)
def deconv4_cpu(w, x, out, padding, stride, dilation, mode, alpha, group, size):
    """out = alpha * conv^T(w, x): the transposed convolution (conv4's input gradient)."""
    _conv_bwd_data5(_as5(w), _as5(x), _as5(out), _pad3(padding, 0), _pad3(stride, 1),
                    _pad3(dilation, 1), mode, alpha, group)


@njit(cache=True)
def conv4_dw_cpu(x, dy, out, padding, stride, dilation, mode, alpha, group, size):
    """out = alpha * d<conv(w, x), dy>/dw: conv4's filter gradient (out has w's shape)."""
    _conv_bwd_filter5(_as5(x), _as5(dy), _as5(out), _pad3(padding, 0), _pad3(stride, 1),
                      _pad3(dilation, 1), mode, alpha, group)


# ------------------------------------------------------------------ CUDA kernels (fallback)
# Each thread accumulates in the data's type (``x.dtype.type(0)``, alpha converted likewise):
# float32 data runs float32 FMAs, not float64 ones (2-64x slower on GPUs); float64 stays
# float64. The error of a float32 sum of Cg*KD*KH*KW (or N*OD*OH*OW) products is what
# cuDNN's FMA math gives too.

@cuda.jit(device=True, inline="always")  # inlined in Numba IR: PTX builds without a GPU
def _unravel5(i, shape):
    """The C-order position of flat index i in a 5-D shape."""
    i4 = i % shape[4]
    t = i // shape[4]
    i3 = t % shape[3]
    t //= shape[3]
    i2 = t % shape[2]
    t //= shape[2]
    return t // shape[1], t % shape[1], i2, i3, i4


@cuda.jit(device=True, inline="always")
def _filter_at(w, k, c, a, b, e, flip):
    """w[k, c, a, b, e], or the spatially flipped filter's entry (a true convolution)."""
    if flip:
        return w[k, c, w.shape[2] - 1 - a, w.shape[3] - 1 - b, w.shape[4] - 1 - e]
    return w[k, c, a, b, e]


@cuda.jit(device=True, inline="always")
def _window_dot(acc, f, f0, f1, flip, x, x0, x1, o0, o1, o2, s0, s1, s2, t0, t1, t2, p0, p1, p2):
    """acc + the sum of _filter_at(f, f0, f1, u, v, z, flip) * x[x0, x1, o0*s0 + u*t0 - p0, ...]
    over (u, v, z) < f.shape[2:] inside x (acc threaded through keeps the summation order). The
    position is symmetric in (o, s) and (u, t): conv walks the taps (f = w, o = output, s = stride,
    t = dilation), the filter gradient the outputs (f = dy, o = tap, s = dilation, t = stride).
    `and` in the last test, not `continue`: LLVM then drops the inner loop's negative-index wrap."""
    D, H, W = x.shape[2], x.shape[3], x.shape[4]
    for u in range(f.shape[2]):
        i_d = o0 * s0 + u * t0 - p0
        if i_d < 0 or i_d >= D:
            continue
        for v in range(f.shape[3]):
            i_h = o1 * s1 + v * t1 - p1
            if i_h < 0 or i_h >= H:
                continue
            for z in range(f.shape[4]):
                i_w = o2 * s2 + z * t2 - p2
                if i_w >= 0 and i_w < W:
                    acc += _filter_at(f, f0, f1, u, v, z, flip) * x[x0, x1, i_d, i_h, i_w]
    return acc


@cuda.jit
def _conv_fwd_kernel(w, x, y, pd, ph, pw, sd, sh, sw, dd, dh, dw, flip, alpha, group):
    i = cuda.grid(1)
    if i >= y.size:
        return
    n, k, od, oh, ow = _unravel5(i, y.shape)
    K, Cg = w.shape[0], w.shape[1]
    c0 = (k // (K // group)) * Cg
    acc = y.dtype.type(0)  # accumulate in the data's type (float32 stays float32)
    for c in range(Cg):
        acc = _window_dot(acc, w, k, c, flip, x, n, c0 + c, od, oh, ow, sd, sh, sw, dd, dh, dw, pd, ph, pw)
    y[n, k, od, oh, ow] = y.dtype.type(alpha) * acc


@cuda.jit
def _conv_bwd_data_kernel(w, dy, dx, pd, ph, pw, sd, sh, sw, dd, dh, dw, flip, alpha, group):
    i = cuda.grid(1)
    if i >= dx.size:
        return
    n, c, i_d, ih, iw = _unravel5(i, dx.shape)
    K, Cg, KD, KH, KW = w.shape
    OD, OH, OW = dy.shape[2], dy.shape[3], dy.shape[4]
    Kg = K // group
    g = c // Cg
    cc = c - g * Cg
    acc = dx.dtype.type(0)
    for a in range(KD):
        td = i_d + pd - a * dd  # = od * sd for the outputs this input pixel feeds
        if td < 0 or td % sd != 0 or td // sd >= OD:
            continue
        for b in range(KH):
            th = ih + ph - b * dh
            if th < 0 or th % sh != 0 or th // sh >= OH:
                continue
            for e in range(KW):
                tw = iw + pw - e * dw
                if tw < 0 or tw % sw != 0 or tw // sw >= OW:
                    continue
                for k in range(g * Kg, (g + 1) * Kg):
                    acc += _filter_at(w, k, cc, a, b, e, flip) * dy[n, k, td // sd, th // sh, tw // sw]
    dx[n, c, i_d, ih, iw] = dx.dtype.type(alpha) * acc


@cuda.jit
def _conv_bwd_filter_kernel(x, dy, dwt, pd, ph, pw, sd, sh, sw, dd, dh, dw, flip, alpha, group):
    i = cuda.grid(1)
    if i >= dwt.size:
        return
    k, c, a, b, e = _unravel5(i, dwt.shape)
    K, Cg, KD, KH, KW = dwt.shape
    c0 = (k // (K // group)) * Cg
    acc = dwt.dtype.type(0)
    for n in range(x.shape[0]):  # dy is not flipped; (a, b, e) play the outputs' part
        acc = _window_dot(acc, dy, n, k, False, x, n, c0 + c, a, b, e, dd, dh, dw, sd, sh, sw, pd, ph, pw)
    if flip:  # (a, b, e) indexed the flipped filter the forward pass used
        dwt[k, c, KD - 1 - a, KH - 1 - b, KW - 1 - e] = dwt.dtype.type(alpha) * acc
    else:
        dwt[k, c, a, b, e] = dwt.dtype.type(alpha) * acc


KERNELS = {"_conv_fwd_kernel": _conv_fwd_kernel, "_conv_bwd_data_kernel": _conv_bwd_data_kernel,
           "_conv_bwd_filter_kernel": _conv_bwd_filter_kernel}

_THREADS = 128


def _dev5(a):
    """A 4-D device array viewed as 5-D with depth 1 (no copy)."""
    return a.reshape((a.shape[0], a.shape[1], 1) + tuple(a.shape[2:])) if a.ndim == 4 else a


def _tuple3(t, fill):
    t = tuple(int(v) for v in t)
    return (fill,) * (3 - len(t)) + t


def _launch(kernel, a, b, out, padding, stride, dilation, mode, alpha, group):
    p, s, d = _tuple3(padding, 0), _tuple3(stride, 1), _tuple3(dilation, 1)
    n = int(np.prod(out.shape))
    if n == 0:
        return
    kernel[(n + _THREADS - 1) // _THREADS, _THREADS](
        _dev5(a), _dev5(b), _dev5(out), *p, *s, *d, int(mode) == 0, float(alpha), int(group))


_LOGGED = set()


def _log_choice(what, key, message):
    if key not in _LOGGED:
        _LOGGED.add(key)
        report("cudnn", "%s %s: %s" % (what, key, message))


def conv4_cuda(w, x, out, padding, stride, dilation, mode, alpha, group):
    """conv4 on device arrays: cuDNN when available, else knetc's Numba kernel."""
    if cudnn.available():
        cudnn.convolution("forward", w, x, out, padding, stride, dilation, mode, alpha, group)
        return
    _log_choice("conv4", (tuple(x.shape), tuple(w.shape)), "numba kernel")
    _launch(_conv_fwd_kernel, w, x, out, padding, stride, dilation, mode, alpha, group)


def deconv4_cuda(w, x, out, padding, stride, dilation, mode, alpha, group, size):
    """deconv4 (conv4's input gradient) on device arrays: cuDNN or knetc's Numba kernel."""
    if cudnn.available():
        cudnn.convolution("backward_data", w, out, x, padding, stride, dilation, mode, alpha, group)
        return
    _log_choice("deconv4", (tuple(x.shape), tuple(w.shape)), "numba kernel")
    _launch(_conv_bwd_data_kernel, w, x, out, padding, stride, dilation, mode, alpha, group)


def conv4_dw_cuda(x, dy, out, padding, stride, dilation, mode, alpha, group, size):
    """conv4's filter gradient on device arrays: cuDNN or knetc's Numba kernel."""
    if cudnn.available():
        cudnn.convolution("backward_filter", out, x, dy, padding, stride, dilation, mode, alpha, group)
        return
    _log_choice("conv4_dw", (tuple(x.shape), tuple(out.shape)), "numba kernel")
    _launch(_conv_bwd_filter_kernel, x, dy, out, padding, stride, dilation, mode, alpha, group)
