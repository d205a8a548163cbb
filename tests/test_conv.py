"""conv4 and deconv4: Knet's documented values, a float64 numpy reference, PyTorch as an
optional oracle, numerical gradients, compiled (CPU and CUDA simulator) == eager, PTX, errors."""
import itertools
import os

import numpy as np
import pytest

import knetc as kn
from knetc.kernels import conv as kconv

from numgrad import assert_close, numgrad
from ptx import compile_ptx

rng = np.random.default_rng(0)


# ------------------------------------------------------------------ float64 references

def _tup(v, n):
    return (v,) * n if np.ndim(v) == 0 else tuple(v)


def _windows(xp, ksize, osize, stride, dilation):
    """For each filter offset r: the strided slice of the padded input it multiplies."""
    for r in itertools.product(*map(range, ksize)):
        sl = tuple(slice(ri * d, ri * d + s * (o - 1) + 1, s)
                   for ri, o, s, d in zip(r, osize, stride, dilation))
        yield r, (slice(None), slice(None)) + sl


def ref_conv(w, x, padding=0, stride=1, dilation=1, mode=0, alpha=1, group=1):
    """Direct float64 convolution, written independently of the kernels under test."""
    nsp = x.ndim - 2
    p, s, d = _tup(padding, nsp), _tup(stride, nsp), _tup(dilation, nsp)
    if mode == 0:
        w = np.flip(w, axis=tuple(range(2, w.ndim)))
    xp = np.pad(x, [(0, 0), (0, 0)] + [(q, q) for q in p])
    osize = [1 + (xp.shape[2 + i] - (w.shape[2 + i] - 1) * d[i] - 1) // s[i] for i in range(nsp)]
    K, Cg = w.shape[:2]
    Kg = K // group
    y = np.zeros((x.shape[0], K) + tuple(osize))
    for r, sl in _windows(xp, w.shape[2:], osize, s, d):
        patch = xp[sl]
        for g in range(group):
            wg = w[g * Kg:(g + 1) * Kg, :, *r]                      # (Kg, Cg)
            y[:, g * Kg:(g + 1) * Kg] += np.einsum("kc,nc...->nk...", wg, patch[:, g * Cg:(g + 1) * Cg])
    return alpha * y


def ref_deconv(w, x, padding=0, stride=1, dilation=1, mode=0, alpha=1, group=1):
    """Transposed convolution as the adjoint of ref_conv: scatter each input through the filter."""
    nsp = x.ndim - 2
    p, s, d = _tup(padding, nsp), _tup(stride, nsp), _tup(dilation, nsp)
    if mode == 0:
        w = np.flip(w, axis=tuple(range(2, w.ndim)))
    size = [(x.shape[2 + i] - 1) * s[i] + (w.shape[2 + i] - 1) * d[i] + 1 for i in range(nsp)]
    Cx, Cyg = w.shape[:2]
    Cxg = Cx // group
    yp = np.zeros((x.shape[0], Cyg * group) + tuple(size))
    for r, sl in _windows(yp, w.shape[2:], x.shape[2:], s, d):
        for g in range(group):
            wg = w[g * Cxg:(g + 1) * Cxg, :, *r]                     # (Cxg, Cyg)
            yp[(slice(None), slice(g * Cyg, (g + 1) * Cyg)) + sl[2:]] += np.einsum(
                "kc,nk...->nc...", wg, x[:, g * Cxg:(g + 1) * Cxg])
    crop = (slice(None), slice(None)) + tuple(slice(q, n - q) for q, n in zip(p, size))
    return alpha * yp[crop]


# ------------------------------------------------------------------ Knet's documented values

def test_knet_documented_values():
    w = np.array([1.0, 2, 3]).reshape(1, 1, 1, 3)   # Knet's w=[1,2,3] as (W1,W2,C,K)=(3,1,1,1)
    x = np.arange(1.0, 8).reshape(1, 1, 1, 7)       # x=1:7
    np.testing.assert_array_equal(kn.conv4(w, x).ravel(), [10, 16, 22, 28, 34])
    np.testing.assert_array_equal(kn.conv4(w, x, mode=1).ravel(), [14, 20, 26, 32, 38])
    # padding=(0,1): zeros at both ends give 7 outputs; stride 2 takes every other one
    np.testing.assert_array_equal(kn.conv4(w, x, padding=(0, 1)).ravel(), [4, 10, 16, 22, 28, 34, 32])
    np.testing.assert_array_equal(kn.conv4(w, x, stride=(1, 2)).ravel(), [10, 22, 34])
    np.testing.assert_array_equal(kn.conv4(w, x, dilation=(1, 2), mode=1).ravel(), [22, 28, 34])
    np.testing.assert_array_equal(kn.conv4(w, x, alpha=2).ravel(), [20, 32, 44, 56, 68])
    # deconv4 of conv4's output shape recovers x's shape; 1-d transposed convolution by hand
    y = kn.deconv4(w, np.array([1.0, 1.0]).reshape(1, 1, 1, 2))
    np.testing.assert_array_equal(y.ravel(), [3, 5, 3, 1])  # flipped w=[3,2,1] placed at 0 and 1


def test_output_sizes_follow_the_formulas():
    x = np.zeros((2, 3, 11, 9))
    w = np.zeros((4, 3, 3, 2))
    y = kn.conv4(w, x, padding=(1, 2), stride=(2, 3), dilation=(2, 1))
    assert y.shape == (2, 4, 1 + (11 + 2 - 5) // 2, 1 + (9 + 4 - 2) // 3)
    wd = np.zeros((3, 5, 3, 2))
    assert kn.deconv4(wd, x, padding=1, stride=2).shape == (2, 5, 10 * 2 + 3 - 2, 8 * 2 + 2 - 2)


# ------------------------------------------------------------------ numpy reference, many keywords

CASES = [  # x shape, w shape, keywords
    ((2, 3, 7, 6), (4, 3, 3, 2), dict()),
    ((2, 3, 7, 6), (4, 3, 3, 2), dict(mode=1, padding=1)),
    ((1, 2, 8, 9), (3, 2, 2, 3), dict(padding=(2, 1), stride=(2, 3), dilation=(1, 2))),
    ((2, 4, 6, 6), (6, 2, 3, 3), dict(group=2, stride=2, mode=1, alpha=0.5)),
    ((2, 6, 5, 5), (6, 1, 3, 3), dict(group=6, padding=1)),                   # depthwise
    ((1, 2, 5, 4, 6), (3, 2, 2, 3, 2), dict(padding=(1, 0, 1), stride=(1, 2, 1))),  # 3-D
    ((2, 2, 4, 5, 3), (2, 1, 3, 2, 2), dict(group=2, mode=1, dilation=(1, 2, 1))),
]


@pytest.mark.parametrize("xs,ws,kw", CASES)
def test_conv4_matches_reference(xs, ws, kw):
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    assert_close(kn.conv4(w, x, **kw), ref_conv(w, x, **kw), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("xs,ws,kw", CASES)
def test_deconv4_matches_reference(xs, ws, kw):
    # deconv4's w is (Cx, Cy/group, ...): the conv filter of the reverse map
    g = kw.get("group", 1)
    wd = rng.standard_normal((xs[1], ws[0] // g) + ws[2:])
    x = rng.standard_normal(xs)
    assert_close(kn.deconv4(wd, x, **kw), ref_deconv(wd, x, **kw), rtol=1e-10, atol=1e-10)


def test_deconv4_is_the_adjoint_of_conv4():
    x, w = rng.standard_normal((2, 4, 7, 8)), rng.standard_normal((6, 2, 3, 2))
    kw = dict(padding=(1, 0), stride=(2, 1), dilation=(1, 2), group=2)
    y = kn.conv4(w, x, **kw)
    dy = rng.standard_normal(y.shape)
    dx = kn.deconv4(w, dy, **kw)  # w (6, 2) read as deconv's (Cx=6, Cy/group=2)
    assert dx.shape == x.shape
    assert np.isclose(np.sum(y * dy), np.sum(x * dx), rtol=1e-12)


def test_float32():
    x, w = rng.standard_normal((3, 2, 9, 9)).astype(np.float32), rng.standard_normal((5, 2, 3, 3)).astype(np.float32)
    y = kn.conv4(w, x, padding=1)
    assert y.dtype == np.float32
    assert_close(y, ref_conv(w.astype(float), x.astype(float), padding=1), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ PyTorch oracle

def test_pytorch_oracle():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, w = rng.standard_normal((2, 4, 9, 8)), rng.standard_normal((6, 2, 3, 2))
    kw = dict(padding=(1, 2), stride=(2, 1), dilation=(2, 1), groups=2)
    expected = F.conv2d(torch.tensor(x), torch.tensor(w), **kw).numpy()
    assert_close(kn.conv4(w, x, mode=1, padding=(1, 2), stride=(2, 1), dilation=(2, 1), group=2),
                 expected, rtol=1e-10, atol=1e-10)
    # mode=0 flips the filter
    flipped = torch.tensor(np.ascontiguousarray(w[:, :, ::-1, ::-1]))
    assert_close(kn.conv4(w, x, padding=(1, 2), stride=(2, 1), dilation=(2, 1), group=2),
                 F.conv2d(torch.tensor(x), flipped, **kw).numpy(), rtol=1e-10, atol=1e-10)
    # 3-D
    x3, w3 = rng.standard_normal((1, 2, 5, 6, 4)), rng.standard_normal((3, 2, 2, 3, 2))
    assert_close(kn.conv4(w3, x3, mode=1, padding=1, stride=(2, 1, 1)),
                 F.conv3d(torch.tensor(x3), torch.tensor(w3), padding=1, stride=(2, 1, 1)).numpy(),
                 rtol=1e-10, atol=1e-10)
    # transposed: PyTorch's conv_transpose2d weight is deconv4's w
    wt, xt = rng.standard_normal((4, 3, 3, 2)), rng.standard_normal((2, 4, 5, 6))
    assert_close(kn.deconv4(wt, xt, mode=1, padding=(1, 0), stride=(2, 3), dilation=(1, 2), group=2),
                 F.conv_transpose2d(torch.tensor(xt), torch.tensor(wt), padding=(1, 0), stride=(2, 3),
                                    dilation=(1, 2), groups=2).numpy(), rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ gradients

GRAD_CASES = [
    ((2, 2, 5, 4), (3, 2, 2, 3), dict(padding=(1, 1), stride=(2, 1), alpha=1.5)),
    ((1, 4, 5, 5), (4, 2, 3, 2), dict(group=2, mode=1, dilation=(1, 2))),
    ((1, 2, 3, 4, 3), (2, 2, 2, 2, 2), dict(padding=(0, 1, 0), stride=(1, 2, 1))),
]


@pytest.mark.parametrize("xs,ws,kw", GRAD_CASES)
def test_conv4_gradients_match_numerical(xs, ws, kw):
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    c = rng.standard_normal(kn.conv4(w, x, **kw).shape)

    def loss(w, x):
        return kn.sum(kn.conv4(w, x, **kw) * c)
    gw, gx = kn.grad(lambda wx: loss(*wx))((w, x))
    assert_close(gw, numgrad(lambda w: loss(w, x), w), rtol=1e-6, atol=1e-8)
    assert_close(gx, numgrad(lambda x: loss(w, x), x), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("xs,ws,kw", GRAD_CASES)
def test_deconv4_gradients_match_numerical(xs, ws, kw):
    g = kw.get("group", 1)
    x, w = rng.standard_normal(xs), rng.standard_normal((xs[1], ws[0] // g) + ws[2:])
    c = rng.standard_normal(kn.deconv4(w, x, **kw).shape)

    def loss(w, x):
        return kn.sum(kn.tanh(kn.deconv4(w, x, **kw)) * c)
    gw, gx = kn.grad(lambda wx: loss(*wx))((w, x))
    assert_close(gw, numgrad(lambda w: loss(w, x), w), rtol=1e-6, atol=1e-8)
    assert_close(gx, numgrad(lambda x: loss(w, x), x), rtol=1e-6, atol=1e-8)


def test_second_order_gradient():
    # the gradients of conv4's gradient ops (deconv4, conv4_dw) are again conv ops
    x, w = rng.standard_normal((1, 2, 4, 4)), rng.standard_normal((2, 2, 2, 2))

    def gnorm(w):
        gx = kn.grad(lambda x: kn.sum(kn.tanh(kn.conv4(w, x, padding=1))))(x)
        return kn.sum(gx * gx)
    assert_close(kn.grad(gnorm)(w), numgrad(lambda w: gnorm(w), w), rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ compiled == eager

def _net(w1, w2, x):
    h = kn.relu(kn.conv4(w1, x, padding=1, mode=1))
    y = kn.deconv4(w2, h, stride=2, group=1)
    return kn.sum(y * y)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_compiled_equals_eager(target):
    x = rng.standard_normal((2, 2, 4, 3))
    w1, w2 = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal((3, 2, 2, 2))
    compiled = kn.compile(lambda ws, x: _net(*ws, x), target=target)
    (g1, g2), value = kn.gradloss(compiled)((w1, w2), x)
    e1, e2 = kn.grad(lambda ws: _net(*ws, x))((w1, w2))
    assert np.isclose(value, _net(w1, w2, x), rtol=1e-12)
    assert_close(g1, e1, rtol=1e-10, atol=1e-12)
    assert_close(g2, e2, rtol=1e-10, atol=1e-12)


def test_cuda_kernels_match_cpu_routines():
    """The Numba CUDA kernels (simulator here, a GPU with KNETC_TEST_GPU=1) against the CPU path."""
    from numba import cuda
    x, w = rng.standard_normal((2, 4, 5, 4)), rng.standard_normal((4, 2, 2, 3))
    kw = dict(padding=(1, 0), stride=(2, 1), dilation=(1, 1), mode=0, alpha=1.5, group=2)
    y = kn.conv4(w, x, **kw)
    dy = rng.standard_normal(y.shape)
    out = cuda.device_array(y.shape)
    kconv.conv4_cuda(cuda.to_device(w), cuda.to_device(x), out, **kw)
    assert_close(out.copy_to_host(), y, rtol=1e-12, atol=1e-12)
    dx = cuda.device_array(x.shape)
    kconv.deconv4_cuda(cuda.to_device(w), cuda.to_device(dy), dx, size=x.shape[2:], **kw)
    expected = kn.grad(lambda x: kn.sum(kn.conv4(w, x, **kw) * dy))(x)  # a deconv4 with size=x's
    assert_close(dx.copy_to_host(), expected, rtol=1e-12, atol=1e-12)
    dw = cuda.device_array(w.shape)
    kconv.conv4_dw_cuda(cuda.to_device(x), cuda.to_device(dy), dw, size=w.shape[2:], **kw)
    expected = kn.grad(lambda w: kn.sum(kn.conv4(w, x, **kw) * dy))(w)
    assert_close(dw.copy_to_host(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(os.environ.get("KNETC_TEST_GPU") != "1", reason="needs a real GPU")
def test_gpu_cudnn_and_numba_kernels_agree():
    from numba import cuda
    from knetc.runtime import cudnn
    assert cudnn.available()
    x = rng.standard_normal((4, 6, 9, 8)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 2)).astype(np.float32)
    for kw in (dict(padding=(1, 0), stride=(2, 1), dilation=(1, 2), mode=0, alpha=1.0, group=2),
               dict(padding=(0, 0), stride=(1, 1), dilation=(1, 1), mode=1, alpha=0.5, group=1)):
        wk = w if kw["group"] == 2 else rng.standard_normal((8, 6, 3, 2)).astype(np.float32)
        y = kn.conv4(wk, x, **kw)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        d = cuda.to_device
        a, b = cuda.device_array(y.shape, np.float32), cuda.device_array(y.shape, np.float32)
        cudnn.convolution("forward", d(wk), d(x), a, kw["padding"], kw["stride"], kw["dilation"],
                          kw["mode"], kw["alpha"], kw["group"])
        kconv._launch(kconv._conv_fwd_kernel, d(wk), d(x), b, **kw)
        assert_close(a.copy_to_host(), b.copy_to_host(), rtol=1e-4, atol=1e-4)
        assert_close(a.copy_to_host(), y, rtol=1e-4, atol=1e-4)
        a, b = cuda.device_array(x.shape, np.float32), cuda.device_array(x.shape, np.float32)
        cudnn.convolution("backward_data", d(wk), a, d(dy), kw["padding"], kw["stride"], kw["dilation"],
                          kw["mode"], kw["alpha"], kw["group"])
        kconv._launch(kconv._conv_bwd_data_kernel, d(wk), d(dy), b, **kw)
        assert_close(a.copy_to_host(), b.copy_to_host(), rtol=1e-4, atol=1e-4)
        a, b = cuda.device_array(wk.shape, np.float32), cuda.device_array(wk.shape, np.float32)
        cudnn.convolution("backward_filter", a, d(x), d(dy), kw["padding"], kw["stride"], kw["dilation"],
                          kw["mode"], kw["alpha"], kw["group"])
        kconv._launch(kconv._conv_bwd_filter_kernel, d(x), d(dy), b, **kw)
        assert_close(a.copy_to_host(), b.copy_to_host(), rtol=1e-3, atol=1e-3)


def test_cuda_kernels_compile_to_ptx():
    args = "float{0}[:,:,:,:,::1], float{0}[:,:,:,:,::1], float{0}[:,:,:,:,::1], " + \
        ", ".join(["int64"] * 9) + ", boolean, float64, int64"
    for bits in ("32", "64"):
        report = compile_ptx(kconv.__file__, {name: "void(%s)" % args.format(bits)
                                              for name in kconv.KERNELS})
        for name, r in report.items():
            assert r["target"] and r["entry"], (name, bits, r)


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("call,match", [
    (lambda: kn.conv4(np.zeros((4, 2, 3, 3)), np.zeros((1, 3, 5, 5))), "channel mismatch"),
    (lambda: kn.conv4(np.zeros((4, 3, 6, 3)), np.zeros((1, 3, 5, 5))), "larger than the padded input"),
    (lambda: kn.conv4(np.zeros((4, 3, 3, 3)), np.zeros((3, 5, 5))), "4-D .* or 5-D"),
    (lambda: kn.conv4(np.zeros((4, 3, 3)), np.zeros((1, 3, 5, 5))), "4-D .* or 5-D"),
    (lambda: kn.conv4(np.zeros((4, 2, 3, 3)), np.zeros((1, 4, 5, 5)), group=3), "group=3 does not divide"),
    (lambda: kn.conv4(np.zeros((4, 1, 3, 3)), np.zeros((1, 4, 5, 5)), padding=(1, 2, 3)), "padding"),
    (lambda: kn.conv4(np.zeros((4, 1, 3, 3)), np.zeros((1, 1, 5, 5)), stride=0), "stride"),
    (lambda: kn.conv4(np.zeros((4, 1, 3, 3)), np.zeros((1, 1, 5, 5)), mode=2), "mode"),
    (lambda: kn.conv4(np.zeros((4, 1, 3, 3), np.float32), np.zeros((1, 1, 5, 5))), "same dtype"),
    (lambda: kn.conv4(np.zeros((4, 1, 3, 3), int), np.zeros((1, 1, 5, 5), int)), "float32 or float64"),
    (lambda: kn.conv4(np.zeros((4, 1, 3, 3), np.float16), np.zeros((1, 1, 5, 5), np.float16)), "float32 or float64"),
    (lambda: kn.deconv4(np.zeros((1, 4, 3, 3), np.float16), np.zeros((1, 1, 5, 5), np.float16)), "float32 or float64"),
    # Knet converts these with Cint, which refuses 1.5; they were truncated (padding 1.5 ran as 1).
    (lambda: kn.conv4(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 5, 5)), padding=1.5), "padding=1.5 must be an int"),
    (lambda: kn.conv4(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 5, 5)), stride=(1, 2.7)), "stride=.* must be an int"),
    (lambda: kn.conv4(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 7, 7)), dilation=1.9), "dilation=1.9 must be an int"),
    (lambda: kn.conv4(np.zeros((2, 1, 3, 3)), np.zeros((1, 2, 5, 5)), group=1.5), "group=1.5 must be a positive int"),
    (lambda: kn.deconv4(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 5, 5)), stride=1.5), "stride=1.5 must be an int"),
    (lambda: kn.deconv4(np.zeros((4, 2, 3, 3)), np.zeros((1, 3, 5, 5))), "channel mismatch"),
    (lambda: kn.deconv4(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1, 1)), padding=2), "no output"),
])
def test_bad_input_raises_shape_error(call, match):
    with pytest.raises(kn.ShapeError, match=match):
        call()


def test_whole_float_keywords_are_the_ints_they_equal():
    x, w = np.arange(49.0).reshape(1, 1, 7, 7), np.arange(9.0).reshape(1, 1, 3, 3)
    np.testing.assert_array_equal(kn.conv4(w, x, padding=1.0, stride=(2.0, 1)), kn.conv4(w, x, padding=1, stride=(2, 1)))
    np.testing.assert_array_equal(kn.pool(x, window=2.0), kn.pool(x, window=2))


def test_compiled_shape_error_names_the_line():
    def f(w, x):
        return kn.sum(kn.conv4(w, x))
    with pytest.raises(kn.ShapeError, match="channel mismatch"):
        kn.compile(f, target="cpu")(np.zeros((2, 3, 2, 2)), np.zeros((1, 2, 4, 4)))
