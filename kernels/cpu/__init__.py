"""The CPU backend: Numba kernels (compiled on first use, cached on disk) for the ops of ``kernels/ops.py``, GEMMs
through the BLAS provider (``blas_provider.py``)."""

from .cache_guard import clear_if_sources_changed

clear_if_sources_changed()

from .. import ops
from . import dense, dropout, learnable, losses, normalization, optim

globals().update(ops.gather("cpu", dense, dropout, learnable, losses, normalization, optim))
__all__ = list(ops.OPS)

import sys as _sys

from .cache_repair import guard_modules as _guard_modules

# every cached kernel of the package (these and the bfloat16 helpers they import): a damaged cache entry recompiles
_guard_modules([module for name, module in list(_sys.modules.items())
                if name.startswith(__name__.rpartition(".")[0] + ".") and module is not None])
