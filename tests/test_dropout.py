"""dropout: identity outside diff, masks scaled by 1/(1-p), seeds, fresh masks per call
(eager and compiled), the training decision in compiled code, gradients, PTX."""
import numpy as np
import pytest

import knetc as kn
from knetc.kernels import dropout as dropout_kernels
from knetc.ops.normalization import _mask_impl

from numgrad import assert_close, numgrad
from ptx import compile_ptx


def test_identity_outside_diff_and_when_asked():
    x = np.random.default_rng(0).standard_normal((20, 30))
    assert kn.dropout(x, 0.5) is x
    assert kn.dropout(x, 0.5, drop=False) is x
    assert kn.dropout(x, 0.0, drop=True) is x


def test_drops_with_probability_p_and_scales_the_rest():
    x = np.random.default_rng(1).standard_normal((200, 100)) + 5
    for p in (0.2, 0.5, 0.9):
        y = kn.dropout(x, p, drop=True)
        kept = y != 0
        assert abs(1 - kept.mean() - p) < 0.02
        assert_close(y[kept], x[kept] / (1 - p))
    assert np.all(kn.dropout(x, 1.0, drop=True) == 0)


def test_inside_diff_it_drops_and_the_gradient_is_the_mask():
    x = kn.Param(np.random.default_rng(2).standard_normal((10, 10)) + 3)
    y = kn.diff(lambda: kn.sum(kn.dropout(x, 0.4)))
    g = kn.grad(y, x)
    assert set(np.unique(g)) <= {0.0, 1 / 0.6} and 0 < (g == 0).mean() < 1
    assert np.isclose(kn.value(y), np.sum(g * x.value))


def test_seed_gives_the_same_mask_and_no_seed_fresh_ones():
    x = np.ones((50, 40))
    a, b = kn.dropout(x, 0.5, drop=True, seed=3), kn.dropout(x, 0.5, drop=True, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, kn.dropout(x, 0.5, drop=True, seed=4))
    c, d = kn.dropout(x, 0.5, drop=True), kn.dropout(x, 0.5, drop=True)
    assert not np.array_equal(c, d)


def test_numerical_gradient_with_a_fixed_seed():
    x = np.random.default_rng(4).standard_normal((4, 5))

    def f(x):
        return kn.sum(kn.dropout(x * x, 0.3, drop=True, seed=11) ** 2)
    assert_close(kn.grad(f)(x), numgrad(f, x), rtol=1e-6, atol=1e-8)


def test_cpu_routine_matches_the_numpy_reference():
    state_ref = np.array([123456789], np.int64)
    state_cpu = state_ref.copy()
    for seed, salt in [(0, 0), (0, 5), (7, 0)]:
        expected = _mask_impl(state_ref, (3, 7), "float32", 0.25, seed, salt)
        out = np.empty((3, 7), np.float32)
        dropout_kernels.dropout_mask_cpu(state_cpu, out, (3, 7), "float32", 0.25, seed, salt)
        np.testing.assert_array_equal(out, expected)
    assert state_cpu[0] == state_ref[0] == 123456789 + 2  # unseeded masks advance the counter


def loss(x):
    return kn.sum(kn.dropout(kn.tanh(x), 0.5) * x)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_compiled_follows_the_mode(target):
    x = np.random.default_rng(5).standard_normal((8, 16))
    compiled = kn.compile(loss, target=target)
    assert np.isclose(compiled(x), np.sum(np.tanh(x) * x))  # a plain call: no dropout
    g1, g2 = kn.grad(compiled)(x), kn.grad(compiled)(x)  # a gradient: dropout, fresh masks
    assert not np.array_equal(g1, g2)
    mask = (g1 != 0)  # d/dx of mask*tanh(x)*x, where the mask keeps
    assert 0.2 < mask.mean() < 0.8
    kept = g1[mask]
    assert_close(kept, (2 * ((1 - np.tanh(x) ** 2) * x + np.tanh(x)))[mask])
    px = kn.Param(x)  # inside diff: the compiled forward program drops
    y = kn.diff(lambda: compiled(px))
    assert not np.isclose(kn.value(y), np.sum(np.tanh(x) * x))


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_compiled_seeded_dropout_equals_eager(target):
    x = np.random.default_rng(6).standard_normal((6, 7)).astype(np.float32)

    def f(x):
        return kn.sum(kn.dropout(x, 0.3, seed=5) * x) + kn.sum(kn.dropout(x, 0.6, seed=9))
    compiled = kn.compile(f, target=target)
    g, value = kn.gradloss(compiled)(x)
    ge, ve = kn.gradloss(f)(x)
    assert np.isclose(value, ve, rtol=1e-5)
    assert_close(g, ge, rtol=1e-6)


def test_two_unseeded_dropouts_in_one_program_differ():
    x = np.ones((30, 30))

    def f(x):
        return kn.sum(kn.dropout(x, 0.5) * kn.dropout(x, 0.5) * x)
    g = kn.grad(kn.compile(f, target="cpu"))(x)
    # the same mask twice keeps half of the entries; two independent masks keep a quarter
    assert np.mean(g != 0) < 0.4


def test_cuda_kernels_compile_to_ptx():
    for dtype in ("float32", "float64"):
        report = compile_ptx(dropout_kernels.__file__, dropout_kernels.ptx_signatures(dtype))
        assert report and all(r["target"] and r["entry"] for r in report.values()), report


def test_bad_input():
    with pytest.raises(ValueError, match="p=1.5"):
        kn.dropout(np.ones(3), 1.5, drop=True)
    with pytest.raises(ValueError, match="seed"):
        kn.dropout(np.ones(3), 0.5, drop=True, seed=-1)
    with pytest.raises(kn.ShapeError, match="floating-point"):
        kn.dropout(np.ones(3, np.int64), 0.5, drop=True)


def test_masks_do_not_depend_on_how_the_target_writes_the_ops_before_them(monkeypatch):
    """A GPU with cuDNN compiles batchnorm as one op, a CPU as several: the dropout after it
    must draw the same mask from the same counter (found on an H200: the masks differed)."""
    from knetc.ops import normalization
    x = np.random.default_rng(3).random((6, 8), dtype=np.float32)

    def masked(x):
        return kn.dropout(kn.batchnorm(x, training=True), 0.5, drop=True)

    def masked_too(x):  # the same function, compiled apart (each compile traces anew)
        return kn.dropout(kn.batchnorm(x, training=True), 0.5, drop=True)
    kn.seed_(5)
    several_ops = np.asarray(kn.compile(masked, target="cpu")(x))
    monkeypatch.setattr(normalization, "WHOLE_LAYER", True)  # batchnorm as one op, as on a GPU
    kn.seed_(5)
    one_op = kn.compile(masked_too, target="cpu")
    dropped = np.asarray(one_op(x)) == 0
    names = {e.op.name for s in one_op.specializations() for ex in s.executables() for e in ex.program.eqns}
    assert "batchnorm_train" in names  # (the one-op design was taken)
    np.testing.assert_array_equal(dropped, several_ops == 0)
