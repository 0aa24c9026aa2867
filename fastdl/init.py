"""Weight initializers (PyTorch's formulas). Shapes are (fan_in, fan_out) as fastdl stores Dense weights.

- Xavier/Glorot (Glorot & Bengio, 2010): uniform in [-a, a] with a = gain * sqrt(6 / (fan_in + fan_out)),
  or normal with std = gain * sqrt(2 / (fan_in + fan_out)).
- He/Kaiming (He et al., 2015), fan_in mode: uniform with a = gain * sqrt(3 / fan_in), or normal with
  std = gain / sqrt(fan_in); gain = sqrt(2) for ReLU.

>>> w = xavier_uniform((784, 256), seed=0)
"""

import math

import numpy as np

from .seeding import default_seed


def _generator(seed):
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(default_seed(seed, "init"))


def _fans(shape):
    if len(shape) != 2:
        raise ValueError(f"initializers take a (fan_in, fan_out) shape, got {shape}")
    return shape[0], shape[1]


def xavier_uniform(shape, gain=1.0, seed=None, dtype="float32"):
    fan_in, fan_out = _fans(shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return _generator(seed).uniform(-bound, bound, size=shape).astype(dtype)


def xavier_normal(shape, gain=1.0, seed=None, dtype="float32"):
    fan_in, fan_out = _fans(shape)
    return (_generator(seed).standard_normal(shape) * gain * math.sqrt(2.0 / (fan_in + fan_out))).astype(dtype)


def kaiming_uniform(shape, gain=math.sqrt(2.0), seed=None, dtype="float32"):
    fan_in, _ = _fans(shape)
    bound = gain * math.sqrt(3.0 / fan_in)
    return _generator(seed).uniform(-bound, bound, size=shape).astype(dtype)


def kaiming_normal(shape, gain=math.sqrt(2.0), seed=None, dtype="float32"):
    fan_in, _ = _fans(shape)
    return (_generator(seed).standard_normal(shape) * gain / math.sqrt(fan_in)).astype(dtype)


def zeros(shape, seed=None, dtype="float32"):
    return np.zeros(shape, dtype=dtype)


INITIALIZERS = {
    "xavier_uniform": xavier_uniform,
    "glorot_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "glorot_normal": xavier_normal,
    "kaiming_uniform": kaiming_uniform,
    "he_uniform": kaiming_uniform,
    "kaiming_normal": kaiming_normal,
    "he_normal": kaiming_normal,
    "zeros": zeros,
}


def get(name_or_function):
    if callable(name_or_function):
        return name_or_function
    try:
        return INITIALIZERS[name_or_function]
    except KeyError:
        raise ValueError(f"unknown initializer {name_or_function!r}; choose one of {sorted(INITIALIZERS)}") from None
