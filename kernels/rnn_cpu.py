"""The CPU routines of knetc.ops.rnn's "call" ops (Numba njit): the whole sequence, all
layers and directions, forward and backward through time, in one call.

Per step one GEMM (the recurrent product, np.dot -> BLAS) and a fused loop for the gates and
the cell update; the input products of all steps are one GEMM per layer. The weight vector
and the packed forward vector are laid out as knetc.runtime.rnn_layout says; `x` is (N, X)
with N = sum(batch_sizes): time steps stacked, step t holds batch_sizes[t] rows; h0, c0 are
(L*D, B, H). The backward routine reads the cotangent of the packed vector (only its y, hy,
cy parts) and writes dw | dx | dh0 | dc0 in one vector.
"""
import math

import numpy as np
from numba import njit

from knetc.runtime.rnn_layout import GRU, LSTM, RELU, TANH, ngates, packed_offsets, weight_offsets


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
