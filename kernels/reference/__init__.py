"""The numpy reference backend: every kernel written straight from its formula (the ops of ``kernels/ops.py``)."""

from .. import ops
from . import dense, dropout, learnable, losses, normalization, optim

globals().update(ops.gather("reference", dense, dropout, learnable, losses, normalization, optim))
__all__ = list(ops.OPS)
