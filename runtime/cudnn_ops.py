"""cuDNN pooling and batch normalization (legacy API) on Numba device arrays.

knetc.kernels.pool calls the pooling functions when ``available()`` (a real GPU with
libcudnn, see knetc.runtime.cudnn) and falls back to knetc's Numba kernels otherwise;
knetc.kernels.batchnorm calls the batchnorm ones, which CUDA-compiled batchnorm uses when
cuDNN is available (knetc.ops.normalization decides while tracing). The choices are
reported under KNETC_LOG=cudnn. Knet's pooling modes are cuDNN's
cudnnPoolingMode_t values (0 max, 1 average including padding, 2 average excluding
padding, 3 deterministic max) and maxpooling_nan_opt is cudnnNanPropagation_t.

The ctypes signatures of the functions used here are declared in ``SIGNATURES`` (loading
and declaring needs no GPU; running does).

Example::

    if cudnn_ops.available():
        cudnn_ops.pool_forward(x_dev, y_dev, (1, 2, 2), (0, 0, 0), (1, 2, 2), 0, 1, 1.0)
"""
import ctypes

import numpy as np

from . import cudnn
from .cudnn import available  # noqa: F401 (callers ask this module)

_p, _i, _d = ctypes.c_void_p, ctypes.c_int, ctypes.c_double
_pp, _pi = ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int)

# name -> (restype, argtypes); every status-returning function returns int (cudnnStatus_t)
SIGNATURES = {
    "cudnnCreatePoolingDescriptor": (_i, [_pp]),
    "cudnnDestroyPoolingDescriptor": (_i, [_p]),
    # desc, mode, maxpoolingNanOpt, nbDims, windowDimA[], paddingA[], strideA[]
    "cudnnSetPoolingNdDescriptor": (_i, [_p, _i, _i, _i, _pi, _pi, _pi]),
    # poolingDesc, inputDesc, nbDims (of the tensor), outputTensorDimA[]
    "cudnnGetPoolingNdForwardOutputDim": (_i, [_p, _p, _i, _pi]),
    # handle, poolingDesc, *alpha, xDesc, x, *beta, yDesc, y
    "cudnnPoolingForward": (_i, [_p, _p, _p, _p, _p, _p, _p, _p]),
    # handle, poolingDesc, *alpha, yDesc, y, dyDesc, dy, xDesc, x, *beta, dxDesc, dx
    "cudnnPoolingBackward": (_i, [_p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p]),
    # handle, mode, *alpha, *beta, xDesc, x, yDesc, y, bnDesc, scale, bias, factor, runningMean,
    # runningVar, epsilon, saveMean, saveInvVariance
    "cudnnBatchNormalizationForwardTraining": (_i, [_p, _i, _p, _p, _p, _p, _p, _p, _p, _p, _p, _d, _p, _p,
                                                    _d, _p, _p]),
    # handle, mode, *alpha, *beta, xDesc, x, yDesc, y, bnDesc, scale, bias, mean, var, epsilon
    "cudnnBatchNormalizationForwardInference": (_i, [_p, _i, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _d]),
    # handle, mode, *alphaData, *betaData, *alphaParam, *betaParam, xDesc, x, dyDesc, dy, dxDesc, dx,
    # bnDesc, scale, dScale, dBias, epsilon, savedMean, savedInvVariance
    "cudnnBatchNormalizationBackward": (_i, [_p, _i, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p,
                                             _d, _p, _p]),
}

CUDNN_BATCHNORM_SPATIAL = 1  # per-channel statistics over N and the spatial axes
CUDNN_BN_MIN_EPSILON = 1e-5

def lib():
    """libcudnn with this module's signatures declared (no GPU needed). Raises if not installed."""
    return cudnn.lib_with(SIGNATURES)


def pool_supported(dtype):
    return np.dtype(dtype) in (np.dtype(np.float32), np.dtype(np.float64))


class PoolingDescriptor(cudnn.Descriptor):
    """A cudnnPoolingDescriptor_t for one (window, padding, stride, mode, nan_opt)."""

    def __init__(self, window, padding, stride, mode, nan_opt):
        lib()  # declare the pooling signatures before Descriptor creates one
        super().__init__("Pooling")
        n = len(window)
        cudnn.check(lib().cudnnSetPoolingNdDescriptor(
            self.value, int(mode), int(nan_opt), n, cudnn._ints(window), cudnn._ints(padding),
            cudnn._ints(stride)), "cudnnSetPoolingNdDescriptor")


def pooled_shape(xshape, dtype, window, padding, stride, mode=0, nan_opt=1):
    """cuDNN's output shape for pooling an array of xshape (no GPU needed)."""
    nsp = len(xshape) - 2
    desc = PoolingDescriptor(tuple(window)[-nsp:], tuple(padding)[-nsp:], tuple(stride)[-nsp:], mode, nan_opt)
    xd = cudnn.tensor_descriptor(xshape, dtype)
    dims = (ctypes.c_int * len(xshape))()
    cudnn.check(lib().cudnnGetPoolingNdForwardOutputDim(desc.value, xd.value, len(xshape), dims),
                "cudnnGetPoolingNdForwardOutputDim")
    return tuple(dims)


_plans = {}  # (shapes, params, dtype) -> (pooling descriptor, x descriptor, y descriptor)


def _plan(xshape, yshape, dtype, window, padding, stride, mode, nan_opt):
    """Descriptors for one pooling shape, made once. 4-D arrays use the (h, w) entries."""
    nsp = len(xshape) - 2
    window, padding, stride = tuple(window)[-nsp:], tuple(padding)[-nsp:], tuple(stride)[-nsp:]
    key = (tuple(xshape), tuple(yshape), np.dtype(dtype).str, window, padding, stride, int(mode), int(nan_opt))
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = (PoolingDescriptor(window, padding, stride, mode, nan_opt),
                              cudnn.tensor_descriptor(xshape, dtype), cudnn.tensor_descriptor(yshape, dtype))
    return plan


def pool_forward(x, out, window, padding, stride, mode, nan_opt, alpha):
    """out = alpha * pool(x) with cudnnPoolingForward."""
    pd, xd, yd = _plan(x.shape, out.shape, x.dtype, window, padding, stride, mode, nan_opt)
    a, b = cudnn.scalar_pointer(alpha, x.dtype), cudnn.scalar_pointer(0.0, x.dtype)
    cudnn.check(lib().cudnnPoolingForward(cudnn.handle(), pd.value, a, xd.value, cudnn.device_pointer(x), b,
                                          yd.value, cudnn.device_pointer(out)), "cudnnPoolingForward")


def pool_backward(x, y, dy, out, window, padding, stride, mode, nan_opt, alpha):
    """out = dx of y = alpha * pool(x) with cudnnPoolingBackward. For max pooling cuDNN
    finds each window's maximum by comparing x with y, so y must be pool(x) unscaled:
    callers use this only when alpha == 1 (knetc.kernels.pool checks)."""
    pd, xd, yd = _plan(x.shape, dy.shape, x.dtype, window, padding, stride, mode, nan_opt)
    a, b = cudnn.scalar_pointer(alpha, x.dtype), cudnn.scalar_pointer(0.0, x.dtype)
    cudnn.check(lib().cudnnPoolingBackward(
        cudnn.handle(), pd.value, a, yd.value, cudnn.device_pointer(y), yd.value, cudnn.device_pointer(dy),
        xd.value, cudnn.device_pointer(x), b, xd.value, cudnn.device_pointer(out)), "cudnnPoolingBackward")


# ----------------------------------------------------------------------------- batchnorm
# x is (N,C), (N,C,H,W) or (N,C,D,H,W) (2-D as (N,C,1,1)); params is Knet's one vector
# [scale; bias] of 2C entries; running mean and var hold C entries each. All of x's dtype.

def batchnorm_supported(dtype, eps):
    return np.dtype(dtype) in (np.dtype(np.float32), np.dtype(np.float64)) and eps >= CUDNN_BN_MIN_EPSILON


_bn_plans = {}


def _bn_plan(shape, dtype):
    """(x descriptor, scale/bias/mean/var descriptor) for one shape, made once."""
    key = (tuple(shape), np.dtype(dtype).str)
    plan = _bn_plans.get(key)
    if plan is None:
        per_channel = (1, shape[1]) + (1,) * (len(shape) - 2)
        plan = _bn_plans[key] = (cudnn.tensor_descriptor(shape, dtype), cudnn.tensor_descriptor(per_channel, dtype))
    return plan


def _halves(params):
    """Device addresses of the scale (first C entries) and the bias (last C) of params."""
    base = cudnn.device_pointer(params)
    return base, base + (params.size // 2) * params.dtype.itemsize


def batchnorm_forward_training(x, params, mean, var, out, eps, momentum):
    """out = normalized x with batch statistics; running mean/var updated in place (cuDNN
    uses the unbiased variance for the running variance, as knetc's own path does)."""
    xd, bd = _bn_plan(x.shape, x.dtype)
    scale, bias = _halves(params)
    one, zero = cudnn.scalar_pointer(1.0, x.dtype), cudnn.scalar_pointer(0.0, x.dtype)
    cudnn.check(lib().cudnnBatchNormalizationForwardTraining(
        cudnn.handle(), CUDNN_BATCHNORM_SPATIAL, one, zero, xd.value, cudnn.device_pointer(x), xd.value,
        cudnn.device_pointer(out), bd.value, scale, bias, float(momentum), cudnn.device_pointer(mean),
        cudnn.device_pointer(var), float(eps), None, None), "cudnnBatchNormalizationForwardTraining")


def batchnorm_forward_inference(x, params, mean, var, out, eps):
    """out = (x - mean) / sqrt(var + eps) * scale + bias with the running statistics."""
    xd, bd = _bn_plan(x.shape, x.dtype)
    scale, bias = _halves(params)
    one, zero = cudnn.scalar_pointer(1.0, x.dtype), cudnn.scalar_pointer(0.0, x.dtype)
    cudnn.check(lib().cudnnBatchNormalizationForwardInference(
        cudnn.handle(), CUDNN_BATCHNORM_SPATIAL, one, zero, xd.value, cudnn.device_pointer(x), xd.value,
        cudnn.device_pointer(out), bd.value, scale, bias, cudnn.device_pointer(mean), cudnn.device_pointer(var),
        float(eps)), "cudnnBatchNormalizationForwardInference")


def batchnorm_backward(x, params, dy, dx, dparams, eps):
    """dx and dparams ([dscale; dbias]) of training-mode batchnorm; cuDNN recomputes the
    batch statistics (no saved ones are passed)."""
    xd, bd = _bn_plan(x.shape, x.dtype)
    scale, _ = _halves(params)
    dscale, dbias = _halves(dparams)
    one, zero = cudnn.scalar_pointer(1.0, x.dtype), cudnn.scalar_pointer(0.0, x.dtype)
    cudnn.check(lib().cudnnBatchNormalizationBackward(
        cudnn.handle(), CUDNN_BATCHNORM_SPATIAL, one, zero, one, zero, xd.value, cudnn.device_pointer(x),
        xd.value, cudnn.device_pointer(dy), xd.value, cudnn.device_pointer(dx), bd.value, scale, dscale, dbias,
        float(eps), None, None), "cudnnBatchNormalizationBackward")
