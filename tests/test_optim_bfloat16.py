"""Adam's bfloat16 moments: stochastic rounding that is unbiased and reproducible, the same on every backend,
a second moment that still decays, and state that refuses to mix with float32 moments."""

import numpy as np
import pytest
from numba import njit

import fastdl
from fastdl import optim
from fastdl.kernels import bfloat16
from fastdl.kernels.cpu.bfloat16 import narrow

SHAPES = [(5, 3), (3,), (2, 3, 4), (1,)]


def make_parameters(seed=0):
    rng = np.random.default_rng(seed)
    return [fastdl.Parameter(fastdl.asarray(rng.standard_normal(shape).astype(np.float32))) for shape in SHAPES]


def train(steps, seed=1, **options):
    """Parameters and widened moments after ``steps`` AdamW steps on fixed random gradients, on the active backend."""
    parameters = make_parameters()
    optimizer = optim.AdamW(parameters, lr=0.01, moments_dtype="bfloat16", **options)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        for parameter in parameters:
            parameter.grad = fastdl.asarray(rng.standard_normal(parameter.shape).astype(np.float32))
        optimizer.step()
    moments = {name: bfloat16.to_float32(fastdl.to_numpy(array)) for name, array in optimizer.state[0].items()}
    return [fastdl.to_numpy(p.data).copy() for p in parameters], moments, optimizer


def test_every_backend_matches_the_reference(backend):
    expected_parameters, expected_moments, _ = train(30, max_grad_norm=2.0, l1=1e-3)
    with fastdl.use_backend(backend.name):
        parameters, moments, optimizer = train(30, max_grad_norm=2.0, l1=1e-3)
    assert all(array.dtype == np.uint16 for array in optimizer.state[0].values())
    if backend.name == "gpu":  # fused multiply-adds: a float32 m or v may differ in its last bit, and round apart
        for got, want in zip(parameters, expected_parameters):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        for name in moments:
            np.testing.assert_allclose(moments[name], expected_moments[name], rtol=2.0 ** -7)
    else:  # the same float32 operations in the same order, the same draws: bit for bit
        for got, want in zip(parameters, expected_parameters):
            np.testing.assert_array_equal(got, want)
        for name in moments:
            np.testing.assert_array_equal(moments[name], expected_moments[name])


@njit(cache=True)
def _narrow_all(values, random16, out):
    for i in range(values.size):
        out[i] = narrow(values[i], random16[i])


def test_numba_rounding_is_the_reference_bit_for_bit():
    rng = np.random.default_rng(2)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 3.4028235e38, -3.4028235e38, 1e-45, 1e-39,
                         1.0, -1.0], np.float32)
    values = np.concatenate([specials, rng.standard_normal(2000).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 2000)])
    values = values.astype(np.float32)
    random16 = rng.integers(0, 1 << 16, values.size).astype(np.uint64)
    numba_bits = np.empty(values.size, np.uint16)
    _narrow_all(values, random16, numba_bits)
    np.testing.assert_array_equal(numba_bits, bfloat16.round_stochastic(values, random16))
    widened = bfloat16.to_float32(numba_bits)
    assert np.isnan(widened[4]) and np.isnan(widened[5])  # a NaN stays a NaN
    np.testing.assert_array_equal(widened[[2, 3]], [np.inf, -np.inf])
    assert widened[0] == 0 and widened[10] == 1 and widened[11] == -1  # representable values are kept exactly


def test_stochastic_rounding_is_unbiased():
    """Each value, rounded with the draws of 16384 elements (top halves, as for m), averages to itself within 6
    standard errors; the low halves (as for v) are checked the same way below."""
    values = np.random.default_rng(3).uniform(1.0, 2.0, 32).astype(np.float32)
    draws = 1 << 14
    means = np.empty(values.size)
    for k, value in enumerate(values):
        random16 = bfloat16.rounding_bits(bfloat16.ROUNDING_SEED, k, draws) >> np.uint32(16)
        means[k] = bfloat16.to_float32(bfloat16.round_stochastic(np.full(draws, value), random16)).astype(np.float64).mean()
    ulp = 2.0 ** -7  # of a bfloat16 in [1, 2)
    assert np.all(np.abs(means - values) < 6 * ulp / 2 / np.sqrt(draws))
    low = bfloat16.rounding_bits(bfloat16.ROUNDING_SEED, 99, draws) & np.uint32(0xFFFF)
    mean = bfloat16.to_float32(bfloat16.round_stochastic(np.full(draws, values[0]), low)).astype(np.float64).mean()
    assert abs(mean - values[0]) < 6 * ulp / 2 / np.sqrt(draws)
    assert np.any(means != np.floor(values / ulp) * ulp)  # not plain truncation


def test_second_moment_decays_where_round_to_nearest_would_freeze_it(backend):
    v = np.float32(bfloat16.to_float32(np.array([0x3A83], np.uint16))[0])  # a bfloat16 near 0.001
    nearest = (np.float32(0.999) * v).view(np.uint32) + np.uint32(0x7FFF) + ((v.view(np.uint32) >> 16) & 1)
    assert nearest >> 16 == 0x3A83  # round-to-nearest stores 0.999 v as v again: v would never decay
    n = 4096
    parameter = fastdl.Parameter(fastdl.asarray(np.zeros(n, np.float32)))
    optimizer = optim.Adam([parameter], lr=1e-3, moments_dtype="bfloat16")
    parameter.grad[...] = 1
    optimizer.step()  # v = (1 - 0.999) * 1 = 0.001
    parameter.grad[...] = 0
    for _ in range(1000):
        optimizer.step()
    v = bfloat16.to_float32(fastdl.to_numpy(optimizer.state[0]["exp_avg_sq"])).astype(np.float64)
    expected = 0.001 * 0.999 ** 1000
    assert abs(v.mean() / expected - 1) < 0.01
    assert v.max() < 0.5 * 0.001  # every element decayed (by 63% on average), not just the mean


def test_state_is_half_the_size_and_does_not_load_into_float_moments(backend):
    """(Saving and resuming bit for bit: tests/test_optim.py's round trip runs with bfloat16 moments too.)"""
    _, _, optimizer = train(3)
    assert optimizer.state[0]["exp_avg"].nbytes == 2 * sum(int(np.prod(s)) for s in SHAPES)
    float_moments = optim.AdamW(make_parameters())
    with pytest.raises(ValueError, match=r"AdamW.load_state_dict: 0.exp_avg holds uint16, expected float32 "
                                         r"\(was moments_dtype different\?\)"):
        float_moments.load_state_dict(optimizer.state_dict())


@pytest.mark.parametrize("make,error,message", [
    (lambda p: optim.Adam(p, moments_dtype="float16"), ValueError,
     r"Adam: moments_dtype must be None \(the parameters' dtype\) or 'bfloat16', got 'float16'"),
    (lambda p: optim.AdamW(p, moments_dtype="bfloat16", amsgrad=True), ValueError,
     r"AdamW: moments_dtype='bfloat16' does not support amsgrad"),
    (lambda p: optim.Adam(p + [fastdl.Parameter(fastdl.asarray(np.zeros(2)))], moments_dtype="bfloat16"), TypeError,
     r"Adam: moments_dtype='bfloat16' needs float32 parameters, parameter 4 .* is float64"),
])
def test_bad_options_are_clear_errors_and_move_nothing(make, error, message):
    parameters = make_parameters()
    with pytest.raises(error, match=message):
        make(parameters)
    assert all(parameter.data.base is None for parameter in parameters)  # still their own arrays, not flat views
