"""Losses on every backend against the numpy reference, finite differences and (where installed) PyTorch."""

import numpy as np
import pytest

import fastdl
from fastdl import losses

from conftest import assert_close


def _inputs(dtype, seed=0):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((12, 7)) * 3).astype(dtype)
    labels = rng.integers(0, 7, 12)
    target = rng.standard_normal((12, 7)).astype(dtype)
    probabilities = rng.uniform(0, 1, (12, 7)).astype(dtype)
    return logits, labels, target, probabilities


CASES = {
    "cross_entropy": lambda logits, labels, target, p, **kw: losses.softmax_cross_entropy(logits, labels, **kw),
    "cross_entropy_smoothing": lambda logits, labels, target, p, **kw: losses.softmax_cross_entropy(
        logits, labels, label_smoothing=0.2, **kw),
    "mse": lambda logits, labels, target, p, **kw: losses.mse(logits, target, **kw),
    "bce": lambda logits, labels, target, p, **kw: losses.binary_cross_entropy_with_logits(logits, p, **kw),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_an_empty_batch_gives_nan_for_the_mean_and_zero_for_the_sum_as_pytorch(backend, case, reduction):
    inputs = [array[:0] for array in _inputs(np.float32)]
    value, grad = CASES[case](*(backend.asarray(array) for array in inputs), reduction=reduction)
    assert grad.shape == (0, 7)
    if reduction == "sum":
        assert value == 0.0
    else:
        assert np.isnan(value)


def test_cross_entropy_over_no_classes_is_a_clear_error(backend):
    with pytest.raises(ValueError, match="softmax_cross_entropy: logits must have at least one class"):
        losses.softmax_cross_entropy(backend.xp.zeros((3, 0), np.float32), backend.xp.zeros(3, np.int64))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_matches_reference(backend, dtype, case, reduction):
    inputs = _inputs(dtype)
    with fastdl.use_backend("numpy"):
        expected_loss, expected_grad = CASES[case](*inputs, reduction=reduction)
    loss, grad = CASES[case](*(backend.asarray(a) for a in inputs), reduction=reduction)
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    assert loss == pytest.approx(expected_loss, rel=rtol)
    assert_close(grad, expected_grad, dtype)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_over_many_classes_matches_reference(backend, dtype, label_smoothing):
    """From WIDE_CLASSES classes on the CPU kernel runs with 512-bit vectors: the same results."""
    from fastdl.kernels.cpu.losses import WIDE_CLASSES

    rng = np.random.default_rng(5)
    classes = WIDE_CLASSES + 37
    logits = (rng.standard_normal((20, classes)) * 3).astype(dtype)
    labels = rng.integers(0, classes, 20)
    with fastdl.use_backend("numpy"):
        expected_loss, expected_grad = losses.softmax_cross_entropy(logits, labels, label_smoothing=label_smoothing)
    loss, grad = losses.softmax_cross_entropy(backend.asarray(logits), backend.asarray(labels),
                                              label_smoothing=label_smoothing)
    assert loss == pytest.approx(expected_loss, rel=1e-6 if dtype == np.float32 else 1e-13)
    assert_close(grad, expected_grad, dtype)


@pytest.mark.parametrize("case", CASES)
def test_loss_gradient_matches_finite_differences(backend, case):
    logits, labels, target, probabilities = _inputs(np.float64, seed=1)
    with np.errstate(all="ignore"):
        assert fastdl.testing.gradcheck(
            lambda x: CASES[case](backend.asarray(x), backend.asarray(labels), backend.asarray(target),
                                  backend.asarray(probabilities)), logits)


def test_cross_entropy_is_stable_for_huge_logits(backend):
    logits = backend.asarray(np.array([[1000.0, 0.0, -1000.0]], np.float32))
    loss, grad = losses.softmax_cross_entropy(logits, backend.asarray(np.array([2])))
    assert loss == pytest.approx(2000.0)
    np.testing.assert_allclose(fastdl.to_numpy(grad), [[1.0, 0.0, -1.0]], atol=1e-6)


def test_out_receives_the_gradient(backend):
    logits, labels, _, _ = _inputs(np.float32)
    out = backend.xp.empty(logits.shape, np.float32)
    _, grad = losses.softmax_cross_entropy(backend.asarray(logits), backend.asarray(labels), out=out)
    assert grad is out


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_into_out_matches_reference(backend, dtype, label_smoothing, reduction):
    """A call with int64 labels and ``out=`` takes the shortest way to the kernel: the same values."""
    logits, labels, _, _ = _inputs(dtype)
    with fastdl.use_backend("numpy"):
        expected_loss, expected_grad = losses.softmax_cross_entropy(logits, labels, reduction, label_smoothing)
    out = backend.xp.empty(logits.shape, dtype)
    loss, grad = losses.softmax_cross_entropy(backend.asarray(logits), backend.asarray(labels.astype(np.int64)),
                                              reduction, label_smoothing, out=out)
    assert grad is out
    assert loss == pytest.approx(expected_loss, rel=1e-6 if dtype == np.float32 else 1e-13)
    assert_close(grad, expected_grad, dtype)


@pytest.mark.parametrize("labels, logit, message", [
    ([0, 4, 1], 0.0, r"labels must lie in \[0, 4\) for logits of shape \(3, 4\), got values in \[0, 4\]"),
    ([0, -1, 1], 0.0, r"labels must lie in \[0, 4\)"),
    ([0, 1, 2], np.nan, r"logits contains NaN or Inf \(shape \(3, 4\)\)"),
    ([0, 1, 2], np.inf, r"logits contains NaN or Inf \(shape \(3, 4\)\)"),
])
def test_cross_entropy_into_out_refuses_what_the_allocating_call_refuses(backend, labels, logit, message):
    logits = np.zeros((3, 4), np.float32)
    logits[1, 2] = logit
    out = backend.xp.empty((3, 4), np.float32)
    with pytest.raises(ValueError, match="softmax_cross_entropy: " + message):
        losses.softmax_cross_entropy(backend.asarray(logits), backend.asarray(np.array(labels, np.int64)), out=out)


def test_losses_against_torch(dtype):
    torch = pytest.importorskip("torch")
    logits, labels, target, probabilities = _inputs(dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for smoothing in (0.0, 0.3):
        t = torch.tensor(logits, requires_grad=True)
        expected = torch.nn.functional.cross_entropy(t, torch.tensor(labels), label_smoothing=smoothing)
        expected.backward()
        loss, grad = losses.softmax_cross_entropy(logits, labels, label_smoothing=smoothing)
        assert loss == pytest.approx(expected.item(), rel=rtol)
        np.testing.assert_allclose(grad, t.grad.numpy(), rtol=rtol, atol=rtol * 1e-2)
    t = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(t, torch.tensor(probabilities), reduction="sum")
    expected.backward()
    loss, grad = losses.binary_cross_entropy_with_logits(logits, probabilities, reduction="sum")
    assert loss == pytest.approx(expected.item(), rel=rtol)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=rtol, atol=rtol * 1e-2)
    t = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.mse_loss(t, torch.tensor(target))
    expected.backward()
    loss, grad = losses.mse(logits, target)
    assert loss == pytest.approx(expected.item(), rel=rtol)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=rtol, atol=rtol * 1e-2)


# which input of each case gets the bad value, and the name its error must give
BAD_INPUT = {"cross_entropy": (0, "logits"), "cross_entropy_smoothing": (0, "logits"), "mse": (2, "target"),
             "bce": (3, "targets")}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [(0, 0), (11, 6), (5, 2)], ids=["first", "last", "middle"])
def test_nan_or_inf_anywhere_is_an_error_naming_the_input(backend, dtype, case, bad, where):
    """No separate finiteness pass runs any more: the loss itself must come out non-finite for every such input,
    even -inf in a logit that neither the label nor smoothing weighs (where a careless formula gives a finite
    loss)."""
    inputs = list(_inputs(dtype))
    index, name = BAD_INPUT[case]
    inputs[1][:] = 3  # the labels avoid column 2: (5, 2) is a logit with zero target weight without smoothing
    inputs[index][where] = bad
    with pytest.raises(ValueError, match=rf"{name} contains NaN or Inf \(shape \(12, 7\)\)"):
        CASES[case](*(backend.asarray(a) for a in inputs))
    if case == "mse":  # the other input is checked as well
        inputs = list(_inputs(dtype))
        inputs[0][where] = bad
        with pytest.raises(ValueError, match=r"mse: pred contains NaN or Inf"):
            CASES[case](*(backend.asarray(a) for a in inputs))


def test_a_float64_mse_that_overflows_on_finite_input_is_returned(backend):
    pred = backend.asarray(np.array([1e200, 0.0]))
    loss, _ = losses.mse(pred, backend.asarray(np.zeros(2)))
    assert loss == np.inf


@pytest.mark.parametrize("bad", [-1, 7, 2**40], ids=["negative", "classes", "huge"])
def test_cross_entropy_kernel_makes_a_label_out_of_range_nan_without_reading_it(backend, bad):
    # every backend's kernel, called directly: the API relies on this to name bad labels without a pass of its own
    logits, labels, _, _ = _inputs(np.float32)
    labels[4] = bad
    grad = backend.asarray(np.zeros_like(logits))
    loss = backend.kernels.softmax_cross_entropy(backend.asarray(logits), backend.asarray(labels), 0.1, False, grad)
    assert np.isnan(loss)
    good = np.arange(12) != 4
    with fastdl.use_backend("numpy"):
        _, expected = losses.softmax_cross_entropy(logits[good], labels[good], label_smoothing=0.1, reduction="sum")
    assert_close(fastdl.to_numpy(grad)[good], expected / 12, np.float32)  # the kernel took the mean over 12 rows


def test_bad_labels_are_named_before_bad_logits(backend):
    logits, labels, _, _ = _inputs(np.float32)
    logits[0, 0] = np.nan
    labels[3] = 9
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 7\) .* got values in \[0, 9\]"):
        losses.softmax_cross_entropy(backend.asarray(logits), backend.asarray(labels))


def test_swapped_logits_and_labels_are_named_as_such(backend):
    logits = fastdl.asarray(np.zeros((4, 3), np.float32))
    labels = fastdl.asarray(np.array([0, 1, 2, 0]))
    with pytest.raises(TypeError, match=r"were they swapped\? The call is softmax_cross_entropy\(logits, labels\)"):
        fastdl.losses.softmax_cross_entropy(labels, logits)
