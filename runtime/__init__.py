"""Device runtime: memory pool, cuBLAS/cuDNN bindings."""
