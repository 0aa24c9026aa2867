"""BatchNorm, Dropout and Standardize on every backend: reference, finite differences, PyTorch, bad input."""

import re

import numpy as np
import pytest

import fastdl

from conftest import assert_close
from fastdl.kernels.ops import ActivationArgs


def _batch(shape, dtype, mean=0.0, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 2 + mean).astype(dtype)


def _run_batchnorm(backend_name, x, grad_out, steps=3, **kwargs):
    with fastdl.use_backend(backend_name):
        bn = fastdl.BatchNorm(x.shape[1], dtype=x.dtype, seed=1, **kwargs)
        if bn.affine:
            bn.weight.data[...] = fastdl.asarray(np.linspace(0.5, 1.5, x.shape[1]))
            bn.bias.data[...] = fastdl.asarray(np.linspace(-0.2, 0.2, x.shape[1]))
        for step in range(steps):
            y = bn(x + step).copy()
        grad_x = bn.backward(grad_out).copy()
        grads = [p.grad.copy() for p in bn.parameters()]
        bn.eval()
        y_eval = bn(x).copy()
        grad_eval = bn.backward(grad_out).copy()
        tracked = fastdl.to_numpy(bn.num_batches_tracked)
        assert tracked.tolist() == [steps if kwargs.get("track_running_stats", True) else 0]
        return y, grad_x, grads, bn.running_mean.copy(), bn.running_var.copy(), y_eval, grad_eval


@pytest.mark.parametrize("kwargs", [{}, {"activation": "relu"}, {"activation": "silu"}, {"momentum": None},
                                    {"affine": False}, {"track_running_stats": False}, {"activation": "tanh", "momentum": 0.3}],
                         ids=["plain", "relu", "silu", "cumulative", "no_affine", "no_running", "tanh_momentum"])
def test_batchnorm_matches_reference(backend, dtype, kwargs):
    x = _batch((130, 7), dtype)
    grad_out = _batch((130, 7), dtype, seed=1)
    expected = _run_batchnorm("numpy", x, grad_out, **kwargs)
    actual = _run_batchnorm(backend.name, backend.asarray(x), backend.asarray(grad_out), **kwargs)
    for name, a, e in zip(["y", "grad_x", "grads", "running_mean", "running_var", "y_eval", "grad_eval"], actual, expected):
        for a_item, e_item in (zip(a, e) if name == "grads" else [(a, e)]):
            assert_close(a_item, e_item, dtype, gemm=True)


@pytest.mark.parametrize("activation", ["identity", "relu", "elu", "gelu"])
def test_batchnorm_train_backward_matches_finite_differences(backend, activation):
    bn = fastdl.BatchNorm(4, activation=activation, dtype="float64")
    bn.weight.data[...] = fastdl.asarray(np.array([0.5, 1.0, 1.5, -0.7]))
    bn.bias.data[...] = fastdl.asarray(np.array([0.1, -0.2, 0.3, 0.05]))
    assert fastdl.testing.gradcheck(bn, _batch((9, 4), np.float64))


def test_batchnorm_eval_backward_matches_finite_differences(backend):
    bn = fastdl.BatchNorm(4, activation="tanh", dtype="float64")
    bn(backend.asarray(_batch((16, 4), np.float64, seed=3)))
    bn.eval()
    assert fastdl.testing.gradcheck(bn, _batch((5, 4), np.float64))


def test_batchnorm_large_mean_float32_stays_accurate(backend):
    x64 = _batch((512, 6), np.float64, mean=1e4, seed=4) / 2  # values around 1e4, unit spread
    bn32 = fastdl.BatchNorm(6)
    y32 = fastdl.to_numpy(bn32(backend.asarray(x64.astype(np.float32))))
    with fastdl.use_backend("numpy"):
        y64 = fastdl.BatchNorm(6, dtype="float64")(x64.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(y32, y64, atol=2e-4)


def test_batchnorm_one_layer_across_batch_shapes_layouts_and_backends(backend):
    """The layer keeps its buffers per batch shape and backend: a layer that alternates them (and gets a
    non-contiguous input) gives the results of a fresh layer at every step, forward and backward."""
    steps = [(130, 7, "C", backend.name), (64, 7, "C", backend.name), (130, 7, "F", backend.name),
             (64, 7, "C", "numpy" if backend.name == "cpu" else backend.name), (64, 7, "C", backend.name)]
    layer = fastdl.BatchNorm(7, activation="relu")
    for index, (rows, columns, order, name) in enumerate(steps):
        x = np.asarray(_batch((rows, columns), np.float32, seed=index), order=order)
        grad_out = _batch((rows, columns), np.float32, seed=20 + index)
        with fastdl.use_backend(name) as active:
            x_in = active.asarray(x) if order == "C" else active.asarray(x).T.copy().T  # F order: a copy inside
            y = fastdl.to_numpy(layer(x_in)).copy()
            grad_x = fastdl.to_numpy(layer.backward(active.asarray(grad_out))).copy()
        with fastdl.use_backend("numpy"):
            fresh = fastdl.BatchNorm(7, activation="relu")
            assert_close(y, fresh(np.ascontiguousarray(x)), np.float32, gemm=True)
            assert_close(grad_x, fresh.backward(grad_out), np.float32, gemm=True)


BATCHNORM_CHANGES = {
    "optimizer": lambda layer, backend: fastdl.optim.SGD(layer.parameters(), lr=0.1),  # moves weight and bias
    "eval": lambda layer, backend: layer.eval(),
    "activation": lambda layer, backend: setattr(layer, "activation", fastdl.ActivationSpec("elu", alpha=0.5)),
    "eps": lambda layer, backend: setattr(layer, "eps", 0.25),
    "momentum": lambda layer, backend: setattr(layer, "momentum", None),
    "running": lambda layer, backend: setattr(layer, "running_mean", backend.asarray(np.full(5, 0.5, np.float32))),
    "weights": lambda layer, backend: layer.weight.data.__setitem__(Ellipsis, backend.asarray(np.full(5, 2.0))),
    "threads": lambda layer, backend: fastdl.set_num_threads(fastdl.get_num_threads()[1]),
}


@pytest.mark.parametrize("change", BATCHNORM_CHANGES)
def test_a_batchnorm_that_ran_follows_changes_to_its_arrays_mode_and_settings(backend, change):
    """The layer keeps its training kernels bound between calls (``_BatchNormBinding``): whatever changes after a
    call, the next forward and backward are those of a fresh layer with the new settings and state."""
    rng = np.random.default_rng(7)
    layer = fastdl.BatchNorm(5, activation="relu", seed=3)
    for rows in (6, 6, 4):  # bound at 6 rows, reused, bound again at 4
        layer(backend.asarray(rng.standard_normal((rows, 5)).astype(np.float32)))
        layer.backward(backend.asarray(np.ones((rows, 5), np.float32)))
    BATCHNORM_CHANGES[change](layer, backend)
    x, grad_out = rng.standard_normal((4, 5)).astype(np.float32), rng.standard_normal((4, 5)).astype(np.float32)
    with fastdl.use_backend("numpy"):
        fresh = fastdl.BatchNorm(5, eps=layer.eps, momentum=layer.momentum, activation=layer.activation, seed=3)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            getattr(fresh, name)[...] = fastdl.to_numpy(getattr(layer, name))
        fresh.weight.data[...] = fastdl.to_numpy(layer.weight.data)
        fresh.bias.data[...] = fastdl.to_numpy(layer.bias.data)
        fresh.counter = layer.counter
        fresh.train(layer.training)
        expected_y = fresh(x).copy()
        expected_grad_x = fresh.backward(grad_out).copy()
    y = fastdl.to_numpy(layer(backend.asarray(x))).copy()
    grad_x = fastdl.to_numpy(layer.backward(backend.asarray(grad_out))).copy()
    assert_close(y, expected_y, np.float32)
    assert_close(grad_x, expected_grad_x, np.float32)
    assert_close(fastdl.to_numpy(layer.weight.grad), fresh.weight.grad, np.float32)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert_close(fastdl.to_numpy(getattr(layer, name)), getattr(fresh, name), np.float32)


def test_a_batchnorm_back_from_the_general_path_differentiates_its_last_forward(backend):
    """A bound forward records what the backward reads besides x only when its binding changes: after an eval
    forward (the general path), the next training forward must record its own again, for the bound backward and for
    the general one (a strided grad_out) alike."""
    rng = np.random.default_rng(8)
    layer = fastdl.BatchNorm(5, activation="tanh", seed=3)
    for training in (True, False, True):
        layer.train(training)
        layer(backend.asarray(rng.standard_normal((6, 5)).astype(np.float32)))
        layer.backward(backend.asarray(np.ones((6, 5), np.float32)))
    x = rng.standard_normal((6, 5)).astype(np.float32)
    grad_out = rng.standard_normal((6, 10)).astype(np.float32)[:, ::2]
    for grad in (np.ascontiguousarray(grad_out), grad_out):  # the bound backward, then the general one
        with fastdl.use_backend("numpy"):
            fresh = fastdl.BatchNorm(5, activation="tanh", seed=3)
            fresh.weight.data[...] = fastdl.to_numpy(layer.weight.data)
            fresh(x)
            expected_grad_x = fresh.backward(grad_out).copy()
        layer(backend.asarray(x))
        grad_x = fastdl.to_numpy(layer.backward(backend.asarray(grad))).copy()
        assert_close(grad_x, expected_grad_x, np.float32)


def test_batchnorm_statistics_do_not_depend_on_thread_count():
    x = _batch((4096, 128), np.float32, mean=3.0)  # large enough for the parallel kernel
    results = []
    _, numba_threads = fastdl.get_num_threads()
    try:
        for threads in (1, numba_threads):
            fastdl.set_num_threads(threads)
            with fastdl.use_backend("cpu"):
                bn = fastdl.BatchNorm(128)
                results.append((bn(x).copy(), bn.running_var.copy()))
    finally:
        fastdl.set_num_threads(numba_threads)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_numba_threads_reads_what_numba_get_num_threads_says():
    """The kernels' lock-free read of the thread count follows numba.set_num_threads (per Python thread)."""
    import threading

    import numba

    from fastdl.kernels.cpu.compile_twice import numba_threads

    before = numba.get_num_threads()
    seen = []
    try:
        for count in (1, before):
            numba.set_num_threads(count)
            assert numba_threads() == numba.get_num_threads() == count
        numba.set_num_threads(1)
        other = threading.Thread(target=lambda: seen.append((numba_threads(), numba.get_num_threads())))
        other.start()
        other.join()
        assert seen[0][0] == seen[0][1] and numba_threads() == 1
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("activation", ["identity", "relu", "tanh"])
def test_batchnorm_parallel_kernels_give_the_same_result_for_any_chunk_count(activation):
    """The CPU kernels split x into one chunk of rows per thread and sum in several parallel passes; each pass
    must see all of the previous one (a fused or racing pass reads stale sums). The buffers start as NaN and
    every step has new data, so a pass that reads what it should not shows up as a wrong or NaN result."""
    from fastdl.kernels.cpu import normalization as kernels
    from fastdl.kernels.reference import normalization as reference

    # float32: the parallel kernels the rest of the suite compiles too (a float64 set cost half a minute per
    # activation in CI); the chunk counts are compared bit for bit either way
    rows, columns, dtype = 1000, 96, np.float32  # 16 blocks, 4 groups: a chunk count of 3 splits them unevenly
    code, params = fastdl.activations.resolve(activation).kernel_args(dtype, True)
    weight, bias = np.linspace(0.5, 1.5, columns, dtype=dtype), np.linspace(-0.2, 0.2, columns, dtype=dtype)

    def step(kernel_module, chunks, x, grad_y, buffers):
        workspace, scratch, totals = buffers
        args = (weight, bias, 1e-5, 0.1, np.zeros(columns, dtype), np.ones(columns, dtype), np.zeros(1, np.int64), code,
                params, 7, 3)
        mean, inv_std, y = np.empty(columns), np.empty(columns), np.empty_like(x)
        running = (args[4], args[5], args[6])
        grad_x, grad_weight, grad_bias = np.empty_like(x), np.empty(columns, dtype), np.empty(columns, dtype)
        if kernel_module is None:
            activation = ActivationArgs(code, params, 7, 3)
            assert reference.batchnorm_forward_train(x, *args[:7], activation, mean, inv_std, y, *buffers)
            reference.batchnorm_backward(x, grad_y, y, weight, bias, mean, inv_std, activation, True, grad_x,
                                         grad_weight, grad_bias, False, *buffers)
        else:
            any_activation = kernels.any_activation_for(code)
            assert kernels.forward_train_parallel(x, chunks, *args[:9], np.uint64(7), np.uint64(3), mean, inv_std, y,
                                                  *buffers, any_activation)
            kernels.backward_parallel(x, chunks, grad_y, y, weight, bias, mean, inv_std, code, params, np.uint64(7),
                                      np.uint64(3), True, grad_x, grad_weight, grad_bias, False, *buffers,
                                      any_activation)
        return [y, grad_x, grad_weight, grad_bias, *running]

    blocks = kernels.blocks_for(rows)
    results = {}
    for chunks in (1, 2, 3, 5):
        buffers = [np.full((2 * blocks + 4, columns), np.nan, dtype), np.full((2 * blocks, columns), np.nan, dtype),
                   np.full(kernels.totals_shape(rows, columns), np.nan)]
        for seed in range(3):
            x, grad_y = _batch((rows, columns), dtype, mean=seed, seed=seed), _batch((rows, columns), dtype,
                                                                                    seed=10 + seed)
            actual = step(kernels, chunks, x, grad_y, buffers)
            expected = step(None, 1, x, grad_y, buffers)
            for a, e in zip(actual, expected):
                np.testing.assert_allclose(a, e, rtol=2e-4, atol=2e-5)
        results[chunks] = actual
    for chunks in (2, 3, 5):  # bit for bit: the sums' order does not depend on the split
        for a, b in zip(results[1], results[chunks]):
            np.testing.assert_array_equal(a, b)


def test_batchnorm_against_torch(dtype):
    torch = pytest.importorskip("torch")
    x = _batch((64, 5), dtype, mean=2.0)
    grad_out = _batch((64, 5), dtype, seed=2)
    reference = torch.nn.BatchNorm1d(5, momentum=0.2).to(torch.float64 if dtype == np.float64 else torch.float32)
    bn = fastdl.BatchNorm(5, momentum=0.2, dtype=dtype)
    for step in range(3):
        t = torch.tensor(x + step, requires_grad=True)
        out = reference(t)
        y = bn(x + step)
    out.backward(torch.tensor(grad_out))
    grad_x = bn.backward(grad_out)
    rtol, atol = (1e-4, 1e-5) if dtype == np.float32 else (1e-10, 1e-12)
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(grad_x, t.grad.numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(bn.weight.grad, reference.weight.grad.numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(bn.bias.grad, reference.bias.grad.numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(bn.running_mean, reference.running_mean.numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(bn.running_var, reference.running_var.numpy(), rtol=rtol, atol=atol)
    reference.eval()
    bn.eval()
    np.testing.assert_allclose(bn(x), reference(torch.tensor(x)).detach().numpy(), rtol=rtol, atol=atol)


def _state(bn):
    return [fastdl.to_numpy(a).copy() for a in (bn.running_mean, bn.running_var, bn.num_batches_tracked, bn.weight.data,
                                               bn.weight.grad)]


@pytest.mark.parametrize("bad,error,message", [
    (np.ones((1, 3), np.float32), ValueError, r"BatchNorm\(3\): training needs more than 1 sample per batch .* \(1, 3\)"),
    (np.ones((4, 5), np.float32), ValueError, r"BatchNorm\(3\): x must have 3 features in its last axis, got shape \(4, 5\)"),
    (np.ones((4, 3, 1), np.float32), ValueError, r"BatchNorm\(3\): x must have 2 dimensions, got shape \(4, 3, 1\)"),
    (np.full((4, 3), np.nan, np.float32), ValueError, r"BatchNorm\(3\): x contains NaN or Inf"),
])
def test_batchnorm_bad_input_leaves_state_untouched(backend, bad, error, message):
    bn = fastdl.BatchNorm(3)
    bn(backend.asarray(_batch((8, 3), np.float32)))
    before = _state(bn)
    with pytest.raises(error, match=message):
        bn(backend.asarray(bad))
    for b, a in zip(before, _state(bn)):
        np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("shape", [(8, 3), (1024, 512)], ids=["small", "parallel"])
def test_batchnorm_eval_rejects_nan_and_inf(backend, bad_value, shape):
    bn = fastdl.BatchNorm(shape[1])
    bn(backend.asarray(_batch(shape, np.float32)))
    bn.eval()
    before = _state(bn)
    bad = _batch(shape, np.float32, seed=5)
    bad[shape[0] - 1, shape[1] - 1] = bad_value  # the very last element: the check must cover all of x
    with pytest.raises(ValueError, match=re.escape(f"BatchNorm({shape[1]}): x contains NaN or Inf (shape {shape})")):
        bn(backend.asarray(bad))
    for b, a in zip(before, _state(bn)):
        np.testing.assert_array_equal(b, a)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        bn.backward(backend.asarray(bad))  # nothing of the failed call is kept for a backward


def test_batchnorm_single_sample_is_fine_in_eval(backend):
    bn = fastdl.BatchNorm(3).eval()
    assert fastdl.to_numpy(bn(backend.asarray(np.ones((1, 3), np.float32)))).shape == (1, 3)


def test_batchnorm_state_dict_has_running_statistics():
    model = fastdl.Sequential(fastdl.Dense(3, 4, seed=0), fastdl.BatchNorm(4))
    model(_batch((6, 3), np.float32))
    state = model.state_dict()
    assert {"1.running_mean", "1.running_var", "1.num_batches_tracked"} <= set(state)
    fresh = fastdl.Sequential(fastdl.Dense(3, 4, seed=5), fastdl.BatchNorm(4))
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh[1].running_var, model[1].running_var)


def test_dropout_masks_match_the_reference_and_scale_survivors(backend, dtype):
    x = _batch((300, 40), dtype)
    layer = fastdl.Dropout(0.3, seed=9)
    y = fastdl.to_numpy(layer(backend.asarray(x))).copy()
    mask = fastdl.to_numpy(layer.mask).copy()
    with fastdl.use_backend("numpy"):
        reference = fastdl.Dropout(0.3, seed=9)
        np.testing.assert_array_equal(mask, reference(x) != 0)  # the same mask on every backend
    kept = mask.astype(bool)
    np.testing.assert_array_equal(y[~kept], 0)
    assert_close(y[kept], x[kept] / dtype(0.7), dtype)
    grad = fastdl.to_numpy(layer.backward(backend.asarray(np.ones_like(x))))
    assert_close(grad, mask / dtype(0.7), dtype)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_dropout_keeps_nan_and_inf_at_dropped_positions_as_the_reference(backend, dtype):
    """0 * NaN is NaN (numpy, PyTorch): a non-finite gradient at a dropped element must reach skip_nonfinite."""
    x = _batch((50, 40), dtype)
    x[::3, ::7] = np.nan
    x[1::3, ::5] = np.inf
    layer = fastdl.Dropout(0.5, seed=3)
    y = fastdl.to_numpy(layer(backend.asarray(x)))
    grad = fastdl.to_numpy(layer.backward(backend.asarray(x)))  # the same pattern as the gradient
    with fastdl.use_backend("numpy"):
        reference = fastdl.Dropout(0.5, seed=3)
        expected_y = reference(x)
        expected_grad = reference.backward(x)
    dropped = fastdl.to_numpy(layer.mask) == 0
    assert np.isnan(grad[dropped & ~np.isfinite(x)]).all()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected_y))
    np.testing.assert_array_equal(np.isnan(grad), np.isnan(expected_grad))
    finite = np.isfinite(expected_grad)
    assert_close(grad[finite], expected_grad[finite], dtype)


def test_dropout_fraction_is_close_to_p(backend):
    n, p = 1_000_000, 0.25
    layer = fastdl.Dropout(p, seed=123)
    layer(backend.asarray(np.ones(n, np.float32)))
    fraction = 1 - fastdl.to_numpy(layer.mask).mean()
    assert abs(fraction - p) < 5 * np.sqrt(p * (1 - p) / n)  # five standard deviations: about 0.0022


def test_dropout_same_seed_same_mask_and_new_mask_each_step(backend):
    x = backend.asarray(np.ones((64, 64), np.float32))
    a, b = fastdl.Dropout(0.5, seed=1), fastdl.Dropout(0.5, seed=1)
    first = fastdl.to_numpy(a(x)).copy()
    np.testing.assert_array_equal(first, fastdl.to_numpy(b(x)))
    assert (fastdl.to_numpy(a(x)) != first).any()


def test_dropout_mask_does_not_depend_on_thread_count():
    x = np.ones(1 << 20, np.float32)  # large enough for the parallel kernel
    _, threads = fastdl.get_num_threads()
    masks = []
    try:
        for count in (1, threads):
            fastdl.set_num_threads(count)
            with fastdl.use_backend("cpu"):
                layer = fastdl.Dropout(0.4, seed=7)
                layer(x)
                masks.append(layer.mask.copy())
    finally:
        fastdl.set_num_threads(threads)
    np.testing.assert_array_equal(masks[0], masks[1])


def test_dropout_is_identity_in_eval_and_for_p_zero(backend):
    x = backend.asarray(_batch((5, 5), np.float32))
    assert fastdl.Dropout(0.5).eval()(x) is x
    assert fastdl.Dropout(0.0)(x) is x


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_bad_p(p):
    with pytest.raises(ValueError, match=r"Dropout: p must lie in \[0, 1\)"):
        fastdl.Dropout(p)


def test_standardize_fits_and_round_trips(backend):
    x = np.stack([np.arange(10.0), np.full(10, 3.0), np.linspace(-5, 5, 10) * 100], axis=1).astype(np.float32)
    layer, standardized = fastdl.data.standardize(backend.asarray(x))
    standardized = fastdl.to_numpy(standardized)
    np.testing.assert_allclose(standardized.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(standardized[:, [0, 2]].std(axis=0), 1, rtol=1e-5)
    np.testing.assert_array_equal(standardized[:, 1], 0)  # zero spread: centred, not divided by zero
    state = layer.state_dict()
    again = fastdl.Standardize(3)
    again.load_state_dict(state)
    np.testing.assert_allclose(fastdl.to_numpy(again(backend.asarray(x))), standardized, rtol=1e-6)


def test_standardize_backward_matches_finite_differences(backend):
    layer = fastdl.Standardize(4, dtype="float64").fit(backend.asarray(_batch((20, 4), np.float64, mean=3.0)))
    assert fastdl.testing.gradcheck(layer, _batch((6, 4), np.float64))


def test_dropout_backward_matches_finite_differences(backend):
    """gradcheck replays the layer's random counter, so every evaluation sees the same mask."""
    assert fastdl.testing.gradcheck(fastdl.Dropout(0.4, seed=2), _batch((6, 5), np.float64))
