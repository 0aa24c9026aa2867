"""bfloat16 per element in Numba, the arithmetic of ``fastdl.kernels.bfloat16``: bits (uint16) <-> float32 for the
optimizers' moments, and rounding to the nearest bfloat16 value for a Dense layer's GEMM operands."""

import numpy as np
from numba import njit

from .vector_math import _bits_from_float, _float_from_bits

EXPONENT = np.uint32(0x7F800000)
MANTISSA = np.uint32(0x007FFFFF)
QUIET = np.uint32(0x40)
SIXTEEN = np.uint32(16)
FIFTEEN = np.uint32(15)
LOW_16 = np.uint32(0xFFFF)
HIGH_HALF = np.uint32(0xFFFF0000)
HALFWAY = np.uint32(0x7FFF)
HASH_1 = np.uint32(0x21F0AAAD)
HASH_2 = np.uint32(0xD35A2D97)


@njit(inline="always")
def rounding_bits(key):
    """32 random bits from a uint32 key: lowbias32, as ``fastdl.kernels.bfloat16.rounding_bits``."""
    # every step truncated to 32 bits: Numba widens integer arithmetic to 64 bits
    key = np.uint32(key ^ (key >> SIXTEEN))
    key = np.uint32(key * HASH_1)
    key = np.uint32(key ^ (key >> FIFTEEN))
    key = np.uint32(key * HASH_2)
    return np.uint32(key ^ (key >> FIFTEEN))


@njit(inline="always")
def widen(bits):
    """The float32 value of one bfloat16 bit pattern, exactly."""
    return _float_from_bits(np.int32(np.uint32(bits) << SIXTEEN))


@njit(inline="always")
def narrow(value, random16):
    """The bfloat16 bits of float32 ``value``, rounded up with probability (low 16 bits) / 65536 given a uniform
    16-bit integer ``random16``; NaN and Inf truncated (a NaN stays a NaN)."""
    bits = np.uint32(_bits_from_float(value))
    special = bits & EXPONENT == EXPONENT
    # selects, not branches, so the update loop stays vectorized
    carry = np.uint32(0) if special else np.uint32(random16)
    nan = QUIET if special and bits & MANTISSA != 0 else np.uint32(0)
    return np.uint16(((bits + carry) >> SIXTEEN) | nan)


@njit(inline="always")
def round_nearest(value):
    """float32 ``value`` rounded to the nearest bfloat16 (ties to even), as float32; Inf kept, NaN kept a NaN."""
    bits = np.uint32(_bits_from_float(value))
    special = bits & EXPONENT == EXPONENT
    nan = np.uint32(QUIET << SIXTEEN) if special and bits & MANTISSA != 0 else np.uint32(0)
    # selects, not branches, so the loop stays vectorized
    carry = np.uint32(0) if special else np.uint32(HALFWAY + ((bits >> SIXTEEN) & np.uint32(1)))
    return _float_from_bits(np.int32(((bits + carry) & HIGH_HALF) | nan))
