"""A few CUDA kernels against the numpy reference directly, on a real GPU (the backend suite covers every op on the
"gpu" backend, and on the "cuda-emulator" backend everywhere).

Skips, saying why, without CuPy or a device (as in CI); tests/test_cuda_sources.py compiles them everywhere.
"""

import numpy as np
import pytest

from fastdl.kernels import reference

cupy = pytest.importorskip("cupy", reason="the CUDA kernel tests need CuPy and an NVIDIA GPU")
try:
    DEVICES = cupy.cuda.runtime.getDeviceCount()
except Exception as error:  # CuPy raises its own error type when no driver is present
    pytest.skip(f"no usable CUDA device: {error}", allow_module_level=True)
if DEVICES == 0:
    pytest.skip("CUDA reports no device", allow_module_level=True)

from fastdl.kernels.cuda import dropout as cuda_dropout  # noqa: E402
from fastdl.kernels.cuda import optim as cuda_optim  # noqa: E402

TOLERANCE = {np.float32: 2e-6, np.float64: 1e-13}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_step_matches_reference(dtype, amsgrad):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(10_001).astype(dtype) for _ in range(2)] + [np.zeros(10_001, dtype)] * 2
    state = [a.copy() for a in arrays] + ([np.zeros(10_001, dtype)] if amsgrad else [None])
    device = [None if a is None else cupy.asarray(a) for a in state]
    from fastdl.optim.flat import piece_table

    piece_bounds, piece_segments = piece_table([10_000, 1])  # two tensors, two parameter groups
    hyper = np.array([[0.01, 0.001, 0.999, 0.9, 0.999, 0.01, 0.3, 1e-8], [0.0, 0.0, 1.0, 0.8, 0.99, 0.05, 0.2, 1e-6]])
    grouped = (dtype(0.7), hyper, piece_bounds, piece_segments)
    for _ in range(3):
        reference.adam_step(*state, *grouped)
        cuda_optim.adam_step(*device, *grouped)
    for host, gpu in zip(state, device):
        if host is not None:
            np.testing.assert_allclose(gpu.get(), host, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


def test_segment_sums_match_reference():
    from fastdl.optim.flat import NormWorkspace

    rng = np.random.default_rng(1)
    sizes = [70_000, 3, 200_000]
    first, second = rng.standard_normal(sum(sizes)), rng.standard_normal(sum(sizes))
    expected, actual = NormWorkspace(sizes), NormWorkspace(sizes)
    reference.segment_sums_of_squares(first, second, expected.piece_bounds, expected.piece_segments,
                                      expected.partials, expected.sums)
    cuda_optim.segment_sums_of_squares(cupy.asarray(first), cupy.asarray(second), actual.piece_bounds,
                                       actual.piece_segments, actual.partials, actual.sums)
    np.testing.assert_allclose(actual.sums, expected.sums, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_mask_is_the_cpu_mask(dtype):
    x = np.random.default_rng(2).standard_normal((64, 33)).astype(dtype)
    mask, y = np.empty(x.shape, np.uint8), np.empty_like(x)
    reference.dropout_forward(x, 0.3, 1234, 5, mask, y)
    gpu_mask, gpu_y = cupy.empty(x.shape, cupy.uint8), cupy.empty(x.shape, dtype)
    cuda_dropout.dropout_forward(cupy.asarray(x), 0.3, 1234, 5, gpu_mask, gpu_y)
    np.testing.assert_array_equal(gpu_mask.get(), mask)
    np.testing.assert_allclose(gpu_y.get(), y, rtol=TOLERANCE[dtype])
    grad = cupy.asarray(x)
    grad_x = cupy.empty_like(grad)
    cuda_dropout.dropout_backward(grad, gpu_mask, 0.3, grad_x)
    expected = np.empty_like(x)
    reference.dropout_backward(x, mask, 0.3, expected)
    np.testing.assert_allclose(grad_x.get(), expected, rtol=TOLERANCE[dtype])
