"""Backend selection, moving data, and what `import fastdl` does (and does not do)."""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import fastdl


def test_set_use_and_get_backend():
    original = fastdl.get_backend().name
    with fastdl.use_backend("numpy") as backend:
        assert backend.name == "numpy" and fastdl.get_backend().name == "numpy"
    assert fastdl.get_backend().name == original
    fastdl.set_backend("numpy")
    try:
        assert fastdl.get_backend().name == "numpy"
    finally:
        fastdl.set_backend(original)


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown fastdl backend 'tpu'; choose one of numpy, cpu, gpu"):
        fastdl.set_backend("tpu")


def test_available_backends_include_the_cpu_ones():
    assert {"numpy", "cpu"} <= set(fastdl.available_backends())


def test_gpu_without_a_device_says_why():
    if "gpu" in fastdl.available_backends():
        pytest.skip("this machine has a working GPU backend")
    with pytest.raises(RuntimeError, match="the 'gpu' backend"):
        fastdl.set_backend("gpu")


def test_asarray_and_to_numpy_round_trip(backend):
    x = fastdl.asarray([[1.0, 2.0]], dtype="float32")
    assert isinstance(x, backend.array_type) and x.dtype == np.float32
    np.testing.assert_array_equal(fastdl.to_numpy(x), [[1.0, 2.0]])


def _run(code, environment=None, **extra):
    """A fresh interpreter, started outside the checkout so it imports the installed package."""
    environment = dict(os.environ if environment is None else environment, **extra)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                          timeout=120, cwd=os.path.expanduser("~") if os.path.isdir(os.path.expanduser("~")) else "/")


def test_environment_variable_chooses_the_backend():
    result = _run("import fastdl; print(fastdl.get_backend().name)", FASTDL_BACKEND="numpy")
    assert result.stdout.strip() == "numpy", result.stderr


def test_default_backend_is_cpu():
    environment = {k: v for k, v in os.environ.items() if k != "FASTDL_BACKEND"}
    result = _run("import fastdl; print(fastdl.get_backend().name)", environment)
    assert result.stdout.strip() == "cpu", result.stderr


def test_import_compiles_nothing():
    code = ("import fastdl, fastdl.kernels.cpu as cpu\n"
            "from fastdl.kernels.cpu import dense, losses, learnable\n"
            "import numba\n"
            "kernels = [v for m in (dense, losses, learnable) for v in vars(m).values()"
            " if isinstance(v, numba.core.registry.CPUDispatcher)]\n"
            "print(len(kernels), sum(len(k.signatures) for k in kernels))")
    result = _run(code)
    assert result.returncode == 0, result.stderr
    count, compiled = result.stdout.split()
    assert int(count) > 5 and int(compiled) == 0, result.stderr


def test_set_num_threads():
    blas_before, numba_before = fastdl.get_num_threads()
    try:
        fastdl.set_num_threads(1)
        blas, numba_threads = fastdl.get_num_threads()
        assert numba_threads == 1 and blas in (1, None)
    finally:
        fastdl.set_num_threads(numba_before)
    with pytest.raises(ValueError, match="set_num_threads: count must be a positive integer, got 0"):
        fastdl.set_num_threads(0)


def test_source_checkout_finds_its_kernels():
    """`python -c "import fastdl"` in the repo root imports fastdl/ from the checkout, not the install."""
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", "import fastdl.kernels.cpu, fastdl; print(fastdl.__file__)"],
                            capture_output=True, text=True, cwd=checkout, timeout=120)
    assert result.returncode == 0, result.stderr


def test_no_install_hint_sends_users_to_the_unrelated_pypi_package_named_fastdl():
    """PyPI's "fastdl" is another project: hints name the packages themselves, or a checkout's extra (".[gpu]")."""
    root = pathlib.Path(fastdl.__file__).parent
    kernels = pathlib.Path(fastdl.kernels.__file__).parent  # beside fastdl/ in a checkout, inside it when installed
    texts = [path.read_text() for path in {*root.rglob("*.py"), *kernels.rglob("*.py")}]
    texts += [path.read_text() for path in [root.parent / "README.md", *(root.parent / "docs").glob("*.md")]
              if path.exists()]
    hint = re.compile(r"pip install\s+['\"]?fastdl\b")
    assert not [match.group(0) for text in texts for match in hint.finditer(text)]
