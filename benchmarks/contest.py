"""Timing training steps, each contestant in a process of its own, in alternating rounds.

Why separate processes: Numba (knetc) and PyTorch load the same OpenMP runtime when they
share a process, and whichever starts it first sets its wait policy for both. knetc starts
it passive (runtime/threads.py), which made PyTorch's LSTM step 2x slower (18 -> 36 ms);
PyTorch's spinning workers in turn took the cores from knetc's BLAS threads (CharLM 38 ->
52 ms). Each framework is timed as a user runs it: alone. Rounds alternate between the
contestants so that a change in the machine's load touches all of them alike.

A benchmark script defines `contestants(args)`, a dict of name -> setup; setup() builds the
model and returns (label, step). Its main calls `main_child(...)` first (in a child it
times one contestant and exits), then `compare(...)`.
"""
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time

CHILD_FLAG = "--contestant"
MEMORY_FLAG = "--memory-of"


def main_child(contestants, argv=None):
    """In a child process (CHILD_FLAG NAME STEPS WARMUP in argv): time NAME's step, print
    one JSON line {"label": ..., "times": [seconds, ...]}, and exit. Otherwise return."""
    argv = sys.argv if argv is None else argv
    if CHILD_FLAG not in argv:
        return
    at = argv.index(CHILD_FLAG)
    name, steps, warmup = argv[at + 1], int(argv[at + 2]), int(argv[at + 3])
    label, step = contestants[name]()
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"label": label, "times": times}))
    sys.exit(0)


def compare(script, names, steps, warmup, rounds=3):
    """{name: (label, median ms per step)}: `rounds` fresh processes per contestant,
    alternating, each timing steps // rounds steps after `warmup`. The children get this
    process's command-line arguments (the scripts parse them with parse_known_args)."""
    times, labels = {name: [] for name in names}, {}
    per_round = max(1, steps // rounds)
    for _ in range(rounds):
        for name in names:
            command = [sys.executable, os.path.abspath(script), *sys.argv[1:], CHILD_FLAG, name, str(per_round),
                       str(warmup)]
            run = subprocess.run(command, capture_output=True, text=True)
            if run.returncode:
                raise RuntimeError(f"contestant {name} failed:\n{run.stderr[-3000:]}")
            result = json.loads(run.stdout.strip().splitlines()[-1])
            labels[name] = result["label"]
            times[name] += result["times"]
    return {name: (labels[name], 1e3 * statistics.median(times[name])) for name in names}


def have_torch():
    return importlib.util.find_spec("torch") is not None


def machine():
    """The versions and the machine, for a benchmark's header."""
    import numpy as np
    import knetc as kn
    return (f"python {platform.python_version()}, numpy {np.__version__}, knetc {kn.__version__}, "
            f"{os.cpu_count()} CPUs, {platform.machine()}, load average {os.getloadavg()[0]:.2f} at start")


def print_ms(ms, reference="torch"):
    """The table of ms per step, each row also as a ratio to the reference's time."""
    width = max(len(label) for label, _ in ms.values())
    print(f"\n{'':{width}}  ms/step  vs PyTorch")
    for label, value in ms.values():
        ratio = f"{value / ms[reference][1]:8.2f}x" if reference in ms else ""
        print(f"{label:{width}}  {value:7.3f}  {ratio}")


# ----------------------------------------------------------------------------- peak memory

def _status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def memory_child(contestants, argv=None):
    """In a child (MEMORY_FLAG NAME in argv): print one JSON line {"setup": KiB, "peak": KiB,
    "before_steps": KiB} and exit: the resident set before the model is built, the peak
    during 20 steps after 5 warm-up steps (the peak reset before them), and the resident set
    just before those steps. Otherwise return."""
    argv = sys.argv if argv is None else argv
    if MEMORY_FLAG not in argv:
        return
    name = argv[argv.index(MEMORY_FLAG) + 1]
    setup = _status_kib("VmRSS")
    _, step = contestants[name]()
    for _ in range(5):
        step()
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the current resident set
    for _ in range(20):
        step()
    print(json.dumps({"setup": setup, "peak": _status_kib("VmHWM"), "before_steps": before}))
    sys.exit(0)


def memory(script, names):
    """{name: (peak above setup, rise during steps) in MiB}, each in a fresh process (Linux)."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        return {}
    out = {}
    for name in names:
        run = subprocess.run([sys.executable, os.path.abspath(script), *sys.argv[1:], MEMORY_FLAG, name],
                             capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(f"memory of {name} failed:\n{run.stderr[-3000:]}")
        r = json.loads(run.stdout.strip().splitlines()[-1])
        out[name] = ((r["peak"] - r["setup"]) / 1024, (r["peak"] - r["before_steps"]) / 1024)
    return out


def print_memory(script, names, ms):
    """Measure (memory) and print the peak memory of `names`' steps, labelled as in `ms`."""
    mem = memory(script, names)
    if mem:
        print("\npeak memory (MiB): resident set during steps above that before the model was built; "
              "rise during the steps")
        width = max(len(ms[name][0]) for name in mem)
        for name, (peak, rise) in mem.items():
            print(f"{ms[name][0]:{width}}  {peak:7.1f}  {rise:6.1f}")
