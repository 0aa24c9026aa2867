"""One knob for every thread pool fastdl uses on the CPU: Numba's (its kernels, and the layers' GEMMs, which fastdl
splits over it) and the BLAS provider's own (``compile_step``'s GEMMs; with MKL it is the same GNU OpenMP pool).

Users need no environment variables; ``set_num_threads`` chooses how many cores every pool may use, through
threadpoolctl where it is installed (so a BLAS that fastdl does not call, loaded by another library, follows too).
"""

import numba


def _provider():
    from .kernels.cpu import blas_provider

    return blas_provider.PROVIDER


# bumped by every set_num_threads: kernels bound to a thread count (a Dense layer's) are bound again
generation = 0


def set_num_threads(count):
    """Use ``count`` threads for Numba's parallel kernels and for the BLAS provider's GEMMs.

    Example: ``fastdl.set_num_threads(1)`` runs everything on the calling thread.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"set_num_threads: count must be a positive integer, got {count!r}")
    if count > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(
            f"set_num_threads: {count} threads asked, but Numba was started with at most "
            f"{numba.config.NUMBA_NUM_THREADS} (NUMBA_NUM_THREADS)"
        )
    global generation
    numba.set_num_threads(count)
    generation += 1
    provider = _provider()
    if provider is not None:
        provider.set_threads(count)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=count, user_api="blas")


def get_num_threads():
    """(BLAS provider threads, Numba threads); the first is None when no BLAS provider was found."""
    provider = _provider()
    return (provider.get_threads() if provider is not None else None), numba.get_num_threads()


def blas_info():
    """What runs fastdl's CPU GEMMs and how it is threaded: a dict with ``provider`` (``"mkl"``, ``"openblas"`` or
    None), ``library`` (its path), ``version``, ``threading`` (its threading runtime), ``threads``, ``numba_threads``,
    ``numba_threading_layer``, ``parallel_gemm`` (whether the layers split their GEMMs over Numba's pool),
    ``bfloat16_gemm`` (``"onednn"`` or None: what multiplies Dense layers computing in bfloat16) and
    ``bfloat16_gemm_library``.

    Choose the provider with the environment variable ``FASTDL_BLAS`` (``auto``, ``mkl``, ``openblas``) before
    the first import of fastdl's CPU kernels.
    """
    from .kernels.cpu import bfloat16_gemm, blas_provider

    info = {**blas_provider.info(), **bfloat16_gemm.info()}
    info["numba_threads"] = numba.get_num_threads()
    try:
        info["numba_threading_layer"] = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        info["numba_threading_layer"] = numba.config.THREADING_LAYER
    return info
