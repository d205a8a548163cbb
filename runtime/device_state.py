"""One device copy of each array that compiled CUDA programs update in place (op.state_inputs:
batchnorm's running statistics, dropout's counter), shared by every program that uses it,
so that a training step copies none of them up or down.

The host array stays the one users and eager code see. A CUDA run leaves its device copy
the newer one; host code that reads or writes the array calls `on_host(array)` first
(BNMoments' mean and var, eager dropout, kn.seed_, kn.save do), which copies it down. A
run copies the host array up only when host code changed it since the two last agreed. A
CPU run reads the host array, after `on_host`.

Copies are found by the host array's memory address (a program holds a reshaped view of
it) and kept for the process's life, with their host arrays: a few numbers per statistic.

    device = before_run(moments.mean, "cuda")   # the shared device copy, current
    after_run(moments.mean, "cuda")             # a run may have changed it: device newer
    on_host(moments.mean)                       # copied down if a run changed it
"""
import numpy as np

from .device import download, upload

_copies = {}  # the host array's data address -> _Copy


class _Copy:
    def __init__(self, host):
        self.host, self.device, self.agreed, self.device_newer = host, upload(host), host.copy(), False


def _copy_of(host):
    if not _copies or not isinstance(host, np.ndarray):  # (no CUDA run yet: nothing to look up, per call)
        return None
    return _copies.get(host.__array_interface__["data"][0])


def before_run(host, target):
    """The array a run on `target` passes for the state array `host`: on CUDA its shared
    device copy, copied up first where host code changed `host`; on the CPU `host` itself,
    after on_host."""
    if target != "cuda":
        return on_host(host)
    copy = _copy_of(host)
    if copy is None:
        copy = _copies[host.__array_interface__["data"][0]] = _Copy(host)
    elif not copy.device_newer and not np.array_equal(copy.host, copy.agreed, equal_nan=host.dtype.kind in "fc"):
        upload(copy.host, to=copy.device)
        copy.agreed = copy.host.copy()
    return copy.device


def after_run(host, target):
    """After a run on `target` that may have updated `host`'s values."""
    if target == "cuda":
        _copy_of(host).device_newer = True


def on_host(host):
    """`host` (returned), holding the values a CUDA run left in its device copy, if any: call
    it before host code reads or writes the array."""
    copy = _copy_of(host)
    if copy is not None and copy.device_newer:
        copy.host[...] = download(copy.device).reshape(copy.host.shape)
        copy.agreed, copy.device_newer = copy.host.copy(), False
    return host


def all_on_host():
    """on_host for every state array (before saving a model, whose objects hold them)."""
    for copy in list(_copies.values()):
        on_host(copy.host)
