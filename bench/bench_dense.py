"""Dense forward and forward+backward (ReLU, float32): fastdl's backends, the bare GEMMs, PyTorch.

Run: ``pytest bench/bench_dense.py --benchmark-only``. Each case stores GFLOP/s in ``extra_info``;
``python bench/dense_report.py`` prints the ratios side by side.
"""

import numpy as np
import pytest

import fastdl
from shapes import DENSE_SHAPES, dense_case, gemm_flops

IDS = ["x".join(map(str, s)) for s in DENSE_SHAPES]


@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=IDS)
@pytest.mark.parametrize("backend_name", ["cpu", "numpy"])
def bench_dense_forward(benchmark, shape, backend_name):
    with fastdl.use_backend(backend_name):
        layer, x, _ = dense_case(shape)
        layer(x)  # compile outside the timing
        benchmark(layer, x)
    benchmark.extra_info["GFLOP/s"] = gemm_flops(shape) / benchmark.stats["median"] / 1e9


@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=IDS)
@pytest.mark.parametrize("backend_name", ["cpu", "numpy"])
def bench_dense_forward_backward(benchmark, shape, backend_name):
    with fastdl.use_backend(backend_name):
        layer, x, grad_out = dense_case(shape)

        def step():
            layer(x)
            layer.backward(grad_out)

        step()
        benchmark(step)
    benchmark.extra_info["GFLOP/s"] = 3 * gemm_flops(shape) / benchmark.stats["median"] / 1e9


@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=IDS)
def bench_bare_gemm(benchmark, shape):
    """The ceiling: numpy's BLAS GEMM into a preallocated output."""
    _, x, _ = dense_case(shape)
    weight = np.ones((shape[1], shape[2]), np.float32)
    out = np.empty((shape[0], shape[2]), np.float32)
    benchmark(np.matmul, x, weight, out=out)
    benchmark.extra_info["GFLOP/s"] = gemm_flops(shape) / benchmark.stats["median"] / 1e9


@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=IDS)
def bench_torch_linear_relu_forward_backward(benchmark, shape):
    torch = pytest.importorskip("torch")
    linear = torch.nn.Linear(shape[1], shape[2])
    x = torch.randn(shape[0], shape[1], requires_grad=True)  # so PyTorch computes dX too, like fastdl
    grad_out = torch.randn(shape[0], shape[2])

    def step():
        x.grad = None
        linear.zero_grad(set_to_none=False)
        torch.relu(linear(x)).backward(grad_out)

    benchmark(step)
    benchmark.extra_info["GFLOP/s"] = 3 * gemm_flops(shape) / benchmark.stats["median"] / 1e9
