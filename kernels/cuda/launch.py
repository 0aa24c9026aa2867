"""Compile each CUDA source once per process and look up its kernels by name and dtype; shared launch helpers.

The launchers work on CuPy arrays (the "gpu" backend: ``cupy.RawModule``, cuBLAS) and on numpy arrays (the
"cuda-emulator" backend: the same kernels compiled for the CPU by ``emulator.py``, GEMMs in numpy), chosen by
the type of the arrays they are given, so one set of launchers serves both and CI runs them without a GPU.
"""

import functools

import numpy as np

from .sources import BLOCK as THREADS
from .sources import definitions, folder
MAX_BLOCKS = 4 * 65535
MAX_GRID_Y = 65535  # the device's limit on gridDim.y (and z)
SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
NULL = np.uint64(0)  # an absent optional array (a null pointer in the kernel)


@functools.lru_cache(maxsize=None)
def module(source):
    import cupy

    return cupy.RawModule(code=(folder() / source).read_text(),
                          options=("--std=c++17", f"-I{folder()}", *definitions()))


def on_host(array):
    return isinstance(array, np.ndarray)


def kernel(source, name, dtype=None, like=None):
    """The kernel ``fastdl_<name>[_f32|_f64]`` of ``source``: emulated on the CPU when ``like`` is a numpy array."""
    suffix = "" if dtype is None else "_" + SUFFIX[np.dtype(dtype)]
    if like is not None and on_host(like):
        from . import emulator

        return emulator.module(source).get_function(f"fastdl_{name}{suffix}")
    return _device_function(source, f"fastdl_{name}{suffix}")


@functools.lru_cache(maxsize=None)
def _device_function(source, name):
    """Looked up once: CuPy asks the driver for the function again on every get_function call."""
    return module(source).get_function(name)


def launch(source, name, like, grid, block, args):
    """Run ``fastdl_<name>_<dtype of like>`` of ``source`` on (grid, block) with ``args``."""
    kernel(source, name, like.dtype, like=like)(grid, block, args)


def array_module(array):
    if on_host(array):
        return np
    import cupy

    return cupy


def blocks(n):
    """Grid size for a grid-stride loop over n elements."""
    return (max(1, min((n + THREADS - 1) // THREADS, MAX_BLOCKS)),)


def row_chunks(rows, rows_per_chunk):
    """(rows per chunk, chunks) for kernels that give each blockIdx.y one chunk of rows: the chunks grow past
    ``rows_per_chunk`` rows where there would be more of them than the device allows blocks in y."""
    per_chunk = max(rows_per_chunk, (rows + MAX_GRID_Y - 1) // MAX_GRID_Y)
    return per_chunk, max(1, (rows + per_chunk - 1) // per_chunk)


def row_threads(cols):
    """Block size for one-block-per-row kernels: whole warps, no more than the row needs (narrow rows: one warp)."""
    return (min(THREADS, max(32, (cols + 31) // 32 * 32)),)


def optional(array):
    return NULL if array is None or array.size == 0 else array


_workspaces = {}


def workspace(name, shape, dtype, like):
    """A scratch array kept between calls (one per name, shape, dtype and array module): no allocation per step."""
    xp = array_module(like)
    key = (name, tuple(shape), np.dtype(dtype), xp.__name__)
    if key not in _workspaces:
        _workspaces[key] = xp.empty(shape, dtype=dtype)
    return _workspaces[key]


def first_value(array):
    """array[0] as a Python number: one small copy to the host (``get`` skips CuPy's indexing, a few us a call)."""
    return (array if on_host(array) else array.get())[0].item()


def device_total(partials, like):
    """The sum of a float64 array by one fixed-order block, as a one-element array on the device (a workspace: read
    or copy it before the next call)."""
    out = workspace("total", (1,), np.float64, like)
    kernel("activations.cu", "sum_doubles", like=like)((1,), (THREADS,), (partials, np.int64(partials.size), out))
    return out


def total(partials, like):
    """The sum of a float64 array by one fixed-order block, as a Python float (one small copy to the host)."""
    return float(first_value(device_total(partials, like)))


