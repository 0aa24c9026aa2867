"""The machine's own ceilings, measured in the same run as the kernels they judge.

Memory bandwidth: a copy (a = b) and a triad (a = b + s c) over arrays far larger than the caches, on every
core through Numba's pool. The bytes counted include the write-allocate read of the target (copy: 3 arrays,
triad: 4), i.e. what the memory bus really carries: STREAM's convention leaves it out and then reports
two thirds of the bus for a copy, below what an in-place kernel such as Adam reaches (measured here: 34 GB/s
STREAM copy, 56 GB/s Adam). GEMM: float32 ``np.matmul`` (numpy's BLAS, the one fastdl's dense layers use) on
square matrices, and where a bfloat16 GEMM provider is installed (``fastdl.blas_info()["bfloat16_gemm"]``) its
own call on the same matrices rounded to bfloat16: the ceiling of the cases that compute in bfloat16.
On the GPU: a device-to-device copy, a CuPy triad and cuBLAS through ``cupy.matmul``; there no write-allocate
read is counted (a GPU's L2 does not fetch a line that is wholly overwritten), so copy counts 2 arrays, triad 3.
"""

import numpy as np
from numba import njit, prange

from ..kernels import bfloat16
from .timing import sample


@njit(parallel=True, cache=True)
def copy_kernel(source, target):
    for i in prange(source.shape[0]):
        target[i] = source[i]


@njit(parallel=True, cache=True)
def triad_kernel(a, b, c, scalar):
    for i in prange(a.shape[0]):
        a[i] = b[i] + scalar * c[i]


def higher(first, second):
    """Two measurements of one device's ceilings as one: each rate the higher of the two (a ceiling is what the
    machine can do; a minute in which the host's neighbours took the cores measured a GEMM ceiling half the one
    before and after it, and put every GEMM-bound case above 100%), the sizes as measured."""
    return {key: max(value, second[key]) if key.endswith(("_GBps", "_GFLOPs")) and key in second else value
            for key, value in first.items()}


def best(call, repeats=5, seconds=0.2):
    """Fastest of a few medians: a ceiling is what the machine can do, not what it did while busy."""
    call()
    return min(sample(call, seconds) for _ in range(repeats))


def cpu_ceilings(quick=True):
    """{'copy_GBps', 'triad_GBps', 'bandwidth_GBps' (the larger), 'gemm_GFLOPs', sizes}."""
    n = 1 << (24 if quick else 25)  # 64 or 128 MiB per array: far beyond any cache here
    a, b, c = (np.ones(n, np.float32) for _ in range(3))
    copy_us = best(lambda: copy_kernel(b, a))
    triad_us = best(lambda: triad_kernel(a, b, c, np.float32(3.0)))
    side = 1024 if quick else 2048
    x = np.random.default_rng(0).standard_normal((side, side)).astype(np.float32)
    out = np.empty_like(x)
    gemm_us = best(lambda: np.matmul(x, x, out=out), repeats=3)
    summary = _summary(n, copy_us, triad_us, side, gemm_us)
    from ..kernels.cpu import bfloat16_gemm  # the cpu backend's modules: loaded only where CPU ceilings are measured

    if bfloat16_gemm.AVAILABLE:
        bits = (bfloat16.round_nearest(x).view(np.uint32) >> np.uint32(16)).astype(np.uint16)
        bfloat16_us = best(lambda: bfloat16_gemm.matmul_bits(bits, bits, out), repeats=3)
        summary["bfloat16_gemm_GFLOPs"] = 2 * side ** 3 / bfloat16_us / 1e3
    return summary


def _summary(n, copy_us, triad_us, side, gemm_us, write_allocate=True):
    extra = 1 if write_allocate else 0  # the target's line read before it is written
    copy_gbps, triad_gbps = (2 + extra) * 4 * n / copy_us / 1e3, (3 + extra) * 4 * n / triad_us / 1e3
    return {"copy_GBps": copy_gbps, "triad_GBps": triad_gbps, "bandwidth_GBps": max(copy_gbps, triad_gbps),
            "stream_copy_GBps": 2 * 4 * n / copy_us / 1e3, "gemm_GFLOPs": 2 * side ** 3 / gemm_us / 1e3,
            "stream_elements": n, "gemm_side": side, "write_allocate": write_allocate}


def gpu_ceilings(quick=True):
    import cupy

    n = 1 << (26 if quick else 28)
    a, b, c = (cupy.ones(n, cupy.float32) for _ in range(3))
    stream = cupy.cuda.get_current_stream()

    def synced(call):
        def run():
            call()
            stream.synchronize()
        return run

    triad = cupy.ElementwiseKernel("float32 b, float32 c, float32 s", "float32 a", "a = b + s * c", "fastdl_triad")
    copy_us = best(synced(lambda: cupy.copyto(a, b)))
    triad_us = best(synced(lambda: triad(b, c, np.float32(3.0), a)))
    side = 4096 if quick else 8192
    x = cupy.random.standard_normal((side, side), dtype=cupy.float32)
    out = cupy.empty_like(x)
    gemm_us = best(synced(lambda: cupy.matmul(x, x, out=out)), repeats=3)
    summary = _summary(n, copy_us, triad_us, side, gemm_us, write_allocate=False)
    from ..kernels.cuda import gemm

    if gemm.device_has_bfloat16():  # cuBLAS's GEMMs on tensor cores, the same matrices: bfloat16 and TF32
        tf32_us = best(synced(lambda: gemm.gemm_ex(x, x, out, compute=gemm.COMPUTE_32F_FAST_TF32)), repeats=3)
        bits = (x.view(cupy.uint32) >> 16).astype(cupy.uint16)  # truncated: any bfloat16 values do
        bfloat16_us = best(synced(lambda: gemm.gemm_ex(bits, bits, out)), repeats=3)
        summary["tf32_gemm_GFLOPs"] = 2 * side ** 3 / tf32_us / 1e3
        summary["bfloat16_gemm_GFLOPs"] = 2 * side ** 3 / bfloat16_us / 1e3
    return summary
