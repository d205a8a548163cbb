"""Training curves to a PNG (the examples' `--plot FILE.png`). matplotlib is optional:
`pip install matplotlib`, or `pip install -e .[plot]` in a clone.

    curves = Curves("MNIST MLP")
    for epoch in ...:
        curves.add("loss", "train", epoch, trn_loss)
        curves.add("accuracy", "test", epoch, acc)
    curves.save("mlp.png")   # one panel per quantity (loss, accuracy), one line per series

Example:
    >>> c = Curves("demo")
    >>> c.add("loss", "train", 1, 0.9); c.add("loss", "train", 2, 0.5)
    >>> c.panels()
    {'loss': {'train': [(1, 0.9), (2, 0.5)]}}
"""
import os

from ..runtime.device import real_gpu_available

INSTALL_HINT = "pip install matplotlib (or, in a clone of knetc, pip install -e .[plot])"


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed; the message says how to install it."""


def require_matplotlib(flag="--plot"):
    """Import matplotlib with the file-only Agg backend, or raise PlotUnavailable saying
    how to install it. The examples call it before training, so a missing matplotlib is
    reported at once rather than after the run."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise PlotUnavailable(f"{flag} needs matplotlib, which is not installed ({error}): "
                              f"{INSTALL_HINT}") from None
    return plt


def check_plot_argument(parser, path):
    """For an example's argument parser: exit with argparse's usage error (status 2) when
    `path` is set and matplotlib is missing, or when the file name is not a .png."""
    if path is None:
        return
    if not str(path).lower().endswith(".png"):
        parser.error(f"--plot {path}: give a file name ending in .png")
    try:
        require_matplotlib()
    except PlotUnavailable as error:
        parser.error(str(error))


def check_example_arguments(parser, args):
    """After parsing: --plot as check_plot_argument, and --target cuda only with a GPU (an
    argparse usage error, status 2, otherwise)."""
    check_plot_argument(parser, args.plot)
    if args.target == "cuda" and not real_gpu_available():
        parser.error("--target cuda needs a CUDA GPU and this machine has none; use --target cpu or auto")


def check_batches(parser, batchsize, instances, what):
    """A usage error (status 2) when not one batch of `batchsize` fits in the `instances`
    training instances (minibatch drops a partial batch: the example would train nothing)."""
    if batchsize > instances:
        parser.error(f"--batchsize {batchsize} is more than the {instances} {what}: no batch to train on")


class Curves:
    """Values recorded during training, by panel (a quantity: "loss", "accuracy",
    "perplexity") and series ("train", "test", "held-out"), as (x, value) points."""

    def __init__(self, title="", xlabel="epoch"):
        self.title, self.xlabel = title, xlabel
        self._panels = {}

    def add(self, panel, series, x, value):
        self._panels.setdefault(panel, {}).setdefault(series, []).append((x, float(value)))

    def panels(self):
        return {panel: {name: list(points) for name, points in series.items()}
                for panel, series in self._panels.items()}

    def save(self, path):
        """Write the curves to `path` (PNG), one panel per quantity side by side; returns path."""
        plt = require_matplotlib()
        from matplotlib.ticker import MaxNLocator
        panels = list(self._panels.items())
        fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 3.8), squeeze=False)
        for ax, (panel, series) in zip(axes[0], panels):
            for name, points in series.items():
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o" if len(points) < 30 else None, markersize=3, label=name)
            ax.set_xlabel(self.xlabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(panel)
            ax.grid(True, alpha=0.3)
            ax.legend()
        if self.title:
            fig.suptitle(self.title)
        fig.tight_layout()
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def positive(text):
    """An argparse type: a whole number of at least 1 (the examples' --epochs 0 or --batchsize
    0 would train nothing and fail afterwards; the knetc command's --steps). Example: ``parser.add_argument("--epochs", type=positive)``"""
    import argparse
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def add_example_arguments(parser):
    """The examples' `--target`, `--plot FILE.png` and `--progress/--no-progress` options
    (check them with check_example_arguments after parsing)."""
    import argparse
    parser.add_argument("--target", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the compiled kernels run (auto: cuda when a GPU is present)")
    parser.add_argument("--plot", metavar="FILE.png", default=None,
                        help="write the training curves to FILE.png (needs matplotlib: " + INSTALL_HINT + ")")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="Knet's progress bar (kn.progress) on stderr while training "
                             "(default: when stderr is a terminal)")


def showing_progress(args):
    """Whether an example shows kn.progress bars: --progress / --no-progress, else when
    stderr is a terminal."""
    import sys
    return args.progress if args.progress is not None else sys.stderr.isatty()


class WithModel:
    """(model, x, y) for each (x, y) of `data`, keeping len(data): kn.adam(loss, WithModel(m,
    batches)) then has a length, and kn.progress over it draws a bar with an estimate (the
    bar advances after each training step, so the first step's compiling is left out of
    the rate)."""

    def __init__(self, model, data):
        self.model, self.data = model, data

    def __len__(self):
        return len(self.data)

    def __iter__(self):
        for batch in self.data:
            yield (self.model, *batch) if isinstance(batch, tuple) else (self.model, batch)


class Sized:
    """An iterable with a length given (a generator of training steps, for kn.progress's bar)."""

    def __init__(self, iterable, length):
        self.iterable, self.length = iterable, length

    def __len__(self):
        return self.length

    def __iter__(self):
        return iter(self.iterable)
