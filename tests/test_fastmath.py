"""kernels/fastmath.py: float32 exp, sigm, tanh and erf as arithmetic that vectorizes.

Each function against float64 references (numpy, scipy.special) over dense grids that
cover every branch (the polynomial ranges, overflow to inf, underflow through the
subnormals to 0) and the special values; then compiled float32 programs that use them
(elementwise loops call them; a row reduction writes their values into a row buffer, then
adds them in order; an accumulation over several axes keeps the C library's functions)
against numpy, and the generated text that says which is which.
"""
import re
import types

import numpy as np
import pytest
import scipy.special as sp
from numba import njit

import knetc as kn
from knetc.kernels import fastmath

FLOAT32_MAX = float(np.finfo(np.float32).max)
TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32


def _over(function):
    @njit(error_model="numpy")
    def apply(x, out):
        for i in range(x.size):
            out[i] = function(x[i])
    return apply


def _evaluate(name, x):
    out = np.empty_like(x)
    _over(getattr(fastmath, f"{name}32_cpu"))(x, out)
    return out


REFERENCES = {"exp": np.exp, "sigm": sp.expit, "tanh": np.tanh, "erf": sp.erf}
GRID = np.concatenate([np.linspace(-110, 95, 400_001), np.linspace(-6, 6, 400_001),
                       np.linspace(-1e-3, 1e-3, 20_001), np.geomspace(1e-30, 1e-3, 2_001)]).astype(np.float32)


@pytest.mark.parametrize("name,max_ulp", [("exp", 1.5), ("sigm", 3.5), ("tanh", 2), ("erf", 1.5)])
def test_within_a_few_ulp_of_float64(name, max_ulp):
    got = _evaluate(name, GRID).astype(np.float64)
    with np.errstate(over="ignore"):
        want = REFERENCES[name](GRID.astype(np.float64))
    normal = (np.abs(want) >= TINY) & (np.abs(want) <= FLOAT32_MAX)
    ulp = np.spacing(np.abs(want[normal]).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got[normal] - want[normal]) / ulp) <= max_ulp
    # results that are subnormal (exp, sigm far left) or round to 0: within one subnormal step
    tiny = np.abs(want) < TINY
    assert np.max(np.abs(got[tiny] - want[tiny]), initial=0) <= 1.5 * 2.0 ** -149
    # beyond float32's range: inf as the C library's expf
    assert np.all(np.isinf(got[np.abs(want) > FLOAT32_MAX]))


def test_erf_unfused_as_a_cpu_without_fma_runs_it():
    # erf32_cpu's multiply-adds are FMAs where the CPU has them (`contract`); a CPU without
    # FMA runs each as a multiply, then an add: the same code compiled with neither. Both
    # within 1.5 ulp, from subnormal x (erf(x) ~ 1.128x) up, and odd bit for bit.
    unfused = njit(error_model="numpy")(types.FunctionType(
        fastmath.erf32_cpu.py_func.__code__, dict(vars(fastmath), _horner_fused=fastmath._horner)))
    x = np.concatenate([GRID, np.geomspace(1e-45, 1e-30, 1_001, dtype=np.float32)])
    want = sp.erf(x.astype(np.float64))
    normal = np.abs(want) >= TINY
    ulp = np.spacing(np.abs(want[normal]).astype(np.float32)).astype(np.float64)
    for erf32 in (fastmath.erf32_cpu, unfused):
        apply, got, mirrored = _over(erf32), np.empty_like(x), np.empty_like(x)
        apply(x, got)
        apply(-x, mirrored)
        np.testing.assert_array_equal((-got).view(np.int32), mirrored.view(np.int32))
        error = np.abs(got.astype(np.float64) - want)
        assert np.max(error[normal] / ulp) <= 1.5
        assert np.max(error[~normal]) <= 2.0 ** -149


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_special_values_as_numpy(name):
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 88.72, 88.73, -87.0, -103.0, -104.0, -1e30, 1e30],
                 np.float32)
    got = _evaluate(name, x)
    with np.errstate(over="ignore"):
        want = REFERENCES[name](x.astype(np.float64)).astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=3e-7, atol=2.0 ** -148)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))  # -0.0 stays -0.0 (tanh, erf)


def gelu_and_softmax(x):
    g = 0.5 * x * (1 + kn.erf(x * 0.7071067811865476)) + kn.tanh(x) + kn.sigm(x)
    return g, kn.softmax(x, dims=1)


def log_softmax_rows(x):
    return kn.logsoftmax(x, dims=1)


def test_compiled_float32_programs_use_them_where_loops_vectorize():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((300, 40)) * 4).astype(np.float32)
    x[0, :4] = [np.inf, -np.inf, np.nan, -0.0]
    compiled = kn.compile(gelu_and_softmax, target="cpu")
    g, s = compiled(x)
    x64 = x.astype(np.float64)
    with np.errstate(invalid="ignore"):  # (inf * 0 at -inf: NaN, as compiled)
        want_g = 0.5 * x64 * (1 + sp.erf(x64 * 0.7071067811865476)) + np.tanh(x64) + sp.expit(x64)
    np.testing.assert_allclose(g, want_g, rtol=2e-6, atol=1e-6)
    e = np.exp(x64[1:] - x64[1:].max(axis=1, keepdims=True))
    np.testing.assert_allclose(s[1:], e / e.sum(axis=1, keepdims=True), rtol=2e-6, atol=1e-9)
    texts = [open(m.__file__).read() for m in compiled.generated_modules()]
    kernels = "\n".join(t for t in texts if t.startswith("# knetc kernel"))
    for name in ("erf32", "tanh32", "sigm32", "exp32"):  # softmax's exp loop: exp32
        assert f"fastmath_{name}(" in kernels
    log_softmax = kn.compile(log_softmax_rows, target="cpu")
    np.testing.assert_allclose(log_softmax(x)[1:], np.log(e / e.sum(axis=1, keepdims=True)), rtol=2e-6, atol=2e-5)
    kernels = "\n".join(open(m.__file__).read() for m in log_softmax.generated_modules())
    # log-softmax's row sum of exps: the exps into a row buffer (a loop that vectorizes), then added in
    # order (in float32 blocks, added up in float64: Monoid.wide)
    assert re.search(r"b\d+ = scratch_empty\(m\d+, np\.float32\)", kernels)
    assert re.search(r"b(\d+)\[(j\w+)\] = t\d+\n\s+for \2_0 in range\(0, m\d+, 128\):\n.*\n"
                     r"\s+for \2 in range\(.*\):\n\s+u\2 = uint64\(\2\)\n\s+t\d+ \+= b\1\[u\2\]", kernels)


def test_a_reduction_over_two_axes_keeps_the_c_library():
    # its accumulation over two loops is written once, in order: libm's expf is faster there
    compiled = kn.compile(lambda x: kn.sum(kn.exp(x)), target="cpu")
    x = np.random.default_rng(4).standard_normal((30, 50)).astype(np.float32)
    assert float(compiled(x)) == pytest.approx(float(np.exp(x.astype(np.float64)).sum()), rel=1e-5)
    kernels = "\n".join(open(m.__file__).read() for m in compiled.generated_modules())
    assert "math.exp(" in kernels and "fastmath" not in kernels.replace("test_fastmath", "")


def test_float64_programs_keep_the_c_library():
    compiled = kn.compile(lambda x: kn.exp(x) + kn.tanh(x), target="cpu")
    x = np.linspace(-5, 5, 101)
    np.testing.assert_allclose(compiled(x), np.exp(x) + np.tanh(x), rtol=1e-14, atol=1e-15)
    assert all("kernels.fastmath" not in open(m.__file__).read() for m in compiled.generated_modules())


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_a_loop_calling_them_vectorizes(name):
    # what they are for: LLVM runs the loop in vector lanes (a branch or call LLVM cannot
    # if-convert inside them would make it scalar again, silently slower)
    apply = _over(getattr(fastmath, f"{name}32_cpu"))
    x = np.linspace(-5, 5, 64).astype(np.float32)
    apply(x, np.empty_like(x))
    llvm = "\n".join(apply.inspect_llvm().values())
    assert re.search(r"<\d+ x float>", llvm), f"{name}32_cpu: the loop did not vectorize"


def _row_extremes(extreme):
    @njit(error_model="numpy")
    def rows(x, out):
        for i in range(x.shape[0]):
            acc = x.dtype.type(np.inf) if extreme is fastmath.minimum_cpu else x.dtype.type(-np.inf)
            for j in range(x.shape[1]):
                acc = extreme(acc, x[i, j])
            out[i] = acc
    return rows


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_reduction_extremes_propagate_nan_and_vectorize(name, dtype):
    # A row max/min reduced with the helpers a generated kernel calls: numpy's values, a
    # NaN anywhere in the row (first, middle, last entry) wins, and the loop runs in
    # vector registers (the select it replaces ran one entry at a time).
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 67)).astype(dtype)
    x[1, 0] = x[2, 33] = x[3, 66] = np.nan
    x[4] = -np.inf
    x[5, 10] = np.inf
    out = np.empty(7, dtype)
    rows = _row_extremes(getattr(fastmath, f"{name}_cpu"))
    rows(x, out)
    expected = getattr(np, {"maximum": "max", "minimum": "min"}[name])(x, axis=1)
    np.testing.assert_array_equal(out, expected)
    packed = {np.float32: "ps", np.float64: "pd"}[dtype]
    assert re.search(rf"\bv?{name[:3]}{packed}\b", rows.inspect_asm(rows.signatures[0]))


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_reduction_extremes_cuda_flavour_is_the_numpy_select(name):
    select = fastmath._CUDA_SELECTS[f"{name}_cuda"]
    ufunc = getattr(np, name)
    for acc, v in [(1.0, 2.0), (2.0, 1.0), (np.nan, 1.0), (1.0, np.nan), (-np.inf, 3.0), (np.nan, np.nan)]:
        np.testing.assert_array_equal(select(np.float32(acc), np.float32(v)), ufunc(np.float32(acc), np.float32(v)))
