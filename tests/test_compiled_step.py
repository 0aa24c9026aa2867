"""compile_step: one compiled call per step must leave everything exactly as the layer-by-layer path does.

Both paths call the same kernels in the same order and the same BLAS (numpy's own, from inside the compiled
step), so the comparisons below are for bit equality: parameters, gradients, running statistics, random
counters, optimizer state and step counts.
"""

import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastdl
from fastdl import losses
from fastdl.step import CompileStepFallback, compile_step


def layer_path_step(model, loss, optimizer, x, y):
    """The reference: what fastdl.fit did per batch before compile_step existed."""
    value, grad = loss(model(x), y)
    model.backward(grad, input_grad=False)
    optimizer.step()
    return float(value)


def snapshot(model, optimizer):
    """Every piece of state a step may change, as plain arrays and numbers."""
    state = {f"param{i}": p.data.copy() for i, p in enumerate(model.parameters())}
    state.update({f"grad{i}": p.grad.copy() for i, p in enumerate(model.parameters())})
    for name, value in model.state_dict().items():
        state["model." + name] = np.array(value, copy=True)
    for i, layer in enumerate(fastdl.step.flat_layers(model)):
        state[f"counter{i}"] = getattr(layer, "counter", None)
    optimizer_state = optimizer.state_dict()
    state.update({"optimizer." + k: v for k, v in optimizer_state["state"].items()})
    state.update(steps=optimizer.steps, skipped=optimizer.skipped_steps, norm=optimizer.last_grad_norm)
    return state


def assert_same_state(actual, expected):
    assert actual.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


def data(loss, batch, features, outputs, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, features)).astype(dtype)
    if loss is losses.softmax_cross_entropy:
        return x, rng.integers(0, outputs, batch)
    if loss is losses.mse:
        return x, rng.standard_normal((batch, outputs)).astype(dtype)
    return x, rng.integers(0, 2, (batch, outputs)).astype(dtype)


def run_both(build, loss, optimizer_factory, dtype, batches=(16, 16, 5, 16), features=6, outputs=3):
    """Train two identical models, one per path, and compare their whole state after each step."""
    results = []
    for compiled in (False, True):
        model = build(dtype)
        optimizer = optimizer_factory(model.parameters())
        step = compile_step(model, loss, optimizer)
        assert step.compiled, step.reason
        values, states = [], []
        for index, batch in enumerate(batches):
            x, y = data(loss, batch, features, outputs, dtype, seed=index)
            values.append(step(x, y) if compiled else layer_path_step(model, loss, optimizer, x, y))
            states.append(snapshot(model, optimizer))
        results.append((values, states))
    (reference_values, reference_states), (values, states) = results
    assert values == reference_values
    for actual, expected in zip(states, reference_states):
        assert_same_state(actual, expected)


def train_three_batches(model, optimizer, step, rows):
    """Three float32 batches of 6 features and 3 classes, through ``step`` or, when it is None, the layer path."""
    for index in range(3):
        x, y = data(losses.softmax_cross_entropy, rows, 6, 3, np.float32, seed=index)
        if step is not None:
            step(x, y)
        else:
            layer_path_step(model, losses.softmax_cross_entropy, optimizer, x, y)


def mlp(dtype):
    return fastdl.Sequential(
        fastdl.Dense(6, 8, activation="relu", seed=1, dtype=dtype),
        fastdl.BatchNorm(8, activation="tanh", dtype=dtype),
        fastdl.Dropout(0.25, seed=7),
        fastdl.Dense(8, 8, activation="gelu", seed=2, dtype=dtype, bias=False, dropout=0.3),
        fastdl.Activation("rrelu", seed=3),
        fastdl.BatchNorm(8, momentum=None, affine=False, dtype=dtype),
        fastdl.Dense(8, 3, seed=4, dtype=dtype),
        fastdl.BatchNorm(3, track_running_stats=False, dtype=dtype),  # no running update, no count
    )


@pytest.fixture
def cpu():
    with fastdl.use_backend("cpu"):
        yield


# every loss in float32; float64 with one (each pair compiles a step of every kernel: the losses' emitted lines do
# not depend on the dtype, and their kernels are tested in float64 in test_losses.py)
@pytest.mark.parametrize("dtype, loss", [(np.float32, losses.softmax_cross_entropy), (np.float32, losses.mse),
                                         (np.float32, losses.binary_cross_entropy_with_logits),
                                         (np.float64, losses.softmax_cross_entropy)],
                         ids=["float32-cross_entropy", "float32-mse", "float32-bce", "float64-cross_entropy"])
def test_every_layer_kind_and_loss_matches_the_layer_path_exactly(cpu, dtype, loss):
    run_both(mlp, loss, lambda params: fastdl.optim.Adam(params, lr=1e-2), dtype)


def tiny(dtype):
    return fastdl.Sequential(fastdl.Dense(6, 5, activation="sigmoid", seed=1, dtype=dtype),
                             fastdl.Dense(5, 3, activation="softmax", seed=2, dtype=dtype),
                             fastdl.Dense(3, 3, seed=3, dtype=dtype))


OPTIMIZERS = {
    "sgd": lambda p: fastdl.optim.SGD(p, lr=0.1, weight_decay=1e-3),
    "sgd_nesterov_clipped": lambda p: fastdl.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, max_grad_norm=0.05),
    "adagrad_l1": lambda p: fastdl.optim.Adagrad(p, lr=0.1, lr_decay=0.01, l1=1e-3),
    "rmsprop_centered_momentum": lambda p: fastdl.optim.RMSprop(p, lr=1e-2, centered=True, momentum=0.5),
    "adam_amsgrad_clipped": lambda p: fastdl.optim.Adam(p, lr=1e-2, amsgrad=True, max_grad_norm=0.1),
    "adamw_skip_nonfinite": lambda p: fastdl.optim.AdamW(p, lr=1e-2, skip_nonfinite=True),
    "adamw_bfloat16_moments": lambda p: fastdl.optim.AdamW(p, lr=1e-2, moments_dtype="bfloat16"),
    "lars": lambda p: fastdl.optim.LARS(p, lr=0.1, max_grad_norm=1.0),
    "lamb": lambda p: fastdl.optim.LAMB(p, lr=1e-2, weight_decay=0.01),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_matches_the_layer_path_exactly(cpu, name):
    run_both(tiny, losses.softmax_cross_entropy, OPTIMIZERS[name], np.float32)


def test_many_classes_take_the_wide_cross_entropy_in_both_paths(cpu):
    """From WIDE_CLASSES classes on the step passes the cross-entropy kernel its 512-bit flag, as the layers do."""
    from fastdl.kernels.cpu.losses import WIDE_CLASSES

    classes = WIDE_CLASSES + 36

    def wide(dtype):
        return fastdl.Sequential(fastdl.Dense(6, 16, activation="relu", seed=1, dtype=dtype),
                                 fastdl.Dense(16, classes, seed=2, dtype=dtype))

    run_both(wide, losses.softmax_cross_entropy, OPTIMIZERS["sgd"], np.float32, outputs=classes)


def large(dtype):
    """Big enough for every parallel variant: Dense GEMMs split by columns (the wide first layer), by rows (with and
    without dropout), batch norm's chunks, the parallel update."""
    return fastdl.Sequential(fastdl.Dense(160, 1024, seed=1, dtype=dtype),
                             fastdl.BatchNorm(1024, activation="relu", dtype=dtype),
                             fastdl.Dense(1024, 64, activation="gelu", seed=2, dtype=dtype, dropout=0.2),
                             fastdl.Dense(64, 64, activation="gelu", seed=4, dtype=dtype),
                             fastdl.Dense(64, 10, seed=3, dtype=dtype))


def test_a_model_on_the_parallel_kernels_matches_the_layer_path_exactly(cpu):
    from fastdl.kernels.cpu import dense, normalization, optim

    model = large(np.float32)
    assert dense.parts_for(256, 160, 1024) == dense.parts_for(256, 1024, 64) == fastdl.get_num_threads()[1]
    assert normalization.chunks_for(256 * 1024) == fastdl.get_num_threads()[1]
    assert sum(p.data.size for p in model.parameters()) >= optim.PARALLEL_MIN_ELEMENTS
    run_both(large, losses.softmax_cross_entropy, lambda params: fastdl.optim.Adam(params, lr=1e-3), np.float32,
             batches=(256, 256, 100), features=160, outputs=10)


def emitted(model, optimizer, batch, serial=False):
    """The generated step for ``model`` at ``batch``, written by the emitters alone (nothing compiles)."""
    from fastdl import step_emitters as emitters

    emission = emitters.Emission(batch, np.dtype(np.float32))
    name, output, width = emitters.emit_layers(emission, fastdl.step.flat_layers(model), serial)
    emitters.emit_loss(emission, "cross_entropy", name, width)
    update = optimizer.update_call(optimizer.groups[0], optimizer.state[0], optimizer.steps + 1)
    emitters.emit_update(emission, optimizer, update, emitters.parallel_update(optimizer))
    return emission, output


def test_the_generated_signature_and_its_arguments_are_one_list(cpu):
    """Every name the emitters bind is a parameter of the generated step, in the order of its value; a batch size
    that runs the same kernels shares the source (and so the compiled function)."""
    import ast

    model = mlp(np.float32)
    optimizer = fastdl.optim.AdamW(model.parameters())
    (small, output), (other, other_output) = emitted(model, optimizer, 16), emitted(model, optimizer, 5)
    function = ast.parse(small.source()).body[-1]
    parameters = [argument.arg for argument in function.args.args]
    assert parameters[:6] == ["x", "y", "counters", "factors", "hyper", "status"]
    assert len(parameters) == len(set(parameters)) == 6 + len(small.values)
    assert parameters[6:8] == ["l0_weight", "l0_bias"] and small.values[0] is model.layers[0].weight.data
    assert parameters.index("o_0") - 6 == [id(v) for v in small.values].index(id(optimizer.groups[0].data))
    assert other.source() == small.source() and output.shape == (16, 3) and other_output.shape == (5, 3)
    big = large(np.float32)
    optimizer = fastdl.optim.Adam(big.parameters())
    parallel, serial = emitted(big, optimizer, 256)[0].source(), emitted(big, optimizer, 256, serial=True)[0].source()
    assert "dense.forward_columns_parallel" in parallel and "dense.forward_parallel" in parallel
    assert "dense.dropout_forward_parallel" in parallel and "bn.forward_train_parallel" in parallel
    assert "_parallel" not in serial.replace("optim.adam_parallel", "")
    # serial at batch 256 runs the same blocks one after the other (the first layer's columns); at batch 4 nothing
    # is split, as at batch 5: the same source
    assert "dense.forward_columns_serial" in serial
    assert emitted(big, optimizer, 4)[0].source() == emitted(big, optimizer, 5)[0].source()


def test_lr_changes_between_steps_reach_the_compiled_update(cpu):
    def schedule(params):
        optimizer = fastdl.optim.Adam(params, lr=1e-2)
        optimizer.lr_values = iter([1e-2, 3e-3, 0.0, 5e-2])
        return optimizer

    models = []
    for compiled in (False, True):
        model = tiny(np.float32)
        optimizer = schedule(model.parameters())
        step = compile_step(model, losses.softmax_cross_entropy, optimizer)
        for index in range(4):
            optimizer.lr = next(optimizer.lr_values)
            x, y = data(losses.softmax_cross_entropy, 8, 6, 3, np.float32, seed=index)
            if compiled:
                step(x, y)
            else:
                layer_path_step(model, losses.softmax_cross_entropy, optimizer, x, y)
        models.append(snapshot(model, optimizer))
    assert_same_state(models[1], models[0])


def test_nonfinite_gradients_are_skipped_as_the_optimizer_would(cpu):
    model = tiny(np.float32)
    optimizer = fastdl.optim.Adam(model.parameters(), lr=1e-2, skip_nonfinite=True)
    step = compile_step(model, losses.mse, optimizer)
    x, y = data(losses.mse, 8, 6, 3, np.float32)
    model[2].weight.data[...] = 1e30  # finite outputs (softmax rows sum to 1) whose input gradients overflow
    before = [p.data.copy() for p in model.parameters()]
    with np.errstate(all="ignore"):
        step(x, y)
    assert optimizer.skipped_steps == 1 and optimizer.steps == 0
    assert not np.isfinite(optimizer.last_grad_norm)
    for p, old in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, old)


@pytest.mark.parametrize("bad", ["empty_batch", "nan_x", "wrong_width", "wrong_width_strided", "wrong_dtype",
                                 "label_range", "wrong_label_count", "wrong_target_shape"])
def test_bad_input_is_a_clear_error_and_changes_nothing(cpu, bad):
    """Contiguous and strided inputs alike: a contiguous one of the right dtype takes a shorter check."""
    model = mlp(np.float32)
    optimizer = fastdl.optim.Adam(model.parameters())
    loss = losses.mse if bad == "wrong_target_shape" else losses.softmax_cross_entropy
    step = compile_step(model, loss, optimizer)
    x, y = data(loss, 8, 6, 3, np.float32)
    step(x, y)
    before = snapshot(model, optimizer)
    if bad == "empty_batch":
        x, y = x[:0], y[:0]
    elif bad == "nan_x":
        x[1, 2] = np.nan
    elif bad == "wrong_width":
        x = np.ascontiguousarray(x[:, :5])
    elif bad == "wrong_width_strided":
        x = x[:, :5]
    elif bad == "wrong_dtype":
        x = x.astype(np.float64)
    elif bad == "label_range":
        y[3] = 3
    elif bad == "wrong_label_count":
        y = y[:5]
    else:
        y = np.ascontiguousarray(y[:, :2])
    error = TypeError if bad == "wrong_dtype" else ValueError
    with pytest.raises(error, match="compile_step"):
        step(x, y)
    assert_same_state(snapshot(model, optimizer), before)


@pytest.mark.parametrize("refusal", ["overflow_at_batch_norm", "overflow_at_output", "one_row", "labels_out_of_range"])
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "layer_path"])
def test_a_refused_step_changes_nothing_on_either_path(cpu, refusal, compiled):
    """Counters, running statistics (of the batch norms that ran before the refusal too), moments: all as before."""
    model = mlp(np.float32)
    if refusal == "overflow_at_output":  # no batch norm after the overflow: the output check stops the step
        model = fastdl.Sequential(*model.layers[:6], fastdl.Dense(8, 3, seed=4))
    optimizer = fastdl.optim.Adam(model.parameters())
    step = compile_step(model, losses.softmax_cross_entropy, optimizer)
    if not compiled:
        step._kernel = None  # the layer-by-layer path compile_step falls back to
    x, y = data(losses.softmax_cross_entropy, 8, 6, 3, np.float32)
    step(x, y)
    before = snapshot(model, optimizer)
    overflowing = {"overflow_at_batch_norm": model[3], "overflow_at_output": model[6]}.get(refusal)
    if overflowing is not None:
        original = overflowing.weight.data.copy()
        overflowing.weight.data[...] = 1e38
    elif refusal == "one_row":
        x, y = x[:1], y[:1]
    else:
        y[2] = 7
    with pytest.raises(ValueError), np.errstate(all="ignore"):
        step(x, y)
    if overflowing is not None:
        overflowing.weight.data[...] = original
    assert_same_state(snapshot(model, optimizer), before)


def test_batch_of_one_with_batch_norm_raises_the_layer_error(cpu):
    model = mlp(np.float32)
    step = compile_step(model, losses.softmax_cross_entropy, fastdl.optim.SGD(model.parameters(), lr=0.1))
    x, y = data(losses.softmax_cross_entropy, 1, 6, 3, np.float32)
    with pytest.raises(ValueError, match="more than 1 sample"):
        step(x, y)


def test_unsupported_layer_falls_back_with_one_warning_and_same_results(cpu):
    def build(dtype):
        return fastdl.Sequential(fastdl.Dense(6, 4, seed=1), fastdl.PReLU(4), fastdl.Dense(4, 3, seed=2))

    states = []
    for compiled in (False, True):
        model = build(np.float32)
        optimizer = fastdl.optim.SGD(model.parameters(), lr=0.1)
        if compiled:
            with pytest.warns(CompileStepFallback, match=r"PReLU\(4\)"):
                step = compile_step(model, losses.softmax_cross_entropy, optimizer)
            assert not step.compiled
        train_three_batches(model, optimizer, step if compiled else None, rows=8)
        states.append(snapshot(model, optimizer))
    assert_same_state(states[1], states[0])


def test_a_loss_of_the_users_own_falls_back_naming_the_losses_that_compile(cpu):
    def halved_mse(outputs, targets):
        value, grad = losses.mse(outputs, targets)
        return value / 2, grad / 2

    model = tiny(np.float32)
    with pytest.warns(CompileStepFallback, match=r"loss 'halved_mse' is not one of fastdl.losses' "
                                                 r"softmax_cross_entropy, mse, binary_cross_entropy_with_logits"):
        step = compile_step(model, halved_mse, fastdl.optim.SGD(model.parameters(), lr=0.1))
    x = np.ones((8, 6), np.float32)
    assert np.isfinite(step(x, np.zeros((8, 3), np.float32)))


def test_reference_backend_runs_the_layer_path_without_a_warning():
    with fastdl.use_backend("numpy"):
        model = tiny(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            step = compile_step(model, losses.softmax_cross_entropy, fastdl.optim.SGD(model.parameters(), lr=0.1))
        assert not step.compiled and "numpy" in step.reason
        x, y = data(losses.softmax_cross_entropy, 8, 6, 3, np.float32)
        assert np.isfinite(step(x, y))


def test_eval_mode_model_runs_the_layer_path(cpu):
    model = mlp(np.float32)
    optimizer = fastdl.optim.SGD(model.parameters(), lr=0.1)
    step = compile_step(model, losses.softmax_cross_entropy, optimizer)
    model.eval()
    running = model[1].running_mean.copy()
    step(*data(losses.softmax_cross_entropy, 8, 6, 3, np.float32))
    np.testing.assert_array_equal(model[1].running_mean, running)  # eval: running statistics are used, not updated
    assert optimizer.steps == 1


def test_second_call_does_not_recompile_and_allocates_nothing_new(cpu):
    import tracemalloc

    model = mlp(np.float32)
    step = compile_step(model, losses.softmax_cross_entropy, fastdl.optim.Adam(model.parameters()))
    x, y = data(losses.softmax_cross_entropy, 16, 6, 3, np.float32)
    step(x, y)
    signatures = len(step._kernel.signatures)
    tracemalloc.start()
    step(x, y)
    first, _ = tracemalloc.get_traced_memory()
    for _ in range(20):
        step(x, y)
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(step._kernel.signatures) == signatures  # earlier tests may have compiled float64 too
    assert after - first < 4096  # no buffer per call (a few small Python objects at most)


def test_a_second_process_loads_the_compiled_step_from_the_disk_cache(cpu, tmp_path):
    script = (
        "import numpy as np, fastdl\n"
        "fastdl.set_backend('cpu')\n"
        "model = fastdl.Sequential(fastdl.Dense(6, 5, activation='elu', seed=1), fastdl.Dense(5, 2, seed=2))\n"
        "step = fastdl.compile_step(model, fastdl.losses.mse, fastdl.optim.SGD(model.parameters(), lr=0.1))\n"
        "step(np.ones((4, 6), np.float32), np.zeros((4, 2), np.float32))\n"
        "print(step._kernel.stats.cache_hits.__len__(), sum(step._kernel.stats.cache_misses.values()))\n"
    )
    env = {**__import__("os").environ, "FASTDL_CACHE_DIR": str(tmp_path)}
    env.pop("NUMBA_CACHE_DIR", None)  # it would move Numba's cache files away from FASTDL_CACHE_DIR, checked below
    # run outside the checkout: they import the fastdl this process runs (the installed one) and share its kernels
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True,
                           cwd=tmp_path) for _ in range(2)]
    hits, misses = map(int, runs[1].stdout.split())
    assert (hits, misses) == (1, 0), runs[1].stdout + runs[1].stderr
    assert list(tmp_path.glob("steps/__pycache__/*.nbc"))


def test_fit_uses_the_compiled_step(cpu, monkeypatch):
    calls = []
    original = fastdl.step.CompiledStep._compiled_path

    def counting(self, x, y, *accumulation):
        calls.append(len(x))
        return original(self, x, y, *accumulation)

    monkeypatch.setattr(fastdl.step.CompiledStep, "_compiled_path", counting)
    model = tiny(np.float32)
    x, y = data(losses.softmax_cross_entropy, 40, 6, 3, np.float32)
    history = fastdl.fit(model, losses.softmax_cross_entropy, fastdl.optim.Adam(model.parameters(), lr=1e-2),
                         (x, y), epochs=2, batch_size=16, progress=False, seed=0)
    assert calls == [16, 16, 8] * 2
    assert np.isfinite(history["loss"]).all() and len(history["accuracy"]) == 2


def test_an_optimizer_over_part_of_the_model_trains_that_part_and_one_over_none_is_refused():
    """Freezing a layer by leaving it out of the optimizer works as in the layer path; an optimizer that holds none
    of the model's parameters (built over another model) would train nothing, silently: refused."""
    results = []
    for compiled in (False, True):
        model = mlp(np.float32)
        frozen = [p.data.copy() for p in model.layers[0].parameters()]
        optimizer = fastdl.optim.Adam([p for layer in model.layers[1:] for p in layer.parameters()])
        step = compile_step(model, losses.softmax_cross_entropy, optimizer)
        assert step.compiled, step.reason
        train_three_batches(model, optimizer, step if compiled else None, rows=16)
        for parameter, before in zip(model.layers[0].parameters(), frozen):
            np.testing.assert_array_equal(parameter.data, before)
        results.append(snapshot(model, optimizer))
    assert_same_state(results[1], results[0])

    model, other = mlp(np.float32), mlp(np.float32)
    optimizer = fastdl.optim.Adam(other.parameters())
    before = snapshot(other, optimizer)
    message = r"the Adam holds none of the model's parameters \(built over another model\?\); build it over"
    with pytest.raises(ValueError, match="compile_step: " + message):
        compile_step(model, losses.softmax_cross_entropy, optimizer)
    with pytest.raises(ValueError, match="fit: " + message):
        fastdl.fit(model, losses.softmax_cross_entropy, optimizer, train=data(losses.softmax_cross_entropy, 16, 6, 3,
                                                                                 np.float32), progress=False)
    assert_same_state(snapshot(other, optimizer), before)


def test_an_input_gradient_in_row_blocks_keeps_both_paths_bit_identical(cpu, monkeypatch):
    """Where OpenBLAS's small-matrix kernels make dX = dZ @ W.T run in row blocks (forced here), the compiled step
    runs the same blocks as the layer path."""
    from fastdl.kernels.cpu import blas_provider, dense

    monkeypatch.setattr(blas_provider, "SMALL_MATRIX_KERNELS", True)
    assert dense.input_grad_rows(32, 48, 40) == 21

    def build(dtype):
        return fastdl.Sequential(fastdl.Dense(6, 48, activation="relu", seed=1, dtype=dtype),
                                 fastdl.Dense(48, 40, activation="tanh", seed=2, dtype=dtype, dropout=0.2),
                                 fastdl.Dense(40, 3, seed=3, dtype=dtype))

    run_both(build, losses.softmax_cross_entropy, lambda p: fastdl.optim.Adam(p, lr=1e-2), np.float32,
             batches=(32, 32, 32))
