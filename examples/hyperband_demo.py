"""Tune the learning rate and hidden size of a small MNIST MLP with kn.hyperband.

    python examples/hyperband_demo.py [--quick] [--maxresource 27] [--ntrain 1000]

As Knet's hyperband_demo: getconfig() draws a random (lr, hidden) (lr log-uniform in
[0.001, 1], hidden 16 + log-uniform up to 256), getloss(config, epochs) trains a
784-hidden-10 ReLU MLP with SGD for that many epochs over `ntrain` digits, from a fixed
seed, and returns the loss (nll) on held-out digits. Hyperband spends few epochs on many
configurations and many epochs on the few that look best. About 5 s on two cores (--quick: 1-1.3 s; 2026-12-05).
"""
import argparse
import time

import numpy as np

import knetc as kn
from knetc.train.data import mnist

from mnist_mlp import DATA, validation_loss  # the example beside this one


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller budget (for tests)")
    parser.add_argument("--maxresource", type=int, default=27, help="the most epochs one configuration gets")
    parser.add_argument("--ntrain", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1, help="seeds the random configurations")
    args = parser.parse_args(argv)
    if args.quick:
        args.maxresource, args.ntrain = 9, 500

    xtrn, ytrn, xtst, ytst = mnist(DATA)
    xtrn, ytrn, xval, yval = xtrn[:args.ntrain], ytrn[:args.ntrain], xtrn[-1000:], ytrn[-1000:]
    configs = np.random.default_rng(args.seed)  # separate from knetc's generator, which train_loss reseeds

    def getconfig():
        lr = 0.001 ** configs.random()
        hidden = 16 + int(256 ** configs.random())
        return lr, hidden

    neval = 0

    def getloss(config, epochs):
        nonlocal neval
        neval += 1
        lr, hidden = config
        value = validation_loss(lr, hidden, int(round(epochs)), xtrn, ytrn, xval, yval)
        print(f"  eval {neval:3d}: epochs={epochs:2d} lr={lr:.4f} hidden={hidden:3d} -> loss {value:.4f}")
        return value

    t0 = time.time()
    best = kn.hyperband(getconfig, getloss, args.maxresource)
    lr, hidden = best.config
    print(f"best: lr={lr:.4f} hidden={hidden} validation loss {best.loss:.4f} after {best.resource} epochs "
          f"({neval} trainings, {time.time() - t0:.1f} s)")
    return best


if __name__ == "__main__":
    main()
