"""pytest-benchmark options for the suite: ``pytest bench/ --benchmark-only [--backend cpu,gpu]``."""

import pytest


def pytest_addoption(parser):
    parser.addoption("--backend", default=None,
                     help="comma-separated fastdl backends to benchmark (default: every backend, unavailable ones skip)")


def pytest_generate_tests(metafunc):
    if "backend_name" not in metafunc.fixturenames:
        return
    from fastdl.bench.runner import available_backends

    option = metafunc.config.getoption("--backend")
    requested = [name.strip() for name in option.split(",")] if option else None
    params = [pytest.param(name, id=name, marks=pytest.mark.skip(reason=reason) if reason else ())
              for name, reason in available_backends(requested)]
    metafunc.parametrize("backend_name", params)


@pytest.fixture(scope="session")
def ceilings():
    """The machine's ceilings, measured once per session ({'cpu': ..., 'gpu': ... where usable})."""
    from fastdl.bench import ceilings as measure
    from fastdl.bench.runner import available_backends

    measured = {"cpu": measure.cpu_ceilings(quick=True)}
    if ("gpu", None) in available_backends(["gpu"]):
        measured["gpu"] = measure.gpu_ceilings(quick=True)
    return measured
