"""Gradient accumulation: k micro-batches and one update equal one batch k times larger (models without batch norm
or dropout), through compile_step (compiled and layer by layer) and fit."""

import numpy as np
import pytest

import fastdl
from fastdl import losses, optim

# (rtol, atol) between k micro-batches and one large batch: the same sums, added in another order
TOLERANCES = {np.float32: (2e-5, 2e-6), np.float64: (1e-12, 1e-13)}


def build(dtype, clip=None):
    model = fastdl.Sequential(fastdl.Dense(6, 8, activation="tanh", seed=0, dtype=dtype),
                              fastdl.Dense(8, 3, seed=1, dtype=dtype))
    return model, optim.Adam(model.parameters(), lr=0.01, max_grad_norm=clip)


def data(dtype, sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [(fastdl.asarray(rng.standard_normal((n, 6)).astype(dtype)), fastdl.asarray(rng.integers(0, 3, n)))
            for n in sizes]


def values(model):
    return [fastdl.to_numpy(p.data).copy() for p in model.parameters()]


@pytest.mark.parametrize("sizes", [(16, 16, 16), (16, 16, 5)], ids=["equal", "unequal"])
@pytest.mark.parametrize("clip", [None, 0.05], ids=["plain", "clipped"])
def test_micro_batches_equal_one_large_batch(backend, dtype, sizes, clip):
    micro = data(dtype, sizes)
    model, optimizer = build(dtype, clip)
    step = fastdl.compile_step(model, losses.softmax_cross_entropy, optimizer, quiet=True,
                               accumulation_steps=len(sizes))
    for round_ in range(2):
        for index, (x, y) in enumerate(micro):
            step(x, y)
            assert step.updated == (index == len(sizes) - 1)
    accumulated = values(model)

    model, optimizer = build(dtype, clip)
    whole = fastdl.compile_step(model, losses.softmax_cross_entropy, optimizer, quiet=True)
    x = fastdl.asarray(np.concatenate([fastdl.to_numpy(x) for x, _ in micro]))
    y = fastdl.asarray(np.concatenate([fastdl.to_numpy(y) for _, y in micro]))
    for round_ in range(2):
        whole(x, y)
    rtol, atol = TOLERANCES[dtype]
    for got, want in zip(accumulated, values(model)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    assert optimizer.steps == 2


def test_compiled_accumulation_equals_the_layer_path_bit_for_bit():
    micro = data(np.float32, (16, 16, 7))
    results = []
    with fastdl.use_backend("cpu"):
        for compiled in (True, False):
            model, optimizer = build(np.float32, clip=0.05)
            step = fastdl.compile_step(model, losses.softmax_cross_entropy, optimizer, accumulation_steps=3)
            assert step.compiled
            if not compiled:
                model.eval()  # the compiled step trains layers in training mode only: this runs the layer path
            for x, y in micro:
                assert np.isfinite(step(x, y))
            results.append(values(model))
            assert optimizer.steps == 1
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_each_call_returns_its_micro_batch_mean_loss():
    x, y = data(np.float64, (10,))[0]
    model, optimizer = build(np.float64)
    expected, _ = losses.softmax_cross_entropy(model(x), y)
    step = fastdl.compile_step(model, losses.softmax_cross_entropy, optimizer, quiet=True, accumulation_steps=2)
    assert step(x, y) == pytest.approx(expected, rel=1e-12)


def test_flush_updates_with_what_is_accumulated():
    micro = data(np.float64, (8, 8))
    model, optimizer = build(np.float64)
    step = fastdl.compile_step(model, losses.softmax_cross_entropy, optimizer, quiet=True, accumulation_steps=3)
    assert not step.flush()  # nothing accumulated yet
    for x, y in micro:
        step(x, y)
    assert optimizer.steps == 0
    assert step.flush() and optimizer.steps == 1 and not step.flush()
    flushed = values(model)
    model, optimizer = build(np.float64)
    whole = fastdl.compile_step(model, losses.softmax_cross_entropy, optimizer, quiet=True)
    whole(fastdl.asarray(np.concatenate([fastdl.to_numpy(x) for x, _ in micro])),
          fastdl.asarray(np.concatenate([fastdl.to_numpy(y) for _, y in micro])))
    for got, want in zip(flushed, values(model)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


def test_fit_with_accumulation_equals_fit_with_larger_batches():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((70, 6)).astype(np.float64)  # 70 = 2 x 32 + 6: the last accumulation is partial
    y = rng.integers(0, 3, 70)
    results = []
    for batch_size, accumulation_steps in ((16, 2), (32, 1)):
        model, optimizer = build(np.float64)
        fastdl.fit(model, losses.softmax_cross_entropy, optimizer, (x, y), epochs=2, batch_size=batch_size, seed=3,
                   progress=False, accumulation_steps=accumulation_steps)
        results.append(values(model))
        assert optimizer.steps == 6  # 3 updates per epoch either way
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("steps", [0, -1, 1.5, True])
def test_bad_accumulation_steps_are_clear_errors(steps):
    model, optimizer = build(np.float32)
    with pytest.raises(ValueError, match="accumulation_steps must be a positive integer"):
        fastdl.compile_step(model, losses.softmax_cross_entropy, optimizer, accumulation_steps=steps)


def test_fit_refuses_accumulation_with_distributed_before_training():
    model, optimizer = build(np.float32)
    before = values(model)
    with pytest.raises(ValueError, match="accumulation_steps with distributed"):
        fastdl.fit(model, losses.softmax_cross_entropy, optimizer, (np.zeros((4, 6), np.float32), np.zeros(4, int)),
                   distributed=True, accumulation_steps=2, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(before, values(model)))


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_a_bad_grad_scale_changes_nothing(backend, scale):
    model, optimizer = build(np.float32)
    x, y = data(np.float32, (4,))[0]
    _, grad = losses.softmax_cross_entropy(model(x), y)
    model.backward(grad, input_grad=False)
    before = values(model)
    with pytest.raises(ValueError, match="grad_scale must be in"):
        optimizer.step(grad_scale=scale)
    assert optimizer.steps == 0 and all(np.array_equal(a, b) for a, b in zip(before, values(model)))
    assert all(not np.any(fastdl.to_numpy(state)) for state in optimizer.state[0].values())
