"""The Numba CUDA fallbacks of cuDNN (conv, pool, RNN) compute float32 data in float32: their
float32 PTX for sm_90 has no float64 arithmetic, and under the simulator their float32 results
stay within the tests' float32 tolerances of float64 references. float64 stays float64."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import knetc as kn
from knetc.kernels import conv as kconv
from knetc.kernels import pool as kpool
from knetc.kernels import rnn_cuda

from numgrad import assert_close
from test_conv import ref_conv
from test_pooling import reference_pool

# The only float64 instructions allowed in float32 kernels: loading the float64 alpha argument
# and converting it to float32 once.
ALLOWED_F64 = {"ld.param.f64", "cvt.rn.f32.f64"}

_SCRIPT = r"""
import collections, importlib.util, json, re, sys
from numba import cuda
jobs = json.loads(sys.argv[1])
found = {}
for n, (path, kernels) in enumerate(jobs):
    spec = importlib.util.spec_from_file_location("f64_target_%d" % n, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, signature in kernels.items():
        fn = getattr(module, name)
        ptx, _ = cuda.compile_ptx(getattr(fn, "py_func", fn), signature, cc=(9, 0))
        body = [l.strip() for l in ptx.splitlines() if l.strip() and not l.strip().startswith(("//", "."))]
        found[name] = dict(collections.Counter(l.split()[0] for l in body if re.search(r"\.f64\b", l)))
print(json.dumps(found))
"""


def _f64_instructions(jobs):
    """{kernel: {float64 instruction: count}} of the float32 PTX (sm_90) of each kernel."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(jobs)], capture_output=True, text=True,
                          env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_float32_fallback_kernels_have_no_float64_arithmetic_in_ptx():
    a5 = "float32[:,:,:,:,::1]"
    conv_sig = "void(%s, %s, %s, %s, boolean, float64, int64)" % (a5, a5, a5, ", ".join(["int64"] * 9))
    a1, a2 = "float32[::1]", "float32[:, ::1]"
    rnn = {"_cell_forward_kernel": f"void({a2}, {a2}, {a1}, {a2}, {a2}, {a2}, {a2}, {a2}, int64, int64, int64, int64, int64)",
           "_cell_backward_kernel": f"void({a2}, {a2}, {a2}, {a2}, {a2}, {a2}, {a2}, {a2}, {a2}, {a2}, {a2}, "
                                    "int64, int64, int64, int64, int64, int64, int64)",
           "_colsum_kernel": f"void({a2}, {a1})", "_skip_adjoint_kernel": f"void({a2}, {a2}, int64)"}
    jobs = [(kconv.__file__, {name: conv_sig for name in kconv.KERNELS}),
            (kpool.__file__, kpool.ptx_signatures("float32")),
            (rnn_cuda.__file__, rnn)]
    found = _f64_instructions(jobs)
    assert set(found) == set(kconv.KERNELS) | {"pool_kernel"} | set(rnn)
    for kernel, ops in found.items():
        assert set(ops) <= ALLOWED_F64, (kernel, ops)


def test_conv_fallback_float32_against_float64_reference():
    from numba import cuda
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    kw = dict(padding=(1, 0), stride=(2, 1), dilation=(1, 2), mode=0, alpha=1.5, group=2)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    y64 = ref_conv(w64, x64, **kw)
    y = cuda.device_array(y64.shape, np.float32)
    kconv.conv4_cuda(cuda.to_device(w), cuda.to_device(x), y, **kw)
    assert y.dtype == np.float32
    assert_close(y.copy_to_host(), y64, rtol=1e-4, atol=1e-4)
    dy = rng.standard_normal(y64.shape).astype(np.float32)
    dx64 = kn.grad(lambda x: kn.sum(kn.conv4(w64, x, **kw) * dy.astype(np.float64)))(x64)
    dx = cuda.device_array(x.shape, np.float32)
    kconv.deconv4_cuda(cuda.to_device(w), cuda.to_device(dy), dx, size=x.shape[2:], **kw)
    assert_close(dx.copy_to_host(), dx64, rtol=1e-4, atol=1e-4)
    dw64 = kn.grad(lambda w: kn.sum(kn.conv4(w, x64, **kw) * dy.astype(np.float64)))(w64)
    dw = cuda.device_array(w.shape, np.float32)
    kconv.conv4_dw_cuda(cuda.to_device(x), cuda.to_device(dy), dw, size=w.shape[2:], **kw)
    assert_close(dw.copy_to_host(), dw64, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_pool_fallback_float32_against_float64_reference(mode):
    from numba import cuda
    rng = np.random.default_rng(22)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    window, padding, stride = (3, 2), (1, 1), (2, 2)
    y64 = reference_pool(x, window, padding, stride, mode, alpha=0.5)
    w3, p3, s3 = (1,) + window, (0,) + padding, (1,) + stride
    y = cuda.device_array(y64.shape, np.float32)
    kpool.pool_numba(cuda.to_device(x), y, w3, p3, s3, mode, 1, 0.5)
    assert_close(y.copy_to_host(), y64, rtol=1e-6, atol=1e-6)
    if mode != 0:  # the average modes' gradient (unpool's kernel) against float64
        dy = rng.standard_normal(y64.shape).astype(np.float32)
        dx = cuda.device_array(x.shape, np.float32)
        kpool.pool_grad_avg_cuda(cuda.to_device(dy), dx, x.shape, w3, p3, s3, mode, 1.0)
        expected = kn.grad(lambda v: kn.sum(kn.pool(v, window=window, padding=padding, stride=stride, mode=mode)
                                            * dy.astype(np.float64)))(x.astype(np.float64))
        assert_close(dx.copy_to_host(), expected, rtol=1e-6, atol=1e-6)


def test_rnn_fallback_float32_against_float64():
    from numba import cuda
    from knetc.kernels.rnn_cpu import rnn_backward_cpu
    from knetc.kernels.rnn_cuda import rnn_backward_cuda, rnn_forward_cuda
    from knetc.ops.rnn import rnn_forward
    from knetc.runtime.rnn_layout import MODES, weight_size
    rng = np.random.default_rng(23)
    for typ, skip in (("lstm", False), ("gru", True)):
        X = H = 3
        mode, layers, dirs, sizes = MODES[typ], 2, 2, (3, 2, 1)
        N, B, LD = sum(sizes), sizes[0], layers * dirs
        w = 0.5 * rng.standard_normal(weight_size(mode, X, H, layers, dirs, skip))
        x, h0, c0 = rng.standard_normal((N, X)), rng.standard_normal((LD, B, H)), rng.standard_normal((LD, B, H))
        p = dict(mode=mode, hidden=H, layers=layers, dirs=dirs, skip=skip, batch_sizes=sizes, dropout=0.0)
        packed = rnn_forward(w, x, h0, c0, **p)
        dpacked = rng.standard_normal(packed.shape)
        grads = np.empty(w.size + x.size + 2 * h0.size)
        rnn_backward_cpu(w, x, h0, c0, packed, dpacked, grads, **p)
        dev = [cuda.to_device(a.astype(np.float32)) for a in (w, x, h0, c0)]
        out = cuda.device_array(packed.shape, np.float32)
        rnn_forward_cuda(*dev, out, **p)
        gout = cuda.device_array(grads.shape, np.float32)
        rnn_backward_cuda(*dev, out, cuda.to_device(dpacked.astype(np.float32)), gout, **p)
        np.testing.assert_allclose(out.copy_to_host(), packed, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(gout.copy_to_host(), grads, rtol=1e-4, atol=1e-4)
