"""Ops of kind "call" (library routines: conv, pooling, RNN, gathers) in compiled code: the
driver calls the routine named for its target, in the forward and the adjoint programs."""
import numpy as np
import pytest

import knetc as kn
from knetc.ops.core import Aval, Op

from numgrad import numgrad


def _cumsum_impl(x, reverse):
    x = np.asarray(x)
    return np.flip(np.cumsum(np.flip(x, -1), -1), -1) if reverse else np.cumsum(x, -1)


cumsum = Op("test_cumsum", lambda x, reverse: Aval(x.shape, x.dtype), _cumsum_impl,
            (lambda dy, y, x, reverse: cumsum(dy, reverse=not reverse),), "call",
            lowering={"cpu": "call_routines:cumsum_cpu", "cuda": "call_routines:cumsum_cuda"})


def loss(w, x):
    return kn.sum(kn.tanh(cumsum(x * w, reverse=False)) ** 2)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_call_op_value_and_gradient_match_eager_and_numerical(target):
    rng = np.random.default_rng(0)
    w, x = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    compiled = kn.compile(loss, target=target)
    gradient, value = kn.gradloss(compiled)(w, x)
    assert np.isclose(value, loss(w, x), rtol=1e-12)
    np.testing.assert_allclose(gradient, kn.grad(loss)(w, x), rtol=1e-10)
    np.testing.assert_allclose(gradient, numgrad(lambda w: loss(w, x), w), rtol=1e-6, atol=1e-8)
    assert "cumsum_" in open(compiled.generated_modules()[0].__file__).read()


def test_call_op_needs_both_routines():
    with pytest.raises(ValueError, match="needs a 'cpu' and a 'cuda' routine"):
        Op("broken", lambda x: x, lambda x: x, (None,), "call", lowering={"cpu": "m:f"})
