"""The demonstration job: a two-layer network learns XOR-like "two moons" data that no linear model separates."""

import time

import numpy as np

from . import losses
from .backend import get_backend
from .layers import Dense, Sequential


def two_moons(samples, noise=0.1, seed=0):
    """Two interleaving half circles (features float32, labels 0/1)."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, np.pi, samples)
    label = rng.integers(0, 2, samples)
    x = np.where(label[:, None] == 0,
                 np.stack([np.cos(angle), np.sin(angle)], axis=1),
                 np.stack([1 - np.cos(angle), 0.5 - np.sin(angle)], axis=1))
    x += rng.normal(0, noise, x.shape)
    return x.astype(np.float32), label.astype(np.int64)


def train_two_moons(steps=300, learning_rate=0.5, hidden=32, seed=0, report=None):
    """Full-batch gradient descent written out by hand; returns (losses per step, final accuracy)."""
    backend = get_backend()
    x, y = (backend.asarray(a) for a in two_moons(512, seed=seed))  # on the active backend's device
    model = Sequential(Dense(2, hidden, activation="tanh", seed=seed), Dense(hidden, 2, seed=seed + 1))
    grad = backend.xp.empty((x.shape[0], 2), dtype=np.float32)
    history = []
    for step in range(steps):
        logits = model(x)
        loss, _ = losses.softmax_cross_entropy(logits, y, out=grad)
        model.backward(grad, input_grad=False)
        for parameter in model.parameters():
            parameter.data -= np.float32(learning_rate) * parameter.grad
        history.append(loss)
        if report is not None:
            report(step, loss)
    accuracy = float((model.eval()(x).argmax(axis=1) == y).mean())  # float() brings a device scalar back
    return history, accuracy


def main(steps=300):
    backend = get_backend().name
    print(f"fastdl demo: a 2-32-2 network (tanh) learns the two-moons problem on the '{backend}' backend")
    start = time.perf_counter()

    def report(step, loss):
        if step % 50 == 0 or step == steps - 1:
            print(f"  step {step:4d}  loss {loss:.4f}")

    history, accuracy = train_two_moons(steps=steps, report=report)
    print(f"loss fell from {history[0]:.4f} to {history[-1]:.4f}; training accuracy {accuracy:.1%} "
          f"({time.perf_counter() - start:.1f} s including JIT compilation)")
    return accuracy
