"""Global-norm gradient clipping on its own (the optimizers fuse it into their step with ``max_grad_norm``)."""

import math

from ..backend import get_backend
from .flat import NormWorkspace

_workspaces = {}  # NormWorkspace per gradient size: the tables are built once, not per call
CLIP_EPS = 1e-6  # as torch.nn.utils.clip_grad_norm_


def clip_scale(norm, max_norm):
    """The factor global-norm clipping scales the gradients by: min(1, max_norm / (norm + 1e-6)). The optimizers'
    ``max_grad_norm``, ``clip_grad_norm`` and the compiled step (which writes this formula into its source) share it."""
    return min(1.0, max_norm / (norm + CLIP_EPS))


def _norm_workspace(size):
    if size not in _workspaces:
        _workspaces[size] = NormWorkspace([size])
    return _workspaces[size]


def clip_grad_norm(params, max_norm):
    """Scale all gradients by min(1, max_norm / (total_norm + 1e-6)) in place; return total_norm.

    total_norm is the 2-norm of all gradients together, as ``torch.nn.utils.clip_grad_norm_`` computes it
    (float64 sums here). NaN or Inf gradients give a NaN or Inf norm, and the scaling then spreads it, as
    in PyTorch; ``skip_nonfinite`` on an optimizer is the way to skip such steps.
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not max_norm > 0:
        raise ValueError(f"clip_grad_norm: max_norm must be a positive number, got {max_norm!r}")
    params = [p for p in params]
    kernels = get_backend().kernels
    total = 0.0
    for parameter in params:
        grad = parameter.grad.reshape(-1)
        total += float(_norm_workspace(grad.size).segment_sums(kernels, grad)[0, 0])
    total_norm = math.sqrt(total)
    scale = max_norm / (total_norm + CLIP_EPS)  # not clip_scale: a NaN norm must reach the gradients, as in PyTorch
    if scale < 1 or not math.isfinite(scale):
        for parameter in params:
            grad = parameter.grad
            grad *= parameter.dtype.type(scale)
    return total_norm


clip_grad_norm_ = clip_grad_norm
