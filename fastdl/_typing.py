"""Names for the type hints of the public API (``fastdl`` ships ``py.typed``)."""

from typing import Any, Callable, Tuple, Union

import numpy as np

# an array of the active backend (a numpy.ndarray on "numpy" and "cpu", a cupy.ndarray on "gpu"); layers also take
# any tensor with __dlpack__ (PyTorch, JAX), read in place
Array = Any
DType = Union[str, np.dtype, type]
# a loss: (outputs, targets) -> (value, gradient of the value with respect to the outputs)
Loss = Callable[..., Tuple[float, Array]]
