"""Module.to and Optimizer.to: a model trained on one backend continues on another exactly where it stopped.

Between "cpu" and "cuda-emulator" (both hold numpy arrays, different kernels) the test checks the bookkeeping:
flat-buffer views, optimizer state, buffers, dropped saved activations. The host <-> device copies themselves
need a GPU (the same test body runs to and from "gpu" where one is present)."""

import numpy as np
import pytest

import fastdl


def _model():
    return fastdl.Sequential(fastdl.Dense(6, 16, activation="relu", seed=1), fastdl.BatchNorm(16),
                             fastdl.Dense(16, 3, seed=2))


def _train(model, optimizer, x, y, steps):
    for _ in range(steps):
        model.zero_grad()
        loss, grad = fastdl.losses.softmax_cross_entropy(model(x), y)
        model.backward(grad, input_grad=False)
        optimizer.step()
    return loss


def _targets():
    names = ["numpy", "cuda-emulator"]
    try:
        fastdl.backend._load("gpu")
        names.append("gpu")
    except RuntimeError:
        pass
    return names


OPTIMIZERS = {"adam": lambda p: fastdl.optim.Adam(p, lr=0.01),
              "adamw_bfloat16_moments": lambda p: fastdl.optim.AdamW(p, lr=0.01, moments_dtype="bfloat16")}


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
@pytest.mark.parametrize("target", _targets())
def test_training_continues_on_another_backend(target, make_optimizer):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 6)).astype(np.float32), rng.integers(0, 3, 32)
    with fastdl.use_backend("cpu"):
        reference, moved = _model(), _model()
        reference_optimizer = make_optimizer(reference.parameters())
        moved_optimizer = make_optimizer(moved.parameters())
        _train(reference, reference_optimizer, x, y, 3)
        _train(moved, moved_optimizer, x, y, 3)
        expected_loss = _train(reference, reference_optimizer, x, y, 3)
    with fastdl.use_backend(target) as backend:
        moved.to(target)
        moved_optimizer.to(target)
        assert all(isinstance(p.data, backend.array_type) for p in moved.parameters())
        dtypes = [[a.dtype for a in state.values()] for state in reference_optimizer.state]
        assert [[a.dtype for a in state.values()] for state in moved_optimizer.state] == dtypes  # bfloat16: uint16
        with pytest.raises(RuntimeError, match="backward called before forward"):
            moved.backward(backend.xp.zeros((32, 3), np.float32))
        loss = _train(moved, moved_optimizer, backend.asarray(x), backend.asarray(y), 3)
        # the parameters are still views of the optimizer's flat buffer: its steps reach the model
        flat = moved_optimizer.groups[0]
        assert backend.xp.shares_memory(moved.parameters()[0].data, flat.data)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    for (name, a), b in zip(reference.state_dict().items(), moved.state_dict().values()):
        np.testing.assert_allclose(b, a, rtol=2e-5, atol=2e-6, err_msg=name)
    with fastdl.use_backend("cpu"):
        moved.to("cpu")
        moved_optimizer.to("cpu")
        _train(moved, moved_optimizer, x, y, 1)


def test_an_unknown_backend_is_a_clear_error_and_moves_nothing():
    model = fastdl.Dense(4, 2, seed=0)
    weight = model.weight.data
    with pytest.raises(ValueError, match="unknown fastdl backend 'tpu'"):
        model.to("tpu")
    assert model.weight.data is weight
