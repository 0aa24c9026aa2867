"""Backend registry: which kernel set the layers call, and where arrays live.

``"numpy"`` is the reference (plain formulas), ``"cpu"`` the Numba kernels (the default) and ``"gpu"`` the
CuPy kernels. ``"cuda-emulator"`` runs the GPU backend's very kernels and launchers on the CPU (compiled with g++,
one fiber per CUDA thread, numpy arrays): far too slow for training, it exists so that the GPU code is tested
where there is no GPU (CI) and so that a kernel can be debugged on any machine. Every backend's ``kernels``
module offers the same functions with the same signatures, so the layers never branch on the backend. The
active backend is a context variable: ``use_backend`` changes it for a ``with`` block (and its thread),
``set_backend`` for good; ``FASTDL_BACKEND`` sets the starting one.
"""

from __future__ import annotations

import contextlib
import contextvars
import os

import numpy as np

from ._typing import Array

BACKEND_NAMES = ("numpy", "cpu", "gpu", "cuda-emulator")
EMULATED_BACKENDS = ("cuda-emulator",)  # for tests and debugging: never benchmarked unless asked for by name
DEFAULT_BACKEND = "cpu"
CACHE_LINE = 64


class Backend:
    """A kernel set plus the array module it works on. ``name``, ``kernels``, ``xp``, ``array_type``;
    ``device_flags``: its kernels leave finiteness flags on the device (fastdl/finite_checks.py)."""

    def __init__(self, name, kernels, xp, device_flags=False):
        self.name = name
        self.kernels = kernels
        self.xp = xp
        self.array_type = xp.ndarray
        self.device_flags = device_flags

    def empty(self, shape, dtype):
        """An uninitialized array; on the host its data starts on a 64-byte cache line, so the CPU kernels may
        write it with streaming stores (numpy alone promises 16 bytes)."""
        if self.xp is not np:
            return self.xp.empty(shape, dtype=dtype)
        dtype = np.dtype(dtype)
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        raw = np.empty(size + CACHE_LINE, np.uint8)
        start = -raw.ctypes.data % CACHE_LINE
        return raw[start:start + size].view(dtype).reshape(shape)

    def asarray(self, x, dtype=None):
        if hasattr(x, "__dlpack__") and not isinstance(x, self.array_type) and not callable(getattr(x, "get", None)):
            x = _from_dlpack(self.xp, x)
        if self.xp is np:
            get = getattr(x, "get", None)  # a CuPy array coming back to the host
            return np.asarray(get() if callable(get) and not isinstance(x, np.ndarray) else x, dtype=dtype)
        return self.xp.asarray(x, dtype=dtype)

    def __repr__(self):
        return f"Backend({self.name!r})"


def _from_dlpack(xp, x):
    """Another library's tensor as an array of ``xp``: its memory shared where ``xp`` can read it in place, else
    copied across (a GPU tensor brought to the host, for instance)."""
    try:
        return xp.from_dlpack(x)
    except Exception:  # on another device: the library copies it where it is asked to
        if xp is np:
            return np.from_dlpack(x, device="cpu", copy=True)
        return xp.asarray(np.from_dlpack(x))

_loaded = {}


def _load(name):
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown fastdl backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    if name not in _loaded:
        if name == "numpy":
            from .kernels import reference

            _loaded[name] = Backend("numpy", reference, np)
        elif name == "cpu":
            from .kernels import cpu

            _loaded[name] = Backend("cpu", cpu, np)
        elif name == "cuda-emulator":
            _loaded[name] = _load_emulator()
        else:
            _loaded[name] = _load_gpu()
    return _loaded[name]


def _load_gpu():
    try:
        import cupy
    except ImportError as error:
        raise RuntimeError(
            "the 'gpu' backend needs CuPy and an NVIDIA GPU: CuPy is not installed "
            f"({error}); install CuPy for your CUDA, e.g. `pip install cupy-cuda12x` (or `pip install \".[gpu]\"` in "
            "a fastdl checkout; the PyPI package named fastdl is another project)"
        ) from error
    try:
        devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CuPy raises its own CUDARuntimeError when no driver is present
        raise RuntimeError(f"the 'gpu' backend needs an NVIDIA GPU, but CUDA found none: {error}") from error
    if devices == 0:
        raise RuntimeError("the 'gpu' backend needs an NVIDIA GPU, but CUDA reports 0 devices")
    from .kernels import cuda

    return Backend("gpu", cuda, cupy, device_flags=True)


def _load_emulator():
    from .kernels.cuda import emulator

    try:
        emulator.compiler()
    except emulator.EmulationError as error:
        raise RuntimeError(f"the 'cuda-emulator' backend needs g++: {error}") from error
    from .kernels import cuda

    return Backend("cuda-emulator", cuda, np, device_flags=True)


_active = contextvars.ContextVar("fastdl_backend", default=None)


def get_backend() -> Backend:
    """The active backend (an object with ``.name``, ``.kernels`` and ``.xp``)."""
    backend = _active.get()
    if backend is None:
        backend = _load(os.environ.get("FASTDL_BACKEND", DEFAULT_BACKEND).strip().lower())
        _active.set(backend)
    return backend


def set_backend(name: str) -> Backend:
    """Make ``name`` ("numpy", "cpu" or "gpu") the active backend; returns it."""
    backend = _load(name)
    _active.set(backend)
    return backend


@contextlib.contextmanager
def use_backend(name: str):
    """``with fastdl.use_backend("numpy"): ...`` runs the block on another backend."""
    token = _active.set(_load(name))
    try:
        yield _active.get()
    finally:
        _active.reset(token)


def available_backends():
    """The backends that load on this machine, in order of preference for testing."""
    names = []
    for name in BACKEND_NAMES:
        try:
            _load(name)
        except RuntimeError:
            continue
        names.append(name)
    return names


def asarray(x, dtype=None) -> Array:
    """Put ``x`` on the active backend (a numpy array for "numpy" and "cpu")."""
    return get_backend().asarray(x, dtype=dtype)


def to_numpy(x) -> np.ndarray:
    """Bring an array of any backend back to a numpy array."""
    get = getattr(x, "get", None)
    if callable(get) and not isinstance(x, np.ndarray):
        return get()
    return np.asarray(x)
