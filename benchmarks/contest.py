"""Timing training steps, each contestant in a process of its own, in alternating rounds.

Why separate processes: Numba (knetc) and PyTorch load the same OpenMP runtime when they
share a process, and whichever starts it first sets its wait policy for both. knetc starts
it passive (runtime/threads.py), which made PyTorch's LSTM step 2x slower (18 -> 36 ms);
PyTorch's spinning workers in turn took the cores from knetc's BLAS threads (CharLM 38 ->
52 ms). Each framework is timed as a user runs it: alone. Rounds alternate between the
contestants so that a change in the machine's load touches all of them alike.

A benchmark script defines `contestants(args)`, a dict of name -> setup; setup() builds the
model and returns (label, step). It calls `main_child(...)` first thing in its main (the
child mode), then `compare(...)`.
"""
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

CHILD_FLAG = "--contestant"


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


def compare(script, names, args, steps, warmup, rounds=3):
    """Median ms per step of each contestant, {label: ms}: `rounds` fresh processes each,
    alternating, each timing steps // rounds steps after `warmup`. args: the script's own
    command-line arguments, passed on to the children."""
    times, labels = {name: [] for name in names}, {}
    per_round = max(1, steps // rounds)
    for _ in range(rounds):
        for name in names:
            command = [sys.executable, os.path.abspath(script), *args, CHILD_FLAG, name, str(per_round), str(warmup)]
            run = subprocess.run(command, capture_output=True, text=True)
            if run.returncode:
                raise RuntimeError(f"contestant {name} failed:\n{run.stderr[-3000:]}")
            result = json.loads(run.stdout.strip().splitlines()[-1])
            labels[name] = result["label"]
            times[name] += result["times"]
    return {labels[name]: 1e3 * statistics.median(times[name]) for name in names}


def have_torch():
    return importlib.util.find_spec("torch") is not None
