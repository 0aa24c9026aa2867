"""bfloat16 compute in Dense: GEMM operands rounded to the nearest bfloat16, float32 accumulation.

The reference is float64 arithmetic on the same rounded operands (a product of two bfloat16 values is exact, so a
float32 GEMM over them differs from it only by float32 accumulation); against plain float32 the tolerance is
bfloat16's. compile_step and populations must match the layer path bit for bit.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import fastdl
from fastdl import losses, optim
from fastdl.kernels import bfloat16 as reference
from fastdl.kernels.cpu import bfloat16_gemm

from conftest import assert_close
from test_compiled_step import assert_same_state, snapshot

pytestmark = pytest.mark.filterwarnings("ignore::fastdl.layers.BFloat16Notice")

BFLOAT16_TOLERANCE = dict(rtol=3e-2, atol=3e-2)  # 8 mantissa bits: 2^-8 relative per operand


def test_round_nearest_rounds_ties_to_even_and_keeps_specials():
    values = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 1.0 + 2 ** -8 + 2 ** -20, -2.5, 3.4e38, np.inf, -np.inf,
                       np.nan, 1e-40, 0.0, -0.0], np.float32)
    rounded = reference.round_nearest(values)
    # 1 + 2^-8 is halfway between 1 and 1 + 2^-7: to even (1); 1 + 3 * 2^-8 to 1 + 2^-6 (even); above halfway up
    np.testing.assert_array_equal(rounded[:4], np.array([1.0, 1.0, 1.0 + 2 ** -6, 1.0 + 2 ** -7], np.float32))
    assert rounded[4] == -2.5 and rounded[5] == np.inf  # past the largest bfloat16: Inf, as IEEE rounding
    assert rounded[6] == np.inf and rounded[7] == -np.inf and np.isnan(rounded[8])
    assert np.signbit(rounded[11]) and rounded[10] == 0.0
    assert (rounded.view(np.uint32) & 0xFFFF).max() == 0  # every result is a bfloat16 value


def test_round_bfloat16_is_the_reference_on_every_backend(backend):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(3000) * np.exp(rng.uniform(-30, 30, 3000))).astype(np.float32)
    x[:4] = [np.nan, np.inf, -np.inf, 1.0 + 2 ** -8]
    out = backend.empty(x.shape, np.float32)
    backend.kernels.round_bfloat16(backend.asarray(x), out)
    np.testing.assert_array_equal(fastdl.to_numpy(out).view(np.uint32), reference.round_nearest(x).view(np.uint32))


def dense_reference(x, weight, bias, grad_y):
    """float64 on the rounded operands: y = relu(xr @ Wr + b); dZ = round(dY * relu'(z)); dX = dZr @ Wr.T ..."""
    xr, wr = (reference.round_nearest(a).astype(np.float64) for a in (x, weight))
    z = xr @ wr + bias
    grad_z = reference.round_nearest((grad_y * (z > 0)).astype(np.float32)).astype(np.float64)
    return np.maximum(z, 0), xr.T @ grad_z, grad_z.sum(axis=0), grad_z @ wr.T


def test_dense_forward_and_backward_in_bfloat16_on_every_backend(backend):
    rng = np.random.default_rng(1)
    layer = fastdl.Dense(48, 40, activation="relu", seed=2, compute_dtype="bfloat16")
    x = rng.standard_normal((33, 48)).astype(np.float32)
    grad_y = rng.standard_normal((33, 40)).astype(np.float32)
    y = fastdl.to_numpy(layer(backend.asarray(x))).copy()
    grad_x = fastdl.to_numpy(layer.backward(backend.asarray(grad_y)))
    expected_y, expected_dw, expected_db, expected_dx = dense_reference(
        x, fastdl.to_numpy(layer.weight.data), fastdl.to_numpy(layer.bias.data), grad_y)
    # the float32 accumulation of exact products, and dZ's rounding at ReLU's kink, are all that differ
    assert_close(y, expected_y, np.float32, gemm=True)
    assert_close(layer.weight.grad, expected_dw, np.float32, gemm=True)
    assert_close(layer.bias.grad, expected_db, np.float32, gemm=True)
    assert_close(grad_x, expected_dx, np.float32, gemm=True)
    # against float32 compute, bfloat16's precision (with tanh: at ReLU's kink a rounding may flip a unit)
    layers = {compute: fastdl.Dense(48, 40, activation="tanh", seed=2, compute_dtype=compute)
              for compute in ("float32", "bfloat16")}
    outputs = {compute: (fastdl.to_numpy(layer(backend.asarray(x))).copy(),
                         fastdl.to_numpy(layer.backward(backend.asarray(grad_y))), fastdl.to_numpy(layer.weight.grad))
               for compute, layer in layers.items()}
    for bfloat16, float32 in zip(outputs["bfloat16"], outputs["float32"]):
        np.testing.assert_allclose(bfloat16, float32, **BFLOAT16_TOLERANCE)
        assert not np.array_equal(bfloat16, float32)  # the rounding did happen


def bfloat16_model(dropout=0.2):
    """Products large enough for a bfloat16 GEMM provider (64x96x128) and one too small (64x96x5)."""
    model = fastdl.Sequential(fastdl.Dense(96, 128, activation="gelu", seed=1),
                              fastdl.BatchNorm(128, activation="relu", seed=2),
                              fastdl.Dense(128, 96, activation="rrelu", seed=3, dropout=dropout),
                              fastdl.Dense(96, 5, seed=4))
    return model.set_compute_dtype("bfloat16")


def test_compile_step_in_bfloat16_is_bit_identical_to_the_layer_path():
    with fastdl.use_backend("cpu"):
        models = [bfloat16_model(), bfloat16_model()]
        optimizers = [optim.AdamW(m.parameters(), lr=1e-2) for m in models]
        step = fastdl.compile_step(models[0], losses.softmax_cross_entropy, optimizers[0])
        assert step.compiled
        rng = np.random.default_rng(3)
        for _ in range(3):
            x, y = rng.standard_normal((64, 96)).astype(np.float32), rng.integers(0, 5, 64)
            compiled_loss = step(x, y)
            value, grad = losses.softmax_cross_entropy(models[1](x), y)
            models[1].backward(grad, input_grad=False)
            optimizers[1].step()
            assert compiled_loss == float(value)
        assert_same_state(snapshot(models[0], optimizers[0]), snapshot(models[1], optimizers[1]))


def test_set_compute_dtype_switches_every_dense_and_refuses_before_changing_any():
    model = fastdl.Sequential(fastdl.Dense(4, 4), fastdl.Sequential(fastdl.Dense(4, 3)))
    assert model.set_compute_dtype("bfloat16") is model
    assert [layer.compute_dtype for layer in model.modules() if isinstance(layer, fastdl.Dense)] == ["bfloat16"] * 2
    model.set_compute_dtype("float32")
    mixed = fastdl.Sequential(fastdl.Dense(4, 4), fastdl.Dense(4, 3, dtype="float64"))
    with pytest.raises(ValueError, match=r"Dense\(4->3.*needs float32 parameters"):
        mixed.set_compute_dtype("bfloat16")
    assert mixed.layers[0].compute_dtype == "float32"
    with pytest.raises(ValueError, match="compute_dtype must be one of"):
        fastdl.Dense(4, 4, compute_dtype="float16")


def test_a_nan_input_is_refused_in_bfloat16_as_in_float32():
    layer = fastdl.Dense(3, 2, compute_dtype="bfloat16")
    x = np.ones((2, 3), np.float32)
    x[1, 2] = np.nan
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        layer(x)


def test_digits_in_bfloat16_reach_the_float32_accuracy():
    (x, y), (x_test, y_test) = fastdl.datasets.load_digits()
    accuracies = {}
    for compute in ("float32", "bfloat16"):
        model = fastdl.Sequential(fastdl.Dense(64, 128, activation="relu", seed=0),
                                  fastdl.Dense(128, 10, seed=1)).set_compute_dtype(compute)
        fastdl.fit(model, losses.softmax_cross_entropy, optim.Adam(model.parameters(), lr=3e-3), (x, y), epochs=15,
                   batch_size=64, seed=0, progress=False)
        accuracies[compute] = fastdl.evaluate(model, x_test, y_test)["accuracy"]
    assert accuracies["bfloat16"] >= accuracies["float32"] - 0.005, accuracies


def test_a_200_step_loss_curve_of_the_large_mlp_stays_within_2_percent_of_float32():
    rng = np.random.default_rng(4)
    teacher = rng.standard_normal((784, 10)).astype(np.float32)
    curves = {}
    for compute in ("float32", "bfloat16"):
        model = fastdl.Sequential(fastdl.Dense(784, 1024, activation="relu", seed=0),
                                  fastdl.Dense(1024, 1024, activation="relu", seed=1),
                                  fastdl.Dense(1024, 10, seed=2)).set_compute_dtype(compute)
        optimizer = optim.Adam(model.parameters(), lr=1e-4)
        data = np.random.default_rng(5)
        curve = []
        for _ in range(200):
            x = data.standard_normal((32, 784)).astype(np.float32)
            value, grad = losses.softmax_cross_entropy(model(x), (x @ teacher).argmax(axis=1))
            model.backward(grad, input_grad=False)
            optimizer.step()
            curve.append(float(value))
        curves[compute] = np.convolve(curve, np.ones(10) / 10, mode="valid")  # per step losses are noisy
    np.testing.assert_allclose(curves["bfloat16"], curves["float32"], rtol=0.02)


def test_one_notice_per_process_says_it_is_not_faster_without_a_bfloat16_gemm():
    code = ("import warnings, fastdl; warnings.simplefilter('always'); fastdl.set_backend('cpu')\n"
            "with warnings.catch_warnings(record=True) as seen:\n"
            "    fastdl.Dense(3, 2, compute_dtype='bfloat16'); fastdl.Sequential(fastdl.Dense(2, 2)).set_compute_dtype("
            "'bfloat16')\n"
            "print(len(seen), *[f'{w.category.__name__} {w.message}' for w in seen])")
    with_gemm = fastdl.blas_info()["bfloat16_gemm"] is not None
    for choice in ("off", "auto"):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "FASTDL_BFLOAT16_GEMM": choice}, cwd=os.path.dirname(__file__))
        assert result.returncode == 0, result.stderr
        if choice == "off" or not with_gemm:
            assert result.stdout.startswith("1 BFloat16Notice") and "not its speed" in result.stdout
        else:
            assert result.stdout.startswith("0"), result.stdout


FALLBACK_JOB = """
import warnings, numpy as np, fastdl
warnings.simplefilter("ignore")
fastdl.set_backend("cpu")
print("bfloat16 gemm", fastdl.blas_info()["bfloat16_gemm"])
rng = np.random.default_rng(0)
model = fastdl.Sequential(fastdl.Dense(96, 128, activation="relu", seed=1),
                          fastdl.Dense(128, 5, seed=2)).set_compute_dtype("bfloat16")
twin = fastdl.Sequential(fastdl.Dense(96, 128, activation="relu", seed=1),
                         fastdl.Dense(128, 5, seed=2)).set_compute_dtype("bfloat16")
x, y = rng.standard_normal((64, 96)).astype(np.float32), rng.integers(0, 5, 64)
value, grad = fastdl.losses.softmax_cross_entropy(twin(x), y)
twin.backward(grad, input_grad=False)
optimizer = fastdl.optim.SGD(model.parameters(), lr=0.0)
step = fastdl.compile_step(model, fastdl.losses.softmax_cross_entropy, optimizer)
print("compiled equals layer path", step(x, y) == float(value) and all(
    np.array_equal(a.grad, b.grad) for a, b in zip(model.parameters(), twin.parameters())))
np.save("grads.npy", np.concatenate([p.grad.ravel() for p in twin.parameters()]))
"""


def test_with_and_without_a_bfloat16_gemm_the_products_agree(tmp_path):
    """FASTDL_BFLOAT16_GEMM=off multiplies the rounded operands with the float32 GEMM: the same exact products,
    summed in another order; compile_step stays bit-identical to the layer path either way."""
    grads = {}
    for choice in ("off", "auto"):
        folder = tmp_path / choice
        folder.mkdir()
        env = {**os.environ, "FASTDL_BFLOAT16_GEMM": choice}
        result = subprocess.run([sys.executable, "-c", FALLBACK_JOB], capture_output=True, text=True, timeout=600,
                                cwd=folder, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "compiled equals layer path True" in result.stdout
        if choice == "off":
            assert "bfloat16 gemm None" in result.stdout
        grads[choice] = np.load(folder / "grads.npy")
    np.testing.assert_allclose(grads["auto"], grads["off"], rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not bfloat16_gemm.AVAILABLE, reason="no bfloat16 GEMM provider (the onednn extra)")
def test_the_providers_own_call_multiplies_the_bit_patterns():
    """``matmul_bits`` (the benchmarks' and the ceiling's direct call) against float64 on the rounded values."""
    rng = np.random.default_rng(7)
    a, b = (reference.round_nearest(rng.standard_normal(shape).astype(np.float32)) for shape in ((33, 70), (70, 19)))
    a_bits, b_bits = ((v.view(np.uint32) >> np.uint32(16)).astype(np.uint16) for v in (a, b))
    out = np.empty((33, 19), np.float32)
    bfloat16_gemm.matmul_bits(a_bits, b_bits, out)
    np.testing.assert_allclose(out, a.astype(np.float64) @ b.astype(np.float64), rtol=2e-5, atol=2e-5)
