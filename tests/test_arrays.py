"""Array operations: cat/hcat/vcat/cat1d, reshape, vec, mat, permutedims, transpose/adjoint,
copy, fill_, constructors, bmm and `@`, axpy_/lmul_/rmul_: numpy references, the seeds'
examples (mat sizes, bmm identities), numerical gradients, hypothesis over shapes, compiled
CPU and CUDA (simulator) against eager, PTX for sm_90, and bad input."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import knetc as kn
from numgrad import assert_close, numgrad, numgrads
from ptx import compile_ptx_many


def normal(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ----------------------------------------------------------------------------- concatenation

def test_vcat_joins_the_last_axis_and_hcat_axis_minus_2():
    a, b = normal((3, 2)), normal((3, 4), seed=1)
    assert_close(kn.vcat(a, b), np.concatenate([a, b], axis=-1), rtol=0, atol=0)
    assert_close(kn.vcat(np.ones(2), np.zeros(3), 5.0), np.array([1, 1, 0, 0, 0, 5.0]), rtol=0, atol=0)
    c = normal((4, 3), seed=2)
    assert_close(kn.hcat(a.T, c), np.concatenate([a.T, c], axis=0), rtol=0, atol=0)
    # 1-D inputs are Julia column vectors: hcat makes the matrix whose rows they are here
    u, v = np.arange(3.0), np.arange(3.0, 6.0)
    assert_close(kn.hcat(u, v), np.stack([u, v]), rtol=0, atol=0)
    # cat with dims; fewer dims get leading size-1 axes (Julia's trailing singletons)
    x, y = normal((2, 3, 4)), normal((3, 4), seed=3)
    assert_close(kn.cat(x, y, dims=0), np.concatenate([x, y[None]], axis=0), rtol=0, atol=0)
    assert_close(kn.cat(x, x, x, dims=-2), np.concatenate([x, x, x], axis=1), rtol=0, atol=0)
    assert_close(kn.cat1d(x, y, 2.0), np.concatenate([x.ravel(), y.ravel(), [2.0]]), rtol=0, atol=0)
    assert kn.cat(x, dims=1) is x


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=1, max_size=3), st.data())
def test_cat_matches_numpy_and_its_gradient_slices(shape, data):
    ndim = len(shape)
    axis = data.draw(st.integers(-ndim, ndim - 1))
    sizes = data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=3))
    xs = []
    for k, n in enumerate(sizes):
        s = list(shape)
        s[axis] = n
        xs.append(normal(tuple(s), seed=k))
    expected = np.concatenate(xs, axis=axis)
    assert_close(kn.cat(*xs, dims=axis), expected, rtol=0, atol=0)
    c = normal(expected.shape, seed=9)
    grads = [kn.grad(lambda *xs: kn.sum(kn.cat(*xs, dims=axis) * c), k)(*xs) for k in range(len(xs))]
    split = np.split(c, np.cumsum(sizes)[:-1], axis=axis)
    for g, expected_g, x in zip(grads, split, xs):
        assert_close(g if g is not None else np.zeros_like(x), expected_g, rtol=0, atol=0)


def test_cat_of_many_arrays_and_np_concatenate_on_params():
    xs = [np.full(2, float(i)) for i in range(300)]  # more inputs than one concat op takes
    assert_close(kn.cat1d(*xs), np.concatenate(xs), rtol=0, atol=0)
    g = kn.grad(lambda *xs: kn.sum(kn.cat1d(*xs) * np.arange(600.0)), 299)(*xs)
    np.testing.assert_array_equal(g, [598.0, 599.0])
    w, x = kn.Param(normal((2, 3))), normal((1, 3), seed=1)
    y = kn.diff(lambda: kn.sum(np.concatenate([x, w], axis=0) ** 2))
    assert_close(kn.grad(y, w), 2 * w.value, rtol=1e-15)


def test_cat_gradients_match_numerical():
    a, b = normal((2, 3)), normal((4, 3), seed=1)
    c = normal((6, 3), seed=2)
    f = lambda a, b: np.sum(np.concatenate([a, b]) * c)  # noqa: E731
    got = [kn.grad(lambda a, b: kn.sum(kn.cat(a, b, dims=0) * c), k)(a, b) for k in (0, 1)]
    for g, n in zip(got, numgrads(f, a, b)):
        assert_close(g, n)


# ----------------------------------------------------------------------------- shapes

def test_mat_sizes_from_the_seeds():
    assert kn.mat(np.zeros((10, 3, 4, 4))).shape == (10, 48)       # conv output -> (N, rest)
    assert kn.mat(np.zeros((7, 5, 6)), dims=1).shape == (35, 6)    # RNN (T, B, H) -> (T*B, H)
    assert kn.mat(np.zeros((2, 3, 4)), dims=0).shape == (24, 1)    # Julia's row vector
    assert kn.mat(np.zeros((2, 3, 4)), dims=3).shape == (1, 24)    # Julia's column vector
    assert kn.mat(np.zeros((2, 3, 4)), dims=2).shape == (2, 12)
    assert kn.mat(np.zeros(5)).shape == (5, 1)
    x = normal((2, 3, 4))
    assert_close(kn.mat(x), x.reshape(2, 12), rtol=0, atol=0)
    with pytest.raises(kn.ShapeError, match="dims=4"):
        kn.mat(x, dims=4)


def test_reshape_vec_permutedims_transpose_adjoint():
    x = normal((2, 3, 4))
    assert_close(kn.reshape(x, 4, -1), x.reshape(4, 6), rtol=0, atol=0)
    assert_close(kn.vec(x), x.reshape(-1), rtol=0, atol=0)
    assert_close(kn.permutedims(x, (0, 2, 1)), x.transpose(0, 2, 1), rtol=0, atol=0)
    assert_close(kn.permutedims(x), x.transpose(), rtol=0, atol=0)
    assert_close(kn.permutedims(x, (-1, 0, 1)), x.transpose(2, 0, 1), rtol=0, atol=0)
    # Julia's permutedims(x, p) on the reversed shape: perm[a] = n - p[n-1-a]
    julia_p = [2, 3, 1]
    perm = [3 - julia_p[2 - a] for a in range(3)]
    julia_x = np.asfortranarray(x.transpose())  # the same entries as Julia sees them
    julia_y = np.transpose(julia_x, [p - 1 for p in julia_p])
    assert_close(kn.permutedims(x, perm), julia_y.transpose(), rtol=0, atol=0)
    m = normal((2, 5))
    assert_close(kn.transpose(m), m.T, rtol=0, atol=0)
    assert_close(kn.adjoint(m), m.T, rtol=0, atol=0)
    assert kn.adjoint(np.arange(3.0)).shape == (3, 1)
    with pytest.raises(kn.ShapeError, match="permutation"):
        kn.permutedims(x, (0, 0, 1))
    with pytest.raises(kn.ShapeError, match="cannot reshape"):
        kn.reshape(x, 5, -1)
    with pytest.raises(kn.ShapeError, match="vector or a matrix"):
        kn.adjoint(x)


def test_copy_fill_and_constructors():
    x = normal((2, 3))
    y = kn.copy(x)
    y[0, 0] = 100.0
    assert x[0, 0] != 100.0
    w = kn.Param(x.copy())
    out = kn.diff(lambda: kn.sum(kn.copy(w) * 3))
    np.testing.assert_array_equal(kn.grad(out, w), np.full((2, 3), 3.0))
    kn.fill_(x, 1.5)
    assert np.all(x == 1.5)
    assert kn.zeros(2, 3).shape == (2, 3) and kn.zeros((2, 3), dtype=np.float32).dtype == np.float32
    assert np.all(kn.ones(4) == 1) and kn.ones(1, 2, dtype=np.float32).dtype == np.float32
    s = kn.similar(w)
    assert s.shape == (2, 3) and s.dtype == np.float64
    assert kn.similar(x, 5, dtype=np.float32).shape == (5,)


def test_shape_op_gradients_match_numerical():
    x = normal((2, 3, 4))
    c = normal((4, 6), seed=1)
    f = lambda x: kn.sum(kn.reshape(kn.permutedims(x, (2, 0, 1)), 4, 6) * c) + kn.sum(kn.mat(x) ** 2)  # noqa: E731
    ref = lambda x: np.sum(x.transpose(2, 0, 1).reshape(4, 6) * c) + np.sum(x.reshape(2, 12) ** 2)  # noqa: E731
    assert_close(kn.grad(f)(x), numgrad(ref, x))


# ----------------------------------------------------------------------------- bmm and @

def swap(x):
    return np.swapaxes(x, -1, -2)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 3), max_size=2), st.lists(st.booleans(), min_size=2, max_size=2),
       st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.data())
def test_bmm_matches_numpy_matmul_with_broadcast_batches(batch, flags, m, k, n, data):
    batch_b = [data.draw(st.sampled_from([1, s])) for s in batch]
    trans_a, trans_b = flags
    a = normal(tuple(batch) + ((k, m) if trans_a else (m, k)))
    b = normal(tuple(batch_b) + ((n, k) if trans_b else (k, n)), seed=1)
    expected = np.matmul(swap(a) if trans_a else a, swap(b) if trans_b else b)
    assert_close(kn.bmm(a, b, trans_a=trans_a, trans_b=trans_b), expected, rtol=1e-12, atol=1e-12)
    c = normal(expected.shape, seed=2)
    ref = lambda a, b: np.sum(np.matmul(swap(a) if trans_a else a, swap(b) if trans_b else b) * c)  # noqa: E731
    loss = lambda a, b: kn.sum(kn.bmm(a, b, trans_a=trans_a, trans_b=trans_b) * c)  # noqa: E731
    for argnum, g in enumerate(numgrads(ref, a, b)):
        assert_close(kn.grad(loss, argnum)(a, b), g, rtol=1e-6, atol=1e-8)


def test_bmm_identities_from_the_seeds():
    a, b = normal((5, 2, 3)), normal((5, 3, 4), seed=1)
    c = kn.bmm(a, b)
    assert c.shape == (5, 2, 4)  # Knet: (m,n,b) x (n,k,b) -> (m,k,b), reversed here
    for i in range(5):
        assert_close(c[i], a[i] @ b[i], rtol=1e-12)
    assert_close(kn.bmm(b, a, trans_a=True, trans_b=True), np.swapaxes(c, 1, 2), rtol=1e-12)  # (AB)' = B'A'
    assert_close(kn.bmm(a, np.broadcast_to(np.eye(3), (5, 3, 3)).copy()), a, rtol=1e-12)
    assert_close(kn.bmm(swap(a).copy(), b, trans_a=True), c, rtol=1e-12)
    # Knet's bmm(A, B) on the same bytes: A (m,n,b) is (b,n,m) here; the result is bmm(b, a)
    A, B = a.transpose(), b.transpose()  # what Julia sees: A (3,2,5), B (4,3,5)
    julia = np.stack([B[:, :, i] @ A[:, :, i] for i in range(5)], axis=-1)  # Knet's bmm(B, A): (4,2,5)
    assert_close(kn.bmm(a, b), julia.transpose(), rtol=1e-12)
    # `@` on stacks is bmm (numpy semantics), 1-D @ N-D too
    assert_close(kn.Param(a) @ b, np.matmul(a, b), rtol=1e-12)
    v = normal(3, seed=3)
    assert_close(kn.matmul(v, b), np.matmul(v, b), rtol=1e-12)


def test_bmm_and_matmul_bad_shapes_raise():
    with pytest.raises(kn.ShapeError, match="inner dimensions"):
        kn.bmm(normal((2, 2, 3)), normal((2, 2, 3)))
    with pytest.raises(kn.ShapeError, match="batch axes"):
        kn.bmm(normal((2, 2, 3)), normal((3, 3, 4)))
    with pytest.raises(kn.ShapeError, match="at least 2 dimensions"):
        kn.bmm(normal(3), normal((3, 4)))
    with pytest.raises(kn.ShapeError, match="differ"):
        kn.cat(normal((2, 3)), normal((2, 4)), dims=0)
    with pytest.raises(kn.ShapeError, match="out of range"):
        kn.cat(normal((2, 3)), normal((2, 3)), dims=2)
    with pytest.raises(kn.ShapeError, match="inner dimensions"):
        normal((2, 3)) @ kn.Param(normal((2, 3)))


def bmm_loss(xs):
    """Every trans flag, a broadcast batch axis (w has 1 where a has 2), a 3-d and a 4-d bmm."""
    a, b, c, w = xs
    s = kn.bmm(a, b, trans_b=True)                   # (2, 3, 4, 6)
    t = kn.bmm(s, c, trans_a=True)                   # (2, 3, 6, 5)
    u = kn.bmm(w, t, trans_a=True, trans_b=True)     # w (1, 3, 2, 5): (2, 3, 5, 6) @ ... -> (2, 3, 2, 6)
    v = kn.bmm(kn.reshape(u, 6, 2, 6), kn.reshape(s, 6, 4, 6), trans_b=True)  # (6, 2, 4)
    return kn.sum(u * u) + kn.sum(kn.tanh(v))


def bmm_args():
    return normal((2, 3, 4, 5)), normal((2, 3, 6, 5), seed=1), normal((2, 3, 4, 5), seed=2), normal((1, 3, 5, 2), seed=3)


def small_bmm_loss(xs):
    a, b, c = xs
    return kn.sum(kn.bmm(a, b, trans_b=True) * c)   # b's batch axis broadcast


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_compiled_bmm_is_a_gemm_per_matrix_and_equals_eager(target):
    """Compiled bmm lowers to kernels/bmm.py's batched GEMM call (not a broadcast product
    reduced over k), for the product and both adjoints, with broadcast batch axes. (The
    simulated CUDA GEMMs are slow: a smaller function there.)"""
    loss, xs, calls = ((bmm_loss, bmm_args(), [4, 12]) if target == "cpu" else
                       (small_bmm_loss, (normal((2, 3, 2)), normal((1, 4, 2), seed=1), normal((2, 3, 4), seed=2)),
                        [1, 3]))
    f = kn.compile(loss, target=target)
    for got, want in zip(kn.grad(f)(xs), kn.grad(loss)(xs)):
        assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert_close(f(xs), loss(xs), rtol=1e-12)
    drivers = [open(m.__knetc_path__).read() for m in f.generated_modules()]
    drivers = [d for d in drivers if f"import bmm_{target}" in d]
    # the gradient's program: each product and its 2 adjoints; the call's: the products
    assert sorted(d.count(f"bmm_{target}(") for d in drivers) == calls


def mixed_bmm(a, b, i, j):
    return kn.sum(kn.bmm(a, b)) + kn.sum(kn.bmm(i, j, trans_a=True))


def test_compiled_bmm_of_mixed_floats_and_of_integers_equals_numpy():
    """float32 @ float64 is a float64 GEMM (as numpy); integers, which BLAS does not
    multiply, keep the product-and-sum kernel and stay exact."""
    a, b = normal((2, 3, 4)).astype(np.float32), normal((2, 4, 5), seed=1)
    i = np.arange(24, dtype=np.int64).reshape(2, 4, 3)
    j = np.arange(40, dtype=np.int64).reshape(2, 4, 5) - 20
    got = kn.compile(mixed_bmm, target="cpu")(a, b, i, j)
    want = np.sum(np.matmul(a, b)) + np.sum(np.matmul(swap(i), j))
    assert_close(got, want, rtol=1e-12)


# ----------------------------------------------------------------------------- BLAS-1 in place

def test_axpy_lmul_rmul_in_place():
    x, y = normal(4), normal(4, seed=1)
    y0 = y.copy()
    assert kn.axpy_(2.0, x, y) is y
    assert_close(y, y0 + 2 * x, rtol=1e-15)
    kn.lmul_(3.0, y)
    assert_close(y, 3 * (y0 + 2 * x), rtol=1e-15)
    w = kn.Param(x.copy())
    kn.rmul_(w, 0.5)
    assert_close(w.value, x * 0.5, rtol=0, atol=0)
    kn.axpy_(-1.0, x, w)
    assert_close(w.value, -x * 0.5, rtol=1e-15)
    with pytest.raises(TypeError, match="functional form"):
        kn.diff(lambda: kn.sum(kn.axpy_(1.0, x, w)))


# ----------------------------------------------------------------------------- compiled

def array_loss(ws):
    x, y, a, b = ws
    joined = kn.cat(kn.tanh(x), y * 2, dims=1)                  # (3, 6)
    h = kn.hcat(kn.vec(x[0, :2]), y[1] * x[2, 1:3])             # 1-D rows -> (2, 2)
    v = kn.vcat(x, y)                                          # (3, 6)
    p = kn.permutedims(kn.reshape(x, 3, 2, 2), (2, 0, 1))      # (2, 3, 2)
    c = kn.bmm(a, b, trans_b=True) + a @ kn.permutedims(b, (0, 2, 1))
    return (kn.sum(joined ** 2) + kn.sum(h) + kn.sum(v * joined) + kn.sum(p * p[:, :, ::-1])
            + kn.sum(kn.mat(c) ** 2) + kn.sum(kn.cat1d(x, y) ** 3) + kn.sum(kn.adjoint(x) @ x))


def args():
    return normal((3, 4)), normal((3, 2), seed=1), normal((2, 3, 4), seed=2), normal((2, 5, 4), seed=3)


COMPILED = {}


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_compiled_array_operations_equal_eager(target):
    f = COMPILED.setdefault(target, kn.compile(array_loss, target=target))
    xs = args()
    assert_close(f(xs), array_loss(xs), rtol=1e-12)
    for got, want in zip(kn.grad(f)(xs), kn.grad(array_loss)(xs)):
        assert_close(got, want, rtol=1e-10, atol=1e-12)
    numerical = numgrads(lambda *v: float(array_loss(v)), *xs)
    for got, want in zip(kn.grad(array_loss)(xs), numerical):
        assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_compiled_cat_is_one_fused_kernel_and_compiles_to_ptx():
    f = COMPILED.setdefault("cuda", kn.compile(array_loss, target="cuda"))
    kn.grad(f)(args())
    modules = {m.__knetc_path__: m for m in f.generated_modules()}
    sources = "".join(open(path).read() for path in modules)
    assert "pad_static pad_static add" in sources  # cat: each output entry reads its input
    reports = compile_ptx_many([(path, m.PTX_SIGNATURES) for path, m in modules.items() if hasattr(m, "PTX_SIGNATURES")])
    assert sum(len(r) for r in reports) >= 6
    assert all(e["target"] and e["entry"] for r in reports for e in r.values())


def test_zeros_and_ones_take_knets_element_type_first_and_serve_as_initialisers():
    z = kn.zeros(np.float32, 2, 3)
    assert z.shape == (2, 3) and z.dtype == np.float32 and not z.any()
    o = kn.ones(np.float32, (4,))
    assert o.dtype == np.float32 and (o == 1).all()
    assert kn.zeros(3).dtype == np.float64 and kn.ones(2, 2, dtype=np.float32).dtype == np.float32
    with pytest.raises(TypeError, match="given twice"):
        kn.zeros(np.float32, 2, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    moments = kn.bnmoments(meaninit=kn.zeros, varinit=kn.ones)
    y = kn.batchnorm(x, moments, training=True)
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(moments.mean.ravel(), 0.1 * x.mean(0), rtol=1e-5)  # from zeros, momentum 0.1
    rnn = kn.RNN(3, 4, rnn_type="lstm", binit=kn.zeros, finit=kn.ones)
    np.testing.assert_array_equal(kn.rnnparam(rnn, 0, 1, 1), np.ones(4))  # the forget gate's bias: finit
    np.testing.assert_array_equal(kn.rnnparam(rnn, 0, 0, 1), np.zeros(4))  # the input gate's: binit


EMPTY_CATS = textwrap.dedent("""
    import numpy as np
    import knetc as kn

    def joins(x):
        return kn.cat(x, x, dims=0), kn.vcat(x, x), kn.hcat(x, x), kn.cat1d(x, x)

    x = np.zeros((0, 3), np.float32)
    compiled = kn.compile(joins, target="cpu", cache=False)(x)
    for got, want in zip(compiled, joins(x)):
        assert got.shape == want.shape and got.dtype == want.dtype, (got, want)
    print("joined")
""")


def test_compiled_joins_of_empty_arrays_finish(tmp_path):
    # Every part empty along the joined axis: the decomposition skipped them all and gave
    # nothing, so the composite op stayed and the compiler rewrote it forever.
    program = tmp_path / "empty_cats.py"
    program.write_text(EMPTY_CATS)
    done = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "KNETC_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "joined"


def test_mat_of_a_number_says_what_to_write():
    # (its message named a dims=-1 the caller never gave)
    with pytest.raises(kn.ShapeError, match="0-d"):
        kn.mat(np.float64(3.0))
    assert kn.mat(np.float64(3.0), dims=0).shape == (1, 1)
