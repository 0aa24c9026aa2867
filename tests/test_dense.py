"""Dense forward/backward on every backend against the numpy reference; allocation and recompilation."""

import tracemalloc

import numpy as np
import pytest

import fastdl

from conftest import assert_close


def reference_dense(x, weight, bias, activation, grad_out):
    """Forward and backward of Dense with the numpy backend (fresh copies of the results)."""
    with fastdl.use_backend("numpy"):
        layer = fastdl.Dense(weight.shape[0], weight.shape[1], activation=activation, bias=bias is not None,
                             dtype=weight.dtype)
        layer.weight.data[...] = weight
        if bias is not None:
            layer.bias.data[...] = bias
        y = layer(x).copy()
        grad_x = layer.backward(grad_out).copy()
        return y, grad_x, layer.weight.grad.copy(), None if bias is None else layer.bias.grad.copy()


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "softmax", "leaky_relu"])
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
def test_dense_matches_reference(backend, dtype, activation, use_bias):
    rng = np.random.default_rng(0)
    layer = fastdl.Dense(13, 9, activation=activation, bias=use_bias, dtype=dtype, seed=1)
    if use_bias:
        layer.bias.data[...] = fastdl.asarray(rng.standard_normal(9))
    x = rng.standard_normal((21, 13)).astype(dtype)
    grad_out = rng.standard_normal((21, 9)).astype(dtype)
    y = fastdl.to_numpy(layer(backend.asarray(x))).copy()
    grad_x = fastdl.to_numpy(layer.backward(backend.asarray(grad_out)))
    expected = reference_dense(x, fastdl.to_numpy(layer.weight.data), fastdl.to_numpy(layer.bias.data) if use_bias else None,
                               activation, grad_out)
    assert_close(y, expected[0], dtype, gemm=True)
    assert_close(grad_x, expected[1], dtype, gemm=True)
    assert_close(layer.weight.grad, expected[2], dtype, gemm=True)
    if use_bias:
        assert_close(layer.bias.grad, expected[3], dtype, gemm=True)


def test_dense_accumulate_adds_and_default_overwrites(backend):
    layer = fastdl.Dense(4, 3, activation="tanh", dtype="float64", seed=0)
    x = backend.asarray(np.random.default_rng(1).standard_normal((5, 4)))
    grad_out = backend.asarray(np.ones((5, 3)))
    layer(x)
    layer.backward(grad_out)
    once_w, once_b = layer.weight.grad.copy(), layer.bias.grad.copy()
    layer.backward(grad_out, accumulate=True)
    np.testing.assert_allclose(fastdl.to_numpy(layer.weight.grad), 2 * fastdl.to_numpy(once_w), rtol=1e-14)
    np.testing.assert_allclose(fastdl.to_numpy(layer.bias.grad), 2 * fastdl.to_numpy(once_b), rtol=1e-14)
    layer.backward(grad_out)
    np.testing.assert_allclose(fastdl.to_numpy(layer.weight.grad), fastdl.to_numpy(once_w), rtol=1e-14)


def test_grad_is_written_in_place(backend):
    layer = fastdl.Dense(4, 3, seed=0)
    weight_grad, bias_grad = layer.weight.grad, layer.bias.grad
    layer(backend.asarray(np.ones((2, 4), np.float32)))
    layer.backward(backend.asarray(np.ones((2, 3), np.float32)))
    assert layer.weight.grad is weight_grad and layer.bias.grad is bias_grad
    assert np.abs(fastdl.to_numpy(weight_grad)).sum() > 0


def test_non_contiguous_inputs_match_contiguous(backend, dtype):
    rng = np.random.default_rng(3)
    wide = rng.standard_normal((10, 16)).astype(dtype)
    strided = wide[:, ::2]  # a view with a stride of two elements
    transposed = np.ascontiguousarray(rng.standard_normal((8, 10)).astype(dtype)).T
    layer = fastdl.Dense(8, 5, activation="silu", dtype=dtype, seed=0)
    for x in (strided, transposed):
        assert not x.flags.c_contiguous
        grad_out = rng.standard_normal((10, 5)).astype(dtype)[:, ::-1]
        y = fastdl.to_numpy(layer(backend.asarray(x))).copy()
        grad_x = fastdl.to_numpy(layer.backward(backend.asarray(grad_out))).copy()
        y_c = fastdl.to_numpy(layer(backend.asarray(np.ascontiguousarray(x)))).copy()
        grad_x_c = fastdl.to_numpy(layer.backward(backend.asarray(np.ascontiguousarray(grad_out))))
        assert_close(y, y_c, dtype, gemm=True)
        assert_close(grad_x, grad_x_c, dtype, gemm=True)


def _rrelu_layer(backend):
    layer = fastdl.Dense(6, 5, activation=fastdl.Activation("rrelu"), dtype="float64", seed=2)
    layer.bias.data[...] = backend.asarray(np.linspace(-0.5, 0.5, 5))
    return layer


def _change_optimizer(layer, backend):
    fastdl.optim.SGD(layer.parameters(), lr=0.1)  # moves weights and gradients into its flat buffers


def _change_mode(layer, backend):
    layer.eval()  # RReLU's slope becomes its mean: another activation code


def _change_activation(layer, backend):
    layer.activation = fastdl.ActivationSpec("elu", alpha=0.5)


def _change_weights_in_place(layer, backend):
    layer.weight.data[...] = backend.asarray(np.full((6, 5), 0.25))


def _change_threads(layer, backend):
    fastdl.set_num_threads(fastdl.get_num_threads()[1])


CHANGES = {"optimizer": _change_optimizer, "eval": _change_mode, "activation": _change_activation,
           "weights": _change_weights_in_place, "threads": _change_threads}


@pytest.mark.parametrize("change", CHANGES)
def test_a_layer_that_ran_follows_changes_to_its_parameters_mode_and_settings(backend, change):
    """The layer keeps its kernels bound between calls (a small model's step is mostly per-call Python otherwise):
    whatever changes after a call, the next forward and backward are those of a fresh layer with the new settings."""
    rng = np.random.default_rng(4)
    layer = _rrelu_layer(backend)
    for rows in (7, 7, 3):  # bound at 7 rows, reused, bound again at 3
        x = backend.asarray(rng.standard_normal((rows, 6)))
        layer(x)
        layer.backward(backend.asarray(np.ones((rows, 5))))
    CHANGES[change](layer, backend)
    x, grad_out = rng.standard_normal((3, 6)), rng.standard_normal((3, 5))
    y = fastdl.to_numpy(layer(backend.asarray(x))).copy()
    grad_x = fastdl.to_numpy(layer.backward(backend.asarray(grad_out))).copy()
    with fastdl.use_backend("numpy"):
        fresh = fastdl.Dense(6, 5, activation=layer.activation, dtype="float64", seed=2)
        fresh.weight.data[...] = fastdl.to_numpy(layer.weight.data)
        fresh.bias.data[...] = fastdl.to_numpy(layer.bias.data)
        fresh.counter = layer.counter - 1 if layer.training else layer.counter  # the same draws of RReLU's slopes
        fresh.train(layer.training)
        expected_y = fresh(x).copy()
        expected_grad_x = fresh.backward(grad_out)
    assert_close(y, expected_y, np.float64, gemm=True)
    assert_close(grad_x, expected_grad_x, np.float64, gemm=True)
    assert_close(fastdl.to_numpy(layer.weight.grad), fresh.weight.grad, np.float64, gemm=True)
    # with an optimizer built after the first calls, layer.weight.grad is its flat buffer's view: the gradient
    # above landed where the optimizer reads it


DETOURS = {"dropout": lambda layer, on: setattr(layer, "dropout", 0.5 if on else 0.0),
           "bfloat16": lambda layer, on: layer.set_compute_dtype("bfloat16" if on else "float32")}


@pytest.mark.parametrize("detour", DETOURS)
def test_a_layer_back_from_the_general_path_differentiates_its_last_forward(backend, detour):
    """A bound forward records what the backward reads besides x (z, y, the mode) only when its binding changes:
    after a forward through the general path (dropout in training, bfloat16 compute), the next bound forward must
    record its own again, for the bound backward and for the general one (a strided grad_out) alike."""
    rng = np.random.default_rng(6)
    layer = fastdl.Dense(6, 5, activation="tanh", seed=2)
    for on in (False, True, False):
        DETOURS[detour](layer, on)
        layer(backend.asarray(rng.standard_normal((4, 6)).astype(np.float32)))
        layer.backward(backend.asarray(np.ones((4, 5), np.float32)))
    x = rng.standard_normal((4, 6)).astype(np.float32)
    grad_out = rng.standard_normal((4, 10)).astype(np.float32)[:, ::2]
    for grad in (np.ascontiguousarray(grad_out), grad_out):  # the bound backward, then the general one
        y = fastdl.to_numpy(layer(backend.asarray(x))).copy()
        grad_x = fastdl.to_numpy(layer.backward(backend.asarray(grad))).copy()
        expected_y, expected_grad_x, grad_weight, _ = reference_dense(
            x, fastdl.to_numpy(layer.weight.data), fastdl.to_numpy(layer.bias.data), "tanh", grad_out)
        assert_close(y, expected_y, np.float32, gemm=True)
        assert_close(grad_x, expected_grad_x, np.float32, gemm=True)
        assert_close(fastdl.to_numpy(layer.weight.grad), grad_weight, np.float32, gemm=True)


def test_an_optimizer_built_between_forward_and_backward_gets_the_gradients(backend):
    layer = fastdl.Dense(6, 5, activation="tanh", dtype="float64", seed=2)
    x, grad_out = np.random.default_rng(5).standard_normal((4, 6)), np.ones((4, 5))
    layer(backend.asarray(x))
    optimizer = fastdl.optim.SGD(layer.parameters(), lr=1.0)
    layer.backward(backend.asarray(grad_out))
    expected = reference_dense(x, fastdl.to_numpy(layer.weight.data), fastdl.to_numpy(layer.bias.data), "tanh",
                               grad_out)
    assert_close(optimizer.groups[0].grad[:30].reshape(6, 5), expected[2], np.float64, gemm=True)


def test_a_model_that_ran_can_be_pickled_and_deep_copied(backend):
    import copy
    import pickle

    model = fastdl.Sequential(fastdl.Dense(6, 5, activation="tanh", seed=0), fastdl.BatchNorm(5, activation="relu"),
                              fastdl.Dense(5, 2, seed=1))
    x = backend.asarray(np.arange(18, dtype=np.float32).reshape(3, 6) / 10)
    grad_out = backend.asarray(np.ones((3, 2), np.float32))
    expected = fastdl.to_numpy(model(x)).copy()
    for twin in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert_close(fastdl.to_numpy(twin.backward(grad_out)), fastdl.to_numpy(model.backward(grad_out)), np.float32)
        assert_close(fastdl.to_numpy(twin(x)), expected, np.float32)
        twin[0].weight.data[...] = 0  # the copy's own arrays: the original is untouched
        assert_close(fastdl.to_numpy(model(x)), expected, np.float32)


def test_a_layer_switched_to_dropout_drops_after_running_without(backend):
    layer = fastdl.Dense(8, 64, activation="relu", seed=0)
    layer.bias.data[...] = 1.0  # every output positive before dropout
    x = backend.asarray(np.ones((4, 8), np.float32))
    layer(x)
    layer.dropout = 0.5
    dropped = int((fastdl.to_numpy(layer(x)) == 0).sum())
    assert 0.3 * 256 < dropped < 0.7 * 256


def test_sequential_skips_first_input_gradient_when_not_asked(backend):
    model = fastdl.Sequential(fastdl.Dense(3, 4, activation="relu", seed=0), fastdl.Dense(4, 2, seed=1))
    model(backend.asarray(np.ones((2, 3), np.float32)))
    assert model.backward(backend.asarray(np.ones((2, 2), np.float32)), input_grad=False) is None
    assert model.backward(backend.asarray(np.ones((2, 2), np.float32))).shape == (2, 3)


def test_sequential_gradcheck(backend):
    model = fastdl.Sequential(fastdl.Dense(3, 5, activation="tanh", dtype="float64", seed=0),
                              fastdl.PReLU(5, dtype="float64"),
                              fastdl.Dense(5, 4, activation="softmax", dtype="float64", seed=1))
    assert fastdl.testing.gradcheck(model, np.random.default_rng(0).standard_normal((6, 3)))


def test_initializers_follow_their_formulas():
    relu_weight = fastdl.Dense(400, 300, activation="relu", seed=0).weight.data
    tanh_weight = fastdl.Dense(400, 300, activation="tanh", seed=0).weight.data
    assert abs(relu_weight.std() - np.sqrt(2 / 400)) < 0.02 * np.sqrt(2 / 400)  # He uniform
    assert abs(tanh_weight.std() - np.sqrt(2 / 700)) < 0.02 * np.sqrt(2 / 700)  # Glorot uniform
    np.testing.assert_array_equal(fastdl.Dense(4, 3, seed=7).weight.data, fastdl.Dense(4, 3, seed=7).weight.data)
    assert not fastdl.Dense(4, 3).bias.data.any()
    normal = fastdl.init.kaiming_normal((1000, 500), seed=0)
    assert abs(normal.std() - np.sqrt(2 / 1000)) < 0.02 * np.sqrt(2 / 1000)
    assert abs(fastdl.init.xavier_normal((1000, 500), seed=0).std() - np.sqrt(2 / 1500)) < 0.02 * np.sqrt(2 / 1500)


def test_state_dict_round_trip_keeps_views():
    model = fastdl.Sequential(fastdl.Dense(3, 4, seed=0), fastdl.Dense(4, 2, seed=1))
    state = model.state_dict()
    assert set(state) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    other = fastdl.Sequential(fastdl.Dense(3, 4, seed=5), fastdl.Dense(4, 2, seed=6))
    weight_array = other[0].weight.data
    other.load_state_dict(state)
    assert other[0].weight.data is weight_array
    np.testing.assert_array_equal(other[0].weight.data, state["0.weight"])


def _steady_state_peak(call, repeats=20):
    call()
    call()
    tracemalloc.start()
    for _ in range(repeats):
        call()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_cpu_forward_and_backward_allocate_nothing_in_steady_state():
    with fastdl.use_backend("cpu"):
        layer = fastdl.Dense(256, 512, activation="gelu", seed=0)
        x = np.random.default_rng(0).standard_normal((128, 256)).astype(np.float32)
        grad_out = np.ones((128, 512), np.float32)
        loss_grad = np.empty((128, 512), np.float32)
        labels = np.zeros(128, np.int64)

        def step():
            layer(x)
            fastdl.losses.softmax_cross_entropy(layer._forward_y, labels, out=loss_grad)
            layer.backward(grad_out, input_grad=True)

        peak = _steady_state_peak(step)
    # A single activation buffer here is 256 KiB; what remains is Python's own bookkeeping.
    assert peak < 16 * 1024, f"steady-state step allocated {peak} bytes"


def test_cpu_kernels_do_not_recompile_on_second_call():
    from fastdl.kernels.cpu import dense, losses

    with fastdl.use_backend("cpu"):
        layer = fastdl.Dense(8, 4, activation="tanh", seed=0)
        x = np.ones((3, 8), np.float32)
        layer(x)
        layer.backward(np.ones((3, 4), np.float32))
        fastdl.losses.softmax_cross_entropy(layer._forward_y, np.zeros(3, np.int64))
        kernels = (dense.forward_serial, dense.backward_serial, losses.softmax_cross_entropy_kernel)
        counts = [len(k.signatures) for k in kernels]
        assert min(counts) > 0  # these are the kernels the layer ran
        # another activation beyond ReLU and the identity (which compile without the others' formulas): the same
        # compiled kernels
        layer.activation = fastdl.ActivationSpec("elu", alpha=0.5)
        for _ in range(3):
            layer(x)
            layer.backward(np.ones((3, 4), np.float32))
            fastdl.losses.softmax_cross_entropy(layer._forward_y, np.zeros(3, np.int64), label_smoothing=0.1)
        assert [len(k.signatures) for k in kernels] == counts


# -- the CPU kernels' split GEMMs ---------------------------------------------------------------------------------
LARGE = (128, 96, 96)  # rows x in x out: past PARALLEL_MIN_MULTIPLY_ADDS, so the cpu kernels split the GEMMs


def _large_layer_results(dtype, activation, dropout, accumulate=False, shape=LARGE):
    rng = np.random.default_rng(3)
    rows, fan_in, fan_out = shape
    layer = fastdl.Dense(fan_in, fan_out, activation=activation, dtype=dtype, seed=5, dropout=dropout)
    layer.bias.data[...] = fastdl.asarray(rng.standard_normal(fan_out))
    x = rng.standard_normal((rows, fan_in)).astype(dtype)
    grad_out = rng.standard_normal((rows, fan_out)).astype(dtype)
    if accumulate:
        layer.weight.grad[...] = 1.0
        layer.bias.grad[...] = 1.0
    y = fastdl.to_numpy(layer(fastdl.asarray(x))).copy()
    grad_x = fastdl.to_numpy(layer.backward(fastdl.asarray(grad_out), accumulate=accumulate)).copy()
    return [y, grad_x, fastdl.to_numpy(layer.weight.grad).copy(), fastdl.to_numpy(layer.bias.grad).copy()]


@pytest.mark.parametrize("activation", ["relu", "identity", "tanh"])
@pytest.mark.parametrize("dropout", [0.0, 0.25], ids=["plain", "dropout"])
@pytest.mark.parametrize("accumulate", [False, True], ids=["overwrite", "accumulate"])
def test_split_gemm_kernels_match_reference(dtype, activation, dropout, accumulate):
    from fastdl.kernels.cpu import dense

    assert dense.parts_for(*LARGE) == fastdl.get_num_threads()[1]
    with fastdl.use_backend("cpu"):
        results = _large_layer_results(dtype, activation, dropout, accumulate)
    with fastdl.use_backend("numpy"):
        expected = _large_layer_results(dtype, activation, dropout, accumulate)
    for actual, reference in zip(results, expected):
        assert_close(actual, reference, dtype, gemm=True)


# narrow products just past the split, where OpenBLAS sums a half with another kernel than the whole product (the
# output layer's y, the wide layer's dX, the tall layer's dW differ in the last bits between 1 and 2 threads)
@pytest.mark.parametrize("shape", [LARGE, (128, 1024, 10), (32, 8, 4096), (1024, 32, 32)], ids=str)
def test_split_gemm_results_agree_across_thread_counts(shape):
    """One block per thread: the products agree to rounding with the unsplit ones; the bias gradient, fastdl's own
    column sums in row order, bit for bit."""
    from fastdl.kernels.cpu import dense

    _, threads = fastdl.get_num_threads()
    if threads == 1:
        pytest.skip("one thread: nothing is split")
    assert dense.parts_for(*shape) == min(threads, shape[0], shape[2])
    try:
        runs = []
        for count in (1, threads):
            fastdl.set_num_threads(count)
            with fastdl.use_backend("cpu"):
                runs.append(_large_layer_results(np.float32, "relu", 0.25, shape=shape))
    finally:
        fastdl.set_num_threads(threads)
    (*products_one, bias_one), (*products_every, bias_every) = runs
    for one_thread, every_thread in zip(products_one, products_every):
        # float32 rounding of sums of up to 1024 terms: elements that cancel are compared at the array's scale
        np.testing.assert_allclose(every_thread, one_thread, rtol=1e-5, atol=1e-6 * np.abs(one_thread).max())
    np.testing.assert_array_equal(bias_every, bias_one)


WIDE = (96, 128, 170)  # as many output columns as rows or more: the forward splits its GEMM by columns


@pytest.mark.parametrize("activation", ["relu", "identity"])
def test_wide_outputs_split_by_columns_match_the_reference_and_one_thread(dtype, activation):
    """At 2 threads, the column blocks (the second starting on a 64-byte line, not at the middle) give the reference's
    values, the unsplit product's to rounding, and refuse NaN in x as the row blocks do."""
    from fastdl.kernels.cpu import dense

    _, threads = fastdl.get_num_threads()
    if threads == 1:
        pytest.skip("one thread: nothing is split")
    rows, fan_in, fan_out = WIDE
    assert dense._column_block(fan_out, 1, 2) == (80, 170)
    with fastdl.use_backend("numpy"):
        expected = _large_layer_results(dtype, activation, 0.0, shape=WIDE)
    x = np.ones((rows, fan_in), dtype)
    x[rows - 1, 3] = np.nan  # in the last row: each column block reads every row
    try:
        runs = []
        for count in (1, 2):
            fastdl.set_num_threads(count)
            with fastdl.use_backend("cpu"):
                runs.append(_large_layer_results(dtype, activation, 0.0, shape=WIDE))
        def code(name):
            return fastdl.activations.resolve(name).kernel_args(dtype, True)[0]
        assert dense.parts_for(*WIDE) == 2 and dense.by_columns(*WIDE, code(activation))
        assert not dense.by_columns(*WIDE, code("tanh")) and not dense.by_columns(256, 1024, 10, code(activation))
        with fastdl.use_backend("cpu"):
            layer = fastdl.Dense(fan_in, fan_out, activation=activation, dtype=dtype, seed=5)
            with pytest.raises(ValueError, match="x contains NaN or Inf"):
                layer(x)
    finally:
        fastdl.set_num_threads(threads)
    for one_thread, two_threads, reference in zip(*runs, expected):
        assert_close(two_threads, reference, dtype, gemm=True)
        np.testing.assert_allclose(two_threads, one_thread, rtol=1e-5, atol=1e-6 * np.abs(one_thread).max())


def test_split_gemm_kernels_give_the_blas_its_thread_count_back():
    """The kernels make the BLAS single-threaded around their loops; numpy's own GEMMs keep their threads after."""
    from fastdl.kernels.cpu.blas_provider import PROVIDER

    before = PROVIDER.get_threads()
    with fastdl.use_backend("cpu"):
        for _ in range(20):
            _large_layer_results(np.float32, "relu", 0.25)
    assert PROVIDER.get_threads() == before


# -- fused dropout ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "gelu", "rrelu"])
def test_dense_dropout_is_exactly_dense_then_dropout(backend, dtype, activation):
    """The fused layer draws the very mask a Dropout(p, seed=layer.dropout_seed) after it would, step after step."""
    rng = np.random.default_rng(0)
    fused = fastdl.Dense(7, 33, activation=activation, seed=4, dtype=dtype, dropout=0.3)
    plain = fastdl.Dense(7, 33, activation=activation, seed=4, dtype=dtype)
    separate = fastdl.Sequential(plain, fastdl.Dropout(0.3, seed=fused.dropout_seed))
    for step in range(3):
        x = fastdl.asarray(rng.standard_normal((9, 7)).astype(dtype))
        grad = fastdl.asarray(rng.standard_normal((9, 33)).astype(dtype))
        y_fused, y_separate = fused(x), separate(x)
        np.testing.assert_array_equal(fastdl.to_numpy(y_fused), fastdl.to_numpy(y_separate))
        np.testing.assert_array_equal(fastdl.to_numpy(fused._buffers["mask"]), fastdl.to_numpy(separate[1].mask))
        dx_fused, dx_separate = fused.backward(grad), separate.backward(grad)
        assert_close(dx_fused, fastdl.to_numpy(dx_separate), dtype)
        assert_close(fused.weight.grad, fastdl.to_numpy(plain.weight.grad), dtype)
        assert_close(fused.bias.grad, fastdl.to_numpy(plain.bias.grad), dtype)
    dropped = float((fastdl.to_numpy(fused._buffers["mask"]) == 0).mean())
    assert 0.1 < dropped < 0.6  # some dropped, some kept (the exact rate is Dropout's own statistical test)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_dense_dropout_backward_keeps_a_nan_gradient_at_a_dropped_position(backend):
    layer = fastdl.Dense(5, 8, activation="relu", seed=2, dropout=0.5)
    x = fastdl.asarray(np.random.default_rng(3).standard_normal((6, 5)).astype(np.float32))
    layer(x)
    mask = fastdl.to_numpy(layer._buffers["mask"])
    row, column = np.argwhere(mask == 0)[0]
    grad = np.ones((6, 8), np.float32)
    grad[row, column] = np.nan
    grad_x = fastdl.to_numpy(layer.backward(fastdl.asarray(grad)))
    assert np.isnan(fastdl.to_numpy(layer.bias.grad)[column])  # as numpy and PyTorch: 0 * NaN is NaN
    assert np.isnan(grad_x[row]).all()


def test_dense_dropout_gradcheck(backend):
    layer = fastdl.Dense(4, 6, activation="tanh", seed=1, dtype="float64", dropout=0.5)
    assert fastdl.testing.gradcheck(layer, fastdl.asarray(np.random.default_rng(2).standard_normal((5, 4))))
    assert (fastdl.to_numpy(layer._buffers["mask"]) == 0).any()  # the check went through dropped elements


def test_dense_dropout_is_the_identity_in_eval(backend):
    layer = fastdl.Dense(4, 6, seed=1, dropout=0.5)
    reference = fastdl.Dense(4, 6, seed=1)
    x = fastdl.asarray(np.ones((3, 4), np.float32))
    layer.eval()
    np.testing.assert_array_equal(fastdl.to_numpy(layer(x)), fastdl.to_numpy(reference(x)))


@pytest.mark.parametrize("bad", [-0.1, 1.0, True, "0.5"])
def test_dense_dropout_out_of_range_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"Dense: dropout must lie in \[0, 1\)"):
        fastdl.Dense(4, 6, dropout=bad)


SMALL_BATCH_LAYER = (32, 64, 48)  # rows, fan_in, fan_out: dX 32 x 64, past OpenBLAS's small transposed output


def test_the_input_gradient_is_split_into_row_blocks_only_for_openblas_small_matrix_kernels(monkeypatch):
    from fastdl.kernels.cpu import blas_provider, dense

    monkeypatch.setattr(blas_provider, "SMALL_MATRIX_KERNELS", False)
    assert dense.input_grad_rows(32, 64, 64) == 32
    monkeypatch.setattr(blas_provider, "SMALL_MATRIX_KERNELS", True)
    assert [dense.input_grad_rows(*shape) for shape in [(32, 64, 64), (32, 128, 128), (32, 128, 64), (64, 64, 64)]] \
        == [16, 8, 8, 16]
    # one call: an output already small (16 x 64), a narrow layer (10 columns), a larger batch, a product as large
    # as those split over threads (at any thread count)
    assert [dense.input_grad_rows(*shape) for shape in [(16, 64, 64), (32, 64, 10), (128, 64, 64), (32, 256, 256)]] \
        == [16, 32, 128, 32]


@pytest.mark.parametrize("block_rows", [16, 5])
def test_an_input_gradient_in_row_blocks_matches_the_reference_and_leaves_the_rest_unchanged(dtype, block_rows):
    """dX in BLAS calls of a few rows each (5: the last block shorter) is the reference's to rounding; dZ, dW and
    the bias gradient are the one-call kernel's bit for bit."""
    from fastdl.kernels.cpu import dense

    rows, fan_in, fan_out = SMALL_BATCH_LAYER
    rng = np.random.default_rng(11)
    x, weight = rng.standard_normal((rows, fan_in)).astype(dtype), rng.standard_normal((fan_in, fan_out)).astype(dtype)
    z, grad_y = rng.standard_normal((rows, fan_out)).astype(dtype), rng.standard_normal((rows, fan_out)).astype(dtype)
    code, params = fastdl.activations.resolve("relu").kernel_args(dtype, True)
    y = np.maximum(z, 0)
    outputs = []
    for block in (rows, block_rows):
        grad_z, grad_x = np.empty_like(z), np.empty_like(x)
        grad_weight, grad_bias = np.empty_like(weight), np.empty(fan_out, dtype)
        dense.backward_serial(x, weight, grad_y, z, y, False, np.empty((0, 0), np.uint8), dtype(1.0), code, params,
                              np.uint64(0), np.uint64(0), grad_z, grad_weight, grad_bias, grad_x, True, False,
                              dense.any_activation_for(code), 1, block)
        outputs.append((grad_z, grad_weight, grad_bias, grad_x))
    (*whole, _), (*blocks, grad_x) = outputs
    for one_call, in_blocks in zip(whole, blocks):
        np.testing.assert_array_equal(in_blocks, one_call)
    assert_close(grad_x, (grad_y * (z > 0)) @ weight.T, dtype, gemm=True)
