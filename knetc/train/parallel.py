"""Data-parallel training across processes and machines, on MPI (mpi4py) and NCCL.

Every rank (process) holds the whole model and trains on its part of every batch; after
each backward pass the gradients are averaged across the ranks, so every rank applies the
same update and the parameters stay equal. Launch with MPI (`pip install -e .[mpi]`
brings mpi4py and Open MPI):

    mpirun -np 2 python train.py

    import knetc as kn
    with kn.parallel.init():                     # MPI; rank 0 of size 2 here
        kn.seed_(1)
        model = ...                              # built on every rank
        data = kn.minibatch(x, y, 100, shuffle=True, shard=kn.parallel.shard())  # 50 each
        for loss in kn.adam(loss_fn, data):      # averages the gradients across ranks
            ...                                  # loss: the mean over all ranks
        kn.parallel.save("model.knetc", model=model)   # rank 0 writes

- `init()` starts MPI (mpi4py is imported here, never by `import knetc`), returns the
  context (also a `with` block; `finish()` ends it) and makes rank 0's knetc generator the
  generator of every rank, so unseeded shuffling agrees too. An exception that leaves the
  `with` block, or reaches the top of a rank, aborts all ranks (MPI_Abort) after printing
  it: the others never wait forever in a collective.
- `rank()`, `size()`, `shard()` (`(rank, size)` for `minibatch`); outside a context 0, 1,
  (0, 1), so the same script runs as one process.
- The training iterators (`kn.adam(f, data)`, `kn.sgd`, ...) broadcast each Param from
  rank 0 when they first meet it (its value and optimizer state), average the gradients
  before each update and the loss they yield; `kn.progress` draws on rank 0 only.
- By hand (`kn.grad` + `kn.update_`): `kn.parallel.broadcast_(model)` once, then
  `grads = kn.parallel.allreduce_grads(grads)` each step.

Transports, chosen by where the gradients live: numpy arrays go through MPI's allreduce,
packed into buckets of up to `bucket_mb` (25 MB) per dtype, so many small gradients cost
one message (an array that fills a bucket alone is reduced in place, without a copy).
Device arrays (KnetArrays on a GPU) go through NCCL (runtime/nccl.py, `pip install -e
.[nccl]`) on knetc's stream, one grouped launch per step, with each rank on its own GPU
(`init` selects GPU local_rank, one rank per GPU); without NCCL they are copied through
the host and MPI. The reduction does not overlap with the backward pass: a compiled
gradient yields all the gradients at once, and MPI on the host progresses only inside its
calls.
"""
import os
import sys
import traceback
import weakref

import numpy as np

from .. import pytree
from ..autograd import Param
from ..knetarray import KnetArray, gpu as select_gpu
from ..runtime import nccl, threads
from ..runtime.device import download, is_device_array, real_gpu_available, upload
from .init import rng as knetc_rng
from .io import save as _save
from .optimizers import OPTIMIZERS

__all__ = ["init", "finish", "active", "current", "rank", "size", "local_rank", "shard", "barrier",
           "broadcast_", "allreduce_grads", "average", "save", "Context"]

_current = None  # the active Context, or None
_OPTIMIZER_TYPES = {cls.__name__: cls for cls in OPTIMIZERS}


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(f"kn.parallel needs mpi4py and an MPI library: pip install -e .[mpi] ({e})") from None
    return MPI


class Context:
    """A data-parallel run: the MPI communicator, this process's `rank` among `size`, and
    the NCCL communicator once device gradients need it. Made by `init()`."""

    def __init__(self, comm, bucket_mb=25):
        self.MPI = _mpi()
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        # Ranks on the same machine, numbered from 0: which GPU this rank takes.
        local = comm.Split_type(self.MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        self.bucket_bytes = max(1, int(bucket_mb * 2 ** 20))
        self.synced = {}  # id(Param) -> weakref: the Params already broadcast from rank 0
        self._nccl = None

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if error is not None and self.size > 1 and not isinstance(error, SystemExit):
            _abort(self, kind, error, tb)  # the other ranks may be waiting in a collective
        finish()
        return False

    def __repr__(self):
        return f"<kn.parallel: rank {self.rank} of {self.size}>"

    # ---------------------------------------------------------------- parameters
    def broadcast_(self, tree, root=0):
        """Overwrite every array and Param in `tree` (and each Param's optimizer state)
        with root's, in place. Every rank must pass the same structure."""
        leaves, _ = pytree.flatten(tree)
        arrays = [leaf for leaf in leaves if isinstance(leaf, Param) or _is_array(leaf)]
        params = [a for a in arrays if isinstance(a, Param)]
        mine = [_describe(a) for a in arrays]
        theirs = self.comm.bcast(mine, root=root)
        wrong = [i for i, (m, t) in enumerate(zip(mine, theirs)) if m != t]
        # Every rank learns whether any differs, so that all raise together instead of
        # some waiting in a broadcast that never comes.
        if self.comm.allreduce(int(bool(wrong) or len(mine) != len(theirs)), op=self.MPI.MAX):
            if self.rank == root:
                what = f"another rank's differ from rank {root}'s"
            else:
                what = f"rank {self.rank}: {len(mine)} arrays, rank {root}: {len(theirs)}" + (
                    f"; array {wrong[0]}: (shape, dtype) {mine[wrong[0]]} here, {theirs[wrong[0]]} there"
                    if wrong else "")
            raise ValueError(f"kn.parallel.broadcast_: the parameters differ between ranks ({what}); every rank "
                             f"must build the same model")
        for a in arrays:
            self._broadcast_array(a.value if isinstance(a, Param) else a, root, owner=a)
        states = self.comm.bcast([_optimizer_state(p.opt) for p in params], root=root)
        for p, state in zip(params, states):
            _set_optimizer(p, state)
            for name in state[2] if state else ():
                self._broadcast_array(getattr(p.opt, name), root, owner=p.opt, attribute=name)
        for p in params:
            self.synced[id(p)] = weakref.ref(p)
        return tree

    def synchronize_(self, params, root=0):
        """Broadcast those of `params` (a list of Params, the same on every rank) not
        broadcast before: what the training iterators call at every step. True when it
        broadcast any (every rank agrees, since all pass the same Params)."""
        new = [p for p in params if not self._synced(p)]
        if new:
            self.broadcast_(new, root)
        return bool(new)

    def _synced(self, p):
        ref = self.synced.get(id(p))
        return ref is not None and ref() is p

    def _broadcast_array(self, a, root, owner, attribute="value"):
        if isinstance(a, KnetArray) or is_device_array(a):
            device = a.data if isinstance(a, KnetArray) else a
            if self._use_nccl():
                self._nccl.broadcast_(device, root)
            else:  # through the host: once per parameter, not per step
                host = np.ascontiguousarray(download(device))
                self.comm.Bcast(host, root=root)
                upload(host, to=device)
        elif isinstance(a, np.ndarray):
            if a.flags.c_contiguous and a.flags.writeable:
                self.comm.Bcast(a, root=root)
            else:
                work = np.ascontiguousarray(a)
                self.comm.Bcast(work, root=root)
                a[...] = work
        else:  # a number (Param(3.0)): sent as a Python object
            setattr(owner, attribute, self.comm.bcast(a, root=root))

    # ---------------------------------------------------------------- gradients
    def allreduce_grads(self, grads):
        """The gradients averaged across the ranks, in the same structure. The arrays given
        may be overwritten (an array that fills a bucket alone is averaged in place)."""
        if self.size == 1:
            return grads  # (mpirun -np 1: nothing to average)
        leaves, treedef = pytree.flatten(grads)
        host, device = [], []
        for i, g in enumerate(leaves):
            if g is None:
                continue
            if isinstance(g, KnetArray) or is_device_array(g):
                device.append(i)
            elif isinstance(g, Param):
                raise TypeError("kn.parallel.allreduce_grads: got a Param; pass gradients (arrays)")
            else:
                host.append(i)
        out = list(leaves)
        if host:
            for i, a in zip(host, self._average_host([leaves[i] for i in host])):
                out[i] = a
        if device:
            self._average_device([leaves[i] for i in device])  # in place
        return pytree.unflatten(treedef, out)

    def _average_host(self, arrays):
        """Mean of each numpy array (or number) over the ranks, through MPI, in buckets."""
        arrays = [np.asarray(a) for a in arrays]
        out = [None] * len(arrays)
        for bucket in _buckets(arrays, self.bucket_bytes):
            first = arrays[bucket[0]]
            if not np.issubdtype(first.dtype, np.floating):
                raise TypeError(f"kn.parallel.allreduce_grads: gradients must be floating point, got {first.dtype}")
            if len(bucket) == 1 and _reducible_in_place(first, arrays):
                buffer = first.reshape(-1)
            else:
                buffer = np.empty(sum(arrays[i].size for i in bucket), dtype=first.dtype)
                offset = 0
                for i in bucket:
                    buffer[offset:offset + arrays[i].size] = arrays[i].reshape(-1)
                    offset += arrays[i].size
            self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
            np.multiply(buffer, buffer.dtype.type(1.0 / self.size), out=buffer)
            offset = 0
            for i in bucket:
                out[i] = buffer[offset:offset + arrays[i].size].reshape(arrays[i].shape)
                offset += arrays[i].size
        return out

    def _average_device(self, arrays):
        devices = [a.data if isinstance(a, KnetArray) else a for a in arrays]
        if self._use_nccl():
            self._nccl.allreduce_(devices, op=nccl.AVG)
            return
        for d, mean in zip(devices, self._average_host([download(d) for d in devices])):
            upload(np.ascontiguousarray(mean), to=d)

    def _use_nccl(self):
        """NCCL for device arrays when the library loads and every rank on this machine has
        a GPU of its own (NCCL refuses two ranks on one GPU). Decided once, collectively:
        every rank gets here at the same step."""
        if self._nccl is None:
            usable = real_gpu_available() and nccl.loadable() and self.local_size <= _gpu_count()
            if self.comm.allreduce(int(usable), op=self.MPI.MIN):
                uid = nccl.unique_id() if self.rank == 0 else None
                self._nccl = nccl.Communicator(self.size, self.comm.bcast(uid, root=0), self.rank)
            else:
                self._nccl = False
        return bool(self._nccl)

    def average(self, x):
        """The mean of a number (a loss) or array over the ranks."""
        if isinstance(x, (int, float, np.floating, np.integer)):
            return self.comm.allreduce(float(x), op=self.MPI.SUM) / self.size
        return self.allreduce_grads(x)

    def finish(self):
        if self._nccl:
            self._nccl.destroy()
        self._nccl = None


def _gpu_count():
    from numba import cuda  # (only with a real GPU: numba.cuda takes a second to import)
    return len(cuda.gpus)


def _is_array(x):
    return isinstance(x, (np.ndarray, KnetArray)) or is_device_array(x)


def _describe(a):
    """(shape, dtype) of an array or Param's value, for checking that ranks agree."""
    v = a.value if isinstance(a, Param) else a
    return (tuple(np.shape(v)), str(np.dtype(getattr(v, "dtype", type(v)))))


def _optimizer_state(opt):
    """What rank 0 sends of an optimizer: its type, its numbers (hyperparameters, Adam's t)
    and the names of its state arrays that exist (sent after, as arrays)."""
    if opt is None:
        return None
    numbers = {k: v for k, v in vars(opt).items() if k not in opt.STATE}
    return type(opt).__name__, numbers, [name for name in opt.STATE if getattr(opt, name) is not None]


def _set_optimizer(p, state):
    """Make p.opt an optimizer like rank 0's (same type and numbers), with state arrays of
    p's shape and place to broadcast into."""
    if state is None:
        p.opt = None
        return
    name, numbers, arrays = state
    if type(p.opt).__name__ != name:
        p.opt = _OPTIMIZER_TYPES[name]()
    for k, v in numbers.items():
        setattr(p.opt, k, v)
    for k in p.opt.STATE:
        if k not in arrays:
            setattr(p.opt, k, None)
            continue
        s, v = getattr(p.opt, k), p.value
        on_host = isinstance(v, np.ndarray)
        if s is None or tuple(s.shape) != tuple(np.shape(v)) or isinstance(s, np.ndarray) != on_host:
            zeros = np.zeros(np.shape(v), dtype=v.dtype)
            setattr(p.opt, k, zeros if on_host else upload(zeros))


def _buckets(arrays, limit):
    """Lists of indices into `arrays`, one dtype each, at most `limit` bytes each (an array
    bigger than that alone), in order, so every rank makes the same buckets."""
    buckets, open_ = [], {}  # dtype -> (indices, bytes) of the bucket being filled
    for i, a in enumerate(arrays):
        indices, size = open_.get(a.dtype, ([], 0))
        if indices and size + a.nbytes > limit:
            buckets.append(indices)
            indices, size = [], 0
        indices.append(i)
        open_[a.dtype] = (indices, size + a.nbytes)
    buckets.extend(indices for indices, _ in open_.values())
    return sorted(buckets)


def _reducible_in_place(a, arrays):
    """An array that owns its memory, is contiguous and writeable and is no other gradient."""
    return (a.base is None and a.flags.c_contiguous and a.flags.writeable and a.size > 0
            and sum(b is a for b in arrays) == 1)


def _abort(context, kind, error, tb):
    """Print the error with this rank's number, then end every rank (MPI_Abort)."""
    sys.stderr.write(f"[kn.parallel rank {context.rank} of {context.size}] aborting all ranks:\n")
    traceback.print_exception(kind, error, tb, file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    context.comm.Abort(1)


def _excepthook(kind, error, tb):
    if _current is not None and _current.size > 1 and not issubclass(kind, SystemExit):
        _abort(_current, kind, error, tb)
    _previous_hook(kind, error, tb)


_previous_hook = sys.excepthook


def _share_cores(context):
    """Ranks that share a machine split its cores (runtime.threads.share_cores): each starts
    a thread per core otherwise, and threads that wait for each other's cores made 2 ranks on
    2 cores take 2-3 s per MNIST MLP epoch instead of 0.04 s."""
    if context.local_size > 1:
        threads.share_cores(max(1, (os.cpu_count() or 1) // context.local_size))


def init(comm=None, bucket_mb=25, gpu="auto"):
    """Start data-parallel training on MPI (mpi4py's COMM_WORLD, or `comm`) and return the
    context, which is also a `with` block. `bucket_mb`: the size of the gradient buffers
    per allreduce. `gpu="auto"`: on a machine with GPUs, rank `local_rank` takes GPU
    `local_rank % number of GPUs` (call before making any device array); False leaves it.

    Example: `with kn.parallel.init(): kn.adam_(loss_fn, kn.minibatch(x, y, 100, shard=kn.parallel.shard()))`"""
    global _current, _previous_hook
    MPI = _mpi()
    if _current is not None:
        finish()
    context = Context(MPI.COMM_WORLD if comm is None else comm, bucket_mb)
    if gpu == "auto" and real_gpu_available():
        select_gpu(context.local_rank % _gpu_count())
    # The same generator state everywhere: minibatch's shuffling (and initialisation,
    # though broadcast_ makes that moot) agree even without kn.seed_.
    knetc_rng().bit_generator.state = context.comm.bcast(knetc_rng().bit_generator.state, root=0)
    _share_cores(context)
    if sys.excepthook is not _excepthook:
        _previous_hook, sys.excepthook = sys.excepthook, _excepthook
    _current = context
    return context


def finish():
    """End the active context (the iterators stop averaging); MPI itself ends at exit."""
    global _current
    if _current is not None:
        _current.finish()
    _current = None


def current():
    """The active Context, or None."""
    return _current


def active():
    return _current is not None


def rank():
    """This process's rank, 0 outside a parallel context."""
    return 0 if _current is None else _current.rank


def size():
    """The number of ranks, 1 outside a parallel context."""
    return 1 if _current is None else _current.size


def local_rank():
    """This rank's number among the ranks on its machine (its GPU), 0 outside a context."""
    return 0 if _current is None else _current.local_rank


def shard():
    """(rank, size) for `minibatch(..., shard=kn.parallel.shard())`; (0, 1) outside a context."""
    return rank(), size()


def barrier():
    if _current is not None:
        _current.comm.Barrier()


def broadcast_(tree, root=0):
    """Overwrite the Params and arrays in `tree` (values and optimizer state) with rank
    root's, in place: `kn.parallel.broadcast_(model)`. Outside a context: nothing to do."""
    return tree if _current is None else _current.broadcast_(tree, root)


def allreduce_grads(grads):
    """The gradients (any structure of arrays, None skipped) averaged across the ranks:
    `grads = kn.parallel.allreduce_grads(kn.grad(loss)(model, x, y))`. The arrays given
    may be overwritten. Outside a context: `grads` as they are."""
    return grads if _current is None else _current.allreduce_grads(grads)


def average(x):
    """The mean over the ranks of a number or array (e.g. a batch's loss); x outside a context."""
    return x if _current is None else _current.average(x)


def save(path, **values):
    """`kn.save` on rank 0 only, then every rank waits for it (so a later `kn.load` on any
    rank on the same file system finds the file). Returns what kn.save returns on rank 0."""
    result = _save(path, **values) if rank() == 0 else None
    barrier()
    return result

