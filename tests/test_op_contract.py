"""The op contract (kernels/ops.py): every backend offers exactly its ops, each with exactly its parameters in order,
and the API calls no kernel outside it. A backend whose kernel gains, loses or reorders a parameter fails here."""

import importlib
import inspect
import pathlib
import re

import pytest

import fastdl
from fastdl.kernels import ops

BACKEND_PACKAGES = ["reference", "cpu", "cuda"]  # cuda's launchers import without CuPy (the emulator runs them)


@pytest.mark.parametrize("package", BACKEND_PACKAGES)
def test_every_backend_offers_exactly_the_ops(package):
    backend = importlib.import_module(f"fastdl.kernels.{package}")
    assert sorted(backend.__all__) == sorted(ops.OPS)


@pytest.mark.parametrize("package", BACKEND_PACKAGES)
@pytest.mark.parametrize("op", list(ops.OPS))
def test_every_op_takes_exactly_the_contracts_parameters_in_order(package, op):
    function = getattr(importlib.import_module(f"fastdl.kernels.{package}"), op)
    parameters = inspect.signature(function).parameters
    assert tuple(parameters) == ops.parameter_names(op), f"{package}.{op}"
    assert all(p.kind == p.POSITIONAL_OR_KEYWORD for p in parameters.values())


def test_the_api_calls_only_ops_of_the_contract():
    source = "\n".join(path.read_text() for path in pathlib.Path(fastdl.__file__).parent.rglob("*.py"))
    called = set(re.findall(r"(?<![\w])kernels\.(\w+)\(", source))  # backend.kernels.op(, kernels.op(
    assert called and called <= set(ops.OPS), sorted(called - set(ops.OPS))


def test_gather_names_what_a_backend_lacks():
    class Partial:
        dense_forward = staticmethod(lambda x, weight, bias, code, params, seed, counter, z_out, y_out: None)

    with pytest.raises(ImportError, match=r"the test backend's ops do not match kernels/ops.py: activation_forward "
                                          r"\(missing\)"):
        ops.gather("test", Partial)


def test_the_elementwise_updates_are_the_ones_compile_step_can_run():
    """Read off the contract's signatures: a kernel of (param, grad, state arrays, grad_scale, groups) only; LARS
    (trust ratios), LAMB (per-tensor norms) and the bfloat16 Adam (a random stream) are not element-wise updates."""
    from fastdl.kernels.cpu import optim

    assert {"sgd_step", "sgd_momentum_step", "adagrad_step", "rmsprop_step", "adam_step"} <= set(ops.ELEMENTWISE_UPDATES)
    assert not {"lars_step", "lamb_apply", "adam_bfloat16_step"} & set(ops.ELEMENTWISE_UPDATES)
    for op in ops.ELEMENTWISE_UPDATES:  # the generated step calls the variants by name
        kernel = op[:-len("_step")]
        assert callable(getattr(optim, f"{kernel}_serial")) and callable(getattr(optim, f"{kernel}_parallel"))
