"""The BLAS provider: which library runs the CPU GEMMs, how it is chosen, and that a broken choice falls back."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import fastdl

PROBE = """
import warnings, numpy as np, fastdl
warnings.simplefilter("always")
info = fastdl.blas_info()
layer = fastdl.Dense(4, 3, seed=0)
y = layer(np.ones((2, 4), np.float32))
print(info["provider"], bool(np.all(np.isfinite(y))))
"""


def run_probe(environment, code=PROBE):
    """Run ``code`` in a new process with ``environment`` added: (its output's words, its warning lines). It runs in
    the tests' folder, not the checkout, so that it imports the fastdl this process runs (the installed one)."""
    env = {**os.environ, **environment}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                            cwd=pathlib.Path(__file__).parent)
    assert result.returncode == 0, result.stderr
    return result.stdout.split(), [line for line in result.stderr.splitlines() if "Warning" in line]


def mkl_installed():
    from fastdl.kernels.cpu.blas_provider import _mkl_paths

    return bool(_mkl_paths())


def test_blas_info_names_the_provider_and_its_threading():
    info = fastdl.blas_info()
    assert info["provider"] in ("mkl", "openblas")
    assert os.path.exists(info["library"])
    assert info["threads"] >= 1 and info["numba_threads"] >= 1
    assert info["threading"] and info["version"]
    # numpy's wheels ship an OpenBLAS with a per-thread count, so the layers split their GEMMs
    assert info["parallel_gemm"] is True


def test_set_num_threads_reaches_the_provider():
    from fastdl.kernels.cpu.blas_provider import PROVIDER

    before = fastdl.get_num_threads()
    try:
        fastdl.set_num_threads(1)
        assert PROVIDER.get_threads() == 1 and fastdl.get_num_threads() == (1, 1)
    finally:
        fastdl.set_num_threads(before[1])
    assert fastdl.get_num_threads()[0] == before[1]


def test_a_broken_mkl_gives_one_warning_and_numpys_blas(tmp_path):
    fake = tmp_path / "libmkl_rt.so.3"
    fake.write_bytes(b"not a shared library")
    (provider, finite), warnings = run_probe({"FASTDL_BLAS": "mkl", "FASTDL_MKL_LIBRARY": str(fake)})
    assert provider == "openblas" and finite == "True"
    assert len(warnings) == 1 and "Intel MKL at" in warnings[0] and "using numpy's BLAS" in warnings[0]


def test_an_unknown_choice_gives_one_warning_and_the_automatic_one():
    (provider, finite), warnings = run_probe({"FASTDL_BLAS": "goto"})
    assert provider in ("mkl", "openblas") and finite == "True"
    assert len(warnings) == 1 and "FASTDL_BLAS='goto' is not one of auto, mkl, openblas" in warnings[0]


def test_openblas_can_be_asked_for_by_name():
    (provider, finite), warnings = run_probe({"FASTDL_BLAS": "openblas"})
    assert provider == "openblas" and finite == "True" and warnings == []


# run with PROVIDER and LIGHT defined first; LIGHT: ReLU and SGD only (the fastest to compile, for a process whose
# kernels compile into a cache folder of their own)
PROVIDER_AGREES = """
import numpy as np, fastdl
from fastdl import losses
assert fastdl.blas_info()["provider"] == PROVIDER, fastdl.blas_info()
rng = np.random.default_rng(0)
x = rng.standard_normal((128, 96)).astype(np.float32)
g = rng.standard_normal((128, 80)).astype(np.float32)
out = {}
for name in ("cpu", "numpy"):
    with fastdl.use_backend(name):
        layer = fastdl.Dense(96, 80, activation="relu" if LIGHT else "tanh", seed=1)
        y = fastdl.to_numpy(layer(x)).copy()
        dx = fastdl.to_numpy(layer.backward(g)).copy()
        out[name] = (y, dx, fastdl.to_numpy(layer.weight.grad).copy())
for a, b in zip(out["cpu"], out["numpy"]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
# compile_step and the layer path, with this provider, bit for bit
def model():
    if LIGHT:
        return fastdl.Sequential(fastdl.Dense(96, 80, activation="relu", seed=2), fastdl.Dense(80, 10, seed=3))
    return fastdl.Sequential(fastdl.Dense(96, 256, seed=2), fastdl.BatchNorm(256, activation="relu"),
                             fastdl.Dense(256, 10, seed=3))
models = [model() for _ in range(2)]
optimizers = [fastdl.optim.SGD(m.parameters(), lr=0.1) if LIGHT else fastdl.optim.Adam(m.parameters())
              for m in models]
step = fastdl.compile_step(models[0], losses.softmax_cross_entropy, optimizers[0])
labels = rng.integers(0, 10, 128)
for _ in range(3):
    step(x, labels)
    value, grad = losses.softmax_cross_entropy(models[1](x), labels)
    models[1].backward(grad, input_grad=False)
    optimizers[1].step()
for a, b in zip(models[0].parameters(), models[1].parameters()):
    np.testing.assert_array_equal(a.data, b.data)
# PyTorch in the same process may resolve its own BLAS calls to this provider: they must stay right
try:
    import torch
except ImportError:
    torch = None
if torch is not None and not LIGHT:
    a, w = torch.randn(64, 32), torch.randn(16, 32)
    np.testing.assert_allclose(torch.nn.functional.linear(a, w).numpy(), a.numpy() @ w.numpy().T, rtol=1e-4,
                               atol=1e-4)
print(PROVIDER, "agrees")
"""
MKL_AGREES = "PROVIDER, LIGHT = 'mkl', False\n" + PROVIDER_AGREES


@pytest.mark.skipif(not mkl_installed(), reason="the mkl wheel is not installed (pip install '.[mkl]')")
def test_mkl_provider_matches_the_reference_and_compile_step_matches_the_layer_path_and_torch_still_works():
    output, warnings = run_probe({"FASTDL_BLAS": "mkl"}, MKL_AGREES)
    assert output == ["mkl", "agrees"] and warnings == []


# numpy built on MKL (conda's numpy), imitated: MKL loaded with its threading layer already chosen (Intel OpenMP),
# threadpoolctl reporting it, and no OpenBLAS to be found
NUMPYS_OWN_MKL = """
import ctypes, glob, os, sys
import threadpoolctl
path = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")))[0]
ctypes.CDLL(path).MKL_Set_Threading_Layer(0)
threadpoolctl.threadpool_info = lambda: [{"internal_api": "mkl", "filepath": path}]
find_files = glob.glob
glob.glob = lambda pattern, *args, **kwargs: [] if "openblas" in pattern else find_files(pattern, *args, **kwargs)
import fastdl
assert fastdl.blas_info()["threading"] == "Intel OpenMP (libiomp5)", fastdl.blas_info()
""" + MKL_AGREES


@pytest.mark.skipif(not mkl_installed(), reason="the mkl wheel is not installed (pip install '.[mkl]')")
def test_numpys_own_mkl_is_the_provider_on_any_cpu_whatever_its_threading_layer():
    output, warnings = run_probe({"FASTDL_BLAS": "auto"}, NUMPYS_OWN_MKL)
    assert output == ["mkl", "agrees"] and warnings == []


def scipys_openblas():
    """The OpenBLAS scipy's wheels bundle (32-bit integers, ``scipy_`` names), or None."""
    try:
        import scipy
    except ImportError:
        return None
    found = sorted(pathlib.Path(scipy.__file__).parent.parent.glob("scipy.libs/libscipy_openblas*.so*"))
    return str(found[0]) if found else None


ILP32_AGREES = """
from fastdl.kernels.cpu import blas_provider
assert blas_provider.INTEGER_BITS == 32 and blas_provider.PROVIDER.path == LIBRARY, blas_provider.info()
PROVIDER, LIGHT = "openblas", True
""" + PROVIDER_AGREES


@pytest.mark.skipif(scipys_openblas() is None, reason="scipy's wheel and its bundled OpenBLAS are not installed")
def test_an_openblas_with_32_bit_integers_computes_as_the_reference(tmp_path):
    # the kernels compiled for 32-bit BLAS integers go to a cache folder of their own
    library = scipys_openblas()
    output, warnings = run_probe({"FASTDL_BLAS": "openblas", "FASTDL_OPENBLAS_LIBRARY": library,
                                  "NUMBA_CACHE_DIR": str(tmp_path)}, f"LIBRARY = {library!r}\n" + ILP32_AGREES)
    assert output == ["openblas", "agrees"] and warnings == []


# a conda-forge environment without threadpoolctl, imitated: numpy's wheel places hold no OpenBLAS, and the
# environment's lib folder holds one with plain names and 32-bit integers
CONDA_FORGE_OPENBLAS = """
import glob, os, sys
sys.modules["threadpoolctl"] = None
find_files = glob.glob
glob.glob = lambda pattern, *args, **kwargs: ([] if "numpy" in pattern and "openblas" in pattern
                                             else find_files(pattern, *args, **kwargs))
"""


def test_an_environments_own_openblas_is_found_without_threadpoolctl(tmp_path):
    library = scipys_openblas()
    if library is None:
        pytest.skip("scipy's wheel and its bundled OpenBLAS are not installed")
    environment = tmp_path / "env"
    (environment / "lib").mkdir(parents=True)
    (environment / "lib" / "libopenblas.so.0").symlink_to(library)
    expected = str(environment / "lib" / "libopenblas.so.0")
    output, warnings = run_probe({"FASTDL_BLAS": "openblas", "CONDA_PREFIX": str(environment),
                                  "NUMBA_CACHE_DIR": str(tmp_path / "numba")},
                                 CONDA_FORGE_OPENBLAS + f"LIBRARY = {expected!r}\n" + ILP32_AGREES)
    assert output == ["openblas", "agrees"] and warnings == []
