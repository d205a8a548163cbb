"""Tiled CUDA GEMM (simulator + PTX) and the cuBLAS binding."""
import os
from pathlib import Path

import numpy as np
import pytest
from numba import cuda

from knetc.kernels import gemm as gemm_module
from knetc.kernels.gemm import gemm
from knetc.runtime import cublas

from ptx import compile_ptx

TRANS = [(False, False), (False, True), (True, False), (True, True)]
DTYPES = [np.float32, np.float64]


def _operands(m, k, n, trans_a, trans_b, dtype, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    return a, b, c


def _reference(a, b, c, trans_a, trans_b, alpha, beta):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return alpha * ((a64.T if trans_a else a64) @ (b64.T if trans_b else b64)) + beta * c


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", TRANS)
@pytest.mark.parametrize("m,k,n", [(5, 7, 3), (17, 33, 9)])
def test_gemm_matches_numpy(m, k, n, trans_a, trans_b, dtype):
    a, b, c = _operands(m, k, n, trans_a, trans_b, dtype)
    out = cuda.to_device(c)
    gemm(cuda.to_device(a), cuda.to_device(b), out=out, trans_a=trans_a, trans_b=trans_b,
         alpha=0.5, beta=-2.0)
    np.testing.assert_allclose(out.copy_to_host(), _reference(a, b, c, trans_a, trans_b, 0.5, -2.0),
                               **_tol(dtype))


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, True)])
def test_gemm_several_blocks_and_k_steps(trans_a, trans_b):
    # 2 x 2 blocks of 32 x 32 outputs and three 32-wide K steps, all with ragged edges.
    a, b, _ = _operands(40, 70, 37, trans_a, trans_b, np.float64, seed=1)
    out = gemm(cuda.to_device(a), cuda.to_device(b), trans_a=trans_a, trans_b=trans_b)
    np.testing.assert_allclose(out.copy_to_host(), _reference(a, b, 0, trans_a, trans_b, 1, 0),
                               rtol=1e-12, atol=1e-12)


def test_gemm_allocates_out_and_ignores_nan_when_beta_is_zero():
    a, b, _ = _operands(6, 4, 5, False, False, np.float32)
    out = gemm(cuda.to_device(a), cuda.to_device(b))
    assert out.shape == (6, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out.copy_to_host(), a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
    nan_out = cuda.to_device(np.full((6, 5), np.nan, np.float32))  # beta=0: C is never read
    gemm(cuda.to_device(a), cuda.to_device(b), out=nan_out, alpha=2.0)
    np.testing.assert_allclose(nan_out.copy_to_host(), 2.0 * (a.astype(np.float64) @ b),
                               rtol=1e-5, atol=1e-5)


def test_gemm_rejects_bad_arguments():
    f32 = lambda *shape: cuda.to_device(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match="inner dimensions"):
        gemm(f32(3, 4), f32(5, 2))
    with pytest.raises(ValueError, match="inner dimensions"):
        gemm(f32(3, 4), f32(4, 2), trans_a=True)
    with pytest.raises(ValueError, match="out must be"):
        gemm(f32(3, 4), f32(4, 2), out=f32(2, 3))
    with pytest.raises(ValueError, match="out must be"):
        gemm(f32(3, 4), f32(4, 2), out=cuda.to_device(np.zeros((3, 2))))
    with pytest.raises(ValueError, match="2-D"):
        gemm(f32(3, 4, 1), f32(4, 2))
    with pytest.raises(ValueError, match="float32 or both float64"):
        gemm(f32(3, 4), cuda.to_device(np.zeros((4, 2))))
    with pytest.raises(ValueError, match="float32 or both float64"):
        gemm(cuda.to_device(np.zeros((3, 4), np.int32)), cuda.to_device(np.zeros((4, 2), np.int32)))
    with pytest.raises(ValueError, match="beta"):
        gemm(f32(3, 4), f32(4, 2), beta=1.0)


def test_gemm_kernels_compile_to_ptx():
    report = compile_ptx(Path(gemm_module.__file__), gemm_module.PTX_SIGNATURES, cc=(9, 0))
    assert set(report) == {"gemm_kernel_f32", "gemm_kernel_f64"}
    for name, info in report.items():
        assert info["target"] and info["entry"], (name, info)


def test_cublas_unavailable_here_without_raising():
    if os.environ.get("KNETC_TEST_GPU") == "1":
        pytest.skip("a real GPU may have cuBLAS")
    assert cublas.available() is False
    assert cublas.available() is False  # cached answer, still no exception


@pytest.mark.gpu
@pytest.mark.skipif(os.environ.get("KNETC_TEST_GPU") != "1", reason="needs a real GPU")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", TRANS)
def test_cublas_gemm_matches_numpy(trans_a, trans_b, dtype):
    if not cublas.available():
        pytest.skip("cuBLAS library not installed (nvidia-cublas wheel)")
    a, b, c = _operands(37, 53, 29, trans_a, trans_b, dtype)
    out = cuda.to_device(c)
    cublas.gemm(cuda.to_device(a), cuda.to_device(b), out, trans_a=trans_a, trans_b=trans_b,
                alpha=1.5, beta=0.25)
    cuda.synchronize()
    np.testing.assert_allclose(out.copy_to_host(), _reference(a, b, c, trans_a, trans_b, 1.5, 0.25),
                               **_tol(dtype))
