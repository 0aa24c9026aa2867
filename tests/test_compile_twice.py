"""One kernel body compiled as a parallel and a serial kernel, each with its own disk-cache entry."""

import os
import subprocess
import sys
import textwrap

import numpy as np
from numba import prange

from fastdl.kernels.cpu.compile_twice import parallel_and_serial

# a module of its own, so that a second process can load its kernels from Numba's disk cache
MODULE = textwrap.dedent("""
    import numba
    import numpy as np
    from numba import prange
    from fastdl.kernels.cpu.compile_twice import parallel_and_serial

    def _scaled_sum(x, scale, out):
        for i in prange(x.shape[0]):
            out[i] = x[i] * scale + 1.0

    scaled_sum_parallel, scaled_sum_serial = parallel_and_serial(_scaled_sum, "scaled_sum")

    x = np.arange(1000.0)
    for kernel in (scaled_sum_parallel, scaled_sum_serial):
        out = np.zeros_like(x)
        kernel(x, 2.0, out)
        assert np.array_equal(out, x * 2.0 + 1.0)
        print(kernel.py_func.__name__, kernel.targetoptions.get("parallel", False) is not False,
              len(kernel.stats.cache_hits), sum(kernel.stats.cache_misses.values()))
""")


def test_both_kernels_compute_the_body_and_keep_their_options():
    def body(x, out):
        for i in prange(x.shape[0]):
            out[i] = x[i] / 0.0  # error_model="numpy": inf, not ZeroDivisionError

    parallel, serial = parallel_and_serial(body, "divide", error_model="numpy")
    assert (parallel.py_func.__name__, serial.py_func.__name__) == ("divide_parallel", "divide_serial")
    assert parallel.targetoptions["parallel"] is True and "parallel" not in serial.targetoptions
    for kernel in (parallel, serial):
        out = np.zeros(3)
        kernel(np.ones(3), out)
        assert np.all(np.isinf(out))


def test_each_kernel_has_its_own_cache_entry_and_a_second_process_loads_both(tmp_path):
    (tmp_path / "twice_module.py").write_text(MODULE)
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
                   "PYTHONPATH": os.pathsep.join([str(tmp_path)] + sys.path)}

    def run():
        result = subprocess.run([sys.executable, "-c", "import twice_module"], capture_output=True, text=True,
                                env=environment, timeout=300, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return [line.split() for line in result.stdout.splitlines()]

    # name, compiled with parallel, cache hits, cache misses
    assert run() == [["scaled_sum_parallel", "True", "0", "1"], ["scaled_sum_serial", "False", "0", "1"]]
    # (fastdl's own cached functions that load on import land in this cache folder too)
    index_files = sorted(name for name in (path.name.split("-")[0] for path in (tmp_path / "cache").rglob("*.nbi"))
                         if name.startswith("twice_module."))
    assert index_files == ["twice_module.scaled_sum_parallel", "twice_module.scaled_sum_serial"]
    assert run() == [["scaled_sum_parallel", "True", "1", "0"], ["scaled_sum_serial", "False", "1", "0"]]
