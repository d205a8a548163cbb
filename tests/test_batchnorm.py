"""batchnorm, bnmoments, bnparams: float64 references, PyTorch as an optional oracle,
numerical gradients, running statistics (updated only in training, identically by eager,
CPU- and CUDA-compiled code), bad input."""
import os

import numpy as np
import pytest

import knetc as kn
from knetc.kernels import batchnorm as bn_kernels

from numgrad import assert_close, numgrad
from ptx import compile_ptx


def reference(x, scale=None, bias=None, mean=None, var=None, eps=1e-5):
    """float64 batch normalization over every axis but 1 (batch statistics if mean is None)."""
    axes = tuple(a for a in range(x.ndim) if a != 1)
    kept = tuple(x.shape[1] if a == 1 else 1 for a in range(x.ndim))
    if mean is None:
        mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    y = (x - np.reshape(mean, kept)) / np.sqrt(np.reshape(var, kept) + eps)
    if scale is not None:
        y = y * scale.reshape(kept) + bias.reshape(kept)
    return y


SHAPES = [(6, 3), (4, 3, 2, 5), (2, 3, 2, 3, 2)]


@pytest.mark.parametrize("shape", SHAPES)
def test_training_and_inference_match_the_reference(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * 3 + 1
    w = np.concatenate([rng.standard_normal(3), rng.standard_normal(3)])
    moments = kn.bnmoments(momentum=0.2)
    y = kn.batchnorm(x, moments, w, training=True)
    assert_close(y, reference(x, w[:3], w[3:]), rtol=1e-10, atol=1e-12)
    axes = tuple(a for a in range(x.ndim) if a != 1)
    m = x[:, :].size // 3
    assert moments.mean.shape == tuple(3 if a == 1 else 1 for a in range(x.ndim))
    assert_close(moments.mean.ravel(), 0.2 * x.mean(axis=axes))
    assert_close(moments.var.ravel(), 0.8 + 0.2 * x.var(axis=axes) * m / (m - 1))
    y = kn.batchnorm(x, moments, w, training=False)
    assert_close(y, reference(x, w[:3], w[3:], moments.mean, moments.var), rtol=1e-10, atol=1e-12)
    assert_close(kn.batchnorm(x, training=True), reference(x), rtol=1e-10, atol=1e-12)  # no moments, no params


def test_matches_pytorch_with_running_statistics():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(1)
    moments = kn.bnmoments(momentum=0.1)
    running_mean, running_var = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    w = np.concatenate([rng.standard_normal(4), rng.standard_normal(4)])
    weight, bias = torch.tensor(w[:4]), torch.tensor(w[4:])
    for step in range(3):
        x = rng.standard_normal((5, 4, 3, 2)) + step
        y = kn.batchnorm(x, moments, w, training=True)
        expected = F.batch_norm(torch.tensor(x), running_mean, running_var, weight, bias, training=True,
                                momentum=0.1, eps=1e-5)
        assert_close(y, expected.numpy(), rtol=1e-10, atol=1e-12)
    assert_close(moments.mean.ravel(), running_mean.numpy())
    assert_close(moments.var.ravel(), running_var.numpy())
    x = rng.standard_normal((5, 4, 3, 2))
    expected = F.batch_norm(torch.tensor(x), running_mean, running_var, weight, bias, training=False)
    assert_close(kn.batchnorm(x, moments, w), expected.numpy(), rtol=1e-10, atol=1e-12)


def test_running_statistics_update_only_in_training():
    rng = np.random.default_rng(2)
    x, w = kn.Param(rng.standard_normal((4, 2, 3, 3))), kn.Param(kn.bnparams(2))
    moments = kn.bnmoments()
    kn.batchnorm(x, moments, w)  # outside diff: inference, nothing changes
    np.testing.assert_array_equal(moments.mean, np.zeros((1, 2, 1, 1)))
    np.testing.assert_array_equal(moments.var, np.ones((1, 2, 1, 1)))
    assert not kn.training()
    y = kn.diff(lambda: kn.sum(kn.batchnorm(x, moments, w) ** 2))  # inside diff: training
    assert_close(moments.mean.ravel(), 0.1 * x.value.mean(axis=(0, 2, 3)))
    assert kn.grad(y, w) is not None
    before = moments.mean.copy()
    kn.batchnorm(x, moments, w, training=False)
    np.testing.assert_array_equal(moments.mean, before)
    with pytest.raises(ValueError, match="running statistics are needed"):
        kn.batchnorm(x.value)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(5, 3), (3, 3, 2, 2)])
def test_gradients_match_numerical(shape, training):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(shape), rng.standard_normal(6)
    v = rng.standard_normal(shape)
    moments = kn.bnmoments(mean=rng.standard_normal(3), var=rng.random(3) + 0.5)
    moments.mean, moments.var = moments.mean.reshape(-1), moments.var.reshape(-1)

    def loss(x, w):  # momentum 0 keeps the statistics fixed across numerical evaluations
        m = kn.bnmoments(momentum=0.0, mean=moments.mean, var=moments.var)
        return kn.sum(kn.batchnorm(x, m, w, training=training) * v)
    assert_close(kn.grad(loss, 0)(x, w), numgrad(lambda x: loss(x, w), x), rtol=1e-5, atol=1e-7)
    assert_close(kn.grad(loss, 1)(x, w), numgrad(lambda w: loss(x, w), w), rtol=1e-5, atol=1e-7)


def model_loss(w, x, moments):
    return kn.sum(kn.relu(kn.batchnorm(x, moments, w)) ** 2)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_compiled_training_updates_running_statistics_like_eager(target):
    rng = np.random.default_rng(4)
    w = np.concatenate([rng.standard_normal(3), rng.standard_normal(3)])
    compiled = kn.compile(model_loss, target=target)
    mc, me = kn.bnmoments(momentum=0.3), kn.bnmoments(momentum=0.3)
    for step in range(2):
        x = rng.standard_normal((4, 3, 2, 3)) + step
        (g, value), (ge, ve) = kn.gradloss(compiled)(w, x, mc), kn.gradloss(model_loss)(w, x, me)
        assert np.isclose(value, ve, rtol=1e-12)
        assert_close(g, ge, rtol=1e-10, atol=1e-12)
        assert_close(mc.mean, me.mean, rtol=1e-12, atol=1e-15)
        assert_close(mc.var, me.var, rtol=1e-12, atol=1e-15)
    # a plain call is inference: it reads the running statistics and leaves them alone
    before = mc.mean.copy()
    x = rng.standard_normal((4, 3, 2, 3))
    assert np.isclose(compiled(w, x, mc), model_loss(w, x, me), rtol=1e-12)
    np.testing.assert_array_equal(mc.mean, before)
    # inside diff the compiled forward program trains: one update per call
    pw = kn.Param(w)
    y = kn.diff(lambda: compiled(pw, x, mc))
    ye = kn.diff(lambda: model_loss(kn.Param(w), x, me))
    assert np.isclose(kn.value(y), kn.value(ye), rtol=1e-12)
    assert_close(mc.mean, me.mean, rtol=1e-12)
    assert_close(kn.grad(y, pw), kn.gradloss(model_loss)(w, x, kn.bnmoments(momentum=0.3))[0], rtol=1e-10)


def test_moments_assignment_keeps_the_array_compiled_code_uses():
    moments = kn.bnmoments()
    x = np.random.default_rng(5).standard_normal((4, 2))
    compiled = kn.compile(lambda x, m: kn.sum(kn.batchnorm(x, m)), target="cpu")
    kn.batchnorm(x, moments, training=True)
    array = moments.mean
    moments.mean = np.full((1, 2), 3.0)
    assert moments.mean is array and np.all(array == 3.0)
    compiled(x, moments)  # reads the same arrays


def test_bnparams_and_bnmoments():
    p = kn.bnparams(np.float32, 3)
    assert p.dtype == np.float32 and p.tolist() == [1, 1, 1, 0, 0, 0]
    assert kn.bnparams(2).dtype == np.float64
    m = kn.bnmoments(momentum=0.5, meaninit=lambda dtype, *shape: np.full(shape, 2.0, dtype))
    x = np.random.default_rng(6).standard_normal((3, 2, 2, 2)).astype(np.float32)
    y = kn.batchnorm(x, m, training=False)
    assert m.mean.dtype == np.float32 and np.all(m.mean == 2.0) and np.all(m.var == 1.0)
    assert_close(y, (x - 2.0) / np.sqrt(1 + 1e-5), rtol=1e-6)
    with pytest.raises(ValueError, match="momentum"):
        kn.bnmoments(momentum=2)


def test_whole_layer_design_matches_the_fused_ops(monkeypatch):
    """The batchnorm_train/infer/grad ops that CUDA-compiled code uses with cuDNN, here forced
    on the CPU (njit routines): same values, gradients and running statistics as eager."""
    from knetc.ops import normalization
    monkeypatch.setattr(normalization, "WHOLE_LAYER", True)
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((4, 3, 2, 3)), rng.standard_normal(6)
    compiled = kn.compile(model_loss, target="cpu")
    mc, me = kn.bnmoments(), kn.bnmoments()
    (g, value), (ge, ve) = kn.gradloss(compiled)(w, x, mc), kn.gradloss(model_loss)(w, x, me)
    assert np.isclose(value, ve, rtol=1e-12)
    assert_close(g, ge, rtol=1e-10, atol=1e-12)
    assert_close(mc.mean, me.mean, rtol=1e-12, atol=1e-15)
    assert_close(mc.var, me.var, rtol=1e-12, atol=1e-15)

    def inference(x, w, m):
        return kn.sum(kn.batchnorm(x, m, w, training=False) ** 3) + kn.sum(kn.batchnorm(x, training=True) ** 3)
    compiled = kn.compile(inference, target="cpu")
    assert_close(kn.grad(compiled)(x, w, mc), kn.grad(inference)(x, w, me), rtol=1e-10, atol=1e-12)
    assert_close(kn.grad(compiled, 1)(x, w, mc), kn.grad(inference, 1)(x, w, me), rtol=1e-10, atol=1e-12)
    names = {e.op.name for spec in compiled.specializations() for ex in spec.executables() for e in ex.program.eqns}
    assert {"batchnorm_infer", "batchnorm_train", "batchnorm_grad"} <= names


def test_whole_layer_references_gradient_is_numerical():
    from knetc.ops.normalization import _grad_impl, _train_impl
    rng = np.random.default_rng(8)
    x, w, v = rng.standard_normal((3, 2, 2)), rng.standard_normal(4), rng.standard_normal((3, 2, 2))

    def f(x, w):
        return np.sum(_train_impl(x, w, np.zeros(2), np.ones(2), 1e-5, 0.1, 1.0) * v)
    assert_close(_grad_impl(x, w, v, 1e-5, 0), numgrad(lambda x: f(x, w), x), rtol=1e-5, atol=1e-7)
    assert_close(_grad_impl(x, w, v, 1e-5, 1), numgrad(lambda w: f(x, w), w), rtol=1e-5, atol=1e-7)


def test_cudnn_batchnorm_bindings_load_without_a_gpu():
    from knetc.runtime import cudnn, cudnn_ops
    if not cudnn.loadable():
        pytest.skip("cuDNN's batchnorm function signatures not checked: libcudnn.so.9 is not installed "
                    "(the `cuda` extra: pip install -e .[test,cuda])")
    library = cudnn_ops.lib()
    for name, (_, argtypes) in cudnn_ops.SIGNATURES.items():
        assert getattr(library, name).argtypes == argtypes
    x_desc, bn_desc = cudnn_ops._bn_plan((4, 3, 2, 2), np.float32)
    assert x_desc.value.value and bn_desc.value.value
    assert not cudnn_ops.batchnorm_supported(np.float32, 1e-6)  # below cuDNN's minimum epsilon


@pytest.mark.skipif(os.environ.get("KNETC_TEST_GPU") != "1", reason="needs a GPU (KNETC_TEST_GPU=1)")
def test_cudnn_batchnorm_matches_the_cpu_on_gpu():
    from knetc.runtime import cudnn_ops
    if not cudnn_ops.available():
        pytest.skip("cuDNN is not available")
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((8, 4, 5, 5)).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    mg, mc = kn.bnmoments(), kn.bnmoments()
    gpu, cpu = kn.compile(model_loss, target="cuda"), kn.compile(model_loss, target="cpu")
    for step in range(2):
        (g1, v1), (g2, v2) = kn.gradloss(gpu)(w, x + step, mg), kn.gradloss(cpu)(w, x + step, mc)
        assert np.isclose(v1, v2, rtol=1e-4)
        assert_close(g1, g2, rtol=1e-3, atol=1e-3)
        assert_close(mg.mean, mc.mean, rtol=1e-5, atol=1e-6)
        assert_close(mg.var, mc.var, rtol=1e-5, atol=1e-6)
    assert np.isclose(gpu(w, x, mg), cpu(w, x, mc), rtol=1e-4)
    names = {e.op.name for spec in gpu.specializations() for ex in spec.executables() for e in ex.program.eqns}
    assert "batchnorm_train" in names


def test_cuda_kernels_compile_to_ptx():
    for dtype in ("float32", "float64"):
        report = compile_ptx(bn_kernels.__file__, bn_kernels.ptx_signatures(dtype))
        assert report and all(r["target"] and r["entry"] for r in report.values()), report


@pytest.mark.parametrize("call,error,message", [
    (lambda: kn.batchnorm(np.zeros((2, 3, 4)), training=True), kn.ShapeError, "2-d"),
    (lambda: kn.batchnorm(np.zeros((2, 3)), kn.bnmoments(), np.ones(4), training=True), kn.ShapeError,
     "do not fit 3 channels"),
    (lambda: kn.batchnorm(np.zeros((2, 3)), kn.bnmoments(mean=np.zeros(4), var=np.ones(4)), training=True),
     kn.ShapeError, "running mean of shape \\(4,\\) does not fit 3 channels"),
    (lambda: kn.batchnorm(np.zeros((2, 3), np.int64), training=True), kn.ShapeError, "floating-point"),
    (lambda: kn.batchnorm(np.zeros((2, 3)), moments="x"), TypeError, "bnmoments"),
])
def test_bad_input_raises_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("shape", [(3, 2), (5, 3), (3, 2, 3, 1)])
def test_the_library_gradient_counts_odd_channel_sizes(shape):
    """The batchnorm_grad routine (cuDNN's fallback on the host) divided by a count rounded
    to an even number: (3, 2) inputs got a wrong dx."""
    from knetc.ops import normalization
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    channels = shape[1]
    params = np.concatenate([rng.uniform(0.5, 1.5, channels), rng.standard_normal(channels)])
    loss = lambda x: kn.sum(kn.batchnorm(x, None, params, training=True) * dy)
    want = kn.grad(loss)(x)
    got = normalization._grad_impl(x, params, dy, 1e-5, 0)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_moments_take_numpy_creators_as_initialisers():
    # The seed's `meaninit=zeros` translated to np.zeros failed at the first batchnorm
    # (numpy's zeros takes (shape, dtype), Knet's initialisers (dtype, *shape)).
    x = np.random.default_rng(6).standard_normal((5, 3))
    numpy_style = kn.bnmoments(meaninit=np.ones, varinit=np.zeros)
    knet_style = kn.bnmoments(meaninit=kn.ones, varinit=kn.zeros)
    for m in (numpy_style, knet_style):
        kn.batchnorm(x, m, training=True)
    np.testing.assert_array_equal(numpy_style.mean, knet_style.mean)
    np.testing.assert_array_equal(numpy_style.var, knet_style.var)
    assert np.allclose(numpy_style.mean, 0.9 + 0.1 * x.mean(axis=0, keepdims=True))


_BN_WEIGHTS = np.random.default_rng(11).standard_normal((4, 3))


def _bn_cubed(x, m):
    return np.sum(kn.batchnorm(x, m) ** 3 * _BN_WEIGHTS)


def _bn_hvp(x, v, m):
    return np.sum(kn.grad(_bn_cubed)(x, m) * v)


def test_a_gradient_of_batchnorm_with_moments_inside_compiled_code():
    # (a kn.grad inside compiled code: the running statistics were read as numpy arrays from
    # the IR values: "iterating over an array value is not supported")
    rng = np.random.default_rng(12)
    x, v = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    eager_moments, compiled_moments = kn.bnmoments(), kn.bnmoments()
    want = kn.grad(lambda y: _bn_hvp(y, v, eager_moments))(x)
    got = kn.grad(kn.compile(_bn_hvp, target="cpu"))(x, v, compiled_moments)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(compiled_moments.mean, eager_moments.mean, rtol=1e-12)


def _bn_model_loss(model, x, y):
    w, moments, params, v = model
    return kn.nll(kn.batchnorm(x @ w, moments, params) @ v, y)


def test_a_compiled_loss_with_moments_trains_without_tracing_again():
    # (the moments object in the argument was keyed by its text, which its statistics change
    # at every step: each step traced again)
    kn.seed_(1)
    model = [kn.param(8, 6), kn.bnmoments(), kn.Param(kn.bnparams(np.float32, 6)), kn.param(6, 3)]
    rng = np.random.default_rng(13)
    x, y = rng.random((5, 8), dtype=np.float32), rng.integers(0, 3, 5)
    loss = kn.compile(_bn_model_loss, target="cpu")
    kn.adam_(loss, [(model, x, y)] * 5, lr=0.01)
    assert len(list(loss.specializations())) == 1 and loss.retraces == 0
