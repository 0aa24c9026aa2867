"""Drop stale Numba cache files when any CPU kernel source changes.

Numba's on-disk cache (``cache=True``) checks only the file that defines a kernel, not the helpers inlined
into it from other files, so editing ``activations.py`` would silently keep running the old binary. Before
the kernels load, this hashes every source they depend on and clears the cache when the hash changed. The BLAS
provider's calling convention (the width of its integers, whether a thread's own BLAS thread count can be set) is
compiled into the kernels too, so it is part of the hash.
"""

import functools
import hashlib
import pathlib

CPU_DIR = pathlib.Path(__file__).parent
CACHE_HANDLING = ("cache_guard.py", "cache_repair.py")  # no kernel code: editing them keeps the compiled kernels
SOURCES = [path for path in sorted(CPU_DIR.glob("*.py")) if path.name not in CACHE_HANDLING] + [
    CPU_DIR.parent / "reference" / "activations.py"]  # the activation codes


@functools.cache
def source_digest():
    """A hash of every CPU kernel source (generated code that calls the kernels keys its cache on it too). Read once
    per process, when the kernels load: the kernels a process runs are those it imported, whatever the files say
    later, and every compile_step asks for it."""
    from .blas_provider import INTEGER_BITS, PER_THREAD_CONTROL

    convention = f"blas integers {INTEGER_BITS} bits, per-thread control {PER_THREAD_CONTROL}".encode()
    return hashlib.sha256(b"".join(path.read_bytes() for path in SOURCES) + convention).hexdigest()


def clear_if_sources_changed():
    digest = source_digest()
    cache_dir = CPU_DIR / "__pycache__"
    stamp = cache_dir / "fastdl_kernel_sources.sha256"
    try:
        if stamp.exists() and stamp.read_text() == digest:
            return
        for stale in list(cache_dir.glob("*.nbi")) + list(cache_dir.glob("*.nbc")):
            stale.unlink()
        cache_dir.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:
        pass  # a read-only install: Numba then compiles in memory or in NUMBA_CACHE_DIR, which is fine
