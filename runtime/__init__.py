"""Device runtime (memory pool, cuBLAS/cuDNN bindings, RNN layout); below knetc.kernels: never imports it."""
