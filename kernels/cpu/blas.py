"""GEMMs callable from inside Numba kernels, through the provider ``blas_provider.py`` found (MKL or numpy's BLAS).

``gemm_rows`` and ``gemm_at_b_columns`` compute a block of a product on the calling thread. The layers' kernels
call them from their own parallel loop, one block per thread, and run the element-wise work on the block right
after, while it is in cache: Numba's pool is then the only pool that runs, so a GEMM never wakes threads that would
spin against the next parallel kernel. A block's sums can differ in the last bits from the whole product's (the BLAS
picks its kernel by size): code that must match a split product bit for bit runs the same blocks
(``dense.parts_for``). A kernel brackets its loops with
``blas_single_threaded()`` / ``blas_threads_restore(previous)``, on the calling thread before and after the loop:
OpenBLAS's pthreads builds keep the count in one variable for all threads, so setting it inside the loop, from
several threads at once, would race (seen: the count left at 1 for the rest of the process). Where the count is
per thread (MKL), each block call sets it for its own thread too (``blas_provider.py``).

The compiled code refers to the provider's functions by fixed symbol names and declares 64-bit integers (MKL is put
in its ILP64 mode; numpy's wheels bundle an ILP64 OpenBLAS). A 32-bit-integer BLAS declares 32-bit ones; the kernels'
disk cache is keyed on that width (``cache_guard.py``).
"""

import numpy as np
from numba import njit, types

from .blas_provider import AVAILABLE, INTEGER_BITS, PER_THREAD_CONTROL

ROW_MAJOR, NO_TRANS, TRANS = np.int32(101), np.int32(111), np.int32(112)
_INT = types.int64 if INTEGER_BITS == 64 else types.int32


def _gemm_signature(real):
    i32, n = types.int32, _INT
    # pointers travel as intp: the same register and width as a pointer on every 64-bit ABI
    return types.void(i32, i32, i32, n, n, n, real, types.intp, n, types.intp, n, real, types.intp, n)


if AVAILABLE:
    _sgemm = types.ExternalFunction("fastdl_cblas_sgemm", _gemm_signature(types.float32))
    _dgemm = types.ExternalFunction("fastdl_cblas_dgemm", _gemm_signature(types.float64))
else:  # never called: the callers check AVAILABLE first
    _sgemm = _dgemm = None

if PER_THREAD_CONTROL:
    _set_threads_local = types.ExternalFunction("fastdl_blas_set_threads_local", types.int32(types.int32))
    _set_worker_threads = types.ExternalFunction("fastdl_blas_set_worker_threads", types.int32(types.int32))
else:
    @njit(inline="always")
    def _set_threads_local(count):  # the layers split their GEMMs only where the count can be set
        return np.int32(0)

    _set_worker_threads = _set_threads_local


@njit(inline="always")
def _gemm(trans_a, trans_b, m, n, k, a_address, lda, b_address, ldb, beta, out, out_address, ldc):
    """out's block at out_address = op(a) @ op(b) + beta * itself; all row-major, out's dtype for everything."""
    if out.itemsize == 4:  # float32 (the kernels' dtypes are float32 and float64)
        _sgemm(ROW_MAJOR, trans_a, trans_b, m, n, k, np.float32(1.0), a_address, lda, b_address, ldb,
               np.float32(beta), out_address, ldc)
    else:
        _dgemm(ROW_MAJOR, trans_a, trans_b, m, n, k, 1.0, a_address, lda, b_address, ldb, np.float64(beta),
               out_address, ldc)


@njit(inline="always")
def blas_single_threaded():
    """Make the provider's GEMMs run on their calling thread alone; returns the count to restore."""
    return _set_threads_local(np.int32(1))


@njit(inline="always")
def blas_threads_restore(previous):
    _set_threads_local(previous)


@njit(inline="always")
def gemm_rows(a, b, out, first, last, transpose_b):
    """out[first:last] = a[first:last] @ op(b), op(b) = b.T when ``transpose_b``."""
    if last <= first:
        return
    n = b.shape[0] if transpose_b else b.shape[1]
    k = a.shape[1]
    previous = _set_worker_threads(np.int32(1))
    _gemm(NO_TRANS, TRANS if transpose_b else NO_TRANS, last - first, n, k,
          a.ctypes.data + first * k * a.itemsize, k, b.ctypes.data, b.shape[1], 0.0, out,
          out.ctypes.data + first * n * out.itemsize, n)
    _set_worker_threads(previous)


@njit(inline="always")
def gemm_columns(a, b, out, first, last):
    """out[:, first:last] = a @ b[:, first:last]."""
    if last <= first:
        return
    n = b.shape[1]
    k = a.shape[1]
    previous = _set_worker_threads(np.int32(1))
    _gemm(NO_TRANS, NO_TRANS, a.shape[0], last - first, k, a.ctypes.data, k, b.ctypes.data + first * b.itemsize, n,
          0.0, out, out.ctypes.data + first * out.itemsize, n)
    _set_worker_threads(previous)


@njit(inline="always")
def gemm_at_b_columns(a, b, out, first, last, beta):
    """out[:, first:last] = a.T @ b[:, first:last] + beta * out[:, first:last]."""
    if last <= first:
        return
    n = b.shape[1]
    previous = _set_worker_threads(np.int32(1))
    _gemm(TRANS, NO_TRANS, a.shape[1], last - first, a.shape[0], a.ctypes.data, a.shape[1],
          b.ctypes.data + first * b.itemsize, n, beta, out, out.ctypes.data + first * out.itemsize, n)
    _set_worker_threads(previous)
