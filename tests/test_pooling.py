"""pool and unpool: the seeds' examples and sizes, float64 loop references, PyTorch as an
optional oracle, numerical gradients, compiled (CPU and CUDA simulator) == eager, PTX."""
import os

import numpy as np
import pytest

import knetc as kn
from knetc.kernels import pool as pool_kernels
from knetc.ops.pooling import pool_grad_max

from numgrad import assert_close, numgrad
from ptx import compile_ptx


def reference_pool(x, window, padding, stride, mode, alpha=1.0):
    """Plain loops in float64 over every output of a 4-D or 5-D x (the definition)."""
    x = np.asarray(x, np.float64)
    n = x.ndim - 2
    sizes = [1 + (x.shape[2 + i] + 2 * padding[i] - window[i]) // stride[i] for i in range(n)]
    y = np.zeros(x.shape[:2] + tuple(sizes))
    for b, c in np.ndindex(x.shape[:2]):
        for out in np.ndindex(*sizes):
            values, real = [], 0
            for off in np.ndindex(*window):
                pos = [out[i] * stride[i] - padding[i] + off[i] for i in range(n)]
                if all(0 <= pos[i] < x.shape[2 + i] for i in range(n)):
                    values.append(x[(b, c) + tuple(pos)])
                    real += 1
            if mode in (0, 3):
                y[(b, c) + out] = max(values)
            else:
                y[(b, c) + out] = sum(values) / (np.prod(window) if mode == 1 else real)
    return alpha * y


CASES = [  # shape, window, padding, stride
    ((2, 3, 5, 4), (2, 2), (0, 0), (2, 2)),
    ((1, 2, 7, 6), (3, 3), (1, 1), (2, 2)),
    ((2, 1, 6, 5), (3, 2), (1, 0), (1, 2)),
    ((1, 2, 4, 5, 3), (2, 3, 2), (1, 1, 0), (2, 1, 1)),
]


def test_seed_example_and_default_window():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(kn.pool(x), [[[[5, 7], [13, 15]]]])
    np.testing.assert_array_equal(kn.pool(x, mode=1), [[[[2.5, 4.5], [10.5, 12.5]]]])
    np.testing.assert_array_equal(kn.pool(x, alpha=2), [[[[10, 14], [26, 30]]]])


@pytest.mark.parametrize("shape,window,padding,stride", CASES)
def test_output_size_follows_the_seeds_formula(shape, window, padding, stride):
    y = kn.pool(np.zeros(shape), window=window, padding=padding, stride=stride)
    expected = [1 + (shape[2 + i] + 2 * padding[i] - window[i]) // stride[i] for i in range(len(window))]
    assert y.shape == shape[:2] + tuple(expected)
    assert kn.pool(np.zeros(shape), window=3 if len(shape) == 4 else 2).shape[2:] == \
        tuple(1 + (s - (3 if len(shape) == 4 else 2)) // (3 if len(shape) == 4 else 2) for s in shape[2:])


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("shape,window,padding,stride", CASES)
def test_pool_matches_the_loop_reference(shape, window, padding, stride, mode):
    x = np.random.default_rng(1).standard_normal(shape)
    y = kn.pool(x, window=window, padding=padding, stride=stride, mode=mode, alpha=0.5)
    assert_close(y, reference_pool(x, window, padding, stride, mode, 0.5), rtol=1e-12, atol=1e-14)
    y32 = kn.pool(x.astype(np.float32), window=window, padding=padding, stride=stride, mode=mode)
    assert y32.dtype == np.float32


@pytest.mark.parametrize("pad,stride", [(0, 1), (1, 2), (1, 3)])
def test_pool_matches_pytorch(pad, stride):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = np.random.default_rng(2).standard_normal((2, 3, 7, 6))
    t = torch.tensor(x)
    assert_close(kn.pool(x, window=3, padding=pad, stride=stride), F.max_pool2d(t, 3, stride, pad).numpy())
    assert_close(kn.pool(x, window=3, padding=pad, stride=stride, mode=1),
                 F.avg_pool2d(t, 3, stride, pad, count_include_pad=True).numpy())
    assert_close(kn.pool(x, window=3, padding=pad, stride=stride, mode=2),
                 F.avg_pool2d(t, 3, stride, pad, count_include_pad=False).numpy())
    x5 = np.random.default_rng(3).standard_normal((1, 2, 4, 5, 6))
    assert_close(kn.pool(x5, window=(2, 2, 3), padding=(1, 0, 1), stride=(1, 2, 2)),
                 F.max_pool3d(torch.tensor(x5), (2, 2, 3), (1, 2, 2), (1, 0, 1)).numpy())


def test_nan_propagation_option():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 0] = np.nan
    assert np.isnan(kn.pool(x)[0, 0, 0, 0])
    assert kn.pool(x, maxpooling_nan_opt=0)[0, 0, 0, 0] == 5
    assert kn.pool(x, maxpooling_nan_opt=0)[0, 0, 1, 1] == 15


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_gradient_matches_numerical(mode):
    x = np.random.default_rng(4).standard_normal((2, 2, 5, 6))

    def f(x):
        return kn.sum(kn.pool(x, window=3, padding=1, stride=2, mode=mode, alpha=1.5) ** 2)
    assert_close(kn.grad(f)(x), numgrad(f, x), rtol=1e-5, atol=1e-7)


def test_max_gradient_goes_to_the_first_maximum():
    x = np.ones((1, 1, 2, 2))
    dx = kn.grad(lambda x: kn.sum(kn.pool(x)))(x)
    np.testing.assert_array_equal(dx, [[[[1, 0], [0, 0]]]])


def test_second_order_max_pooling():
    """The gradient of the gradient: pool_grad_max is linear in dy (its transpose gathers)."""
    rng = np.random.default_rng(5)
    x, v = rng.standard_normal((1, 2, 4, 4)), rng.standard_normal((1, 2, 4, 4))

    def inner(x):
        return kn.sum(kn.pool(x * x, window=2, stride=1) ** 2)

    def outer(x):
        return kn.sum(kn.grad(inner)(x) * v)
    assert_close(kn.grad(outer)(x), numgrad(outer, x), rtol=1e-5, atol=1e-6)
    # and the gather is the transpose of the scatter: <scatter(dy), g> == <dy, gather(g)>
    dy, g = rng.standard_normal((1, 2, 3, 3)), rng.standard_normal((1, 2, 4, 4))
    p = dict(window=(1, 2, 2), padding=(0, 0, 0), stride=(1, 1, 1), mode=0, nan_opt=1, alpha=1.0)
    y = kn.pool(x, window=2, stride=1)
    scattered = pool_grad_max(x, y, dy, **p)
    from knetc.ops.pooling import pool_gather
    assert np.isclose(np.sum(scattered * g), np.sum(dy * pool_gather(x, y, g, **p)))


def test_unpool_is_nearest_neighbour_and_pool_inverts_it():
    x = np.random.default_rng(6).standard_normal((2, 3, 3, 4))
    up = kn.unpool(x)
    assert up.shape == (2, 3, 6, 8)
    np.testing.assert_array_equal(up, np.repeat(np.repeat(x, 2, axis=2), 2, axis=3))
    for mode in (0, 1, 2):
        assert_close(kn.pool(kn.unpool(x, window=(2, 3)), window=(2, 3), mode=mode), x)
    assert_close(kn.pool(kn.unpool(x, alpha=4), alpha=4, mode=1), x)
    x5 = np.random.default_rng(7).standard_normal((1, 2, 2, 2, 3))
    assert_close(kn.pool(kn.unpool(x5, window=(1, 2, 2))), kn.pool(kn.unpool(x5, window=(1, 2, 2))))
    assert kn.unpool(x5, window=(1, 2, 2)).shape == (1, 2, 2, 4, 6)
    assert_close(kn.pool(kn.unpool(x5, window=(1, 2, 2)), window=(1, 2, 2)), x5)


def test_unpool_gradient():
    x = np.random.default_rng(8).standard_normal((1, 2, 3, 3))
    for o in (dict(), dict(window=3, stride=2, padding=1)):
        def f(x):
            return kn.sum(kn.unpool(x, **o) ** 2)
        assert_close(kn.grad(f)(x), numgrad(f, x), rtol=1e-5, atol=1e-7)


def net(x):
    a = kn.pool(kn.relu(x), window=3, padding=1, stride=2)
    b = kn.pool(x, window=(2, 3), padding=(1, 1), mode=2, alpha=0.5)
    c = kn.pool(kn.unpool(x, window=2) * 2.0, mode=1)
    return kn.sum(a * a) + kn.sum(b ** 3) + kn.sum(c * x)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_compiled_matches_eager(target):
    x = np.random.default_rng(9).standard_normal((2, 3, 6, 5))
    compiled = kn.compile(net, target=target)
    assert np.isclose(compiled(x), net(x), rtol=1e-12)
    g, value = kn.gradloss(compiled)(x)
    assert np.isclose(value, net(x), rtol=1e-12)
    assert_close(g, kn.grad(net)(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_compiled_5d_and_float32(target):
    dtype = np.float32 if target == "cuda" else np.float64  # (on the CPU a second dtype costs a Numba compile)
    x = np.random.default_rng(10).standard_normal((1, 2, 4, 4, 5)).astype(dtype)

    def f(x):
        return kn.sum(kn.pool(x, window=(2, 2, 3), padding=(1, 0, 1), stride=(1, 2, 2)) ** 2) + \
            kn.sum(kn.pool(x, mode=1, window=2) ** 2)
    compiled = kn.compile(f, target=target)
    g, value = kn.gradloss(compiled)(x)
    assert g.dtype == dtype
    assert np.isclose(value, f(x), rtol=1e-5)
    assert_close(g, kn.grad(f)(x), rtol=1e-5, atol=1e-6)


def test_cuda_kernels_compile_to_ptx():
    jobs = {}
    for dtype in ("float32", "float64"):
        report = compile_ptx(pool_kernels.__file__, pool_kernels.ptx_signatures(dtype))
        jobs[dtype] = report
        assert all(r["target"] and r["entry"] for r in report.values()), report
    assert set(jobs["float32"]) == {"pool_kernel"}


@pytest.mark.parametrize("call,message", [
    (lambda: kn.pool(np.zeros((1, 1, 3, 3)), window=4), "larger than the padded input"),
    (lambda: kn.pool(np.zeros((1, 1, 3, 3)), window=6, padding=1), "larger than the padded input"),
    (lambda: kn.pool(np.zeros((3, 3, 3))), "4-d"),
    (lambda: kn.pool(np.zeros((1, 1, 4, 4)), window=(2, 2, 2)), "tuple of 2 ints"),
    (lambda: kn.pool(np.zeros((1, 1, 4, 4)), mode=4), "mode=4"),
    (lambda: kn.pool(np.zeros((1, 1, 4, 4)), padding=2), "smaller than window"),
    (lambda: kn.pool(np.zeros((1, 1, 4, 4), np.int64)), "floating-point"),
    (lambda: kn.unpool(np.zeros((1, 1, 4))), "4-d"),
])
def test_bad_input_raises_clear_errors(call, message):
    with pytest.raises(kn.ShapeError, match=message):
        call()


def test_bad_input_in_compiled_code_names_the_line():
    def f(x):
        return kn.sum(kn.pool(x, window=5))
    with pytest.raises(kn.ShapeError, match="larger than the padded input"):
        kn.compile(f, target="cpu")(np.zeros((1, 1, 3, 3)))


def test_cuda_routines_report_their_engine():
    x = np.random.default_rng(11).standard_normal((1, 2, 4, 4))
    kn.grad(kn.compile(lambda x: kn.sum(kn.pool(x) ** 2), target="cuda"))(x)
    from knetc.runtime import cudnn_ops
    engine = "cuDNN" if cudnn_ops.available() else "Numba kernels"
    assert ("pool", engine) in pool_kernels._chosen and ("pool backward", engine) in pool_kernels._chosen


@pytest.mark.parametrize("shape,window,padding,stride", CASES)
def test_cudnn_output_sizes_agree_with_the_formula(shape, window, padding, stride):
    from knetc.runtime import cudnn, cudnn_ops
    if not cudnn.loadable():
        pytest.skip("cuDNN's pooling output sizes against the formula not checked: libcudnn.so.9 is not installed "
                    "(the `cuda` extra: pip install -e .[test,cuda])")
    y = kn.pool(np.zeros(shape), window=window, padding=padding, stride=stride)
    for mode in (0, 2):
        assert cudnn_ops.pooled_shape(shape, np.float32, window, padding, stride, mode) == y.shape


@pytest.mark.skipif(os.environ.get("KNETC_TEST_GPU") != "1", reason="needs a GPU (KNETC_TEST_GPU=1)")
@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("shape,window,padding,stride", CASES)
def test_cudnn_and_numba_kernels_agree_on_gpu(shape, window, padding, stride, mode):
    from numba import cuda
    from knetc.runtime import cudnn_ops
    if not cudnn_ops.available():
        pytest.skip("cuDNN is not available")
    rng = np.random.default_rng(12)
    x = rng.standard_normal(shape).astype(np.float32)
    n = len(window)
    w3, p3, s3 = ((1,) * (3 - n) + window, (0,) * (3 - n) + padding, (1,) * (3 - n) + stride)
    y_shape = kn.pool(x, window=window, padding=padding, stride=stride).shape
    xd, y1, y2 = cuda.to_device(x), cuda.device_array(y_shape, np.float32), cuda.device_array(y_shape, np.float32)
    cudnn_ops.pool_forward(xd, y1, w3, p3, s3, mode, 1, 1.0)
    pool_kernels.pool_numba(xd, y2, w3, p3, s3, mode, 1, 1.0)
    np.testing.assert_allclose(y1.copy_to_host(), y2.copy_to_host(), rtol=1e-6, atol=1e-6)
    if mode in (0, 3):
        dy = cuda.to_device(rng.standard_normal(y_shape).astype(np.float32))
        d1, d2 = cuda.device_array(x.shape, np.float32), cuda.device_array(x.shape, np.float32)
        cudnn_ops.pool_backward(xd, y1, dy, d1, w3, p3, s3, mode, 1, 1.0)
        pool_kernels.pool_grad_max_numba(xd, y1, dy, d2, w3, p3, s3, mode, 1, 1.0)
        np.testing.assert_allclose(d1.copy_to_host(), d2.copy_to_host(), rtol=1e-6, atol=1e-6)
