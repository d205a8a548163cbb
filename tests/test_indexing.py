"""Indexing: x[idx] with every index kind (ints, negative ints, slices, ranges, None,
Ellipsis, integer arrays with repeats, boolean and 0/1 masks, tuples of them), the
functional kn.setindex and in-place x[idx] = v, gradients (scatter-add for repeats),
compiled CPU and CUDA (simulator) against eager, and PTX for sm_90."""
import numpy as np
import pytest

import knetc as kn
from knetc.kernels import indexing as kernels
from numgrad import assert_close, numgrad
from ptx import compile_ptx, compile_ptx_many


def normal(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


X = normal((4, 5, 3))
MASK = X[:, :, 0] > 0.2
INDEX_KINDS = {
    "int": 2,
    "negative int": -1,
    "tuple of ints (CartesianIndex)": (1, -2, 0),
    "slice": slice(1, 3),
    "negative step": (slice(None), slice(None, None, -2)),
    "range": range(1, 4),
    "range with step": (slice(None), range(4, 0, -2)),
    "range of negatives": range(-3, 0),
    "range not a progression once wrapped": range(-1, 2),
    "Ellipsis": (Ellipsis, 1),
    "Ellipsis middle": (0, Ellipsis, slice(0, 2)),
    "newaxis": (None, slice(1, 3), None, 0),
    "empty slice": slice(2, 2),
    "integer array with repeats": np.array([3, 0, 3, -1]),
    "integer list": [1, 1, 2],
    "2-d integer array": np.array([[0, 1], [1, 3]]),
    "two integer arrays": (np.array([0, 2, 2]), np.array([1, 4, 1])),
    "integer array after a slice": (slice(None), np.array([4, 4, 0])),
    "arrays separated by a slice": (np.array([0, 1]), slice(None), np.array([2, 0])),
    "boolean mask": MASK,
    "boolean on one axis": (slice(None), np.array([True, False, True, True, False])),
    "0/1 float mask": (MASK.astype(np.float64)),
    "mixed int and array": (1, np.array([0, 0, 4])),
}


@pytest.mark.parametrize("name", sorted(INDEX_KINDS))
def test_getindex_matches_numpy_and_numerical_gradient(name):
    index = INDEX_KINDS[name]
    np_index = tuple(i.astype(bool) if isinstance(i, np.ndarray) and i.dtype == np.float64 else i
                     for i in (index if isinstance(index, tuple) else (index,)))
    np_index = tuple(np.asarray(list(i)) if isinstance(i, range) else i for i in np_index)
    expected = X[np_index]
    got = kn.getindex(X, index)
    assert_close(got, expected, rtol=0, atol=0)
    w = kn.Param(X.copy())
    assert_close(w[index], expected, rtol=0, atol=0)
    c = normal(expected.shape, seed=1)
    y = kn.diff(lambda: kn.sum(w[index] * c))
    g = kn.grad(y, w)
    assert_close(g if g is not None else np.zeros_like(X), numgrad(lambda x: np.sum(x[np_index] * c), X))


def test_repeated_indices_add_their_gradients():
    x = np.arange(4.0)
    g = kn.grad(lambda x: kn.sum(x[np.array([1, 1, 3, 1])]))(x)
    np.testing.assert_array_equal(g, [0, 3, 0, 1])


def test_higher_order_gradient_through_gather():
    x = np.array([0.5, -1.0, 2.0])
    idx = np.array([2, 2, 0])
    f = lambda x: kn.sum(x[idx] ** 3)  # noqa: E731
    h = kn.grad(lambda x: kn.sum(kn.grad(f)(x) * np.array([1.0, 2.0, 3.0])))(x)
    # grad f = 3 x^2 * counts; d/dx of sum(c * 3 x^2 counts) = 6 x counts c
    np.testing.assert_allclose(h, 6 * x * np.array([1, 0, 2]) * np.array([1.0, 2.0, 3.0]), rtol=1e-12)


@pytest.mark.parametrize("index, message", [
    ((0, 0, 0, 0), "too many|dimensions"),
    (7, "out of bounds"),
    ((slice(None), -6), "out of bounds"),
    (np.array([0, 4]), "out of bounds"),
    ((slice(None), np.array([0, -9])), "index -9 is out of bounds for axis 1"),
    (np.array([0.5, 1.0]), "mask"),
    ((Ellipsis, 0, Ellipsis), "Ellipsis"),
    (True, "bool"),
    ("a", "not a valid index"),
])
def test_bad_indices_raise_index_errors(index, message):
    with pytest.raises(IndexError, match=message):
        kn.getindex(X, index)


# ----------------------------------------------------------------------------- setindex

SET_CASES = [
    ((slice(None), 1), lambda s: normal(s, seed=2)),
    ((slice(1, 3), Ellipsis, 0), lambda s: normal(s[-1:], seed=3)),  # v broadcasts
    (np.array([2, 0, 2]), lambda s: normal(s, seed=4)),                 # repeats: the last wins
    (MASK, lambda s: normal(s, seed=5)),
    ((-1, range(0, 5, 2)), lambda s: 7.0),
]


@pytest.mark.parametrize("case", range(len(SET_CASES)))
def test_setindex_is_functional_and_differentiable_in_x_and_v(case):
    index, make_v = SET_CASES[case]
    target_shape = X[index if not isinstance(index, tuple) else tuple(
        np.asarray(list(i)) if isinstance(i, range) else i for i in index)].shape
    v = make_v(target_shape)
    np_index = index if not isinstance(index, tuple) else tuple(
        np.asarray(list(i)) if isinstance(i, range) else i for i in index)

    def reference(x, v):
        y = x.copy()
        y[np_index] = v
        return y
    x = X.copy()
    out = kn.setindex(x, index, v)
    assert_close(out, reference(X, v), rtol=0, atol=0)
    np.testing.assert_array_equal(x, X)  # not changed
    c = normal(X.shape, seed=6)
    loss = lambda x, v: kn.sum(kn.setindex(x, index, v) * c)  # noqa: E731
    assert_close(kn.grad(loss, 0)(X, v), numgrad(lambda x: np.sum(reference(x, v) * c), X))
    if not isinstance(v, float):
        assert_close(kn.grad(loss, 1)(X, v), numgrad(lambda v: np.sum(reference(X, v) * c), v))


def overwrite_specials(x):
    return kn.setindex(x, (slice(0, 2),), 0.0), kn.setindex(x, np.array([2, 3]), -1.0)


@pytest.mark.parametrize("run", ["eager", "compiled"])
def test_setindex_overwrites_inf_and_nan(run):
    # setindex blended x * keep + v: inf * 0 left NaN where numpy writes v.
    x = np.array([np.inf, np.nan, -np.inf, np.nan, 4.0])
    fn = overwrite_specials if run == "eager" else kn.compile(overwrite_specials, target="cpu", cache=False)
    by_slice, by_positions = fn(x)
    np.testing.assert_array_equal(by_slice, [0.0, 0.0, -np.inf, np.nan, 4.0])
    np.testing.assert_array_equal(by_positions, [np.inf, np.nan, -1.0, -1.0, 4.0])


def test_in_place_assignment_on_arrays_and_params_outside_diff():
    w = kn.Param(X.copy())
    w[0, 1:3] = 5.0
    w[np.array([1, 1])] = -1.0
    expected = X.copy()
    expected[0, 1:3] = 5.0
    expected[np.array([1, 1])] = -1.0
    np.testing.assert_array_equal(w.value, expected)
    a = X.copy()
    kn.setindex_(a, (Ellipsis, range(2)), 0.0)
    assert np.all(a[..., :2] == 0) and np.all(a[..., 2] == X[..., 2])
    kn.fill_(w, 2.5)
    assert np.all(w.value == 2.5)


def test_assignment_inside_diff_points_to_functional_setindex():
    w = kn.Param(X.copy())

    def loss():
        y = w * 2
        y[0] = 0.0
        return kn.sum(y)
    with pytest.raises(TypeError, match="kn.setindex"):
        kn.diff(loss)

    def loss_param():
        w[0] = 0.0
        return kn.sum(w)
    with pytest.raises(TypeError, match="kn.setindex"):
        kn.diff(loss_param)


def mutate(x):
    x[0] = 1.0
    return kn.sum(x)


def boolean_mask_of_a_value(x):
    return kn.sum(x[x > 0])


def setindex_at_a_value(x, i):
    return kn.sum(kn.setindex(x, i, 0.0))


def test_compiled_assignment_and_value_masks_give_clear_compile_errors():
    with pytest.raises(kn.CompileError, match="kn.setindex"):
        kn.compile(mutate, target="cpu")(X)
    with pytest.raises(kn.CompileError, match="multiply by the mask"):
        kn.compile(boolean_mask_of_a_value, target="cpu")(X)
    with pytest.raises(kn.CompileError, match="known when compiling"):
        kn.compile(setindex_at_a_value, target="cpu")(X, np.array([0, 1]))


# ----------------------------------------------------------------------------- compiled

IDX = np.array([3, 0, 3, 1])


def static_loss(xv):
    x, v = xv
    a = kn.tanh(x[1:3, ::-2]) ** 2                      # slices, negative step
    b = x[..., None][-1, 0] * x[0, :, 2][None, :3, None]  # Ellipsis, None, ints
    c = x.T[1, range(1, 5, 2)]                           # a range on a transposed value
    d = kn.setindex(x, (slice(None), 0), v)               # functional setindex (fused)
    return kn.sum(a) + kn.sum(b) + kn.sum(c * 3) + kn.sum(d * d)


def array_loss(xv, i):
    x, v = xv
    a = x[IDX] ** 2                       # constant integer array, repeats
    b = x[:, i] * 3                       # integer array argument (a compiled value)
    c = x[MASK]                           # constant boolean mask
    d = kn.setindex(x, np.array([2, 2, 0]), v[0])  # scatter, the last repeat wins
    return kn.sum(a) + kn.sum(b ** 2) + kn.sum(c) + kn.sum(d ** 3)


COMPILED = {}


def compiled(fn, target):
    return COMPILED.setdefault((fn.__name__, target), kn.compile(fn, target=target))


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_compiled_indexing_equals_eager(target):
    x, v = normal((4, 5, 3), seed=7), normal((4, 3), seed=8)
    f = compiled(static_loss, target)
    assert_close(f((x, v)), static_loss((x, v)), rtol=1e-12)
    for got, want in zip(kn.grad(f)((x, v)), kn.grad(static_loss)((x, v))):
        assert_close(got, want, rtol=1e-10, atol=1e-12)
    i = np.array([4, 0, 4])
    g = compiled(array_loss, target)
    assert_close(g((x, v), i), array_loss((x, v), i), rtol=1e-12)
    for got, want in zip(kn.grad(g)((x, v), i), kn.grad(array_loss)((x, v), i)):
        assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert_close(kn.grad(array_loss)((x, v), i)[0], numgrad(lambda x: float(array_loss((x, v), i)), x),
                 rtol=1e-6, atol=1e-7)
    assert_close(kn.grad(static_loss)((x, v))[1], numgrad(lambda v: float(static_loss((x, v))), v),
                 rtol=1e-6, atol=1e-7)


def embed_loss(table, ids):
    return kn.sum(table[ids] ** 2)


def computed_index_loss(x):
    return kn.sum(x[:, kn.argmax(x, dims=1).reshape(-1) + 1])


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_out_of_range_indices_raise_before_anything_runs(target):
    """A gather's index array is range-checked before the kernels run, as numpy checks it:
    a CUDA kernel cannot raise and read 0 for such an index. A training step with a bad
    index raises and leaves the parameters and optimizer state as they were."""
    table = kn.Param(normal((4, 3), seed=9))
    f = compiled(embed_loss, target)
    for ids, bad in ((np.array([[0, 4]]), 4), (np.array([[-5, 1]]), -5)):
        with pytest.raises(IndexError, match=f"index {bad} is out of bounds for axis 0 with size 4"):
            f(table, ids)
    ids = np.array([[3, -1], [0, 0]])
    assert_close(f(table, ids), embed_loss(table.value, ids), rtol=1e-12)
    optimizer = kn.Adam(lr=0.1)
    y = kn.diff(f, table, np.array([[0, 1]]))
    kn.update_([table], [kn.grad(y, table)], [optimizer])
    weights, moments = table.value.copy(), (optimizer.fstm.copy(), optimizer.scndm.copy(), optimizer.t)
    with pytest.raises(IndexError):
        y = kn.diff(f, table, np.array([[1, 7]]))
        kn.update_([table], [kn.grad(y, table)], [optimizer])
    np.testing.assert_array_equal(table.value, weights)
    np.testing.assert_array_equal(optimizer.fstm, moments[0])
    np.testing.assert_array_equal(optimizer.scndm, moments[1])
    assert optimizer.t == moments[2]
    # indices computed inside: the CPU's gather raises in its kernel, CUDA refuses to compile
    x = np.array([[9.0, 0, 0, 0], [0, 0, 9, 0], [0, 9, 0, 0]])  # argmax + 1 in range
    if target == "cpu":
        assert_close(compiled(computed_index_loss, target)(x), computed_index_loss(x), rtol=1e-12)
        with pytest.raises(IndexError):
            compiled(computed_index_loss, target)(x[:, ::-1].copy())  # argmax 3: index 4
    else:
        with pytest.raises(kn.CompileError, match="cannot be range-checked before the CUDA kernels run"):
            compiled(computed_index_loss, target)(x)


def test_static_indexing_is_fused_into_kernels():
    f = compiled(static_loss, "cpu")
    kn.gradloss(f)((normal((4, 5, 3)), normal((4, 3))))
    sources = "".join(open(m.__file__).read() for m in f.generated_modules())
    assert "index_static tanh" in sources  # the slice is read inside the tanh kernel
    assert " if " in sources and "pad_static" in sources  # the adjoint writes zeros around dy
    assert "take" not in sources  # no gather for static indices


def test_generated_and_library_cuda_kernels_compile_to_ptx_for_sm90(tmp_path):
    x, v, i = normal((4, 5, 3), seed=7), normal((4, 3), seed=8), np.array([4, 0, 4])
    for fn, args in ((static_loss, ((x, v),)), (array_loss, ((x, v), i))):
        kn.gradloss(compiled(fn, "cuda"))(*args)
    modules = {m.__knetc_path__: m for fn in (static_loss, array_loss)
               for m in compiled(fn, "cuda").generated_modules()}
    reports = compile_ptx_many([(path, m.PTX_SIGNATURES) for path, m in modules.items() if hasattr(m, "PTX_SIGNATURES")])
    assert sum(len(r) for r in reports) >= 4
    assert all(e["target"] and e["entry"] for r in reports for e in r.values())
    # kernels/indexing.py: one alias per (kernel, dtype), since compile_ptx takes one signature a name
    aliases, signatures = [], {}
    for name, sigs in kernels.PTX_SIGNATURES.items():
        for k, sig in enumerate(sigs):
            aliases.append(f"{name}_{k} = indexing.{name}")
            signatures[f"{name}_{k}"] = sig
    module = tmp_path / "indexing_kernels.py"
    module.write_text("from knetc.kernels import indexing\n" + "\n".join(aliases) + "\n")
    report = compile_ptx(module, signatures)
    assert set(report) == set(signatures) and all(e["target"] and e["entry"] for e in report.values())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_argsort_routines_cpu_and_cuda_against_numpy(dtype):
    from numba import cuda
    rng = np.random.default_rng(3)  # 3 rows of 150: several blocks of 256 threads, ties and NaNs
    x = rng.integers(0, 40, (3, 150)).astype(dtype)
    x[0, ::7], x[2, 3::11] = np.nan, -np.inf
    expected, cpu_out = np.argsort(x, axis=-1, kind="stable"), np.empty(x.shape, np.int64)
    kernels.argsort_cpu(x, cpu_out)
    np.testing.assert_array_equal(cpu_out, expected)
    device_out = cuda.device_array(x.shape, np.int64)
    kernels.argsort_cuda(cuda.to_device(x), device_out)
    np.testing.assert_array_equal(device_out.copy_to_host(), expected)


@pytest.mark.parametrize("fn", ["take", "scatter_add"])
def test_library_routines_cpu_and_cuda_against_numpy(fn):
    from numba import cuda
    x, idx = normal((2, 4, 3), seed=9), np.array([3, -1, 0, 3, 2])
    if fn == "take":
        expected = np.take(x, idx, axis=1)
        args, params = (x, idx), dict(axis=1)
        cpu_out = np.empty(expected.shape)
        kernels.take_cpu(*args, cpu_out, **params)
    else:
        dy = normal((2, 5, 3), seed=10)
        expected = np.zeros((2, 4, 3))
        np.add.at(expected, (slice(None), idx % 4), dy)
        args, params = (dy, idx), dict(axis=1, size=4)
        cpu_out = np.empty(expected.shape)
        kernels.scatter_add_cpu(*args, cpu_out, **params)
    np.testing.assert_allclose(cpu_out, expected, rtol=1e-12)
    device_out = cuda.device_array(expected.shape)
    getattr(kernels, f"{fn}_cuda")(*[cuda.to_device(a) for a in args], device_out, **params)
    np.testing.assert_allclose(device_out.copy_to_host(), expected, rtol=1e-12)
    with pytest.raises(IndexError):
        bad = np.array([0, 4])
        if fn == "take":
            kernels.take_cpu(x, bad, np.empty((2, 2, 3)), axis=1)
        else:
            kernels.scatter_add_cpu(normal((2, 2, 3)), bad, np.empty((2, 4, 3)), axis=1, size=4)


def pairwise_index_arrays(x, i, j):
    return kn.sum(x[i, j])


def pairwise_by_flat_positions(x, i, j):
    return kn.sum(kn.reshape(x, -1)[i * x.shape[1] + j])


def test_two_index_array_arguments_are_refused_with_the_flat_form_as_the_way():
    """x[i, j] with argument arrays (numpy's pairwise gather) is refused at the user's line,
    naming the restriction rather than calling the arguments "computed"; the hint's flat form
    computes it, gradient included."""
    x, i, j = normal((3, 4), seed=11), np.array([0, 2, -1]), np.array([1, 1, 3])
    with pytest.raises(kn.CompileError) as info:
        kn.compile(pairwise_index_arrays, target="cpu")(x, i, j)
    text = str(info.value)
    assert "must be the only non-':' index" in text and "test_indexing.py" in text and "i * x.shape[1] + j" in text
    flat = kn.compile(pairwise_by_flat_positions, target="cpu")
    i = i % 3  # (the flat form needs non-negative rows)
    assert_close(flat(x, i, j), x[i, j].sum(), rtol=1e-12)
    assert_close(kn.grad(flat)(x, i, j), kn.grad(pairwise_index_arrays)(x, i, j), rtol=1e-12)


def test_an_empty_list_index_selects_nothing_as_numpy():
    a = np.arange(12.0).reshape(3, 4)
    for x in (kn.Param(a), kn.KnetArray(a.astype(np.float32))):
        got = np.asarray(kn.value(x[[]]))
        assert got.shape == a[[]].shape == (0, 4)
        assert np.asarray(kn.value(x[:, []])).shape == a[:, []].shape == (3, 0)


RANGE_INDICES = [(range(2), range(2)), (0, slice(None), range(2)), (range(2), slice(None), 0), (1, range(2)),
                 range(1, -1, -1), (slice(None), range(2)), (None, range(2)), (range(2), 1, range(2))]


@pytest.mark.parametrize("index", RANGE_INDICES, ids=str)
def test_ranges_index_as_numpy_takes_them(index):
    # numpy indexes with a range's values as an integer array: two ranges (or a range and an
    # int) pair up, and split by a slice their axis goes first. Two ranges were read as two
    # slices: x[range(2), range(2)] gave a (2, 2, 4) block, not the pairs.
    x = np.arange(24.0).reshape(2, 3, 4)
    want = x[index]
    got = kn.value(kn.Param(x)[index])
    assert got.shape == want.shape and np.array_equal(got, want)

    def f(a):
        return a[index]
    c = kn.compile(f, target="cpu")
    assert c(x).shape == want.shape and np.array_equal(c(x), want)
    scatter = np.zeros_like(x)
    np.add.at(scatter, index, 2 * want)  # the gradient of sum(x[index] ** 2)
    for g in (f, c):
        np.testing.assert_array_equal(kn.grad(lambda a: kn.sum(g(a) ** 2))(x), scatter)


def _pair(x, i):
    return x[i, -i]


def _row_part(x, i):
    return x[i, 1:3]


def _column_part(x, i):
    return x[1:3, i]


def _middle(x, i):
    return x[None, :, i, 0]


@pytest.mark.parametrize("fn", [_pair, _row_part, _column_part, _middle], ids=lambda f: f.__name__)
def test_a_numpy_integer_argument_indexes_beside_other_indices_in_compiled_code(fn):
    # A numpy integer argument is a 0-d array value; beside another index it was refused
    # ("must be the only non-':' index"). Taken one axis at a time it is numpy's result.
    x = np.arange(60.0).reshape(3, 4, 5) if fn is _middle else np.arange(20.0).reshape(4, 5)
    i = np.int64(2)
    compiled = kn.compile(fn, target="cpu", cache=False)
    np.testing.assert_array_equal(compiled(x, i), fn(x, i))
    np.testing.assert_array_equal(kn.grad(lambda a, j: kn.sum(compiled(a, j) * 3.0))(x, i),
                                  kn.grad(lambda a, j: kn.sum(fn(a, j) * 3.0))(x, i))
