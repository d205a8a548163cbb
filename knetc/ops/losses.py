"""Activations, losses and the AutoGrad extras, as public names (`kn.<name>`).

The ops live in nn.py (softmax family, elu/selu/invx, nll, accuracy, bce, logistic) and
elementwise.py (relu, sigm); the decorators `primitive`/`zerograd` in autograd.py and the
numerical checks `gcheck`/`gradcheck` in gradcheck.py.
"""
from ..autograd import primitive, zerograd
from ..gradcheck import gcheck, gradcheck
from .elementwise import relu, sigm
from .nn import accuracy, bce, elu, invx, logistic, logp, logsoftmax, logsumexp, nll, selu, softmax

__all__ = ["relu", "sigm", "elu", "selu", "invx", "softmax", "logsoftmax", "logp", "logsumexp", "nll",
           "accuracy", "bce", "logistic", "gcheck", "gradcheck", "primitive", "zerograd"]
