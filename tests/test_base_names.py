"""Names the seeds list that are Julia Base functions or older Knet spellings (ops/base.py,
train/optimizers.py): values against numpy, gradients against numerical ones, compiled
against eager; Julia's mean(f, x); Knet's optimizers(model, otype; o...) and Sgd."""
import numpy as np
import pytest

import knetc as kn
from numgrad import assert_close, numgrad


def normal(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


REDUCTIONS = {"sumabs": (kn.sumabs, lambda a, ax: np.abs(a).sum(axis=ax, keepdims=ax is not None)),
              "sumabs2": (kn.sumabs2, lambda a, ax: (a * a).sum(axis=ax, keepdims=ax is not None)),
              "maxabs": (kn.maxabs, lambda a, ax: np.abs(a).max(axis=ax, keepdims=ax is not None)),
              "minabs": (kn.minabs, lambda a, ax: np.abs(a).min(axis=ax, keepdims=ax is not None)),
              "countnz": (kn.countnz, lambda a, ax: (a != 0).sum(axis=ax, keepdims=ax is not None))}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_older_reductions_match_numpy_eager_and_compiled(name):
    fn, reference = REDUCTIONS[name]
    a = normal((3, 4), 1)
    a[0, 1] = 0.0
    for dims in (None, 0, 1):
        np.testing.assert_allclose(fn(a, dims), reference(a, dims), rtol=1e-14)
        compiled = kn.compile(lambda x, dims=dims: fn(x, dims), target="cpu")
        np.testing.assert_allclose(compiled(a), reference(a, dims), rtol=1e-14)
    assert np.asarray(kn.countnz(a)).dtype.kind == "i"
    if name != "countnz":
        assert_close(kn.grad(lambda x: fn(x))(a), numgrad(lambda x: float(fn(x)), a), rtol=1e-6, atol=1e-8)


def test_vecnorm_first_isapprox_and_mean_of_a_function():
    a = normal((2, 3), 2)
    assert float(kn.vecnorm(a)) == pytest.approx(np.linalg.norm(a.ravel()))
    assert float(kn.vecnorm(a, 1)) == pytest.approx(np.abs(a).sum())
    assert float(kn.first(a)) == a[0, 0]
    np.testing.assert_array_equal(kn.grad(lambda x: kn.first(x) * 3)(a), np.where(np.arange(6).reshape(2, 3) == 0, 3, 0))
    assert kn.isapprox(a, a * (1 + 1e-10)) and not kn.isapprox(a, a * (1 + 1e-3))
    assert kn.isapprox(a, a + 0.01, atol=1) and not kn.isapprox(a, a + 0.01, rtol=1e-6)
    assert kn.isapprox(a.astype(np.float32), (a * (1 + 1e-5)).astype(np.float32))  # float32's sqrt(eps)
    np.testing.assert_allclose(kn.mean(kn.abs, a), np.abs(a).mean())
    np.testing.assert_allclose(kn.mean(kn.abs, a, dims=1), np.abs(a).mean(axis=1, keepdims=True))
    np.testing.assert_allclose(kn.mean(kn.abs, a, 0), np.abs(a).mean(axis=0, keepdims=True))
    with pytest.raises(TypeError, match="once"):
        kn.mean(a, 0, dims=1)


def test_copyto_rand_and_randn_fill_in_place():
    dest, w = np.zeros((2, 3)), kn.Param(np.zeros(3))
    assert kn.copyto_(dest, np.arange(6.0).reshape(2, 3)) is dest and dest[1, 2] == 5.0
    kn.copyto_(w, np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(w.value, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        kn.copyto_(dest, np.ones(4))
    kn.seed_(3)
    a = kn.rand_(np.empty(1000, np.float32))
    assert a.dtype == np.float32 and 0 <= a.min() and a.max() < 1 and abs(a.mean() - 0.5) < 0.05
    kn.seed_(3)
    np.testing.assert_array_equal(kn.rand_(np.empty(1000, np.float32)), a)  # knetc's generator: seed_ repeats it
    b = kn.randn_(np.empty(4000))
    assert abs(b.mean()) < 0.1 and abs(b.std() - 1) < 0.1


def test_optimizers_mirror_the_model_and_sgd_is_the_older_name():
    model = {"w": kn.Param(np.ones(3)), "layers": [(np.zeros(2), "relu"), np.ones((2, 2))]}
    opts = kn.optimizers(model, kn.Adam, lr=0.1, beta1=0.8)
    assert isinstance(opts["w"], kn.Adam) and opts["w"].lr == 0.1 and opts["w"].beta1 == 0.8
    assert isinstance(opts["layers"][0], tuple) and opts["layers"][0][1] is None
    assert isinstance(opts["layers"][0][0], kn.Adam) and opts["layers"][0][0] is not opts["layers"][1]
    w = kn.Param(np.ones(2))
    kn.update_(w, np.ones(2), kn.optimizers(w, kn.Sgd, lr=0.5))
    np.testing.assert_array_equal(w.value, [0.5, 0.5])
    assert kn.Sgd is kn.SGD
