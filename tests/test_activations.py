"""Every activation: each backend against the numpy reference, and backward against finite differences."""

import numpy as np
import pytest

import fastdl
from fastdl.kernels.reference import activations as table
from fastdl.kernels.reference import activations as reference

from conftest import assert_close

ACTIVATIONS = [
    ("identity", {}), ("binary_step", {}), ("sigmoid", {}), ("tanh", {}), ("softsign", {}), ("sqnl", {}),
    ("relu", {}), ("brelu", {}), ("leaky_relu", {"alpha": 0.2}), ("rrelu", {}), ("elu", {"alpha": 0.7}),
    ("bent_identity", {}), ("silu", {}), ("soft_clipping", {"alpha": 2.0}), ("gelu", {}),
    ("gelu", {"approximate": "tanh"}), ("softplus", {"beta": 2.0, "threshold": 3.0}), ("softmax", {}),
]
IDS = [name + ("_" + "_".join(f"{k}{v}" for k, v in p.items()) if p else "") for name, p in ACTIVATIONS]
# binary_step is piecewise constant: finite differences see 0 or a jump; test_binary_step_gradient_is_zero covers it.
DIFFERENTIABLE = [(case, case_id) for case, case_id in zip(ACTIVATIONS, IDS) if case[0] != "binary_step"]
DIFF_CASES, DIFF_IDS = [c for c, _ in DIFFERENTIABLE], [i for _, i in DIFFERENTIABLE]


def away_from_kinks(shape, dtype, seed=0):
    """Inputs in (-3, 3) at least 0.05 away from every kink (0, +-2 for sqnl, softplus's threshold 1.5)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, shape)
    for kink in (0.0, 2.0, -2.0, 1.5):
        close = np.abs(x - kink) < 0.05
        x[close] += 0.1
    return x.astype(dtype)


@pytest.mark.parametrize("name,params", ACTIVATIONS, ids=IDS)
def test_activation_layer_matches_reference(backend, dtype, name, params):
    x = away_from_kinks((17, 12), dtype)
    layer = fastdl.Activation(name, seed=3, **params)
    y = fastdl.to_numpy(layer(backend.asarray(x))).copy()
    grad_out = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    grad_x = fastdl.to_numpy(layer.backward(backend.asarray(grad_out)))
    code, p = layer.spec.kernel_args(dtype, training=True)
    expected_y = reference.forward(x, code, p, layer.seed, layer.counter)
    assert_close(y, expected_y, dtype)
    assert_close(grad_x, reference.activation_backward(grad_out, x, expected_y, code, p, layer.seed, layer.counter), dtype)


@pytest.mark.parametrize("name,params", DIFF_CASES, ids=DIFF_IDS)
def test_activation_backward_matches_finite_differences(backend, name, params):
    layer = fastdl.Activation(name, seed=5, **params)
    assert fastdl.testing.gradcheck(layer, backend.asarray(away_from_kinks((6, 8), np.float64)))


@pytest.mark.parametrize("name,params", DIFF_CASES, ids=DIFF_IDS)
def test_dense_with_fused_activation_matches_finite_differences(backend, name, params):
    layer = fastdl.Dense(5, 6, activation=fastdl.Activation(name, **params), dtype="float64", seed=2)
    layer.bias.data[...] = fastdl.asarray(np.linspace(-0.3, 0.3, 6))
    assert fastdl.testing.gradcheck(layer, np.random.default_rng(0).uniform(-1, 1, (7, 5)))


def test_binary_step_gradient_is_zero(backend):
    layer = fastdl.Activation("binary_step")
    x = backend.asarray(np.array([[-1.0, 0.0, 2.0]]))
    np.testing.assert_array_equal(fastdl.to_numpy(layer(x)), [[0.0, 1.0, 1.0]])
    np.testing.assert_array_equal(fastdl.to_numpy(layer.backward(backend.asarray(np.ones((1, 3))))), 0.0)


def test_relu_gradient_at_zero_is_zero_as_in_pytorch(backend):
    layer = fastdl.Activation("relu")
    layer(backend.asarray(np.zeros((1, 2), np.float32)))
    np.testing.assert_array_equal(fastdl.to_numpy(layer.backward(backend.asarray(np.ones((1, 2), np.float32)))), 0.0)


def test_rrelu_draws_slopes_in_range_and_uses_mean_in_eval(backend):
    layer = fastdl.Activation("rrelu", seed=11)
    x = -np.ones((64, 64), np.float32)
    slopes = -fastdl.to_numpy(layer(backend.asarray(x)))
    assert slopes.min() >= 1 / 8 and slopes.max() < 1 / 3
    assert np.unique(slopes).size > 1000  # really one draw per element
    layer.eval()
    np.testing.assert_allclose(-fastdl.to_numpy(layer(backend.asarray(x))), (1 / 8 + 1 / 3) / 2, rtol=1e-6)


def test_brelu_flips_odd_columns(backend):
    y = fastdl.to_numpy(fastdl.Activation("brelu")(backend.asarray(np.array([[1.0, 1.0, -1.0, -1.0]]))))
    np.testing.assert_array_equal(y, [[1.0, 0.0, 0.0, -1.0]])


def test_reference_formulas_against_torch():
    torch = pytest.importorskip("torch")
    x = away_from_kinks((9, 10), np.float64)
    pairs = {
        "sigmoid": torch.sigmoid, "tanh": torch.tanh, "softsign": torch.nn.functional.softsign,
        "relu": torch.relu, "elu": torch.nn.functional.elu, "silu": torch.nn.functional.silu,
        "gelu": torch.nn.functional.gelu, "softplus": torch.nn.functional.softplus,
        "leaky_relu": torch.nn.functional.leaky_relu, "softmax": lambda t: torch.softmax(t, dim=-1),
    }
    for name, torch_function in pairs.items():
        code, params = fastdl.ActivationSpec(name).kernel_args(np.float64, training=True)
        t = torch.tensor(x, requires_grad=True)
        out = torch_function(t)
        out.backward(torch.ones_like(out) * 0.5)
        y = reference.forward(x, code, params)
        np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=name)
        grad = reference.activation_backward(np.full_like(x, 0.5), x, y, code, params)
        np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-12, atol=1e-14, err_msg=name)


LEARNABLE = [
    lambda dtype: fastdl.PReLU(1, dtype=dtype),
    lambda dtype: fastdl.PReLU(8, init=0.1, dtype=dtype),
    lambda dtype: fastdl.APL(8, hinges=3, seed=0, dtype=dtype),
    lambda dtype: fastdl.SoftExponential(1, init=0.3, dtype=dtype),
    lambda dtype: fastdl.SoftExponential(8, init=-0.2, dtype=dtype),
    lambda dtype: fastdl.SoftExponential(8, init=0.0, dtype=dtype),
]
LEARNABLE_IDS = ["prelu_shared", "prelu_per_feature", "apl", "softexp_positive", "softexp_negative", "softexp_zero"]


def _with_nonzero_parameters(layer):
    for parameter in layer.parameters():
        if not parameter.data.any():  # APL slopes start at 0: give them values so every path is exercised
            parameter.data[...] = fastdl.asarray(np.linspace(-0.5, 0.5, parameter.data.size).reshape(parameter.data.shape))
    return layer


@pytest.mark.parametrize("make", LEARNABLE, ids=LEARNABLE_IDS)
def test_learnable_activation_matches_reference(backend, dtype, make):
    x = away_from_kinks((11, 8), dtype)
    grad_out = np.random.default_rng(2).standard_normal(x.shape).astype(dtype)
    with fastdl.use_backend("numpy"):
        expected_layer = _with_nonzero_parameters(make(dtype))
        expected_y = expected_layer(x).copy()
        expected_grad_x = expected_layer.backward(grad_out).copy()
    layer = _with_nonzero_parameters(make(dtype))
    assert_close(layer(backend.asarray(x)), expected_y, dtype)
    assert_close(layer.backward(backend.asarray(grad_out)), expected_grad_x, dtype)
    for (name, parameter), (_, expected) in zip(layer.named_parameters(), expected_layer.named_parameters()):
        rtol, atol = (1e-4, 1e-5) if dtype == np.float32 else (1e-11, 1e-12)  # sums over the batch
        np.testing.assert_allclose(fastdl.to_numpy(parameter.grad), expected.grad, rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("make", LEARNABLE, ids=LEARNABLE_IDS)
def test_learnable_activation_matches_finite_differences(backend, make):
    layer = _with_nonzero_parameters(make("float64"))
    assert fastdl.testing.gradcheck(layer, away_from_kinks((5, 8), np.float64) * 0.5)


def test_activation_table_is_complete():
    issue_names = {"identity", "binary_step", "sigmoid", "tanh", "softsign", "sqnl", "relu", "brelu", "leaky_relu",
                   "rrelu", "elu", "bent_identity", "silu", "soft_clipping", "gelu", "softplus", "softmax"}
    assert issue_names == set(table.PARAMS)


# A fresh process with an empty kernel cache: a model of ReLU and identity layers (Dense, BatchNorm, dropout, train
# and eval) must not compile the row functions that hold every other activation's formulas.
ONLY_RELU_AND_IDENTITY = """
import numpy as np, fastdl
from fastdl.kernels.cpu import activations
generic = (activations.activate_row_in_place, activations.activation_grad_row_in_place,
           activations.activation_grad_row_call)
model = fastdl.Sequential(fastdl.Dense(8, 16, activation="relu", seed=0), fastdl.BatchNorm(16, activation="relu"),
                          fastdl.Dense(16, 16, seed=1, dropout=0.5), fastdl.BatchNorm(16), fastdl.Dense(16, 3, seed=2))
x = np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32)
model.backward(model(x))
model.eval()
model(x)
print(sum(len(f.signatures) for f in generic))
activations.activate_row_in_place(7, x[0], np.float32(0), np.float32(0), np.uint64(0), np.uint64(0), 0)
print(sum(len(f.signatures) for f in generic))  # the count sees a compilation
"""


def test_relu_and_identity_models_compile_no_other_activation(tmp_path):
    import os
    import subprocess
    import sys

    environment = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "FASTDL_BACKEND": "cpu"}
    # run outside the checkout: it imports the fastdl this process runs (the installed one)
    result = subprocess.run([sys.executable, "-c", ONLY_RELU_AND_IDENTITY], capture_output=True, text=True,
                            env=environment, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "1"], result.stdout


def test_activation_none_is_the_identity_and_other_types_are_refused(backend):
    x = backend.asarray(np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32))
    plain, identity = fastdl.Dense(4, 3, activation=None, seed=1), fastdl.Dense(4, 3, activation="identity", seed=1)
    assert plain.activation.name == "identity"
    np.testing.assert_array_equal(fastdl.to_numpy(plain(x)), fastdl.to_numpy(identity(x)))
    assert fastdl.BatchNorm(3, activation=None).activation.name == "identity"
    with pytest.raises(TypeError, match="activation must be a name, None or a fastdl.Activation, got int"):
        fastdl.Dense(4, 3, activation=1)
