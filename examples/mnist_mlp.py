"""Train a 784-64-10 ReLU MLP on MNIST with a loss compiled by knetc.

    python examples/mnist_mlp.py [--epochs 10] [--target cpu|cuda|auto] [--seed 1] [--lr 0.2]
                                 [--plot curves.png] [--progress | --no-progress]
    mpirun -np 2 python examples/mnist_mlp.py --parallel     # data-parallel, 2 processes

The loss is compiled with `@kn.compile` (parsed from this source, typed, differentiated
symbolically, fused into Numba kernels); `kn.grad(loss)` is its compiled gradient
(`kn.gradloss(loss)`, used below, also returns the loss). Training
is plain minibatch SGD (batch 100, w -= lr * dw for every parameter), written out below in
numpy so that nothing but the loss and its gradient comes from knetc. Data: the 10,000
official MNIST test digits shipped in examples/data/mnist, the first 8,000 to train on and
the last 2,000 to test (see examples/data/README.md).

With a GPU (`--target cuda`, or `auto` on a machine with one) the parameters are
`kn.atype()` arrays, KnetArrays on the device, and stay there: each step copies the batch
up, runs the compiled gradient and one fused SGD kernel per parameter (`kn.update_`) on the
device, and copies the loss (one number) down to print the epoch's mean.

`--parallel` (under `mpirun -np N`; `pip install -e .[mpi]`) trains data-parallel with
`kn.parallel`: every rank holds the model, takes `batchsize/N` digits of every batch
(`minibatch(..., shard=kn.parallel.shard())`) and averages the gradients across the ranks
(`kn.parallel.allreduce_grads`) before its update, so N ranks follow the same steps as one
process; rank 0 prints. Without `--parallel` those calls do nothing.

`--plot curves.png` writes the training loss and test accuracy per epoch (needs matplotlib:
`pip install -e .[plot]`); a `kn.progress` bar shows each epoch's batches on a terminal.
"""
import argparse
import contextlib
import math
import os
import sys
import time

import numpy as np

import knetc as kn
from knetc.train.data import mnist
from knetc.train.plot import (Curves, check_batches, Sized, add_example_arguments, check_example_arguments,
                              showing_progress, positive)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "mnist")


@kn.compile
def loss(model, x, y):
    for w, b in model[:-1]:
        x = kn.relu(x @ w + b)
    w, b = model[-1]
    return kn.nll(x @ w + b, y)


@kn.compile
def predict(model, x):
    for w, b in model[:-1]:
        x = kn.relu(x @ w + b)
    w, b = model[-1]
    return x @ w + b


def mlp(*sizes, atype=None):
    """[(w, b), ...] for the layer sizes: w (in, out) Xavier-uniform, b zeros; atype: the
    array type (default kn.atype(): KnetArrays when a GPU is active, else numpy float32)."""
    return [(kn.param(i, o, atype=atype), kn.param0(o, atype=atype)) for i, o in zip(sizes[:-1], sizes[1:])]


def accuracy(predict, model, x, y, batchsize=1000):
    correct = 0
    for xb, yb in kn.minibatch(x, y, batchsize, partial=True):
        correct += int(np.sum(np.argmax(predict(model, xb), axis=1) == yb))
    return correct / len(y)


def sgd_(model, grads, lr):
    """Plain SGD, in place: w -= lr * dw for every parameter (on the device, for KnetArray
    parameters, one fused update kernel each)."""
    for (w, b), (dw, db) in zip(model, grads):
        if isinstance(w.value, kn.KnetArray):
            kn.update_([w.value, b.value], [dw, db], kn.SGD(lr=lr))
        else:
            w.value -= lr * dw
            b.value -= lr * db


def validation_loss(lr, hidden, epochs, xtrn, ytrn, xval, yval, seed=1):
    """Train a 784-hidden-10 MLP with SGD and return its loss on (xval, yval); used by the
    hyperparameter demos. Eager (`loss.fn`): each configuration has other shapes, and a
    compilation per configuration would cost more than it saves on these short runs."""
    kn.seed_(seed)  # the same initialisation and batch order for every configuration
    model = mlp(784, hidden, 10)
    dloss = kn.grad(loss.fn)
    for _ in range(epochs):
        for x, y in kn.minibatch(xtrn, ytrn, 100, shuffle=True):
            sgd_(model, dloss(model, x, y), lr)
    value = float(loss.fn(model, xval, yval))
    return value if math.isfinite(value) else math.inf  # a diverged run is a bad one, not out of range


def train(model, gradloss, data, lr):
    """One epoch of minibatch SGD: a step per batch (x, y), yielding the batch's loss.
    Under --parallel the gradients and the loss are averaged across the ranks (outside a
    kn.parallel context, allreduce_grads and average return what they are given)."""
    for x, y in data:
        grads, batch_loss = gradloss(model, x, y)
        sgd_(model, kn.parallel.allreduce_grads(grads), lr)
        yield kn.parallel.average(float(batch_loss))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=positive, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.2, help="SGD learning rate")
    parser.add_argument("--batchsize", type=positive, default=100, help="the global batch (split across ranks)")
    parser.add_argument("--parallel", action="store_true",
                        help="data-parallel on MPI: run under mpirun -np N (pip install -e .[mpi])")
    add_example_arguments(parser)  # --target, --plot FILE.png, --progress/--no-progress
    args = parser.parse_args(argv)
    check_example_arguments(parser, args)  # (--target cuda only with a GPU)
    # MPI first: with GPUs, init gives each rank its own before any device array exists.
    with kn.parallel.init() if args.parallel else contextlib.nullcontext():
        return _main(args, parser)


def _main(args, parser):
    say = print if kn.parallel.rank() == 0 else (lambda *a, **k: None)  # rank 0 alone prints
    loss_fn, predict_fn = loss, predict
    if args.target != loss.requested_target:  # same functions, compiled for another target
        loss_fn = kn.compile(loss.fn, target=args.target)
        predict_fn = kn.compile(predict.fn, target=args.target)

    kn.seed_(args.seed)
    xtrn, ytrn, xtst, ytst = mnist(DATA)
    check_batches(parser, args.batchsize, len(ytrn), "training digits")
    # On the GPU the parameters live there (kn.atype(): KnetArray float32); else numpy float32.
    model = mlp(784, 64, 10, atype=kn.atype() if loss_fn.target == "cuda" else np.float32)
    kn.parallel.broadcast_(model)  # every rank starts from rank 0's parameters
    gradloss = kn.gradloss(loss_fn)  # the compiled gradient w.r.t. the model, and the loss
    ranks = f", {kn.parallel.size()} ranks of {args.batchsize // kn.parallel.size()}" if args.parallel else ""
    say(f"knetc {kn.__version__}: MLP 784-64-10, {len(ytrn)} train / {len(ytst)} test digits, "
        f"batch {args.batchsize}{ranks}, SGD lr {args.lr}, target {loss_fn.target}, parameters "
        f"{type(model[0][0].value).__name__}", flush=True)

    curves = Curves("MNIST MLP 784-64-10, SGD")
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        data = kn.minibatch(xtrn, ytrn, args.batchsize, shuffle=True, shard=kn.parallel.shard())
        steps = Sized(train(model, gradloss, data, args.lr), len(data))  # yields each batch's loss
        if showing_progress(args) and kn.parallel.rank() == 0:
            steps = kn.progress(lambda p, epoch=epoch: f"epoch {epoch} loss {p.currval:.4f}", steps)
        losses = list(steps)
        trn_loss = float(np.mean(losses))  # the mean over the epoch's batches, as they were trained
        acc = accuracy(predict_fn, model, xtst, ytst)
        curves.add("loss", "train", epoch, trn_loss)
        curves.add("accuracy", "test", epoch, acc)
        say(f"epoch {epoch:3d}  train loss {trn_loss:.4f}  test accuracy {acc:.4f}  "
            f"({time.perf_counter() - t0:.2f}s)", flush=True)
    say(f"total {time.perf_counter() - started:.2f}s (the first epoch includes compiling)")
    if args.plot and kn.parallel.rank() == 0:
        print(f"training curves: {curves.save(args.plot)}")
    return acc


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
