"""np.linalg's inverse, solve, log-determinant, Cholesky factor and symmetric eigensystem of a
batch of matrices, for Params and compiled code (knetc/ops/linalg.py). The generated drivers
call `fn(*inputs, out, **params)` with C-contiguous arrays whose last two axes are the
matrices (a determinant's out: one entry per matrix, 0-d stored as (1,)).

The CPU routines are numpy's own batched LAPACK calls: nothing to compile, the eager path's
results to the last bit (an eigenvector's sign included), numpy's LinAlgError for a singular
or indefinite matrix. knetc binds no cuSOLVER: the CUDA routines copy the matrices to the
host and back, for the small systems a model solves now and then.
"""
import numpy as np


def _on_cpu(function):
    def routine(*arrays_and_out, **params):
        *arrays, out = arrays_and_out
        out[...] = np.asarray(function(*arrays, **params)).reshape(out.shape)
    return routine


def _on_host(function):
    def routine(*arrays_and_out, **params):
        *arrays, out = arrays_and_out
        result = function(*(a.copy_to_host() for a in arrays), **params)
        out.copy_to_device(np.ascontiguousarray(result, out.dtype).reshape(out.shape))
    return routine


def _slogdet(a, part):
    return np.linalg.slogdet(a)[part]


def _eigh(a, part, UPLO):
    return np.linalg.eigh(a, UPLO)[part]  # (eigenvalues ascending, eigenvectors in columns)


def _svd(a, part):
    return np.linalg.svd(a, full_matrices=False)[part]  # (U, S descending, Vh)


def _qr(a, part):
    return np.linalg.qr(a)[part]  # (Q, R: reduced)


def adjugate_t(a):
    """The transpose of each matrix's adjugate, det(a) inv(a)^T where a is invertible, from the
    SVD a = U diag(s) V^T: det(U) det(V) U diag(c) V^T, c_i the product of the s_j, j != i
    (products of the others, not det / s_i: right at singular matrices too)."""
    u, s, vh = np.linalg.svd(a)
    ones = np.ones(s.shape[:-1] + (1,), s.dtype)
    before = np.cumprod(np.concatenate([ones, s[..., :-1]], -1), -1)
    after = np.cumprod(np.concatenate([ones, s[..., :0:-1]], -1), -1)[..., ::-1]
    sign = np.linalg.det(u) * np.linalg.det(vh)
    return (sign[..., None, None] * (u * (before * after)[..., None, :]) @ vh).astype(a.dtype)


inv_cpu, inv_cuda = _on_cpu(np.linalg.inv), _on_host(np.linalg.inv)
solve_cpu, solve_cuda = _on_cpu(np.linalg.solve), _on_host(np.linalg.solve)
slogdet_cpu, slogdet_cuda = _on_cpu(_slogdet), _on_host(_slogdet)
cholesky_cpu, cholesky_cuda = _on_cpu(np.linalg.cholesky), _on_host(np.linalg.cholesky)  # (lower; reads a's lower triangle)
eigh_cpu, eigh_cuda = _on_cpu(_eigh), _on_host(_eigh)
svd_cpu, svd_cuda = _on_cpu(_svd), _on_host(_svd)
qr_cpu, qr_cuda = _on_cpu(_qr), _on_host(_qr)
det_cpu, det_cuda = _on_cpu(np.linalg.det), _on_host(np.linalg.det)
adjugate_t_cpu, adjugate_t_cuda = _on_cpu(adjugate_t), _on_host(adjugate_t)
