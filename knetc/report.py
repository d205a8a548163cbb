"""What knetc reports: KNETC_LOG=compile,cache,launch,memory (or all) on stderr, and
counters in the API (`kn.stats()`).

  compile  a Numba compilation of a program's kernels, with its time
  cache    kernel-cache hits, misses, and discarded corrupt entries
  launch   each run of a compiled program (its kernels and GEMMs)
  memory   the CUDA memory pool's allocations, reuses, collections
  cudnn    cuDNN use: library routines choosing cuDNN or Numba kernels, algorithms picked
"""
import collections
import os
import sys

_TOPICS = {t.strip() for t in os.environ.get("KNETC_LOG", "").split(",") if t.strip()}
COUNTERS = collections.Counter()


def enabled(topic):
    return topic in _TOPICS or "all" in _TOPICS


def report(topic, message):
    if enabled(topic):
        print(f"[knetc {topic}] {message}", file=sys.stderr)


def count(name, n=1):
    COUNTERS[name] += n


def stats():
    """Counts since the process started: `compilations` (Numba compiled a program's kernels)
    and `cache_hits` (it loaded them from the kernel cache instead)."""
    return {"compilations": COUNTERS["compilations"], "cache_hits": COUNTERS["cache_hits"]}
