"""Launchers for batchnorm.cu: the batch-norm ops of kernels/ops.py.

The CPU's ``workspace``/``scratch``/``totals`` arguments are sized for its row blocks; the GPU keeps its own float64
partials per chunk of rows (``launch.workspace``), so it ignores them (the backward's ``totals`` excepted).
"""

import numpy as np

from ..ops import batchnorm_bindings
from ..reference.activations import IDENTITY, RELU, SOFTMAX
from . import launch as launch_limits
from .flags import device_flag
from .launch import THREADS, blocks, kernel, launch, optional, row_chunks, row_threads
from .launch import workspace as device_workspace
from .sources import COLUMN_BLOCK, COMBINE_Y, TILE_ROWS

SOURCE = "batchnorm.cu"
COMBINE_BLOCK = (COLUMN_BLOCK[0], COMBINE_Y)
ROWS_PER_CHUNK = 256


def _launch(name, like, grid, block, args):
    launch(SOURCE, name, like, grid, block, args)


def _column_grid(rows, cols):
    """(rows per chunk, chunks, grid) of the statistics and gradient-sum passes: column tiles x chunks of rows."""
    rows_per_chunk, chunks = row_chunks(rows, ROWS_PER_CHUNK)
    return rows_per_chunk, chunks, ((cols + COLUMN_BLOCK[0] - 1) // COLUMN_BLOCK[0], chunks)


def _pass(name, code):
    """The element-wise kernel for an activation: one compiled for it alone where there is one (the switch over every
    activation costs registers and half the bandwidth): ``_plain`` for the identity and for softmax (applied in its
    own kernel), ``_relu`` for ReLU; the general kernel for the others."""
    if code in (IDENTITY, SOFTMAX):
        return f"{name}_plain"
    return f"{name}_relu" if code == RELU else name


def _activation(code, params, T):
    return (np.int32(-1 if code == SOFTMAX else code), T(params[0]), T(params[1]))


def _row_stride_grid(rows, cols):
    """Column tiles x row tiles for the element-wise passes (more row tiles than the device has blocks in y: the
    blocks stride)."""
    row_tiles = (rows + TILE_ROWS - 1) // TILE_ROWS
    return ((cols + COLUMN_BLOCK[0] - 1) // COLUMN_BLOCK[0], max(1, min(row_tiles, launch_limits.MAX_GRID_Y)))


def _normalize(x, weight, bias, mean, inv_std, code, params, seed, counter, y_out, running):
    """y = act(weight * x_hat + bias); ``running`` = (running_mean, running_var, variance, factor, finite flag):
    factor < 0 updates no running statistic; an element of x that is NaN or Inf clears the flag."""
    rows, cols = x.shape
    running_mean, running_var, variance, factor, finite = running
    _launch(_pass("bn_normalize", code), x, _row_stride_grid(rows, cols), COLUMN_BLOCK,
            (x, weight, bias, mean, inv_std, y_out, np.int64(rows), np.int64(cols),
             *_activation(code, params, x.dtype.type), np.uint64(seed), np.uint64(counter),
             optional(running_mean), optional(running_var), optional(variance), np.float64(factor), optional(finite)))
    if code == SOFTMAX:
        kernel("activations.cu", "softmax_rows", x.dtype, like=x)((rows,), row_threads(cols),
                                                                  (y_out, np.uint64(0), y_out, np.int64(cols)))


def batchnorm_forward_train(x, weight, bias, eps, running_factor, running_mean, running_var, num_batches_tracked,
                            activation, mean_out, inv_std_out, y_out, workspace=None, scratch=None, totals=None):
    """Returns a flag (kernels/cuda/flags.py) that reads False, no running statistic changed, for NaN or Inf in x."""
    code, params, seed, counter = activation
    rows, cols = x.shape
    rows_per_chunk, chunks, grid = _column_grid(rows, cols)
    partials = device_workspace("bn_partials", (2 * chunks, cols), np.float64, x)
    variance = device_workspace("bn_variance", (cols,), np.float64, x)
    finite = device_workspace("bn_finite", (1,), np.int32, x)
    _launch("bn_statistics_partials", x, grid, COLUMN_BLOCK,
            (x, np.int64(rows), np.int64(cols), np.int64(rows_per_chunk), partials, finite))
    _launch("bn_statistics", x, (grid[0],), COMBINE_BLOCK,
            (x, partials, np.int64(chunks), np.int64(rows), np.int64(cols), np.float64(eps), mean_out, inv_std_out,
             variance, finite))
    # the running statistics are updated by the normalize pass, which skips them when the flag is clear
    _normalize(x, weight, bias, mean_out, inv_std_out, code, params, seed, counter, y_out,
               (running_mean, running_var, variance, running_factor, finite))
    if running_factor >= 0:
        num_batches_tracked += finite  # counted with the running statistics: only when x was finite
    return device_flag(finite, 1)  # read when the layer asks


def batchnorm_forward_eval(x, weight, bias, eps, running_mean, running_var, activation, mean_out, inv_std_out, y_out,
                           workspace=None):
    code, params, seed, counter = activation
    cols = x.shape[1]
    finite = device_workspace("bn_finite", (1,), np.int32, x)
    _launch("bn_eval_statistics", x, blocks(cols), (THREADS,),
            (running_mean, running_var, np.int64(cols), np.float64(eps), mean_out, inv_std_out, finite))
    _normalize(x, weight, bias, mean_out, inv_std_out, code, params, seed, counter, y_out,
               (None, None, None, -1.0, finite))  # no running update; the pass checks x for NaN and Inf
    return device_flag(finite, 1)  # False when x holds NaN or Inf, as on the other backends


def batchnorm_backward(x, grad_y, y, weight, bias, mean, inv_std, activation, training, grad_x, grad_weight,
                       grad_bias, accumulate, workspace, scratch, totals):
    code, params, seed, counter = activation
    rows, cols = x.shape
    if code == SOFTMAX:  # row-wise: dz = softmax's backward first, then the identity path below
        dz = device_workspace("bn_softmax_grad", x.shape, x.dtype, x)
        kernel("activations.cu", "softmax_backward_rows", x.dtype, like=x)((rows,), row_threads(cols),
                                                                           (grad_y, y, dz, np.int64(cols)))
        grad_y = dz
    activation = (*_activation(code, params, x.dtype.type), np.uint64(seed), np.uint64(counter))
    rows_per_chunk, chunks, grid = _column_grid(rows, cols)
    partials = device_workspace("bn_partials", (2 * chunks, cols), np.float64, x)
    _launch(_pass("bn_backward_partials", code), x, grid, COLUMN_BLOCK,
            (x, grad_y, y, weight, bias, mean, inv_std, partials, np.int64(rows), np.int64(cols),
             np.int64(rows_per_chunk), *activation))
    _launch("bn_backward_totals", x, (grid[0],), COMBINE_BLOCK,
            (partials, np.int64(chunks), np.int64(cols), totals, grad_weight, grad_bias, np.int32(bool(accumulate))))
    _launch(_pass("bn_backward_dx", code), x, _row_stride_grid(rows, cols), COLUMN_BLOCK,
            (x, grad_y, y, weight, bias, mean, inv_std, totals, grad_x, np.int64(rows), np.int64(cols),
             np.int32(bool(training)), *activation))


bind_batchnorm_forward_train, bind_batchnorm_backward = batchnorm_bindings(batchnorm_forward_train,
                                                                                 batchnorm_backward)
