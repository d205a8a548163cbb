"""Training as lazy iterators (Knet's Train20): minimize, sgd, ..., adam, converge, progress.

`minimize(f, data)` is an iterator: each step takes the next item of `data`, records
`f(*item)` with `kn.diff`, updates every Param the loss depends on with its gradient, and
yields the loss. Nothing happens until it is iterated, so the usual iterator tools decide
how long training runs:

    for loss in kn.adam(loss_fn, data): ...                  # one pass over data
    kn.adam_(loss_fn, itertools.repeat(batch, 100))           # 100 steps, returns None
    kn.progress_(kn.converge(kn.adam(loss_fn, itertools.cycle(data))))  # until the loss stops falling

When `f` is a `@kn.compile` function, `kn.diff` runs its compiled forward pass and records
one tape node whose backward pass is the compiled adjoint, so a step is generated kernels
from loss to gradients, then one fused update kernel per parameter.

Inside a `kn.parallel` context (data-parallel training on MPI), each step first broadcasts
from rank 0 the Params it has not met before (values and optimizer state), averages the
gradients across the ranks before updating, and yields the loss averaged across the ranks;
`progress` draws on rank 0 only.
"""
import math
import sys
import time

from ..autograd import diff, grad, params as params_of, value
from . import parallel
from .optimizers import DEFAULTS, SGD, Adadelta, Adagrad, Adam, Momentum, Nesterov, Rmsprop, update_


def _sized(itr):
    """len(itr) when the iterable knows its length, else None."""
    try:
        return len(itr)
    except TypeError:
        return None


def _scalar(y):
    """The loss as a Python float when it is one number (else as it is)."""
    try:
        return float(y)
    except (TypeError, ValueError):
        return y


class Minimize:
    """The iterator returned by `minimize` (re-iterable when `data` is; `len` is `len(data)`)."""

    def __init__(self, f, data, optimizer, params):
        self.f, self.data, self.optimizer = f, data, optimizer
        self.params = None if params is None else params_of(params)

    def __len__(self):
        n = _sized(self.data)
        if n is None:
            raise TypeError(f"the data ({type(self.data).__name__}) has no length")
        return n

    def __iter__(self):
        for args in self.data:
            args = args if isinstance(args, tuple) else (args,)  # tuples are splatted, as Knet's f(args...)
            y = diff(self.f, *args)
            params = params_of(y) if self.params is None else self.params
            context = parallel.current()
            if context is not None and context.synchronize_(params):
                # Params met for the first time now hold rank 0's values: the forward pass
                # ran on this rank's own, so run it again.
                y = diff(self.f, *args)
                params = params_of(y) if self.params is None else self.params
            grads = [grad(y, p) for p in params]
            if context is not None:  # every rank applies the same, averaged gradients
                grads = context.allreduce_grads(grads)
            # A Param keeps its optimizer (and state) across iterators; one without gets a clone,
            # stored in p.opt by update_ only when the step succeeds. The step is all or nothing.
            opts = [self.optimizer.clone() if p.opt is None else p.opt for p in params]
            update_(list(params), grads, opts)
            loss = _scalar(value(y))
            yield loss if context is None else context.average(loss)


def minimize(f, data, optimizer=None, params=None):
    """An iterator that calls `f(*item)` for each item of `data` (a non-tuple item is one
    argument), updates the Params to lower the result, and yields it (the loss).

    `optimizer` (default `Adam()`) is cloned into `p.opt` of every Param p whose `opt` is
    unset; a Param's own `opt` is kept, so training can stop and resume without losing
    optimizer state. `params`: the Params to update (a list or any structure holding
    them); default: every Param the loss depends on.

    Example: `for loss in kn.minimize(loss_fn, kn.minibatch(x, y, 100), kn.SGD(lr=0.1)): ...`
    """
    return Minimize(f, data, Adam() if optimizer is None else optimizer, params)


_D = DEFAULTS  # Knet 1.4's defaults, the same table as the optimizer classes'
# The examples in the docs fit w to minimise (w - 3)^2 in 200 steps, at these learning rates.
_EXAMPLE_LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adagrad": 1.0, "rmsprop": 0.05, "adadelta": 10.0,
               "adam": 0.1}
_FIT = "lambda c: kn.sum((w - c) ** 2), [3.0] * 200"  # the loss and the data of those examples


def _fit_example(call):
    """A doc's example (a doctest) fitting w by `call`, which reads w, _FIT and a learning rate."""
    return ("\n\n    Example: fit w to minimise (w - 3)^2 (each item of `data` is one argument of `f`)\n\n"
            "        >>> import numpy as np, knetc as kn\n        >>> w = kn.Param(np.array([0.0]))\n"
            f"        >>> {call}\n        >>> bool(abs(float(w[0]) - 3) < 0.01)\n        True\n    ")


def _with_example(f):
    """An optimizer iterator with the example of its doc."""
    f.__doc__ += _fit_example(f"losses = list(kn.{f.__name__}({_FIT}, lr={_EXAMPLE_LR[f.__name__]}))")
    return f


@_with_example
def sgd(f, data, lr=_D["SGD"]["lr"], gclip=_D["SGD"]["gclip"], params=None):
    """`minimize` with `SGD(lr, gclip)`: an iterator over `data` that updates the Params `f`
    depends on once per item and yields the loss; `sgd_` runs it to the end."""
    return minimize(f, data, SGD(lr=lr, gclip=gclip), params)


@_with_example
def momentum(f, data, lr=_D["Momentum"]["lr"], gamma=_D["Momentum"]["gamma"], gclip=_D["Momentum"]["gclip"],
             params=None):
    """`minimize` with `Momentum(lr, gclip, gamma)`: an iterator over `data` that updates the Params `f`
    depends on once per item and yields the loss; `momentum_` runs it to the end."""
    return minimize(f, data, Momentum(lr=lr, gclip=gclip, gamma=gamma), params)


@_with_example
def nesterov(f, data, lr=_D["Nesterov"]["lr"], gamma=_D["Nesterov"]["gamma"], gclip=_D["Nesterov"]["gclip"],
             params=None):
    """`minimize` with `Nesterov(lr, gclip, gamma)`: an iterator over `data` that updates the Params `f`
    depends on once per item and yields the loss; `nesterov_` runs it to the end."""
    return minimize(f, data, Nesterov(lr=lr, gclip=gclip, gamma=gamma), params)


@_with_example
def adagrad(f, data, lr=_D["Adagrad"]["lr"], eps=_D["Adagrad"]["eps"], gclip=_D["Adagrad"]["gclip"], params=None):
    """`minimize` with `Adagrad(lr, gclip, eps)`: an iterator over `data` that updates the Params `f`
    depends on once per item and yields the loss; `adagrad_` runs it to the end."""
    return minimize(f, data, Adagrad(lr=lr, gclip=gclip, eps=eps), params)


@_with_example
def rmsprop(f, data, lr=_D["Rmsprop"]["lr"], rho=_D["Rmsprop"]["rho"], eps=_D["Rmsprop"]["eps"],
            gclip=_D["Rmsprop"]["gclip"], params=None):
    """`minimize` with `Rmsprop(lr, gclip, rho, eps)`: an iterator over `data` that updates the Params `f`
    depends on once per item and yields the loss; `rmsprop_` runs it to the end."""
    return minimize(f, data, Rmsprop(lr=lr, gclip=gclip, rho=rho, eps=eps), params)


@_with_example
def adadelta(f, data, lr=_D["Adadelta"]["lr"], rho=_D["Adadelta"]["rho"], eps=_D["Adadelta"]["eps"],
             gclip=_D["Adadelta"]["gclip"], params=None):
    """`minimize` with `Adadelta(lr, gclip, rho, eps)`: an iterator over `data` that updates the Params `f`
    depends on once per item and yields the loss; `adadelta_` runs it to the end."""
    return minimize(f, data, Adadelta(lr=lr, gclip=gclip, rho=rho, eps=eps), params)


@_with_example
def adam(f, data, lr=_D["Adam"]["lr"], beta1=_D["Adam"]["beta1"], beta2=_D["Adam"]["beta2"], eps=_D["Adam"]["eps"],
         gclip=_D["Adam"]["gclip"], params=None):
    """`minimize` with `Adam(lr, gclip, beta1, beta2, eps)`: an iterator over `data` that updates the Params `f`
    depends on once per item and yields the loss; `adam_` runs it to the end."""
    return minimize(f, data, Adam(lr=lr, gclip=gclip, beta1=beta1, beta2=beta2, eps=eps), params)


def _exhausting(make):
    """The `f_` form of an iterator function: iterate it to the end, return None (Knet's `f!`)."""
    def run(*args, **kwargs):
        for _ in make(*args, **kwargs):
            pass
    name = make.__name__
    run.__name__ = run.__qualname__ = name + "_"
    example = _EXHAUSTING_EXAMPLES.get(name) or _fit_example(f"kn.{name}_({_FIT}, lr={_EXAMPLE_LR[name]})")
    run.__doc__ = f"`{name}_(...)` iterates `{name}(...)` to the end and returns None (Knet's `{name}!`)." + example
    return run


class Converge:
    """The iterator returned by `converge`."""

    def __init__(self, itr, alpha=0.1):
        self.itr, self.alpha = itr, alpha

    def __iter__(self):
        avgx, avgp, a = math.inf, 0.0, self.alpha
        for item in self.itr:
            x = _scalar(value(item))
            if avgx == math.inf:  # the first value starts the average
                avgx = x
            p = x - avgx
            avgx = a * x + (1 - a) * avgx
            avgp = a * p + (1 - a) * avgp
            if avgp > 0.0:  # the values' exponential trend is upward: stop
                return
            yield item


def converge(itr, alpha=0.1):
    """An iterator that acts like `itr` (numeric values, e.g. losses) but stops when they
    stop decreasing, by Knet's rule: with p = x - avgx, avgx = alpha*x + (1-alpha)*avgx,
    avgp = alpha*p + (1-alpha)*avgp, it stops (without yielding x) once avgp > 0.

    Example: `kn.converge_(kn.adam(loss_fn, itertools.cycle(data)))` trains until the loss stops
    falling;

        >>> import knetc as kn
        >>> list(kn.converge([4, 3, 2, 1, 1, 2, 3, 4, 5, 6, 7]))
        [4, 3, 2, 1, 1, 2, 3, 4, 5]
    """
    return Converge(itr, alpha)


_clock = time.monotonic  # seconds; a name of its own so tests can drive the clock
_EIGHTS = " ▏▎▍▌▋▊▉█"  # partial cells of the bar, in eighths
_BAR_WIDTH = 20


class Progress:
    """The iterator returned by `progress`. The message function may read `p.currval` (the
    latest value) and `p.curriter` (the number of values so far)."""

    def __init__(self, msg, itr, steps=None, seconds=None, io=None):
        self.func, self.iter = msg, itr
        self.steps, self.seconds = steps or 0, seconds or 0
        if self.steps == 0 and self.seconds == 0:
            self.seconds = 1  # Knet's default: update every second
        self.io = io
        self.curriter, self.currval = 0, None
        self.starttime = self.lasttime = self.firsttime = None
        self.lastiter = 0

    def __len__(self):
        n = _sized(self.iter)
        if n is None:
            raise TypeError(f"the iterator ({type(self.iter).__name__}) has no length")
        return n

    def __iter__(self):
        self.starttime = self.lasttime = _clock()
        self.curriter, self.lastiter = 0, 0
        quiet = parallel.rank() != 0  # in data-parallel training, rank 0 alone draws
        for item in self.iter:
            self.curriter += 1
            self.currval = item
            if not quiet and (self.curriter in (1, self.steps) or (self.steps and self.curriter == self.lastiter + self.steps)
                    or (self.seconds and _clock() > self.lasttime + self.seconds)):
                self._print(last=False)
            yield item
        if self.curriter > 0 and not quiet:
            self._print(last=True)

    def _print(self, last):
        io = sys.stderr if self.io is None else self.io
        message = str(self.func(self))
        now = _clock()
        if self.curriter == 1:
            self.firsttime = now  # the first step often compiled: the rate leaves it out
        seconds = now - self.starttime
        # Iterations per second after the first step (None until there is a second step).
        after = now - self.firsttime
        rate = (self.curriter - 1) / after if self.curriter > 1 and after > 0 else None
        if last:
            speed = rate if rate is not None else (self.curriter / seconds if seconds > 0 else math.inf)
        else:
            elapsed = now - self.lasttime
            speed = (self.curriter - self.lastiter) / elapsed if elapsed > 0 else math.inf
        self.lastiter, self.lasttime = self.curriter, now
        total = _sized(self.iter)
        if total is None:
            line = f"[{self.curriter}, {_format_time(seconds)}, {_format_speed(speed)}] "
        else:
            left = max(0, total - self.curriter)
            if left == 0:
                estimate = _format_time(seconds)
            elif rate is not None:
                estimate = _format_time(seconds + left / rate)
            elif self.curriter > 1:  # no time has passed after the first step
                estimate = _format_time(seconds)
            else:
                estimate = "--:--"  # one step so far, and it may have compiled: no estimate yet
            line = (_bar(self.curriter, total) + f"[{self.curriter / max(1, total) * 100:.2f}%, "
                    f"{self.curriter}/{total}, {_format_time(seconds)}/{estimate}, "
                    f"{_format_speed(speed)}] ")
        io.write("\r" + line + message + ("\n" if last else ""))
        io.flush()


def _bar(current, total):
    """┣████▎   ┫ : full cells, one partial cell in eighths, then blanks, 20 cells in all.
    (Knet's arithmetic, in integers: float division would show 1/5 as 4 cells and 7/8.)"""
    eighths = current * _BAR_WIDTH * 8 // max(1, total)
    full, part = divmod(eighths, 8)
    if full >= _BAR_WIDTH:
        return "┣" + "█" * full + "┫ "
    return "┣" + "█" * full + _EIGHTS[part] + " " * (_BAR_WIDTH - full - 1) + "┫ "


def _format_time(seconds):
    """mm:ss, or hh:mm:ss from an hour on."""
    if not math.isfinite(seconds):
        return "Inf:Inf"
    minutes, s = divmod(round(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h:02d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _format_speed(speed):
    """Iterations per second, or seconds per iteration when slower than one per second."""
    return f"{speed:.2f}i/s" if speed >= 1 or speed == 0 else f"{1 / speed:.2f}s/i"


def progress(msg, itr=None, steps=None, seconds=None, io=None):
    """An iterator that acts like `itr` and prints Knet's progress bar on `io` (default
    sys.stderr):

        ┣████████████████▎   ┫ [86.83%, 903/1040, 01:36/01:50, 9.42i/s] 3.87835

    (percent done, iterations done/total, elapsed/estimated total time, speed (s/i when
    slower than 1 i/s), then `msg(p)`); the bar, percent, total and estimate are left out
    when `itr` has no length. The first step is left out of the estimate and of the final
    speed, since it usually includes compiling (`--:--` until a second step is done).
    `progress(itr)` prints no message; `progress(msg, itr)` calls
    `msg` with the Progress object (`p.currval`, `p.curriter`); a string `msg` is shown as it
    is (`progress("training", itr)`). The line is redrawn every
    `steps` iterations or `seconds` seconds (default: every second), at the first item and
    at the end.

    Example: `kn.progress_(lambda p: p.currval, kn.adam(loss_fn, data))`"""
    if itr is None:
        msg, itr = (lambda p: ""), msg
    if isinstance(msg, str):
        msg = (lambda text: lambda p: text)(msg)
    elif not callable(msg):
        raise TypeError(f"progress(msg, itr): msg must be a function of the Progress (lambda p: ...) or a string, "
                        f"got {type(msg).__name__}")
    return Progress(msg, itr, steps=steps, seconds=seconds, io=io)


# The examples of the `f_` forms that are not an optimizer iterator's (its doc: _exhausting).
_EXHAUSTING_EXAMPLES = {
    "minimize": _fit_example(f"kn.minimize_({_FIT}, kn.SGD(lr=0.1))"),
    "converge": "\n\n    Example:\n        >>> import knetc as kn\n        >>> seen = []\n"
                "        >>> kn.converge_(x for x in [4, 3, 2, 1, 1, 2, 3, 4, 5, 6, 7] if not seen.append(x))\n"
                "        >>> seen  # it stopped once the values' trend turned upward (6 was taken, not yielded)\n"
                "        [4, 3, 2, 1, 1, 2, 3, 4, 5, 6]\n",
    "progress": "\n\n    Example:\n        >>> import io, knetc as kn\n        >>> out = io.StringIO()\n"
                "        >>> kn.progress_(lambda p: f\"loss {p.currval}\", [3, 2, 1], steps=1, io=out)\n"
                "        >>> \"loss 1\" in out.getvalue()\n        True\n",
}

minimize_ = _exhausting(minimize)
sgd_ = _exhausting(sgd)
momentum_ = _exhausting(momentum)
nesterov_ = _exhausting(nesterov)
adagrad_ = _exhausting(adagrad)
rmsprop_ = _exhausting(rmsprop)
adadelta_ = _exhausting(adadelta)
adam_ = _exhausting(adam)
converge_ = _exhausting(converge)
progress_ = _exhausting(progress)
