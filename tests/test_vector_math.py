"""The CPU kernels' vectorizable exp, expm1, log1p, tanh, erf and normal distribution against numpy and math: ulps
and specials."""

import math

import numpy as np
import pytest
from numba import njit

from fastdl.kernels.cpu.vector_math import erf, exp, expm1, log1p, multiply_add, normal_cdf_pdf, tanh


def _exp_loop(values, out):
    for i in range(values.shape[0]):
        out[i] = exp(values[i])


# as the kernels compile it: plainly, and with fused multiply-adds allowed (the softmax cross-entropy kernel)
LOOPS = {"plain": njit(_exp_loop), "contract": njit(fastmath={"contract"})(_exp_loop)}
RANGES = {np.float32: (-110.0, 95.0), np.float64: (-750.0, 715.0)}  # past both ends: 0 and inf


@pytest.mark.parametrize("compiled", LOOPS, ids=list(LOOPS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_exp_is_within_two_ulp_of_numpy_over_the_whole_range(dtype, compiled):
    low, high = RANGES[dtype]
    values = np.concatenate([np.linspace(low, high, 400_001), np.random.default_rng(0).standard_normal(100_000) * 5,
                             [0.0, -0.0, 1e-30, -1e-30]]).astype(dtype)
    out = np.empty_like(values)
    LOOPS[compiled](values, out)
    with np.errstate(over="ignore"):  # the reference overflows to inf past the top, as exp must
        expected = np.exp(values.astype(np.longdouble)).astype(dtype)  # correctly rounded to dtype, or nearly
    normal = np.isfinite(expected) & (expected >= np.finfo(dtype).tiny)
    ulps = np.abs(out[normal] - expected[normal]) / np.spacing(expected[normal])
    assert ulps.max() <= 2, (values[normal][ulps.argmax()], ulps.max())
    subnormal = ~normal & np.isfinite(expected)
    assert subnormal.sum() > 100  # the subnormal range and exact zeros were sampled
    np.testing.assert_array_less(np.abs(out[subnormal] - expected[subnormal]),
                                 2.5 * np.finfo(dtype).smallest_subnormal)
    np.testing.assert_array_equal(out[np.isinf(expected)], np.inf)


@njit
def _multiply_add_loop(a, b, c, out):
    for i in range(out.shape[0]):
        out[i] = multiply_add(a[i], b[i], c[i])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_multiply_add_rounds_once_also_when_vectorized(dtype):
    # (1 + 2^-k)^2 - (1 + 2^-(k-1)) = 2^-2k exactly; the product rounded first loses it and gives 0
    k = 13 if dtype == np.float32 else 27
    a = np.full(37, 1 + 2.0 ** -k, dtype)  # 37: a vector body and a scalar tail
    c = np.full(37, -(1 + 2.0 ** -(k - 1)), dtype)
    out = np.empty_like(a)
    _multiply_add_loop(a, a, c, out)
    np.testing.assert_array_equal(out, np.full(37, 2.0 ** (-2 * k), dtype))
    assert (a * a + c == 0).all()  # numpy's two roundings: the case really tells one rounding from two


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_exp_of_specials(dtype):
    values = np.array([np.nan, np.inf, -np.inf, 0.0, 1.0], dtype)
    out = np.empty_like(values)
    LOOPS["plain"](values, out)
    assert np.isnan(out[0])
    np.testing.assert_array_equal(out[1:4], [np.inf, 0.0, 1.0])
    assert out.dtype == dtype and abs(out[4] - np.e) <= np.spacing(dtype(np.e))


def _tanh_loop(values, out):
    for i in range(values.shape[0]):
        out[i] = tanh(values[i])


def _erf_loop(values, out):
    for i in range(values.shape[0]):
        out[i] = erf(values[i])


# float32 tanh and erf: loop, the range where they are not yet +-1 to float32, and a float64 reference
ODD_FUNCTIONS = {"tanh": (_tanh_loop, 20.0, np.tanh), "erf": (_erf_loop, 6.0, np.vectorize(math.erf))}


@pytest.mark.parametrize("name", ODD_FUNCTIONS)
def test_float32_tanh_and_erf_are_within_two_ulp_of_float64(name):
    loop, end, reference = ODD_FUNCTIONS[name]
    values = np.concatenate([np.linspace(-end, end, 240_001), np.geomspace(1e-30, end, 20_001),
                             -np.geomspace(1e-30, end, 20_001)]).astype(np.float32)
    out = np.empty_like(values)
    njit(error_model="numpy")(loop)(values, out)  # as the activation kernels compile it
    expected = reference(values.astype(np.float64)).astype(np.float32)
    ulps = np.abs(out - expected) / np.spacing(np.abs(expected))
    assert ulps.max() <= 2, (values[ulps.argmax()], ulps.max())
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], np.float32)
    njit(loop)(specials, out[:5])
    np.testing.assert_array_equal(np.signbit(out[:2]), [False, True])
    np.testing.assert_array_equal(out[2:4], [1.0, -1.0])
    assert np.isnan(out[4])


# float64 tanh and erf: the range where they are not yet +-1 to float64, and the reference (np.tanh in long double
# where numpy has it; Python's math.erf, within 1 ulp of erf)
FLOAT64_ODD_FUNCTIONS = {"tanh": (20.0, lambda v: np.tanh(v.astype(np.longdouble)).astype(np.float64)),
                         "erf": (6.5, np.vectorize(math.erf))}


@pytest.mark.parametrize("name", FLOAT64_ODD_FUNCTIONS)
def test_float64_tanh_and_erf_are_within_two_ulp(name):
    loop = ODD_FUNCTIONS[name][0]
    end, reference = FLOAT64_ODD_FUNCTIONS[name]
    values = np.concatenate([np.linspace(-end, end, 400_001), np.geomspace(1e-300, end, 50_001),
                             -np.geomspace(1e-300, end, 50_001), [400.0, -800.0]])
    out = np.empty_like(values)
    njit(error_model="numpy")(loop)(values, out)  # as the activation kernels compile it
    expected = reference(values)
    ulps = np.abs(out - expected) / np.spacing(np.abs(expected))
    assert ulps.max() <= 2, (values[ulps.argmax()], ulps.max())
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan])
    njit(loop)(specials, out[:5])
    np.testing.assert_array_equal(np.signbit(out[:2]), [False, True])
    np.testing.assert_array_equal(out[2:4], [1.0, -1.0])
    assert np.isnan(out[4])


def _normal_cdf_pdf_loop(values, cdf, pdf):
    for i in range(values.shape[0]):
        cdf[i], pdf[i] = normal_cdf_pdf(values[i])


def test_float32_normal_cdf_and_pdf_are_accurate_in_relative_terms_down_the_tails():
    """GELU's Phi and phi in float32: within 8 and 4 ulp of float64 over +-16, the lower tail included (down to
    Phi(-13) ~ 6e-39), where 1 + erf(x / sqrt 2) would have lost every digit."""
    values = np.concatenate([np.linspace(-16, 16, 320_001), np.geomspace(1e-30, 16, 20_001),
                             -np.geomspace(1e-30, 16, 20_001)]).astype(np.float32)
    cdf, pdf = np.empty_like(values), np.empty_like(values)
    njit(error_model="numpy")(_normal_cdf_pdf_loop)(values, cdf, pdf)  # as the activation kernels compile it
    x = values.astype(np.float64)
    expected_cdf = 0.5 * np.vectorize(math.erfc)(-x / math.sqrt(2.0))
    expected_pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    for name, out, expected, bound in [("cdf", cdf, expected_cdf, 8), ("pdf", pdf, expected_pdf, 4)]:
        normal = expected >= np.finfo(np.float32).tiny
        assert normal.sum() > 300_000 and expected[normal].min() < 1e-37  # the far tail was sampled
        ulps = np.abs(out[normal] - expected[normal]) / np.spacing(expected[normal].astype(np.float32))
        assert ulps.max() <= bound, (name, values[normal][ulps.argmax()], ulps.max())
        np.testing.assert_array_less(np.abs(out[~normal] - expected[~normal]), np.finfo(np.float32).tiny)
    specials = np.array([np.inf, -np.inf, np.nan, -0.0], np.float32)
    njit(_normal_cdf_pdf_loop)(specials, cdf[:4], pdf[:4])
    np.testing.assert_array_equal(cdf[:2], [1.0, 0.0])
    np.testing.assert_array_equal(pdf[:2], [0.0, 0.0])
    assert np.isnan(cdf[2]) and np.isnan(pdf[2]) and cdf[3] == 0.5


def test_float64_normal_cdf_and_pdf_are_erf_and_exp():
    values = np.linspace(-8, 8, 100_001)
    cdf, pdf = np.empty_like(values), np.empty_like(values)
    njit(error_model="numpy")(_normal_cdf_pdf_loop)(values, cdf, pdf)
    np.testing.assert_allclose(cdf, 0.5 * (1 + np.vectorize(math.erf)(values / math.sqrt(2.0))), rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(pdf, np.exp(-0.5 * values * values) / math.sqrt(2.0 * math.pi), rtol=1e-14)


def _expm1_loop(values, out):
    for i in range(values.shape[0]):
        out[i] = expm1(values[i])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_expm1_is_within_two_ulp_of_numpy_and_exact_near_zero(dtype):
    low, high = RANGES[dtype]
    values = np.concatenate([np.linspace(low, high, 400_001), np.geomspace(1e-30, 5, 50_001),
                             -np.geomspace(1e-30, 5, 50_001)]).astype(dtype)
    out = np.empty_like(values)
    njit(error_model="numpy")(_expm1_loop)(values, out)
    with np.errstate(over="ignore"):
        expected = np.expm1(values.astype(np.longdouble)).astype(dtype)
    finite = np.isfinite(expected)
    ulps = np.abs(out[finite] - expected[finite]) / np.spacing(np.abs(expected[finite]))
    assert ulps.max() <= 2, (values[finite][ulps.argmax()], ulps.max())
    np.testing.assert_array_equal(out[~finite], np.inf)
    specials = np.array([0.0, -0.0, -np.inf, np.nan], dtype)
    njit(_expm1_loop)(specials, out[:4])
    np.testing.assert_array_equal(np.signbit(out[:2]), [False, True])
    assert out[2] == -1.0 and np.isnan(out[3])


def _log1p_loop(values, out):
    for i in range(values.shape[0]):
        out[i] = log1p(values[i])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_log1p_is_within_two_ulp_of_numpy_from_minus_one_to_the_largest_float(dtype):
    tiny, largest = float(np.finfo(dtype).smallest_subnormal), float(np.finfo(dtype).max)
    # (geomspace up to the largest float overflows inside numpy: it goes to a quarter of it, then the largest)
    values = np.concatenate([np.linspace(-1, 10, 400_001)[1:], np.geomspace(tiny, largest / 4, 200_001), [largest],
                             -np.geomspace(tiny, 1 - np.finfo(dtype).epsneg, 200_001),
                             np.random.default_rng(0).standard_normal(100_000)]).astype(dtype)
    values = values[values > -1]
    out = np.empty_like(values)
    njit(error_model="numpy")(_log1p_loop)(values, out)  # as the activation kernels compile it
    expected = np.log1p(values.astype(np.longdouble)).astype(dtype)
    ulps = np.abs(out - expected) / np.spacing(np.abs(expected))
    assert ulps.max() <= 2, (values[ulps.argmax()], ulps.max())
    specials = np.array([0.0, -0.0, -1.0, -2.0, np.inf, -np.inf, np.nan, tiny, -tiny], dtype)
    njit(_log1p_loop)(specials, out[:9])
    np.testing.assert_array_equal(np.signbit(out[:2]), [False, True])
    np.testing.assert_array_equal(out[[2, 4, 7, 8]], [-np.inf, np.inf, tiny, -tiny])
    assert np.isnan(out[[3, 5, 6]]).all()
