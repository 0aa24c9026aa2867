"""One knob for every thread fastdl runs: BLAS's pool (the GEMMs) and Numba's pool (large parallel kernels).

fastdl keeps one pool busy at a time by design (see ``kernels/cpu/dense.py``), so users need no environment
variables; ``set_num_threads`` only chooses how many cores both pools may use.
"""

import ctypes
import glob
import os

import numba
import numpy as np

# numpy's wheels bundle OpenBLAS under a prefixed name; older builds use the plain one.
_OPENBLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads")
_OPENBLAS_GETTERS = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads")


def _numpy_openblas():
    libs_dir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in glob.glob(os.path.join(libs_dir, "*openblas*")):
        library = ctypes.CDLL(path)
        setter = next((getattr(library, n) for n in _OPENBLAS_SETTERS if hasattr(library, n)), None)
        getter = next((getattr(library, n) for n in _OPENBLAS_GETTERS if hasattr(library, n)), None)
        if setter is not None and getter is not None:
            setter.argtypes, setter.restype = [ctypes.c_int], None
            getter.argtypes, getter.restype = [], ctypes.c_int
            return setter, getter
    return None


_blas = None


def _blas_controls():
    global _blas
    if _blas is None:
        _blas = _numpy_openblas() or False
    return _blas


def set_num_threads(count):
    """Use ``count`` threads for GEMMs (numpy's OpenBLAS) and for Numba's parallel kernels."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"set_num_threads: count must be a positive integer, got {count!r}")
    if count > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(
            f"set_num_threads: {count} threads asked, but Numba was started with at most "
            f"{numba.config.NUMBA_NUM_THREADS} (NUMBA_NUM_THREADS)"
        )
    numba.set_num_threads(count)
    controls = _blas_controls()
    if controls:
        controls[0](count)


def get_num_threads():
    """(BLAS threads, Numba threads); BLAS is None when numpy's BLAS is not a bundled OpenBLAS."""
    controls = _blas_controls()
    return (controls[1]() if controls else None), numba.get_num_threads()
