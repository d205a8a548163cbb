"""Activations and losses, as public names (`kn.<name>`).

The ops live in nn.py (softmax family, elu/selu/invx, nll, accuracy, bce, logistic) and
elementwise.py (relu, sigm).
"""
from .elementwise import relu, sigm
from .nn import accuracy, bce, elu, invx, logistic, logp, logsoftmax, logsumexp, nll, selu, softmax

__all__ = ["relu", "sigm", "elu", "selu", "invx", "softmax", "logsoftmax", "logp", "logsumexp", "nll",
           "accuracy", "bce", "logistic"]
