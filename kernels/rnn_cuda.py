"""The CUDA routines of knetc.ops.rnn's "call" ops, on device arrays: cuDNN when
knetc.runtime.cudnn_rnn.plan() says it can serve the call, else knetc's own kernels with
the structure of knetc.kernels.rnn_cpu (layouts: knetc.runtime.rnn_layout).

Per step one GEMM (cuBLAS when present, else knetc's tiled GEMM) and one fused kernel for
the gates and the cell update (forward) or their adjoints (backward). Kernels take one
thread per (row, hidden unit).
"""
import math

import numpy as np
from numba import cuda

from knetc.kernels.gemm import gemm as tiled_gemm
from knetc.runtime import cublas, cudnn_rnn
from knetc.runtime.launch import library_launch
from knetc.runtime.pool import device_array
from knetc.runtime.rnn_layout import GRU, LSTM, ngates, packed_offsets, weight_offsets

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
    # Sigmoids as 1 / (1 + exp(-a)): exp overflowing to inf gives 0, never NaN. Constants in
    # the data's type: float32 data computes in float32 (a 1.0 literal would make it float64).
    k = cuda.grid(1)
    if k < n * H:
        one = G.dtype.type(1)
        zero = G.dtype.type(0)
        i, j = k // H, k % H
        r = off + i
        if mode == 2:
            ig = one / (one + math.exp(-(xw[r, j] + hr[i, j] + bR[j])))
            fg = one / (one + math.exp(-(xw[r, H + j] + hr[i, H + j] + bR[H + j])))
            gg = math.tanh(xw[r, 2 * H + j] + hr[i, 2 * H + j] + bR[2 * H + j])
            og = one / (one + math.exp(-(xw[r, 3 * H + j] + hr[i, 3 * H + j] + bR[3 * H + j])))
            cv = fg * c[i, j] + ig * gg
            hv = og * math.tanh(cv)
            G[r, j] = ig
            G[r, H + j] = fg
            G[r, 2 * H + j] = gg
            G[r, 3 * H + j] = og
            C[r, j] = cv
            c[i, j] = cv
        elif mode == 3:
            rg = one / (one + math.exp(-(xw[r, j] + hr[i, j] + bR[j])))
            zg = one / (one + math.exp(-(xw[r, H + j] + hr[i, H + j] + bR[H + j])))
            hn = hr[i, 2 * H + j] + bR[2 * H + j]
            nn = math.tanh(xw[r, 2 * H + j] + rg * hn)
            hv = (one - zg) * nn + zg * h[i, j]
            G[r, j] = rg
            G[r, H + j] = zg
            G[r, 2 * H + j] = nn
            C[r, j] = hn
        else:
            a = xw[r, j] + hr[i, j] + bR[j]
            hv = math.tanh(a) if mode == 1 else max(a, zero)
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
        one = G.dtype.type(1)
        zero = G.dtype.type(0)
        i, j = k // H, k % H
        r = off + i
        if i < prev_n:
            hp = lout[prev_at + i, d * H + j]
        else:
            hp = h0p[i, j]
        HP[r, j] = hp
        dhv = dh[i, j] + dout[r, d * H + j]
        direct = zero
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
            dcv = dc[i, j] + dhv * og * (one - tc * tc)
            dXW[r, j] = dcv * gg * ig * (one - ig)
            dXW[r, H + j] = dcv * cp * fg * (one - fg)
            dXW[r, 2 * H + j] = dcv * ig * (one - gg * gg)
            dXW[r, 3 * H + j] = dhv * tc * og * (one - og)
            dc[i, j] = dcv * fg
        elif mode == 3:
            rg = G[r, j]
            zg = G[r, H + j]
            nn = G[r, 2 * H + j]
            hn = C[r, j]
            dan = dhv * (one - zg) * (one - nn * nn)
            dar = dan * hn * rg * (one - rg)
            daz = dhv * (hp - nn) * zg * (one - zg)
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
                dXW[r, j] = dhv * (one - hv * hv)
            else:
                dXW[r, j] = dhv if hv > 0 else zero
        dh[i, j] = direct


@cuda.jit
def _colsum_kernel(a, out):
    """out[j] = sum over rows of a[:, j] (the bias gradients)."""
    j = cuda.grid(1)
    if j < a.shape[1]:
        s = a.dtype.type(0)  # accumulates in the data's type
        for k in range(a.shape[0]):
            s += a[k, j]
        out[j] = s


@cuda.jit
def _skip_adjoint_kernel(dXW, dinp, H):
    """dinp[k, j] += sum over gates of dXW[k, gate*H + j] (skip_input: x feeds every gate)."""
    k = cuda.grid(1)
    if k < dinp.shape[0] * H:
        row, j = k // H, k % H
        s = dXW.dtype.type(0)
        for q in range(dXW.shape[1] // H):
            s += dXW[row, q * H + j]
        dinp[row, j] += s


def _grid(n):
    return (max(n, 1) + _THREADS - 1) // _THREADS, _THREADS


def _gemm():
    """cuBLAS's GEMM when it is present, else knetc's tiled one."""
    return cublas.gemm if cublas.available() else tiled_gemm


def _fill(a, value):
    flat = a.reshape(a.size)
    library_launch(_fill_kernel, *_grid(a.size), flat, value)


def _copy(src, src_at, dst, dst_at, n):
    if n:
        library_launch(_copy_kernel, *_grid(n), src, src_at, dst, dst_at, n)


def _layer_input_cuda(x, out, layer, N, H, dirs, outs_at, masks_at, dropout):
    if layer == 0:
        return x
    dh = dirs * H
    prev = out[outs_at + (layer - 1) * N * dh: outs_at + layer * N * dh]
    if dropout <= 0:
        return prev.reshape(N, dh)
    mask = out[masks_at + (layer - 1) * N * dh: masks_at + layer * N * dh]
    inp = device_array((N * dh,), x.dtype)
    library_launch(_mul_kernel, *_grid(N * dh), prev, mask, inp)
    return inp.reshape(N, dh)


def rnn_forward_cuda(w, x, h0, c0, out, mode, hidden, layers, dirs, skip, batch_sizes, dropout):
    """rnn_forward_cpu on device arrays (see the module docstring); cuDNN when it can."""
    gemm = _gemm()
    H, T, N, X = hidden, len(batch_sizes), x.shape[0], x.shape[1]
    B, ng, dt = h0.shape[1], ngates(mode), x.dtype
    g, dh = ng * H, dirs * H
    starts = np.concatenate([[0], np.cumsum(batch_sizes)])
    hy_at, cy_at, outs_at, masks_at, gates_at, total = packed_offsets(mode, N, B, H, layers, dirs, dropout)
    _fill(out, 0.0)
    plan = cudnn_rnn.plan(w, x, h0, mode, hidden, layers, dirs, skip, batch_sizes, dropout)
    if plan is not None:
        cudnn_rnn.forward(plan, w, x, h0, c0, out, 0, hy_at, cy_at, mode == LSTM)  # reserve: its own memory
        return
    xw, hr = device_array((N, g), dt), device_array((B, g), dt)
    h, c = device_array((B, H), dt), device_array((B, H), dt)
    h0f, c0f = h0.reshape(h0.size), c0.reshape(c0.size)
    for layer in range(layers):
        if layer > 0 and dropout > 0:  # the mask is drawn on the host (numba's CPU generator)
            n_mask = N * dh
            keep = 1.0 - dropout
            mask = ((np.random.random(n_mask) < keep) / keep).astype(dt)
            _copy(cuda.to_device(mask), 0, out, masks_at + (layer - 1) * n_mask, n_mask)
        inp = _layer_input_cuda(x, out, layer, N, H, dirs, outs_at, masks_at, dropout)
        xin = inp.shape[1]
        at = 0 if layer == layers - 1 else outs_at + layer * N * dh
        dst = out[at: at + N * dh].reshape(N, dh)
        for d in range(dirs):
            p = layer * dirs + d
            w_at, r_at, bw_at, br_at = weight_offsets(mode, X, H, layers, dirs, skip, p)
            R = w[r_at:bw_at].reshape(g, H)
            if not (skip and layer == 0):
                gemm(inp, w[w_at:r_at].reshape(g, xin), xw, trans_b=True)
            library_launch(_input_kernel, *_grid(N * g), inp, w[bw_at:br_at], xw, H, bool(skip and layer == 0))
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
                library_launch(_cell_forward_kernel, *_grid(n * H), xw, hr, bR, h, c, G, C, dst, off, n, H, d, mode)
            _copy(h.reshape(B * H), 0, out, hy_at + p * B * H, B * H)
            if mode == LSTM:
                _copy(c.reshape(B * H), 0, out, cy_at + p * B * H, B * H)


def rnn_backward_cuda(w, x, h0, c0, packed, dpacked, out, mode, hidden, layers, dirs, skip, batch_sizes, dropout):
    """rnn_backward_cpu on device arrays (dpacked: the cotangent of y | hy | cy)."""
    gemm = _gemm()
    H, T, N, X = hidden, len(batch_sizes), x.shape[0], x.shape[1]
    B, ng, dt = h0.shape[1], ngates(mode), x.dtype
    g, dh_, LD, nw = ng * H, dirs * H, layers * dirs, w.size
    starts = np.concatenate([[0], np.cumsum(batch_sizes)])
    hy_at, cy_at, outs_at, masks_at, gates_at, total = packed_offsets(mode, N, B, H, layers, dirs, dropout)
    _fill(out, 0.0)
    plan = cudnn_rnn.plan(w, x, h0, mode, hidden, layers, dirs, skip, batch_sizes, dropout)
    if plan is not None:
        cudnn_rnn.backward(plan, w, x, h0, c0, packed, dpacked, out, 0, hy_at, cy_at, mode == LSTM)
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
        inp = _layer_input_cuda(x, packed, layer, N, H, dirs, outs_at, masks_at, dropout)
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
                library_launch(_cell_backward_kernel, *_grid(n * H), G, C, lout, h0p, c0p, dout, dh, dc, dXW, dHR, HP,
                                                    off, n, prev_at, prev_n, H, d, mode)
                gemm(dHR[off:off + n], R, dh[:n], beta=1.0)
            _copy(dh.reshape(B * H), 0, out, dh0_at + p * B * H, B * H)
            if mode == LSTM:
                _copy(dc.reshape(B * H), 0, out, dc0_at + p * B * H, B * H)
            gemm(dHR, HP, dw[r_at:bw_at].reshape(g, H), trans_a=True)
            library_launch(_colsum_kernel, *_grid(g), dXW, dw[bw_at:br_at])
            library_launch(_colsum_kernel, *_grid(g), dHR, dw[br_at:br_at + g])
            if skip and layer == 0:
                library_launch(_skip_adjoint_kernel, *_grid(N * H), dXW, dinp, H)
            else:
                gemm(dXW, inp, dw[w_at:r_at].reshape(g, xin), trans_a=True)
                gemm(dXW, w[w_at:r_at].reshape(g, xin), dinp, beta=1.0)
        if layer > 0:
            if dropout > 0:
                mask = packed[masks_at + (layer - 1) * N * dh_: masks_at + layer * N * dh_]
                flat = dinp.reshape(N * dh_)
                library_launch(_mul_kernel, *_grid(N * dh_), flat, mask, flat)
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
    library_launch(_slice_kernel, *_grid(out.size), packed, out.reshape(out.size), start)


def rnn_embed_cuda(part, out, start, size):
    library_launch(_embed_kernel, *_grid(out.size), part.reshape(part.size), out, start)
