"""Inverted dropout for the CPU: element k of call ``counter`` is kept when uniform(seed, counter, k) >= p (the
counter generator every backend shares, so one seed gives one mask everywhere and at any thread count), survivors
scaled by 1 / (1 - p), the mask stored as bytes. Dropped elements are multiplied by 0, not set to 0: NaN and Inf
stay NaN, as in numpy and PyTorch. Large inputs take the parallel kernel, at batch norm's threshold (both are
single passes over memory).
"""

import numpy as np
from numba import njit, prange

from .compile_twice import parallel_and_serial
from .counter_rng import uniform
from .normalization import PARALLEL_MIN_ELEMENTS
from .vector_width import wide_vectors
from .reference_counts import WITHOUT_REFERENCE_COUNTS


def _dropout_forward(x, p, scale, seed, counter, mask_out, y_out):
    n = x.shape[0]
    blocks = (n + 4095) // 4096
    for b in prange(blocks):
        wide_vectors()
        # each block's elements through slices indexed from 0: an index that LLVM cannot prove non-negative
        # (k from b * 4096) keeps Numba's negative-index fix-up in the loop, which then did not vectorize
        start = b * 4096
        stop = min(n, start + 4096)
        x_block, mask_block, y_block = x[start:stop], mask_out[start:stop], y_out[start:stop]
        zero = scale - scale  # 0 in scale's type
        for k in range(x_block.shape[0]):
            keep = uniform(seed, counter, np.uint64(start + k)) >= p
            mask_block[k] = keep
            y_block[k] = x_block[k] * (scale if keep else zero)


dropout_forward_parallel, dropout_forward_serial = parallel_and_serial(_dropout_forward, "dropout_forward")


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS)
def dropout_backward_kernel(grad_y, mask, scale, grad_x):
    # times 0 rather than 0: NaN and Inf at a dropped position give NaN, as in numpy and PyTorch, so that a
    # non-finite gradient is seen (skip_nonfinite) on every backend
    zero = scale - scale
    for k in range(grad_y.shape[0]):
        grad_x[k] = grad_y[k] * (scale if mask[k] else zero)


def dropout_forward(x, p, seed, counter, mask_out, y_out):
    scale = x.dtype.type(1.0 / (1.0 - p))
    kernel = dropout_forward_parallel if x.size >= PARALLEL_MIN_ELEMENTS else dropout_forward_serial
    kernel(x.reshape(-1), float(p), scale, np.uint64(seed), np.uint64(counter), mask_out.reshape(-1), y_out.reshape(-1))


def dropout_backward(grad_y, mask, p, grad_x):
    scale = grad_y.dtype.type(1.0 / (1.0 - p))
    dropout_backward_kernel(grad_y.reshape(-1), mask.reshape(-1), scale, grad_x.reshape(-1))
