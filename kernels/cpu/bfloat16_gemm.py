"""A bfloat16 GEMM for Dense layers computing in bfloat16, callable from compiled code: oneDNN's
``dnnl_gemm_bf16bf16f32`` (bfloat16 operands, float32 accumulation and output, row-major).

Found in the ``onednn-cpu-gomp`` wheel (``pip install ".[onednn]"``: 39 MB, x86-64 Linux), whose library runs its
threads on GNU OpenMP, the ``libgomp`` of Numba's OpenMP threading layer, so the two share one pool (called from
inside fastdl's parallel loop, oneDNN's own parallel region is nested and runs on the calling thread). oneDNN picks
the CPU's bfloat16 instructions (AVX-512 BF16, AMX) itself (its rates against the float32 GEMM:
bench/results/cpu-bfloat16.md). Without it, bfloat16 compute
multiplies the rounded operands with the float32 GEMM: the same products (a product of two bfloat16 values is exact
in float32) and float32 sums, in another order.

``FASTDL_BFLOAT16_GEMM`` = ``auto`` (the default: oneDNN when installed) or ``off``; ``FASTDL_ONEDNN_LIBRARY``
names the library file. A library that is asked for but cannot be loaded gives one warning and the fallback.
Registered with LLVM under a fixed name, so compiled code stays cacheable on disk (as ``blas_provider.py`` does).
"""

import ctypes
import glob
import os
import sys
import warnings

import llvmlite.binding as llvm
import numpy as np
from numba import njit, types

CHOICES = ("auto", "off")
# Smaller products run faster through the float32 GEMM: oneDNN's fixed cost per call outweighs its bfloat16 rate
# there (the measured crossover: this commit's message and bench/results/cpu-bfloat16.md)
MIN_MULTIPLY_ADDS = 1 << 19
NO, TRANSPOSE = np.int8(ord("N")), np.int8(ord("T"))


def _candidates():
    named = os.environ.get("FASTDL_ONEDNN_LIBRARY")
    if named:
        return [named]
    roots = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(sys.executable))}
    return [path for root in sorted(roots) for path in sorted(glob.glob(os.path.join(root, "lib", "libdnnl.so.3*")))]


def _load():
    """(ctypes function, library path) or (None, None)."""
    choice = os.environ.get("FASTDL_BFLOAT16_GEMM", "auto").strip().lower()
    if choice not in CHOICES:
        warnings.warn(f"fastdl: FASTDL_BFLOAT16_GEMM={choice!r} is not one of {CHOICES}; using 'auto'",
                      RuntimeWarning)
        choice = "auto"
    if choice == "off":
        return None, None
    for path in _candidates():
        try:
            library = ctypes.CDLL(path)
            function = library.dnnl_gemm_bf16bf16f32
        except (OSError, AttributeError) as error:
            warnings.warn(f"fastdl: oneDNN at {path} could not be used for bfloat16 GEMMs ({error}); bfloat16 "
                          "compute runs through the float32 GEMM", RuntimeWarning)
            continue
        return function, path
    return None, None


_FUNCTION, LIBRARY = _load()
AVAILABLE = _FUNCTION is not None

if AVAILABLE:
    _FUNCTION.restype = ctypes.c_int
    _FUNCTION.argtypes = [ctypes.c_char, ctypes.c_char, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_float,
                          ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_float,
                          ctypes.c_void_p, ctypes.c_int64]
    llvm.add_symbol("fastdl_dnnl_gemm_bf16bf16f32", ctypes.cast(_FUNCTION, ctypes.c_void_p).value)
    _i8, _i64, _f32, _pointer = types.int8, types.int64, types.float32, types.intp
    _gemm = types.ExternalFunction("fastdl_dnnl_gemm_bf16bf16f32", types.int32(
        _i8, _i8, _i64, _i64, _i64, _f32, _pointer, _i64, _pointer, _i64, _f32, _pointer, _i64))
else:  # never called: the callers check AVAILABLE first
    _gemm = None


@njit(inline="always")
def gemm_bf16(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """c = op(a) @ op(b) + beta * c: a and b bfloat16 bit patterns (uint16 arrays), c float32; row-major.
    Returns oneDNN's status (0: success)."""
    return _gemm(trans_a, trans_b, m, n, k, np.float32(1.0), a.ctypes.data, lda, b.ctypes.data, ldb,
                 np.float32(beta), c.ctypes.data, ldc)


def matmul_bits(a_bits, b_bits, out):
    """out = a @ b from Python, a and b bfloat16 bit patterns (C-contiguous uint16, (m, k) and (k, n)), out float32
    (m, n): the provider's own call, for benchmarks and ceilings."""
    (m, k), n = a_bits.shape, b_bits.shape[1]
    status = _FUNCTION(b"N", b"N", m, n, k, 1.0, a_bits.ctypes.data, k, b_bits.ctypes.data, n, 0.0, out.ctypes.data, n)
    if status != 0:
        raise RuntimeError(f"dnnl_gemm_bf16bf16f32 returned status {status}")


def used_for(rows, inner, columns):
    """Whether a (rows x inner) by (inner x columns) product of bfloat16 values goes through the bfloat16 GEMM."""
    return AVAILABLE and rows * inner * columns >= MIN_MULTIPLY_ADDS


def info():
    return {"bfloat16_gemm": "onednn" if AVAILABLE else None, "bfloat16_gemm_library": LIBRARY}
