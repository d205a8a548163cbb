"""What knetc reports: KNETC_LOG=compile,cache,launch,memory (or all) on stderr, and
counters in the API (`kn.stats()`, see `stats` for what each counts).

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


def transfer(direction, nbytes):
    """Count one copy between host and device: direction "host_to_device" or "device_to_host"."""
    COUNTERS[direction] += 1
    COUNTERS[direction + "_bytes"] += int(nbytes)


STATS = ("compilations", "cache_hits", "launches", "host_to_device", "device_to_host",
         "host_to_device_bytes", "device_to_host_bytes")


def stats():
    """Counts since the process started, as a dict:

      compilations          programs whose first run had Numba compile at least one new kernel
      cache_hits            programs whose new kernels all came from the kernel cache instead
                            (a program whose kernels were all loaded already, e.g. a new batch
                            size or layers like earlier ones, counts as neither)
      launches              CUDA work issued: the kernel launches, GEMMs and library calls of
                            compiled CUDA programs (eager KnetArray ops are such programs too)
                            and the optimizers' update kernels
      host_to_device        copies from host memory to the device (and their bytes in
      device_to_host        ..._bytes), made by knetc: inputs of compiled CUDA programs,
                            KnetArray(x), np.asarray(k), float(loss), optimizer state, ...
                            Copies inside library routines (cuDNN, cuBLAS) are not counted.

    Differences between two calls measure a piece of code, e.g. the transfers of a training step:

        before = kn.stats(); step(); after = kn.stats()
        after["host_to_device"] - before["host_to_device"]   # the batch arrays going up

    Example:
        >>> import knetc as kn
        >>> sorted(k for k in kn.stats() if k in ("compilations", "launches", "host_to_device"))
        ['compilations', 'host_to_device', 'launches']
    """
    return {name: COUNTERS[name] for name in STATS}
