"""Optimizers: every algorithm and option against the numpy reference, torch.optim and per-tensor formulas."""

import numpy as np
import pytest

import fastdl
from fastdl import optim

# (rtol, atol) after 50 steps: the kernels use the reference's operation order, so differences stay at rounding.
STEP_TOLERANCES = {np.float32: (2e-5, 2e-6), np.float64: (1e-12, 1e-13)}
SHAPES = [(5, 3), (3,), (2, 3, 4), (1,)]

ALGORITHMS = [
    ("sgd", optim.SGD, dict(lr=0.1)),
    ("sgd_decay", optim.SGD, dict(lr=0.1, weight_decay=0.1)),
    ("momentum", optim.SGD, dict(lr=0.05, momentum=0.9)),
    ("momentum_ema", optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.9, weight_decay=0.01)),
    ("nesterov", optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("adagrad", optim.Adagrad, dict(lr=0.1)),
    ("adagrad_options", optim.Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5)),
    ("rmsprop", optim.RMSprop, dict(lr=0.01)),
    ("rmsprop_centered", optim.RMSprop, dict(lr=0.01, centered=True, weight_decay=0.1)),
    ("rmsprop_momentum", optim.RMSprop, dict(lr=0.01, momentum=0.9)),
    ("rmsprop_both", optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True, alpha=0.9)),
    ("adam", optim.Adam, dict(lr=0.01)),
    ("adam_decay", optim.Adam, dict(lr=0.01, weight_decay=0.1, betas=(0.8, 0.99))),
    ("amsgrad", optim.Adam, dict(lr=0.01, amsgrad=True)),
    ("adamw", optim.AdamW, dict(lr=0.01)),
    ("adamw_amsgrad", optim.AdamW, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("lars", optim.LARS, dict(lr=0.5)),
    ("lars_options", optim.LARS, dict(lr=0.5, weight_decay=0.01, exclude_vectors=False)),
    ("lamb", optim.LAMB, dict(lr=0.01)),
    ("lamb_decay", optim.LAMB, dict(lr=0.01, weight_decay=0.1)),
]
COMMON_OPTIONS = {"plain": {}, "clipped": dict(max_grad_norm=0.5), "l1": dict(l1=1e-2)}


def make_parameters(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [fastdl.Parameter(fastdl.asarray(rng.standard_normal(shape).astype(dtype))) for shape in SHAPES]


def gradients(dtype, steps, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(shape).astype(dtype) for shape in SHAPES] for _ in range(steps)]


def run(cls, kwargs, dtype, steps=50, backend="numpy"):
    """Values of the parameters after ``steps`` steps on fixed random gradients, and the optimizer."""
    with fastdl.use_backend(backend):
        parameters = make_parameters(dtype)
        optimizer = cls(parameters, **kwargs)
        for grads in gradients(dtype, steps):
            for parameter, grad in zip(parameters, grads):
                parameter.grad = fastdl.asarray(grad)
            optimizer.step()
        return [fastdl.to_numpy(p.data).copy() for p in parameters], optimizer


@pytest.mark.parametrize("options", COMMON_OPTIONS.values(), ids=COMMON_OPTIONS.keys())
@pytest.mark.parametrize("name, cls, kwargs", ALGORITHMS, ids=[a[0] for a in ALGORITHMS])
def test_backend_matches_reference_over_50_steps(backend, dtype, name, cls, kwargs, options):
    expected, _ = run(cls, {**kwargs, **options}, dtype)
    actual, optimizer = run(cls, {**kwargs, **options}, dtype, backend=backend.name)
    rtol, atol = STEP_TOLERANCES[dtype]
    for got, want, start in zip(actual, expected, make_parameters(dtype)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
        assert not np.array_equal(want, fastdl.to_numpy(start.data))  # the parameters did move
    assert optimizer.steps == 50


TORCH_OPTIONS = {"plain": {}, "clipped": dict(max_grad_norm=0.5)}


@pytest.mark.parametrize("options", TORCH_OPTIONS.values(), ids=TORCH_OPTIONS.keys())
@pytest.mark.parametrize("name, cls, kwargs", [a for a in ALGORITHMS if not a[0].startswith(("lars", "lamb"))],
                         ids=[a[0] for a in ALGORITHMS if not a[0].startswith(("lars", "lamb"))])
def test_reference_matches_torch_optim(name, cls, kwargs, options):
    torch = pytest.importorskip("torch")
    expected_values = []
    tensors = [torch.tensor(p.data, requires_grad=True) for p in make_parameters(np.float64)]
    torch_optimizer = getattr(torch.optim, cls.__name__)(tensors, **kwargs)
    for grads in gradients(np.float64, 50):
        for tensor, grad in zip(tensors, grads):
            tensor.grad = torch.tensor(grad)
        if options:
            torch.nn.utils.clip_grad_norm_(tensors, options["max_grad_norm"])
        torch_optimizer.step()
    expected_values = [t.detach().numpy() for t in tensors]
    actual, _ = run(cls, {**kwargs, **options}, np.float64)
    for got, want in zip(actual, expected_values):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)


def per_tensor_lars_lamb(name, kwargs, dtype, steps=50):
    """LARS and LAMB written per tensor in float64, straight from the papers, for the flat kernels' bookkeeping."""
    values = [p.data.astype(np.float64) for p in make_parameters(dtype)]
    state = [[np.zeros_like(v), np.zeros_like(v)] for v in values]
    lr, wd = kwargs["lr"], kwargs.get("weight_decay", 0.0)
    for step, grads in enumerate(gradients(dtype, steps), start=1):
        for value, grad, (first, second) in zip(values, grads, state):
            if name.startswith("lars"):
                adapt = value.ndim > 1 or not kwargs.get("exclude_vectors", True)
                p_norm, g_norm = np.linalg.norm(value), np.linalg.norm(grad)
                ratio = 0.001 * p_norm / (g_norm + wd * p_norm + 1e-8) if adapt and p_norm > 0 and g_norm > 0 else 1.0
                first[...] = 0.9 * first + lr * ratio * (grad + wd * value)
                value -= first
            else:
                first[...] = 0.9 * first + 0.1 * grad
                second[...] = 0.999 * second + 0.001 * grad * grad
                direction = (first / (1 - 0.9 ** step)) / (np.sqrt(second / (1 - 0.999 ** step)) + 1e-6) + wd * value
                value -= lr * np.linalg.norm(value) / np.linalg.norm(direction) * direction
    return values


@pytest.mark.parametrize("name, cls, kwargs", [a for a in ALGORITHMS if a[0].startswith(("lars", "lamb"))],
                         ids=[a[0] for a in ALGORITHMS if a[0].startswith(("lars", "lamb"))])
def test_lars_and_lamb_match_per_tensor_formulas(name, cls, kwargs):
    actual, _ = run(cls, kwargs, np.float64)
    for got, want in zip(actual, per_tensor_lars_lamb(name, kwargs, np.float64)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_lars_and_lamb_norms_span_pieces_of_one_large_tensor(backend):
    """A tensor larger than a piece is split; its trust ratio must still use the whole tensor's norm."""
    size = optim.flat.PIECE_ELEMENTS * 2 + 5
    rng = np.random.default_rng(0)
    for cls, name, kwargs in [(optim.LARS, "lars", dict(lr=0.5)), (optim.LAMB, "lamb", dict(lr=0.01))]:
        start = rng.standard_normal((size, 2)) + 1
        grad = rng.standard_normal((size, 2))
        parameter = fastdl.Parameter(fastdl.asarray(start.copy()))
        optimizer = cls([parameter], **kwargs)
        parameter.grad = fastdl.asarray(grad)
        optimizer.step()
        p_norm = np.linalg.norm(start)
        if name == "lars":
            expected = start - 0.5 * 0.001 * p_norm / (np.linalg.norm(grad) + 1e-8) * grad
        else:
            direction = (0.1 * grad / 0.1) / (np.sqrt(0.001 * grad * grad / 0.001) + 1e-6)
            expected = start - 0.01 * p_norm / np.linalg.norm(direction) * direction
        np.testing.assert_allclose(fastdl.to_numpy(parameter.data), expected, rtol=1e-10, atol=1e-12)


def test_clip_grad_norm_matches_torch_and_formula(backend, dtype):
    rng = np.random.default_rng(3)
    parameters = make_parameters(dtype)
    grads = [rng.standard_normal(shape).astype(dtype) * 3 for shape in SHAPES]
    for parameter, grad in zip(parameters, grads):
        parameter.grad = fastdl.asarray(grad)
    total = optim.clip_grad_norm(parameters, 1.5)
    expected_total = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads))
    assert total == pytest.approx(expected_total, rel=1e-12)
    scale = 1.5 / (expected_total + 1e-6)
    rtol, atol = STEP_TOLERANCES[dtype]
    for parameter, grad in zip(parameters, grads):
        np.testing.assert_allclose(fastdl.to_numpy(parameter.grad), grad * scale, rtol=rtol, atol=atol)
    assert optim.clip_grad_norm(parameters, 100.0) == pytest.approx(1.5, rel=1e-5)  # below max_norm: unchanged
    try:
        import torch
    except ImportError:
        return
    tensors = [torch.zeros(shape, dtype=torch.float64) for shape in SHAPES]
    for tensor, grad in zip(tensors, grads):
        tensor.grad = torch.tensor(grad.astype(np.float64))
    assert float(torch.nn.utils.clip_grad_norm_(tensors, 1.5)) == pytest.approx(total, rel=1e-6)
    for parameter, tensor in zip(parameters, tensors):
        np.testing.assert_allclose(fastdl.to_numpy(parameter.grad), tensor.grad.numpy(), rtol=rtol, atol=atol)


def test_flat_buffer_holds_every_parameter_as_a_view(backend):
    model = fastdl.Sequential(fastdl.Dense(3, 4, activation="relu", seed=0), fastdl.Dense(4, 2, seed=1))
    before = model.state_dict()
    optimizer = optim.Adam(model.parameters())
    (group,) = optimizer.groups
    assert group.size == 3 * 4 + 4 + 4 * 2 + 2
    for parameter in model.parameters():
        assert np.shares_memory(parameter.data, group.data) and np.shares_memory(parameter.grad, group.grad)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])  # values kept


def test_two_optimizers_over_the_same_parameters_share_the_buffer_and_both_step(backend):
    parameters = make_parameters(np.float64)
    first = optim.SGD(parameters, lr=1.0)
    second = optim.SGD(parameters, lr=1.0)
    assert first.groups[0] is second.groups[0]
    for parameter in parameters:
        parameter.grad[...] = 1
    start = parameters[0].data.copy()
    first.step()
    second.step()
    np.testing.assert_array_equal(fastdl.to_numpy(parameters[0].data), fastdl.to_numpy(start - 2))


def test_an_optimizer_whose_parameters_moved_to_a_newer_buffer_refuses_to_step(backend):
    parameters = make_parameters(np.float64)
    old = optim.SGD(parameters[:2], lr=1.0)
    new = optim.SGD(parameters, lr=1.0)
    for parameter in parameters:
        parameter.grad[...] = 1
    new.step()
    with pytest.raises(RuntimeError, match="taken over by an optimizer built later"):
        old.step()


def test_mixed_dtypes_get_one_buffer_each(backend):
    parameters = make_parameters(np.float32)[:2] + make_parameters(np.float64)[2:]
    optimizer = optim.Adam(parameters, lr=0.1)
    assert [group.dtype for group in optimizer.groups] == [np.float32, np.float64]
    for parameter in parameters:
        parameter.grad[...] = 1
    optimizer.step()
    assert all(np.all(fastdl.to_numpy(p.data) != fastdl.to_numpy(make_parameters(p.dtype)[i].data))
               for i, p in enumerate(parameters))


def test_skip_nonfinite_leaves_everything_untouched_and_reports(backend):
    parameters = make_parameters(np.float32)
    optimizer = optim.Adam(parameters, lr=0.1, skip_nonfinite=True)
    for parameter in parameters:
        parameter.grad[...] = 1
    assert optimizer.step()
    values = [fastdl.to_numpy(p.data).copy() for p in parameters]
    state = optimizer.state_dict()
    parameters[2].grad[0, 1, 2] = np.nan
    assert optimizer.step() is False
    assert optimizer.skipped_steps == 1 and optimizer.steps == 1
    for parameter, value in zip(parameters, values):
        np.testing.assert_array_equal(fastdl.to_numpy(parameter.data), value)
    for key, array in optimizer.state_dict()["state"].items():
        np.testing.assert_array_equal(array, state["state"][key])
    parameters[2].grad[0, 1, 2] = np.inf
    assert optimizer.step() is False
    parameters[2].grad[0, 1, 2] = 1
    assert optimizer.step() and optimizer.steps == 2


def test_without_skip_nonfinite_nan_gradients_propagate_as_in_pytorch(backend):
    parameters = make_parameters(np.float32)
    optimizer = optim.SGD(parameters, lr=0.1)
    parameters[0].grad[0, 0] = np.nan
    optimizer.step()
    assert np.isnan(fastdl.to_numpy(parameters[0].data)[0, 0])
    assert np.isfinite(fastdl.to_numpy(parameters[0].data)[0, 1])


def test_lr_is_settable_between_steps(backend):
    parameters = make_parameters(np.float64)
    optimizer = optim.SGD(parameters, lr=0.1)
    parameters[1].grad[...] = 1
    start = parameters[1].data.copy()
    optimizer.lr = 0.5
    optimizer.step()
    np.testing.assert_allclose(fastdl.to_numpy(parameters[1].data), fastdl.to_numpy(start - 0.5))
    assert optimizer.lr == 0.5


RESUMABLE = {
    "adam_amsgrad_clipped": lambda p: optim.Adam(p, lr=0.01, amsgrad=True, max_grad_norm=1.0),
    "adamw_bfloat16_moments": lambda p: optim.AdamW(p, lr=0.01, moments_dtype="bfloat16"),  # draws depend on steps
}


def _train_on_a_fixed_batch(model, optimizer, steps):
    """``steps`` steps of softmax cross-entropy on one fixed batch of 16 samples with 4 features, 3 classes."""
    x = fastdl.asarray(np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32))
    labels = fastdl.asarray(np.arange(16) % 3)
    for _ in range(steps):
        _, grad = fastdl.losses.softmax_cross_entropy(model(x), labels)
        model.backward(grad, input_grad=False)
        optimizer.step()


@pytest.mark.parametrize("make", RESUMABLE.values(), ids=RESUMABLE.keys())
def test_state_dict_round_trip_through_a_file_resumes_bit_identically(backend, tmp_path, make):
    def model_and_optimizer():
        model = fastdl.Sequential(fastdl.Dense(4, 8, activation="tanh", seed=0), fastdl.Dense(8, 3, seed=1))
        return model, make(model.parameters())

    train = _train_on_a_fixed_batch

    model, optimizer = model_and_optimizer()
    train(model, optimizer, 5)
    fastdl.save(tmp_path / "checkpoint.npz", model, optimizer, extra={"epoch": 5})
    train(model, optimizer, 5)
    resumed_model, resumed_optimizer = model_and_optimizer()
    assert fastdl.load(tmp_path / "checkpoint.npz", resumed_model, resumed_optimizer) == {"epoch": 5}
    assert resumed_optimizer.steps == 5
    train(resumed_model, resumed_optimizer, 5)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(resumed_model.state_dict()[name], value)
    for key, value in optimizer.state_dict()["state"].items():
        np.testing.assert_array_equal(resumed_optimizer.state_dict()["state"][key], value)


def test_a_checkpoint_resumes_dropout_and_rrelu_bit_identically(backend, tmp_path):
    """The layers' random streams (seed and counter) travel with the checkpoint: a model rebuilt without seeds
    draws, after loading, the masks and slopes the uninterrupted run draws."""
    def build(seed):
        return fastdl.Sequential(fastdl.Dense(4, 8, activation="relu", seed=seed, dropout=0.3),
                                 fastdl.Activation("rrelu", seed=seed), fastdl.Dropout(0.4, seed=seed),
                                 fastdl.Dense(8, 3, seed=seed))

    train = _train_on_a_fixed_batch

    model = build(seed=5)
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    train(model, optimizer, 3)
    fastdl.save(tmp_path / "checkpoint.npz", model, optimizer)
    train(model, optimizer, 3)
    resumed = build(seed=None)  # other seeds: only the checkpoint can make its draws match
    resumed_optimizer = optim.Adam(resumed.parameters(), lr=0.01)
    fastdl.load(tmp_path / "checkpoint.npz", resumed, resumed_optimizer)
    train(resumed, resumed_optimizer, 3)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value, err_msg=name)


def test_a_checkpoint_for_a_model_with_other_randomized_layers_changes_nothing(tmp_path):
    model = fastdl.Sequential(fastdl.Dense(4, 3, seed=0), fastdl.Dropout(0.5, seed=1))
    fastdl.save(tmp_path / "checkpoint.npz", model)
    other = fastdl.Sequential(fastdl.Dense(4, 3, seed=0))
    before = other.state_dict()
    seed, counter = other.layers[0].seed, other.layers[0].counter
    with pytest.raises(ValueError, match="holds 2 random streams .* for a model with 1 randomized layers"):
        fastdl.load(tmp_path / "checkpoint.npz", other)
    assert (other.layers[0].seed, other.layers[0].counter) == (seed, counter)
    for name, value in before.items():
        np.testing.assert_array_equal(other.state_dict()[name], value)


def rosenbrock(point):
    x, y = point
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2, np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


# Settings that reach the minimum from (-1, 1) in 5000 steps; cosine annealing where a constant lr stalls.
CONVERGENCE = [
    (optim.SGD, dict(lr=1.5e-3), False),
    (optim.SGD, dict(lr=1e-3, momentum=0.9), False),
    (optim.SGD, dict(lr=1e-3, momentum=0.9, nesterov=True), False),
    (optim.Adagrad, dict(lr=0.5), False),
    (optim.RMSprop, dict(lr=1e-3, momentum=0.5), True),
    (optim.Adam, dict(lr=0.02), False),
    (optim.AdamW, dict(lr=0.02, weight_decay=0.0), False),
    (optim.LARS, dict(lr=1.0, trust_coefficient=0.02, exclude_vectors=False), True),
    (optim.LAMB, dict(lr=0.01), True),
]
CONVERGENCE_IDS = [f"{cls.__name__}-{'-'.join(kwargs)}" for cls, kwargs, _ in CONVERGENCE]


@pytest.mark.parametrize("cls, kwargs, anneal", CONVERGENCE, ids=CONVERGENCE_IDS)
def test_minimizes_rosenbrock(backend, cls, kwargs, anneal):
    point = fastdl.Parameter(fastdl.asarray(np.array([-1.0, 1.0])))
    optimizer = cls([point], **kwargs)
    schedule = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5000) if anneal else None
    for _ in range(5000):
        _, grad = rosenbrock(fastdl.to_numpy(point.data))
        point.grad = fastdl.asarray(grad)
        optimizer.step()
        if schedule:
            schedule.step()
    value, _ = rosenbrock(fastdl.to_numpy(point.data))
    assert value < 1e-3  # from 4.0 at the start
    np.testing.assert_allclose(fastdl.to_numpy(point.data), [1.0, 1.0], atol=0.05)


@pytest.mark.parametrize("cls, kwargs", [
    (optim.SGD, dict(lr=0.1, momentum=0.9)),
    (optim.Adagrad, dict(lr=0.5)),
    (optim.RMSprop, dict(lr=0.01)),
    (optim.Adam, dict(lr=0.05)),
    (optim.AdamW, dict(lr=0.05, weight_decay=1e-4)),
    (optim.LARS, dict(lr=0.2, trust_coefficient=0.1)),
    (optim.LAMB, dict(lr=0.05)),
], ids=lambda value: getattr(value, "__name__", ""))
def test_solves_least_squares(backend, cls, kwargs):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 5))
    targets = x @ rng.standard_normal((5, 1)) + 0.5
    layer = fastdl.Dense(5, 1, dtype="float64", seed=0)
    optimizer = cls(layer.parameters(), **kwargs)
    schedule = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=1000)
    x, targets = fastdl.asarray(x), fastdl.asarray(targets)
    for _ in range(1000):
        _, grad = fastdl.losses.mse(layer(x), targets)
        layer.backward(grad, input_grad=False)
        optimizer.step()
        schedule.step()
    loss, _ = fastdl.losses.mse(layer(x), targets)
    assert float(loss) < 1e-6  # from about 2 at the start


@pytest.mark.parametrize("how", ["pickle", "pickle, optimizer first", "deepcopy"])
def test_a_model_and_optimizer_pickled_or_copied_together_train_on_as_the_originals(backend, how):
    """Pickle and deepcopy turn the parameters' views of the flat buffers into copies; they must become views of
    the restored buffers again, or the restored optimizer would update arrays its model never reads (it used to
    fail: a ParamGroup's values were checked against an optimizer not yet restored)."""
    import copy
    import pickle

    def batches(seed):
        data = np.random.default_rng(seed)
        return [(backend.asarray(data.standard_normal((16, 4)).astype(np.float32)), backend.asarray(
            data.integers(0, 3, 16))) for _ in range(3)]

    def train(model, optimizer, data):
        for x, y in data:
            _, grad = fastdl.losses.softmax_cross_entropy(model(x), y)
            model.backward(grad, input_grad=False)
            optimizer.step()

    model = fastdl.Sequential(fastdl.Dense(4, 8, activation="relu", seed=1), fastdl.BatchNorm(8),
                              fastdl.Dense(8, 3, seed=2))
    optimizer = optim.Adam(model.parameters(), lr=0.01, weight_decay=0.1)
    train(model, optimizer, batches(0))
    if how == "pickle":
        restored_model, restored_optimizer = pickle.loads(pickle.dumps((model, optimizer)))
    elif how == "deepcopy":
        restored_model, restored_optimizer = copy.deepcopy((model, optimizer))
    else:
        restored_optimizer, restored_model = pickle.loads(pickle.dumps((optimizer, model)))
    assert restored_optimizer.param_groups[0]["weight_decay"] == 0.1 and restored_optimizer.steps == 3
    for data in batches(1), batches(2):
        train(model, optimizer, data)
        train(restored_model, restored_optimizer, data)
        for original, restored in zip(model.parameters(), restored_model.parameters(), strict=True):
            np.testing.assert_array_equal(fastdl.to_numpy(restored.data), fastdl.to_numpy(original.data))
    with pytest.raises(ValueError, match=r"Adam: lr must be in \[0, inf\), got -1.0"):
        restored_optimizer.param_groups[0]["lr"] = -1  # the restored groups are checked as before


def test_a_deep_copied_optimizer_owns_its_own_parameters():
    import copy

    with fastdl.use_backend("cpu"):
        model = fastdl.Sequential(fastdl.Dense(4, 3, seed=1))
        optimizer = optim.SGD(model.parameters(), lr=0.5)
        twin = copy.deepcopy(optimizer)
        before = model[0].weight.data.copy()
        for parameter in twin.param_groups[0]["params"]:
            parameter.grad[...] = 1.0
        twin.step()
        np.testing.assert_array_equal(model[0].weight.data, before)  # the original model is untouched
        np.testing.assert_array_equal(twin.param_groups[0]["params"][0].data, before - 0.5)


@pytest.mark.parametrize("algorithm,options", [
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)), (optim.Adagrad, dict(lr=0.1)),
    (optim.RMSprop, dict(lr=0.01, centered=True, momentum=0.5)), (optim.Adam, dict(lr=0.01, amsgrad=True)),
    (optim.AdamW, dict(lr=0.01, moments_dtype="bfloat16")), (optim.LARS, dict(lr=0.1)), (optim.LAMB, dict(lr=0.01)),
])
def test_every_optimizer_pickles_with_its_model_and_trains_on_identically(algorithm, options):
    """LARS kept its per-buffer masks by id(), which a restored optimizer's new buffers do not have (KeyError)."""
    import pickle

    with fastdl.use_backend("cpu"):
        data = np.random.default_rng(3)
        model = fastdl.Sequential(fastdl.Dense(6, 5, activation="tanh", seed=1), fastdl.Dense(5, 2, seed=2))
        optimizer = algorithm(model.parameters(), **options)
        pairs = [(model, optimizer)]
        for step in range(4):
            x, y = data.standard_normal((8, 6)).astype(np.float32), data.integers(0, 2, 8)
            for pair_model, pair_optimizer in pairs:
                _, grad = fastdl.losses.softmax_cross_entropy(pair_model(x), y)
                pair_model.backward(grad, input_grad=False)
                pair_optimizer.step()
            if step == 1:
                pairs.append(pickle.loads(pickle.dumps((model, optimizer))))
        for original, restored in zip(model.parameters(), pairs[1][0].parameters(), strict=True):
            np.testing.assert_array_equal(restored.data, original.data)
