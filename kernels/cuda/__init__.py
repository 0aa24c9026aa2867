"""The GPU kernels: CUDA sources (``*.cu``, compiled once per process with ``cupy.RawModule``) and their Python
launchers, with the same signatures as the CPU backend's functions.

The launchers take CuPy arrays (the "gpu" backend) or numpy arrays (the "cuda-emulator" backend, which runs the
same kernels on the CPU through ``emulator.py``: how CI tests them without a GPU). The learnable activations
(PReLU, APL, soft exponential) are the reference's array expressions, which CuPy runs on the device through
numpy's dispatch protocols: correct, several small kernels each, not fused yet.
"""

from .. import ops
from ..reference import learnable  # the learnable activations: CuPy runs the reference's expressions
from . import dense, dropout, losses, normalization, optim

globals().update(ops.gather("cuda", dense, dropout, learnable, losses, normalization, optim))
__all__ = list(ops.OPS)
