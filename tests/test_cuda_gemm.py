"""The GPU backend's GEMMs (kernels/cuda/gemm.py): cublasGemmEx from row-major arrays, with bfloat16 operands and
on TF32 tensor cores, and ``fastdl.set_float32_matmul_precision``.

Each test runs on the CUDA emulator (numpy arrays: ``emulated_gemm_ex`` takes cuBLAS's column-major arguments, so
the row-major mapping is checked in CI) and, where CuPy and a device are present, on the GPU ("gpu" in the test id,
so ``bench/gpu_check.sh`` runs them).
"""

import warnings

import numpy as np
import pytest

import fastdl
from fastdl.kernels.cuda import gemm
from fastdl.kernels.reference import activations
from fastdl.kernels.reference import dense as reference_dense
from fastdl.kernels.reference.dense import round_bfloat16 as reference_round


def _device_param():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return pytest.param("gpu", id="gpu")
        reason = "CUDA reports no device"
    except Exception as error:  # no CuPy, or no driver
        reason = f"no usable CUDA device: {error}"
    return pytest.param("gpu", id="gpu", marks=pytest.mark.skip(reason=reason))


@pytest.fixture(params=[pytest.param("emulator", id="emulator"), _device_param()])
def device(request):
    if request.param == "emulator":
        return np.asarray, np.asarray
    import cupy

    return cupy.asarray, cupy.asnumpy


@pytest.fixture
def restore_precision():
    yield
    fastdl.set_float32_matmul_precision("highest")


def bits_of(values):
    """bfloat16 bit patterns of float32 values rounded to nearest even, and the rounded values in float64."""
    rounded = np.empty_like(values)
    reference_round(values, rounded)
    return (rounded.view(np.uint32) >> 16).astype(np.uint16), rounded.astype(np.float64)


SHAPES = [(5, 7, 3), (33, 17, 64)]  # rows, columns, inner: every dimension different


@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
@pytest.mark.parametrize("rows,columns,inner", SHAPES)
@pytest.mark.parametrize("operands", ["float32", "bfloat16", "tf32"])
def test_gemm_ex_computes_the_row_major_product(device, transpose_a, transpose_b, rows, columns, inner, operands):
    to_device, to_host = device
    rng = np.random.default_rng(rows + 2 * transpose_a + transpose_b)
    a = rng.standard_normal((inner, rows) if transpose_a else (rows, inner)).astype(np.float32)
    b = rng.standard_normal((columns, inner) if transpose_b else (inner, columns)).astype(np.float32)
    start = rng.standard_normal((rows, columns)).astype(np.float32)
    if operands == "bfloat16":
        (a_in, a64), (b_in, b64) = bits_of(a), bits_of(b)
    else:
        a_in, a64, b_in, b64 = a, a.astype(np.float64), b, b.astype(np.float64)
    compute = gemm.COMPUTE_32F_FAST_TF32 if operands == "tf32" else gemm.COMPUTE_32F
    product = (a64.T if transpose_a else a64) @ (b64.T if transpose_b else b64)
    magnitude = np.abs(a64.T if transpose_a else a64) @ np.abs(b64.T if transpose_b else b64)
    # float32 sums of exact products, or of TF32 ones: each operand within 2^-11 rounded to nearest (the emulator),
    # 2^-10 truncated (cuBLAS does not say which it does)
    bound = magnitude * (inner * 2.0 ** -23 + (2.0 ** -9 if operands == "tf32" else 0.0)) + 1e-6
    for accumulate in (False, True):
        out = to_device(start.copy())
        gemm.gemm_ex(to_device(a_in), to_device(b_in), out, transpose_a, transpose_b, accumulate, compute)
        expected = product + start if accumulate else product
        assert np.all(np.abs(to_host(out) - expected) <= bound + (np.abs(start) * 2.0 ** -23 if accumulate else 0))
    if operands == "tf32" and inner > 8:  # the operands did go through TF32: float32 gets far closer
        float32_out = to_device(np.zeros((rows, columns), np.float32))
        gemm.gemm_ex(to_device(a), to_device(b), float32_out, transpose_a, transpose_b)
        assert np.abs(to_host(float32_out) - product).max() < np.abs(to_host(out) - start - product).max() / 4


@pytest.mark.parametrize("a_shape,b_shape,out_shape,error,message", [
    ((4, 3), (2, 5), (4, 5), ValueError, r"op\(a\) \(4, 3\) @ op\(b\) \(2, 5\) does not give out \(4, 5\)"),
    ((4, 3), (3, 5), (4, 6), ValueError, r"does not give out \(4, 6\)"),
])
def test_gemm_ex_refuses_shapes_that_do_not_multiply(a_shape, b_shape, out_shape, error, message):
    with pytest.raises(error, match=message):
        gemm.gemm_ex(np.ones(a_shape, np.float32), np.ones(b_shape, np.float32), np.ones(out_shape, np.float32))


def test_gemm_ex_refuses_mixed_types_and_strided_arrays():
    with pytest.raises(TypeError, match="a and b must both be float32 or bfloat16 bits .* got float32, uint16 and"):
        gemm.gemm_ex(np.ones((2, 3), np.float32), np.ones((3, 4), np.uint16), np.ones((2, 4), np.float32))
    with pytest.raises(TypeError, match="got float64, float64 and float64"):
        gemm.gemm_ex(np.ones((2, 3)), np.ones((3, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"a must be C-contiguous \(shape \(2, 3\)"):
        gemm.gemm_ex(np.ones((2, 6), np.float32)[:, ::2], np.ones((3, 4), np.float32), np.ones((2, 4), np.float32))


def test_round_tf32_keeps_ten_mantissa_bits_nearest_even():
    one = np.float32(1.0)
    step = np.float32(2.0 ** -10)  # TF32's spacing at 1
    values = np.array([one + step / 2, one + step + step / 2, one + step / 4, -(one + 3 * step / 4), np.inf, np.nan,
                       np.float32(3.0e38)], np.float32)
    rounded = gemm.round_tf32(values)
    np.testing.assert_array_equal(rounded[:4], [one, one + 2 * step, one, -(one + step)])  # ties to even
    assert rounded[4] == np.inf and np.isnan(rounded[5])
    assert (rounded[6].view(np.uint32) & np.uint32(0x1FFF)) == 0


def test_matmul_precision_is_checked_and_reported(restore_precision):
    assert fastdl.get_float32_matmul_precision() == "highest"
    fastdl.set_float32_matmul_precision("High")
    assert fastdl.get_float32_matmul_precision() == "high"
    for bad in ("low", 3, None):
        with pytest.raises(ValueError, match=r"precision must be one of highest, high, medium, got"):
            fastdl.set_float32_matmul_precision(bad)
    assert fastdl.get_float32_matmul_precision() == "high"  # a refused value changes nothing


@pytest.mark.parametrize("backend_name", ["cuda-emulator", "gpu"])
def test_high_precision_runs_float32_dense_layers_on_tf32(backend_name, restore_precision):
    try:
        fastdl.backend._load(backend_name)
    except RuntimeError as error:
        pytest.skip(str(error))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 96)).astype(np.float32)
    grad_y = rng.standard_normal((16, 8)).astype(np.float32)
    results = {}
    with fastdl.use_backend(backend_name) as backend:
        for precision in ("highest", "high"):
            fastdl.set_float32_matmul_precision(precision)
            layer = fastdl.Dense(96, 8, seed=5)
            y = fastdl.to_numpy(layer(backend.asarray(x))).copy()
            grad_x = fastdl.to_numpy(layer.backward(backend.asarray(grad_y)))
            results[precision] = (y, fastdl.to_numpy(layer.weight.grad).copy(), grad_x)
            weight = fastdl.to_numpy(layer.weight.data).astype(np.float64)
    x64, g64 = x.astype(np.float64), grad_y.astype(np.float64)
    expected = (x64 @ weight, x64.T @ g64, g64 @ weight.T)
    for highest, high, exact in zip(results["highest"], results["high"], expected):
        np.testing.assert_allclose(highest, exact, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(high, exact, rtol=2e-2, atol=1e-2)  # TF32: about three decimal digits
        assert np.abs(high - exact).max() > 4 * np.abs(highest - exact).max()  # the products did go through TF32


def test_the_cpu_backends_ignore_the_float32_precision(restore_precision):
    x = np.random.default_rng(6).standard_normal((16, 96)).astype(np.float32)
    for name in ("numpy", "cpu"):
        with fastdl.use_backend(name):
            outputs = []
            for precision in ("highest", "high"):
                fastdl.set_float32_matmul_precision(precision)
                outputs.append(fastdl.to_numpy(fastdl.Dense(96, 8, seed=5)(x)).copy())
            np.testing.assert_array_equal(outputs[0], outputs[1])


def test_no_bfloat16_notice_where_cublas_multiplies_in_bfloat16(monkeypatch):
    monkeypatch.setattr(fastdl.layers, "_noticed", [])  # the notice is once per process
    with fastdl.use_backend("cuda-emulator"), warnings.catch_warnings():
        warnings.simplefilter("error")
        fastdl.Dense(3, 2, compute_dtype="bfloat16")
    with fastdl.use_backend("numpy"), pytest.warns(fastdl.BFloat16Notice, match="on a GPU, it needs compute "
                                                                                 "capability 8.0 or newer"):
        fastdl.Dense(3, 2, compute_dtype="bfloat16")


@pytest.mark.filterwarnings("ignore::fastdl.layers.BFloat16Notice")  # the numpy backend's
def test_bfloat16_dense_with_dropout_takes_its_bits_in_the_backward():
    """With dropout the forward multiplies in float32 (the rounded operands) and leaves no bits: the backward
    rounds x and W itself. Checked against the numpy backend, whose masks are the same (counter-based draws)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((24, 40)).astype(np.float32)
    grad_y = rng.standard_normal((24, 32)).astype(np.float32)
    results = {}
    for name in ("numpy", "cuda-emulator"):
        with fastdl.use_backend(name) as backend:
            layer = fastdl.Dense(40, 32, activation="relu", seed=8, dropout=0.25, compute_dtype="bfloat16")
            y = fastdl.to_numpy(layer(backend.asarray(x))).copy()
            grad_x = fastdl.to_numpy(layer.backward(backend.asarray(grad_y)))
            results[name] = (y, grad_x, fastdl.to_numpy(layer.weight.grad), fastdl.to_numpy(layer.bias.grad))
    for emulated, expected in zip(results["cuda-emulator"], results["numpy"]):
        np.testing.assert_allclose(emulated, expected, rtol=1e-4, atol=1e-5)


def test_bfloat16_forward_leaves_the_bits_its_backward_reads():
    """The GPU's bfloat16 forward rounds x and W into their bit patterns (not into the rounded float32 arrays,
    which stay untouched), and those bits are exactly the reference's rounding."""
    from fastdl.kernels.cuda import dense as cuda_dense

    rng = np.random.default_rng(9)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    weight = rng.standard_normal((5, 4)).astype(np.float32)
    bias = np.zeros(4, np.float32)
    z, y = np.empty((6, 4), np.float32), np.empty((6, 4), np.float32)
    x_rounded, weight_rounded = np.full_like(x, 7.0), np.full_like(weight, 7.0)
    x_bits, weight_bits = np.empty(x.shape, np.uint16), np.empty(weight.shape, np.uint16)
    identity = reference_dense.ActivationArgs(activations.IDENTITY, np.zeros(activations.NUM_PARAMS, np.float32),
                                              0, 0)
    assert cuda_dense.dense_forward_bfloat16(x, weight, bias, identity, z, y, x_rounded, weight_rounded, x_bits,
                                             weight_bits)
    np.testing.assert_array_equal(x_bits, bits_of(x)[0])
    np.testing.assert_array_equal(weight_bits, bits_of(weight)[0])
    assert (x_rounded == 7.0).all() and (weight_rounded == 7.0).all()
    np.testing.assert_allclose(y, bits_of(x)[1] @ bits_of(weight)[1], rtol=1e-6, atol=1e-6)
