"""examples/resnet.py in a tiny configuration (widths 4-8-8, 12x12 images, batch 6, float64):
the compiled loss and its gradient equal the eager ones (values, gradients, and the running
statistics batchnorm updates), the forward loss and gradients equal PyTorch's with the same
weights (training and inference), a few Adam steps on real digits lower the loss, and the
example's --help works. Every test shares one set of compiled kernels (float64, these ranks):
the file takes 18 s on a 2-core CPU (up to a minute while a training run shares the cores),
most of it the first test's Numba compiling.

The full example (6 epochs, 98.65% or more) runs for minutes and is not repeated here; its
figures are in the module docstring of examples/resnet.py."""
import os
import subprocess
import sys

import numpy as np
import pytest

import knetc as kn

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
sys.path.insert(0, EXAMPLES)
import resnet  # noqa: E402

WIDTHS, SIZE, BATCH = (4, 8, 8), 12, 6


def tiny_model(seed=3):
    kn.seed_(seed)
    return resnet.resnet(widths=WIDTHS, atype=np.float64)


def tiny_batch(seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((BATCH, 1, SIZE, SIZE)), rng.integers(0, 10, BATCH)


def conv_layers(model):
    """Every (filter, bnparams, moments) of the model, in the order layers() uses them."""
    stem, blocks, _ = model
    return [stem] + [layer for block in blocks for layer in block]


def leaves(tree):
    """The arrays of a model or of its gradient (which has None where the model has moments)."""
    if isinstance(tree, (list, tuple)):
        return [a for t in tree for a in leaves(t)]
    if tree is None or isinstance(tree, kn.BNMoments):
        return []
    return [np.asarray(kn.value(tree))]


@pytest.fixture(scope="module")
def compiled():
    return kn.compile(resnet.loss.fn, target="cpu")


def test_compiled_loss_and_gradient_equal_eager(compiled):
    x, y = tiny_batch()
    mc, me = tiny_model(), tiny_model()
    for step in range(2):  # the second step normalises with the statistics the first updated
        (gc, vc), (ge, ve) = kn.gradloss(compiled)(mc, x + step, y), kn.gradloss(resnet.loss.fn)(me, x + step, y)
        assert np.isclose(vc, ve, rtol=1e-10)
        for a, b in zip(leaves(gc), leaves(ge)):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
        for (_, _, a), (_, _, b) in zip(conv_layers(mc), conv_layers(me)):
            np.testing.assert_allclose(a.mean, b.mean, rtol=1e-10, atol=1e-14)
            np.testing.assert_allclose(a.var, b.var, rtol=1e-10, atol=1e-14)
    # a plain call is inference: the running statistics, unchanged
    before = [m.mean.copy() for _, _, m in conv_layers(mc)]
    assert np.isclose(compiled(mc, x, y), resnet.loss.fn(me, x, y), rtol=1e-10)
    for b, (_, _, m) in zip(before, conv_layers(mc)):
        np.testing.assert_array_equal(m.mean, b)
    assert all(np.abs(m.mean).sum() > 0 for _, _, m in conv_layers(mc))  # training did move them


def torch_loss(torch, model, x, y, training, running=None):
    """The same network in PyTorch from knetc's arrays: conv2d with the flipped filters
    (conv4's default mode 0 is a true convolution), batch_norm, mean over the spatial axes.
    Returns the loss and the leaf tensors (filter, bnparams per layer, then w, b); `running`
    (a list) receives each layer's running mean and variance, which training updates."""
    F = torch.nn.functional
    stem, blocks, (w, b) = model
    tensors, running = [], [] if running is None else running

    def conv_bn(layer, h, stride=1, padding=1):
        filt, bn, moments = layer
        filt = torch.tensor(np.asarray(kn.value(filt))[:, :, ::-1, ::-1].copy(), requires_grad=True)
        bn = torch.tensor(np.asarray(kn.value(bn)), requires_grad=True)
        c = filt.shape[0]
        fresh = moments.mean is None  # bnmoments() makes zeros and ones on first use
        mean = torch.zeros(c, dtype=torch.float64) if fresh else torch.tensor(moments.mean.reshape(-1).copy())
        var = torch.ones(c, dtype=torch.float64) if fresh else torch.tensor(moments.var.reshape(-1).copy())
        tensors.extend([filt, bn])
        running.append((mean, var))
        h = F.conv2d(h, filt, stride=stride, padding=padding)
        return F.batch_norm(h, mean, var, bn[:c], bn[c:], training=training, momentum=0.1, eps=1e-5)

    h = torch.relu(conv_bn(stem, torch.tensor(x)))
    for block in blocks:
        if len(block) == 3:
            g = torch.relu(conv_bn(block[0], h, stride=2))
            h = torch.relu(conv_bn(block[1], g) + conv_bn(block[2], h, stride=2, padding=0))
        else:
            h = torch.relu(conv_bn(block[1], torch.relu(conv_bn(block[0], h))) + h)
    w, b = (torch.tensor(np.asarray(kn.value(a)), requires_grad=True) for a in (w, b))
    tensors.extend([w, b])
    out = F.cross_entropy(h.mean(dim=(2, 3)) @ w + b, torch.tensor(y))
    return out, tensors


def test_forward_and_gradient_equal_pytorch(compiled):
    torch = pytest.importorskip("torch")
    x, y = tiny_batch(1)
    model = tiny_model(4)
    # training: batch statistics (torch first: knetc's step then updates the running ones)
    running = []
    want, tensors = torch_loss(torch, model, x, y, training=True, running=running)
    want.backward()
    gradient, value = kn.gradloss(compiled)(model, x, y)
    assert np.isclose(value, want.item(), rtol=1e-10)
    got = leaves(gradient)
    torch_grads = []
    for i in range(len(conv_layers(model))):
        torch_grads += [tensors[2 * i].grad.numpy()[:, :, ::-1, ::-1], tensors[2 * i + 1].grad.numpy()]
    torch_grads += [tensors[-2].grad.numpy(), tensors[-1].grad.numpy()]
    assert len(got) == len(torch_grads)
    for g, t in zip(got, torch_grads):
        np.testing.assert_allclose(g, t, rtol=1e-8, atol=1e-12)
    for (_, _, moments), (mean, var) in zip(conv_layers(model), running, strict=True):
        np.testing.assert_allclose(moments.mean.ravel(), mean.numpy(), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(moments.var.ravel(), var.numpy(), rtol=1e-10, atol=1e-14)
    # inference: the running statistics the step above left
    want, _ = torch_loss(torch, model, x, y, training=False)
    assert np.isclose(compiled(model, x, y), want.item(), rtol=1e-10)


def test_a_few_adam_steps_on_digits_lower_the_loss(compiled):
    from knetc.train.data import mnist
    xtrn, ytrn, _, _ = mnist()
    x, y = xtrn[:8 * BATCH].reshape(-1, 1, 28, 28)[:, :, 8:20, 8:20].astype(np.float64), ytrn[:8 * BATCH]
    model = tiny_model(5)
    before = compiled(model, x, y)
    kn.seed_(5)
    losses = []
    for epoch in range(1, 5):  # as the example trains, with its learning-rate schedule
        lr = resnet.cosine(0.01, epoch, 4)
        resnet.set_lr(model, lr)
        data = ((model, xb, yb) for xb, yb in kn.minibatch(x, y, BATCH, shuffle=True))
        losses.append(float(np.mean(list(kn.adam(compiled, data, lr=lr)))))
        assert all(p.opt.lr == lr for p in kn.params(model))
    assert losses[-1] < 0.8 * losses[0], losses
    assert compiled(model, x, y) < before  # inference with the running statistics learned too


def test_help():
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, "resnet.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "residual" in proc.stdout and "--epochs" in proc.stdout and "--target" in proc.stdout
