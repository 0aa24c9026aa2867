"""``fastdl.set_float32_matmul_precision``: how the GPU backend multiplies float32 matrices, PyTorch's name and
levels (``torch.set_float32_matmul_precision``).

- "highest" (the default): float32 products and sums.
- "high" and "medium": the products on TF32 tensor cores (operands rounded to 10 mantissa bits, about 3 decimal
  digits; sums in float32), several times faster on GPUs of compute capability 8.0 and newer. PyTorch's "medium"
  may use bfloat16 products; here it means TF32 too.

The CPU backends' float32 GEMMs are float32 at every level (bfloat16 products there are a layer's choice:
``Dense(..., compute_dtype="bfloat16")``), and float64 GEMMs are never affected. The setting is global, as PyTorch's
is, and read at every GEMM: it applies from the next forward or backward on.

>>> fastdl.set_float32_matmul_precision("high")  # doctest: +SKIP
"""

from .kernels.cuda import gemm

PRECISIONS = tuple(gemm.PRECISIONS)


def set_float32_matmul_precision(precision: str) -> None:
    """Set the precision of the GPU backend's float32 GEMMs: "highest", "high" or "medium" (see the module)."""
    if not isinstance(precision, str) or precision.lower() not in PRECISIONS:
        raise ValueError(f"set_float32_matmul_precision: precision must be one of {', '.join(PRECISIONS)}, got "
                         f"{precision!r}")
    gemm.set_float32_precision(precision.lower())


def get_float32_matmul_precision() -> str:
    """The precision of the GPU backend's float32 GEMMs: "highest" (the default), "high" or "medium"."""
    return gemm.float32_precision()
