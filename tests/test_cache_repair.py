"""A damaged compiled-kernel cache (the kernels' own, or compile_step's) is discarded and compiled again, in a new
process as a user meets it: one warning naming what was removed, the right result, and a cache that loads again."""

import os
import pathlib
import subprocess
import sys

import pytest

import fastdl

SCRIPT = """
import numpy as np, fastdl
fastdl.set_backend("cpu")
model = fastdl.Sequential(fastdl.Dense(6, 5, activation="elu", seed=1), fastdl.Dense(5, 2, seed=2))
step = fastdl.compile_step(model, fastdl.losses.mse, fastdl.optim.SGD(model.parameters(), lr=0.1))
print(step(np.ones((4, 6), np.float32), np.zeros((4, 2), np.float32)), step.compiled)
print(fastdl.losses.mse(np.full((3, 2), 2.0, np.float32), np.zeros((3, 2), np.float32))[0])
print(len(step._kernel.stats.cache_hits))
"""

KERNEL_CACHE = pathlib.Path(fastdl.kernels.cpu.__file__).parent / "__pycache__"


def run(tmp_path):
    env = {**os.environ, "FASTDL_CACHE_DIR": str(tmp_path), "PYTHONWARNINGS": "always"}
    env.pop("NUMBA_CACHE_DIR", None)  # the caches under test are where fastdl and Numba put them by default
    # from tmp_path: ``python -c`` in a checkout would import its fastdl/ instead of the package this test checks
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    loss, compiled, mse, hits = result.stdout.split()
    return (float(loss), compiled, float(mse)), int(hits), result.stderr


def truncate(path):
    path.write_bytes(path.read_bytes()[:100])


def empty(path):
    path.write_bytes(b"")


def rename_a_module(path):
    """A flipped letter in a module name the pickle imports: ModuleNotFoundError when unpickled."""
    data = path.read_bytes()
    assert b"numba.core" in data
    path.write_bytes(data.replace(b"numba.core", b"numbx.core"))


@pytest.mark.skipif("cpu" not in fastdl.backend.available_backends(), reason="the cpu backend (Numba) is not available")
def test_damaged_cache_files_are_discarded_and_compiled_again(tmp_path):
    expected, _, _ = run(tmp_path)
    assert expected[1] == "True" and expected[2] == 4.0
    step_cache = tmp_path / "steps" / "__pycache__"
    [index] = KERNEL_CACHE.glob("losses.mse_kernel-*.nbi")  # one of the package's own kernels, damaged with the first
    damages = [("*.nbc", truncate, "UnpicklingError"), ("*.nbi", empty, "EOFError"),
               ("*.nbc", rename_a_module, "ModuleNotFoundError")]
    for attempt, (pattern, damage, error) in enumerate(damages):
        [path] = step_cache.glob(pattern)
        damage(path)
        if attempt == 0:
            truncate(index)
        result, hits, stderr = run(tmp_path)
        assert result == expected
        assert hits == 0 and f"DamagedCacheWarning: fastdl: a damaged compiled-kernel cache entry ({error}" in stderr
        assert attempt > 0 or f"removed {index.name}" in stderr
    result, hits, stderr = run(tmp_path)  # mended: both caches load again, silently
    assert result == expected and hits == 1 and "DamagedCacheWarning" not in stderr
