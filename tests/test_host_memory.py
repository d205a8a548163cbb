"""runtime/host_memory.py: after `import knetc` (glibc), large arrays allocated and freed
every step reuse the process's memory instead of faulting in fresh pages each time; the
user can turn it off (KNETC_MALLOC=0) or set glibc's own variables, which then stand."""
import os
import subprocess
import sys

import pytest

STEPS = """
import resource, numpy as np, knetc
from knetc.runtime import host_memory

def step():  # a training step's large temporaries: allocated, written, freed
    a = np.empty((100, 20, 24, 24), np.float32); a.fill(1.0)
    b = np.empty((100, 20, 24, 24), np.float32); b.fill(2.0)
    return float((a + b)[0, 0, 0, 0])

step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    assert step() == 3.0
print(host_memory.KEPT, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def _run(**env):
    environment = {k: v for k, v in os.environ.items() if k not in ("KNETC_MALLOC", "MALLOC_TRIM_THRESHOLD_")}
    out = subprocess.run([sys.executable, "-c", STEPS], capture_output=True, text=True, timeout=120,
                         env={**environment, **env})
    assert out.returncode == 0, out.stderr[-3000:]
    kept, faults = out.stdout.split()
    return kept == "True", float(faults)


glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
                           reason="glibc's malloc only")


@glibc
def test_large_buffers_are_reused_without_page_faults():
    kept, faults = _run()
    assert kept
    assert faults < 50  # three 4.6 MB arrays a step: about 3,400 page faults a step without it


@glibc
def test_turned_off_by_the_user():
    kept, _ = _run(KNETC_MALLOC="0")  # (then each step faults its pages in again: ~3,400 here, by glibc's defaults)
    assert not kept
    assert _run(MALLOC_TRIM_THRESHOLD_="1000000")[0] is False  # glibc's own variable stands
