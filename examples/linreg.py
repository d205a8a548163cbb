"""Linear regression on synthetic data, as Knet's linreg example.

    python examples/linreg.py [--inputs 10] [--outputs 1] [--instances 1000] [--epochs 10]
                              [--lr 0.01] [--noise 0.01] [--seed 1] [--plot curves.png]

Data: x ~ N(0, 1) of shape (N, inputs), y = x @ w_true + b_true + noise. Model: `x @ w + b`
with a squared-error loss; training: minibatch SGD with the gradient from `kn.grad` and the
update written in numpy. Prints the loss going down and the recovered weights next to the
true ones. `--plot curves.png` writes the loss per epoch (needs matplotlib).
"""
import argparse

import numpy as np

import knetc as kn
from knetc.train.plot import INSTALL_HINT, Curves, check_plot_argument, positive


def predict(model, x):
    w, b = model
    return x @ w + b


def loss(model, x, y):
    """Squared error, summed over outputs and averaged over instances (Knet's linreg)."""
    return kn.sum((predict(model, x) - y) ** 2) / x.shape[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=10)
    parser.add_argument("--outputs", type=int, default=1)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--batchsize", type=positive, default=20)
    parser.add_argument("--epochs", type=positive, default=10)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--plot", metavar="FILE.png", help=f"write the loss per epoch to FILE.png ({INSTALL_HINT})")
    args = parser.parse_args(argv)
    check_plot_argument(parser, args.plot)

    rng = kn.seed_(args.seed)  # knetc's generator: the data, the initial weights, the shuffling
    w_true = rng.standard_normal((args.inputs, args.outputs))
    b_true = rng.standard_normal(args.outputs)
    x = rng.standard_normal((args.instances, args.inputs))
    y = x @ w_true + b_true + args.noise * rng.standard_normal((args.instances, args.outputs))

    model = [kn.param(args.inputs, args.outputs, atype=np.float64), kn.param0(args.outputs, atype=np.float64)]
    dloss = kn.grad(loss)  # the gradient with respect to the model, a list [dw, db]
    data = kn.minibatch(x, y, args.batchsize, shuffle=True)
    curves = Curves("linear regression")
    for epoch in range(args.epochs + 1):
        if epoch:
            for xb, yb in data:  # a new order every epoch
                for p, g in zip(model, dloss(model, xb, yb)):
                    p.value -= args.lr * g  # plain SGD, in numpy
        total = float(loss(model, x, y))
        curves.add("loss", "train", epoch, total)
        print(f"epoch {epoch:2d}  loss {total:.6f}")
    if args.plot:
        print(f"training curves: {curves.save(args.plot)}")

    w, b = (p.value for p in model)
    print("w (recovered, true):")
    for row, (got, want) in enumerate(zip(w.ravel(), w_true.ravel())):
        print(f"  {row:3d}  {got:+.4f}  {want:+.4f}")
    print(f"b (recovered, true): {np.array2string(b, precision=4)}  {np.array2string(b_true, precision=4)}")
    error = max(np.abs(w - w_true).max(), np.abs(b - b_true).max())
    print(f"largest error in w and b: {error:.4f}")
    return error


if __name__ == "__main__":
    main()
