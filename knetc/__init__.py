"""knetc: Knet's vocabulary in Python, compiled to fused Numba CUDA and CPU kernels.

    import knetc as kn
    w = kn.Param(np.random.randn(784, 10))
    y = kn.diff(lambda: kn.nll(x @ w, labels))
    kn.grad(y, w)
"""
from .version import __version__  # noqa: F401
from . import numpy_compat as _numpy_compat

_numpy_compat.restore_row_stack()
_numpy_compat.defer_f2py()
_numpy_compat.load_blas_table()
from .runtime import host_memory

host_memory.keep_freed_buffers()  # steps reuse their large buffers (runtime/host_memory.py)
from .errors import CompileError, ShapeError  # noqa: F401
from .ops import OPS  # noqa: F401
from .ops.elementwise import abs, exp, log, relu, sigm, sign, sqrt, tanh  # noqa: F401
from .ops.elementwise import eq, ge, gt, le, lt, ne  # noqa: F401
from .ops.reduce import maximum, mean, sum  # noqa: F401
from .ops.linalg import matmul  # noqa: F401
from .ops.nn import logp, logsoftmax, logsumexp, nll, softmax  # noqa: F401
from .ops.api import reshape, transpose  # noqa: F401
# Each of these modules lists its public names in __all__.
from .ops.math import *  # noqa: F401,F403  unary and binary broadcasting functions
from .ops.arrays import *  # noqa: F401,F403  reductions, statistics, array operations, indexing
from .ops.base import *  # noqa: F401,F403  Julia Base's and older Knet's names: sumabs, isapprox, copyto_, ...
from .ops.losses import *  # noqa: F401,F403  activations and losses
from .ops.conv import *  # noqa: F401,F403  conv4, deconv4, mat
from .ops.pooling import *  # noqa: F401,F403  pool, unpool
from .ops.normalization import *  # noqa: F401,F403  batchnorm, dropout
from .knetarray import *  # noqa: F401,F403  KnetArray, cpucopy, gpucopy
from .autograd import Param, diff, getval, grad, gradloss, params, value  # noqa: F401
from .autograd import primitive, zerograd  # noqa: F401
from .gradcheck import gcheck, gradcheck  # noqa: F401
from .compiler import compile, CompiledFunction  # noqa: F401,E402
from .report import stats  # noqa: F401,E402
from .runtime.handles import allow_tf32  # noqa: F401,E402  TF32 for cuDNN/cuBLAS float32 (off by default)
from .inspection import inspect  # noqa: F401,E402
from .train.init import gaussian, param, param0, seed_, xavier, xavier_normal, xavier_uniform  # noqa: F401,E402
from .train.data import minibatch  # noqa: F401,E402
from .train.init import atype, bilinear, rand_, randn_  # noqa: F401,E402
from .layers import *  # noqa: F401,F403,E402  RNN, rnnparam(s), BNMoments, bnmoments, bnparams
from .train.io import load, save, serializable  # noqa: F401,E402
from .train.hyperparameters import goldensection, hyperband  # noqa: F401,E402
from .autograd import training  # noqa: F401,E402
from .train.optimizers import SGD, Sgd, Momentum, Nesterov, Adagrad, Rmsprop, Adadelta, Adam, optimizers, update_  # noqa: F401,E402,E501
from .train.iterators import (minimize, minimize_, sgd, sgd_, momentum, momentum_, nesterov, nesterov_,  # noqa: F401,E402
                              adagrad, adagrad_, rmsprop, rmsprop_, adadelta, adadelta_, adam, adam_,
                              converge, converge_, progress, progress_)
from .train import parallel  # noqa: F401,E402  kn.parallel: data-parallel training on MPI and NCCL
