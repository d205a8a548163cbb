"""The RNN layouts, written once for knetc.ops.rnn, knetc.kernels.rnn_cpu/rnn_cuda and
knetc.runtime.cudnn_rnn: cell modes, the weight vector, the packed forward vector. Needs
only numba and numpy, so that every layer may import it.

- modes: cuDNN's cudnnRNNMode_t values (0 relu, 1 tanh, 2 lstm, 3 gru).
- weights `w`, one vector laid out like cuDNN's weight space: for each pseudo-layer
  p = layer * dirs + direction, the input matrices W (gates stacked: (ng*H, Xin), absent for
  the first layer with skip_input), the recurrent matrices R (ng*H, H), the input biases bW
  (ng*H) and the recurrent biases bR (ng*H). Gates: lstm i, f, n, o; gru r, z, n.
- the forward result is one packed vector (IR ops have one output):
  y (N, D*H) | hy (L*D, B, H) | cy (L*D, B, H) | outputs of layers 0..L-2 (N, D*H) each |
  dropout masks of layers 1..L-1 (N, D*H) each, when dropout > 0 |
  per pseudo-layer: activated gates (N, ng*H) and a cell vector (N, H) (lstm: c[t]; gru:
  Rn h[t-1] + bRn, what the reset gate multiplies), what backpropagation through time needs.
  (The Numba kernels' saved values. When cuDNN runs the RNN, its reserve space is an aligned
  allocation of its own, kept beside this vector by knetc.runtime.cudnn_rnn, and the gates
  region is left as zeros.)

Example: ``hy_at, cy_at, outs_at, masks_at, gates_at, total = packed_offsets(LSTM, N, B, H, 1, 1, 0.0)``
"""
from numba import njit

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


def param_location(mode, X, H, layers, dirs, skip, p, id, param):
    """(offset, shape) in w of Knet's rnnparam(p, id, param): param 0 a matrix, 1 a bias;
    id < ngates the input side, the rest the recurrent side, gate id % ngates. None for the
    input matrices of a layer that skips its input."""
    w_at, r_at, bw_at, br_at = weight_offsets(mode, X, H, layers, dirs, skip, p)
    ng = ngates(mode)
    gate, recurrent = id % ng, id >= ng
    if param == 1:
        return (br_at if recurrent else bw_at) + gate * H, (H,)
    if recurrent:
        return r_at + gate * H * H, (H, H)
    if r_at == w_at:
        return None
    xin = (r_at - w_at) // (ng * H)
    return w_at + gate * H * xin, (H, xin)


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
