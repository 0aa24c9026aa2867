"""Drop stale Numba cache files when any CPU kernel source changes.

Numba's on-disk cache (``cache=True``) checks only the file that defines a kernel, not the helpers inlined
into it from other files, so editing ``activations.py`` would silently keep running the old binary. Before
the kernels load, this hashes every source they depend on and clears the cache when the hash changed. The BLAS
provider's calling convention (the width of its integers, whether a thread's own BLAS thread count can be set) is
compiled into the kernels too, so it is part of the hash. The folder cleared is the one Numba itself caches these
kernels in, wherever that is: beside the sources, under ``NUMBA_CACHE_DIR``, or in the user-wide cache of a
read-only install (Numba checks only the defining file there too).
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


def numba_cache_folder():
    """The folder Numba caches these kernels in, found by Numba's own locators in Numba's order (one source file
    here stands for all): the folder ``NUMBA_CACHE_DIR`` names for this one, ``__pycache__`` beside the sources, or
    the user-wide cache where the install is read-only (a system-wide pip install, a container). ``__pycache__``
    where Numba's internals differ from what this expects; None where no folder is writable."""
    from numba.core import caching

    locator_classes = getattr(getattr(caching, "CacheImpl", None), "_locator_classes", None)
    if not locator_classes:
        return CPU_DIR / "__pycache__"
    source = str(CPU_DIR / "dense.py")
    for locator_class in locator_classes:
        locator = locator_class.from_function(numba_cache_folder, source)
        if locator is not None:
            return pathlib.Path(locator.get_cache_path())
    return None


def clear_if_sources_changed():
    """Delete the compiled kernels in Numba's cache folder unless its stamp names the sources (and BLAS convention)
    of this process, then stamp it."""
    digest = source_digest()
    cache_dir = numba_cache_folder()
    if cache_dir is None:
        return  # Numba compiles in memory: nothing stale can load
    stamp = cache_dir / "fastdl_kernel_sources.sha256"
    try:
        if stamp.exists() and stamp.read_text() == digest:
            return
        for stale in list(cache_dir.glob("*.nbi")) + list(cache_dir.glob("*.nbc")):
            stale.unlink()
        cache_dir.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest)
    except OSError:
        pass  # another process cleared it first, or the folder went read-only: Numba then compiles in memory
