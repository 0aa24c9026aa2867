"""The GPU kernels: CUDA sources (``*.cu``, compiled once per process with ``cupy.RawModule``) and their Python
launchers, with the same signatures as the CPU backend's functions.

Status: optimizers and dropout exist and compile with NVRTC in CI (tests/test_cuda_sources.py); dense, losses and
batch norm do not yet, so the "gpu" backend is not offered. Nothing here has run on a GPU yet.
"""
