"""Train LeNet on MNIST with a loss compiled by knetc: conv(5x5,20)-pool-conv(5x5,50)-pool-fc500-fc10.

    python examples/lenet.py [--epochs 5] [--target cpu|cuda|auto] [--seed 1] [--lr 0.001]
                             [--plot curves.png] [--progress | --no-progress]

The model is Knet's LeNet translated to Python shapes: images are (N, 1, 28, 28), filters
(Cout, Cin, 5, 5), `kn.conv4` + bias + ReLU, then `kn.pool` (2x2 max), twice; `kn.mat`
flattens to (N, 800) for the two dense layers. The loss is compiled with `@kn.compile` and
trained with Knet's Adam iterator (`kn.adam(loss, data)`: each step runs the compiled forward
pass and adjoint and one fused update kernel per parameter). Data: the first 8,000 of the
shipped MNIST digits to train on, the last 2,000 to test (examples/data/README.md).

With a GPU (`--target cuda`, or `auto` on a machine with one) the parameters are
`kn.atype()` arrays (KnetArrays) and Adam's state is made beside them: a step copies the
batch up and the loss (one number) down, nothing else.
"""
import argparse
import sys
import time

import numpy as np

import knetc as kn
from knetc.train.data import mnist
from knetc.train.plot import (Curves, check_batches, WithModel, add_example_arguments, check_example_arguments,
                              showing_progress, positive)


def layers(w, x):
    """The network up to the class scores; w = [c1, cb1, c2, cb2, w3, b3, w4, b4]."""
    c1, cb1, c2, cb2, w3, b3, w4, b4 = w
    x = kn.pool(kn.relu(kn.conv4(c1, x) + cb1))
    x = kn.pool(kn.relu(kn.conv4(c2, x) + cb2))
    x = kn.relu(kn.mat(x) @ w3 + b3)
    return x @ w4 + b4


@kn.compile
def loss(w, x, y):
    return kn.nll(layers(w, x), y)


@kn.compile
def predict(w, x):
    return layers(w, x)


def lenet(atype=None):
    """LeNet's parameters: Xavier-initialised filters and weights, zero biases (Knet's init);
    atype: the array type (default kn.atype(): KnetArrays when a GPU is active)."""
    return [kn.param(20, 1, 5, 5, atype=atype), kn.param0(1, 20, 1, 1, atype=atype),
            kn.param(50, 20, 5, 5, atype=atype), kn.param0(1, 50, 1, 1, atype=atype),
            kn.param(800, 500, atype=atype), kn.param0(500, atype=atype),
            kn.param(500, 10, atype=atype), kn.param0(10, atype=atype)]


def accuracy(predict, w, x, y, batchsize=500):
    correct = 0
    for xb, yb in kn.minibatch(x, y, batchsize, partial=True):
        correct += int(np.sum(np.argmax(predict(w, xb), axis=1) == yb))
    return correct / len(y)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=positive, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.001, help="Adam learning rate")
    parser.add_argument("--batchsize", type=positive, default=100)
    parser.add_argument("--train", type=positive, default=8000, help="how many training digits to use")
    add_example_arguments(parser)  # --target, --plot FILE.png, --progress/--no-progress
    args = parser.parse_args(argv)
    check_example_arguments(parser, args)  # (--target cuda only with a GPU)

    loss_fn, predict_fn = loss, predict
    if args.target != loss.requested_target:  # the same functions, compiled for another target
        loss_fn = kn.compile(loss.fn, target=args.target)
        predict_fn = kn.compile(predict.fn, target=args.target)

    kn.seed_(args.seed)
    xtrn, ytrn, xtst, ytst = mnist()
    xtrn, ytrn = xtrn[:args.train].reshape(-1, 1, 28, 28), ytrn[:args.train]
    xtst = xtst.reshape(-1, 1, 28, 28)
    check_batches(parser, args.batchsize, len(ytrn), "training digits")
    w = lenet(atype=kn.atype() if loss_fn.target == "cuda" else np.float32)  # on the GPU: KnetArrays
    print(f"knetc {kn.__version__}: LeNet, {len(ytrn)} train / {len(ytst)} test digits, batch "
          f"{args.batchsize}, Adam lr {args.lr}, target {loss_fn.target}, parameters {type(w[0].value).__name__}",
          flush=True)
    curves = Curves("LeNet on MNIST, Adam")
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        data = WithModel(w, kn.minibatch(xtrn, ytrn, args.batchsize, shuffle=True))  # (w, x, y), sized
        steps = kn.adam(loss_fn, data, lr=args.lr)  # one training step per item, yielding the loss
        if showing_progress(args):
            steps = kn.progress(lambda p, epoch=epoch: f"epoch {epoch} loss {p.currval:.4f}", steps)
        trn_loss = float(np.mean(list(steps)))
        acc = accuracy(predict_fn, w, xtst, ytst)
        curves.add("loss", "train", epoch, trn_loss)
        curves.add("accuracy", "test", epoch, acc)
        print(f"epoch {epoch:3d}  train loss {trn_loss:.4f}  test accuracy {acc:.4f}  "
              f"({time.perf_counter() - t0:.2f}s)", flush=True)
    print(f"total {time.perf_counter() - started:.2f}s (the first epoch includes compiling)")
    if args.plot:
        print(f"training curves: {curves.save(args.plot)}")
    return acc


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
