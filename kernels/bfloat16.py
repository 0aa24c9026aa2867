"""bfloat16 arithmetic in numpy: storage for optimizer moments, as uint16 bit patterns (numpy has no bfloat16
type), and the rounding of a Dense layer's GEMM operands in bfloat16 compute (``round_nearest``).

A bfloat16 is the top half of a float32: same exponent range, 8 bits of mantissa. Widening is exact (the low
16 bits become 0). Narrowing rounds STOCHASTICALLY: the low 16 bits plus a uniform random 16-bit number carry
into the kept half with probability low / 65536, so the stored value is unbiased. Round-to-nearest would be
biased exactly where Adam needs it not to be: with beta2 = 0.999, 0.999 v rounds back to v (the change is below
half a bfloat16 ulp), so v could never decay. NaN and Inf are truncated, never rounded into another class (a
NaN stays a NaN).

The random numbers are a pure function of (seed, step, element index), so a run is reproducible and the CPU and
GPU kernels draw the same numbers: element i of step t hashes the 32-bit key i + key_offset(seed, t) with
Wellons' lowbias32 (two 32-bit multiplies: the counter generator's 64-bit multiplies made the CPU step 1.6x
slower, compute-bound); its top 16 bits round m, its low 16 bits v. Keys repeat every 2^32 elements, which
leaves each rounding unbiased.

Plain numpy (the reference); ``cpu/optim.py`` and ``cuda/common.cuh`` do the same per element.
"""

import numpy as np

EXPONENT = np.uint32(0x7F800000)
MANTISSA = np.uint32(0x007FFFFF)
QUIET = np.uint32(0x40)  # a mantissa bit of the kept half: a truncated NaN stays a NaN
SIXTEEN = np.uint32(16)
HIGH_HALF = np.uint32(0xFFFF0000)
ROUNDING_SEED = 0x62663136  # "bf16": the seed of the rounding draws of every optimizer
KEY_SEED_MULTIPLIER = 0x9E3779B9
KEY_STEP_MULTIPLIER = 0x85EBCA6B
HASH_1 = np.uint32(0x21F0AAAD)
HASH_2 = np.uint32(0xD35A2D97)


def to_float32(bits):
    """float32 values of bfloat16 bit patterns (uint16), exactly."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << SIXTEEN).view(np.float32)


def round_stochastic(values, random16):
    """bfloat16 bit patterns (uint16) of float32 ``values``, rounded up with probability (low 16 bits) / 65536
    given uniform 16-bit integers ``random16`` (one per value)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    special = (bits & EXPONENT) == EXPONENT
    nan_bit = np.where((bits & MANTISSA) != 0, QUIET, np.uint32(0))
    rounded = np.where(special, (bits >> SIXTEEN) | nan_bit, (bits + random16.astype(np.uint32)) >> SIXTEEN)
    return rounded.astype(np.uint16)


def round_nearest(values):
    """float32 ``values`` rounded to the nearest bfloat16 (ties to even), kept as float32 (the low 16 bits 0): how
    a Dense layer computing in bfloat16 narrows its GEMM operands. A product of two such values is exact in
    float32, so a float32 GEMM over them equals a bfloat16 GEMM accumulating in float32 (to summation order). Inf
    stays Inf, NaN stays NaN; finite values past the largest bfloat16 round to Inf, as IEEE rounding does."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    special = (bits & EXPONENT) == EXPONENT
    nan_bit = np.where((bits & MANTISSA) != 0, QUIET << SIXTEEN, np.uint32(0))
    halfway = np.uint32(0x7FFF) + ((bits >> SIXTEEN) & np.uint32(1))  # ties to even: the kept half's last bit
    rounded = np.where(special, (bits & HIGH_HALF) | nan_bit, (bits + halfway) & HIGH_HALF)
    return rounded.astype(np.uint32).view(np.float32)


def key_offset(seed, counter):
    """What element 0's key is for ``seed`` and step ``counter`` (element i's is i + this, modulo 2^32)."""
    return (seed * KEY_SEED_MULTIPLIER + counter * KEY_STEP_MULTIPLIER) & 0xFFFFFFFF


def rounding_bits(seed, counter, count):
    """32 random bits (uint32) for elements 0 .. count - 1 of step ``counter``: lowbias32 of their keys."""
    x = (np.arange(count, dtype=np.uint64) + np.uint64(key_offset(seed, counter))).astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= HASH_1
    x ^= x >> np.uint32(15)
    x *= HASH_2
    return x ^ (x >> np.uint32(15))
