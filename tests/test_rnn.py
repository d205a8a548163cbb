"""RNN (relu, tanh, LSTM, GRU): a float64 numpy reference of the seeds' formulas, PyTorch as
an optional oracle with copied weights, gradients (numerical, eager, compiled), batch_sizes,
states, rnnparam layout, CUDA routines under the simulator and compiled to PTX, bad input."""
import os

import numpy as np
import pytest

import knetc as kn
from knetc.layers import rnnparam, rnnparams

from numgrad import numgrad

TYPES = ["lstm", "gru", "tanh", "relu"]


def sigm(v):
    return 1 / (1 + np.exp(-v))


def reference(r, x, h0=None, c0=None):
    """The seeds' formulas step by step in float64 with rnnparam's matrices: (y, hy, cy)."""
    T, B, _ = x.shape
    H, D, L = r.hidden_size, r._dirs, r.num_layers
    ng = {"lstm": 4, "gru": 3}.get(r.rnn_type, 1)
    h0 = np.zeros((L * D, B, H)) if h0 is None else np.asarray(h0, np.float64)
    c0 = np.zeros((L * D, B, H)) if c0 is None else np.asarray(c0, np.float64)
    hy, cy = np.zeros_like(h0), np.zeros_like(c0)
    inp = np.asarray(x, np.float64)
    for layer in range(L):
        outs = []
        for d in range(D):
            p = layer * D + d
            W = [rnnparam(r, p, k, 0) for k in range(ng)]
            W = [np.eye(H) if w is None else np.asarray(w, np.float64) for w in W]  # skip_input: x itself
            R = [np.asarray(rnnparam(r, p, ng + k, 0), np.float64) for k in range(ng)]
            bW = [np.asarray(rnnparam(r, p, k, 1), np.float64) for k in range(ng)]
            bR = [np.asarray(rnnparam(r, p, ng + k, 1), np.float64) for k in range(ng)]
            h, c = h0[p].copy(), c0[p].copy()
            out = np.zeros((T, B, H))
            for t in (range(T) if d == 0 else reversed(range(T))):
                xt = inp[t]
                a = [xt @ W[k].T + h @ R[k].T + bW[k] + bR[k] for k in range(ng)]
                if r.rnn_type == "lstm":
                    i, f, n, o = sigm(a[0]), sigm(a[1]), np.tanh(a[2]), sigm(a[3])
                    c = f * c + i * n
                    h = o * np.tanh(c)
                elif r.rnn_type == "gru":
                    rg, z = sigm(a[0]), sigm(a[1])
                    n = np.tanh(xt @ W[2].T + bW[2] + rg * (h @ R[2].T + bR[2]))
                    h = (1 - z) * n + z * h
                else:
                    h = np.tanh(a[0]) if r.rnn_type == "tanh" else np.maximum(a[0], 0)
                out[t] = h
            hy[p], cy[p] = h, c
            outs.append(out)
        inp = np.concatenate(outs, axis=-1)
    return inp, hy, (cy if r.rnn_type == "lstm" else np.zeros_like(cy))


def make(typ, layers=1, bi=False, X=3, H=4, skip=False, dtype=np.float64, **kw):
    kn.seed_(1)
    return kn.RNN(X, H, rnn_type=typ, num_layers=layers, bidirectional=bi, skip_input=skip,
                  atype=dtype, **kw)


def randomize(r, rng):
    """Random biases too (the defaults are zeros and ones), so every parameter matters."""
    r.w.value[...] = rng.uniform(-0.6, 0.6, r.w.value.shape)


@pytest.mark.parametrize("typ", TYPES)
@pytest.mark.parametrize("layers,bi", [(1, False), (2, True)])
def test_forward_matches_numpy_reference(typ, layers, bi):
    rng = np.random.default_rng(0)
    r = make(typ, layers, bi, h=0, c=0)
    randomize(r, rng)
    LD = layers * (2 if bi else 1)
    x = rng.standard_normal((5, 2, 3))
    h0, c0 = rng.standard_normal((LD, 2, 4)), rng.standard_normal((LD, 2, 4))
    r.h, r.c = h0, c0
    y = r(x)
    ry, rh, rc = reference(r, x, h0, c0)
    np.testing.assert_allclose(y, ry, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r.h, rh, rtol=1e-10, atol=1e-12)
    if typ == "lstm":
        np.testing.assert_allclose(r.c, rc, rtol=1e-10, atol=1e-12)
    else:
        assert r.c is c0  # only LSTM has a cell state
    # the last step of y is the last layer's final state (forward direction)
    np.testing.assert_allclose(y[-1, :, :4], r.h[LD - (2 if bi else 1)])


def test_skip_input_and_default_init():
    rng = np.random.default_rng(1)
    r = make("lstm", 1, True, X=4, H=4, skip=True)
    assert rnnparam(r, 0, 0, 0) is None and rnnparam(r, 1, 3, 0) is None
    assert rnnparam(r, 0, 4, 0).shape == (4, 4)
    np.testing.assert_array_equal(rnnparam(r, 0, 1, 1), 1)  # finit: forget-gate biases
    np.testing.assert_array_equal(rnnparam(r, 0, 5, 1), 1)
    np.testing.assert_array_equal(rnnparam(r, 0, 0, 1), 0)  # binit
    assert np.abs(rnnparam(r, 0, 4, 0)).max() > 0  # winit
    randomize(r, rng)
    x = rng.standard_normal((3, 2, 4))
    np.testing.assert_allclose(r(x), reference(r, x)[0], rtol=1e-10, atol=1e-12)


def test_rnnparam_views_and_rnnparams_order():
    r = make("gru", 2, True, X=3, H=4)
    m = rnnparam(r, 2, 1, 0)
    assert m.shape == (4, 8) and rnnparam(r, 0, 1, 0).shape == (4, 3) and rnnparam(r, 3, 4, 0).shape == (4, 4)
    m[...] = 7.0
    assert np.sum(r.w.value == 7.0) == 32  # a view into r.w
    ps = rnnparams(r)
    assert len(ps) == 2 * 4 * 6
    assert all(p.ndim == 2 for p in ps[:24]) and all(p.ndim == 1 for p in ps[24:])
    assert sum(p.size for p in ps) == r.w.value.size  # they tile the weight vector
    assert kn.RNN(3, 4, rnn_type="tanh").w.value.dtype == np.float32
    with pytest.raises(ValueError, match="id must be in 0..5"):
        rnnparam(r, 0, 6, 0)
    with pytest.raises(ValueError, match="layer must be in 0..3"):
        rnnparam(r, 4, 0, 0)


@pytest.mark.parametrize("typ", TYPES)
def test_two_halves_equal_one_call(typ):
    rng = np.random.default_rng(2)
    r = make(typ, 2, h=0, c=0)
    randomize(r, rng)
    x = rng.standard_normal((6, 2, 3))
    y = r(x)
    h, c = r.h, r.c
    r.h, r.c = 0, 0
    y1 = r(x[:3])
    y2 = r(x[3:])
    np.testing.assert_allclose(np.concatenate([y1, y2]), y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(r.h, h, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(r.c, c, rtol=1e-12, atol=1e-14)


def test_state_semantics_and_shapes():
    r = make("lstm")
    x = np.ones((2, 3))
    assert r(x).shape == (2, 4) and r.h is None and r.c is None  # None: discarded
    assert r(np.ones(3)).shape == (4,)
    r.h = 0
    r(x)
    assert r.h.shape == (1, 2, 4) and r.c is None
    h = r.h
    y2 = r(x)  # starts from the kept state
    r.h = None
    assert not np.allclose(y2, r(x))
    r.h = h
    np.testing.assert_allclose(r(x), y2)


def test_a_state_with_fewer_axes_is_the_state_with_leading_ones_as_knets():
    rng = np.random.default_rng(5)
    r = make("lstm")
    randomize(r, rng)
    h, c, x = rng.standard_normal((2, 4)), rng.standard_normal(4), rng.standard_normal((2, 3))
    r.h, r.c = h, np.broadcast_to(c, (1, 2, 4)).copy()
    expected = r(x)
    r.h, r.c = h[None], c.copy()[None, None].repeat(2, axis=1)
    np.testing.assert_allclose(r(x), expected, rtol=1e-12)
    # Knet's issue #463: a vector Param as both states of one input vector, with its gradient
    p, v = kn.Param(rng.standard_normal(4)), rng.standard_normal(3)

    def loss(p):
        r.h, r.c = p, p
        return kn.sum(r(v))
    g = kn.grad(kn.diff(lambda: loss(p)), p)
    assert g is not None and g.shape == (4,)
    np.testing.assert_allclose(g, numgrad(lambda q: float(loss(q)), p.value.copy()), rtol=1e-6, atol=1e-8)
    r.h = np.zeros((3, 4))
    with pytest.raises(kn.ShapeError, match=r"h has shape \(3, 4\), expected \(1, 2, 4\)"):
        r(x)


@pytest.mark.parametrize("typ,bi", [("lstm", True), ("gru", False), ("tanh", True)])
def test_batch_sizes_match_padding(typ, bi):
    rng = np.random.default_rng(3)
    r = make(typ, 2, bi, h=0, c=0)
    randomize(r, rng)
    lengths = [4, 3, 3, 1]
    seqs = [rng.standard_normal((n, 3)) for n in lengths]
    sizes = [sum(n > t for n in lengths) for t in range(4)]
    packed = np.concatenate([np.stack([s[t] for s in seqs if len(s) > t]) for t in range(4)])
    y = r(packed, batch_sizes=sizes)
    hy = r.h
    assert y.shape == (11, 8 if bi else 4)
    # each sequence alone gives the same outputs and final states
    start = np.cumsum([0] + sizes)
    for b, s in enumerate(seqs):
        r.h, r.c = 0, 0
        ys = r(s[:, None, :])
        np.testing.assert_allclose(np.stack([y[start[t] + b] for t in range(len(s))]), ys[:, 0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(hy[:, b], r.h[:, 0], rtol=1e-10, atol=1e-12)
    # and masking padded steps does not change a dense call's valid outputs (unidirectional)
    if not bi:
        dense = np.zeros((4, 4, 3))
        for b, s in enumerate(seqs):
            dense[:len(s), b] = s
        r.h = 0
        yd = r(dense)
        for t in range(4):
            np.testing.assert_allclose(yd[t, :sizes[t]], y[start[t]:start[t + 1]], rtol=1e-10, atol=1e-12)


def test_batch_sizes_keep_the_axes_of_x():
    """As Knet: y has as many axes as x, batch_sizes or not (the rows of x, in x's shape)."""
    r = make("tanh", 1, False)
    x = np.random.default_rng(5).standard_normal((3, 2, 3))
    y = r(x, batch_sizes=[2, 2, 2])
    assert y.shape == (3, 2, 4)
    np.testing.assert_allclose(y, r(x), rtol=1e-12)  # full batches: the dense call
    np.testing.assert_allclose(r(x.reshape(6, 3), batch_sizes=[2, 2, 2]), r(x).reshape(6, 4), rtol=1e-12)
    assert r(np.ones(3), batch_sizes=[1]).shape == (4,)


def _loss_of(r, x, batch_sizes=None):
    def loss(w, x, h0, c0):
        r.w, r.h, r.c = w, h0, c0
        y = r(x, batch_sizes=batch_sizes)
        out = kn.sum(y * y) + kn.sum(kn.tanh(r.h) * 0.7)
        return out + kn.sum(r.c * r.c) * 0.3 if r.rnn_type == "lstm" else out
    return loss


@pytest.mark.parametrize("typ,layers,bi,sizes", [("lstm", 2, True, None), ("gru", 2, False, [3, 2, 2]),
                                                  ("tanh", 1, True, [2, 2, 1]), ("relu", 2, False, None)])
def test_gradients_match_numerical(typ, layers, bi, sizes):
    rng = np.random.default_rng(4)
    r = make(typ, layers, bi, H=3)
    randomize(r, rng)
    LD = layers * (2 if bi else 1)
    x = rng.standard_normal((sum(sizes), 3) if sizes else (3, 2, 3))
    B = sizes[0] if sizes else 2
    h0, c0 = rng.standard_normal((LD, B, 3)) * 0.5, rng.standard_normal((LD, B, 3)) * 0.5
    w = r.w.value.copy()
    loss = _loss_of(r, x, sizes)
    grads = [kn.grad(loss, argnum=i)(w, x, h0, c0) for i in range(4)]
    args = [w, x, h0, c0]
    for i in range(4):
        def f(a, i=i):
            cur = list(args)
            cur[i] = a
            return loss(*cur)
        num = numgrad(f, args[i])
        if typ != "lstm" and i == 3:
            assert grads[i] is None or np.allclose(grads[i], 0)
            continue
        np.testing.assert_allclose(grads[i], num, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("typ", ["lstm"])  # gru: compiled for cuda below (compiling is slow)
def test_compiled_equals_eager(typ):
    rng = np.random.default_rng(5)
    r = make(typ, 2, True, H=3)
    randomize(r, rng)
    x = rng.standard_normal((4, 2, 3))
    h0 = rng.standard_normal((4, 2, 3))

    def loss(model, x):
        y = model(x)  # the eager call replaces model.h; a compiled one works on a copy
        return kn.sum(y * y) + kn.sum(model.h)

    def fresh():
        r.h = h0
        return r

    compiled = kn.compile(loss, target="cpu")
    g, value = kn.gradloss(compiled)(fresh(), x)
    np.testing.assert_allclose(value, loss(fresh(), x), rtol=1e-12)
    assert r.h is not h0 and fresh().h is h0
    ge = kn.grad(loss)(fresh(), x)
    np.testing.assert_allclose(g.w, ge.w, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g.h, ge.h, rtol=1e-10, atol=1e-12)
    gx = kn.grad(compiled, argnum=1)(fresh(), x)
    np.testing.assert_allclose(gx, kn.grad(loss, argnum=1)(fresh(), x), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(compiled.fn(fresh(), x), compiled(fresh(), x), rtol=1e-12)
    source = open(compiled.generated_modules()[0].__file__).read()
    assert "rnn_forward_cpu" in source and "rnn_backward_cpu" in source


def test_dropout_between_layers_only_while_training():
    rng = np.random.default_rng(6)
    r = make("lstm", 2, dropout=0.5, seed=3)
    x = rng.standard_normal((3, 2, 3))
    np.testing.assert_allclose(r(x), r(x))  # no tape: no dropout
    w = r.w
    ys = [kn.value(kn.diff(lambda: r(x))) for _ in range(2)]
    assert not np.allclose(ys[0], ys[1])
    y = kn.diff(lambda: kn.sum(r(x) ** 2))
    assert kn.grad(y, w).shape == w.value.shape


@pytest.mark.parametrize("layers", [1, 2])
def test_dropout_applies_to_the_input_as_knet_does(layers):
    # Knet's RNN: "dropout: applied to input and between layers" (its call starts with
    # x = dropout(x, r.dropout)); a one-layer RNN ignored it. A dropped input entry gets an
    # exact zero gradient, eagerly and compiled.
    rng = np.random.default_rng(8)
    r = make("tanh", layers, dropout=0.5)
    xp = kn.Param(rng.standard_normal((5, 4, 3)))
    losses = [float(kn.diff(lambda: kn.sum(r(xp) ** 2))) for _ in range(3)]
    assert len(set(losses)) == 3, losses
    dropped = (kn.grad(kn.diff(lambda: kn.sum(r(xp) ** 2)), xp) == 0).mean()
    assert 0.25 < dropped < 0.75, dropped
    compiled = kn.compile(lambda r, x: kn.sum(r(x) ** 2), target="cpu", cache=False)
    dropped = (kn.grad(compiled, argnum=1)(r, xp.value) == 0).mean()
    assert 0.25 < dropped < 0.75, dropped
    np.testing.assert_allclose(r(xp.value), r(xp.value))  # not while training: no dropout


def test_bad_input_raises_clear_errors():
    r = make("lstm", h=0)
    with pytest.raises(kn.ShapeError, match=r"does not fit: expected \(T, B, 3\)"):
        r(np.ones((2, 2, 5)))
    with pytest.raises(kn.ShapeError, match="is empty"):
        r(np.ones((0, 2, 3)))  # (Knet asserts length(x) > 0)
    with pytest.raises(kn.ShapeError, match="non-increasing"):
        r(np.ones((5, 3)), batch_sizes=[2, 3])
    with pytest.raises(kn.ShapeError, match="sum to 4 but x has 5 rows"):
        r(np.ones((5, 3)), batch_sizes=[2, 2])
    r.h = np.zeros((1, 3, 4))
    with pytest.raises(kn.ShapeError, match=r"h has shape \(1, 3, 4\), expected \(1, 2, 4\)"):
        r(np.ones((2, 3)))
    with pytest.raises(kn.ShapeError, match="same element type"):
        kn.RNN(3, 4, rnn_type="gru")(np.ones((2, 3)))  # float32 weights, float64 x
    with pytest.raises(kn.ShapeError, match="float32 or float64"):  # (was Numba's NotImplementedError: float16)
        kn.RNN(3, 4, atype=np.float16)(np.ones((2, 2, 3), np.float16))
    with pytest.raises(ValueError, match="rnn_type"):
        kn.RNN(3, 4, rnn_type="lstm2")
    with pytest.raises(ValueError, match="skip_input needs"):
        kn.RNN(3, 4, skip_input=True)


@pytest.mark.parametrize("typ,layers,bi", [(t, 1, False) for t in TYPES] + [(t, 2, True) for t in TYPES])
def test_pytorch_oracle(typ, layers, bi):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    r = make(typ, layers, bi, h=0, c=0)
    randomize(r, rng)
    ng = {"lstm": 4, "gru": 3}.get(typ, 1)
    D = 2 if bi else 1
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(typ, torch.nn.RNN)
    extra = {} if typ in ("lstm", "gru") else {"nonlinearity": typ}
    net = cls(3, 4, num_layers=layers, bidirectional=bi, **extra).double()
    with torch.no_grad():
        for layer in range(layers):
            for d in range(D):
                p, suffix = layer * D + d, f"_l{layer}" + ("_reverse" if d else "")
                getattr(net, "weight_ih" + suffix).copy_(torch.tensor(np.concatenate([rnnparam(r, p, k, 0) for k in range(ng)])))
                getattr(net, "weight_hh" + suffix).copy_(torch.tensor(np.concatenate([rnnparam(r, p, ng + k, 0) for k in range(ng)])))
                getattr(net, "bias_ih" + suffix).copy_(torch.tensor(np.concatenate([rnnparam(r, p, k, 1) for k in range(ng)])))
                getattr(net, "bias_hh" + suffix).copy_(torch.tensor(np.concatenate([rnnparam(r, p, ng + k, 1) for k in range(ng)])))
    x = rng.standard_normal((4, 2, 3))
    h0, c0 = rng.standard_normal((layers * D, 2, 4)), rng.standard_normal((layers * D, 2, 4))
    tx, th, tc = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    ty, states = net(tx, (th, tc) if typ == "lstm" else th)
    thy = states[0] if typ == "lstm" else states
    tloss = (ty ** 2).sum() + thy.sum() + (states[1].sum() if typ == "lstm" else 0)
    tloss.backward()

    def loss(w, x, h0, c0):
        r.w, r.h, r.c = w, h0, c0
        y = r(x)
        out = kn.sum(y * y) + kn.sum(r.h)
        return out + kn.sum(r.c) if typ == "lstm" else out
    w = r.w.value.copy()
    np.testing.assert_allclose(loss(w, x, h0, c0), tloss.item(), rtol=1e-10)
    gw, gx, gh = (kn.grad(loss, argnum=i)(w, x, h0, c0) for i in range(3))
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gh, th.grad.numpy(), rtol=1e-9, atol=1e-12)
    if typ == "lstm":
        np.testing.assert_allclose(kn.grad(loss, argnum=3)(w, x, h0, c0), tc.grad.numpy(), rtol=1e-9, atol=1e-12)
    r.w = kn.Param(w)
    for layer in range(layers):
        for d in range(D):
            p, suffix = layer * D + d, f"_l{layer}" + ("_reverse" if d else "")
            r.w.value = gw
            np.testing.assert_allclose(np.concatenate([rnnparam(r, p, ng + k, 0) for k in range(ng)]),
                                       getattr(net, "weight_hh" + suffix).grad.numpy(), rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(np.concatenate([rnnparam(r, p, k, 1) for k in range(ng)]),
                                       getattr(net, "bias_ih" + suffix).grad.numpy(), rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(np.concatenate([rnnparam(r, p, k, 0) for k in range(ng)]),
                                       getattr(net, "weight_ih" + suffix).grad.numpy(), rtol=1e-9, atol=1e-12)


def _packed_cpu_and_cuda(typ, layers, bi, skip, sizes, rng):
    from numba import cuda
    from knetc.kernels.rnn_cpu import rnn_backward_cpu
    from knetc.kernels.rnn_cuda import rnn_backward_cuda, rnn_forward_cuda
    from knetc.ops.rnn import rnn_forward
    from knetc.runtime.rnn_layout import MODES
    X = H = 3
    r = make(typ, layers, bi, X=X, H=H, skip=skip)
    randomize(r, rng)
    N, B, LD = sum(sizes), sizes[0], layers * (2 if bi else 1)
    w = r.w.value
    x, h0, c0 = rng.standard_normal((N, X)), rng.standard_normal((LD, B, H)), rng.standard_normal((LD, B, H))
    p = dict(mode=MODES[typ], hidden=H, layers=layers, dirs=2 if bi else 1, skip=skip,
             batch_sizes=tuple(sizes), dropout=0.0)
    packed = rnn_forward(w, x, h0, c0, **p)
    dpacked = rng.standard_normal(packed.shape)
    grads = np.empty(w.size + x.size + 2 * h0.size)
    rnn_backward_cpu(w, x, h0, c0, packed, dpacked, grads, **p)
    dev = [cuda.to_device(a) for a in (w, x, h0, c0)]
    out = cuda.device_array(packed.shape)
    rnn_forward_cuda(*dev, out, **p)
    gout = cuda.device_array(grads.shape)
    rnn_backward_cuda(*dev, out, cuda.to_device(dpacked), gout, **p)
    return packed, out.copy_to_host(), grads, gout.copy_to_host()


@pytest.mark.parametrize("typ,layers,bi,skip,sizes", [
    ("lstm", 1, True, False, [2, 1]), ("gru", 2, False, True, [2, 1]),
    ("tanh", 1, True, True, [2, 2]), ("relu", 2, True, False, [1])])
def test_cuda_routines_match_cpu_under_simulator(typ, layers, bi, skip, sizes):
    packed, packed_cuda, grads, grads_cuda = _packed_cpu_and_cuda(typ, layers, bi, skip, sizes, np.random.default_rng(8))
    np.testing.assert_allclose(packed_cuda, packed, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grads_cuda, grads, rtol=1e-12, atol=1e-14)


def test_compiled_cuda_equals_eager_under_simulator():
    rng = np.random.default_rng(9)
    r = make("gru", 1, True, H=3)
    randomize(r, rng)
    x = rng.standard_normal((5, 3))

    def loss(model, x):
        return kn.sum(kn.tanh(model(x, batch_sizes=[2, 2, 1])))

    compiled = kn.compile(loss, target="cuda")
    g, value = kn.gradloss(compiled)(r, x)
    np.testing.assert_allclose(value, loss(r, x), rtol=1e-12)
    np.testing.assert_allclose(g.w, kn.grad(loss)(r, x).w, rtol=1e-10, atol=1e-12)
    source = open(compiled.generated_modules()[0].__file__).read()
    assert "rnn_forward_cuda" in source and "rnn_backward_cuda" in source


def test_cuda_kernels_compile_to_ptx_sm90():
    from ptx import compile_ptx
    import knetc.kernels.rnn_cuda as K
    kernels = {}
    for t in ("float32", "float64"):
        a1, a2 = f"{t}[::1]", f"{t}[:, ::1]"
        sig = {
            "_cell_forward_kernel": f"void({a2}, {a2}, {a1}, {a2}, {a2}, {a2}, {a2}, {a2}, int64, int64, int64, int64, int64)",
            "_cell_backward_kernel": f"void({a2}, {a2}, {a2}, {a2}, {a2}, {a2}, {a2}, {a2}, {a2}, {a2}, {a2}, "
                                     "int64, int64, int64, int64, int64, int64, int64)",
            "_input_kernel": f"void({a2}, {a1}, {a2}, int64, boolean)",
            "_colsum_kernel": f"void({a2}, {a1})",
            "_skip_adjoint_kernel": f"void({a2}, {a2}, int64)",
            "_fill_kernel": f"void({a1}, float64)",
            "_copy_kernel": f"void({a1}, int64, {a1}, int64, int64)",
            "_mul_kernel": f"void({a1}, {a1}, {a1})",
            "_slice_kernel": f"void({a1}, {a1}, int64)",
            "_embed_kernel": f"void({a1}, {a1}, int64)",
        }
        report = compile_ptx(K.__file__, sig)
        assert all(v["target"] and v["entry"] for v in report.values()), report
        kernels.update(report)
    assert len(kernels) == 10


def test_cudnn_rnn_binding_without_gpu():
    from knetc.runtime import cudnn, cudnn_rnn
    np.testing.assert_array_equal(cudnn_rnn.seq_lengths([3, 2, 2, 1]), [4, 3, 1])
    if not cudnn.loadable():
        pytest.skip("cuDNN's v8 RNN function signatures not checked: libcudnn.so.9 is not installed "
                    "(the `cuda` extra: pip install -e .[test,cuda])")
    library = cudnn_rnn.lib()  # every v8 RNN function exists in this cuDNN with its signature declared
    for name, (restype, argtypes) in cudnn_rnn.SIGNATURES.items():
        assert getattr(library, name).argtypes == argtypes
    # descriptors need no GPU: an LSTM, 2 layers, bidirectional, and packed data descriptors
    with cudnn.Descriptor("Dropout") as drop:
        with cudnn_rnn.rnn_descriptor(2, 3, 4, 2, 2, False, np.float32, drop) as d:
            assert d.value.value
    with cudnn_rnn.data_descriptor([3, 2, 2, 1], 5, np.float64) as d:
        assert d.value.value
    if os.environ.get("KNETC_TEST_GPU") != "1":
        assert not cudnn_rnn.available()  # the simulator (or no GPU): the Numba kernels run


@pytest.mark.skipif(__import__("os").environ.get("KNETC_TEST_GPU") != "1", reason="needs a GPU (KNETC_TEST_GPU=1)")
@pytest.mark.parametrize("typ,layers,bi,sizes", [("lstm", 2, True, [3, 2, 2, 1]), ("gru", 1, False, [2, 2]),
                                                  ("tanh", 2, False, [2, 1]), ("relu", 1, True, [1])])
def test_cudnn_matches_cpu_on_gpu(typ, layers, bi, sizes):
    from knetc.runtime import cudnn_rnn
    assert cudnn_rnn.available()
    packed, packed_cuda, grads, grads_cuda = _packed_cpu_and_cuda(typ, layers, bi, False, sizes, np.random.default_rng(10))
    from knetc.runtime.rnn_layout import MODES, packed_offsets
    N, B = sum(sizes), sizes[0]
    used = packed_offsets(MODES[typ], N, B, 3, layers, 2 if bi else 1, 0.0)[2]  # y | hy | cy
    np.testing.assert_allclose(packed_cuda[:used], packed[:used], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(grads_cuda, grads, rtol=1e-8, atol=1e-10)


def test_float32_gate_nonlinearities_are_accurate():
    from knetc.kernels.rnn_cpu import _sigm_range, _tanh_block
    x = np.linspace(-30, 30, 100001)
    t, s = x.astype(np.float32)[None].copy(), x.astype(np.float32)[None].copy()
    _tanh_block(t, 0, x.size)
    _sigm_range(s[0], 0, x.size)
    assert t.dtype == np.float32
    np.testing.assert_allclose(t[0], np.tanh(x), rtol=0, atol=5e-7)
    np.testing.assert_allclose(s[0], 1 / (1 + np.exp(-x)), rtol=0, atol=5e-7)
    np.testing.assert_allclose(t[0][np.abs(x) < 1e-3], np.tanh(x[np.abs(x) < 1e-3]), rtol=1e-6)


def test_initialisers_are_called_as_knet_calls_them():
    """winit/binit/finit(dtype, dims) with dims one tuple (Knet's rnn.jl), so initialisers
    written to Knet's convention work, and knetc's own (xavier, zeros, ones) take that form."""
    calls = []

    def winit(T, dims):
        calls.append((np.dtype(T), dims))
        return np.full(dims, 0.5, T)
    r = kn.RNN(3, 2, rnn_type="gru", winit=winit, binit=lambda T, dims: np.full(dims, 0.25, T))
    assert calls and all(dtype == np.float32 and isinstance(dims, tuple) for dtype, dims in calls)
    assert (np.asarray(kn.rnnparam(r, 0, 0, 0)) == 0.5).all()
    np.testing.assert_array_equal(kn.rnnparam(r, 0, 0, 1), np.full(2, 0.25))
    r = kn.RNN(3, 2, rnn_type="lstm", winit=kn.xavier, binit=kn.zeros, finit=kn.ones)
    np.testing.assert_array_equal(kn.rnnparam(r, 0, 1, 1), np.ones(2))


@pytest.mark.parametrize("compiled", [False, True])
def test_second_derivatives_through_an_rnn_raise_instead_of_dropping_its_part(compiled):
    """grad(grad(f)) through kn.RNN once came out as if the RNN had no second derivative."""
    kn.seed_(1)
    r = kn.RNN(3, 4, rnn_type="tanh", atype=np.float64)
    x, v = np.random.default_rng(0).standard_normal((2, 3, 2, 3))

    def f(x):
        return kn.sum(r(x) ** 2)
    f = kn.compile(f) if compiled else f
    first = kn.grad(f)(x)  # once: fine
    assert first.shape == x.shape and np.abs(first).max() > 0
    with pytest.raises(TypeError, match="second derivatives through kn.RNN"):
        kn.grad(lambda x: kn.sum(kn.grad(f)(x) * v) + kn.sum(x * x))(x)


def test_a_compiled_loss_trains_an_rnn_from_its_closure_and_leaves_its_state_alone():
    """Knet's usual pattern: the model is a global and the loss closes over it. kn.diff of the
    compiled loss raised (the RNN's Param reached an op), and a compiled call wrote an IR
    value into rnn.h, which broke the next eager call."""
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((5, 2, 3)), rng.integers(0, 4, (5, 2))
    r = kn.RNN(3, 4, atype=np.float64)
    loss = lambda x, y: kn.nll(r(x), y)
    compiled = kn.compile(loss, target="cpu")
    want = kn.grad(kn.diff(loss, x, labels), r.w)
    got = kn.grad(kn.diff(compiled, x, labels), r.w)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    r.h = r.c = 0
    compiled(x, labels)
    assert isinstance(r.h, int) and r.h == 0 and r.c == 0  # compiled code works on a copy (README)
    eager = r(x)
    assert r.h.shape == (1, 2, 4) and np.isfinite(kn.value(eager)).all()
    before = r.w.value.copy()
    for _ in kn.adam(compiled, [(x, labels)] * 3):
        pass
    assert not np.array_equal(r.w.value, before)


def test_an_input_of_another_dtype_is_named_with_its_own_shape():
    # The message showed x reshaped to rows (f64[2,3] for an x of shape (2, 1, 3)).
    r = kn.RNN(3, 4)
    with pytest.raises(kn.ShapeError, match=r"x is f64\[2,1,3\] but the weights are float32") as error:
        r(np.zeros((2, 1, 3)))
    assert "test_rnn.py" in str(error.value)
