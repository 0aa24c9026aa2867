"""Every CUDA source compiles with NVRTC for sm_80 and sm_90, on any machine: no GPU and no CUDA toolkit needed,
only the NVRTC library from PyPI (``nvidia-cuda-nvrtc-cu12``, in the test extra). A syntax or type error in a
kernel fails here, in CI, before any GPU sees it."""

import ctypes
import glob
import importlib.resources
import os

import pytest

from fastdl.kernels.cuda.sources import definitions

CUDA_DIR = importlib.resources.files("fastdl.kernels") / "cuda"
SOURCES = sorted(path.name for path in CUDA_DIR.iterdir() if path.name.endswith(".cu"))
ARCHITECTURES = ["sm_80", "sm_90"]


def _nvrtc():
    try:
        import nvidia.cuda_nvrtc
    except ImportError:
        return None
    roots = list(getattr(nvidia.cuda_nvrtc, "__path__", []))
    for root in roots:
        for path in sorted(glob.glob(os.path.join(root, "lib", "libnvrtc.so*")) + glob.glob(os.path.join(root, "bin", "nvrtc64*.dll"))):
            if "builtins" in path or ".alt." in path:
                continue
            try:
                return ctypes.CDLL(path)
            except OSError:
                continue
    return None


NVRTC = _nvrtc()
pytestmark = pytest.mark.skipif(NVRTC is None, reason="the NVRTC library is not installed (pip install nvidia-cuda-nvrtc-cu12)")


def compile_source(name, architecture):
    """(result code, compiler log) of compiling kernels/cuda/<name> to a cubin for ``architecture`` (ptxas runs too)."""
    source = (CUDA_DIR / name).read_bytes()
    program = ctypes.c_void_p()
    assert NVRTC.nvrtcCreateProgram(ctypes.byref(program), source, name.encode(), 0, None, None) == 0
    options = [f"--gpu-architecture={architecture}".encode(), b"--std=c++17",
               f"--include-path={CUDA_DIR}".encode(), *(option.encode() for option in definitions())]
    try:
        result = NVRTC.nvrtcCompileProgram(program, len(options), (ctypes.c_char_p * len(options))(*options))
        size = ctypes.c_size_t()
        NVRTC.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        NVRTC.nvrtcGetProgramLog(program, log)
        return result, log.value.decode(errors="replace")
    finally:
        NVRTC.nvrtcDestroyProgram(ctypes.byref(program))


def test_there_are_cuda_sources():
    assert {"optim.cu", "dropout.cu", "activations.cu", "losses.cu", "batchnorm.cu"} <= set(SOURCES)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("name", SOURCES)
def test_cuda_source_compiles_with_nvrtc(name, architecture):
    result, log = compile_source(name, architecture)
    assert result == 0, f"{name} does not compile for {architecture}:\n{log}"
    assert "warning" not in log.lower(), log


def test_a_broken_kernel_is_caught(tmp_path, monkeypatch):
    broken = tmp_path / "broken.cu"
    broken.write_text('extern "C" __global__ void fastdl_broken(float* x) { x[0] = undefined_name; }\n')
    monkeypatch.setattr(__import__(__name__), "CUDA_DIR", tmp_path)
    result, log = compile_source("broken.cu", "sm_80")
    assert result != 0 and "undefined_name" in log
