"""The kernels of a training step count no references (kernels/cpu/reference_counts.py): compiled without Numba's
runtime, their machine code makes no call to its reference-counting functions, which took a quarter of a small
model's step."""

import importlib

import numba
import numpy as np
import pytest
from numba import njit, prange

import fastdl
from fastdl import losses, optim
from fastdl.kernels.cpu.compile_twice import parallel_and_serial
from fastdl.kernels.cpu.reference_counts import WITHOUT_REFERENCE_COUNTS
from fastdl.step import compile_step

pytestmark = pytest.mark.skipif(not WITHOUT_REFERENCE_COUNTS, reason="this Numba cannot compile without its runtime")

KERNEL_MODULES = ("activations", "dense", "dropout", "learnable", "losses", "normalization", "optim", "population")


def reference_counting_calls(dispatcher):
    """The lines of the dispatcher's code (compiled in this process: Numba cannot inspect code loaded from its disk
    cache) that call NRT_incref or NRT_decref."""
    return [line for ir in dispatcher.inspect_llvm().values() for line in ir.splitlines()
            if "call" in line and ("@NRT_incref" in line or "@NRT_decref" in line)]


def scale_rows(x, factor, out):
    """What the row helpers do: a view per row, handed to a function that is not inlined."""
    for i in range(x.shape[0]):
        _scale_row(x[i], factor, out[i])


@njit
def _scale_row(row, factor, out_row):
    for j in range(row.shape[0]):
        out_row[j] = row[j] * factor


def test_a_kernel_compiled_without_the_runtime_computes_the_same_and_counts_no_references():
    counting = njit(scale_rows)
    not_counting = njit(**WITHOUT_REFERENCE_COUNTS)(scale_rows)
    x = np.arange(12.0).reshape(3, 4)
    expected, out = np.zeros_like(x), np.zeros_like(x)
    counting(x, 2.5, expected)
    not_counting(x, 2.5, out)
    np.testing.assert_array_equal(out, x * 2.5)
    np.testing.assert_array_equal(out, expected)
    assert reference_counting_calls(counting), "the probe must count references when compiled with the runtime"
    assert reference_counting_calls(not_counting) == []


def _kernels(suffix):
    return [getattr(module, name) for module in (importlib.import_module(f"fastdl.kernels.cpu.{name}")
                                                 for name in KERNEL_MODULES)
            for name in dir(module) if name.endswith(suffix) and hasattr(getattr(module, name), "targetoptions")]


def test_every_parallel_kernel_keeps_the_runtime_whoever_calls_it_first():
    parallel = _kernels("_parallel")
    assert len(parallel) >= 20
    for kernel in parallel:
        assert kernel.targetoptions.get("_nrt") is True, kernel.py_func.__name__


def test_every_serial_kernel_and_the_generated_steps_are_compiled_without_the_runtime():
    serial = _kernels("_serial")
    assert len(serial) >= 20
    for kernel in serial:
        assert kernel.targetoptions.get("_nrt") is False, kernel.py_func.__name__

    model = fastdl.Sequential(fastdl.Dense(6, 16, activation="relu", seed=1),
                              fastdl.BatchNorm(16, activation="tanh", seed=2), fastdl.Dense(16, 3, seed=3))
    step = compile_step(model, losses.softmax_cross_entropy, optim.Adam(model.parameters(), lr=1e-2))
    rng = np.random.default_rng(0)
    step(rng.standard_normal((8, 6)).astype(np.float32), rng.integers(0, 3, 8))
    compiled = list(step._kernels.values())
    assert compiled, "compile_step ran the layer path"
    for kernel in compiled:
        assert kernel.targetoptions.get("_nrt") is False


def sum_of_rows(x):
    """A parallel loop with a reduction: Numba's lowering of it allocates."""
    total = 0.0
    for i in prange(x.shape[0]):
        total += x[i].sum()
    return total


def calls_sum_of_rows(kernel):
    def step(x):
        return kernel(x)
    return step


def test_a_parallel_kernel_compiles_first_inside_a_step_without_the_runtime(monkeypatch, tmp_path):
    """A generated step (no runtime) that is the first caller of a parallel kernel: the kernel keeps its own runtime
    rather than the step's options, or it cannot compile (the step then fell back to the layer path, on a cold
    cache, depending on which call came first)."""
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))  # a cold cache: compiled here, inside the step
    parallel, serial = parallel_and_serial(sum_of_rows, "sum_of_rows")
    x = np.arange(12.0).reshape(3, 4)
    assert njit(**WITHOUT_REFERENCE_COUNTS)(calls_sum_of_rows(parallel))(x) == 66.0
    assert njit(**WITHOUT_REFERENCE_COUNTS)(calls_sum_of_rows(serial))(x) == 66.0
