"""What knetc reports: KNETC_LOG=compile,cache,launch,memory (or all) on stderr, and
counters in the API (`kn.stats()`).

  compile  a Numba compilation of a program's new kernels, with its time; why a call traced
           again (the guard or the part of the signature that changed)
  cache    kernel-cache hits, misses, discarded corrupt entries, and programs whose kernels
           were all compiled already (by an earlier program, layer or batch size)
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
    """Counts since the process started: `compilations` (programs whose first run had Numba
    compile at least one new kernel) and `cache_hits` (programs whose new kernels all came
    from the kernel cache instead). A program whose kernels were all loaded already (a new
    batch size, or layers like earlier ones) counts as neither."""
    return {"compilations": COUNTERS["compilations"], "cache_hits": COUNTERS["cache_hits"]}
