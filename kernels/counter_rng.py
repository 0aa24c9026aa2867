"""Counter-based uniform random numbers: a pure function of (seed, counter, element index).

Randomized kernels (RReLU slopes now, dropout masks later) draw element ``i`` of call ``counter`` as
``uniform(seed, counter, i)``. Nothing is stored between calls, the result does not depend on how many
threads split the work, a backward pass can recompute the forward's draws instead of saving them, and the GPU
backend can reproduce the very same numbers. The mixer is SplitMix64's finalizer (Steele et al., 2014) over
a key that combines the three inputs with odd 64-bit constants; the top 24 bits give a float exactly
representable in float32.

This module is plain numpy (vectorized over indices); ``cpu/counter_rng.py`` is the same arithmetic in Numba.
"""

import numpy as np

SEED_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
COUNTER_MULTIPLIER = np.uint64(0xD1B54A32D192ED03)
MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
MIX_2 = np.uint64(0x94D049BB133111EB)
UNIT_24 = 1.0 / (1 << 24)


def uniform(seed, counter, index):
    """Uniform numbers in [0, 1) for an array of element indices (numpy uint64 arithmetic wraps)."""
    index = np.asarray(index, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = np.uint64(seed) * SEED_MULTIPLIER + np.uint64(counter) * COUNTER_MULTIPLIER + index
        x = (x ^ (x >> np.uint64(30))) * MIX_1
        x = (x ^ (x >> np.uint64(27))) * MIX_2
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(40)).astype(np.float64) * UNIT_24
