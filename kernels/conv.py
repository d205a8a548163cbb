"""Convolution routines for the call ops conv4, deconv4 and conv4_dw (knetc/ops/conv.py).

Three products, each with a CPU routine (im2col + BLAS GEMMs, the batch split over threads)
and a CUDA routine (cuDNN when ``knetc.runtime.cudnn.available()``, else knetc's own Numba
CUDA kernels, one thread per output element):

  conv4     y  = alpha * conv(w, x)              w (K, C/g, *k), x (N, C, *s), y (N, K, *o)
  deconv4   dx = alpha * conv^T(w, dy)            the gradient of conv4 with respect to x
  conv4_dw  dw = alpha * d<conv(w, x), dy>/dw     the gradient of conv4 with respect to w

Every routine has the call-op signature ``routine(a, b, out, padding, stride, dilation, mode,
alpha, group[, size])``; ``out`` is preallocated and its shape says what to compute. 2-D
convolutions (4-D arrays) run as 3-D ones with depth 1, so there is one set of loops.
mode 0 is a true convolution (the filter is flipped), mode 1 cross-correlation.

Example: ``conv4_cpu(w, x, y, (0, 0), (1, 1), (1, 1), 0, 1.0, 1)``

The CPU routines are Python functions that cut the batch into chunks (_chunks) and run
them on the threads of runtime/threads.py (run_calls; each thread takes chunks from one
queue until none are left, the calling thread too). A chunk is one call of _chunk, a Numba
function (njit, nogil, cached) that runs its GEMM steps without the GIL: im2col of several
samples side by side, one GEMM per group through kernels/matmul.py's matmul_cpu (Numba's
np.dot: SciPy's BLAS, whose threads runtime/threads.py sets), the columns moved to or from
the samples, col2im. Several threads call BLAS at once, so the ops say blas="split": BLAS
runs one thread per call. The
filter is flipped and scaled, and the filter gradient's chunk sums added, by numpy.

Compile time (LeNet's shapes, float32, an empty Numba cache, 2-core VM, 2026-12-03): 2.6-2.8 s
for the three routines' first calls, 0.35 s less in a compiled program with dense layers
(they compile the same GEMM signatures). Until then each routine was one Numba function
with parallel=True, prange and np.dot inside: 18.3 s (conv4 4.4, conv4_dw 10.3, deconv4
3.6 s). LeNet's five convolution calls of a step, 2 threads: 9.1-9.7 ms against 10.4-10.7
ms before; 15.2-15.5 against 15.9-16.1 ms with another process busy on one core. Measured
alternatives: the GEMMs from Python between Numba pieces (im2col, column moves), numpy's or
matmul_cpu: 1.8 s of compilation but 10.0-10.8 and 16.3-17.9 ms: each GEMM step took the
GIL several times, and a thread that finds it taken waits for a wake-up (about 70 us on
this VM); numpy's GEMMs would also need numpy's BLAS held on one thread, and numpy's
strided copies did not run in parallel.
"""
import threading

import numpy as np
from numba import cuda

from knetc.kernels.matmul import matmul_cpu
from knetc.kernels.rows import kernel
from knetc.report import report
from knetc.runtime import cudnn, threads
from knetc.runtime.launch import library_launch


# ------------------------------------------------------------------ the pieces of _chunk (njit)

# Inlined into _chunk (inline="always": Numba compiles a function called from another again
# into the caller anyway; inlined, it is not also compiled on its own). The geometry is one int64 array
# (_Conv.geometry: C, D, H, W, KD, KH, KW, OD, OH, OW, strides, paddings, dilations).
# Inner loops index with uint64 (every index here is known to be >= 0): with int64 indices
# Numba adds a negative-index wraparound to each access, which keeps LLVM from vectorizing
# the short row copies (LeNet's 5x5x20 im2col: 49 -> 9 us a sample). uint64 and int64 must
# not meet in one expression (Numba would make it a float).

@kernel(inline="always")
def _unpacked(geometry):
    """_Conv.geometry as (C, D, H, W, KD, KH, KW, OD, OH, OW, sd, sh, sw, pd, ph, pw, dd, dh, dw)."""
    g = geometry
    return (g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9],
            g[10], g[11], g[12], g[13], g[14], g[15], g[16], g[17], g[18])


@kernel(inline="always")
def _inside(off, sw, W, OW):
    """The output columns ow in [lo, hi) that read inside the row: 0 <= ow*sw + off < W."""
    lo = max(0, -(off // sw))
    return lo, max(lo, min(OW, -((off - W) // sw)))


@kernel(inline="always")
def _im2col(xf, n0, b, cols, geometry):
    """cols[(c, kd, kh, kw), j*npix + (od, oh, ow)] = x[n0 + j, c, od*sd + kd*dd - pd, ...]
    (0 outside) for the b samples n0 + j, side by side; xf is x as (N, C*D*H*W)."""
    C, D, H, W, KD, KH, KW, OD, OH, OW, sd, sh, sw, pd, ph, pw, dd, dh, dw = _unpacked(geometry)
    swu = np.uint64(sw)
    npix = OD * OH * OW
    for j in range(b):
        xs = xf[n0 + j]
        col0 = j * npix
        row = 0
        for c in range(C):
            for kd in range(KD):
                for kh in range(KH):
                    for kw in range(KW):
                        crow = cols[row]
                        off = kw * dw - pw
                        lo, hi = _inside(off, sw, W, OW)
                        for od in range(OD):
                            i_d = od * sd + kd * dd - pd
                            for oh in range(OH):
                                i_h = oh * sh + kh * dh - ph
                                base = col0 + (od * OH + oh) * OW
                                if i_d < 0 or i_d >= D or i_h < 0 or i_h >= H:
                                    for i in range(np.uint64(base), np.uint64(base + OW)):
                                        crow[i] = 0
                                    continue
                                for i in range(base, base + lo):
                                    crow[i] = 0
                                if hi > lo:
                                    s0 = np.uint64(((c * D + i_d) * H + i_h) * W + off + lo * sw)
                                    d0 = np.uint64(base + lo)
                                    if sw == 1:
                                        for i in range(np.uint64(hi - lo)):
                                            crow[d0 + i] = xs[s0 + i]
                                    else:
                                        for i in range(np.uint64(hi - lo)):
                                            crow[d0 + i] = xs[s0 + i * swu]
                                for i in range(base + hi, base + OW):
                                    crow[i] = 0
                        row += 1


@kernel(inline="always")
def _col2im(cols, dxf, n0, b, geometry):
    """The adjoint of _im2col: dx[n0 + j] = the sum of cols[(c, kd, kh, kw), j*npix + (od, oh,
    ow)] over the windows that read each input pixel, for the b samples n0 + j (written, the
    rest of each sample zeroed); dxf is dx as (N, C*D*H*W)."""
    C, D, H, W, KD, KH, KW, OD, OH, OW, sd, sh, sw, pd, ph, pw, dd, dh, dw = _unpacked(geometry)
    swu = np.uint64(sw)
    npix = OD * OH * OW
    for j in range(b):
        dxs = dxf[n0 + j]
        for i in range(np.uint64(dxs.shape[0])):
            dxs[i] = 0
        col0 = j * npix
        row = 0
        for c in range(C):
            for kd in range(KD):
                for kh in range(KH):
                    for kw in range(KW):
                        crow = cols[row]
                        off = kw * dw - pw
                        lo, hi = _inside(off, sw, W, OW)
                        if hi > lo:
                            for od in range(OD):
                                i_d = od * sd + kd * dd - pd
                                if i_d < 0 or i_d >= D:
                                    continue
                                for oh in range(OH):
                                    i_h = oh * sh + kh * dh - ph
                                    if i_h < 0 or i_h >= H:
                                        continue
                                    s0 = np.uint64(col0 + (od * OH + oh) * OW + lo)
                                    d0 = np.uint64(((c * D + i_d) * H + i_h) * W + off + lo * sw)
                                    if sw == 1:
                                        for i in range(np.uint64(hi - lo)):
                                            dxs[d0 + i] += crow[s0 + i]
                                    else:
                                        for i in range(np.uint64(hi - lo)):
                                            dxs[d0 + i * swu] += crow[s0 + i]
                        row += 1


@kernel(inline="always")
def _columns(y, n0, k0, mat, into_mat):
    """Between the samples' blocks y[n0 + j, k0:k0 + R] (y: (N, K, npix)) and a matrix with
    them side by side, mat[r, j*npix + p] (R, b * npix): into mat, or out of it into y."""
    npix = np.uint64(y.shape[2])
    for j in range(mat.shape[1] // y.shape[2]):
        for r in range(mat.shape[0]):
            yr, mr = y[n0 + j, k0 + r], mat[r]
            c0 = np.uint64(j) * npix
            if into_mat:
                for p in range(npix):
                    mr[c0 + p] = yr[p]
            else:
                for p in range(npix):
                    yr[p] = mr[c0 + p]


# ------------------------------------------------------------------ the batch, its chunks and threads

MAX_CHUNKS = 16         # the batch is cut into at most this many chunks, which the threads take one by one
MAX_COLS = 1 << 17      # elements of a GEMM's im2col matrix (512 KiB of float32: stays in L2)
MIN_SPLIT_WORK = 1 << 21  # multiply-adds (about 0.2 ms on one core) below which a routine runs on
# the calling thread alone: waking another thread and waiting for it took about 0.08 ms here


def _chunks(n):
    """How many chunks to cut a batch of n into. The chunks, not the thread count, fix the
    GEMMs' shapes and the filter gradient's order of summation: results do not depend on
    the number of threads."""
    return max(1, min(MAX_CHUNKS, n))


def _per_gemm(rows, npix, n):
    """Samples per GEMM: several, so that the products are large enough for BLAS to be efficient,
    within MAX_COLS elements of im2col buffer."""
    return max(1, min(n, MAX_COLS // max(1, rows * npix)))


# A chunk's samples go through im2col side by side, (rows, b * npix), so one GEMM per group
# covers b samples: OpenBLAS runs LeNet's 5x5x20 -> 50 product at about 2.4x the speed for 4
# samples than for one (57 -> 24 us a sample).

class _Conv:
    """A convolution's geometry as 5-D arrays: x (N, C, D, H, W), w (K, Cg, KD, KH, KW),
    y (N, K, OD, OH, OW); a sample's im2col matrix is (C*KD*KH*KW, OD*OH*OW), `rows` rows
    of it per group; the batch's chunks and their GEMM steps of B samples at most."""

    def __init__(self, xshape, wshape, yshape, padding, stride, dilation, group):
        self.N, self.C = xshape[0], xshape[1]
        self.K, self.group, self.Kg = wshape[0], group, wshape[0] // group
        taps = wshape[2] * wshape[3] * wshape[4]
        self.rows, self.allrows = wshape[1] * taps, xshape[1] * taps
        self.npix = yshape[2] * yshape[3] * yshape[4]
        self.T = _chunks(self.N)
        self.B = _per_gemm(self.allrows, self.npix, -(-self.N // self.T))
        self.geometry = np.array(tuple(xshape[1:]) + tuple(wshape[2:]) + tuple(yshape[2:])
                                 + _tuple3(stride, 1) + _tuple3(padding, 0) + _tuple3(dilation, 1), np.int64)

    def chunk(self, t):
        """Chunk t's samples, lo..hi."""
        return t * self.N // self.T, (t + 1) * self.N // self.T

    def run(self, piece, *args):
        """piece(*args, chunks) on each thread, all taking their chunks from one queue (a
        thread slowed by other work on its core takes fewer); one thread for small work."""
        work = self.N * self.K * self.rows * self.npix
        n = min(threads.THREADS, self.T) if work >= MIN_SPLIT_WORK else 1
        queue = _Queue(self.T)
        threads.run_calls([(piece, args + (queue,))] * n)


class _Queue:
    """0, 1, ..., n - 1, each handed out once to the threads that iterate over it."""

    def __init__(self, n):
        self.n, self.next, self.lock = n, 0, threading.Lock()

    def __iter__(self):
        while True:
            with self.lock:
                t = self.next
                self.next += 1
            if t >= self.n:
                return
            yield t


def _tuple3(t, fill):
    t = tuple(int(v) for v in t)
    return (fill,) * (3 - len(t)) + t


def _as5(a):
    """(N, C, H, W) -> (N, C, 1, H, W), C-contiguous; 5-D arrays as they are."""
    a = np.ascontiguousarray(a)
    return a.reshape(a.shape[:2] + (1,) + a.shape[2:]) if a.ndim == 4 else a


def _flipped(w, mode):
    """w spatially flipped for mode 0 (a true convolution), as a view."""
    return w[:, :, ::-1, ::-1, ::-1] if mode == 0 else w


def _written(out, compute):
    """compute(out5): out viewed as a C-contiguous 5-D array (through a copy if it is not one)."""
    if out.flags.c_contiguous:
        compute(_as5(out))
    else:
        tmp = np.empty(out.shape, out.dtype)
        compute(_as5(tmp))
        out[...] = tmp


# One chunk per call, all its GEMM steps without the GIL: a thread's Python loop only takes
# the next chunk (with the GIL taken between the steps, the threads waited on each other).

FWD, BWD_DATA, BWD_FILTER = 0, 1, 2  # what _chunk computes


@kernel()
def _chunk(kind, w, x, y, geometry, group, lo, hi, B, colbuf, ybuf, prod):
    """For samples lo..hi, in steps of b <= B samples side by side (K filters, Kg = K/group
    per group, `rows` im2col rows per group, x and y one sample a row: (N, C*D*H*W) and
    (N, K, npix)):

      FWD         y[lo:hi] = each group's filter matrix (w: (K, rows)) times the samples'
                  im2col matrices (ybuf: a buffer for the products)
      BWD_DATA    x[lo:hi] = col2im of each group's transposed filter matrix (w: (group *
                  rows, Kg), the groups' (rows, Kg) matrices stacked) times the samples' y
      BWD_FILTER  w = the sum over the samples of each group's y times their im2col
                  matrices transposed (w: (K, rows); prod: (Kg, rows), a buffer)

    One function for the three products, so that their pieces are compiled once (three
    functions calling them: 3.1 s of compilation in all, against 2.6 s)."""
    K, npix = y.shape[1], y.shape[2]
    Kg = K // group
    rows = w.shape[1] if kind != BWD_DATA else w.shape[0] // group
    allrows = group * rows
    for n0 in range(lo, hi, B):
        b = min(B, hi - n0)
        cols = colbuf[:allrows * b * npix].reshape((allrows, b * npix))
        yb = ybuf[:K * b * npix].reshape((K, b * npix))  # the samples' y side by side
        if kind != BWD_DATA:
            _im2col(x, n0, b, cols, geometry)
        if kind != FWD:
            _columns(y, n0, 0, yb, True)
        for g in range(group):
            filters, block = yb[g * Kg:(g + 1) * Kg], cols[g * rows:(g + 1) * rows]
            if kind == FWD:
                matmul_cpu(w[g * Kg:(g + 1) * Kg], block, y[n0, g * Kg:(g + 1) * Kg] if b == 1 else filters)
                if b > 1:
                    _columns(y, n0, g * Kg, filters, False)
            elif kind == BWD_DATA:
                matmul_cpu(w[g * rows:(g + 1) * rows], filters, block)
            elif n0 == lo:  # (0 + p is p: the same sums as accumulating from zeros)
                matmul_cpu(filters, block.T, w[g * Kg:(g + 1) * Kg])
            else:
                matmul_cpu(filters, block.T, prod)
                for k in range(Kg):
                    wk, pk = w[g * Kg + k], prod[k]
                    for r in range(rows):
                        wk[r] += pk[r]
        if kind == BWD_DATA:
            _col2im(cols, x, n0, b, geometry)


def _piece(cv, kind, w, x, y, partial, chunks):
    """A thread's share: _chunk on each chunk it takes from `chunks` (BWD_FILTER: each
    chunk's sum into partial[t])."""
    colbuf = np.empty(cv.allrows * cv.B * cv.npix, x.dtype)
    ybuf = np.empty(cv.K * cv.B * cv.npix, x.dtype)
    prod = np.empty((cv.Kg, cv.rows) if kind == BWD_FILTER else (1, 1), x.dtype)
    for t in chunks:
        _chunk(kind, w if partial is None else partial[t], x, y, cv.geometry, cv.group, *cv.chunk(t), cv.B,
               colbuf, ybuf, prod)


def _filter_matrix(cv, w5, mode, alpha):
    """alpha * w, flipped for mode 0, as (K, rows) in w's dtype (alpha times w rounded once)."""
    return np.multiply(_flipped(w5, mode), alpha, dtype=np.float64).astype(w5.dtype).reshape(cv.K, cv.rows)


def conv4_cpu(w, x, out, padding, stride, dilation, mode, alpha, group):
    """out = alpha * conv(w, x) (mode 0) or cross-correlation (mode 1); 4-D or 5-D arrays."""
    def compute(y5):
        w5, x5 = _as5(w), _as5(x)
        cv = _Conv(x5.shape, w5.shape, y5.shape, padding, stride, dilation, group)
        if cv.N and cv.K and cv.npix:
            cv.run(_piece, cv, FWD, _filter_matrix(cv, w5, mode, alpha), x5.reshape(cv.N, -1),
                   y5.reshape(cv.N, cv.K, cv.npix), None)
    _written(out, compute)


def deconv4_cpu(w, x, out, padding, stride, dilation, mode, alpha, group, size):
    """out = alpha * conv^T(w, x): the transposed convolution (conv4's input gradient)."""
    def compute(dx5):
        w5, dy5 = _as5(w), _as5(x)
        cv = _Conv(dx5.shape, w5.shape, dy5.shape, padding, stride, dilation, group)
        if cv.N:
            # each group's filter matrix transposed, C-contiguous: a plain GEMM, 10% faster
            # than one reading it transposed (LeNet's 500x50 by 50x256: 83 against 93 us)
            wt = _filter_matrix(cv, w5, mode, alpha).reshape(group, cv.Kg, cv.rows).transpose(0, 2, 1)
            cv.run(_piece, cv, BWD_DATA, np.ascontiguousarray(wt).reshape(group * cv.rows, cv.Kg),
                   dx5.reshape(cv.N, -1), dy5.reshape(cv.N, cv.K, cv.npix), None)
    _written(out, compute)


def conv4_dw_cpu(x, dy, out, padding, stride, dilation, mode, alpha, group, size):
    """out = alpha * d<conv(w, x), dy>/dw: conv4's filter gradient (out has w's shape)."""
    def compute(dw5):
        x5, dy5 = _as5(x), _as5(dy)
        cv = _Conv(x5.shape, dw5.shape, dy5.shape, padding, stride, dilation, group)
        partial = np.zeros((cv.T, cv.K, cv.rows), dw5.dtype)  # one sum per chunk, added up below
        if cv.N and cv.npix:
            cv.run(_piece, cv, BWD_FILTER, None, x5.reshape(cv.N, -1), dy5.reshape(cv.N, cv.K, cv.npix),
                   partial)
        total = partial[0]
        for t in range(1, cv.T):
            total += partial[t]
        # alpha times the sum, rounded once; mode 0: (a, b, e) indexed the flipped filter
        dw5[...] = _flipped(np.multiply(total.reshape(dw5.shape), alpha, dtype=np.float64), mode)
    _written(out, compute)


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


def _launch(kernel, a, b, out, padding, stride, dilation, mode, alpha, group):
    p, s, d = _tuple3(padding, 0), _tuple3(stride, 1), _tuple3(dilation, 1)
    n = int(np.prod(out.shape))
    if n == 0:
        return
    library_launch(kernel, (n + _THREADS - 1) // _THREADS, _THREADS,
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
