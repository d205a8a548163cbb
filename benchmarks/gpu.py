"""GPU benchmarks: knetc --target cuda against PyTorch CUDA eager, one table (issue 16).

    python benchmarks/gpu.py                 # every case on the GPU (about 1-2 minutes on an H200)
    python benchmarks/gpu.py --cases mlp,sum # some of them
    python benchmarks/gpu.py --dry-run       # list the cases and their targets; needs no GPU
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu.py --tiny   # every case at toy sizes in Numba's
                                             # simulator (PyTorch on the CPU): checks this script

Cases (float32; knetc's parameters are KnetArrays on the device, as `kn.atype()` gives on a
GPU, so a training step copies only the batch up):

  mlp      MNIST MLP 784-64-10, batch 100: compiled gradient + SGD (examples/mnist_mlp.py)
  lenet    LeNet, batch 100: diff + grad + Adam (examples/lenet.py)
  charlm   CharLM LSTM, embed 64, hidden 256, batch 32 x 64 characters, Adam with gclip 5
           (examples/charlm.py)
  mlp4096  a 4096-4096-4096 MLP at batch 4096: compiled gradient + SGD
  sum      kn.sum of 1e7 elements, beside the device-to-device copy bandwidth measured in the
           same run (the sum reads 4e7 bytes; it should reach 80% of the copy's bandwidth)
  softmax  kn.softmax over the rows of a 4096x32000 array

Each case: a warm-up (compiles), then timed runs between device synchronizations; the
median of --repeats timings of --steps calls each. Printed: milliseconds per call for knetc
and PyTorch, their ratio (knetc time / PyTorch time; lower is better), the issue's target,
and knetc's launches and host<->device copies per call (kn.stats()). Nothing is read back to
the host inside a timed loop (the loss stays on the device), as a training loop that logs
every N steps would run.

Exit status: 0 after printing the table, 3 when there is no GPU (and no --dry-run or
simulator), 1 when a case failed (its row says FAILED and the traceback is printed).
"""
import argparse
import os
import statistics
import sys
import time
import traceback

import numpy as np

import knetc as kn  # (imports no CUDA module: --dry-run and the no-GPU exit need none)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

NO_GPU = 3  # exit status when no GPU can run the cases


class Case:
    """A benchmark: `run(tiny)` returns a dict with knetc_ms, torch_ms (or None), counts and notes."""

    def __init__(self, name, what, target, ratio_limit, fn):
        self.name, self.what, self.target, self.ratio_limit, self.fn = name, what, target, ratio_limit, fn


# ---------------------------------------------------------------- timing

def device_sync():
    from numba import cuda
    cuda.synchronize()


WARMUP, COUNTED = 2, 3  # calls before timing, and calls counted (1 and 1 with --tiny)


def timed(call, sync, steps, repeats, warmup=None):
    """Median milliseconds per call over `repeats` timings of `steps` calls, synchronized."""
    for _ in range(WARMUP if warmup is None else warmup):
        call()
    sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(steps):
            call()
        sync()
        times.append((time.perf_counter() - started) / steps * 1e3)
    return statistics.median(times)


def counted(call, steps=None):
    """knetc's launches and copies per call (kn.stats() over `steps` calls, after one more)."""
    steps = steps or COUNTED
    call()
    before = kn.stats()
    for _ in range(steps):
        call()
    after = kn.stats()
    return {k: (after[k] - before[k]) / steps for k in ("launches", "host_to_device", "device_to_host")}


def torch_device(tiny):
    """("cuda" or "cpu", torch) or (None, None) without PyTorch or (unless tiny) without CUDA."""
    try:
        import torch
    except ImportError:
        return None, None
    if torch.cuda.is_available():
        return "cuda", torch
    return ("cpu", torch) if tiny else (None, None)


def torch_sync(torch, device):
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


# ---------------------------------------------------------------- models

def mlp_loss(model, x, y):
    for w, b in model[:-1]:
        x = kn.relu(x @ w + b)
    w, b = model[-1]
    return kn.nll(x @ w + b, y)


def device_params(values):
    return [kn.Param(kn.KnetArray(np.asarray(v, np.float32))) for v in values]


def mlp_case(sizes, batch, tiny, opts):
    """Compiled gradient + SGD over KnetArray parameters, against PyTorch with torch.optim.SGD."""
    rng = np.random.default_rng(0)
    kn.seed_(0)
    values = []
    for i, o in zip(sizes[:-1], sizes[1:]):
        values += [kn.xavier(i, o).astype(np.float32), np.zeros(o, np.float32)]
    flat = device_params(values)
    model = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
    x = rng.random((batch, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], batch)
    gradient = kn.grad(kn.compile(mlp_loss, target="cuda"))
    sgd = kn.SGD(lr=0.1)

    def step():
        kn.update_(model, gradient(model, x, y), sgd)
    result = {"knetc_ms": timed(step, device_sync, opts.steps, opts.repeats), "counts": counted(step)}
    device, torch = torch_device(tiny)
    if torch is not None:
        import torch.nn.functional as F
        ps = [torch.tensor(v, device=device, requires_grad=True) for v in values]
        opt = torch.optim.SGD(ps, lr=0.1)
        tx, ty = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

        def torch_step():
            h = tx
            for i in range(0, len(ps) - 2, 2):
                h = torch.relu(h @ ps[i] + ps[i + 1])
            loss = F.cross_entropy(h @ ps[-2] + ps[-1], ty)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        result["torch_ms"] = timed(torch_step, torch_sync(torch, device), opts.steps, opts.repeats)
    return result


def diff_step(loss, params, args):
    """diff + grad + update_ (each Param's own Adam): kn.adam's step, without reading the loss."""

    def step():
        y = kn.diff(loss, *args)
        for p in params:
            kn.update_(p, kn.grad(y, p))
    return step


def lenet_case(tiny, opts):
    import lenet
    batch, side = (2, 16) if tiny else (100, 28)
    kn.seed_(0)
    if tiny:  # the same network with 2 and 3 filters and 4 hidden units on 16x16 images
        shapes = [(2, 1, 5, 5), (1, 2, 1, 1), (3, 2, 5, 5), (1, 3, 1, 1), (3, 4), (4,), (4, 10), (10,)]
        host = [kn.xavier(*s).astype(np.float32) for s in shapes]
    else:
        host = [np.asarray(p.value, np.float32) for p in lenet.lenet(atype=np.float32)]
    w = device_params(host)
    for p in w:
        p.opt = kn.Adam(lr=0.001)
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, side, side), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    step = diff_step(kn.compile(lenet.loss.fn, target="cuda"), w, (w, x, y))
    result = {"knetc_ms": timed(step, device_sync, opts.steps, opts.repeats), "counts": counted(step)}
    device, torch = torch_device(tiny)
    if torch is not None:
        import torch.nn.functional as F
        ps = [torch.tensor(v, device=device, requires_grad=True) for v in host]
        opt = torch.optim.Adam(ps, lr=0.001)
        tx, ty = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

        def torch_step():
            c1, cb1, c2, cb2, w3, b3, w4, b4 = ps
            h = F.max_pool2d(torch.relu(F.conv2d(tx, c1) + cb1), 2)
            h = F.max_pool2d(torch.relu(F.conv2d(h, c2) + cb2), 2)
            h = torch.relu(h.reshape(batch, -1) @ w3 + b3)
            loss = F.cross_entropy(h @ w4 + b4, ty)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        result["torch_ms"] = timed(torch_step, torch_sync(torch, device), opts.steps, opts.repeats)
    return result


def charlm_case(tiny, opts):
    from knetc.train.init import ArrayType
    import charlm
    V, E, H, B, T = (65, 64, 256, 32, 64) if not tiny else (7, 3, 4, 2, 3)
    kn.seed_(0)
    m = charlm.model(V, E, H, atype=ArrayType(kn.KnetArray, np.float32))
    params = kn.params(m)
    for p in params:
        p.opt = kn.Adam(lr=0.003, gclip=5.0)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, (T + 1, B))
    x, labels = charlm.onehot(ids[:-1], V), ids[1:].reshape(-1)
    step = diff_step(kn.compile(charlm.loss.fn, target="cuda"), params, (m, x, labels))
    result = {"knetc_ms": timed(step, device_sync, opts.steps, opts.repeats), "counts": counted(step)}
    device, torch = torch_device(tiny)
    if torch is not None:
        import torch.nn.functional as F
        torch.manual_seed(0)
        emb = torch.randn(V, E, device=device, requires_grad=True)
        lstm = torch.nn.LSTM(E, H).to(device)
        w = torch.randn(H, V, device=device, requires_grad=True)
        b = torch.zeros(V, device=device, requires_grad=True)
        ps = [emb, w, b, *lstm.parameters()]
        opt = torch.optim.Adam(ps, lr=0.003)
        tx, ty = torch.from_numpy(x).to(device), torch.from_numpy(labels).to(device)

        def torch_step():
            e = (tx.reshape(T * B, V) @ emb).reshape(T, B, E)
            out, _ = lstm(e)
            loss = F.cross_entropy(out.reshape(T * B, H) @ w + b, ty)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for p in ps:  # Knet's gclip is per parameter
                torch.nn.utils.clip_grad_norm_([p], 5.0)
            opt.step()
        result["torch_ms"] = timed(torch_step, torch_sync(torch, device), opts.steps, opts.repeats)
    return result


def sum_of(x):
    return kn.sum(x)


def softmax_rows(x):
    return kn.softmax(x, dims=1)


def sum_case(tiny, opts):
    from knetc.runtime.pool import device_array
    n = 1000 if tiny else 10_000_000
    v = kn.KnetArray(np.random.default_rng(0).random(n, dtype=np.float32))
    f = kn.compile(sum_of, target="cuda")
    result = {"knetc_ms": timed(lambda: f(v), device_sync, opts.steps * 5, opts.repeats), "counts": counted(lambda: f(v))}
    copy = device_array((n,), np.float32)
    copy_ms = timed(lambda: copy.copy_to_device(v.data), device_sync, opts.steps * 5, opts.repeats)
    gb_sum = n * 4 / result["knetc_ms"] / 1e6  # bytes read per second, GB/s
    gb_copy = 2 * n * 4 / copy_ms / 1e6  # read + written
    result["note"] = (f"knetc {gb_sum:.0f} GB/s read; device copy {gb_copy:.0f} GB/s (read+write) = "
                      f"{gb_sum / gb_copy:.0%} of it (target >= 80%)")
    result["bandwidth_fraction"] = gb_sum / gb_copy
    device, torch = torch_device(tiny)
    if torch is not None:
        tv = torch.as_tensor(np.asarray(v), device=device)
        result["torch_ms"] = timed(lambda: tv.sum(), torch_sync(torch, device), opts.steps * 5, opts.repeats)
    return result


def softmax_case(tiny, opts):
    R, C = (4, 50) if tiny else (4096, 32000)
    m = kn.KnetArray(np.random.default_rng(0).standard_normal((R, C)).astype(np.float32))
    f = kn.compile(softmax_rows, target="cuda")
    result = {"knetc_ms": timed(lambda: f(m), device_sync, opts.steps, opts.repeats), "counts": counted(lambda: f(m))}
    result["note"] = f"knetc {2 * R * C * 4 / result['knetc_ms'] / 1e6:.0f} GB/s (read once + write once)"
    device, torch = torch_device(tiny)
    if torch is not None:
        tm = torch.as_tensor(np.asarray(m), device=device)
        result["torch_ms"] = timed(lambda: torch.softmax(tm, 1), torch_sync(torch, device), opts.steps, opts.repeats)
    return result


CASES = [
    Case("mlp", "MNIST MLP 784-64-10 step, batch 100 (gradient + SGD)", "<= 1.0x PyTorch", 1.0,
         lambda tiny, o: mlp_case((12, 6, 3) if tiny else (784, 64, 10), 4 if tiny else 100, tiny, o)),
    Case("lenet", "LeNet step, batch 100 (diff + grad + Adam)", "<= 1.0x PyTorch", 1.0, lenet_case),
    Case("charlm", "CharLM LSTM step, 32x64 chars, E64 H256 (Adam, gclip 5)", "<= 1.0x PyTorch", 1.0, charlm_case),
    Case("mlp4096", "MLP 4096-4096-4096 step, batch 4096 (gradient + SGD)", "<= 1.1x PyTorch", 1.1,
         lambda tiny, o: mlp_case((16, 16, 16) if tiny else (4096, 4096, 4096), 8 if tiny else 4096, tiny, o)),
    Case("sum", "kn.sum of 1e7 float32", ">= 80% of copy bandwidth", None, sum_case),
    Case("softmax", "kn.softmax over rows of 4096x32000 float32", "<= 1.3x PyTorch", 1.3, softmax_case),
]


# ---------------------------------------------------------------- main

def verdict(case, result):
    from knetc.runtime.device import simulator_active
    if simulator_active():
        return "n/a (simulator)"
    if case.name == "sum":
        return "met" if result.get("bandwidth_fraction", 0) >= 0.8 else "not met"
    if result.get("torch_ms") is None:
        return "no PyTorch"
    return "met" if result["knetc_ms"] <= case.ratio_limit * result["torch_ms"] else "not met"


def table(rows):
    lines = ["| case | knetc ms | PyTorch ms | knetc / PyTorch | target | verdict | launches | H2D | D2H |",
             "| --- | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: |"]
    for case, result in rows:
        if "error" in result:
            lines.append(f"| {case.name} | FAILED | | | {case.target} | {result['error']} | | | |")
            continue
        ms, t, c = result["knetc_ms"], result.get("torch_ms"), result.get("counts", {})
        torch_text, ratio = ("", "") if t is None else (f"{t:.3f}", f"{ms / t:.2f}x")
        lines.append(f"| {case.name} | {ms:.3f} | {torch_text} | {ratio} | {case.target} | {verdict(case, result)} | "
                     f"{c.get('launches', 0):g} | {c.get('host_to_device', 0):g} | {c.get('device_to_host', 0):g} |")
    notes = [f"- {case.name}: {result['note']}" for case, result in rows if "note" in result]
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(c.name for c in CASES),
                        help="comma-separated, of: " + ", ".join(c.name for c in CASES))
    parser.add_argument("--dry-run", action="store_true", help="list the cases and exit (no GPU needed)")
    parser.add_argument("--tiny", action="store_true", help="toy sizes (for Numba's simulator): checks the script")
    parser.add_argument("--steps", type=int, default=20, help="calls per timing")
    parser.add_argument("--repeats", type=int, default=5, help="timings per case (the median is reported)")
    opts = parser.parse_args(argv)
    names = [n.strip() for n in opts.cases.split(",") if n.strip()]
    unknown = sorted(set(names) - {c.name for c in CASES})
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {[c.name for c in CASES]}")
    cases = [c for c in CASES if c.name in names]
    if opts.dry_run:
        print("| case | what | target |\n| --- | --- | --- |")
        for case in cases:
            print(f"| {case.name} | {case.what} | {case.target} |")
        return 0
    from knetc.runtime.device import gpu_available, simulator_active
    if not gpu_available():
        print("no GPU: benchmarks/gpu.py measures knetc's CUDA path and this machine has no CUDA GPU "
              "(numba.cuda.is_available() is False); --dry-run lists the cases, and "
              "NUMBA_ENABLE_CUDASIM=1 ... --tiny runs them at toy sizes in Numba's simulator", file=sys.stderr)
        return NO_GPU
    if simulator_active() and not opts.tiny:
        print("Numba's CUDA simulator is on: timings would mean nothing; use --tiny (or unset "
              "NUMBA_ENABLE_CUDASIM on a GPU machine)", file=sys.stderr)
        return NO_GPU
    if opts.tiny:
        global WARMUP, COUNTED
        opts.steps, opts.repeats, WARMUP, COUNTED = 1, 1, 1, 1
    from knetc.runtime import pool
    pool.install_once()  # before the first CUDA call
    device = "Numba CUDA simulator" if simulator_active() else _device_name()
    torch_where, torch = torch_device(opts.tiny)
    print(f"knetc {kn.__version__} on {device}; PyTorch {getattr(torch, '__version__', 'not installed')} "
          f"on {torch_where}; {opts.steps} calls x {opts.repeats} timings per case, median", flush=True)
    rows, failed = [], False
    for case in cases:
        started = time.perf_counter()
        try:
            result = case.fn(opts.tiny, opts)
        except Exception as error:  # noqa: BLE001  (the table goes on; the traceback is printed)
            traceback.print_exc()
            result, failed = {"error": f"{type(error).__name__}: {str(error)[:80]}"}, True
        print(f"[{case.name}: {time.perf_counter() - started:.1f}s]", flush=True)
        rows.append((case, result))
    print()
    print(table(rows))
    return 1 if failed else 0


def _device_name():
    from numba import cuda
    device = cuda.get_current_device()
    name = device.name.decode() if isinstance(device.name, bytes) else device.name
    return f"{name} (sm_{''.join(map(str, device.compute_capability))})"


if __name__ == "__main__":
    sys.exit(main())
