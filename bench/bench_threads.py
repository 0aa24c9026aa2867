"""One thread pool at a time: a GEMM and an element-wise epilogue, alternating, as in every training step.

Three designs, same work: ``bench_fastdl_dense_layer`` is fastdl's (the GEMM split into row blocks over Numba's
pool, single-threaded BLAS per block, the epilogue on each block while it is in cache: one pool);
``bench_gemm_then_serial_epilogue`` keeps BLAS's own pool for the GEMM and runs the epilogue on the calling thread
(fastdl's design before, when batch norm and the optimizers still woke Numba's pool next to BLAS's);
``bench_gemm_then_parallel_epilogue`` wakes Numba's pool next to BLAS's spinning threads.
"""

import numba
import numpy as np
from numba import njit, prange

from fastdl.kernels.cpu.dense import activate_rows
from fastdl.kernels.reference import activations as table

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


def bench_fastdl_dense_layer(benchmark):
    import fastdl

    x = _inputs()[0]
    with fastdl.use_backend("cpu"):
        layer = fastdl.Dense(SHAPE[1], SHAPE[2], activation="relu", seed=0)
        layer(x)
        benchmark(layer, x)


def bench_gemm_then_serial_epilogue(benchmark):
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
