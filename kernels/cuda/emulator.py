"""Run the CUDA kernels on the CPU: each ``.cu`` file is compiled with g++ and ``emulation.h`` (fibers for threads,
real barriers and warp shuffles), and launched with numpy arrays in place of CuPy arrays.

Used by the "cuda-emulator" backend, so the GPU backend's kernels and launchers run the whole test suite in CI
without a GPU. It is slow (one fiber per thread) and checks what a kernel computes, not how fast. Every launch
checks its arguments against the kernel's parameter types (count, element type of each pointer, exact scalar
type, contiguity): a float64 scalar passed where the kernel takes a float fails here, where CuPy would pass the
wrong bytes silently.
"""

import ctypes
import functools
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import tempfile

import numpy as np

from .sources import definitions, folder

KERNEL_NAME = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(')
SCALAR = {"f": (np.float32, ctypes.c_float), "d": (np.float64, ctypes.c_double), "q": (np.int64, ctypes.c_longlong),
          "i": (np.int32, ctypes.c_int), "Q": (np.uint64, ctypes.c_ulonglong), "I": (np.uint32, ctypes.c_uint)}
ELEMENT = {"f": np.float32, "d": np.float64, "q": np.int64, "i": np.int32, "B": np.uint8, "H": np.uint16,
           "Q": np.uint64}


class EmulationError(RuntimeError):
    """A kernel that cannot be compiled or launched on the emulator, or a launch with wrong arguments."""


def compiler():
    path = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if path is None:
        raise EmulationError("the CUDA emulator needs a C++20 compiler (g++); none was found on PATH")
    return path


def _cache_dir():
    root = os.environ.get("FASTDL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "fastdl")
    path = os.path.join(root, "cuda-emulation")
    os.makedirs(path, exist_ok=True)
    return path


def _kernel_names(source_path):
    text = subprocess.run([compiler(), "-E", "-P", "-x", "c++", "-std=c++20", f"-I{folder()}", *definitions(),
                           str(source_path)], check=True, capture_output=True, text=True).stdout
    return KERNEL_NAME.findall(text)


@functools.lru_cache(maxsize=None)
def module(source):
    """The compiled emulation of kernels/cuda/<source>, or of the file at an absolute path (built once, then
    cached on disk by content: a later process only loads it)."""
    source_path = source if os.path.isabs(str(source)) else folder() / source
    # the source and this file (which writes the wrappers)
    key = hashlib.sha256(pathlib.Path(source_path).read_bytes() + pathlib.Path(__file__).read_bytes())
    key.update(" ".join(definitions()).encode())
    for header in sorted(folder().iterdir(), key=lambda p: p.name):
        if header.name.endswith((".cu", ".cuh", ".h")):
            key.update(header.read_bytes())
    library = os.path.join(_cache_dir(), f"{os.path.basename(str(source)).replace('.', '_')}-{key.hexdigest()[:16]}.so")
    if not os.path.exists(library):
        _compile(_wrapped(source_path), library)
    loaded = ctypes.CDLL(library)
    loaded.emulated_kernel_names.restype = ctypes.c_char_p
    return EmulatedModule(loaded, loaded.emulated_kernel_names().decode().split())


def _wrapped(source_path):
    """The source plus, per kernel, a C entry point that launches it and one that describes its parameters."""
    names = _kernel_names(source_path)
    wrappers = [f'#include "{source_path}"',
                f'extern "C" const char* emulated_kernel_names() {{ return "{" ".join(names)}"; }}']
    for name in names:
        wrappers.append(f'extern "C" const char* emulate_{name}(const unsigned* config, void** args) '
                        f'{{ return fastdl_emulation::launch_kernel({name}, config, args); }}')
        wrappers.append(f'extern "C" const char* signature_{name}() {{ return fastdl_emulation::signature({name}); }}')
    return "\n".join(wrappers) + "\n"


def _compile(program, library):
    with tempfile.TemporaryDirectory() as scratch:
        source = os.path.join(scratch, "emulation.cpp")
        with open(source, "w") as file:
            file.write(program)
        temporary = os.path.join(scratch, "emulation.so")  # moved beside the cache entry, then renamed onto it:
        # a reader never loads a half-written library
        command = [compiler(), "-std=c++20", "-O1", "-fPIC", "-shared", "-w", "-include",
                   str(folder() / "emulation.h"), f"-I{folder()}", *definitions(), "-x", "c++", source, "-o", temporary]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise EmulationError(f"g++ could not compile the CUDA emulation:\n{result.stderr[-4000:]}")
        shutil.move(temporary, library + f".{os.getpid()}.tmp")
        os.replace(library + f".{os.getpid()}.tmp", library)


class EmulatedModule:
    """Stands in for ``cupy.RawModule``: ``get_function(name)`` returns a kernel launched as CuPy's are."""

    def __init__(self, library, names):
        self.library = library
        self.names = names

    def get_function(self, name):
        if name not in self.names:
            raise EmulationError(f"no kernel named {name!r}; this source has {', '.join(self.names)}")
        return EmulatedKernel(self.library, name)


class EmulatedKernel:
    def __init__(self, library, name):
        self.name = name
        self._launch = getattr(library, f"emulate_{name}")
        self._launch.restype = ctypes.c_char_p
        describe = getattr(library, f"signature_{name}")
        describe.restype = ctypes.c_char_p
        self.parameters = describe().decode().split()

    def __call__(self, grid, block, args, shared_mem=0):
        _check_launch(self.name, _dims(grid), _dims(block), shared_mem)
        if len(args) != len(self.parameters):
            raise EmulationError(f"{self.name} takes {len(self.parameters)} arguments "
                                 f"({' '.join(self.parameters)}), got {len(args)}")
        values = [self._convert(position, kind, value) for position, (kind, value)
                  in enumerate(zip(self.parameters, args))]
        pointers = (ctypes.c_void_p * len(values))(*[ctypes.addressof(value) for value in values])
        config = (ctypes.c_uint * 6)(*_dims(grid), *_dims(block))
        error = self._launch(config, pointers)
        if error is not None:
            raise EmulationError(f"{self.name}: {error.decode()}")

    def _convert(self, position, kind, value):
        where = f"{self.name} argument {position}"
        if kind.startswith("*"):
            if isinstance(value, np.uint64) and value == 0:
                return ctypes.c_void_p(0)
            if not isinstance(value, np.ndarray):
                raise EmulationError(f"{where} must be an array (or NULL), got {type(value).__name__}")
            if value.dtype != ELEMENT.get(kind[1]):
                raise EmulationError(f"{where} must hold {np.dtype(ELEMENT[kind[1]])}, got {value.dtype}")
            if not value.flags.c_contiguous:
                raise EmulationError(f"{where} must be C-contiguous")
            return ctypes.c_void_p(value.ctypes.data)
        scalar_type, c_type = SCALAR[kind]
        if type(value) is not scalar_type:
            raise EmulationError(f"{where} must be a {np.dtype(scalar_type)} scalar, got {type(value).__name__}")
        return c_type(value)


# What every CUDA device fastdl runs on (compute capability 3.0 and later) refuses to launch: a launch the device
# would refuse fails here too, so CI finds a grid that outgrows a dimension (65,535 blocks in y and z).
MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_BLOCK = (1024, 1024, 64)
MAX_THREADS_PER_BLOCK = 1024
MAX_DYNAMIC_SHARED_BYTES = 48 * 1024  # without the opt-in attribute, which fastdl does not set


def _check_launch(name, grid, block, shared_mem):
    for what, dims, limits in (("grid", grid, MAX_GRID), ("block", block, MAX_BLOCK)):
        for axis, size, limit in zip("xyz", dims, limits):
            if not 1 <= size <= limit:
                raise EmulationError(f"{name}: {what} {axis} dimension {size} is outside [1, {limit}] "
                                     f"(grid {grid}, block {block}); a device refuses this launch")
    if block[0] * block[1] * block[2] > MAX_THREADS_PER_BLOCK:
        raise EmulationError(f"{name}: block {block} has more than {MAX_THREADS_PER_BLOCK} threads")
    if shared_mem > MAX_DYNAMIC_SHARED_BYTES:
        raise EmulationError(f"{name}: {shared_mem} bytes of dynamic shared memory, more than "
                             f"{MAX_DYNAMIC_SHARED_BYTES}")


def _dims(size):
    size = tuple(size) if isinstance(size, (tuple, list)) else (size,)
    return (size + (1, 1, 1))[:3]
