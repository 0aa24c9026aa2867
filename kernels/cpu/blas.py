"""numpy's own BLAS, callable from inside Numba kernels (for ``fastdl.compile_step``).

A compiled training step must run its GEMMs without returning to Python. Numba's ``np.dot`` would need SciPy
and bring a second OpenBLAS with a second thread pool (the two pools then fight over the 2 cores, see
``dense.py``). Instead this finds the ``cblas_?gemm`` that numpy itself links, registers its address with
LLVM under a fixed name, and declares it as an external function: the kernels call the very same GEMM as
``np.matmul`` (bit-identical results, one thread pool), and stay cacheable on disk because the compiled code
refers to the symbol by name, not by an address of this process.

``AVAILABLE`` is False when numpy's BLAS cannot be located (e.g. an unusual numpy build); callers fall back.
"""

import ctypes
import glob
import os

import llvmlite.binding as llvm
import numpy as np
from numba import njit, types

ROW_MAJOR, NO_TRANS, TRANS = np.int32(101), np.int32(111), np.int32(112)

# (symbol prefix, symbol suffix, integer type): numpy's wheels ship scipy-openblas with an ILP64 interface
_CANDIDATES = [("scipy_cblas_", "64_", types.int64), ("cblas_", "64_", types.int64), ("cblas_", "", types.int32)]


def _library_paths():
    root = os.path.dirname(np.__file__)
    patterns = [root + ".libs/*openblas*", os.path.join(root, ".dylibs", "*openblas*"), os.path.join(root, "*openblas*")]
    return [path for pattern in patterns for path in sorted(glob.glob(pattern))]


def _locate():
    for path in _library_paths():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix, integer in _CANDIDATES:
            try:
                functions = {kind: getattr(library, f"{prefix}{kind}gemm{suffix}") for kind in "sd"}
            except AttributeError:
                continue
            return functions, integer
    return None, None


_functions, _INT = _locate()
AVAILABLE = _functions is not None


def _declare(kind, real):
    name = f"fastdl_cblas_{kind}gemm"
    llvm.add_symbol(name, ctypes.cast(_functions[kind], ctypes.c_void_p).value)
    i32, n = types.int32, _INT
    # pointers travel as intp: the same register and width as a pointer on every 64-bit ABI
    return types.ExternalFunction(name, types.void(i32, i32, i32, n, n, n, real, types.intp, n, types.intp, n, real,
                                                   types.intp, n))


if AVAILABLE:
    _sgemm = _declare("s", types.float32)
    _dgemm = _declare("d", types.float64)
else:  # never called: compile_step checks AVAILABLE first
    _sgemm = _dgemm = None


@njit(inline="always")
def _gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, out):
    if out.itemsize == 4:  # float32 (the compile_step dtypes are float32 and float64)
        _sgemm(ROW_MAJOR, trans_a, trans_b, m, n, k, np.float32(1.0), a.ctypes.data, lda, b.ctypes.data, ldb,
               np.float32(0.0), out.ctypes.data, n)
    else:
        _dgemm(ROW_MAJOR, trans_a, trans_b, m, n, k, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb, 0.0,
               out.ctypes.data, n)


@njit(inline="always")
def matmul(a, b, out):
    """out = a @ b (all C-contiguous, one dtype)."""
    _gemm(NO_TRANS, NO_TRANS, a.shape[0], b.shape[1], a.shape[1], a, a.shape[1], b, b.shape[1], out)


@njit(inline="always")
def matmul_at_b(a, b, out):
    """out = a.T @ b: the weight gradient x.T @ dz."""
    _gemm(TRANS, NO_TRANS, a.shape[1], b.shape[1], a.shape[0], a, a.shape[1], b, b.shape[1], out)


@njit(inline="always")
def matmul_a_bt(a, b, out):
    """out = a @ b.T: the input gradient dz @ W.T."""
    _gemm(NO_TRANS, TRANS, a.shape[0], b.shape[0], a.shape[1], a, a.shape[1], b, b.shape[1], out)
