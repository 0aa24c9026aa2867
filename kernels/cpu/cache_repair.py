"""A damaged Numba cache entry is discarded and compiled again, never a crash.

Numba keeps each cached kernel as an index file (``.nbi``) and data files (``.nbc``) and unpickles them on the first
call of a process. A truncated, emptied or garbled file (a full disk, a killed copy, a bad sync) makes that
unpickling raise ``UnpicklingError``, ``EOFError``, ``ModuleNotFoundError`` and the like in every later process,
and Numba's own save goes through the same index, so the cache never mends. Numba has no option for this, so each
of fastdl's cached dispatchers gets a loader that treats such an entry as a miss: the function's cache files are
removed, one warning names them, and Numba compiles and saves the kernel afresh. Users' own Numba functions are
left as they are.
"""

import glob
import os
import warnings

from numba.core.registry import CPUDispatcher


class DamagedCacheWarning(RuntimeWarning):
    """A damaged compiled-kernel cache entry was discarded (the kernel is compiled again)."""


def _cache_files(cache):
    """The index file and data files of one dispatcher's disk cache (Numba's file layout)."""
    cache_file = cache._cache_file
    index = cache_file._index_path
    data = cache_file._data_name_pattern.replace("{number:d}", "*")
    return [index] + glob.glob(os.path.join(glob.escape(cache_file._cache_path), data))


def _discard(paths, error):
    removed = []
    for path in paths:
        try:
            os.unlink(path)
            removed.append(os.path.basename(path))
        except OSError:
            pass
    warnings.warn(f"fastdl: a damaged compiled-kernel cache entry ({type(error).__name__}: {error}) was discarded "
                  f"and will be compiled again: removed {', '.join(removed) or 'nothing (read-only cache)'}",
                  DamagedCacheWarning, stacklevel=2)


def guard(dispatcher):
    """Make ``dispatcher``'s disk-cache load treat a damaged entry as a miss (idempotent)."""
    cache = getattr(dispatcher, "_cache", None)
    if cache is None or not hasattr(cache, "_cache_file") or getattr(cache, "_fastdl_guarded", False):
        return dispatcher  # not cached on disk, or a Numba whose cache is laid out otherwise
    load, save = cache.load_overload, cache.save_overload

    def load_overload(sig, target_context):
        try:
            return load(sig, target_context)
        except Exception as error:  # whatever a damaged file raises; the entry is rebuilt from the source
            _discard(_cache_files(cache), error)
            return None

    def save_overload(sig, data):
        try:
            save(sig, data)
        except Exception as error:  # the index it reads first was damaged (and could not be removed): run uncached
            _discard(_cache_files(cache), error)

    cache.load_overload, cache.save_overload = load_overload, save_overload
    cache._fastdl_guarded = True
    return dispatcher


def compile_cfunc(signature, function):
    """``numba.cfunc(signature, cache=True)(function)``, compiled at once; a damaged cache entry is discarded."""
    from numba import cfunc

    try:
        return cfunc(signature, cache=True)(function)
    except Exception as error:
        folder = os.path.join(os.path.dirname(function.__code__.co_filename), "__pycache__")
        module = function.__module__.rpartition(".")[2]
        _discard(glob.glob(os.path.join(glob.escape(folder), f"{module}.{function.__qualname__}-*.nb[ic]")), error)
        return cfunc(signature)(function)


def guard_modules(modules):
    """Guard every cached dispatcher defined at the top level of ``modules``."""
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, CPUDispatcher):
                guard(value)
