"""Recurrent network routines (knetc.ops.rnn's "call" ops): the whole sequence, all layers
and directions, forward and backward through time, in one call.

Layouts (shared with knetc.ops.rnn, which documents them for users):

- weights `w`, one vector laid out like cuDNN's weight space: for each pseudo-layer
  p = layer * dirs + direction, the input matrices W (gates stacked: (ng*H, Xin), absent for
  the first layer with skip_input), the recurrent matrices R (ng*H, H), the input biases bW
  (ng*H) and the recurrent biases bR (ng*H). Gates: lstm i, f, n, o; gru r, z, n.
- `x` (N, X) with N = sum(batch_sizes): time steps stacked, step t holds batch_sizes[t] rows.
- h0, c0 (L*D, B, H).
- the forward result is one packed vector (IR ops have one output):
  y (N, D*H) | hy (L*D, B, H) | cy (L*D, B, H) | outputs of layers 0..L-2 (N, D*H) each |
  dropout masks of layers 1..L-1 (N, D*H) each, when dropout > 0 |
  per pseudo-layer: activated gates (N, ng*H) and a cell vector (N, H) (lstm: c[t]; gru:
  Rn h[t-1] + bRn, what the reset gate multiplies), what backpropagation through time needs.
- the backward routine reads the cotangent of that vector (only its y, hy, cy parts) and
  writes dw | dx | dh0 | dc0 in one vector.

CPU: per step one GEMM (the recurrent product, np.dot -> BLAS) and a fused loop for the
gates and the cell update; the input products of all steps are one GEMM per layer.
CUDA: the same structure with knetc's GEMM (cuBLAS when present) and one fused numba.cuda
kernel per step for the cell.
"""
import math

import numpy as np
from numba import cuda, njit

RELU, TANH, LSTM, GRU = 0, 1, 2, 3
MODES = {"relu": RELU, "tanh": TANH, "lstm": LSTM, "gru": GRU}


@njit(cache=True)
def ngates(mode):
    return 4 if mode == LSTM else (3 if mode == GRU else 1)


@njit(cache=True)
def layer_input_size(layer, X, H, dirs):
    return X if layer == 0 else dirs * H


@njit(cache=True)
def pseudo_layer_size(mode, X, H, dirs, skip, layer):
    g = ngates(mode) * H
    xin = layer_input_size(layer, X, H, dirs)
    return (0 if (skip and layer == 0) else g * xin) + g * H + 2 * g


@njit(cache=True)
def weight_size(mode, X, H, layers, dirs, skip):
    total = 0
    for layer in range(layers):
        total += dirs * pseudo_layer_size(mode, X, H, dirs, skip, layer)
    return total


@njit(cache=True)
def weight_offsets(mode, X, H, layers, dirs, skip, p):
    """(W, R, bW, bR) offsets of pseudo-layer p in w (W == R when the layer skips its input)."""
    start = 0
    for q in range(p):
        start += pseudo_layer_size(mode, X, H, dirs, skip, q // dirs)
    layer = p // dirs
    g = ngates(mode) * H
    w_len = 0 if (skip and layer == 0) else g * layer_input_size(layer, X, H, dirs)
    r = start + w_len
    bw = r + g * H
    return start, r, bw, bw + g


@njit(cache=True)
def packed_offsets(mode, N, B, H, layers, dirs, dropout):
    """Offsets in the packed forward vector: (hy, cy, outs, masks, gates, total)."""
    dh = dirs * H
    hy = N * dh
    cy = hy + layers * dirs * B * H
    outs = cy + layers * dirs * B * H
    masks = outs + (layers - 1) * N * dh
    gates = masks + ((layers - 1) * N * dh if dropout > 0 else 0)
    total = gates + layers * dirs * N * (ngates(mode) + 1) * H
    return hy, cy, outs, masks, gates, total


@njit(cache=True)
def _starts(batch_sizes):
    T = len(batch_sizes)
    starts = np.zeros(T + 1, np.int64)
    for t in range(T):
        starts[t + 1] = starts[t] + batch_sizes[t]
    return starts


@njit(cache=True)
def _sigm(v):
    # Stable for either sign (exp never overflows).
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


@njit(cache=True)
def _layer_input(x, out, layer, N, H, dirs, outs_at, masks_at, dropout):
    """The input of `layer`: x, or the previous layer's output (times its dropout mask)."""
    if layer == 0:
        return x
    dh = dirs * H
    prev = out[outs_at + (layer - 1) * N * dh: outs_at + layer * N * dh].reshape((N, dh))
    if dropout <= 0:
        return prev
    mask = out[masks_at + (layer - 1) * N * dh: masks_at + layer * N * dh].reshape((N, dh))
    return prev * mask


# Gate nonlinearities over blocks of rows. float32 uses a rational approximation of tanh
# (max error about 1e-7, like float32 rounding) made only of arithmetic, so that LLVM
# vectorizes the loops (there is no vector exp/tanh without Intel's SVML); float64 keeps
# libm's tanh and the stable sigmoid. sigm(a) = (1 + tanh(a / 2)) / 2.
_CLAMP = np.float32(7.90531110763549805)  # tanh is 1 - 2e-7 beyond: the float32 result is 1
_A = [np.float32(v) for v in (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05,
                              5.12229709037114e-08, -8.60467152213735e-11, 2.00018790482477e-13,
                              -2.76076847742355e-16)]
_A1, _A3, _A5, _A7, _A9, _A11, _A13 = _A
_B0, _B2, _B4, _B6 = [np.float32(v) for v in (4.89352518554385e-03, 2.26843463243900e-03,
                                               1.18534705686654e-04, 1.19825839466702e-06)]
_HALF, _ONE, _ZERO = np.float32(0.5), np.float32(1), np.float32(0)


# For LLVM to vectorize a loop: error_model="numpy" (no zero-division check, a branch per
# division), and indices that are plainly non-negative (loops over range(len) of a slice:
# an index like start + k gets a negative-index check that makes every access a gather).
@njit(cache=True, fastmath=True, error_model="numpy")
def _tanh32_range(a, start, stop, scale, shift):
    """a[k] = shift + scale * tanh(scale * a[k]) over start..stop (float32): scale 1, shift 0
    is tanh; scale 1/2, shift 1/2 is the sigmoid."""
    b = a[start:stop]
    for k in range(b.size):
        x = scale * b[k]
        x = x if x < _CLAMP else _CLAMP
        x = x if x > -_CLAMP else -_CLAMP
        x2 = x * x
        p = ((((((_A13 * x2 + _A11) * x2 + _A9) * x2 + _A7) * x2 + _A5) * x2 + _A3) * x2 + _A1) * x
        q = ((_B6 * x2 + _B4) * x2 + _B2) * x2 + _B0
        b[k] = shift + scale * (p / q)


@njit(cache=True)
def _tanh_range(a, start, stop):
    """a[start:stop] = tanh(a[start:stop]) in place, a 1-D contiguous array."""
    if a.itemsize == 4:
        _tanh32_range(a, start, stop, _ONE, _ZERO)
    else:
        for k in range(start, stop):
            a[k] = math.tanh(a[k])


@njit(cache=True)
def _sigm_range(a, start, stop):
    """a[start:stop] = sigm(a[start:stop]) in place, a 1-D contiguous array."""
    if a.itemsize == 4:
        _tanh32_range(a, start, stop, _HALF, _HALF)
    else:
        for k in range(start, stop):
            a[k] = _sigm(a[k])


@njit(cache=True)
def _tanh_block(a, c0, c1):
    """a[:, c0:c1] = tanh(a[:, c0:c1]) in place, a C-contiguous 2-D array."""
    flat, m = a.reshape(a.size), a.shape[1]
    for i in range(a.shape[0]):
        _tanh_range(flat, i * m + c0, i * m + c1)


@njit(cache=True)
def _sigm_block(a, c0, c1):
    """a[:, c0:c1] = sigm(a[:, c0:c1]) in place, a C-contiguous 2-D array."""
    flat, m = a.reshape(a.size), a.shape[1]
    for i in range(a.shape[0]):
        _sigm_range(flat, i * m + c0, i * m + c1)


@njit(cache=True, fastmath=True, error_model="numpy")
def _cell_forward(mode, xw, hr, bR, h, c, G, C, dst, off, n, H, d, tmp):
    """One step of one direction: the gates of rows off..off+n into G (activated), the
    cell vector into C, the new h (and c) into h, c and the layer output dst. Loops run
    over slices (see _tanh32_range) so that they vectorize."""
    g = G.shape[1]
    for i in range(n):
        r = off + i
        grow, xrow, hrow = G[r], xw[r], hr[i]
        if mode == GRU:
            for j in range(2 * H):
                grow[j] = xrow[j] + hrow[j] + bR[j]
            hn, xn, bRn, crow = hrow[2 * H:3 * H], xrow[2 * H:3 * H], bR[2 * H:3 * H], C[r]
            for j in range(H):
                crow[j] = hn[j] + bRn[j]
            _sigm_range(grow, 0, 2 * H)
            rg, zg, ng_ = grow[0:H], grow[H:2 * H], grow[2 * H:3 * H]
            for j in range(H):
                ng_[j] = xn[j] + rg[j] * crow[j]
            _tanh_range(grow, 2 * H, 3 * H)
            hi, out = h[i], dst[r, d * H:(d + 1) * H]
            for j in range(H):
                hv = (1 - zg[j]) * ng_[j] + zg[j] * hi[j]
                hi[j] = hv
                out[j] = hv
            continue
        for j in range(g):
            grow[j] = xrow[j] + hrow[j] + bR[j]
        if mode == LSTM:
            _sigm_range(grow, 0, 2 * H)
            _tanh_range(grow, 2 * H, 3 * H)
            _sigm_range(grow, 3 * H, 4 * H)
            ig, fg, gg, og = grow[0:H], grow[H:2 * H], grow[2 * H:3 * H], grow[3 * H:4 * H]
            ci, crow, ti = c[i], C[r], tmp[i]
            for j in range(H):
                cv = fg[j] * ci[j] + ig[j] * gg[j]
                ci[j] = cv
                crow[j] = cv
                ti[j] = cv
            _tanh_range(ti, 0, H)
            hi, out = h[i], dst[r, d * H:(d + 1) * H]
            for j in range(H):
                hv = og[j] * ti[j]
                hi[j] = hv
                out[j] = hv
            continue
        if mode == TANH:
            _tanh_range(grow, 0, H)
        else:
            for j in range(H):
                grow[j] = max(grow[j], 0)
        hi, out = h[i], dst[r, d * H:(d + 1) * H]
        for j in range(H):
            hi[j] = grow[j]
            out[j] = grow[j]


@njit(cache=True, fastmath=True, error_model="numpy")
def _cell_backward(mode, grow, crow, hp, cp, dy, dh, dc, tc, dxw, dhr, hprow, direct, H):
    """One row of one step of backpropagation through time: from the activated gates grow,
    the cell vector crow, h[t-1] (hp), c[t-1] (cp), tanh(c[t]) (tc, lstm) and the cotangents
    dy (of the output) and dh, dc (from the step after), the pre-activation cotangents into
    dxw and dhr, h[t-1] into hprow (for dR), dc[t-1] into dc; dh gets dy + dh. Loops run
    over 1-D slices with no branches inside, so that they vectorize."""
    for j in range(H):
        dh[j] += dy[j]
        hprow[j] = hp[j]
    if mode == LSTM:
        ig, fg, gg, og = grow[0:H], grow[H:2 * H], grow[2 * H:3 * H], grow[3 * H:4 * H]
        di, df, dg, do = dxw[0:H], dxw[H:2 * H], dxw[2 * H:3 * H], dxw[3 * H:4 * H]
        for j in range(H):
            dcv = dc[j] + dh[j] * og[j] * (1 - tc[j] * tc[j])
            di[j] = dcv * gg[j] * ig[j] * (1 - ig[j])
            df[j] = dcv * cp[j] * fg[j] * (1 - fg[j])
            dg[j] = dcv * ig[j] * (1 - gg[j] * gg[j])
            do[j] = dh[j] * tc[j] * og[j] * (1 - og[j])
            dc[j] = dcv * fg[j]
    elif mode == GRU:
        rg, zg, ng_ = grow[0:H], grow[H:2 * H], grow[2 * H:3 * H]
        dr, dz, dn = dxw[0:H], dxw[H:2 * H], dxw[2 * H:3 * H]
        hr, hz, hn = dhr[0:H], dhr[H:2 * H], dhr[2 * H:3 * H]
        for j in range(H):
            dan = dh[j] * (1 - zg[j]) * (1 - ng_[j] * ng_[j])
            dar = dan * crow[j] * rg[j] * (1 - rg[j])
            daz = dh[j] * (hp[j] - ng_[j]) * zg[j] * (1 - zg[j])
            dr[j] = dar
            dz[j] = daz
            dn[j] = dan
            hr[j] = dar
            hz[j] = daz
            hn[j] = dan * rg[j]
            direct[j] = dh[j] * zg[j]
    elif mode == TANH:
        for j in range(H):
            dxw[j] = dh[j] * (1 - grow[j] * grow[j])
    else:
        for j in range(H):
            dxw[j] = dh[j] if grow[j] > 0 else 0


@njit(cache=True)
def rnn_forward_cpu(w, x, h0, c0, out, mode, hidden, layers, dirs, skip, batch_sizes, dropout):
    """Run the whole network over the sequence, writing the packed vector `out`."""
    H, T, N, X = hidden, len(batch_sizes), x.shape[0], x.shape[1]
    B = h0.shape[1]
    ng = ngates(mode)
    g = ng * H
    dh = dirs * H
    starts = _starts(batch_sizes)
    hy_at, cy_at, outs_at, masks_at, gates_at, total = packed_offsets(mode, N, B, H, layers, dirs, dropout)
    # Everything is written below but cy (only lstm has one) and the cell vectors of relu
    # and tanh (unused): zero those rather than the whole vector.
    if mode != LSTM:
        out[cy_at:outs_at] = 0
    if mode == RELU or mode == TANH:
        for p in range(layers * dirs):
            base = gates_at + p * N * (ng + 1) * H
            out[base + N * g: base + N * (ng + 1) * H] = 0
    hy = out[hy_at:cy_at].reshape((layers * dirs, B, H))
    cy = out[cy_at:outs_at].reshape((layers * dirs, B, H))
    for layer in range(layers):
        if layer > 0 and dropout > 0:  # inverted dropout between layers
            mask = out[masks_at + (layer - 1) * N * dh: masks_at + layer * N * dh]
            keep = 1.0 - dropout
            for k in range(mask.size):
                mask[k] = (1.0 / keep) if np.random.random() < keep else 0.0
        inp = _layer_input(x, out, layer, N, H, dirs, outs_at, masks_at, dropout)
        xin = inp.shape[1]
        if layer == layers - 1:
            dst = out[0:N * dh].reshape((N, dh))
        else:
            dst = out[outs_at + layer * N * dh: outs_at + (layer + 1) * N * dh].reshape((N, dh))
        for d in range(dirs):
            p = layer * dirs + d
            w_at, r_at, bw_at, br_at = weight_offsets(mode, X, H, layers, dirs, skip, p)
            R = w[r_at:bw_at].reshape((g, H))
            bW = w[bw_at:br_at]
            bR = w[br_at:br_at + g]
            if skip and layer == 0:  # no input matrix: every gate sees x itself
                xw = np.empty((N, g), w.dtype)
                for k in range(N):
                    for j in range(g):
                        xw[k, j] = inp[k, j % H] + bW[j]
            else:
                W = w[w_at:r_at].reshape((g, xin))
                xw = np.dot(inp, W.T)
                for k in range(N):
                    for j in range(g):
                        xw[k, j] += bW[j]
            base = gates_at + p * N * (ng + 1) * H
            G = out[base: base + N * g].reshape((N, g))
            C = out[base + N * g: base + N * (ng + 1) * H].reshape((N, H))
            h = h0[p].copy()
            c = c0[p].copy()
            tmp = np.empty((B, H), w.dtype)
            for s in range(T):
                t = s if d == 0 else T - 1 - s
                n, off = batch_sizes[t], starts[t]
                hr = np.dot(np.ascontiguousarray(h[:n]), R.T)
                _cell_forward(mode, xw, hr, bR, h, c, G, C, dst, off, n, H, d, tmp)
            hy[p] = h
            if mode == LSTM:
                cy[p] = c


@njit(cache=True)
def rnn_backward_cpu(w, x, h0, c0, packed, dpacked, out, mode, hidden, layers, dirs, skip, batch_sizes, dropout):
    """Backpropagation through time: out = dw | dx | dh0 | dc0 from the packed forward
    vector and dpacked, the cotangent of its head y | hy | cy (nothing else has one)."""
    H, T, N, X = hidden, len(batch_sizes), x.shape[0], x.shape[1]
    B = h0.shape[1]
    ng = ngates(mode)
    g = ng * H
    dh_ = dirs * H
    LD = layers * dirs
    starts = _starts(batch_sizes)
    hy_at, cy_at, outs_at, masks_at, gates_at, total = packed_offsets(mode, N, B, H, layers, dirs, dropout)
    nw = w.size
    out[:] = 0
    dw = out[0:nw]
    dx = out[nw:nw + N * X].reshape((N, X))
    dh0 = out[nw + N * X: nw + N * X + LD * B * H].reshape((LD, B, H))
    dc0 = out[nw + N * X + LD * B * H: nw + N * X + 2 * LD * B * H].reshape((LD, B, H))
    dhy = dpacked[hy_at:cy_at].reshape((LD, B, H))
    dcy = dpacked[cy_at:outs_at].reshape((LD, B, H))
    dout = dpacked[0:N * dh_].reshape((N, dh_)).copy()  # cotangent of the current layer's output
    for layer in range(layers - 1, -1, -1):
        inp = _layer_input(x, packed, layer, N, H, dirs, outs_at, masks_at, dropout)
        xin = inp.shape[1]
        if layer == layers - 1:
            lout = packed[0:N * dh_].reshape((N, dh_))
        else:
            lout = packed[outs_at + layer * N * dh_: outs_at + (layer + 1) * N * dh_].reshape((N, dh_))
        dinp = np.zeros((N, xin), w.dtype)
        for d in range(dirs):
            p = layer * dirs + d
            w_at, r_at, bw_at, br_at = weight_offsets(mode, X, H, layers, dirs, skip, p)
            R = w[r_at:bw_at].reshape((g, H))
            base = gates_at + p * N * (ng + 1) * H
            G = packed[base: base + N * g].reshape((N, g))
            C = packed[base + N * g: base + N * (ng + 1) * H].reshape((N, H))
            dXW = np.empty((N, g), w.dtype)
            dHR = np.empty((N, g), w.dtype) if mode == GRU else dXW
            HP = np.empty((N, H), w.dtype)  # h[t-1] of every row: dR = dHR' HP in one GEMM
            dh = dhy[p].copy()
            dc = dcy[p].copy()
            direct = np.zeros((B, H), w.dtype)  # gru: the z * h[t-1] path
            tmp = np.empty((B, H), w.dtype)
            for s in range(T):
                t = T - 1 - s if d == 0 else s  # the reverse of the forward order
                n, off = batch_sizes[t], starts[t]
                # The step before, in the forward order, and how many of its rows exist.
                if d == 0:
                    prev_t, prev_n = t - 1, (batch_sizes[t - 1] if t > 0 else 0)
                else:
                    prev_t, prev_n = t + 1, (batch_sizes[t + 1] if t < T - 1 else 0)
                if mode == LSTM:  # tanh(c[t]) of the block at once (vectorized)
                    for i in range(n):
                        tmp[i, :] = C[off + i]
                    _tanh_block(tmp[:n], 0, H)
                for i in range(n):
                    # h[t-1] and c[t-1] of this row: the previous step's output, or the start.
                    if i < prev_n:
                        hp, cp = lout[starts[prev_t] + i, d * H:(d + 1) * H], C[starts[prev_t] + i]
                    else:
                        hp, cp = h0[p, i], c0[p, i]
                    r = off + i
                    _cell_backward(mode, G[r], C[r], hp, cp, dout[r, d * H:(d + 1) * H], dh[i], dc[i],
                                   tmp[i], dXW[r], dHR[r], HP[r], direct[i], H)
                dprev = np.dot(dHR[off:off + n], R)
                for i in range(n):
                    for j in range(H):
                        dh[i, j] = dprev[i, j] + direct[i, j]
            dh0[p] = dh
            if mode == LSTM:
                dc0[p] = dc
            # The weight gradients of all steps at once.
            dR = dw[r_at:bw_at].reshape((g, H))
            dR[:, :] = np.dot(dHR.T, HP)
            dbW = dw[bw_at:br_at]
            dbR = dw[br_at:br_at + g]
            for k in range(N):
                for j in range(g):
                    dbW[j] += dXW[k, j]
                    dbR[j] += dHR[k, j]
            if skip and layer == 0:
                for k in range(N):
                    for j in range(g):
                        dinp[k, j % H] += dXW[k, j]
            else:
                W = w[w_at:r_at].reshape((g, xin))
                dW = dw[w_at:r_at].reshape((g, xin))
                dW[:, :] = np.dot(dXW.T, inp)
                dinp += np.dot(dXW, W)
        if layer > 0:
            if dropout > 0:
                mask = packed[masks_at + (layer - 1) * N * dh_: masks_at + layer * N * dh_].reshape((N, dh_))
                dinp *= mask
            dout = dinp
        else:
            dx[:, :] = dinp


@njit(cache=True)
def rnn_slice_cpu(packed, out, start, shape, head):
    """out = packed[start : start + out.size] (extracting y, hy, cy or a gradient)."""
    flat = out.reshape(out.size)
    for k in range(out.size):
        flat[k] = packed[start + k]


@njit(cache=True)
def rnn_embed_cpu(part, out, start, size):
    """out = zeros with `part` at `start`: the adjoint of rnn_slice."""
    out[:] = 0
    flat = part.reshape(part.size)
    for k in range(part.size):
        out[start + k] = flat[k]


@njit(cache=True)
def seed(n):
    """Seed the generator the dropout masks draw from (Numba's, separate from numpy's)."""
    np.random.seed(n)


# ============================================================================ CUDA
# The host routines below run on device arrays: per step one GEMM (knetc's GEMM, cuBLAS
# when present) and one fused kernel for the gates and the cell update (forward) or their
# adjoints (backward). Kernels take one thread per (row, hidden unit).

_THREADS = 128


@cuda.jit
def _fill_kernel(a, value):
    k = cuda.grid(1)
    if k < a.size:
        a[k] = value


@cuda.jit
def _copy_kernel(src, src_at, dst, dst_at, n):
    k = cuda.grid(1)
    if k < n:
        dst[dst_at + k] = src[src_at + k]


@cuda.jit
def _mul_kernel(a, b, out):
    k = cuda.grid(1)
    if k < out.size:
        out[k] = a[k] * b[k]


@cuda.jit
def _input_kernel(inp, bW, xw, H, skip):
    """xw (N, g) += bW, or with skip_input xw = x (every gate) + bW."""
    k = cuda.grid(1)
    g = xw.shape[1]
    if k < xw.shape[0] * g:
        row, j = k // g, k % g
        if skip:
            xw[row, j] = inp[row, j % H] + bW[j]
        else:
            xw[row, j] += bW[j]


@cuda.jit
def _cell_forward_kernel(xw, hr, bR, h, c, G, C, dst, off, n, H, d, mode):
    # Sigmoids as 1 / (1 + exp(-a)): exp overflowing to inf gives 0, never NaN.
    k = cuda.grid(1)
    if k < n * H:
        i, j = k // H, k % H
        r = off + i
        if mode == 2:
            ig = 1.0 / (1.0 + math.exp(-(xw[r, j] + hr[i, j] + bR[j])))
            fg = 1.0 / (1.0 + math.exp(-(xw[r, H + j] + hr[i, H + j] + bR[H + j])))
            gg = math.tanh(xw[r, 2 * H + j] + hr[i, 2 * H + j] + bR[2 * H + j])
            og = 1.0 / (1.0 + math.exp(-(xw[r, 3 * H + j] + hr[i, 3 * H + j] + bR[3 * H + j])))
            cv = fg * c[i, j] + ig * gg
            hv = og * math.tanh(cv)
            G[r, j] = ig
            G[r, H + j] = fg
            G[r, 2 * H + j] = gg
            G[r, 3 * H + j] = og
            C[r, j] = cv
            c[i, j] = cv
        elif mode == 3:
            rg = 1.0 / (1.0 + math.exp(-(xw[r, j] + hr[i, j] + bR[j])))
            zg = 1.0 / (1.0 + math.exp(-(xw[r, H + j] + hr[i, H + j] + bR[H + j])))
            hn = hr[i, 2 * H + j] + bR[2 * H + j]
            nn = math.tanh(xw[r, 2 * H + j] + rg * hn)
            hv = (1.0 - zg) * nn + zg * h[i, j]
            G[r, j] = rg
            G[r, H + j] = zg
            G[r, 2 * H + j] = nn
            C[r, j] = hn
        else:
            a = xw[r, j] + hr[i, j] + bR[j]
            hv = math.tanh(a) if mode == 1 else max(a, 0.0)
            G[r, j] = hv
        h[i, j] = hv
        dst[r, d * H + j] = hv


@cuda.jit
def _cell_backward_kernel(G, C, lout, h0p, c0p, dout, dh, dc, dXW, dHR, HP,
                          off, n, prev_at, prev_n, H, d, mode):
    """The adjoint of one step; leaves in dh the part of dh[t-1] that bypasses R (gru's z h)
    so that the GEMM dh[:n] += dHR @ R completes it."""
    k = cuda.grid(1)
    if k < n * H:
        i, j = k // H, k % H
        r = off + i
        if i < prev_n:
            hp = lout[prev_at + i, d * H + j]
        else:
            hp = h0p[i, j]
        HP[r, j] = hp
        dhv = dh[i, j] + dout[r, d * H + j]
        direct = 0.0
        if mode == 2:
            ig = G[r, j]
            fg = G[r, H + j]
            gg = G[r, 2 * H + j]
            og = G[r, 3 * H + j]
            if i < prev_n:
                cp = C[prev_at + i, j]
            else:
                cp = c0p[i, j]
            tc = math.tanh(C[r, j])
            dcv = dc[i, j] + dhv * og * (1.0 - tc * tc)
            dXW[r, j] = dcv * gg * ig * (1.0 - ig)
            dXW[r, H + j] = dcv * cp * fg * (1.0 - fg)
            dXW[r, 2 * H + j] = dcv * ig * (1.0 - gg * gg)
            dXW[r, 3 * H + j] = dhv * tc * og * (1.0 - og)
            dc[i, j] = dcv * fg
        elif mode == 3:
            rg = G[r, j]
            zg = G[r, H + j]
            nn = G[r, 2 * H + j]
            hn = C[r, j]
            dan = dhv * (1.0 - zg) * (1.0 - nn * nn)
            dar = dan * hn * rg * (1.0 - rg)
            daz = dhv * (hp - nn) * zg * (1.0 - zg)
            dXW[r, j] = dar
            dXW[r, H + j] = daz
            dXW[r, 2 * H + j] = dan
            dHR[r, j] = dar
            dHR[r, H + j] = daz
            dHR[r, 2 * H + j] = dan * rg
            direct = dhv * zg
        else:
            hv = G[r, j]
            if mode == 1:
                dXW[r, j] = dhv * (1.0 - hv * hv)
            else:
                dXW[r, j] = dhv if hv > 0 else 0.0
        dh[i, j] = direct


@cuda.jit
def _colsum_kernel(a, out):
    """out[j] = sum over rows of a[:, j] (the bias gradients)."""
    j = cuda.grid(1)
    if j < a.shape[1]:
        s = 0.0
        for k in range(a.shape[0]):
            s += a[k, j]
        out[j] = s


@cuda.jit
def _skip_adjoint_kernel(dXW, dinp, H):
    """dinp[k, j] += sum over gates of dXW[k, gate*H + j] (skip_input: x feeds every gate)."""
    k = cuda.grid(1)
    if k < dinp.shape[0] * H:
        row, j = k // H, k % H
        s = 0.0
        for q in range(dXW.shape[1] // H):
            s += dXW[row, q * H + j]
        dinp[row, j] += s


def _grid(n):
    return (max(n, 1) + _THREADS - 1) // _THREADS, _THREADS


def _device():
    """(device_array, gemm): the memory pool's allocator and cuBLAS or knetc's tiled GEMM."""
    from knetc.kernels.gemm import gemm as tiled_gemm
    from knetc.runtime import cublas
    from knetc.runtime.pool import device_array
    return device_array, (cublas.gemm if cublas.available() else tiled_gemm)


def _fill(a, value):
    flat = a.reshape(a.size)
    _fill_kernel[_grid(a.size)](flat, value)


def _copy(src, src_at, dst, dst_at, n):
    if n:
        _copy_kernel[_grid(n)](src, src_at, dst, dst_at, n)


def _layer_input_cuda(x, out, layer, N, H, dirs, outs_at, masks_at, dropout, device_array):
    if layer == 0:
        return x
    dh = dirs * H
    prev = out[outs_at + (layer - 1) * N * dh: outs_at + layer * N * dh]
    if dropout <= 0:
        return prev.reshape(N, dh)
    mask = out[masks_at + (layer - 1) * N * dh: masks_at + layer * N * dh]
    inp = device_array((N * dh,), x.dtype)
    _mul_kernel[_grid(N * dh)](prev, mask, inp)
    return inp.reshape(N, dh)


def _cudnn_plan(w, x, h0, mode, hidden, layers, dirs, skip, batch_sizes, dropout):
    """cuDNN's plan when it can run this call (a GPU with cuDNN, no dropout, knetc's weight
    layout, its reserve space fits where the Numba path keeps its gates), else None."""
    if dropout > 0:
        return None, None
    from knetc.runtime import cudnn_rnn
    if not cudnn_rnn.available():
        return None, None
    N, B = x.shape[0], h0.shape[1]
    offsets = packed_offsets(mode, N, B, hidden, layers, dirs, dropout)
    room = (offsets[5] - offsets[4]) * np.dtype(x.dtype).itemsize
    return cudnn_rnn.plan(w, x, h0, mode, hidden, layers, dirs, skip, batch_sizes, room), offsets


def rnn_forward_cuda(w, x, h0, c0, out, mode, hidden, layers, dirs, skip, batch_sizes, dropout):
    """rnn_forward_cpu on device arrays (see the module docstring); cuDNN when it can."""
    device_array, gemm = _device()
    H, T, N, X = hidden, len(batch_sizes), x.shape[0], x.shape[1]
    B, ng, dt = h0.shape[1], ngates(mode), x.dtype
    g, dh = ng * H, dirs * H
    starts = np.concatenate([[0], np.cumsum(batch_sizes)])
    hy_at, cy_at, outs_at, masks_at, gates_at, total = packed_offsets(mode, N, B, H, layers, dirs, dropout)
    _fill(out, 0.0)
    plan, _ = _cudnn_plan(w, x, h0, mode, hidden, layers, dirs, skip, batch_sizes, dropout)
    if plan is not None:
        from knetc.runtime import cudnn_rnn
        cudnn_rnn.forward(plan, w, x, h0, c0, out, 0, hy_at, cy_at, gates_at, mode == LSTM)
        return
    xw, hr = device_array((N, g), dt), device_array((B, g), dt)
    h, c = device_array((B, H), dt), device_array((B, H), dt)
    h0f, c0f = h0.reshape(h0.size), c0.reshape(c0.size)
    for layer in range(layers):
        if layer > 0 and dropout > 0:  # the mask is drawn on the host (numba's CPU generator)
            n_mask = N * dh
            keep = 1.0 - dropout
            mask = ((np.random.random(n_mask) < keep) / keep).astype(dt)
            from numba import cuda as _cuda
            _copy(_cuda.to_device(mask), 0, out, masks_at + (layer - 1) * n_mask, n_mask)
        inp = _layer_input_cuda(x, out, layer, N, H, dirs, outs_at, masks_at, dropout, device_array)
        xin = inp.shape[1]
        at = 0 if layer == layers - 1 else outs_at + layer * N * dh
        dst = out[at: at + N * dh].reshape(N, dh)
        for d in range(dirs):
            p = layer * dirs + d
            w_at, r_at, bw_at, br_at = weight_offsets(mode, X, H, layers, dirs, skip, p)
            R = w[r_at:bw_at].reshape(g, H)
            if not (skip and layer == 0):
                gemm(inp, w[w_at:r_at].reshape(g, xin), xw, trans_b=True)
            _input_kernel[_grid(N * g)](inp, w[bw_at:br_at], xw, H, bool(skip and layer == 0))
            base = gates_at + p * N * (ng + 1) * H
            G = out[base: base + N * g].reshape(N, g)
            C = out[base + N * g: base + N * (ng + 1) * H].reshape(N, H)
            _copy(h0f, p * B * H, h.reshape(B * H), 0, B * H)
            _copy(c0f, p * B * H, c.reshape(B * H), 0, B * H)
            bR = w[br_at:br_at + g]
            for s in range(T):
                t = s if d == 0 else T - 1 - s
                n, off = int(batch_sizes[t]), int(starts[t])
                gemm(h[:n], R, hr[:n], trans_b=True)
                _cell_forward_kernel[_grid(n * H)](xw, hr, bR, h, c, G, C, dst, off, n, H, d, mode)
            _copy(h.reshape(B * H), 0, out, hy_at + p * B * H, B * H)
            if mode == LSTM:
                _copy(c.reshape(B * H), 0, out, cy_at + p * B * H, B * H)


def rnn_backward_cuda(w, x, h0, c0, packed, dpacked, out, mode, hidden, layers, dirs, skip, batch_sizes, dropout):
    """rnn_backward_cpu on device arrays (dpacked: the cotangent of y | hy | cy)."""
    device_array, gemm = _device()
    H, T, N, X = hidden, len(batch_sizes), x.shape[0], x.shape[1]
    B, ng, dt = h0.shape[1], ngates(mode), x.dtype
    g, dh_, LD, nw = ng * H, dirs * H, layers * dirs, w.size
    starts = np.concatenate([[0], np.cumsum(batch_sizes)])
    hy_at, cy_at, outs_at, masks_at, gates_at, total = packed_offsets(mode, N, B, H, layers, dirs, dropout)
    _fill(out, 0.0)
    plan, _ = _cudnn_plan(w, x, h0, mode, hidden, layers, dirs, skip, batch_sizes, dropout)
    if plan is not None:
        from knetc.runtime import cudnn_rnn
        cudnn_rnn.backward(plan, w, x, h0, c0, packed, dpacked, out, 0, hy_at, cy_at, gates_at, mode == LSTM)
        return
    dw = out[0:nw]
    dx_at, dh0_at = nw, nw + N * X
    dc0_at = dh0_at + LD * B * H
    dXW, HP = device_array((N, g), dt), device_array((N, H), dt)
    dHR = device_array((N, g), dt) if mode == GRU else dXW
    dh, dc = device_array((B, H), dt), device_array((B, H), dt)
    dout = device_array((N, dh_), dt)
    _copy(dpacked, 0, dout.reshape(N * dh_), 0, N * dh_)
    for layer in range(layers - 1, -1, -1):
        inp = _layer_input_cuda(x, packed, layer, N, H, dirs, outs_at, masks_at, dropout, device_array)
        xin = inp.shape[1]
        at = 0 if layer == layers - 1 else outs_at + layer * N * dh_
        lout = packed[at: at + N * dh_].reshape(N, dh_)
        dinp = device_array((N, xin), dt)
        _fill(dinp, 0.0)
        for d in range(dirs):
            p = layer * dirs + d
            w_at, r_at, bw_at, br_at = weight_offsets(mode, X, H, layers, dirs, skip, p)
            R = w[r_at:bw_at].reshape(g, H)
            base = gates_at + p * N * (ng + 1) * H
            G = packed[base: base + N * g].reshape(N, g)
            C = packed[base + N * g: base + N * (ng + 1) * H].reshape(N, H)
            _copy(dpacked, hy_at + p * B * H, dh.reshape(B * H), 0, B * H)
            _copy(dpacked, cy_at + p * B * H, dc.reshape(B * H), 0, B * H)
            h0p, c0p = h0[p], c0[p]
            for s in range(T):
                t = T - 1 - s if d == 0 else s
                n, off = int(batch_sizes[t]), int(starts[t])
                prev_t = t - 1 if d == 0 else t + 1
                prev_n = int(batch_sizes[prev_t]) if 0 <= prev_t < T else 0
                prev_at = int(starts[prev_t]) if 0 <= prev_t < T else 0
                _cell_backward_kernel[_grid(n * H)](G, C, lout, h0p, c0p, dout, dh, dc, dXW, dHR, HP,
                                                    off, n, prev_at, prev_n, H, d, mode)
                gemm(dHR[off:off + n], R, dh[:n], beta=1.0)
            _copy(dh.reshape(B * H), 0, out, dh0_at + p * B * H, B * H)
            if mode == LSTM:
                _copy(dc.reshape(B * H), 0, out, dc0_at + p * B * H, B * H)
            gemm(dHR, HP, dw[r_at:bw_at].reshape(g, H), trans_a=True)
            _colsum_kernel[_grid(g)](dXW, dw[bw_at:br_at])
            _colsum_kernel[_grid(g)](dHR, dw[br_at:br_at + g])
            if skip and layer == 0:
                _skip_adjoint_kernel[_grid(N * H)](dXW, dinp, H)
            else:
                gemm(dXW, inp, dw[w_at:r_at].reshape(g, xin), trans_a=True)
                gemm(dXW, w[w_at:r_at].reshape(g, xin), dinp, beta=1.0)
        if layer > 0:
            if dropout > 0:
                mask = packed[masks_at + (layer - 1) * N * dh_: masks_at + layer * N * dh_]
                flat = dinp.reshape(N * dh_)
                _mul_kernel[_grid(N * dh_)](flat, mask, flat)
            dout = dinp
        else:
            _copy(dinp.reshape(N * X), 0, out, dx_at, N * X)


@cuda.jit
def _slice_kernel(packed, out, start):
    k = cuda.grid(1)
    if k < out.size:
        out[k] = packed[start + k]


@cuda.jit
def _embed_kernel(part, out, start):
    k = cuda.grid(1)
    if k < out.size:
        out[k] = part[k - start] if start <= k < start + part.size else 0.0


def rnn_slice_cuda(packed, out, start, shape, head):
    _slice_kernel[_grid(out.size)](packed, out.reshape(out.size), start)


def rnn_embed_cuda(part, out, start, size):
    _embed_kernel[_grid(out.size)](part.reshape(part.size), out, start)
