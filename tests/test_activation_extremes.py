"""Every smooth activation and its derivative over the whole finite range of each dtype, on every backend, against
mpmath (256 bits, 1,100 for soft clipping): within a few ulp of the true value, scaled by how much rounding the input alone moves it
(the condition number |z g'(z) / g(z)|), relative in the tails. Where the true value underflows, anything within
the smallest normal number is right. Sigmoid's, tanh's and ELU's derivatives are read from the output (as PyTorch's
sigmoid and tanh backward do), so they are held to the output's absolute precision instead."""

import functools

import numpy as np
import pytest

import fastdl

mpmath = pytest.importorskip("mpmath", reason="the extreme-value references need mpmath (pip install mpmath)")
mpf = mpmath.mpf
SQRT_2_OVER_PI = mpmath.sqrt(2 / mpmath.pi)
GELU_CUBIC = mpf("0.044715")


def sigmoid(z):
    return 1 / (1 + mpmath.exp(-z))


def softplus(z):
    return z + mpmath.log1p(mpmath.exp(-z)) if z > 0 else mpmath.log1p(mpmath.exp(z))


def normal_cdf(z):  # mpmath's ncdf overflows an internal float past |z| ~ 1e150; the tails are 0 and 1 long before
    return (mpf(1) if z > 0 else mpf(0)) if abs(z) > 1e5 else mpmath.ncdf(z)


def normal_pdf(z):
    return mpf(0) if abs(z) > 1e5 else mpmath.npdf(z)


def tanh_gelu_sigmoid(z):
    return sigmoid(2 * SQRT_2_OVER_PI * (z + GELU_CUBIC * z**3))


# name: (f, f'), straight from the definitions
REFERENCES = {
    "sigmoid": (sigmoid, lambda z: sigmoid(z) * sigmoid(-z)),
    "tanh": (mpmath.tanh, lambda z: mpmath.sech(z) ** 2),
    "softsign": (lambda z: z / (1 + abs(z)), lambda z: 1 / (1 + abs(z)) ** 2),
    "elu": (lambda z: z if z > 0 else mpmath.expm1(z), lambda z: mpf(1) if z > 0 else mpmath.exp(z)),
    "bent_identity": (lambda z: (mpmath.sqrt(z * z + 1) - 1) / 2 + z, lambda z: z / (2 * mpmath.sqrt(z * z + 1)) + 1),
    "silu": (lambda z: z * sigmoid(z), lambda z: sigmoid(z) * (1 + z * sigmoid(-z))),
    "soft_clipping": (lambda z: softplus(z) - softplus(z - 1), lambda z: sigmoid(z) - sigmoid(z - 1)),
    "gelu": (lambda z: z * normal_cdf(z), lambda z: normal_cdf(z) + z * normal_pdf(z)),
    "gelu_tanh": (lambda z: z * tanh_gelu_sigmoid(z),
                  lambda z: tanh_gelu_sigmoid(z) + 2 * z * tanh_gelu_sigmoid(z) * tanh_gelu_sigmoid(-z) * SQRT_2_OVER_PI
                  * (1 + 3 * GELU_CUBIC * z * z)),
    "softplus": (lambda z: z if z > 20 else softplus(z), lambda z: mpf(1) if z > 20 else sigmoid(z)),
}
FROM_OUTPUT = ("sigmoid", "tanh", "elu")
MAGNITUDES = [0, 1e-300, 1e-30, 1e-8, 1e-3, 0.1, 0.5, 1, 1.5, 2, 3, 5, 8, 10, 15, 20, 30, 50, 88.8, 91, 100, 500,
              710, 1e4, 1e8, 2e19, 1e30, 3e38, 1e155, 1e300, 1.7e308]


def points(dtype):
    values = sorted({sign * magnitude for magnitude in MAGNITUDES for sign in (1, -1)})
    values = np.array([v for v in values if abs(v) <= float(np.finfo(dtype).max)])
    return values.astype(dtype)


@functools.lru_cache(maxsize=None)
def expected(name, dtype):
    """(value, tolerance) of f and of f' at each point, computed once for every backend."""
    info = np.finfo(dtype)
    results = []
    # soft clipping's 1e308 - 1 needs 1,024 bits to stay apart from 1e308; 256 bits hold every other reference
    with mpmath.workprec(1100 if name == "soft_clipping" else 256):
        for index, function in enumerate(REFERENCES[name]):
            row = []
            for z in points(dtype):
                z = mpf(float(z))
                true = function(z)
                if index == 1 and name in FROM_OUTPUT:
                    tolerance = 4 * info.eps
                elif abs(true) < info.tiny:
                    tolerance = info.tiny
                else:
                    step = abs(z) * mpf(2) ** -80
                    slope = (function(z + step) - function(z - step)) / (2 * step) if z != 0 else 0
                    condition = 1 + abs(z * slope / true)
                    tolerance = 8 * info.eps * condition * abs(true)
                row.append((float(true), float(tolerance)))
            results.append(row)
    return results


@pytest.mark.parametrize("name", REFERENCES)
def test_activation_and_derivative_are_right_over_the_whole_finite_range(backend, dtype, name):
    z = points(dtype)
    layer = fastdl.Activation("gelu", approximate="tanh") if name == "gelu_tanh" else fastdl.Activation(name)
    with np.errstate(all="ignore"):
        y = fastdl.to_numpy(layer(backend.asarray(z.reshape(1, -1)))).ravel().copy()
        derivative = fastdl.to_numpy(layer.backward(backend.asarray(np.ones((1, z.size), dtype)))).ravel()
    wrong = []
    values, derivatives = expected(name, dtype)
    for label, computed, reference in (("f", y, values), ("f'", derivative, derivatives)):
        for point, value, (true, tolerance) in zip(z, computed, reference):
            if abs(true) > float(np.finfo(dtype).max):  # beyond the dtype: overflowing to inf is right
                right = value == np.copysign(np.inf, true)
            else:
                right = np.isfinite(value) and abs(float(value) - true) <= tolerance
            if not right:
                wrong.append(f"{label}({point:.4g}) = {value:.7g}, true {true:.7g}")
    assert not wrong, "; ".join(wrong)
