"""fastdl: fused Numba (CPU) and CuPy (GPU) kernels for dense deep-learning building blocks.

>>> import fastdl, numpy as np
>>> model = fastdl.Sequential(fastdl.Dense(2, 16, activation="tanh", seed=0), fastdl.Dense(16, 2, seed=1))
>>> loss, grad = fastdl.losses.softmax_cross_entropy(model(np.zeros((4, 2), np.float32)), np.array([0, 1, 1, 0]))
>>> _ = model.backward(grad, input_grad=False)
"""

import os as _os

# Installed, fastdl.kernels is the top-level kernels/ folder mapped by setuptools. Run from a source checkout
# (``python -m fastdl`` in the repo root) it is not inside fastdl/, so look for it beside the package too.
if not _os.path.isdir(_os.path.join(__path__[0], "kernels")):
    _checkout = _os.path.dirname(_os.path.abspath(__path__[0]))
    if _os.path.isfile(_os.path.join(_checkout, "kernels", "ops.py")):
        __path__.append(_checkout)

from . import activations
from . import data
from . import datasets
from . import init
from . import interop
from . import losses
from . import optim
from . import testing
from . import tune
from .activations import ActivationSpec
from .backend import asarray
from .callbacks import CSVLogger
from .checkpoint import load
from .checkpoint import save
from .backend import available_backends
from .backend import get_backend
from .backend import set_backend
from .backend import to_numpy
from .backend import use_backend
from .layers import APL
from .layers import Activation
from .layers import BFloat16Notice
from .layers import Dense
from .layers import Module
from .layers import Parameter
from .layers import PReLU
from .layers import Sequential
from .layers import SoftExponential
from .matmul_precision import get_float32_matmul_precision
from .matmul_precision import set_float32_matmul_precision
from .normalization import BatchNorm
from .normalization import Dropout
from .normalization import Standardize
from .seeding import manual_seed
from .step import CompileStepFallback
from .step import compile_step
from .threads import blas_info
from .threads import get_num_threads
from .training import EarlyStopping
from .training import History
from .training import evaluate
from .training import fit
from .threads import set_num_threads

__version__ = "0.1.0"
