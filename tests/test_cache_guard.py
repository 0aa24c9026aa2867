"""Compiled kernels left from other sources are deleted before they can load, wherever Numba caches them."""

import os
import pathlib
import subprocess
import sys

from numba.core.caching import UserProvidedCacheLocator

import fastdl.kernels.cpu
from fastdl.kernels.cpu import cache_guard

CPU_DIR = pathlib.Path(fastdl.kernels.cpu.__file__).parent
PROBE = """
import fastdl.kernels.cpu
from fastdl.kernels.cpu import cache_guard
print(cache_guard.numba_cache_folder())
"""


def import_kernels(environment, folder):
    """Import the CPU kernels in a new process with ``environment`` (None values unset); the cache folder it used.
    It runs in ``folder``, not the checkout, so that it imports the fastdl this process runs (the installed one)."""
    env = {**os.environ, **environment}
    env = {key: value for key, value in env.items() if value is not None}
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=600,
                            cwd=folder)
    assert result.returncode == 0, result.stderr
    return pathlib.Path(result.stdout.strip())


def test_by_default_the_kernels_cache_beside_their_sources(tmp_path):
    assert import_kernels({"NUMBA_CACHE_DIR": None}, tmp_path) == CPU_DIR / "__pycache__"


def test_stale_kernels_under_numba_cache_dir_are_deleted_and_current_ones_kept(tmp_path):
    # the folder Numba gives this package's kernels under NUMBA_CACHE_DIR
    folder = tmp_path / UserProvidedCacheLocator.get_suitable_cache_subpath(str(CPU_DIR / "dense.py"))
    folder.mkdir()
    stale = folder / "dense.forward_serial-206.py311.nbi"
    stale.write_bytes(b"compiled from other sources")
    (folder / "fastdl_kernel_sources.sha256").write_text("the digest of other sources")

    assert import_kernels({"NUMBA_CACHE_DIR": str(tmp_path)}, tmp_path) == folder
    assert not stale.exists()
    assert (folder / "fastdl_kernel_sources.sha256").read_text() == cache_guard.source_digest()

    current = folder / "dense.forward_serial-206.py311.nbc"
    current.write_bytes(b"compiled from these sources")
    import_kernels({"NUMBA_CACHE_DIR": str(tmp_path)}, tmp_path)
    assert current.read_bytes() == b"compiled from these sources"
