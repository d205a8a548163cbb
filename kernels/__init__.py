"""Hand-written kernels that generated code calls (CUDA and CPU)."""
