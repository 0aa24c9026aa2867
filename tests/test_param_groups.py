"""Parameter groups: PyTorch's form and results, the weight-decay mask and split, schedules per group, state dicts,
bad input, and compile_step."""

import numpy as np
import pytest

import fastdl
from fastdl import optim
from test_optim import SHAPES, gradients, make_parameters

FIRST, SECOND = [0, 2], [1, 3]  # the two groups: indices into test_optim's SHAPES

# (name, class, the optimizer's arguments, the second group's overrides)
GROUPED = [
    ("sgd", optim.SGD, dict(lr=0.1, weight_decay=0.1), dict(lr=0.02, weight_decay=0.0)),
    ("momentum", optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.01), dict(momentum=0.5, dampening=0.1)),
    ("momentum_off", optim.SGD, dict(lr=0.05, momentum=0.9), dict(momentum=0.0)),
    ("nesterov", optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True), dict(lr=0.01, momentum=0.7)),
    ("adagrad", optim.Adagrad, dict(lr=0.1, lr_decay=0.01), dict(lr=0.05, weight_decay=0.1, eps=1e-6)),
    ("rmsprop", optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True), dict(alpha=0.9, momentum=0.0)),
    ("adam", optim.Adam, dict(lr=0.01, weight_decay=0.1), dict(lr=0.002, betas=(0.8, 0.99), weight_decay=0.0)),
    ("amsgrad", optim.Adam, dict(lr=0.01, amsgrad=True), dict(eps=1e-4)),
    ("adamw", optim.AdamW, dict(lr=0.01, weight_decay=0.05), dict(weight_decay=0.0, lr=0.03)),
]
NOT_IN_TORCH = [
    ("lars", optim.LARS, dict(lr=0.5, weight_decay=0.01), dict(lr=0.1, weight_decay=0.0, trust_coefficient=0.01)),
    ("lamb", optim.LAMB, dict(lr=0.01, weight_decay=0.1), dict(lr=0.005, weight_decay=0.0, betas=(0.8, 0.99))),
]
ALL = GROUPED + NOT_IN_TORCH
STEP_TOLERANCES = {np.float32: (2e-5, 2e-6), np.float64: (1e-12, 1e-13)}


def groups_of(parameters, overrides):
    return [{"params": [parameters[i] for i in FIRST]}, {"params": [parameters[i] for i in SECOND], **overrides}]


def train(parameters, optimizers, dtype, steps=30):
    for grads in gradients(dtype, steps):
        for parameter, grad in zip(parameters, grads):
            parameter.grad = fastdl.asarray(grad)
        for optimizer in optimizers:
            optimizer.step()
    return [fastdl.to_numpy(p.data).copy() for p in parameters]


@pytest.mark.parametrize("name, cls, kwargs, overrides", GROUPED, ids=[g[0] for g in GROUPED])
def test_groups_match_torch(name, cls, kwargs, overrides):
    torch = pytest.importorskip("torch")
    tensors = [torch.tensor(p.data, requires_grad=True) for p in make_parameters(np.float64)]
    torch_optimizer = getattr(torch.optim, cls.__name__)(groups_of(tensors, overrides), **kwargs)
    for grads in gradients(np.float64, 30):
        for tensor, grad in zip(tensors, grads):
            tensor.grad = torch.tensor(grad)
        torch_optimizer.step()
    parameters = make_parameters(np.float64)
    actual = train(parameters, [cls(groups_of(parameters, overrides), **kwargs)], np.float64)
    for got, tensor in zip(actual, tensors):
        np.testing.assert_allclose(got, tensor.detach().numpy(), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("name, cls, kwargs, overrides", ALL, ids=[g[0] for g in ALL])
def test_one_grouped_optimizer_equals_one_optimizer_per_group(backend, dtype, name, cls, kwargs, overrides):
    """The grouped update (one kernel, a row per group) gives exactly what two optimizers give, one per group: each
    piece of the buffer reads its own group's row. LARS and LAMB included (their trust ratios are per tensor)."""
    grouped = make_parameters(dtype)
    actual = train(grouped, [cls(groups_of(grouped, overrides), **kwargs)], dtype)
    separate = make_parameters(dtype)
    optimizers = [cls([separate[i] for i in FIRST], **kwargs),
                  cls([separate[i] for i in SECOND], **{**kwargs, **overrides})]
    expected = train(separate, optimizers, dtype)
    for got, want in zip(actual, expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name, cls, kwargs, overrides", ALL, ids=[g[0] for g in ALL])
def test_backend_matches_reference_with_groups(backend, dtype, name, cls, kwargs, overrides):
    with fastdl.use_backend("numpy"):
        parameters = make_parameters(dtype)
        expected = train(parameters, [cls(groups_of(parameters, overrides), **kwargs, max_grad_norm=2.0)], dtype)
    parameters = make_parameters(dtype)
    actual = train(parameters, [cls(groups_of(parameters, overrides), **kwargs, max_grad_norm=2.0)], dtype)
    rtol, atol = STEP_TOLERANCES[dtype]
    for got, want in zip(actual, expected):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def test_adam_bfloat16_moments_with_groups_match_the_reference(backend):
    kwargs = dict(lr=0.01, weight_decay=0.1, moments_dtype="bfloat16")
    with fastdl.use_backend("numpy"):
        parameters = make_parameters(np.float32)
        expected = train(parameters, [optim.AdamW(groups_of(parameters, dict(weight_decay=0.0)), **kwargs)],
                         np.float32)
    parameters = make_parameters(np.float32)
    actual = train(parameters, [optim.AdamW(groups_of(parameters, dict(weight_decay=0.0)), **kwargs)], np.float32)
    for got, want in zip(actual, expected):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_hyperparameters_are_read_and_set_per_group_between_steps():
    parameters = make_parameters(np.float64)
    optimizer = optim.SGD(groups_of(parameters, dict(lr=0.5)), lr=0.1)
    assert [group["lr"] for group in optimizer.param_groups] == [0.1, 0.5]
    assert optimizer.lr == 0.1  # the first group's
    optimizer.param_groups[1]["lr"] = 0.0  # freezes the second group
    before = [fastdl.to_numpy(p.data).copy() for p in parameters]
    after = train(parameters, [optimizer], np.float64, steps=1)
    assert all(np.array_equal(after[i], before[i]) for i in SECOND)
    assert not any(np.array_equal(after[i], before[i]) for i in FIRST)
    optimizer.lr = 0.3  # the optimizer-wide setter sets every group
    assert [group["lr"] for group in optimizer.param_groups] == [0.3, 0.3]
    with pytest.raises(ValueError, match="lr must be in"):
        optimizer.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="params cannot change"):
        optimizer.param_groups[0]["params"] = []
    assert optimizer.param_groups[0]["lr"] == 0.3
    # update() and |= check every value before setting any
    for change in (lambda group: group.update(dampening=0.5, lr=-1.0), lambda group: group.__ior__({"dampening": 0.5,
                                                                                                  "lr": -1.0})):
        with pytest.raises(ValueError, match="lr must be in"):
            change(optimizer.param_groups[0])
        assert (optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["dampening"]) == (0.3, 0.0)
    optimizer.param_groups[0] |= {"lr": 0.2}
    assert optimizer.param_groups[0]["lr"] == 0.2
    optimizer.param_groups[0]["name"] = "weights"  # other keys are kept, as PyTorch keeps them


def test_weight_decay_mask_equals_explicit_groups():
    model = fastdl.Sequential(fastdl.Dense(4, 3, activation="relu", seed=0), fastdl.BatchNorm(3),
                              fastdl.Dense(3, 2, seed=1))
    copy = fastdl.Sequential(fastdl.Dense(4, 3, activation="relu", seed=0), fastdl.BatchNorm(3),
                             fastdl.Dense(3, 2, seed=1))
    third = fastdl.Sequential(fastdl.Dense(4, 3, activation="relu", seed=0), fastdl.BatchNorm(3),
                              fastdl.Dense(3, 2, seed=1))
    masked = optim.AdamW(model.named_parameters(), lr=0.01, weight_decay=0.1,
                         weight_decay_mask=lambda name, p: name.endswith("weight") and len(p.shape) == 2)
    listed = optim.AdamW(third.parameters(), lr=0.01, weight_decay=0.1,
                         weight_decay_mask=[len(p.shape) == 2 for p in third.parameters()])
    explicit = optim.AdamW(optim.weight_decay_groups(copy, 0.1), lr=0.01, weight_decay=0.1)
    assert [g["weight_decay"] for g in masked.param_groups] == [0.1, 0.0]
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    results = []
    for net, optimizer in ((model, masked), (copy, explicit), (third, listed)):
        for _ in range(3):
            out = net(x)
            net.backward(np.ones_like(out), input_grad=False)
            optimizer.step()
        results.append([p.data.copy() for p in net.parameters()])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_weight_decay_groups_exempt_biases_and_normalization():
    model = fastdl.Sequential(fastdl.Dense(4, 3, seed=0), fastdl.BatchNorm(3), fastdl.Dense(3, 2, seed=1))
    decayed, others = optim.weight_decay_groups(model, 0.05)
    assert decayed["weight_decay"] == 0.05 and others["weight_decay"] == 0.0
    names = dict((id(p), n) for n, p in model.named_parameters())
    assert sorted(names[id(p)] for p in decayed["params"]) == ["0.weight", "2.weight"]
    assert sorted(names[id(p)] for p in others["params"]) == ["0.bias", "1.bias", "1.weight", "2.bias"]


@pytest.mark.parametrize("make, error, message", [
    (lambda p: optim.SGD([{"params": p[:2]}, {"params": p[1:]}], lr=0.1), ValueError, "groups 0 and 1"),
    (lambda p: optim.Adam([{"params": p, "amsgrad": True}]), ValueError, "whole optimizer"),
    (lambda p: optim.Adam([{"lr": 0.1}]), ValueError, "has no 'params'"),
    (lambda p: optim.Adam([{"params": []}]), ValueError, "has no parameters"),
    (lambda p: optim.Adam([{"params": p[:1]}, p[1]]), TypeError, "mixes parameter groups"),
    (lambda p: optim.Adam([{"params": p, "lr": -1.0}]), ValueError, "lr must be in"),
    (lambda p: optim.AdamW(p, weight_decay_mask=[True]), ValueError, "4 booleans"),
    (lambda p: optim.SGD([{"params": set(p)}], lr=0.1), TypeError, "ordered collection"),
    (lambda p: optim.SGD(set(p), lr=0.1), TypeError, "ordered collection"),
    (lambda p: optim.Adagrad(p, lr=0.1, weight_decay_mask=lambda name, q: True, lr_decay=-1), ValueError, "lr_decay"),
    (lambda p: optim.SGD([{"params": p, "momentum": 0.9, "dampening": 0.5}], lr=0.1, nesterov=True), ValueError,
     "Nesterov"),
])
def test_bad_groups_are_clear_errors_before_anything_moves(make, error, message):
    parameters = make_parameters(np.float32)
    with pytest.raises(error, match=message):
        make(parameters)
    assert all(p._flat is None for p in parameters)  # no flat buffer was built: the parameters are untouched


def test_momentum_cannot_be_switched_on_without_a_buffer():
    optimizer = optim.SGD(make_parameters(np.float32), lr=0.1)
    with pytest.raises(ValueError, match="cannot be switched on"):
        optimizer.param_groups[0]["momentum"] = 0.9
    grouped = optim.SGD(groups_of(make_parameters(np.float32), dict(momentum=0.0)), lr=0.1, momentum=0.9)
    grouped.param_groups[1]["momentum"] = 0.5  # the buffer exists: any group may use it


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "plateau", "sequential"])
def test_schedules_act_on_every_group_as_torch_does(schedule):
    torch = pytest.importorskip("torch")
    ours = optim.SGD(groups_of(make_parameters(np.float64), dict(lr=0.01)), lr=0.1, momentum=0.9)
    tensors = [torch.zeros(shape, requires_grad=True) for shape in SHAPES]
    theirs = torch.optim.SGD(groups_of(tensors, dict(lr=0.01)), lr=0.1, momentum=0.9)

    def build(module, optimizer):
        if schedule == "cosine":
            return module.CosineAnnealingLR(optimizer, T_max=10, eta_min=0.001)
        if schedule == "onecycle":
            return module.OneCycleLR(optimizer, max_lr=[1.0, 0.2], total_steps=12)
        if schedule == "plateau":
            return module.ReduceLROnPlateau(optimizer, factor=0.5, patience=1, min_lr=[0.0, 0.004])
        return module.SequentialLR(optimizer, [module.LinearLR(optimizer, 0.1, 1.0, 3),
                                               module.CosineAnnealingLR(optimizer, 7)], [3])

    mine, reference = build(optim.lr_scheduler, ours), build(torch.optim.lr_scheduler, theirs)
    for step in range(10):
        if schedule == "plateau":
            mine.step(1.0)
            reference.step(1.0)
        else:
            theirs.step()
            mine.step()
            reference.step()
        for group, torch_group in zip(ours.param_groups, theirs.param_groups):
            assert group["lr"] == pytest.approx(torch_group["lr"], rel=1e-12, abs=1e-15), step
            assert group["momentum"] == pytest.approx(torch_group["momentum"], rel=1e-12), step


def test_state_dict_round_trip_keeps_every_group(tmp_path):
    model = fastdl.Sequential(fastdl.Dense(4, 3, activation="relu", seed=0), fastdl.Dense(3, 2, seed=1))
    optimizer = optim.AdamW(optim.weight_decay_groups(model, 0.1), lr=0.01)
    optimizer.param_groups[1]["lr"] = 0.005
    x = np.ones((2, 4), np.float32)
    out = model(x)
    model.backward(np.ones_like(out), input_grad=False)
    optimizer.step()
    fastdl.save(tmp_path / "run", model, optimizer)
    fresh = fastdl.Sequential(fastdl.Dense(4, 3, activation="relu", seed=5), fastdl.Dense(3, 2, seed=6))
    restored = optim.AdamW(optim.weight_decay_groups(fresh, 0.1), lr=0.01)
    fastdl.load(tmp_path / "run", fresh, restored)
    assert [dict(g, params=None) for g in restored.param_groups] == [dict(g, params=None)
                                                                     for g in optimizer.param_groups]
    other = fastdl.Sequential(fastdl.Dense(4, 3, activation="relu"), fastdl.Dense(3, 2))
    single = optim.AdamW([p for group in optim.weight_decay_groups(other, 0.1) for p in group["params"]])  # same order
    with pytest.raises(ValueError, match="parameter groups"):
        single.load_state_dict(optimizer.state_dict())
    assert single.param_groups[0]["lr"] == 0.001  # nothing changed


def test_a_state_from_before_groups_loads_into_every_group():
    parameters = make_parameters(np.float32)
    optimizer = optim.Adam(groups_of(parameters, dict(lr=0.5)), lr=0.1)
    state = optimizer.state_dict()
    del state["param_groups"]
    state["hyperparameters"]["lr"] = 0.02
    optimizer.load_state_dict(state)
    assert [group["lr"] for group in optimizer.param_groups] == [0.02, 0.02]


def test_compile_step_with_groups_equals_the_layer_path():
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((16, 6)).astype(np.float32), rng.integers(0, 3, 16)) for _ in range(4)]
    results = []
    with fastdl.use_backend("cpu"):
        for compiled in (True, False):
            model = fastdl.Sequential(fastdl.Dense(6, 8, activation="relu", seed=0), fastdl.Dense(8, 3, seed=1))
            optimizer = optim.AdamW(optim.weight_decay_groups(model, 0.1), lr=0.01, max_grad_norm=1.0)
            optimizer.param_groups[1]["lr"] = 0.003
            step = fastdl.compile_step(model, fastdl.losses.softmax_cross_entropy, optimizer)
            assert step.compiled
            for index, (x, y) in enumerate(batches):
                optimizer.param_groups[0]["lr"] = 0.01 / (index + 1)  # a schedule between steps
                if compiled:
                    step(x, y)
                else:
                    _, grad = fastdl.losses.softmax_cross_entropy(model(x), y)
                    model.backward(grad, input_grad=False)
                    optimizer.step()
            results.append([p.data.copy() for p in model.parameters()])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
