"""One test body runs on every backend: the ``backend`` fixture activates each in turn.

The GPU case is collected too and skips, saying why, where CuPy or a device is missing.
"""

import numpy as np
import pytest

import fastdl

# (rtol, atol) for results that went through a GEMM or a transcendental function, per dtype.
TOLERANCES = {np.float32: (2e-5, 2e-6), np.float64: (1e-12, 1e-13)}
GEMM_TOLERANCES = {np.float32: (1e-4, 1e-5), np.float64: (1e-11, 1e-12)}


def _backend_params():
    params = []
    for name in fastdl.backend.BACKEND_NAMES:
        try:
            fastdl.backend._load(name)
            params.append(pytest.param(name, id=name))
        except RuntimeError as error:
            params.append(pytest.param(name, id=name, marks=pytest.mark.skip(reason=str(error))))
    return params


@pytest.fixture(params=_backend_params())
def backend(request):
    with fastdl.use_backend(request.param) as active:
        yield active


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


def assert_close(actual, expected, dtype, gemm=False):
    rtol, atol = (GEMM_TOLERANCES if gemm else TOLERANCES)[np.dtype(dtype).type]
    np.testing.assert_allclose(fastdl.to_numpy(actual), expected, rtol=rtol, atol=atol)
