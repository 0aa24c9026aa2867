"""Counter-based uniform numbers in Numba: the same arithmetic as ``fastdl.kernels.counter_rng``, per element."""

import numpy as np
from numba import njit

SEED_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
COUNTER_MULTIPLIER = np.uint64(0xD1B54A32D192ED03)
MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
MIX_2 = np.uint64(0x94D049BB133111EB)
SHIFT_30 = np.uint64(30)
SHIFT_27 = np.uint64(27)
SHIFT_31 = np.uint64(31)
SHIFT_40 = np.uint64(40)
UNIT_24 = 1.0 / (1 << 24)


@njit(inline="always")
def uniform(seed, counter, index):
    """Uniform in [0, 1) for element ``index`` of call ``counter``; seed, counter, index are uint64."""
    x = seed * SEED_MULTIPLIER + counter * COUNTER_MULTIPLIER + index
    x = (x ^ (x >> SHIFT_30)) * MIX_1
    x = (x ^ (x >> SHIFT_27)) * MIX_2
    x = x ^ (x >> SHIFT_31)
    return np.float64(x >> SHIFT_40) * UNIT_24
