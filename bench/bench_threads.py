"""One thread pool at a time: a GEMM and an element-wise epilogue, alternating, as in every training step.

fastdl runs the epilogue serially on the calling thread while BLAS keeps its pool; the naive alternative, a
Numba ``parallel=True`` epilogue, has to wake a second pool next to BLAS's spinning threads. Compare
``bench_gemm_then_fastdl_epilogue`` with ``bench_gemm_then_parallel_epilogue`` (same work).
"""

import numba
import numpy as np
from numba import njit, prange

from fastdl.kernels.cpu.dense import activate_rows
from fastdl.kernels import activation_table as table

SHAPE = (256, 784, 1024)


@njit(parallel=True, cache=True)
def parallel_bias_relu(y, bias):
    for i in prange(y.shape[0]):
        for j in range(y.shape[1]):
            v = y[i, j] + bias[j]
            y[i, j] = v if v > 0 else np.float32(0.0)


def _inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE[:2]).astype(np.float32)
    weight = rng.standard_normal(SHAPE[1:]).astype(np.float32)
    return x, weight, np.zeros(SHAPE[2], np.float32), np.empty((SHAPE[0], SHAPE[2]), np.float32)


def bench_gemm_then_fastdl_epilogue(benchmark):
    x, weight, bias, y = _inputs()
    params = np.zeros(table.NUM_PARAMS, np.float32)

    def step():
        np.matmul(x, weight, out=y)
        activate_rows(y, bias, table.RELU, params, np.uint64(0), np.uint64(0), y, False, y, False, None)

    step()
    benchmark(step)


def bench_gemm_then_parallel_epilogue(benchmark):
    x, weight, bias, y = _inputs()

    def step():
        np.matmul(x, weight, out=y)
        parallel_bias_relu(y, bias)

    step()
    benchmark.extra_info["numba_threads"] = numba.get_num_threads()
    benchmark(step)
