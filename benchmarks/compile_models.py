"""The models of benchmarks/compile.py that are not in examples/: knetc's compiled tanh RNN
(knetc reads a compiled function's source, so it lives in a file), and every model written
in jax.numpy for the JAX side.

knetc's MNIST MLP, deep MLPs and LeNet are examples/mnist_mlp.py's `loss`/`mlp` and
examples/lenet.py's `loss`/`lenet`; the JAX functions below compute the same things with
the same shapes (instances first, dense weights `(in, out)`, 0-based labels). Importing this
module does not import JAX: `jax_models()` does.
"""
import numpy as np

import knetc as kn


@kn.compile
def rnn_loss(w, xs, h):
    """A hand-written tanh RNN over xs (T, B, X) from h (B, H): the mean of the last state squared."""
    W, R, b = w
    for t in range(xs.shape[0]):
        h = np.tanh(xs[t] @ W + h @ R + b)
    return kn.mean(h * h)


def rnn_weights(inputs, hidden):
    """[W (X, H), R (H, H), b (H,)]: Xavier-initialised matrices, zero bias (knetc Params)."""
    return [kn.param(inputs, hidden), kn.param(hidden, hidden), kn.param0(hidden)]


def jax_models():
    """The JAX functions, as a dict: mlp_loss, rnn_loss (Python loop, unrolled by jit),
    rnn_scan_loss (lax.scan), lenet_loss, adam_step (a jit-able LeNet training step)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    def nll(scores, labels):
        logp = jax.nn.log_softmax(scores, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))

    def mlp_loss(model, x, y):
        for w, b in model[:-1]:
            x = jax.nn.relu(x @ w + b)
        w, b = model[-1]
        return nll(x @ w + b, y)

    def rnn_loss(w, xs, h):
        W, R, b = w
        for t in range(xs.shape[0]):
            h = jnp.tanh(xs[t] @ W + h @ R + b)
        return jnp.mean(h * h)

    def rnn_scan_loss(w, xs, h):
        W, R, b = w

        def cell(h, x):
            return jnp.tanh(x @ W + h @ R + b), None
        h, _ = lax.scan(cell, h, xs)
        return jnp.mean(h * h)

    def conv(w, x):  # kn.conv4's default mode=0 is a true convolution: the filter flipped
        return lax.conv_general_dilated(x, w[:, :, ::-1, ::-1], (1, 1), "VALID",
                                        dimension_numbers=("NCHW", "OIHW", "NCHW"))

    def pool(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def lenet_loss(w, x, y):
        c1, cb1, c2, cb2, w3, b3, w4, b4 = w
        x = pool(jax.nn.relu(conv(c1, x) + cb1))
        x = pool(jax.nn.relu(conv(c2, x) + cb2))
        x = jax.nn.relu(x.reshape(x.shape[0], -1) @ w3 + b3)
        return nll(x @ w4 + b4, y)

    def adam_step(w, m, v, t, x, y, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8):
        """One Adam step of LeNet (knetc's Adam: eps outside the square root)."""
        g = jax.grad(lenet_loss)(w, x, y)
        t = t + 1
        m = [beta1 * mi + (1 - beta1) * gi for mi, gi in zip(m, g)]
        v = [beta2 * vi + (1 - beta2) * gi * gi for vi, gi in zip(v, g)]
        w = [wi - lr / (jnp.sqrt(vi / (1 - beta2 ** t)) + eps) * (mi / (1 - beta1 ** t))
             for wi, mi, vi in zip(w, m, v)]
        return w, m, v, t

    return {"mlp_loss": mlp_loss, "rnn_loss": rnn_loss, "rnn_scan_loss": rnn_scan_loss,
            "lenet_loss": lenet_loss, "adam_step": adam_step}
