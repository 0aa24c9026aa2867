"""Input checks shared by layers and losses: every error names the caller, the argument and the shapes."""

import numpy as np

from .backend import get_backend

FLOAT_DTYPES = (np.dtype("float32"), np.dtype("float64"))


def label(owner):
    """The caller's name for a message: ``owner`` is a name, or a layer whose ``name`` is read only when an error
    is raised (a layer's name is formatted from its settings; hot paths should not pay for it on every call)."""
    return owner if isinstance(owner, str) else getattr(owner, "name", type(owner).__name__)


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


def from_dlpack(x, owner, name):
    """``x`` as the active backend's array when it is another library's tensor (any object with ``__dlpack__``:
    PyTorch, JAX), sharing its memory rather than copying it; a TypeError naming the caller and the argument when
    that memory is on a device the backend cannot read. numpy and CuPy arrays, and anything else, are returned as
    they are (and checked as usual)."""
    if isinstance(x, np.ndarray) or type(x).__module__.startswith("cupy") or not hasattr(x, "__dlpack__"):
        return x  # the backends' own arrays: one of another backend is refused by name, never copied silently
    backend = get_backend()
    try:
        return backend.xp.from_dlpack(x)
    except Exception as error:  # BufferError, RuntimeError, TypeError or ValueError, depending on the library
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TypeError(f"{label(owner)}: {name} is a {type(x).__module__}.{type(x).__name__} on "
                        f"{getattr(x, 'device', 'another device')}, which the '{backend.name}' backend cannot use in "
                        f"place ({reason}); fastdl.asarray copies a tensor across devices") from error


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
