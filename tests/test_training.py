"""A two-layer network trained by hand-written gradient descent solves a problem no linear model can."""

import numpy as np
import pytest

import fastdl
from fastdl import demo


def test_two_moons_reaches_low_loss_on_every_backend(backend):
    history, accuracy = demo.train_two_moons(steps=300)
    assert history[-1] < 0.15 < history[0]
    assert accuracy > 0.95


@pytest.mark.parametrize("backend_name", ["numpy", "cpu"])  # a property of the model: the emulator adds nothing
def test_a_linear_model_cannot_solve_it(backend_name):
    with fastdl.use_backend(backend_name) as backend:
        _linear_model_loss_after_300_steps(backend)


def _linear_model_loss_after_300_steps(backend):
    x, y = (backend.asarray(a) for a in demo.two_moons(512))
    model = fastdl.Dense(2, 2, seed=0)
    for _ in range(300):
        loss, grad = fastdl.losses.softmax_cross_entropy(model(x), y)
        model.backward(grad, input_grad=False)
        for p in model.parameters():
            p.data -= np.float32(0.5) * p.grad
    assert loss > 0.2  # the tanh network above gets below 0.15 with the same budget


def test_xor(backend):
    x = backend.asarray(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32))
    y = np.array([0, 1, 1, 0])
    model = fastdl.Sequential(fastdl.Dense(2, 8, activation="tanh", seed=3), fastdl.Dense(8, 2, seed=4))
    for _ in range(500):
        loss, grad = fastdl.losses.softmax_cross_entropy(model(x), backend.asarray(y))
        model.backward(grad, input_grad=False)
        for p in model.parameters():
            p.data -= np.float32(0.5) * p.grad
    assert loss < 0.05
    np.testing.assert_array_equal(fastdl.to_numpy(model(x).argmax(axis=1)), y)


def test_command_line_demo_runs(capsys):
    from fastdl.__main__ import main

    assert main(["demo", "--steps", "60"]) == 0
    out = capsys.readouterr().out
    assert "loss fell from" in out
