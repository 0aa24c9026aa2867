"""The GPU kernels: CUDA sources (``*.cu``, compiled once per process with ``cupy.RawModule``) and their Python
launchers, with the same signatures as the CPU backend's functions.

The launchers take CuPy arrays (the "gpu" backend) or numpy arrays (the "cuda-emulator" backend, which runs the
same kernels on the CPU through ``emulator.py``: how CI tests them without a GPU). The learnable activations
(PReLU, APL, soft exponential) are the reference's array expressions, which CuPy runs on the device through
numpy's dispatch protocols: correct, several small kernels each, not fused yet.
"""

from ..reference.learnable import (  # noqa: F401
    apl_backward,
    apl_forward,
    prelu_backward,
    prelu_forward,
    soft_exponential_backward,
    soft_exponential_forward,
)
from .dense import (  # noqa: F401
    activation_backward,
    activation_forward,
    all_finite,
    dense_backward,
    dense_dropout_backward,
    dense_dropout_forward,
    dense_forward,
)
from .losses import binary_cross_entropy_with_logits, mse, softmax_cross_entropy  # noqa: F401
from .normalization import (  # noqa: F401
    batchnorm_backward,
    batchnorm_forward_eval,
    batchnorm_forward_train,
    dropout_backward,
    dropout_forward,
)
from .optim import (  # noqa: F401
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
