"""Gradient checking for users and tests: analytic gradients against float64 central finite differences."""

import numpy as np

from .backend import get_backend, to_numpy
from .layers import Module


class GradcheckError(AssertionError):
    pass


def _random_counters(module):
    return [(m, m.counter) for m in module.modules() if hasattr(m, "counter")]


def _numeric_gradient(evaluate, array, eps):
    """d evaluate() / d array, by central differences, perturbing ``array`` in place."""
    grad = np.zeros(array.shape, dtype=np.float64)
    flat, grad_flat = array.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        original = flat[k].item()  # a value: on CuPy flat[k] is a view, which the next line would change too
        flat[k] = original + eps
        plus = evaluate()
        flat[k] = original - eps
        minus = evaluate()
        flat[k] = original
        grad_flat[k] = (plus - minus) / (2 * eps)
    return grad


def _compare(name, analytic, numeric, rtol, atol):
    if not np.allclose(analytic, numeric, rtol=rtol, atol=atol):
        worst = np.unravel_index(np.argmax(np.abs(analytic - numeric)), np.shape(analytic))
        raise GradcheckError(
            f"gradcheck: gradient of {name} differs from finite differences; worst at {worst}: "
            f"analytic {np.asarray(analytic)[worst]:.8g}, numeric {numeric[worst]:.8g}"
        )


def gradcheck(module_or_fn, x, eps=1e-6, rtol=1e-5, atol=1e-7, seed=0):
    """Check a module's backward (input and parameter gradients) or a loss function's gradient.

    ``module_or_fn`` is a ``fastdl.Module`` built with ``dtype="float64"``, or a function ``f(x) -> (value,
    grad)`` such as ``fastdl.losses.mse`` with its target bound. For a module the scalar checked is
    ``sum(forward(x) * v)`` for a fixed random ``v``. Random layers (RReLU) repeat their draws for every
    evaluation. Returns True or raises ``GradcheckError`` naming the worst element.

    >>> gradcheck(fastdl.Dense(3, 2, activation="tanh", dtype="float64"), np.random.rand(4, 3))
    """
    # x and the direction live on the host, where they are perturbed; each evaluation moves them to the active
    # backend (a copy on the GPU), and results come back with to_numpy
    on_device = get_backend().asarray
    x = np.array(to_numpy(x), dtype=np.float64)
    if not isinstance(module_or_fn, Module):
        _, analytic = module_or_fn(on_device(x))
        analytic = np.array(to_numpy(analytic))
        numeric = _numeric_gradient(lambda: float(module_or_fn(on_device(x))[0]), x, eps)
        _compare("the input", analytic, numeric, rtol, atol)
        return True
    module = module_or_fn
    parameters = list(module.named_parameters())
    for name, parameter in parameters:
        if parameter.data.dtype != np.float64:
            raise ValueError(f"gradcheck: build the module with dtype='float64' ({name} is {parameter.data.dtype})")
    counters = _random_counters(module)
    direction = np.random.default_rng(seed).standard_normal(np.shape(module.forward(on_device(x))))

    def evaluate():
        for layer, counter in counters:
            layer.counter = counter
        return float(np.sum(to_numpy(module.forward(on_device(x))) * direction))

    evaluate()
    grad_x = np.array(to_numpy(module.backward(on_device(direction.copy()), input_grad=True)))
    analytic = {name: np.array(to_numpy(parameter.grad)) for name, parameter in parameters}
    _compare("the input", grad_x, _numeric_gradient(evaluate, x, eps), rtol, atol)
    for name, parameter in parameters:
        _compare(name, analytic[name], _numeric_gradient(evaluate, parameter.data, eps), rtol, atol)
    return True
