"""More numpy functions on Params, taped values and compiled values (knetc/ops/numpy_more.py):
each against numpy's value and shape, its gradient against central differences, and the
compiled value and gradient against the eager ones; the predicates and masks (bools, no
gradient); the scalar protocols of Params and taped values."""
import numpy as np
import pytest

import knetc as kn
from numgrad import numgrad

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4, 5))
M = RNG.standard_normal((4, 6))
V = RNG.standard_normal(5)

CASES = {
    "moveaxis": (lambda a: np.moveaxis(a, 0, -1), X), "moveaxis_many": (lambda a: np.moveaxis(a, [0, 1], [-1, 0]), X),
    "flip": (lambda a: np.flip(a, 1), X), "flip_all": (lambda a: np.flip(a), X), "fliplr": (np.fliplr, M),
    "flipud": (np.flipud, M), "roll": (lambda a: np.roll(a, 2, axis=1), X), "roll_flat": (lambda a: np.roll(a, -7), X),
    "roll_axes": (lambda a: np.roll(a, (1, 2), axis=(0, 2)), X), "tile": (lambda a: np.tile(a, (2, 1, 3)), X),
    "tile_more_axes": (lambda a: np.tile(a, (2, 1, 1, 2)), X), "tile_int": (lambda a: np.tile(a, 2), V),
    "repeat": (lambda a: np.repeat(a, 2, axis=1), X), "repeat_flat": (lambda a: np.repeat(a, 3), M),
    "repeat_counts": (lambda a: np.repeat(a, [1, 0, 2, 3], axis=0), M),
    "broadcast_to": (lambda a: np.broadcast_to(a, (2, 4, 5)), V), "atleast_2d": (np.atleast_2d, V),
    "atleast_3d": (np.atleast_3d, M), "vstack": (lambda a: np.vstack([a, a * 2]), V),
    "hstack": (lambda a: np.hstack([a, a]), M), "hstack_1d": (lambda a: np.hstack([a, a]), V),
    "dstack": (lambda a: np.dstack([a, a]), M), "column_stack": (lambda a: np.column_stack([a, a]), V),
    "split": (lambda a: np.split(a, 2, axis=0)[1], M), "split_at": (lambda a: np.split(a, [1, 3], axis=1)[1], M),
    "array_split": (lambda a: np.array_split(a, 3, axis=1)[2], X),
    "take": (lambda a: np.take(a, [0, 2, 2], axis=1), X), "take_flat": (lambda a: np.take(a, [5, 1, 5]), X),
    "take_negative": (lambda a: np.take(a, [-1, 0], axis=2), X),
    "take_along_axis": (lambda a: np.take_along_axis(a, np.argsort(M, axis=1), axis=1), M),
    "diagonal": (np.diagonal, M), "diagonal_offset": (lambda a: np.diagonal(a, 2), M),
    "diagonal_axes": (lambda a: np.diagonal(a, -1, 1, 2), X), "trace": (np.trace, M),
    "trace_axes": (lambda a: np.trace(a, 1, 0, 2), X), "diag_of_vector": (np.diag, V),
    "diag_above": (lambda a: np.diag(a, 2), V), "diag_below": (lambda a: np.diag(a, -1), V),
    "diag_of_matrix": (lambda a: np.diag(a, 1), M), "triu": (lambda a: np.triu(a, 1), M),
    "tril": (lambda a: np.tril(a, -1), X), "outer": (lambda a: np.outer(a, np.arange(3.0)), V),
    "inner": (lambda a: np.inner(a, a[:2]), X), "tensordot": (lambda a: np.tensordot(a, M.T[:5], axes=1), X),
    "tensordot_axes": (lambda a: np.tensordot(a, X, axes=([0, 1], [0, 1])), X),
    "pad": (lambda a: np.pad(a, ((1, 2), (0, 1)), constant_values=3.0), M), "pad_all": (lambda a: np.pad(a, 2), V),
    "cumsum": (lambda a: np.cumsum(a, axis=1), X), "cumsum_flat": (np.cumsum, M),
    "cumprod": (lambda a: np.cumprod(a, axis=2), X), "cumprod_flat": (np.cumprod, M),
    "cumprod_through_zero": (lambda a: np.cumprod(a * np.array([1.0, 0.0, 1.0, 1.0, 1.0]), axis=-1), X),
    "einsum_matmul": (lambda a: np.einsum("ij,jk->ik", a, np.arange(18.0).reshape(6, 3) / 9), M),
    "einsum_batched": (lambda a: np.einsum("bij,bkj->bik", a, a), X),
    "einsum_trace": (lambda a: np.einsum("ii", a[:, :4]), M), "einsum_diagonal": (lambda a: np.einsum("ii->i", a[:, 2:]), M),
    "einsum_implicit_ellipsis": (lambda a: np.einsum("...j,j", a, np.linspace(-1, 1, 5)), X),
    "einsum_three": (lambda a: np.einsum("i,ij,j->", a[:, 0], a, a[0]), M),
    "einsum_transpose_sum": (lambda a: np.einsum("ijk->kj", a), X),
    "einsum_capitals_implicit": (lambda a: np.einsum("Ij,jK", a, a.T[:, :3]), M),  # (capitals were left out)
    "einsum_capital_ellipsis": (lambda a: np.einsum("A...,A...", a, a * a), X),
    "einsum_interleaved": (lambda a: np.einsum(a, [0, 1], a, [0, 2], [1, 2]), M),
    "einsum_interleaved_capitals": (lambda a: np.einsum(a, [30, 1], a, [30, 40], [1, 40]), M),  # (ids 26..51: A-Z)
    "einsum_letter_thrice": (lambda a: np.einsum("iii->i", a[:4, :4, None] * a[:4, None, :4]), M),
    "einsum_letter_thrice_and_another": (lambda a: np.einsum("iiij->ij", a[:3, :3, None, None] * X[:3, None, :3, :2]), M),
    "sort": (lambda a: np.sort(a), X), "sort_axis": (lambda a: np.sort(a, axis=0)[:2] * a[:2], X),
    "sort_flat": (lambda a: np.sort(a, axis=None)[-3:], M),
    "arctan2": (lambda a: np.arctan2(a, a[::-1] + 0.5), X), "hypot": (lambda a: np.hypot(a, 1.5 - a), X),
    "logaddexp": (lambda a: np.logaddexp(a, 2 * a[::-1]), X), "logaddexp2": (lambda a: np.logaddexp2(a, 1.0), M),
    "fmax": (lambda a: np.fmax(a, np.where(M > 0.5, np.nan, 0.0)), M), "fmin": (lambda a: np.fmin(np.nan * (M > 0), a), M),
    "deg2rad": (np.deg2rad, V), "rad2deg": (lambda a: np.degrees(a) + np.rad2deg(a), V),
    "round": (lambda a: np.round(a, 1) * a + a.round() + np.around(a * 100, -1), X),
    "inv": (lambda a: np.linalg.inv(a[:, :4] + 4 * np.eye(4)), M),
    "solve": (lambda a: np.linalg.solve(a[:, :4] + 4 * np.eye(4), a[:, 4:]), M),
    "solve_vector": (lambda a: np.linalg.solve(a[:, :4] + 4 * np.eye(4), a[:, 5]), M),
    "solve_batched": (lambda a: np.linalg.solve(a[:, :, :4] + 4 * np.eye(4), a[0, :, 4:]), X),
    "det": (lambda a: np.linalg.det(a[:, :, :4] + 3 * np.eye(4)), X),
    "slogdet": (lambda a: np.linalg.slogdet(a[:, :, 1:] - 3 * np.eye(4))[1], X),
    "det_of_singular": (lambda a: np.linalg.det(a[:3, :3] * np.array([1.0, 1.0, 0.0])) + np.linalg.det(0 * a[:2, :2]), M),
    "det_of_rank_one": (lambda a: np.linalg.det(np.outer(a[0, :3], a[1, :3])), M),
    "cholesky": (lambda a: np.linalg.cholesky(a[:, :4] @ a[:, :4].T + 2 * np.eye(4)), M),
    "cholesky_upper": (lambda a: np.linalg.cholesky(a[:, :4] @ a[:, :4].T + 2 * np.eye(4), upper=True), M),
    "cholesky_of_lower_triangle": (lambda a: np.linalg.cholesky(a[:, 1:5] / 4 + 2 * np.eye(4)), M),  # (as LAPACK)
    "eigh_values": (lambda a: np.linalg.eigh(a[:, :4] + a[:, :4].T)[0], M),
    "eigvalsh_upper": (lambda a: np.linalg.eigvalsh(a[:, :, 1:] * 2, UPLO="U"), X),
    "eigh_vectors": (lambda a: np.linalg.eigh(a[:, :4] + a[:, :4].T)[1] ** 2, M),  # (squared: the sign is LAPACK's)
    "eigh_vectors_upper": (lambda a: np.abs(np.linalg.eigh(a[:, :, 1:], "U").eigenvectors), X),
    "norm_axis": (lambda a: np.linalg.norm(a, axis=-1), X), "norm_keepdims": (lambda a: np.linalg.norm(a, 1, 0, True), X),
    "norm_matrix_axes": (lambda a: np.linalg.norm(a, axis=(0, 2)), X), "norm_matrix_inf": (lambda a: np.linalg.norm(a, np.inf), M),
    "norm_matrix_one": (lambda a: np.linalg.norm(a, -1, (2, 1)), X), "norm_vector_p": (lambda a: np.linalg.norm(a, 3), V),
    "nansum": (lambda a: np.nansum(np.where(M > 0.5, np.nan, a), axis=1), M),
    "nanprod": (lambda a: np.nanprod(np.where(M > 0.5, np.nan, a), axis=0), M),
    "nanmean": (lambda a: np.nanmean(np.where(X > 0.8, np.nan, a), axis=(0, 2)), X),
    "nanvar": (lambda a: np.nanvar(np.where(M > 0.5, np.nan, a), axis=1, ddof=1), M),
    "nanstd": (lambda a: np.nanstd(np.where(M > 0.5, np.nan, a)), M),
    "nanmax": (lambda a: np.nanmax(np.where(M > 0.5, np.nan, a), axis=1), M),
    "nanmin_keepdims": (lambda a: np.nanmin(np.where(M > 0.5, np.nan, a), axis=0, keepdims=True), M),
    "nancumsum": (lambda a: np.nancumsum(np.where(M > 0.5, np.nan, a), axis=1), M),
    "nancumprod": (lambda a: np.nancumprod(np.where(V > 0.5, np.nan, a)), V),
    "average": (lambda a: np.average(a, axis=1, weights=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), M),
    "average_returned": (lambda a: np.average(a, axis=0, weights=np.abs(X) + 1, returned=True)[0], X),
    "ptp": (lambda a: np.ptp(a, axis=1), X),
    "median": (lambda a: np.median(a, axis=1), X), "median_odd": (lambda a: np.median(a, axis=2, keepdims=True), X),
    "median_all": (np.median, M), "quantile": (lambda a: np.quantile(a, [0.1, 0.5, 0.9], axis=0), M),
    "percentile": (lambda a: np.percentile(a, 37.5, axis=(0, 2), keepdims=True), X),
    "sinc": (np.sinc, V), "sinc_at_zero": (lambda a: np.sinc(a * np.array([0.0, 1, 1, 1, 1])), V),
    "heaviside": (lambda a: np.heaviside(a, 0.5) * a, X),
    "nan_to_num": (lambda a: np.nan_to_num(a + np.select([M > 1, M < -1, M > 0.5], [np.inf, -np.inf, np.nan], 0.0),
                                           posinf=10.0, neginf=-10.0), M),
    "float_power": (lambda a: np.float_power(np.abs(a) + 1, 1.5), M), "fix": (lambda a: np.fix(a * 3) * a, M),
    "rot90": (np.rot90, M), "rot90_twice": (lambda a: np.rot90(a, 2), M),
    "rot90_three_axes": (lambda a: np.rot90(a, 3, axes=(2, 0)), X),
    "rollaxis": (lambda a: np.rollaxis(a, 2), X), "rollaxis_start": (lambda a: np.rollaxis(a, 0, 3), X),
    "rollaxis_negative_start": (lambda a: np.rollaxis(a, 2, -2), X),
    "hsplit": (lambda a: np.hsplit(a, 3)[1], M), "vsplit": (lambda a: np.vsplit(a, [1])[1], M),
    "dsplit": (lambda a: np.dsplit(a, [2])[0], X),
    "kron": (lambda a: np.kron(a, np.arange(6.0).reshape(2, 3)), M), "kron_ranks": (lambda a: np.kron(a, np.ones((2, 1, 2))), M),
    "vdot": (lambda a: np.vdot(a, M * 2), M), "cross": (lambda a: np.cross(a[:, :3], a[:, 3:]), M),
    "cross_2d": (lambda a: np.cross(a[:, :2], a[:, 2:4]), M), "cross_axis": (lambda a: np.cross(a, a[::-1] * 2, axis=0), X),
    "pad_reflect": (lambda a: np.pad(a, ((1, 2), (3, 1)), mode="reflect"), M),
    "pad_edge": (lambda a: np.pad(a, 2, mode="edge"), V), "pad_symmetric": (lambda a: np.pad(a, (0, 3), "symmetric"), X),
    "pad_wrap": (lambda a: np.pad(a, ((0, 0), (1, 1), (7, 0)), "wrap"), X),
    "add_reduce": (lambda a: np.add.reduce(a), X), "add_reduce_axis": (lambda a: np.add.reduce(a, 1), X),
    "multiply_reduce_all": (lambda a: np.multiply.reduce(a, axis=None), V),
    "maximum_reduce": (lambda a: np.maximum.reduce(a, keepdims=True), M),
    "add_accumulate": (lambda a: np.add.accumulate(a, 1), M), "multiply_outer": (lambda a: np.multiply.outer(a, a[:2]), V),
    "subtract_outer": (lambda a: np.subtract.outer(np.arange(3.0), a), M),
    "select": (lambda a: np.select([a > 0.5, a > -0.5], [a, a * 2], -1.0), X),
    "broadcast_arrays": (lambda a: np.broadcast_arrays(a, a[0])[1] * np.broadcast_arrays(a, a[0])[0], M),
    "ediff1d": (lambda a: np.ediff1d(a, to_end=[9.0, 8.0], to_begin=-1.0), M), "ediff1d_flat": (np.ediff1d, X),
    "trapezoid": (np.trapezoid, X), "trapezoid_dx": (lambda a: np.trapezoid(a, dx=0.5, axis=0), M),
    "trapezoid_x": (lambda a: np.trapezoid(a, x=np.array([0.0, 1, 3, 4.5]), axis=0), M),
    "trapezoid_x_param": (lambda a: np.trapezoid(a[0] ** 2, x=a[1]), M),
    "diagflat": (lambda a: np.diagflat(a[:2, :2], 1), M),
    "concatenate_list": (lambda a: np.concatenate([a, [1.0, 2.0]]), V),
    "stack_list": (lambda a: np.stack([a[0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]), M),
    "svd_values": (lambda a: np.linalg.svd(a, compute_uv=False) * np.arange(1.0, 5.0), M),
    "svdvals_tall": (lambda a: np.linalg.svdvals(a.T), M),
    "svd_vectors_wide": (lambda a: np.linalg.svd(a, full_matrices=False).U ** 4 + np.linalg.svd(a, full_matrices=False).Vh[:, :4] ** 4, M),
    "svd_vectors_tall": (lambda a: np.linalg.svd(a.T, full_matrices=False)[0] ** 4, M),  # (even powers: signs are LAPACK's)
    "svd_rank_one_terms": (lambda a: np.linalg.svd(a, full_matrices=False)[0][..., :, 1:2] * np.linalg.svd(a, full_matrices=False)[2][..., 1:2, :], X),
    "svd_square_full": (lambda a: np.abs(np.linalg.svd(a[:, :4])[2]), M),
    "qr": (lambda a: np.abs(np.linalg.qr(a.T).Q) + np.linalg.qr(a.T)[0] * np.linalg.qr(a.T)[1][:, :1].T, M),
    "qr_r_batched": (lambda a: np.abs(np.linalg.qr(np.swapaxes(a, 1, 2), mode="r")), X),
    "qr_square": (lambda a: np.linalg.qr(a[:, :4])[0] ** 2 + np.abs(np.linalg.qr(a[:, :4])[1]), M),
    "pinv": (np.linalg.pinv, M), "pinv_batched_tall": (lambda a: np.linalg.pinv(np.swapaxes(a, 1, 2)), X),
    "norm_two": (lambda a: np.linalg.norm(a, 2), M), "norm_nuclear": (lambda a: np.linalg.norm(a, "nuc", axis=(2, 1)), X),
    "norm_minus_two": (lambda a: np.linalg.norm(a, -2, axis=(0, 2), keepdims=True), X),
    "vector_norm": (np.linalg.vector_norm, X), "vector_norm_axes": (lambda a: np.linalg.vector_norm(a, axis=(0, 2), ord=3), X),
    "matrix_norm": (np.linalg.matrix_norm, X), "matrix_norm_inf": (lambda a: np.linalg.matrix_norm(a, ord=np.inf, keepdims=True), X),
    "matrix_power": (lambda a: np.linalg.matrix_power(a[:, :4] / 2, 5), M),
    "matrix_power_negative": (lambda a: np.linalg.matrix_power(a[:, :, :4] + 3 * np.eye(4), -2), X),
    "matrix_power_zero": (lambda a: np.linalg.matrix_power(a[:, :4], 0) * a[:, :4], M),
    "multi_dot": (lambda a: np.linalg.multi_dot([a[0], a.T, a, a[1]]), M), "multi_dot_matrices": (lambda a: np.linalg.multi_dot([a, a.T, a]), M),
    "diff": (lambda a: np.diff(a, axis=1), X), "diff_twice": (lambda a: np.diff(a, n=2, prepend=0.5, append=[1.0, 2.0]), V),
}


@pytest.mark.parametrize("name", list(CASES))
def test_values_and_gradients_eager(name):
    f, a = CASES[name]
    expected = f(a)
    p = kn.Param(a.copy())
    out = f(p)
    assert np.shape(kn.value(out)) == expected.shape
    np.testing.assert_allclose(kn.value(out), expected, rtol=1e-12, atol=1e-12)
    w = RNG.standard_normal(expected.shape)
    g = kn.grad(kn.diff(lambda: np.sum(f(p) * w)), p)
    np.testing.assert_allclose(g, numgrad(lambda b: float(np.sum(f(b) * w)), a.copy()), atol=1e-6)


@kn.compile
def _weighted_sum(f, a, w):
    return np.sum(f(a) * w)


@pytest.mark.parametrize("name", list(CASES))
def test_compiled_equals_eager(name):
    f, a = CASES[name]
    w = RNG.standard_normal(f(a).shape)
    assert _weighted_sum(f, a, w) == pytest.approx(float(np.sum(f(a) * w)), rel=1e-12, abs=1e-12)
    p = kn.Param(a.copy())
    np.testing.assert_allclose(kn.grad(_weighted_sum, 1)(f, a, w), kn.grad(kn.diff(lambda: np.sum(f(p) * w)), p),
                               rtol=1e-12, atol=1e-12)


def test_second_order_through_cumsum_and_roll():
    x = np.array([0.3, -1.2, 2.0])
    f = lambda p: np.sum(np.cumsum(p) ** 3 * np.roll(p, 1))
    hess_diag = kn.grad(lambda p: np.sum(kn.grad(f)(p) * np.array([1.0, 0.0, 0.0])))(x)
    expected = numgrad(lambda b: float(np.sum(kn.grad(f)(b) * np.array([1.0, 0.0, 0.0]))), x.copy())
    np.testing.assert_allclose(hess_diag, expected, atol=1e-6)


@pytest.mark.parametrize("f", [np.cumsum, np.cumprod, lambda a: np.einsum("i,j->ij", a, a)])
def test_integers_and_bools_widen_as_numpy(f):
    for a in (np.arange(1, 6, dtype=np.int8), np.array([True, True, False])):
        assert kn.value(f(kn.Param(a))).dtype == f(a).dtype
        np.testing.assert_array_equal(f(kn.Param(a)), f(a))


def test_bad_arguments_raise_as_numpy():
    p = kn.Param(M)
    for bad in (dict(ord="fro", axis=0), dict(ord=1, axis=(0, 1, 2))):
        with pytest.raises(ValueError):
            np.linalg.norm(X, **bad)
        with pytest.raises(ValueError):
            np.linalg.norm(kn.Param(X), **bad)
    with pytest.raises(ValueError, match="Invalid norm order"):
        np.linalg.norm(p, 3)
    for bad in ("ij,jk->ik", "ij->iij", "ij->k", "ijk"):  # sizes, a repeated or unknown output, too many axes
        with pytest.raises(ValueError):
            np.einsum(bad, M, M)
        with pytest.raises(ValueError, match="einsum"):
            np.einsum(bad, p, p)
    with pytest.raises(ValueError, match="equal division"):
        np.split(p, 4, axis=1)
    with pytest.raises(TypeError, match="constant"):
        np.pad(p, 1, mode="linear_ramp")
    with pytest.raises(ValueError, match="cannot be the same"):
        np.diagonal(p, 0, 1, 1)


# ---------------------------------------------------------------- predicates and masks

@pytest.mark.parametrize("f", [np.isnan, np.isinf, np.isfinite, lambda a: np.any(a > 1), lambda a: np.all(a > -2),
                               lambda a: np.count_nonzero(a > 0), lambda a: np.logical_and(a > 0, a < 3),
                               lambda a: np.logical_or(a > 1, a < 0), lambda a: np.logical_xor(a > 0, a < 3),
                               lambda a: np.logical_not(a > 0), lambda a: (a > 1).any(), lambda a: (a < 5).all(),
                               lambda a: np.any(np.reshape(a, (5, 1)) > 1, axis=1)])
def test_predicates_give_numpys_bools_eager_taped_and_compiled(f):
    x = np.array([0.5, 2.0, np.nan, np.inf, -1.0])
    expected = f(x)
    p = kn.Param(x)
    for got in (f(p), kn.value(kn.diff(lambda: f(p))), kn.compile(lambda a: f(a))(x)):
        np.testing.assert_array_equal(got, expected)
        assert np.asarray(got).dtype == np.asarray(expected).dtype


def test_masks_combine_with_operators_inside_diff_and_compiled():
    x = np.array([0.5, 2.0, -3.0, 4.0])
    p = kn.Param(x)

    def f(a):
        inside = (a > 0) & (a < 3)
        return np.sum(a * inside + a * ((a < -1) | (a > 3)) + a * ~(a > 0) + a * ((a > 0) ^ (a > 1)))
    # floats: 0/1 floats as Knet's comparisons, combined by their nonzero entries
    inside, outside = (x > 0) & (x < 3), (x < -1) | (x > 3)
    expected = np.sum(x * inside + x * outside + x * ~(x > 0) + x * ((x > 0) ^ (x > 1)))
    y = kn.diff(lambda: f(p))
    assert kn.value(y) == pytest.approx(expected)
    masks = [inside, outside, ~(x > 0), (x > 0) ^ (x > 1)]
    np.testing.assert_allclose(kn.grad(y, p), np.sum([m.astype(float) for m in masks], axis=0))
    assert kn.compile(f)(x) == pytest.approx(expected)
    b = kn.Param(np.array([True, False]))
    np.testing.assert_array_equal(kn.value(kn.diff(lambda: b & np.array([True, True]))), [True, False])
    with pytest.raises(TypeError, match="of integer arrays is bitwise"):
        kn.Param(np.array([1, 2])) & 1


# ---------------------------------------------------------------- scalar protocols

def test_params_and_taped_values_format_round_and_convert_as_their_values():
    p, q = kn.Param(np.array(2.6)), kn.Param(np.array([1.5, 2.0]))
    y = kn.diff(lambda: p * 2)
    assert f"{y:.3f}" == "5.200" and f"{p:.2f}" == "2.60"
    assert round(p) == 3 and round(y, 1) == 5.2
    assert p.item() == 2.6 and q.item(1) == 2.0 and q.tolist() == [1.5, 2.0]
    with pytest.raises(TypeError):
        round(q)  # as numpy: a 1-d array has no round()


def test_transpose_takes_negative_axes():
    q = kn.Param(np.zeros((2, 3, 4)))
    assert np.transpose(q, (-1, 0, 1)).shape == (4, 2, 3) and q.transpose(-1, -3, -2).shape == (4, 2, 3)
    with pytest.raises(kn.ShapeError, match="out of bounds"):
        np.transpose(q, (3, 0, 1))


def _methods(x):
    return (x.argmax(axis=1), x.argmin(), x.cumsum(axis=0), x.repeat(2, axis=1), x.take([0, 2], axis=1), x.trace(),
            x.diagonal(1), x.cumprod(axis=1))


def test_ndarray_methods_of_these_functions_on_params_and_compiled():
    x = RNG.standard_normal((3, 4))
    expected = _methods(x)
    for got in (_methods(kn.Param(x)), kn.compile(_methods)(x)):
        for g, e in zip(got, expected):
            assert np.shape(kn.value(g)) == np.shape(e)
            np.testing.assert_allclose(kn.value(g), e, rtol=1e-12)
    grad = kn.grad(lambda a: np.sum(a.cumsum(axis=1) * a.repeat(2, axis=0)[:3]) + a.trace())(x)
    numeric = numgrad(lambda a: float(np.sum(a.cumsum(axis=1) * a.repeat(2, axis=0)[:3]) + a.trace()), x.copy())
    np.testing.assert_allclose(grad, numeric, atol=1e-6)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_argsort_is_numpys_stable_order_with_nans_last(target):
    x = np.array([[3.0, np.nan, 1.0, 1.0, -np.inf, 0.0], [2.0, 2.0, np.nan, np.nan, 0.0, -0.0]])
    order = kn.compile(lambda a, axis: np.argsort(a, axis=axis), target=target)
    for axis in (-1, 0, None):
        expected = np.argsort(x, axis=axis, kind="stable")
        np.testing.assert_array_equal(np.argsort(kn.Param(x), axis=axis), expected)
        np.testing.assert_array_equal(order(x, axis), expected)
    np.testing.assert_array_equal(np.sort(kn.Param(x)), np.sort(x))
    np.testing.assert_array_equal(kn.compile(lambda a: np.sort(a), target=target)(x), np.sort(x))


def _gathered(x, i, axis):
    return np.take_along_axis(x, i, axis=axis)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_take_along_axis_with_an_index_array_argument_compiles(target):
    # an index array value cannot be combined with the other axes' positions by getindex: one
    # gather of the flattened array, its indices range-checked before anything runs
    x, f = RNG.standard_normal((3, 4, 5)), kn.compile(_gathered, target=target)
    for axis, shape in ((0, (2, 4, 5)), (1, (3, 6, 5)), (2, (3, 4, 2)), (1, (1, 2, 5))):
        i = RNG.integers(-x.shape[axis], x.shape[axis], shape)
        np.testing.assert_array_equal(f(x, i, axis), np.take_along_axis(x, i, axis=axis))
    i = RNG.integers(0, 4, (3, 2, 5))
    np.testing.assert_allclose(kn.grad(lambda a: np.sum(f(a, i, 1) ** 2))(x),
                               kn.grad(lambda a: np.sum(np.take_along_axis(a, i, axis=1) ** 2))(x), rtol=1e-12)
    with pytest.raises(IndexError, match="index 4 is out of bounds for axis 1"):
        f(x, np.full((3, 1, 5), 4), 1)


def _linalg(a, b):
    sign, logabsdet = np.linalg.slogdet(a)
    return np.sum(np.linalg.solve(a, b) ** 2) + np.sum(np.linalg.inv(a)) + np.sum(np.linalg.det(a) + sign * logabsdet)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_linalg_compiles_on_both_targets_and_refuses_what_numpy_refuses(target):
    a, b = RNG.standard_normal((2, 3, 3)) + 3 * np.eye(3), RNG.standard_normal((2, 3, 2))
    f = kn.compile(_linalg, target=target)
    assert f(a, b) == pytest.approx(float(_linalg(a, b)), rel=1e-12)
    for got, want in zip(kn.grad(f)(a, b), kn.grad(_linalg)(a, b)):
        np.testing.assert_allclose(got, want, rtol=1e-10)
    assert kn.value(f(a.astype(np.float32), b.astype(np.float32))).dtype == np.float32
    with pytest.raises(np.linalg.LinAlgError):
        f(np.zeros((2, 3, 3)), b)
    with pytest.raises(ValueError, match="square"):
        np.linalg.inv(kn.Param(np.ones((2, 3))))
    np.testing.assert_array_equal(np.linalg.inv(kn.Param(np.array([[2, 0], [0, 4]]))), [[0.5, 0], [0, 0.25]])


def test_second_order_through_logdet():
    # the Hessian of log|det a| along v is -trace(inv(a) v inv(a) v): its gradient rule is an op too
    a, v = RNG.standard_normal((3, 3)) + 3 * np.eye(3), RNG.standard_normal((3, 3))
    hv = kn.grad(lambda x: np.sum(kn.grad(lambda y: np.linalg.slogdet(y)[1])(x) * v))(a)
    i = np.linalg.inv(a)
    np.testing.assert_allclose(np.sum(hv * v), -np.trace(i @ v @ i @ v), rtol=1e-10)


def _products(a, b):
    return np.einsum("ij,jk->ik", a, b), np.matmul(a[None], b[None]), np.einsum("ij,ij->", a, a)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_products_and_determinants_of_empty_axes_are_numpys(target):
    # compiled products with a size-0 axis raised in the batched GEMM (a reshape with -1), and a
    # determinant of 0 x 0 matrices was whatever memory held (numpy: 1)
    products = kn.compile(_products, target=target)
    for m, k, n in ((3, 0, 2), (0, 3, 4), (2, 3, 0)):
        a, b = RNG.standard_normal((m, k)), RNG.standard_normal((k, n))
        for got, want in zip(products(a, b), _products(a, b)):
            assert np.shape(got) == np.shape(want)
            np.testing.assert_allclose(got, want, rtol=1e-12)
    det = kn.compile(lambda a: (np.linalg.det(a), np.linalg.slogdet(a)[1]), target=target)
    for got, want in zip(det(np.ones((3, 0, 0))), (np.ones(3), np.zeros(3))):
        np.testing.assert_array_equal(got, want)


def test_einsum_and_norm_refuse_and_convert_as_numpy():
    p = kn.Param(X)
    for subscripts in ("i...j->ij", "...->"):  # an explicit output must keep the axes of `...`
        with pytest.raises(ValueError, match="ellipsis"):
            np.einsum(subscripts, X)
        with pytest.raises(ValueError, match="ellipsis"):
            np.einsum(subscripts, p)
    with pytest.raises(ValueError, match="range"):
        np.einsum(p, [0, 52])
    for order in (3, 0, "bad"):  # not a matrix norm: numpy's ValueError
        with pytest.raises(ValueError, match="Invalid norm order for matrices"):
            np.linalg.norm(kn.Param(M), order)
    ints = np.array([[1, -2], [3, 4]])
    for order in (1, np.inf, -1):
        got = kn.compile(lambda a, o: np.linalg.norm(a, o))(ints, order)
        assert got.dtype == np.float64 and got == np.linalg.norm(ints, order)
    empty = np.zeros((3, 0))  # the largest of no magnitudes is 0 (numpy 2's initial=0)
    np.testing.assert_array_equal(np.linalg.norm(kn.Param(empty), np.inf, axis=1), np.zeros(3))
    np.testing.assert_array_equal(kn.compile(lambda a: np.linalg.norm(a, np.inf, axis=1))(empty), np.zeros(3))
    np.testing.assert_array_equal(p.argsort(axis=1, stable=True), X.argsort(axis=1, stable=True))
    with pytest.raises(TypeError, match="integer"):
        np.round(p, 1.5)


def test_nan_statistics_and_order_statistics_at_their_edges_as_numpy():
    all_nan = np.array([[np.nan, np.nan], [1.0, np.nan]])
    p = kn.Param(all_nan)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        for f in (lambda a: np.nanmax(a, axis=1), lambda a: np.nanmean(a, axis=1), lambda a: np.nanmin(a, axis=1)):
            np.testing.assert_array_equal(f(p), f(all_nan))
    ints = np.array([[3, 1], [2, 7]])
    for f in (np.nansum, np.nanmax, np.median, np.ptp, lambda a: np.quantile(a, 0.3)):
        assert kn.value(f(kn.Param(ints))).dtype == f(ints).dtype
        np.testing.assert_array_equal(f(kn.Param(ints)), f(ints))
    with_nan = np.array([1.0, np.nan, 3.0])
    np.testing.assert_array_equal(np.median(kn.Param(with_nan)), np.nan)  # (not the middle of the sorted row)
    np.testing.assert_array_equal(kn.compile(lambda a: np.percentile(a, [10, 90]))(with_nan), [np.nan, np.nan])
    with pytest.raises(ValueError, match="range"):
        np.quantile(kn.Param(M), 1.5)
    with pytest.raises(TypeError, match="axis must be specified"):
        np.average(kn.Param(M), weights=np.ones(6))
    with pytest.raises(TypeError, match="q must be known"):
        np.quantile(kn.Param(M), kn.Param(np.array(0.5)))


def _real_parts(a):
    return np.sum(np.conj(a) * a.real + np.imag(a) + a.conjugate() * a.imag)


@pytest.mark.parametrize("target", ["eager", "cpu"])
def test_real_values_have_their_complex_parts_as_numpy(target):
    # (an AttributeError on Params; knetc's values are real)
    f = _real_parts if target == "eager" else kn.compile(_real_parts)
    assert float(f(kn.Param(V))) == pytest.approx(float(_real_parts(V)), rel=1e-12)
    np.testing.assert_allclose(kn.grad(f)(V), 2 * V, rtol=1e-12)
    assert np.imag(kn.Param(V)).dtype == V.imag.dtype and not np.any(np.imag(kn.Param(V)))


def test_svd_refuses_full_matrices_of_non_square_params():
    # (the singular vectors beyond the smaller side are LAPACK's choice: they have no gradient)
    with pytest.raises(TypeError, match="full_matrices=False"):
        np.linalg.svd(kn.Param(M))
    u, s, vh = np.linalg.svd(kn.Param(M[:, :4]))  # square: the thin decomposition is the full one
    np.testing.assert_allclose(kn.value(u) * kn.value(s) @ kn.value(vh), M[:, :4], rtol=1e-12, atol=1e-12)


def test_products_with_a_python_number_take_numpys_dtype():
    # np.dot and np.inner are no ufuncs: a Python float is a float64 array there (it stayed float32)
    a = np.ones(3, np.float32)
    for f in (lambda x: np.dot(x, 2.0), lambda x: np.dot(2.0, x), lambda x: np.inner(x, 2.0),
              lambda x: np.dot(x, np.float32(2)), lambda x: np.multiply(x, 2.0)):
        assert kn.value(f(kn.Param(a))).dtype == f(a).dtype
        assert kn.value(kn.compile(f)(a)).dtype == f(a).dtype


def test_qr_gradients_of_wide_matrices_and_complete_modes_are_refused():
    q, r = np.linalg.qr(kn.Param(M))  # wide: the values are numpy's
    np.testing.assert_allclose(kn.value(q) @ kn.value(r), M, rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match="wide matrix"):
        kn.grad(lambda a: np.sum(np.linalg.qr(a)[1]))(M)
    with pytest.raises(TypeError, match="complete"):
        np.linalg.qr(kn.Param(M.T), mode="complete")


def test_new_functions_at_their_edges_as_numpy():
    # (from an audit of this code: each line was wrong or raised)
    rows = np.array([[1.0, 2.0, np.nan], [np.nan, 4.0, np.nan], [1.0, 3.0, 6.0]])
    with np.errstate(all="ignore"):
        for ddof in (1, 2, 3):  # no more entries than ddof: NaN, not inf or a negative variance
            np.testing.assert_array_equal(np.nanvar(kn.Param(rows), axis=1, ddof=ddof), np.nanvar(rows, axis=1, ddof=ddof))
    a = np.array([[[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]], [[3.0, 0.0], [0.0, 0.01], [0.0, 0.0]]])
    np.testing.assert_allclose(np.linalg.pinv(kn.Param(a), rcond=np.array([1e-15, 0.5])),
                               np.linalg.pinv(a, rcond=np.array([1e-15, 0.5])), atol=1e-12)  # (an rcond per matrix)
    f32, i32 = np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(6, dtype=np.int32)
    for f, x in ((lambda v: np.quantile(v, 0.3), f32), (lambda v: np.percentile(v, 40.0, axis=1), f32),
                 (lambda v: np.heaviside(v - 2, 0.5), f32), (lambda v: np.vdot(v, v), i32),
                 (lambda v: np.ediff1d(v, to_end=[7]), f32), (np.fix, i32), (lambda v: np.linalg.vector_norm(v, ord=None), f32),
                 (lambda v: np.average(v, axis=0, weights=[1, 2], returned=True)[1], i32.reshape(2, 3)),
                 (lambda v: np.concatenate([v, [5, 6]], axis=None), f32), (lambda v: np.trapezoid(v, x=[0.0, 1.0, 3.0]), f32),
                 (lambda v: np.multiply.outer(v, [1.0, 2.0]), f32), (lambda v: np.linalg.eigvalsh(v[:, :2], UPLO="u"), f32)):
        got, want = kn.value(f(kn.Param(x))), f(x)
        assert np.asarray(got).dtype == np.asarray(want).dtype, (got, want)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    p = kn.Param(rows[2])
    np.testing.assert_array_equal(np.add.reduce(p, initial=5.0), 15.0)  # (numpy's, on the value: nothing records)
    with pytest.raises(TypeError, match="not supported on Params"):
        kn.diff(lambda: np.add.reduce(p, initial=5.0))


def test_second_derivatives_of_det_at_singular_matrices():
    # (the adjugate's gradient went through the inverse: wrong values at a rank-2 3 x 3 matrix,
    # LinAlgError at a singular 2 x 2 one; det is a polynomial: its Hessian exists everywhere)
    rng = np.random.default_rng(7)
    singular = rng.standard_normal((3, 2)) @ rng.standard_normal((2, 3))
    for x in (np.array([[1.0, 2.0], [2.0, 4.0]]), singular, np.eye(3), rng.standard_normal((2, 3, 3))):
        v = rng.standard_normal(x.shape)
        gradient = kn.grad(lambda y: np.sum(np.linalg.det(y)))
        hvp = lambda y: np.sum(gradient(y) * v)  # noqa: E731
        expected = numgrad(lambda y: float(hvp(y)), x.copy())
        np.testing.assert_allclose(kn.grad(hvp)(x), expected, atol=1e-6)
        np.testing.assert_allclose(kn.grad(kn.compile(_det_hvp))(x, v), expected, atol=1e-6)


def _det_hvp(x, v):
    return np.sum(kn.grad(lambda y: np.sum(np.linalg.det(y)))(x) * v)
