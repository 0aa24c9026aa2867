"""Input checks shared by layers and losses: every error names the caller, the argument and the shapes."""

import numpy as np

from .backend import get_backend

FLOAT_DTYPES = (np.dtype("float32"), np.dtype("float64"))


def label(owner):
    """The caller's name for a message: ``owner`` is a name, or a layer whose ``name`` is read only when an error
    is raised (a layer's name is formatted from its settings; hot paths should not pay for it on every call)."""
    return owner if isinstance(owner, str) else owner.name


def float_dtype(dtype, owner):
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{label(owner)}: dtype must be float32 or float64, got {dtype}")
    return dtype


def float_array(x, owner, name):
    """``x`` must hold float32 or float64 values (the kernels' types)."""
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{label(owner)}: {name} must be float32 or float64, got {x.dtype} (shape {tuple(x.shape)})")


def positive_int(value, owner, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{label(owner)}: {name} must be a positive integer, got {value!r}")
    return int(value)


def backend_array(x, owner, name):
    """The array must belong to the active backend (no silent copies between host and device)."""
    backend = get_backend()
    if not isinstance(x, backend.array_type):
        raise TypeError(
            f"{label(owner)}: {name} must be a {backend.xp.__name__} array for the '{backend.name}' backend, "
            f"got {type(x).__module__}.{type(x).__name__} (move it with fastdl.asarray)"
        )
    return backend


def array(x, owner, name, ndim=None, dtype=None, last_dim=None, finite=False):
    backend = backend_array(x, owner, name)
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{label(owner)}: {name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if last_dim is not None and (x.ndim == 0 or x.shape[-1] != last_dim):
        raise ValueError(f"{label(owner)}: {name} must have {last_dim} features in its last axis, "
                         f"got shape {tuple(x.shape)}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{label(owner)}: {name} has dtype {x.dtype}, expected {np.dtype(dtype)} "
                        f"(shape {tuple(x.shape)})")
    if finite and not backend.kernels.all_finite(x):
        raise ValueError(f"{label(owner)}: {name} contains NaN or Inf (shape {tuple(x.shape)})")
    return backend


def same_shape(a, b, owner, name_a, name_b):
    if a.shape != b.shape:
        raise ValueError(f"{label(owner)}: {name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}")
