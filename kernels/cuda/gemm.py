"""The GPU backend's GEMMs. ``matmul``: CuPy's (cuBLAS; numpy on the emulator), or, for float32 where
``fastdl.set_float32_matmul_precision("high")`` allows it, ``cublasGemmEx`` on TF32 tensor cores. ``gemm_ex``:
``cublasGemmEx`` on row-major arrays, also for bfloat16 operands (their bit patterns, uint16) with float32
accumulation, as Dense layers computing in bfloat16 use it.

cuBLAS is column-major. A row-major array read column-major is its transpose, so the row-major product
C = op(A) @ op(B) is computed as the column-major C^T = op(B)^T @ op(A)^T: B goes first, A second, each operand's
leading dimension is its row length, and nothing is copied or transposed in memory.

On the CUDA emulator (numpy arrays) ``emulated_gemm_ex`` plays ``cublasGemmEx`` from the same column-major
arguments, so the tests check that mapping; it rounds TF32 operands to the nearest TF32 value (ties to even) and
sums in float32. On a device, cuBLAS chooses how TF32 operands are rounded and how sums are ordered: results agree
with the emulator to the type's tolerance, not bit for bit.
"""

import functools

import numpy as np

from .launch import array_module, on_host

# cudaDataType_t (library_types.h) and cublasComputeType_t / cublasOperation_t / cublasGemmAlgo_t (cublas_api.h):
# fixed by the CUDA ABI
CUDA_R_32F, CUDA_R_16BF = 0, 14
COMPUTE_32F, COMPUTE_32F_FAST_TF32 = 68, 77
NO_TRANSPOSE, TRANSPOSE = 0, 1
GEMM_DEFAULT = -1
POINTER_MODE_HOST = 0
DATA_TYPES = {np.dtype(np.float32): CUDA_R_32F, np.dtype(np.uint16): CUDA_R_16BF}
# bfloat16 GEMMs need tensor cores of compute capability 8.0 (A100) or newer
MIN_BFLOAT16_CAPABILITY = 80

PRECISIONS = {"highest": COMPUTE_32F, "high": COMPUTE_32F_FAST_TF32, "medium": COMPUTE_32F_FAST_TF32}

_ONE = np.ones(1, np.float32)
_ZERO = np.zeros(1, np.float32)
_float32_precision = "highest"


def set_float32_precision(precision):
    """"highest" (float32 products and sums), or "high" / "medium" (TF32 products, float32 sums); checked by
    ``fastdl.set_float32_matmul_precision``."""
    global _float32_precision
    _float32_precision = precision


def float32_precision():
    return _float32_precision


def matmul(a, b, out, accumulate=False):
    """out = a @ b, or out += a @ b; a and b may be transposed views. float32 under a precision below "highest"
    goes to ``gemm_ex`` on TF32 tensor cores; everything else to CuPy's matmul (on the GPU, out += a @ b goes
    through a temporary from CuPy's memory pool)."""
    compute = PRECISIONS[_float32_precision]
    if out.dtype == np.float32 and compute != COMPUTE_32F:
        a, transpose_a = _row_major(a)
        b, transpose_b = _row_major(b)
        gemm_ex(a, b, out, transpose_a, transpose_b, accumulate, compute)
    elif accumulate:
        out += a @ b
    else:
        array_module(out).matmul(a, b, out=out)


def _row_major(matrix):
    """(C-contiguous array, whether the matrix is its transpose): a transposed view is passed as it is stored."""
    if matrix.flags.c_contiguous:
        return matrix, False
    if matrix.T.flags.c_contiguous:
        return matrix.T, True
    return array_module(matrix).ascontiguousarray(matrix), False


def gemm_ex(a, b, out, transpose_a=False, transpose_b=False, accumulate=False, compute=COMPUTE_32F):
    """out = op(a) @ op(b), or out += op(a) @ op(b); op(a) is a.T where transpose_a. ``a`` and ``b`` are C-contiguous
    float32 arrays or bfloat16 bit patterns (uint16), both the same; ``out`` a C-contiguous float32 array.
    ``compute``: COMPUTE_32F, or COMPUTE_32F_FAST_TF32 for float32 operands on TF32 tensor cores."""
    rows, columns = out.shape
    inner = a.shape[0] if transpose_a else a.shape[1]
    op_a_shape = (a.shape[1], a.shape[0]) if transpose_a else a.shape
    op_b_shape = (b.shape[1], b.shape[0]) if transpose_b else b.shape
    if op_a_shape != (rows, inner) or op_b_shape != (inner, columns):
        raise ValueError(f"gemm_ex: op(a) {op_a_shape} @ op(b) {op_b_shape} does not give out {out.shape}")
    if a.dtype != b.dtype or a.dtype not in DATA_TYPES or out.dtype != np.float32:
        raise TypeError(f"gemm_ex: a and b must both be float32 or bfloat16 bits (uint16), out float32; got "
                        f"{a.dtype}, {b.dtype} and {out.dtype}")
    for name, array in (("a", a), ("b", b), ("out", out)):
        if not array.flags.c_contiguous:
            raise ValueError(f"gemm_ex: {name} must be C-contiguous (shape {array.shape}, strides {array.strides})")
    # the column-major C^T (columns x rows) = op(B)^T @ op(A)^T; each operand's leading dimension is its row length
    arguments = (TRANSPOSE if transpose_b else NO_TRANSPOSE, TRANSPOSE if transpose_a else NO_TRANSPOSE,
                 columns, rows, inner, b, DATA_TYPES[b.dtype], b.shape[1], a, DATA_TYPES[a.dtype], a.shape[1],
                 1.0 if accumulate else 0.0, out, columns, compute)
    (emulated_gemm_ex if on_host(out) else _device_gemm_ex)(*arguments)


def _device_gemm_ex(transa, transb, m, n, k, a, a_type, lda, b, b_type, ldb, beta, c, ldc, compute):
    from cupy.cuda import cublas, device

    handle = device.get_cublas_handle()
    mode = cublas.getPointerMode(handle)
    cublas.setPointerMode(handle, POINTER_MODE_HOST)  # alpha and beta are host scalars
    try:
        cublas.gemmEx(handle, transa, transb, m, n, k, _ONE.ctypes.data, a.data.ptr, a_type, lda, b.data.ptr,
                      b_type, ldb, (_ONE if beta else _ZERO).ctypes.data, c.data.ptr, CUDA_R_32F, ldc, compute,
                      GEMM_DEFAULT)
    finally:
        cublas.setPointerMode(handle, mode)


def emulated_gemm_ex(transa, transb, m, n, k, a, a_type, lda, b, b_type, ldb, beta, c, ldc, compute):
    """cublasGemmEx's column-major semantics on numpy buffers: C (m x n, leading dimension ldc) = op(A) @ op(B) +
    beta C, A stored (m x k, or k x m with transa) with leading dimension lda, B likewise; float32 sums."""
    stored_a = _column_major(a, a_type, (k, m) if transa else (m, k), lda, compute)
    stored_b = _column_major(b, b_type, (n, k) if transb else (k, n), ldb, compute)
    product = (stored_a.T if transa else stored_a) @ (stored_b.T if transb else stored_b)
    result = c.reshape(-1)[:ldc * n].reshape(n, ldc)[:, :m].T  # a view of C's column-major m x n block
    if beta:
        product += result
    result[...] = product


def _column_major(buffer, data_type, shape, leading, compute):
    """The column-major (rows x columns) matrix stored in ``buffer`` with leading dimension ``leading``, as float32
    values: bfloat16 bits widened, float32 rounded to TF32 under COMPUTE_32F_FAST_TF32."""
    rows, columns = shape
    matrix = buffer.reshape(-1)[:leading * columns].reshape(columns, leading)[:, :rows].T
    if data_type == CUDA_R_16BF:
        return (matrix.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return round_tf32(matrix) if compute == COMPUTE_32F_FAST_TF32 else matrix


def round_tf32(values):
    """float32 values rounded to the nearest TF32 value (10 mantissa bits, ties to even); NaN and Inf kept."""
    bits = np.ascontiguousarray(values, np.float32).view(np.uint32)
    finite = (bits & np.uint32(0x7F800000)) != np.uint32(0x7F800000)
    carry = np.uint32(0xFFF) + ((bits >> np.uint32(13)) & np.uint32(1))
    rounded = (bits + np.where(finite, carry, np.uint32(0))) & np.uint32(0xFFFFE000)
    return np.where(finite, rounded, bits).view(np.float32)


def bfloat16_supported(like):
    """Whether cuBLAS multiplies bfloat16 operands where ``like`` lives (the emulator: always)."""
    return on_host(like) or device_has_bfloat16()


def device_has_bfloat16():
    """Whether the current CUDA device has bfloat16 tensor cores (compute capability 8.0 or newer)."""
    return _device_capability() >= MIN_BFLOAT16_CAPABILITY


def _device_capability():
    from cupy.cuda import device

    return _capability_of(device.get_device_id())


@functools.lru_cache(maxsize=None)
def _capability_of(device_id):
    from cupy.cuda import device

    return int(device.Device(device_id).compute_capability)
