"""Tune the learning rate and hidden size of a small MNIST MLP with kn.goldensection.

    python examples/goldensection_demo.py [--quick] [--epochs 2] [--ntrain 3000]

As Knet's goldensection_demo: goldensection searches x in R^2 starting from 0 with unit
steps; f maps x to lr = 0.1 * exp(x[0]) and hidden = ceil(32 * exp(x[1])) (so the search
starts at lr 0.1, 32 hidden units and moves by multiplicative steps), trains a 784-hidden-10
ReLU MLP with SGD from a fixed seed and returns the loss (nll) on held-out digits, or NaN
for a hidden size out of range. Training is eager (kn.grad and a numpy update): each hidden
size is a new shape, which a compiled loss would recompile. Runs in a few seconds.
"""
import argparse
import math
import time

import knetc as kn
from knetc.train.plot import positive
from knetc.train.data import mnist

from mnist_mlp import DATA, validation_loss  # the example beside this one


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="less data and a coarser search (for tests)")
    parser.add_argument("--epochs", type=positive, default=2)
    parser.add_argument("--ntrain", type=int, default=3000)
    parser.add_argument("--dxmin", type=float, default=0.1)
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.ntrain, args.dxmin = 1, 1000, 0.5

    xtrn, ytrn, xtst, ytst = mnist(DATA)
    xtrn, ytrn, xval, yval = xtrn[:args.ntrain], ytrn[:args.ntrain], xtrn[-1000:], ytrn[-1000:]

    def xform(x):
        return 0.1 * math.exp(x[0]), math.ceil(32 * math.exp(x[1]))

    neval = 0

    def f(x):
        nonlocal neval
        lr, hidden = xform(x)
        if hidden > 1024:
            return math.nan  # out of range: too big to be worth it here
        neval += 1
        value = validation_loss(lr, hidden, args.epochs, xtrn, ytrn, xval, yval)
        print(f"  eval {neval:2d}: lr={lr:.4f} hidden={hidden:4d} -> loss {value:.4f}")
        return value

    t0 = time.time()
    fmin, xmin = kn.goldensection(f, 2, dxmin=args.dxmin)
    lr, hidden = xform(xmin)
    print(f"best: lr={lr:.4f} hidden={hidden} validation loss {fmin:.4f} "
          f"({neval} trainings, {time.time() - t0:.1f} s)")
    return fmin, (lr, hidden)


if __name__ == "__main__":
    main()
