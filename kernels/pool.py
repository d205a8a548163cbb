"""Pooling routines (CPU njit and Numba CUDA) for the "call" ops of knetc.ops.pooling.

Every routine views its arrays as (slices, positions): 4-D (N,C,H,W) and 5-D (N,C,D,H,W)
arrays become (N*C, D*H*W) with D=1 for 4-D, and window, padding and stride are 3-tuples
(d, h, w). Max pooling treats padding as absent (never the maximum); ties go to the first
position in window order, a NaN wins when `nan_opt` is 1 (NaNs propagate) and loses to
any number when it is 0. Average mode 1 divides by the window size, mode 2 by the number
of real (unpadded) positions.

Routines, called by the generated drivers as routine(*inputs, out, **params):
  pool_*(x, out, window, padding, stride, mode, nan_opt, alpha)          y = alpha * pool(x)
  pool_grad_max_*(x, y, dy, out, window, padding, stride, mode, nan_opt, alpha)  dx (max modes)
  pool_grad_avg_*(dy, out, shape, window, padding, stride, mode, alpha)  dx (average modes)
  pool_gather_*(x, y, g, out, window, padding, stride, mode, nan_opt, alpha)  alpha*g[argmax]

Example (CPU): ``pool_cpu(x, y, (1, 2, 2), (0, 0, 0), (1, 2, 2), 0, 1, 1.0)``

The CPU routines are Python: each picks the one kernel its arguments need (2x2 windows,
unpadded max, the general scan, averages) and runs it over the slices, split across
threads when the work is large (kernels/rows.py), so only the kernels a program uses are
compiled, each in a fraction of a second.
"""
import numpy as np
from numba import cuda

from knetc.kernels.rows import kernel, run
from knetc.report import report
from knetc.runtime import cudnn_ops
from knetc.runtime.launch import library_launch

BLOCK = 256


# ----------------------------------------------------------------------------- CPU helpers
# A window is given by its origin (d0, h0, w0) in the input (negative inside the padding);
# the loops run over its positions clipped to the input, so no test per position.

@kernel()
def _row_argmax_cpu(x, s, d0, h0, D, H, W, wd, wh, ww, pw, sw, nan_opt, best, best_i):
    """best_i[ow] = the position (d*H + h)*W + w in slice s of the maximum of the window at
    (d0, h0, ow*sw - pw), for a whole output row at once: the inner loop runs along the row
    (long, regular) instead of along a window's few columns. Each window's positions are
    visited in window order, so a tie goes to the first; a NaN wins when nan_opt is 1 and
    loses to any number when it is 0. Selects, not branches: the comparisons are
    data-dependent and mispredicted branches cost more than the loads."""
    nan_wins, nan_loses = nan_opt != 0, nan_opt == 0
    OW = best_i.shape[0]
    best_i[:] = -1
    for d in range(max(d0, 0), min(d0 + wd, D)):
        for h in range(max(h0, 0), min(h0 + wh, H)):
            row = (d * H + h) * W
            for kw in range(ww):
                off = kw - pw  # input column of output column ow: ow*sw + off
                lo = max(0, -((off) // sw))
                hi = min(OW, -((off - W) // sw))
                for ow in range(lo, hi):
                    i = row + ow * sw + off
                    v, b, bi = x[s, i], best[ow], best_i[ow]
                    take = (bi < 0) | (v > b) | (nan_wins & (v != v) & (b == b)) | (nan_loses & (b != b) & (v == v))
                    best_i[ow] = i if take else bi
                    best[ow] = v if take else b


@kernel()
def _slice_argmax_cpu(x, s, D, H, W, OD, OH, OW, window, padding, stride, nan_opt, best, argmax):
    """argmax[o] = the argmax position in slice s of output o's window, in output order: what
    max pooling, its gradient and the gather of its gradient's gradient all need. best (OW
    entries of x's dtype) and argmax (OD*OH*OW int64) are the caller's, reused per slice."""
    wd, wh, ww = window
    pd, ph, pw = padding
    sd, sh, sw = stride
    for od in range(OD):
        for oh in range(OH):
            o = (od * OH + oh) * OW
            _row_argmax_cpu(x, s, od * sd - pd, oh * sh - ph, D, H, W, wd, wh, ww, pw, sw, nan_opt,
                            best, argmax[o:o + OW])
    return argmax


@kernel()
def _divisor_cpu(d0, h0, w0, D, H, W, wd, wh, ww, mode):
    if mode == 1:
        return wd * wh * ww
    # the window's positions inside the input, per axis
    return ((min(d0 + wd, D) - max(d0, 0)) * (min(h0 + wh, H) - max(h0, 0)) * (min(w0 + ww, W) - max(w0, 0)))


@kernel()
def _sum_cpu(x, s, d0, h0, w0, D, H, W, wd, wh, ww):
    total = 0.0
    for d in range(max(d0, 0), min(d0 + wd, D)):
        for h in range(max(h0, 0), min(h0 + wh, H)):
            row = (d * H + h) * W
            for w in range(max(w0, 0), min(w0 + ww, W)):
                total += x[s, row + w]
    return total


def geometry(xshape, yshape):
    """(slices, D, H, W, OD, OH, OW) of an input/output pair, 4-D or 5-D."""
    slices = xshape[0] * xshape[1]
    if len(xshape) == 4:
        return slices, 1, xshape[2], xshape[3], 1, yshape[2], yshape[3]
    return slices, xshape[2], xshape[3], xshape[4], yshape[2], yshape[3], yshape[4]


def _flat(a, slices):
    """a (4-D or 5-D, NumPy or device array) as (slices, positions per slice): a view."""
    return a.reshape((slices, a.size // max(1, slices)))


def _out(out, slices):
    """The output as (slices, positions): a view, so that the kernels write into `out`."""
    if not out.flags.c_contiguous:
        raise ValueError(f"knetc.kernels.pool: the output must be C-contiguous, got strides {out.strides}")
    return _flat(out, slices)


def _triple(values):
    """window/padding/stride as a tuple of 3 Python ints (one compiled kernel for all callers)."""
    d, h, w = values
    return int(d), int(h), int(w)


# ----------------------------------------------------------------------------- CPU kernels
# Each over the slices (n, c) lo..hi; within a slice, the outputs in order
# o = (od*OH + oh)*OW + ow.

@kernel()
def _forward_max_cpu(x, y, D, H, W, OD, OH, OW, window, padding, stride, nan_opt, alpha, lo, hi):
    best, argmax = np.empty(OW, x.dtype), np.empty(OD * OH * OW, np.int64)
    for s in range(lo, hi):
        _slice_argmax_cpu(x, s, D, H, W, OD, OH, OW, window, padding, stride, nan_opt, best, argmax)
        for o in range(y.shape[1]):
            y[s, o] = alpha * x[s, argmax[o]]


@kernel()
def _forward_avg_cpu(x, y, D, H, W, OD, OH, OW, window, padding, stride, mode, alpha, lo, hi):
    wd, wh, ww = window
    pd, ph, pw = padding
    sd, sh, sw = stride
    for s in range(lo, hi):
        o = 0
        for od in range(OD):
            for oh in range(OH):
                for ow in range(OW):
                    d0, h0, w0 = od * sd - pd, oh * sh - ph, ow * sw - pw
                    total = _sum_cpu(x, s, d0, h0, w0, D, H, W, wd, wh, ww)
                    y[s, o] = alpha * total / _divisor_cpu(d0, h0, w0, D, H, W, wd, wh, ww, mode)
                    o += 1


# Max pooling without padding: every window lies inside the input, so each output scans
# its window directly, one output at a time (no clipping, no per-slice buffers); the same
# scan order, tie and NaN rules as _row_argmax_cpu. About 10x faster than the row scan
# above at LeNet's sizes.

@kernel()
def _window_argmax_nan_cpu(xs, i0, H, W, wd, wh, ww, nan_opt):
    """The position in the slice xs (1-D) of the maximum of the window whose first position
    is i0, with _row_argmax_cpu's rules in full: the first maximum; a NaN wins when nan_opt
    is 1 and loses to any number when it is 0. For windows holding a NaN (the fast scans
    below find the others)."""
    best_i = i0
    best = xs[i0]
    for a in range(wd):
        for b in range(wh):
            row = i0 + (a * H + b) * W
            for e in range(ww):
                v = xs[row + e]
                if nan_opt != 0:
                    take = (v > best) | ((v != v) & (best == best))
                else:
                    take = (v > best) | ((best != best) & (v == v))
                if take:
                    best_i = row + e
                    best = v
    return best_i


@kernel()
def _max_unpadded_cpu(x, src, dst, D, H, W, OD, OH, OW, window, stride, gradient, nan_opt, alpha, lo, hi):
    """Max pooling (gradient False: dst = y, src unused) or its gradient for non-overlapping
    windows (gradient True, stride >= window: src = dy, dst = dx; each input gets at most
    one output's gradient, so it is written, not accumulated).

    The common case (no NaN) is one strict comparison per position, as selects, with uint64
    indices, so that Numba adds no negative-index wraparound to the loads. An output row
    with a NaN in a window is redone by _window_argmax_nan_cpu (its rules in full). The scan
    is written here, not in a helper inlined into the loop: an array handed to an inlined
    function is reference-counted per call (two atomic operations per window: 2x slower),
    and a call inside the loop costs registers (10%)."""
    wd, wh, ww = window
    sd, sh, sw = stride
    for s in range(lo, hi):
        xs, srcs, dsts = x[s], src[s], dst[s]
        if gradient:
            dsts[:] = 0
        for od in range(OD):
            for oh in range(OH):
                base = (od * sd * H + oh * sh) * W
                o = (od * OH + oh) * OW
                nan = False
                for ow in range(OW):
                    i0 = np.uint64(base + ow * sw)
                    best_i = i0
                    best = xs[i0]
                    nan |= best != best
                    for a in range(wd):
                        for b in range(wh):
                            row = i0 + np.uint64((a * H + b) * W)
                            for e in range(np.uint64(ww)):
                                v = xs[row + e]
                                nan |= v != v
                                take = v > best
                                best_i = row + e if take else best_i
                                best = v if take else best
                    if gradient:
                        dsts[best_i] = alpha * srcs[o + ow]
                    else:
                        dsts[o + ow] = alpha * xs[best_i]
                if nan:
                    for ow in range(OW):
                        i0 = base + ow * sw
                        i = _window_argmax_nan_cpu(xs, i0, H, W, wd, wh, ww, nan_opt)
                        if gradient:
                            for a in range(wd):
                                for b in range(wh):
                                    for e in range(ww):
                                        dsts[i0 + (a * H + b) * W + e] = 0
                            dsts[i] = alpha * srcs[o + ow]
                        else:
                            dsts[o + ow] = alpha * xs[i]


# 2x2 windows, stride 2 (LeNet's pools, and most CNNs'): an output row from two input rows,
# straight-line selects over the window's 4 values whose loads LLVM vectorizes (stride-2
# interleaved groups). A row holding a NaN is redone by _window_argmax_nan_cpu (its NaN rules).

@kernel()
def _forward_max_2x2_cpu(x, y, D, H, W, OD, OH, OW, nan_opt, alpha, lo, hi):
    for s in range(lo, hi):
        xs, ys = x[s], y[s]
        for od in range(OD):
            for oh in range(OH):
                r0 = xs[(od * H + 2 * oh) * W:(od * H + 2 * oh + 1) * W]
                r1 = xs[(od * H + 2 * oh + 1) * W:(od * H + 2 * oh + 2) * W]
                yr = ys[(od * OH + oh) * OW:(od * OH + oh + 1) * OW]
                nan = False
                for ow in range(np.uint64(OW)):
                    a, b = r0[2 * ow], r0[2 * ow + 1]
                    c, d = r1[2 * ow], r1[2 * ow + 1]
                    nan |= (a != a) | (b != b) | (c != c) | (d != d)
                    m = a
                    m = b if b > m else m
                    m = c if c > m else m
                    m = d if d > m else m
                    yr[ow] = alpha * m
                if nan:
                    base = (od * H + 2 * oh) * W
                    for ow in range(OW):
                        i = _window_argmax_nan_cpu(xs, base + 2 * ow, H, W, 1, 2, 2, nan_opt)
                        yr[ow] = alpha * xs[i]


@kernel()
def _grad_max_2x2_cpu(x, dy, dx, D, H, W, OD, OH, OW, nan_opt, alpha, lo, hi):
    win = np.empty(OW, np.int32)
    zero = dx.dtype.type(0)
    for s in range(lo, hi):
        xs, dys, dxs = x[s], dy[s], dx[s]
        if 2 * OW != W or 2 * OH != H:
            dxs[:] = 0  # inputs no window covers
        for od in range(OD):
            for oh in range(OH):
                r0 = xs[(od * H + 2 * oh) * W:(od * H + 2 * oh + 1) * W]
                r1 = xs[(od * H + 2 * oh + 1) * W:(od * H + 2 * oh + 2) * W]
                g0 = dxs[(od * H + 2 * oh) * W:(od * H + 2 * oh + 1) * W]
                g1 = dxs[(od * H + 2 * oh + 1) * W:(od * H + 2 * oh + 2) * W]
                dyr = dys[(od * OH + oh) * OW:(od * OH + oh + 1) * OW]
                nan = False
                for ow in range(np.uint64(OW)):  # which of the 4 wins (loads only: vectorizes)
                    a, b = r0[2 * ow], r0[2 * ow + 1]
                    c, d = r1[2 * ow], r1[2 * ow + 1]
                    nan |= (a != a) | (b != b) | (c != c) | (d != d)
                    m, k = a, 0
                    k = 1 if b > m else k
                    m = b if b > m else m
                    k = 2 if c > m else k
                    m = c if c > m else m
                    k = 3 if d > m else k
                    win[ow] = k
                for ow in range(np.uint64(OW)):  # the window's 4 gradients
                    g = alpha * dyr[ow]
                    k = win[ow]
                    g0[2 * ow] = g if k == 0 else zero
                    g0[2 * ow + 1] = g if k == 1 else zero
                    g1[2 * ow] = g if k == 2 else zero
                    g1[2 * ow + 1] = g if k == 3 else zero
                if nan:
                    base = (od * H + 2 * oh) * W
                    for ow in range(OW):
                        i0 = base + 2 * ow
                        i = _window_argmax_nan_cpu(xs, i0, H, W, 1, 2, 2, nan_opt)
                        dxs[i0] = 0
                        dxs[i0 + 1] = 0
                        dxs[i0 + W] = 0
                        dxs[i0 + W + 1] = 0
                        dxs[i] = alpha * dyr[ow]


@kernel()
def _grad_max_cpu(x, dy, dx, D, H, W, OD, OH, OW, window, padding, stride, nan_opt, alpha, lo, hi):
    best, argmax = np.empty(OW, x.dtype), np.empty(OD * OH * OW, np.int64)
    for s in range(lo, hi):  # each slice scatters into its own row: no races
        dx[s] = 0
        _slice_argmax_cpu(x, s, D, H, W, OD, OH, OW, window, padding, stride, nan_opt, best, argmax)
        for o in range(dy.shape[1]):
            dx[s, argmax[o]] += alpha * dy[s, o]


@kernel()
def _grad_avg_cpu(dy, dx, D, H, W, OD, OH, OW, window, padding, stride, mode, alpha, lo, hi):
    wd, wh, ww = window
    pd, ph, pw = padding
    sd, sh, sw = stride
    for s in range(lo, hi):
        dx[s] = 0
        o = 0
        for od in range(OD):
            for oh in range(OH):
                for ow in range(OW):
                    d0, h0, w0 = od * sd - pd, oh * sh - ph, ow * sw - pw
                    g = alpha * dy[s, o] / _divisor_cpu(d0, h0, w0, D, H, W, wd, wh, ww, mode)
                    for d in range(max(d0, 0), min(d0 + wd, D)):
                        for h in range(max(h0, 0), min(h0 + wh, H)):
                            row = (d * H + h) * W
                            for w in range(max(w0, 0), min(w0 + ww, W)):
                                dx[s, row + w] += g
                    o += 1


@kernel()
def _gather_cpu(x, g, z, D, H, W, OD, OH, OW, window, padding, stride, nan_opt, alpha, lo, hi):
    best, argmax = np.empty(OW, x.dtype), np.empty(OD * OH * OW, np.int64)
    for s in range(lo, hi):
        _slice_argmax_cpu(x, s, D, H, W, OD, OH, OW, window, padding, stride, nan_opt, best, argmax)
        for o in range(z.shape[1]):
            z[s, o] = alpha * g[s, argmax[o]]


# ----------------------------------------------------------------------------- CPU routines

def _is_2x2(window, stride):
    return window == (1, 2, 2) and stride == (1, 2, 2)


def pool_cpu(x, out, window, padding, stride, mode, nan_opt, alpha):
    if not out.size:
        return
    slices, D, H, W, OD, OH, OW = geometry(x.shape, out.shape)
    window, padding, stride = _triple(window), _triple(padding), _triple(stride)
    xs, ys, nan_opt, alpha = _flat(x, slices), _out(out, slices), int(nan_opt), float(alpha)
    work = out.size * window[0] * window[1] * window[2]
    if mode == 0 or mode == 3:
        if padding == (0, 0, 0) and _is_2x2(window, stride):
            run(_forward_max_2x2_cpu, slices, work, xs, ys, D, H, W, OD, OH, OW, nan_opt, alpha)
        elif padding == (0, 0, 0):
            run(_max_unpadded_cpu, slices, work, xs, xs, ys, D, H, W, OD, OH, OW, window, stride, False, nan_opt,
                alpha)
        else:
            run(_forward_max_cpu, slices, work, xs, ys, D, H, W, OD, OH, OW, window, padding, stride, nan_opt,
                alpha)
    else:
        run(_forward_avg_cpu, slices, work, xs, ys, D, H, W, OD, OH, OW, window, padding, stride, int(mode), alpha)


def pool_grad_max_cpu(x, y, dy, out, window, padding, stride, mode, nan_opt, alpha):
    if not out.size:
        return
    slices, D, H, W, OD, OH, OW = geometry(x.shape, dy.shape)
    window, padding, stride = _triple(window), _triple(padding), _triple(stride)
    xs, dys, dxs, nan_opt, alpha = _flat(x, slices), _flat(dy, slices), _out(out, slices), int(nan_opt), float(alpha)
    work = max(out.size, dy.size * window[0] * window[1] * window[2])
    if padding == (0, 0, 0) and _is_2x2(window, stride):
        run(_grad_max_2x2_cpu, slices, work, xs, dys, dxs, D, H, W, OD, OH, OW, nan_opt, alpha)
    elif padding == (0, 0, 0) and all(s >= w for s, w in zip(stride, window)):
        run(_max_unpadded_cpu, slices, work, xs, dys, dxs, D, H, W, OD, OH, OW, window, stride, True, nan_opt, alpha)
    else:
        run(_grad_max_cpu, slices, work, xs, dys, dxs, D, H, W, OD, OH, OW, window, padding, stride, nan_opt,
            alpha)


def pool_grad_avg_cpu(dy, out, shape, window, padding, stride, mode, alpha):
    if not out.size:
        return
    slices, D, H, W, OD, OH, OW = geometry(out.shape, dy.shape)
    window, padding, stride = _triple(window), _triple(padding), _triple(stride)
    work = max(out.size, dy.size * window[0] * window[1] * window[2])
    run(_grad_avg_cpu, slices, work, _flat(dy, slices), _out(out, slices), D, H, W, OD, OH, OW, window, padding,
        stride, int(mode), float(alpha))


def pool_gather_cpu(x, y, g, out, window, padding, stride, mode, nan_opt, alpha):
    if not out.size:
        return
    slices, D, H, W, OD, OH, OW = geometry(x.shape, out.shape)
    window, padding, stride = _triple(window), _triple(padding), _triple(stride)
    work = out.size * window[0] * window[1] * window[2]
    run(_gather_cpu, slices, work, _flat(x, slices), _flat(g, slices), _out(out, slices), D, H, W, OD, OH, OW,
        window, padding, stride, int(nan_opt), float(alpha))


# ----------------------------------------------------------------------------- CUDA kernel
# One kernel for every routine (Numba cannot compile CUDA device functions to PTX without a
# GPU, so the window scan is written once, here). One thread per output element (kind 0:
# forward, 2: gather) or per input element (kind 1: gradient; the thread gathers from the
# outputs whose windows contain it, so no atomics are needed). x is read by the max modes
# and the forward pass only. Sums and scaling are in the data's type (float32 data: float32
# arithmetic); the CPU routines above keep their float64 window sums (full speed on a CPU).
FORWARD, GRADIENT, GATHER = 0, 1, 2


@cuda.jit
def pool_kernel(x, g, out, D, H, W, OD, OH, OW, wd, wh, ww, pd, ph, pw, sd, sh, sw, kind, mode, nan_opt, alpha):
    t = cuda.grid(1)
    if t >= out.shape[0] * out.shape[1]:
        return
    s = t // out.shape[1]
    j = t % out.shape[1]
    if kind == GRADIENT:  # j is an input position: the outputs od_lo..od_hi-1 (etc.) hold it
        jw = j % W
        jh = (j // W) % H
        jd = j // (W * H)
        od_lo = max(0, (jd + pd - wd + sd) // sd)
        oh_lo = max(0, (jh + ph - wh + sh) // sh)
        ow_lo = max(0, (jw + pw - ww + sw) // sw)
        od_hi = min(OD, (jd + pd) // sd + 1)
        oh_hi = min(OH, (jh + ph) // sh + 1)
        ow_hi = min(OW, (jw + pw) // sw + 1)
    else:  # j is an output position
        od_lo = j // (OW * OH)
        oh_lo = (j // OW) % OH
        ow_lo = j % OW
        od_hi = od_lo + 1
        oh_hi = oh_lo + 1
        ow_hi = ow_lo + 1
    is_max = mode == 0 or mode == 3
    total = out.dtype.type(0)  # sums in the data's type: float32 stays float32
    for od in range(od_lo, od_hi):
        for oh in range(oh_lo, oh_hi):
            for ow in range(ow_lo, ow_hi):
                o = (od * OH + oh) * OW + ow
                d0 = od * sd - pd
                h0 = oh * sh - ph
                w0 = ow * sw - pw
                best_i = -1
                best = x[s, 0]
                window_sum = out.dtype.type(0)
                if is_max or kind == FORWARD:
                    for a in range(max(d0, 0), min(d0 + wd, D)):
                        for b in range(max(h0, 0), min(h0 + wh, H)):
                            for c in range(max(w0, 0), min(w0 + ww, W)):
                                i = (a * H + b) * W + c
                                v = x[s, i]
                                window_sum += v
                                if best_i < 0:
                                    take = True
                                elif best != best:  # NaN so far
                                    take = nan_opt == 0 and v == v
                                elif v != v:
                                    take = nan_opt != 0
                                else:
                                    take = v > best
                                if take:
                                    best_i = i
                                    best = v
                if is_max:
                    if kind == FORWARD:
                        total = x[s, best_i]
                    elif kind == GRADIENT:
                        if best_i == j:
                            total += g[s, o]
                    else:
                        total = g[s, best_i]
                else:
                    if mode == 1:
                        divisor = wd * wh * ww
                    else:
                        divisor = ((min(d0 + wd, D) - max(d0, 0)) * (min(h0 + wh, H) - max(h0, 0))
                                   * (min(w0 + ww, W) - max(w0, 0)))
                    if kind == FORWARD:
                        total = window_sum / out.dtype.type(divisor)
                    else:
                        total += g[s, o] / out.dtype.type(divisor)
    out[s, j] = out.dtype.type(alpha) * total


def _launch(n, *args):
    if n:
        library_launch(pool_kernel, (n + BLOCK - 1) // BLOCK, BLOCK, *args[:-1], float(args[-1]))


def _geo(xshape, yshape, window, padding, stride):
    slices, D, H, W, OD, OH, OW = geometry(tuple(xshape), tuple(yshape))
    return slices, (D, H, W, OD, OH, OW, *window, *padding, *stride)


_chosen = set()


def _log_choice(what, engine):
    """Say once per routine (KNETC_LOG=cudnn) whether cuDNN or the Numba kernels run it."""
    if (what, engine) not in _chosen:
        _chosen.add((what, engine))
        report("cudnn", f"{what}: {engine}")


def _cudnn():
    return cudnn_ops if cudnn_ops.available() else None


def pool_cuda(x, out, window, padding, stride, mode, nan_opt, alpha):
    lib = _cudnn()
    if lib is not None and lib.pool_supported(x.dtype):
        _log_choice("pool", "cuDNN")
        return lib.pool_forward(x, out, window, padding, stride, mode, nan_opt, alpha)
    _log_choice("pool", "Numba kernels")
    pool_numba(x, out, window, padding, stride, mode, nan_opt, alpha)


def pool_numba(x, out, window, padding, stride, mode, nan_opt, alpha):
    slices, geo = _geo(x.shape, out.shape, window, padding, stride)
    _launch(out.size, _flat(x, slices), _flat(x, slices), _flat(out, slices), *geo, FORWARD, mode, nan_opt, alpha)


def pool_grad_max_cuda(x, y, dy, out, window, padding, stride, mode, nan_opt, alpha):
    lib = _cudnn()
    if lib is not None and lib.pool_supported(x.dtype) and alpha == 1:  # cuDNN finds maxima by x == y
        _log_choice("pool backward", "cuDNN")
        return lib.pool_backward(x, y, dy, out, window, padding, stride, mode, nan_opt, alpha)
    _log_choice("pool backward", "Numba kernels")
    pool_grad_max_numba(x, y, dy, out, window, padding, stride, mode, nan_opt, alpha)


def pool_grad_max_numba(x, y, dy, out, window, padding, stride, mode, nan_opt, alpha):
    slices, geo = _geo(x.shape, dy.shape, window, padding, stride)
    _launch(out.size, _flat(x, slices), _flat(dy, slices), _flat(out, slices), *geo, GRADIENT, mode, nan_opt, alpha)


def pool_grad_avg_cuda(dy, out, shape, window, padding, stride, mode, alpha):
    # Numba only: cuDNN's backward wants x and y, which unpool (this routine with dy = x) lacks.
    slices, geo = _geo(out.shape, dy.shape, window, padding, stride)
    _launch(out.size, _flat(out, slices), _flat(dy, slices), _flat(out, slices), *geo, GRADIENT, mode, 0, alpha)


def pool_gather_cuda(x, y, g, out, window, padding, stride, mode, nan_opt, alpha):
    slices, geo = _geo(x.shape, out.shape, window, padding, stride)
    _launch(out.size, _flat(x, slices), _flat(g, slices), _flat(out, slices), *geo, GATHER, mode, nan_opt, alpha)


def ptx_signatures(dtype="float64"):
    """{kernel name: Numba signature} for compiling this module's kernel to PTX (tests)."""
    arr = f"{dtype}[:, ::1]"
    ints = ", ".join(["int64"] * 18)  # geometry (15), kind, mode, nan_opt
    return {"pool_kernel": f"void({arr}, {arr}, {arr}, {ints}, float64)"}
