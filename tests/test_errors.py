"""Bad input: a clear ValueError/TypeError naming the layer and the shapes, raised before any state changes."""

import numpy as np
import pytest

import fastdl
from fastdl import losses


def snapshot(module):
    return [(p.data.copy(), p.grad.copy()) for p in module.parameters()], getattr(module, "counter", None)


def assert_unchanged(module, before):
    after = snapshot(module)
    assert after[1] == before[1]
    for (data, grad), (data_after, grad_after) in zip(before[0], after[0]):
        np.testing.assert_array_equal(fastdl.to_numpy(data), fastdl.to_numpy(data_after))
        np.testing.assert_array_equal(fastdl.to_numpy(grad), fastdl.to_numpy(grad_after))


@pytest.fixture
def layer(backend):
    layer = fastdl.Dense(4, 3, activation="rrelu", seed=0)
    layer(backend.asarray(np.ones((2, 4), np.float32)))
    layer.backward(backend.asarray(np.ones((2, 3), np.float32)))
    return layer


@pytest.mark.parametrize("bad,error,message", [
    (np.ones((2, 5), np.float32), ValueError, r"Dense\(4->3, rrelu\): x must have 4 features .* shape \(2, 5\)"),
    (np.ones((2, 3, 4), np.float32), ValueError, r"Dense\(4->3, rrelu\): x must have 2 dimensions, got shape \(2, 3, 4\)"),
    (np.ones((2, 4), np.float64), TypeError, r"Dense\(4->3, rrelu\): x has dtype float64, expected float32 \(shape \(2, 4\)\)"),
    (np.array([[1.0, np.nan, 0.0, 0.0]], np.float32), ValueError, r"Dense\(4->3, rrelu\): x contains NaN or Inf \(shape \(1, 4\)\)"),
    ([[1.0, 2.0, 3.0, 4.0]], TypeError, r"Dense\(4->3, rrelu\): x must be a (numpy|cupy) array .* got builtins.list"),
])
def test_dense_forward_rejects_bad_input(backend, layer, bad, error, message):
    before = snapshot(layer)
    with pytest.raises(error, match=message):
        layer(backend.asarray(bad) if isinstance(bad, np.ndarray) else bad)  # the list stays a list
    assert_unchanged(layer, before)


def test_dense_backward_rejects_wrong_grad_shape(backend, layer):
    before = snapshot(layer)
    with pytest.raises(ValueError, match=r"Dense\(4->3, rrelu\): grad_out has shape \(2, 4\), the forward output had \(2, 3\)"):
        layer.backward(backend.asarray(np.ones((2, 4), np.float32)))
    assert_unchanged(layer, before)


def test_backward_before_forward_is_an_error():
    with pytest.raises(RuntimeError, match="backward called before forward"):
        fastdl.Dense(2, 2).backward(np.ones((1, 2), np.float32))


def test_array_of_another_backend_is_rejected():
    class FakeDeviceArray:  # stands in for a CuPy array on a machine without a GPU
        shape, ndim, dtype = (2, 4), 2, np.dtype("float32")

    with fastdl.use_backend("cpu"):
        layer = fastdl.Dense(4, 3)
        with pytest.raises(TypeError, match=r"Dense\(4->3, identity\): x must be a numpy array for the 'cpu' backend, got .*FakeDeviceArray"):
            layer(FakeDeviceArray())


@pytest.mark.parametrize("make,message", [
    (lambda: fastdl.Dense(0, 3), r"Dense: in_features must be a positive integer, got 0"),
    (lambda: fastdl.Dense(3, 2, dtype="int32"), r"Dense: dtype must be float32 or float64, got int32"),
    (lambda: fastdl.Dense(3, 2, activation="nope"), r"unknown activation 'nope'"),
    (lambda: fastdl.Dense(3, 2, activation="prelu"), r"use the layer fastdl.PReLU"),
    (lambda: fastdl.Activation("elu", beta=1.0), r"activation 'elu' takes \['alpha'\], got \['beta'\]"),
    (lambda: fastdl.Activation("gelu", approximate="fast"), r"approximate must be 'none' or 'tanh'"),
    (lambda: fastdl.Activation("rrelu", lower=0.5, upper=0.1), r"rrelu: need 0 <= lower <= upper"),
    (lambda: fastdl.Sequential(fastdl.Dense(2, 2), "relu"), r"Sequential: item 1 is a str, not a fastdl Module"),
])
def test_bad_construction_is_a_clear_error(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_learnable_activation_rejects_wrong_feature_count(backend):
    layer = fastdl.PReLU(5)
    before = snapshot(layer)
    with pytest.raises(ValueError, match=r"PReLU\(5\): x must have 5 features in its last axis, got shape \(3, 4\)"):
        layer(backend.asarray(np.ones((3, 4), np.float32)))
    assert_unchanged(layer, before)


@pytest.mark.parametrize("call,error,message", [
    (lambda b: losses.softmax_cross_entropy(b.asarray(np.zeros((3, 4), np.float32)), b.asarray(np.array([0, 4, 1]))),
     ValueError, r"softmax_cross_entropy: labels must lie in \[0, 4\) for logits of shape \(3, 4\), got values in \[0, 4\]"),
    (lambda b: losses.softmax_cross_entropy(b.asarray(np.zeros((3, 4), np.float32)), b.asarray(np.array([0, -1, 1]))),
     ValueError, r"labels must lie in \[0, 4\)"),
    (lambda b: losses.softmax_cross_entropy(b.asarray(np.zeros((3, 4), np.float32)), b.asarray(np.array([0, 1]))),
     ValueError, r"labels must have shape \(3,\) to match logits \(3, 4\), got \(2,\)"),
    (lambda b: losses.softmax_cross_entropy(b.asarray(np.zeros((3, 4), np.float32)), b.asarray(np.array([0.0, 1.0, 2.0]))),
     TypeError, r"labels must be integers, got dtype float64"),
    (lambda b: losses.softmax_cross_entropy(b.asarray(np.full((1, 2), np.inf, np.float32)), b.asarray(np.array([0]))),
     ValueError, r"softmax_cross_entropy: logits contains NaN or Inf \(shape \(1, 2\)\)"),
    (lambda b: losses.mse(b.asarray(np.zeros((3, 2))), b.asarray(np.zeros((2, 3)))),
     ValueError, r"mse: pred has shape \(3, 2\) but target has shape \(2, 3\)"),
    (lambda b: losses.mse(b.asarray(np.zeros(3)), b.asarray(np.array([0.0, np.nan, 1.0]))),
     ValueError, r"mse: target contains NaN or Inf"),
    (lambda b: losses.binary_cross_entropy_with_logits(b.asarray(np.zeros(3)), b.asarray(np.zeros(3, np.float32))),
     TypeError, r"binary_cross_entropy_with_logits: targets has dtype float32, expected float64"),
    (lambda b: losses.mse(b.asarray(np.zeros(3)), b.asarray(np.zeros(3)), reduction="avg"),
     ValueError, r"mse: reduction must be 'mean' or 'sum', got 'avg'"),
])
def test_losses_reject_bad_input(backend, call, error, message):
    with pytest.raises(error, match=message):
        call(backend)


def test_load_state_dict_of_another_shape_changes_nothing():
    model = fastdl.Sequential(fastdl.Dense(3, 4, seed=0), fastdl.Dense(4, 2, seed=1))
    before = snapshot(model)
    state = model.state_dict()
    state["1.weight"] = np.zeros((5, 2), np.float32)
    with pytest.raises(ValueError, match=r"1.weight has shape \(5, 2\), the model's is \(4, 2\)"):
        model.load_state_dict(state)
    assert_unchanged(model, before)


def test_load_state_dict_with_an_unconvertible_value_changes_nothing():
    model = fastdl.Sequential(fastdl.Dense(3, 4, seed=0), fastdl.Dense(4, 2, seed=1))
    before = snapshot(model)
    state = {name: np.zeros_like(value) for name, value in model.state_dict().items()}  # differs from the model
    state["1.bias"] = np.array(["a", "b"])  # right shape, not numbers: fails only when converted
    with pytest.raises(ValueError):
        model.load_state_dict(state)
    assert_unchanged(model, before)


@pytest.mark.parametrize("make, name", [(lambda: fastdl.Activation("relu"), r"Activation\(relu\)"),
                                        (lambda: fastdl.Dropout(0.5), r"Dropout\(p=0.5\)")])
def test_activation_and_dropout_name_the_argument_and_shape_of_integer_input(backend, make, name):
    with pytest.raises(TypeError, match=name + r": x must be float32 or float64, got int64 \(shape \(2, 3\)\)"):
        make()(backend.asarray(np.ones((2, 3), np.int64)))


@pytest.mark.parametrize("loss, target", [(losses.softmax_cross_entropy, np.array([0, 1, 2])),
                                          (losses.mse, np.zeros((3, 4), np.float32)),
                                          (losses.binary_cross_entropy_with_logits, np.zeros((3, 4), np.float32))])
def test_losses_refuse_a_read_only_out_naming_the_loss(backend, loss, target):
    out = backend.xp.zeros((3, 4), np.float32)
    if backend.name in ("numpy", "cpu"):
        out.flags.writeable = False
    else:
        pytest.skip("CuPy arrays cannot be made read-only")
    with pytest.raises(ValueError, match=loss.__name__ + r": out is read-only \(float32 \(3, 4\)\)"):
        loss(backend.asarray(np.ones((3, 4), np.float32)), backend.asarray(target), out=out)


def test_backward_overwrites_a_stale_nan_gradient(backend):
    """Without accumulate, backward writes the gradient: a NaN left from an earlier step must not survive."""
    model = fastdl.Sequential(fastdl.Dense(3, 4, activation="tanh", seed=0), fastdl.PReLU(4),
                              fastdl.BatchNorm(4), fastdl.Dense(4, 2, seed=1))
    for parameter in model.parameters():
        parameter.grad[...] = np.nan
    model(backend.asarray(np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)))
    model.backward(backend.asarray(np.ones((6, 2), np.float32)))
    for parameter in model.parameters():
        assert np.isfinite(fastdl.to_numpy(parameter.grad)).all()


def test_batchnorm_backward_after_a_failed_forward_is_an_error(backend):
    bn = fastdl.BatchNorm(3)
    bn(backend.asarray(np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)))
    with pytest.raises(ValueError, match="NaN or Inf"):
        bn(backend.asarray(np.full((8, 3), np.nan, np.float32)))
    with pytest.raises(RuntimeError, match=r"BatchNorm\(3\): backward called before forward \(or after a forward that failed\)"):
        bn.backward(backend.asarray(np.ones((8, 3), np.float32)))


def test_activation_backward_before_forward_is_a_clear_error(backend):
    layer = fastdl.Activation("relu")
    with pytest.raises(RuntimeError, match=r"Activation\(relu\): backward called before forward"):
        layer.backward(backend.asarray(np.ones((2, 3), np.float32)))


def _trained_adam():
    model = fastdl.Sequential(fastdl.Dense(3, 2, seed=0))
    optimizer = fastdl.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(2):
        model(np.ones((4, 3), np.float32))
        model.backward(np.ones((4, 2), np.float32))
        optimizer.step()
    return optimizer


def _optimizer_snapshot(optimizer):
    return ({key: np.array(value, copy=True) for key, value in optimizer.state_dict()["state"].items()},
            optimizer.lr, optimizer.steps, optimizer.skipped_steps, optimizer.skip_nonfinite)


@pytest.mark.parametrize("damage,message", [
    (lambda state: state.pop("steps"), r"Adam.load_state_dict: the state has no steps"),
    (lambda state: state.pop("skipped_steps"), r"Adam.load_state_dict: the state has no skipped_steps"),
    (lambda state: state.__setitem__("steps", -5),
     r"Adam.load_state_dict: steps must be a non-negative integer, got -5"),
    (lambda state: state.__setitem__("steps", 2.5), r"Adam.load_state_dict: steps must be a non-negative integer"),
    (lambda state: state.__setitem__("skip_nonfinite", "yes"), r"Adam.load_state_dict: skip_nonfinite must be a bool"),
], ids=["no_steps", "no_skipped_steps", "negative_steps", "fractional_steps", "bad_skip_nonfinite"])
def test_optimizer_load_state_dict_checks_everything_before_changing_anything(damage, message):
    source, target = _trained_adam(), _trained_adam()
    target.lr = 0.5
    target.steps = 7
    state = source.state_dict()
    state["hyperparameters"] = {**state["hyperparameters"], "lr": 0.001}  # would change lr if applied
    state["state"] = {key: np.full_like(value, 3.0) for key, value in state["state"].items()}
    damage(state)
    before = _optimizer_snapshot(target)
    with pytest.raises(ValueError, match=message):
        target.load_state_dict(state)
    after = _optimizer_snapshot(target)
    assert after[1:] == before[1:]
    for key in before[0]:
        np.testing.assert_array_equal(after[0][key], before[0][key])


@pytest.mark.parametrize("refusal", ["one_row", "nan_at_second_batch_norm"])
def test_a_sequential_that_refuses_a_batch_puts_back_what_its_earlier_layers_changed(backend, refusal):
    model = fastdl.Sequential(fastdl.Dense(4, 6, seed=1, dropout=0.5), fastdl.BatchNorm(6, activation="rrelu"),
                              fastdl.Dropout(0.3, seed=2), fastdl.Dense(6, 5, seed=3), fastdl.BatchNorm(5))
    x = backend.asarray(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32))
    model(x)

    def state():
        return [fastdl.to_numpy(value).copy() for value in model.state_dict().values()] + [
            layer.counter for layer in model.layers]

    before = state()
    if refusal == "one_row":
        x, message = x[:1], r"BatchNorm\(6, rrelu\): training needs more than 1 sample"
    else:
        model[3].weight.data[...] = np.inf
        message = r"BatchNorm\(5\): x contains NaN or Inf"
    with pytest.raises(ValueError, match=message), np.errstate(all="ignore"):
        model(x)
    if refusal != "one_row":
        model[3].weight.data[...] = before[list(model.state_dict()).index("3.weight")]
    for actual, expected in zip(state(), before, strict=True):
        np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("entry", ["compile_step", "fit", "evaluate", "Population", "grid_search"])
def test_a_loss_given_by_name_is_a_type_error_naming_the_functions(entry):
    """A string loss used to pass compile_step's checks (falling back with a message that listed the same name as
    accepted) and fail at the first batch with "'str' object is not callable"."""
    model = fastdl.Sequential(fastdl.Dense(4, 3, seed=0))
    optimizer = fastdl.optim.SGD(model.parameters(), lr=0.1)
    x, y = np.ones((4, 4), np.float32), np.zeros(4, np.int64)
    before = snapshot(model[0])
    calls = {
        "compile_step": lambda: fastdl.compile_step(model, "cross_entropy", optimizer),
        "fit": lambda: fastdl.fit(model, "cross_entropy", optimizer, train=(x, y), epochs=1, progress=False),
        "evaluate": lambda: fastdl.evaluate(model, x, y, loss="cross_entropy"),
        "Population": lambda: fastdl.tune.Population([model], "cross_entropy", [optimizer]),
        "grid_search": lambda: fastdl.tune.grid_search(lambda: model, lambda m, **h: optimizer, {"lr": [0.1]},
                                                       train=(x, y), val=(x, y), loss="cross_entropy"),
    }
    with fastdl.use_backend("cpu"), pytest.raises(
            TypeError, match=rf"{entry}: loss must be a loss function such as fastdl.losses.softmax_cross_entropy, "
                             r"fastdl.losses.mse or fastdl.losses.binary_cross_entropy_with_logits, got str "
                             r"'cross_entropy'"):
        calls[entry]()
    assert_unchanged(model[0], before)


@pytest.mark.parametrize("build,error,message", [
    (lambda: fastdl.Dense(3, 2, seed=-1), ValueError, r"Dense: seed must be a non-negative integer below 2\*\*64 or "
                                                      r"None, got -1"),
    (lambda: fastdl.Dropout(0.5, seed="7"), TypeError, r"Dropout: seed must be a non-negative integer or None, "
                                                       r"got '7'"),
    (lambda: fastdl.BatchNorm(3, seed=2 ** 64), ValueError, r"BatchNorm: seed must be a non-negative integer below"),
    (lambda: fastdl.data.batches(np.zeros((4, 2)), np.zeros(4), 2, seed=1.5), TypeError, r"batches: seed must be"),
])
def test_a_bad_seed_is_named_by_its_owner(build, error, message):
    """These surfaced as numpy's "expected non-negative integer" or a SeedSequence TypeError."""
    with pytest.raises(error, match=message):
        build()


def test_fit_refuses_a_bad_seed_before_training():
    model = fastdl.Sequential(fastdl.Dense(3, 2, seed=0))
    optimizer = fastdl.optim.SGD(model.parameters(), lr=0.1)
    before = snapshot(model[0])
    with pytest.raises(ValueError, match=r"fit: seed must be a non-negative integer below 2\*\*64 or None, got -1"):
        fastdl.fit(model, losses.softmax_cross_entropy, optimizer, train=(np.ones((4, 3), np.float32),
                                                                          np.zeros(4, np.int64)), seed=-1,
                   progress=False)
    assert_unchanged(model[0], before)
    assert optimizer.steps == 0
