"""Hand-written kernels that generated code calls (CUDA and CPU); above knetc.runtime, which they call."""
