"""Train the MNIST MLP with each of Knet's optimizers and print a table of test accuracies.

    python examples/mnist_optimizers.py [--epochs 10] [--target cpu|cuda|auto] [--seed 1]
                                        [--progress | --no-progress] [--plot curves.png]

The model and data are those of examples/mnist_mlp.py (784-64-10 ReLU MLP, batch 100, the
8,000 / 2,000 split of the shipped MNIST digits, `knetc.train.data.mnist`). The loss is
compiled with `@kn.compile`; training uses Knet's iterators, e.g.
`kn.adam(loss, data, lr=0.001)`: every step runs the compiled forward pass and adjoint
(`kn.diff` on a compiled function) and one fused update kernel per parameter. Every
optimizer starts from the same initial weights (`kn.seed_`) and sees the same batches.
`--plot FILE.png` draws each optimizer's training loss and test accuracy per epoch (needs
matplotlib); on a terminal `kn.progress` bars show the steps.
"""
import argparse
import sys
import time

import numpy as np

import knetc as kn
from knetc.train.data import mnist
from knetc.train.plot import (Curves, Sized, add_example_arguments, check_example_arguments,
                              showing_progress, positive)
from mnist_mlp import accuracy, loss, mlp, predict  # the example beside this one

# Knet's iterator functions and learning rates that suit this model (batch 100).
OPTIMIZERS = [
    ("sgd", dict(lr=0.2)),
    ("momentum", dict(lr=0.02, gamma=0.9)),
    ("nesterov", dict(lr=0.02, gamma=0.9)),
    ("adagrad", dict(lr=0.05)),
    ("rmsprop", dict(lr=0.001)),
    ("adadelta", dict(lr=1.0, rho=0.9)),
    ("adam", dict(lr=0.001)),
]


def batches(model, x, y, epochs, batchsize, seed):
    """(model, xb, yb) for every minibatch of `epochs` passes, shuffled the same way for
    every optimizer; a tuple item is splatted: loss(model, xb, yb)."""
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for xb, yb in kn.minibatch(x, y, batchsize, shuffle=True, rng=rng):
            yield model, xb, yb


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=positive, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batchsize", type=positive, default=100)
    add_example_arguments(parser)  # --target, --plot FILE.png, --progress/--no-progress
    args = parser.parse_args(argv)
    check_example_arguments(parser, args)  # (--target cuda only with a GPU)

    loss_fn, predict_fn = loss, predict
    if args.target != loss.requested_target:  # the same functions, compiled for another target
        loss_fn = kn.compile(loss.fn, target=args.target)
        predict_fn = kn.compile(predict.fn, target=args.target)

    xtrn, ytrn, xtst, ytst = mnist()
    print(f"knetc {kn.__version__}: MLP 784-64-10, {len(ytrn)} train / {len(ytst)} test digits, "
          f"batch {args.batchsize}, {args.epochs} epochs, target {loss_fn.target}", flush=True)
    rows = []
    curves = Curves(f"MNIST MLP 784-64-10, {len(OPTIMIZERS)} optimizers")
    started = time.perf_counter()
    for name, settings in OPTIMIZERS:
        kn.seed_(args.seed)
        model = mlp(784, 64, 10)
        t0 = time.perf_counter()
        per_epoch = len(kn.minibatch(xtrn, ytrn, args.batchsize))
        data = Sized(batches(model, xtrn, ytrn, args.epochs, args.batchsize, args.seed), args.epochs * per_epoch)
        steps = getattr(kn, name)(loss_fn, data, **settings)  # e.g. kn.adam(loss, data, lr=0.001)
        if showing_progress(args):
            steps = kn.progress(lambda p: f"{name} loss {p.currval:.4f}", steps)
        losses = []
        for value in steps:
            losses.append(value)
            if len(losses) % per_epoch == 0:  # an epoch done: its mean loss and the test accuracy
                epoch = len(losses) // per_epoch
                curves.add("loss", name, epoch, np.mean(losses[-per_epoch:]))
                if args.plot:  # (the accuracy per epoch costs an evaluation: only for the plot)
                    curves.add("test accuracy", name, epoch, accuracy(predict_fn, model, xtst, ytst))
        last_epoch = len(losses) // args.epochs
        rows.append((name, settings, float(np.mean(losses[-last_epoch:])),
                     accuracy(predict_fn, model, xtst, ytst), time.perf_counter() - t0))
        print(f"{name:9s} done: test accuracy {rows[-1][3]:.4f} ({rows[-1][4]:.2f}s)", flush=True)

    print(f"\n{'optimizer':10s} {'settings':22s} {'last-epoch loss':>16s} {'test accuracy':>14s} {'time':>7s}")
    for name, settings, trn_loss, acc, seconds in rows:
        shown = ", ".join(f"{k}={v}" for k, v in settings.items())
        print(f"{name:10s} {shown:22s} {trn_loss:16.4f} {acc:14.4f} {seconds:6.2f}s")
    print(f"total {time.perf_counter() - started:.2f}s (the first optimizer's time includes compiling)")
    if args.plot:
        print(f"training curves: {curves.save(args.plot)}")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
