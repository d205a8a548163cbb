"""Test session set-up.

CUDA kernels run under Numba's CUDA simulator unless KNETC_TEST_GPU=1 (a real GPU).
The simulator must be chosen before numba is first imported, hence here.
PTX compilation needs the real numba.cuda, so it runs in a subprocess (see ptx.py).
"""
import os
import tempfile

if os.environ.get("KNETC_TEST_GPU") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
# Generated kernels go to a per-session cache so tests never see a stale user cache.
os.environ.setdefault("KNETC_CACHE_DIR", tempfile.mkdtemp(prefix="knetc-test-cache-"))
