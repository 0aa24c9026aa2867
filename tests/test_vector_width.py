"""``wide_vectors()`` must reach LLVM: the attribute in the function's IR and, on a CPU with AVX-512, 512-bit
registers in its loop (LLVM's tuning for those CPUs would otherwise pick 256-bit ones)."""

import llvmlite.binding as llvm
import numpy as np
from numba import njit

from fastdl.kernels.cpu.vector_width import PREFER_512_BIT, wide_vectors


@njit
def _scaled_sum(x, y, out):
    wide_vectors()
    for j in range(out.shape[0]):
        out[j] = 2.0 * x[j] + y[j]


@njit
def _scaled_sum_default(x, y, out):
    for j in range(out.shape[0]):
        out[j] = 2.0 * x[j] + y[j]


def test_wide_vectors_marks_the_function_and_widens_its_loop():
    x, y = np.arange(1000, dtype=np.float32), np.ones(1000, np.float32)
    out = np.empty_like(x)
    _scaled_sum(x, y, out)
    _scaled_sum_default(x, y, out)
    np.testing.assert_array_equal(out, 2 * x + y)
    (ir,) = _scaled_sum.inspect_llvm().values()
    (default_ir,) = _scaled_sum_default.inspect_llvm().values()
    assert PREFER_512_BIT in ir and PREFER_512_BIT not in default_ir
    if "+avx512f" in llvm.get_host_cpu_features().flatten().split(","):
        (asm,) = _scaled_sum.inspect_asm().values()
        assert "zmm" in asm


def test_cross_entropy_takes_wide_vectors_only_for_wide_rows():
    """The kernel's ``wide`` flag: None prunes the call at compile time, so narrow rows keep the default width."""
    from fastdl.kernels.cpu import losses

    kernel = njit(losses.softmax_cross_entropy_kernel.py_func)  # a fresh compilation: cached code has no IR to show
    irs = {}
    for classes in (losses.WIDE_CLASSES - 1, losses.WIDE_CLASSES):
        logits = np.zeros((2, classes), np.float32)
        wide = losses.wide_rows(classes)
        kernel(logits, np.array([0, 1]), 0.0, 0.5, np.empty_like(logits), wide)
        irs[wide] = kernel.inspect_llvm(kernel.signatures[-1])
    assert PREFER_512_BIT in irs[True] and PREFER_512_BIT not in irs[None]
