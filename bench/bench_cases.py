"""Every case of ``fastdl.bench`` under pytest-benchmark: fastdl on each backend, and PyTorch beside it.

    pytest bench/ --benchmark-only                       # every backend (the unavailable ones skip, saying why)
    pytest bench/ --benchmark-only --backend cpu -k "batch norm"

Each result's ``extra_info`` holds the achieved GB/s or GFLOP/s, the fraction of the machine's ceiling (measured
once per session) and the first call's time (JIT compilation, kept out of the timing). ``fastdl bench`` runs
the same cases with interleaved rounds and paired ratios, and writes the table, JSON and plot.
"""

import time

import pytest

import fastdl
from fastdl.bench import cases

CASES = cases.all_cases()
IDS = [case.name for case in CASES]


def _record(benchmark, case, ceiling, first_call_ms=None):
    rate = case.work / benchmark.stats["median"] / 1e9
    limit = ceiling["bandwidth_GBps"] if case.unit == cases.BANDWIDTH else ceiling["gemm_GFLOPs"]
    benchmark.extra_info.update({case.unit: rate, "of_ceiling": rate / limit})
    if first_call_ms is not None:
        benchmark.extra_info["first_call_ms"] = first_call_ms


@pytest.mark.parametrize("case", CASES, ids=IDS)
def bench_fastdl(benchmark, case, backend_name, ceilings):
    with fastdl.use_backend(backend_name):
        call = case.build()
        start = time.perf_counter()
        call()  # compile outside the timing
        first_call_ms = (time.perf_counter() - start) * 1e3
        benchmark(call)
    _record(benchmark, case, ceilings["gpu" if backend_name == "gpu" else "cpu"], first_call_ms)


@pytest.mark.parametrize("case", [case for case in CASES if case.build_torch], ids=[c.name for c in CASES if c.build_torch])
def bench_torch(benchmark, case, backend_name, ceilings):
    torch = pytest.importorskip("torch")
    if backend_name == "numpy":
        pytest.skip("PyTorch runs once per device: beside the cpu and gpu backends")
    device = "cuda" if backend_name == "gpu" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA device here")
    call = case.build_torch(device)
    call()
    benchmark(call)
    _record(benchmark, case, ceilings["gpu" if device == "cuda" else "cpu"])
