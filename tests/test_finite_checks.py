"""One NaN policy (fastdl/finite_checks.py): kernels raise finiteness flags on the data they read; on the GPU the
flags stay on the device and a Sequential reads them all at once, at the end of its forward. The emulator runs the
same launchers and flags as the GPU, so it shows both the single read and that a refused batch changes nothing."""

import numpy as np
import pytest

import fastdl
from fastdl.kernels.cuda.flags import DeviceFlag


@pytest.fixture
def emulator():
    with fastdl.use_backend("cuda-emulator") as backend:
        yield backend


def model_and_batch(backend):
    model = fastdl.Sequential(fastdl.Dense(4, 6, seed=1, dropout=0.5), fastdl.BatchNorm(6, activation="rrelu"),
                              fastdl.Sequential(fastdl.Dense(6, 5, seed=3), fastdl.BatchNorm(5)),
                              fastdl.Dense(5, 3, seed=4), fastdl.Activation("tanh"))
    x = backend.asarray(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32))
    return model, x


def state(model):
    return [fastdl.to_numpy(value).copy() for value in model.state_dict().values()] + [
        getattr(layer, "counter", None) for layer in model.modules()]


def assert_same(actual, expected):
    for a, b in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_sequential_forward_reads_its_flags_once_and_no_layer_waits(emulator, monkeypatch):
    reads = {"one": 0, "together": []}
    single, together = DeviceFlag.__bool__, DeviceFlag.read_together

    def counted_bool(flag):
        reads["one"] += 1
        return single(flag)

    def counted_together(flags):
        reads["together"].append(len(flags))
        return together(flags)

    monkeypatch.setattr(DeviceFlag, "__bool__", counted_bool)
    monkeypatch.setattr(DeviceFlag, "read_together", staticmethod(counted_together))
    model, x = model_and_batch(emulator)
    model(x)
    model.eval()
    model(x)
    assert reads == {"one": 0, "together": [6, 6]}  # three Dense, two batch norms, the activation; train and eval
    model.layers[0](x)  # a layer on its own reads its flag at once
    assert reads["one"] == 1


@pytest.mark.parametrize("where", ["input", "inner_batch_norm"])
def test_a_flag_read_at_the_end_still_refuses_the_batch_and_changes_nothing(emulator, where):
    model, x = model_and_batch(emulator)
    model(x)
    before = state(model)
    if where == "input":
        x = x.copy()
        x[3, 1] = np.nan
        message = r"Dense\(4->6, identity, dropout=0.5\): x contains NaN or Inf \(shape \(8, 4\)\)"
        refused, grad = model[0], np.ones((8, 6), np.float32)
    else:
        model[2][0].weight.data[...] = np.inf
        message = r"BatchNorm\(5\): x contains NaN or Inf"
        refused, grad = model[2][1], np.ones((8, 5), np.float32)
    with pytest.raises(ValueError, match=message), np.errstate(all="ignore"):
        model(x)
    if where != "input":
        model[2][0].weight.data[...] = before[list(model.state_dict()).index("2.0.weight")]
    assert_same(state(model), before)
    with pytest.raises(RuntimeError, match="forward"):  # nothing of the refused batch is left to differentiate
        refused.backward(emulator.asarray(grad))


def test_nan_found_on_the_device_is_reported_before_a_later_layers_error(emulator):
    """As on the CPU, where the NaN stops the forward at its layer before the later layer runs."""
    model, x = model_and_batch(emulator)
    model.layers.append(fastdl.Dense(7, 2, seed=5))  # the wrong width: refuses whatever reaches it
    model.layers[-1], model.layers[-2] = model.layers[-2], model.layers[-1]
    x[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"Dense\(4->6, identity, dropout=0.5\): x contains NaN or Inf"), \
            np.errstate(all="ignore"):
        model(x)
    with pytest.raises(ValueError, match=r"Dense\(7->2, identity\): x must have 7 features"):
        model(x[1:])


def test_an_overflowing_product_of_finite_input_is_no_error(backend):
    """A false alarm: the product overflowed, x is finite; the output is returned as it is, on every backend."""
    model = fastdl.Sequential(fastdl.Dense(2, 2, activation="relu", seed=0))
    model[0].weight.data[...] = backend.asarray(np.full((2, 2), 3e38, np.float32))
    with np.errstate(all="ignore"):
        y = fastdl.to_numpy(model(backend.asarray(np.full((3, 2), 2.0, np.float32))))
    assert np.isposinf(y).all()
