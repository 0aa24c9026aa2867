"""The CPU backend: Numba kernels (compiled on first use, cached on disk), GEMMs through numpy's BLAS."""

from .cache_guard import clear_if_sources_changed

clear_if_sources_changed()

from .dense import (
    activation_backward,
    activation_forward,
    all_finite,
    dense_backward,
    dense_dropout_backward,
    dense_dropout_forward,
    dense_forward,
)
from .learnable import (
    apl_backward,
    apl_forward,
    prelu_backward,
    prelu_forward,
    soft_exponential_backward,
    soft_exponential_forward,
)
from .losses import binary_cross_entropy_with_logits, mse, softmax_cross_entropy
from .normalization import (
    batchnorm_backward,
    batchnorm_forward_eval,
    batchnorm_forward_train,
    dropout_backward,
    dropout_forward,
)
from .optim import (
    adagrad_step,
    adam_bfloat16_step,
    adam_step,
    lamb_apply,
    lamb_moments,
    lamb_trust_ratios,
    lars_step,
    lars_trust_ratios,
    rmsprop_step,
    segment_sums_of_squares,
    sgd_momentum_step,
    sgd_step,
)

import sys as _sys

from .cache_repair import guard_modules as _guard_modules

# every cached kernel of the package (these and the bfloat16 helpers they import): a damaged cache entry recompiles
_guard_modules([module for name, module in list(_sys.modules.items())
                if name.startswith(__name__.rpartition(".")[0] + ".") and module is not None])
