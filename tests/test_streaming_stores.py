"""Streaming (non-temporal) stores in the CPU batch-norm kernels: taken only for large outputs whose rows start on
a 64-byte line, giving exactly what ordinary stores give; any other output falls back to ordinary stores."""

import numpy as np
import pytest

import fastdl
from fastdl.kernels import cpu
from fastdl.kernels.ops import ActivationArgs
from fastdl.kernels.cpu.streaming import STREAMING_MIN_BYTES, streams


def _batch(shape, dtype, seed):
    return (np.random.default_rng(seed).standard_normal(shape) * 2 + 1).astype(dtype)


def _train_step(backend_name, x, grad_out, activation):
    with fastdl.use_backend(backend_name):
        bn = fastdl.BatchNorm(x.shape[1], dtype=x.dtype, activation=activation)
        bn.weight.data[...] = np.linspace(0.5, 1.5, x.shape[1])
        bn.bias.data[...] = np.linspace(-0.2, 0.2, x.shape[1])
        y = bn(x)
        grad_x = bn.backward(grad_out)
        streamed = (streams(y), streams(grad_x)) if backend_name == "cpu" else None
        return streamed, [a.copy() for a in (y, grad_x, bn.weight.grad, bn.bias.grad, bn.running_var)]


@pytest.mark.parametrize("activation", ["identity", "relu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_streamed_batchnorm_matches_reference(dtype, activation):
    shape = (STREAMING_MIN_BYTES // (1024 * np.dtype(dtype).itemsize), 1024)  # the smallest streamed output
    x, grad_out = _batch(shape, dtype, 0), _batch(shape, dtype, 1)
    streamed, actual = _train_step("cpu", x, grad_out, activation)
    assert streamed == (True, True)  # the layer's outputs are aligned, so this test covers the streaming loops
    _, expected = _train_step("numpy", x, grad_out, activation)
    rtol, atol = (1e-4, 1e-5) if dtype == np.float32 else (1e-11, 1e-12)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


def _forward_into(x, y_out):
    rows, columns = x.shape
    blocks = (rows + 63) // 64
    ones, zeros = np.ones(columns, x.dtype), np.zeros(columns, x.dtype)
    running_mean, running_var = np.zeros(columns, x.dtype), np.ones(columns, x.dtype)
    finite = cpu.batchnorm_forward_train(x, ones, zeros, 1e-5, 0.1, running_mean, running_var, np.zeros(1, np.int64),
                                         ActivationArgs(0, np.zeros(2, x.dtype), 0, 1), np.empty(columns),
                                         np.empty(columns), y_out,
                                         np.empty((2 * blocks + 4, columns), x.dtype),
                                         np.empty((2 * blocks, columns), x.dtype),
                                         np.empty(cpu.normalization.totals_shape(rows, columns)))
    assert finite


def test_unaligned_or_small_outputs_take_ordinary_stores_with_the_same_result():
    x = _batch((1024, 1024), np.float32, 2)
    aligned = fastdl.get_backend().empty(x.shape, x.dtype)
    unaligned = fastdl.get_backend().empty(x.size + 1, x.dtype)[1:].reshape(x.shape)  # 4 bytes past a line
    assert streams(aligned) and not streams(unaligned)
    _forward_into(x, aligned)
    _forward_into(x, unaligned)
    np.testing.assert_array_equal(aligned, unaligned)
    # rows that do not all start on a line (1000 float32 = 4000 bytes), and an output below the threshold
    assert not streams(fastdl.get_backend().empty((1100, 1000), np.float32))
    assert not streams(fastdl.get_backend().empty((64, 1024), np.float32))


@pytest.mark.parametrize("shape,dtype", [((3,), np.float32), ((7, 5), np.float64), ((1024, 1024), np.float32),
                                         ((2, 3, 4), np.uint8)])
def test_host_backends_allocate_on_cache_lines(shape, dtype):
    for name in ("numpy", "cpu"):
        with fastdl.use_backend(name) as backend:
            array = backend.empty(shape, dtype)
            assert array.ctypes.data % 64 == 0
            assert array.shape == shape and array.dtype == dtype and array.flags.c_contiguous
            array[...] = 1  # writable, and all of it belongs to this array
            assert array.sum() == array.size
