"""Which BLAS library runs fastdl's GEMMs on the CPU, found once per process and callable from compiled code.

Providers, in the order they are tried:

- ``mkl``: Intel MKL from the ``mkl`` wheel (``pip install ".[mkl]"``), through its single dynamic library
  ``libmkl_rt``. fastdl calls its ``cblas_?gemm_64`` entry points (64-bit integers, the same signature as numpy's
  OpenBLAS, so compiled code and Numba's disk cache serve both; switching MKL's interface layer instead would
  switch it for every library in the process that calls MKL, PyTorch among them) and selects its GNU OpenMP
  threading layer: the same ``libgomp`` as Numba's OpenMP threading layer, so MKL knows when it is called from
  inside fastdl's parallel loop and runs single-threaded there, and its own threads share Numba's pool.
  Chosen automatically on Intel CPUs only: on other x86 CPUs MKL runs its generic code paths, slower than
  OpenBLAS (``docs/cpu-engine.md``); ``FASTDL_BLAS=mkl`` asks for it anywhere.
- ``openblas``: the BLAS numpy itself links (numpy's wheels bundle OpenBLAS with 64-bit integers), located by
  threadpoolctl when it is installed, else by its usual places in numpy's wheel and the environment's ``lib``
  folder (conda-forge's); ``FASTDL_OPENBLAS_LIBRARY`` points at another OpenBLAS (64- or 32-bit integers).
- ``mkl`` again where numpy itself links MKL (conda's numpy) and no OpenBLAS is loaded, on any CPU: it is the BLAS
  at hand, found by threadpoolctl. Its threading layer is the one numpy's MKL already has, often Intel OpenMP; that
  is reported, and it does not matter inside fastdl's kernels, where each thread runs its GEMMs single-threaded.

``FASTDL_BLAS`` (``mkl``, ``openblas`` or ``auto``, the default) chooses. A provider that is asked for or installed
but cannot be loaded gives a one-line warning and the next one is used; with none, ``AVAILABLE`` is False and the
callers use ``np.matmul`` (the layers) or the layer path (``compile_step``).

Each provider's functions are registered with LLVM under fixed names (``fastdl_cblas_sgemm``, ...), so compiled
code refers to them by name, not by an address of this process, and stays cacheable on disk.
"""

import ctypes
import glob
import os
import sys
import warnings

import llvmlite.binding as llvm
import numpy as np
from numba import types

from . import cache_repair

MKL_THREADING_GNU = 3  # MKL_Set_Threading_Layer's codes, below
MKL_THREADING_LAYERS = {0: "Intel OpenMP (libiomp5)", 1: "sequential", 2: "PGI OpenMP",
                        MKL_THREADING_GNU: "GNU OpenMP (libgomp, shared with Numba)", 4: "TBB"}
CHOICES = ("auto", "mkl", "openblas")


class Provider:
    """A located BLAS: ``name``, ``path``, ``integer_bits`` (of its integer arguments), ``threading`` (its
    threading runtime), the ctypes functions ``sgemm``/``dgemm``, ``set_threads_local`` (the thread count of the
    calling thread's GEMMs, returning the previous one: thread-local in MKL, but one count for every thread in
    OpenBLAS's pthreads builds) and ``set_threads``/``get_threads`` (the library's default)."""

    def __init__(self, name, path, integer_bits, threading, functions):
        self.name, self.path, self.integer_bits, self.threading = name, path, integer_bits, threading
        self.sgemm, self.dgemm = functions["sgemm"], functions["dgemm"]
        self.set_threads_local = functions["set_threads_local"]
        self.set_threads, self.get_threads = functions["set_threads"], functions["get_threads"]
        self.version = functions.get("version", lambda: None)()


def _bind(library, names, argtypes, restype):
    """The first of ``names`` that ``library`` exports, typed; AttributeError when none is."""
    for name in names:
        function = getattr(library, name, None)
        if function is not None:
            function.argtypes, function.restype = argtypes, restype
            return function
    raise AttributeError(f"none of {', '.join(names)}")


# -- Intel MKL -------------------------------------------------------------------------------------------------------
def _mkl_paths():
    explicit = os.environ.get("FASTDL_MKL_LIBRARY")
    if explicit:
        return [explicit]
    # the mkl wheel installs its libraries in <prefix>/lib, beside the interpreter's environment
    return [path for prefix in _prefixes() for path in sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")))]


def _prefixes():
    """The environment's folders whose ``lib`` may hold a BLAS: the interpreter's, its base, an active conda one."""
    return list(dict.fromkeys([sys.prefix, sys.base_prefix, os.environ.get("CONDA_PREFIX") or sys.prefix]))


def _load_mkl(path):
    library = ctypes.CDLL(path)
    integer = ctypes.c_int64
    # The threading layer must be chosen before any other call to this MKL; it answers with the layer in force. An
    # MKL that numpy itself links (conda's numpy) may have its layer already: fastdl's kernels set each thread's own
    # MKL thread count, so MKL's pool stays idle inside them whichever it is.
    layer = library.MKL_Set_Threading_Layer(MKL_THREADING_GNU)
    if layer not in MKL_THREADING_LAYERS:
        raise OSError(f"MKL answered threading layer {layer}, not one it documents")
    buffer = ctypes.create_string_buffer(256)
    library.MKL_Get_Version_String(buffer, len(buffer))
    version = buffer.value.decode(errors="replace")
    functions = {
        "sgemm": _bind(library, ["cblas_sgemm_64"], None, None),
        "dgemm": _bind(library, ["cblas_dgemm_64"], None, None),
        "set_threads_local": _bind(library, ["MKL_Set_Num_Threads_Local"], [ctypes.c_int], ctypes.c_int),
        "set_threads": _bind(library, ["MKL_Set_Num_Threads"], [ctypes.c_int], None),
        "get_threads": _bind(library, ["MKL_Get_Max_Threads"], [], ctypes.c_int),
        "version": lambda: version,
    }
    return Provider("mkl", path, 8 * ctypes.sizeof(integer), MKL_THREADING_LAYERS[layer], functions)


# -- numpy's own BLAS -------------------------------------------------------------------------------------------------
def _loaded_blas_paths(internal_api):
    """The loaded BLAS libraries threadpoolctl finds of one kind (numpy's among them: numpy is imported)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [entry["filepath"] for entry in threadpool_info() if entry.get("internal_api") == internal_api]


def _openblas_paths():
    explicit = os.environ.get("FASTDL_OPENBLAS_LIBRARY")
    if explicit:
        return [explicit]
    found = _loaded_blas_paths("openblas")
    if found:
        return found
    # without threadpoolctl: where numpy's wheels keep it, then an environment's own lib folder (conda-forge)
    root = os.path.dirname(np.__file__)
    patterns = [root + ".libs/*openblas*", os.path.join(root, ".dylibs", "*openblas*"),
                os.path.join(root, "*openblas*")]
    patterns += [os.path.join(prefix, "lib", "libopenblas*.so*") for prefix in _prefixes()]
    return [path for pattern in patterns for path in sorted(glob.glob(pattern))]


# (symbol prefix, symbol suffix, integer bits): numpy's wheels ship scipy-openblas with an ILP64 interface, scipy's
# wheels the 32-bit one; conda-forge's and Linux distributions' OpenBLAS has plain names and 32-bit integers
_OPENBLAS_SYMBOLS = [("scipy_", "64_", 64), ("", "64_", 64), ("scipy_", "", 32), ("", "", 32)]


def _load_openblas(path):
    library = ctypes.CDLL(path)
    for prefix, suffix, bits in _OPENBLAS_SYMBOLS:
        try:
            functions = {
                "sgemm": _bind(library, [f"{prefix}cblas_sgemm{suffix}"], None, None),
                "dgemm": _bind(library, [f"{prefix}cblas_dgemm{suffix}"], None, None),
                "set_threads": _bind(library, [f"{prefix}openblas_set_num_threads{suffix}"], [ctypes.c_int], None),
                "get_threads": _bind(library, [f"{prefix}openblas_get_num_threads{suffix}"], [], ctypes.c_int),
            }
        except AttributeError:
            continue
        # OpenBLAS >= 0.3.27 exports it (without the prefix); with older builds fastdl does not split its GEMMs
        try:
            functions["set_threads_local"] = _bind(library, [f"{prefix}openblas_set_num_threads_local{suffix}",
                                                             "openblas_set_num_threads_local"],
                                                   [ctypes.c_int], ctypes.c_int)
        except AttributeError:
            functions["set_threads_local"] = None
        config = getattr(library, f"{prefix}openblas_get_config{suffix}", None)
        if config is not None:
            config.restype = ctypes.c_char_p
            functions["version"] = lambda: config().decode(errors="replace")
        return Provider("openblas", path, bits, "OpenBLAS's own threads (pthreads)", functions)
    raise OSError("no cblas_sgemm/cblas_dgemm and thread controls among its symbols")


def _is_intel_cpu():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return any(line.startswith("vendor_id") and "GenuineIntel" in line for line in cpuinfo)
    except OSError:
        return False


def _find(choice):
    candidates = []
    mkl_paths = _mkl_paths()
    if choice == "mkl" or (choice == "auto" and mkl_paths and _is_intel_cpu()):
        if not mkl_paths:
            warnings.warn("fastdl: FASTDL_BLAS=mkl but no libmkl_rt was found (`pip install mkl`); "
                          "using numpy's BLAS", RuntimeWarning, stacklevel=3)
        candidates += [(_load_mkl, path) for path in mkl_paths]
    candidates += [(_load_openblas, path) for path in _openblas_paths()]
    # numpy built on MKL (conda's): no OpenBLAS is loaded, and numpy's MKL is the BLAS at hand, on any CPU
    candidates += [(_load_mkl, path) for path in _loaded_blas_paths("mkl") if (_load_mkl, path) not in candidates]
    for index, (load, path) in enumerate(candidates):
        try:
            return load(path)
        except (OSError, AttributeError) as error:
            if load is _load_mkl:  # asked for or installed, so worth a word; numpy's fallbacks are tried quietly
                then = "using numpy's BLAS" if index + 1 < len(candidates) else "the layers use np.matmul"
                warnings.warn(f"fastdl: Intel MKL at {path} could not be used ({error}); {then}", RuntimeWarning,
                              stacklevel=3)
    return None


def _choice():
    choice = os.environ.get("FASTDL_BLAS", "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        warnings.warn(f"fastdl: FASTDL_BLAS={choice!r} is not one of {', '.join(CHOICES)}; using 'auto'",
                      RuntimeWarning, stacklevel=3)
        choice = "auto"
    return choice


PROVIDER = _find(_choice())
AVAILABLE = PROVIDER is not None
# compiled code's signature for the integer arguments; part of the kernels' cache key (cache_guard.py)
INTEGER_BITS = PROVIDER.integer_bits if AVAILABLE else 64
# the layers split their GEMMs over fastdl's own parallel loop only where the BLAS can be made single-threaded
PER_THREAD_CONTROL = AVAILABLE and PROVIDER.set_threads_local is not None

# OpenBLAS's cores with small-matrix GEMM kernels (the *_small_kernel_* files of its kernel/x86_64): a product of a
# few rows skips packing there, but only up to an output size that depends on the transposition (see
# dense.input_grad_rows). Its DYNAMIC_ARCH builds name the core in use in their configuration string.
SMALL_MATRIX_CORES = ("SkylakeX", "Cooperlake", "SapphireRapids")
SMALL_MATRIX_KERNELS = (AVAILABLE and PROVIDER.name == "openblas"
                        and any(core in (PROVIDER.version or "").split() for core in SMALL_MATRIX_CORES))


def _register(name, function):
    address = function if isinstance(function, int) else ctypes.cast(function, ctypes.c_void_p).value
    llvm.add_symbol(name, address)


def _count_unchanged(count):
    return count


if AVAILABLE:
    _register("fastdl_cblas_sgemm", PROVIDER.sgemm)
    _register("fastdl_cblas_dgemm", PROVIDER.dgemm)
    if PER_THREAD_CONTROL:
        _register("fastdl_blas_set_threads_local", PROVIDER.set_threads_local)
        # Inside fastdl's parallel loop each thread makes its own GEMMs single-threaded where the count is per
        # thread (MKL: a worker thread keeps the library's default otherwise, and its GEMMs stall); where it is one
        # count for all threads (OpenBLAS), the calling thread set it before the loop and a second writer would
        # race, so the workers' call changes nothing (a compiled function that returns its argument; kept alive here
        # as long as the symbol points into it).
        if PROVIDER.name == "mkl":
            _register("fastdl_blas_set_worker_threads", PROVIDER.set_threads_local)
        else:
            _COUNT_UNCHANGED = cache_repair.compile_cfunc(types.int32(types.int32), _count_unchanged)
            _register("fastdl_blas_set_worker_threads", _COUNT_UNCHANGED.address)


def info():
    """What runs fastdl's CPU GEMMs: a dict with ``provider`` (``"mkl"``, ``"openblas"`` or None), ``library``
    (its path), ``version``, ``threading`` (its threading runtime), ``threads`` (its default thread count) and
    ``parallel_gemm`` (whether fastdl partitions the layers' GEMMs over its own thread pool)."""
    if not AVAILABLE:
        return {"provider": None, "library": None, "version": None, "threading": None, "threads": None,
                "parallel_gemm": False}
    return {"provider": PROVIDER.name, "library": PROVIDER.path, "version": PROVIDER.version,
            "threading": PROVIDER.threading, "threads": PROVIDER.get_threads(), "parallel_gemm": PER_THREAD_CONTROL}
