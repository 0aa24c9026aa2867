"""Learning-rate schedules: PyTorch's values step by step, the textbook's linear decay, warm-up, resume."""

import math

import numpy as np
import pytest

import fastdl
from fastdl import optim
from fastdl.optim import lr_scheduler

SCHEDULES = {
    "linear": (lambda o: lr_scheduler.LinearLR(o, start_factor=1.0, end_factor=0.05, total_iters=20), "LinearLR",
               dict(start_factor=1.0, end_factor=0.05, total_iters=20)),
    "step": (lambda o: lr_scheduler.StepLR(o, step_size=7, gamma=0.5), "StepLR", dict(step_size=7, gamma=0.5)),
    "exponential": (lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9), "ExponentialLR", dict(gamma=0.9)),
    "cosine": (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=25, eta_min=0.01), "CosineAnnealingLR",
               dict(T_max=25, eta_min=0.01)),
    "lambda": (lambda o: lr_scheduler.LambdaLR(o, lambda t: 1 / (1 + t)), "LambdaLR",
               dict(lr_lambda=lambda t: 1 / (1 + t))),
    "multistep": (lambda o: lr_scheduler.MultiStepLR(o, milestones=[12, 4, 20], gamma=0.3), "MultiStepLR",
                  dict(milestones=[4, 12, 20], gamma=0.3)),
    "one_cycle": (lambda o: lr_scheduler.OneCycleLR(o, max_lr=1.0, total_steps=30, cycle_momentum=False),
                  "OneCycleLR", dict(max_lr=1.0, total_steps=30, cycle_momentum=False)),
    "one_cycle_three_phase_linear": (
        lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.5, epochs=3, steps_per_epoch=11, pct_start=0.25,
                                          anneal_strategy="linear", three_phase=True, cycle_momentum=False,
                                          div_factor=10.0, final_div_factor=100.0),
        "OneCycleLR", dict(max_lr=0.5, epochs=3, steps_per_epoch=11, pct_start=0.25, anneal_strategy="linear",
                           three_phase=True, cycle_momentum=False, div_factor=10.0, final_div_factor=100.0)),
    "warmup_then_cosine": (
        lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.LinearLR(o, 0.1, 1.0, 5),
                                                lr_scheduler.CosineAnnealingLR(o, 25, eta_min=0.001)], [5]),
        "SequentialLR", lambda torch, o: dict(schedulers=[torch.optim.lr_scheduler.LinearLR(o, 0.1, 1.0, 5),
                                                          torch.optim.lr_scheduler.CosineAnnealingLR(o, 25, 0.001)],
                                              milestones=[5])),
}


def make_optimizer(lr=0.1):
    return optim.SGD([fastdl.Parameter(np.zeros(3))], lr=lr)


def trajectory(schedule, steps=30):
    values = [schedule.optimizer.lr]
    for _ in range(steps):
        schedule.optimizer.step()
        schedule.step()
        values.append(schedule.optimizer.lr)
    return values


@pytest.mark.parametrize("name", SCHEDULES)
def test_matches_torch_lr_scheduler(name):
    torch = pytest.importorskip("torch")
    make, torch_name, torch_kwargs = SCHEDULES[name]
    torch_optimizer = torch.optim.SGD([torch.zeros(3, requires_grad=True)], lr=0.1)
    if callable(torch_kwargs):  # schedules of schedules are built on the torch optimizer
        torch_kwargs = torch_kwargs(torch, torch_optimizer)
    torch_schedule = getattr(torch.optim.lr_scheduler, torch_name)(torch_optimizer, **torch_kwargs)
    expected = [torch_optimizer.param_groups[0]["lr"]]
    for _ in range(30):
        torch_optimizer.step()
        torch_schedule.step()
        expected.append(torch_optimizer.param_groups[0]["lr"])
    np.testing.assert_allclose(trajectory(make(make_optimizer())), expected, rtol=1e-12, atol=1e-15)


def test_linear_lr_is_the_textbook_decay():
    schedule = lr_scheduler.LinearLR(make_optimizer(0.1), start_factor=1.0, end_factor=0.01, total_iters=10)
    values = trajectory(schedule, 15)
    for t in range(16):
        fraction = min(t, 10) / 10
        assert values[t] == pytest.approx((1 - fraction) * 0.1 + fraction * 0.001, rel=1e-12)


def test_warmup_then_cosine():
    schedule = lr_scheduler.WarmupLR(make_optimizer(0.1), warmup_steps=4, start_factor=0.0,
                                     after=lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=10))
    values = trajectory(schedule, 14)
    np.testing.assert_allclose(values[:5], [0.0, 0.025, 0.05, 0.075, 0.1], rtol=1e-12)
    for t in range(4, 15):
        assert values[t] == pytest.approx(0.05 * (1 + math.cos(math.pi * (t - 4) / 10)), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("name", SCHEDULES)
def test_state_dict_resumes_the_schedule(name):
    make = SCHEDULES[name][0]
    uninterrupted = trajectory(make(make_optimizer()), 30)
    first = make(make_optimizer())
    trajectory(first, 12)
    optimizer = make_optimizer(0.5)  # a fresh run with another lr: the state restores the schedule's own
    second = make(optimizer)
    second.load_state_dict(first.state_dict())
    assert trajectory(second, 18) == uninterrupted[12:]


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="StepLR: step_size must be a positive integer, got 0"):
        lr_scheduler.StepLR(make_optimizer(), step_size=0)
    with pytest.raises(ValueError, match=r"LinearLR: start_factor must be in \(0, 1\]"):
        lr_scheduler.LinearLR(make_optimizer(), start_factor=0.0)
    with pytest.raises(TypeError, match="LambdaLR: lr_lambda must be callable"):
        lr_scheduler.LambdaLR(make_optimizer(), 0.5)


@pytest.mark.parametrize("algorithm", ["sgd_momentum", "adam"])
def test_one_cycle_moves_momentum_or_beta1_as_torch_does(algorithm):
    torch = pytest.importorskip("torch")

    def run(optimizer, schedule, read):
        values = []
        for _ in range(20):
            values.append(read(optimizer))
            optimizer.step()
            schedule.step()
        return values

    if algorithm == "adam":
        ours = optim.Adam([fastdl.Parameter(np.zeros(3))], lr=0.1)
        theirs = torch.optim.Adam([torch.zeros(3, requires_grad=True)], lr=0.1)
        read_ours, read_theirs = (lambda o: (o.lr, o.betas[0])), (lambda o: (o.param_groups[0]["lr"],
                                                                               o.param_groups[0]["betas"][0]))
    else:
        ours = optim.SGD([fastdl.Parameter(np.zeros(3))], lr=0.1, momentum=0.9)
        theirs = torch.optim.SGD([torch.zeros(3, requires_grad=True)], lr=0.1, momentum=0.9)
        read_ours, read_theirs = (lambda o: (o.lr, o.momentum)), (lambda o: (o.param_groups[0]["lr"],
                                                                               o.param_groups[0]["momentum"]))
    expected = run(theirs, torch.optim.lr_scheduler.OneCycleLR(theirs, max_lr=1.0, total_steps=20), read_theirs)
    actual = run(ours, lr_scheduler.OneCycleLR(ours, max_lr=1.0, total_steps=20), read_ours)
    np.testing.assert_allclose(actual, expected, rtol=1e-12)


def test_one_cycle_refuses_to_step_past_its_last_step_and_to_cycle_a_missing_momentum():
    schedule = lr_scheduler.OneCycleLR(make_optimizer(), max_lr=1.0, total_steps=3, cycle_momentum=False)
    for _ in range(3):
        schedule.step()
    with pytest.raises(ValueError, match="OneCycleLR: stepped 4 times, past total_steps=3"):
        schedule.step()
    with pytest.raises(ValueError, match="OneCycleLR: cycle_momentum needs an optimizer with betas"):
        lr_scheduler.OneCycleLR(make_optimizer(), max_lr=1.0, total_steps=3)


METRICS = [1.0, 0.9, 0.95, 0.95, 0.96, 0.97, 0.8, 0.81, 0.82, 0.83, 0.84, 0.85, 0.7, 0.7, 0.7, 0.7, 0.7]


@pytest.mark.parametrize("options", [dict(), dict(mode="max", threshold_mode="abs", threshold=0.05),
                                     dict(patience=1, cooldown=2, min_lr=0.004, factor=0.5)])
def test_reduce_on_plateau_matches_torch(options):
    torch = pytest.importorskip("torch")
    options = {"patience": 2, **options}
    theirs = torch.optim.SGD([torch.zeros(3, requires_grad=True)], lr=0.1)
    torch_schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs, **options)
    schedule = lr_scheduler.ReduceLROnPlateau(make_optimizer(), **options)
    for value in METRICS:
        torch_schedule.step(value)
        schedule.step(value)
        assert schedule.optimizer.lr == pytest.approx(theirs.param_groups[0]["lr"], rel=1e-12)


def test_fit_feeds_the_validation_loss_to_reduce_on_plateau():
    model = fastdl.Sequential(fastdl.Dense(4, 2, seed=0))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    schedule = lr_scheduler.ReduceLROnPlateau(optimizer, patience=0, factor=0.5, threshold=0.5)  # better: halved
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((32, 4)).astype(np.float32), rng.integers(0, 2, 32))
    fastdl.fit(model, fastdl.losses.softmax_cross_entropy, optimizer, data, val=data, epochs=3, scheduler=schedule,
               progress=False)
    assert schedule.last_epoch == 3 and optimizer.lr == pytest.approx(0.1 * 0.5**2)  # best set once, then 2 cuts
    with pytest.raises(ValueError, match="fit: ReduceLROnPlateau follows the validation loss; pass val="):
        fastdl.fit(model, fastdl.losses.softmax_cross_entropy, optimizer, data, epochs=1, scheduler=schedule,
                   progress=False)
