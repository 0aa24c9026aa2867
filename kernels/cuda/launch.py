"""Compile each CUDA source once per process (``cupy.RawModule``) and look up its kernels by name and dtype."""

import functools
import importlib.resources

import numpy as np

THREADS = 256  # FASTDL_BLOCK in common.cuh: the block reductions assume it
MAX_BLOCKS = 4 * 65535
SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
NULL = np.uint64(0)  # an absent optional array (a null pointer in the kernel)


def folder():
    return importlib.resources.files("fastdl.kernels") / "cuda"


@functools.lru_cache(maxsize=None)
def module(source):
    import cupy

    return cupy.RawModule(code=(folder() / source).read_text(), options=("--std=c++17", f"-I{folder()}"))


def kernel(source, name, dtype=None):
    """The kernel ``fastdl_<name>[_f32|_f64]`` of ``source``."""
    suffix = "" if dtype is None else "_" + SUFFIX[np.dtype(dtype)]
    return module(source).get_function(f"fastdl_{name}{suffix}")


def blocks(n):
    """Grid size for a grid-stride loop over n elements."""
    return (max(1, min((n + THREADS - 1) // THREADS, MAX_BLOCKS)),)


def optional(array):
    return NULL if array is None else array
