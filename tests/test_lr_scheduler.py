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
