"""Optimizer steps: fastdl's fused kernels (cpu, numpy reference) and PyTorch's best CPU variant.

Run: ``pytest bench/bench_optim.py --benchmark-only``. Each case stores GB/s (bytes its algorithm must move)
in ``extra_info``; ``python bench/optim_report.py`` prints them against the machine's ceiling and PyTorch.
"""

import pytest

import fastdl
from optim_report import CASES, TOTAL, fastdl_step, torch_step

# 10M parameters (memory bound) and a small model (per-call overhead dominates)
LAYOUTS = {"10M": [(TOTAL,)], "small": [(64, 64), (64,), (64, 64), (64,), (64, 10), (10,)]}


def _elements(shapes):
    total = 0
    for shape in shapes:
        size = 1
        for extent in shape:
            size *= extent
        total += size
    return total


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend_name", ["cpu", "numpy"])
def bench_fastdl_step(benchmark, backend_name, case, layout):
    with fastdl.use_backend(backend_name):
        step = fastdl_step(case, LAYOUTS[layout])
        step()  # compile outside the timing
        benchmark(step)
    benchmark.extra_info["GB/s"] = CASES[case][2] * _elements(LAYOUTS[layout]) / benchmark.stats["median"] / 1e9


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES)
def bench_torch_step(benchmark, case, layout):
    pytest.importorskip("torch")
    step = torch_step(case, LAYOUTS[layout])
    if step is None:
        pytest.skip(f"PyTorch has no {case}")
    benchmark(step)
    benchmark.extra_info["GB/s"] = CASES[case][2] * _elements(LAYOUTS[layout]) / benchmark.stats["median"] / 1e9
