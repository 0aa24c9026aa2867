"""Fused dense kernels for the CPU: the GEMM and everything element-wise in one parallel loop, one pool.

Forward: each thread computes a block of rows of y = x @ W through the BLAS provider, single-threaded
(``blas.gemm_rows``), then adds the bias, saves the pre-activation only when the activation's derivative needs it
and applies the activation (and dropout) on those rows while they are in its cache; a wide output with the identity
or ReLU is split by columns instead (``by_columns``). Backward: each thread forms
dZ = dY * act'(z) on its rows and their dX = dZ @ W.T; then each thread takes a block of columns of dW = x.T @ dZ
and sums the same columns of dZ for the bias gradient, row by row in order (the serial kernel's order, so the
result does not depend on the thread count).

Why fastdl partitions the GEMMs itself: with the BLAS library threading its own GEMMs, two pools take turns on the
cores, and each one's idle threads spin while the other works (a batch-norm pass right after a GEMM, or a GEMM right
after a parallel kernel, ran several times slower; docs/cpu-engine.md). Here Numba's pool is the only one that runs.
Small products run the serial kernels, on the calling thread alone: waking a pool costs more than it saves there.

The identity and ReLU are computed inline; every other activation goes through ``activations.py``'s row
functions, which a kernel compiles in only when called with ``any_activation=True`` (see there).

bfloat16 compute: the forward rounds x and W to bfloat16 straight into their bit patterns (the backward's dZ is
rounded by the layer with ``round_bfloat16``); the ``*_bfloat16`` kernels multiply the bit patterns with oneDNN's
bfloat16 GEMM (``bfloat16_gemm.py``), one call over the whole product on the shared OpenMP pool, and run the
epilogue or the bias sums in blocks as above. Without oneDNN, or for small products, they are the float32 kernels
on the rounded values.
"""

import numpy as np
from numba import njit

from numba import prange

from . import blas, blas_provider
from .activations import activate_in_place, any_activation_for, grad, grad_in_place
from . import bfloat16_gemm
from .bfloat16 import round_nearest
from .bfloat16_gemm import NO as NO_TRANSPOSE, TRANSPOSE, gemm_bf16
from .vector_math import _bits_from_float
from ..ops import dense_bindings
from ..reference.dense import bfloat16_through_float32
from .blas import blas_single_threaded, blas_threads_restore, gemm_at_b_columns, gemm_columns, gemm_rows
from .compile_twice import NO_FUSION, numba_threads, parallel_and_serial
from .reductions import row_nonfinite
from .counter_rng import uniform
from .reference_counts import WITHOUT_REFERENCE_COUNTS

# A product of at least this many multiply-adds (rows x in x out) runs on every thread. Smaller ones gain nothing
# measurable in a training step from the split, while every model whose layers cross the line also compiles the
# parallel kernels (the first run of a small model pays for both).
PARALLEL_MIN_MULTIPLY_ADDS = 1 << 20
# the input gradient's row blocks for OpenBLAS's small-matrix kernels (input_grad_rows)
SMALL_TRANSPOSED_OUTPUT, SMALL_BATCH_ROWS, SMALL_MATRIX_MIN_COLUMNS = 1024, 64, 32


@njit(inline="always")
def _bias_activate_row(i, source, bias, code, p0, p1, seed, counter, z_out, save_z, y_out, copy_source,
                       any_activation):
    columns = source.shape[1]
    y_row = y_out[i]
    # copies as plain loops: Numba's slice assignment (row[:] = other) is slower
    if copy_source:
        source_row = source[i]
        for j in range(columns):
            y_row[j] = source_row[j]
    if bias.shape[0] > 0:
        for j in range(columns):
            y_row[j] += bias[j]
    if save_z:
        z_row = z_out[i]
        for j in range(columns):
            z_row[j] = y_row[j]
    activate_in_place(code, y_row, p0, p1, seed, counter, i * columns, any_activation)


@njit(inline="always")
def _dropout_row(i, a, p, scale, dropout_seed, counter, mask_out, y_out):
    columns = a.shape[1]
    a_row = a[i]
    mask_row = mask_out[i]
    y_row = y_out[i]
    zero = scale - scale  # times 0, not 0: a non-finite activation stays non-finite, as on every backend
    for j in range(columns):
        keep = uniform(dropout_seed, counter, np.uint64(i * columns + j)) >= p
        mask_row[j] = keep
        y_row[j] = a_row[j] * (scale if keep else zero)


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS)
def activate_rows(source, bias, code, params, seed, counter, z_out, save_z, y_out, copy_source, any_activation):
    """y_out = act(source + bias) row by row; z_out = source + bias when save_z.

    The activation always runs in place on the output row: when input and output rows are different arguments LLVM must
    assume they overlap and will not vectorize, so the row is first brought into the output while it sits in L1.
    ``copy_source`` is False when ``source`` already is the output (the dense forward, after its GEMM).
    """
    for i in range(source.shape[0]):
        _bias_activate_row(i, source, bias, code, params[0], params[1], seed, counter, z_out, save_z, y_out,
                           copy_source, any_activation)


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS)
def activate_dropout_rows(a_out, bias, code, params, seed, counter, z_out, save_z, p, scale, dropout_seed, mask_out,
                          y_out, any_activation):
    """a_out = act(a_out + bias), then y_out = a_out * scale where the mask keeps, row by row while the row is
    in L1: the mask and values are exactly those of a Dropout layer with seed ``dropout_seed`` (same counter)."""
    for i in range(a_out.shape[0]):
        _bias_activate_row(i, a_out, bias, code, params[0], params[1], seed, counter, z_out, save_z, a_out, False,
                           any_activation)
        _dropout_row(i, a_out, p, scale, dropout_seed, counter, mask_out, y_out)


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS)
def activation_grad_rows(grad_y, z, y, code, params, seed, counter, grad_z, grad_bias, accumulate_bias,
                         any_activation):
    """grad_z = grad_y * act'(z) and grad_bias (+)= column sums of grad_z, in one pass."""
    rows, columns = grad_y.shape
    has_bias = grad_bias.shape[0] > 0
    p0 = params[0]
    p1 = params[1]
    if has_bias and not accumulate_bias:
        grad_bias[:] = 0
    for i in range(rows):
        grad(code, grad_y[i], z[i], y[i], grad_z[i], p0, p1, seed, counter, i * columns, any_activation)
        if has_bias:
            for j in range(columns):
                grad_bias[j] += grad_z[i, j]


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS)
def dropout_activation_grad_rows(grad_y, mask, scale, z, a, code, params, seed, counter, grad_z, grad_bias,
                                 accumulate_bias, any_activation):
    """grad_z = (grad_y * mask * scale) * act'(z) and grad_bias (+)= its column sums, in one pass."""
    rows, columns = grad_y.shape
    has_bias = grad_bias.shape[0] > 0
    p0 = params[0]
    p1 = params[1]
    if has_bias and not accumulate_bias:
        grad_bias[:] = 0
    for i in range(rows):
        _dropout_activation_grad_row(i, grad_y, mask, scale, z, a, code, p0, p1, seed, counter, grad_z,
                                     any_activation)
        if has_bias:
            for j in range(columns):
                grad_bias[j] += grad_z[i, j]


@njit(inline="always")
def _dropout_activation_grad_row(i, grad_y, mask, scale, z, a, code, p0, p1, seed, counter, grad_z, any_activation):
    columns = grad_y.shape[1]
    out = grad_z[i]
    z_row = z[i]
    for j in range(columns):
        out[j] = z_row[j]
    # act'(z) dy in place over z's copy, then the mask: with the masked dy as the activation's input and output
    # (one row passed twice), LLVM's overlap check sent every row to the scalar loop
    grad_in_place(code, grad_y[i], out, a[i], p0, p1, seed, counter, i * columns, any_activation)
    mask_row = mask[i]
    zero = scale - scale  # times 0, not 0: a NaN gradient at a dropped position stays NaN (skip_nonfinite sees it)
    for j in range(columns):
        out[j] = out[j] * (scale if mask_row[j] else zero)


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS)
def all_finite_kernel(flat):
    """x - x is 0 for finite x and NaN for NaN or +-Inf. Counting the misses is an integer reduction, which
    vectorizes (a float sum or an early exit would not)."""
    misses = 0
    for k in range(flat.shape[0]):
        misses += flat[k] - flat[k] != 0
    return misses == 0


def all_finite(x):
    return all_finite_kernel(x.reshape(-1) if x.flags.c_contiguous else x.ravel())


def _as_rows(x):
    return x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x


def activation_forward(x, activation, y_out):
    code, params, seed, counter = activation
    rows = _as_rows(y_out)
    activate_rows(_as_rows(x), params[:0], code, params, np.uint64(seed), np.uint64(counter), rows, False, rows, True,
                  any_activation_for(code))


def activation_backward(grad_y, z, y, activation, grad_z_out):
    code, params, seed, counter = activation
    activation_grad_rows(_as_rows(grad_y), _as_rows(z), _as_rows(y), code, params, np.uint64(seed),
                         np.uint64(counter), _as_rows(grad_z_out), params[:0], False, any_activation_for(code))


# -- the layers' kernels: GEMM blocks and element-wise passes in one loop -------------------------------------------
@njit(inline="always")
def _row_block(rows, part, parts):
    return rows * part // parts, rows * (part + 1) // parts


@njit(inline="always")
def _epilogue_rows(first, last, y_out, bias, code, params, seed, counter, z_out, save_z, any_activation):
    """Bias, saved pre-activation and activation on rows first..last of the product in y_out; returns whether a
    row of the product was not finite (each row is tested as the epilogue reads it)."""
    found = False
    for i in range(first, last):
        found |= row_nonfinite(y_out[i])
        _bias_activate_row(i, y_out, bias, code, params[0], params[1], seed, counter, z_out, save_z, y_out, False,
                           any_activation)
    return found


# A wide output (at least as many columns as rows) is split by columns (``_forward_columns``): each thread then packs
# half the weights and the whole input, where by rows each packs all the weights (OpenBLAS's own threads share one
# packed copy; docs/cpu-engine.md). Only for the identity and ReLU, whose epilogue never looks at a column's index;
# blocks start on a 64-byte line. A kernel of its own, chosen by the callers
# (``forward_kernels``), so that only models with such layers compile it.
COLUMN_ALIGN = 16


@njit(inline="always")
def _column_block(columns, part, parts):
    first = columns * part // parts // COLUMN_ALIGN * COLUMN_ALIGN
    last = columns if part == parts - 1 else columns * (part + 1) // parts // COLUMN_ALIGN * COLUMN_ALIGN
    return first, last


@njit(inline="always")
def _epilogue_columns(first, last, y_out, bias, code, params, seed, counter, z_out, save_z, any_activation):
    """``_epilogue_rows`` on columns first..last of every row (the identity and ReLU only)."""
    columns = y_out.shape[1]
    has_bias = bias.shape[0] > 0
    bias_block = bias[first:last]
    found = False
    for i in range(y_out.shape[0]):
        y_block = y_out[i, first:last]
        found |= row_nonfinite(y_block)
        if has_bias:
            for j in range(y_block.shape[0]):
                y_block[j] += bias_block[j]
        if save_z:
            z_block = z_out[i, first:last]
            for j in range(y_block.shape[0]):
                z_block[j] = y_block[j]
        activate_in_place(code, y_block, params[0], params[1], seed, counter, i * columns + first, any_activation)
    return found


def _forward(x, weight, bias, code, params, seed, counter, z_out, save_z, y_out, any_activation, parts):
    """y = act(x @ W + b), z = x @ W + b when save_z; one block of rows per part. Returns whether x @ W is finite
    (each product row is tested as the epilogue reads it: NaN or Inf in x always shows there)."""
    previous = blas_single_threaded()
    nonfinite = 0
    for part in prange(parts):
        first, last = _row_block(x.shape[0], part, parts)
        gemm_rows(x, weight, y_out, first, last, False)
        nonfinite += _epilogue_rows(first, last, y_out, bias, code, params, seed, counter, z_out, save_z,
                                    any_activation)
    blas_threads_restore(previous)
    return nonfinite == 0


def _forward_columns(x, weight, bias, code, params, seed, counter, z_out, save_z, y_out, any_activation, parts):
    """``_forward`` with one block of columns per part (a wide output with the identity or ReLU: see above)."""
    previous = blas_single_threaded()
    nonfinite = 0
    for part in prange(parts):
        first, last = _column_block(y_out.shape[1], part, parts)
        gemm_columns(x, weight, y_out, first, last)
        nonfinite += _epilogue_columns(first, last, y_out, bias, code, params, seed, counter, z_out, save_z,
                                       any_activation)
    blas_threads_restore(previous)
    return nonfinite == 0


def _dropout_forward(x, weight, bias, code, params, seed, counter, z_out, save_z, p, scale, dropout_seed, mask_out,
                     a_out, y_out, any_activation, parts):
    """a = act(x @ W + b), y = dropout(a) with the mask of a Dropout layer seeded ``dropout_seed``. Returns whether
    x @ W is finite, as ``_forward``."""
    previous = blas_single_threaded()
    nonfinite = 0
    for part in prange(parts):
        first, last = _row_block(x.shape[0], part, parts)
        gemm_rows(x, weight, a_out, first, last, False)
        found = False
        for i in range(first, last):
            found |= row_nonfinite(a_out[i])
            _bias_activate_row(i, a_out, bias, code, params[0], params[1], seed, counter, z_out, save_z, a_out, False,
                               any_activation)
            _dropout_row(i, a_out, p, scale, dropout_seed, counter, mask_out, y_out)
        nonfinite += found
    blas_threads_restore(previous)
    return nonfinite == 0


@njit(inline="always")
def _bias_sums(grad_z, grad_bias, first, last, accumulate):
    """grad_bias[first:last] (+)= the column sums of dZ, row by row in order (the same sums for any block split).
    The loops run over slices from index 0: over range(first, last) Numba cannot tell the index is never
    negative, keeps its wraparound test and the loop does not vectorize (8x slower at 256 x 1024)."""
    sums = grad_bias[first:last]
    if not accumulate:
        sums[:] = 0
    for i in range(grad_z.shape[0]):
        grad_z_row = grad_z[i, first:last]
        for j in range(sums.shape[0]):
            sums[j] += grad_z_row[j]


def _backward(x, weight, grad_y, z, a, dropout, mask, scale, code, params, seed, counter, grad_z, grad_weight,
              grad_bias, grad_x, input_grad, accumulate, any_activation, parts, input_grad_block_rows):
    """dZ = (dY [* mask * scale]) * act'(z); dX = dZ @ W.T, in BLAS calls of ``input_grad_block_rows`` rows (see
    ``input_grad_rows``); dW (+)= x.T @ dZ; db (+)= column sums of dZ."""
    rows, columns = grad_y.shape
    previous = blas_single_threaded()
    for part in prange(parts):
        first, last = _row_block(rows, part, parts)
        for i in range(first, last):
            if dropout:
                _dropout_activation_grad_row(i, grad_y, mask, scale, z, a, code, params[0], params[1], seed, counter,
                                             grad_z, any_activation)
            else:
                grad(code, grad_y[i], z[i], a[i], grad_z[i], params[0], params[1], seed, counter, i * columns,
                     any_activation)
        if input_grad:
            for start in range(first, last, input_grad_block_rows):
                gemm_rows(grad_z, weight, grad_x, start, min(start + input_grad_block_rows, last), True)
    has_bias = grad_bias.shape[0] > 0
    for part in prange(parts):
        first, last = _row_block(columns, part, parts)
        gemm_at_b_columns(x, grad_z, grad_weight, first, last, 1.0 if accumulate else 0.0)
        if has_bias:
            _bias_sums(grad_z, grad_bias, first, last, accumulate)
    blas_threads_restore(previous)


forward_parallel, forward_serial = parallel_and_serial(_forward, "dense_forward", NO_FUSION)
forward_columns_parallel, forward_columns_serial = parallel_and_serial(_forward_columns, "dense_forward_columns",
                                                                       NO_FUSION)
dropout_forward_parallel, dropout_forward_serial = parallel_and_serial(_dropout_forward, "dense_dropout_forward",
                                                                       NO_FUSION)
backward_parallel, backward_serial = parallel_and_serial(_backward, "dense_backward", NO_FUSION)
_FORWARD_KERNELS = {"forward": (forward_parallel, forward_serial),
                    "forward_columns": (forward_columns_parallel, forward_columns_serial)}


_NO_MASK = np.empty((0, 0), np.uint8)

# bfloat16 compute: operands rounded to bfloat16 values, kept as float32 (the backward's dZ; x and W where the
# float32 kernels multiply them)
PARALLEL_MIN_ROUNDED = 1 << 18  # elements; below, waking the pool costs more than the pass


def _round_bfloat16(x, y_out):
    for i in prange(x.shape[0]):
        y_out[i] = round_nearest(x[i])


round_bfloat16_parallel, round_bfloat16_serial = parallel_and_serial(_round_bfloat16, "round_bfloat16")


def round_bfloat16(x, y_out):
    x, y_out = _contiguous(x).reshape(-1), y_out.reshape(-1)
    (round_bfloat16_parallel if x.shape[0] >= PARALLEL_MIN_ROUNDED else round_bfloat16_serial)(x, y_out)


@njit(inline="always")
def _bfloat16_bits(values, bits_out):
    """The bfloat16 bits of float32 values rounded to the nearest bfloat16 (ties to even), in one pass: for values
    that hold bfloat16 values already, their top halves."""
    flat, bits = values.reshape(-1), bits_out.reshape(-1)
    for i in range(flat.shape[0]):
        bits[i] = np.uint16(np.uint32(_bits_from_float(round_nearest(flat[i]))) >> np.uint32(16))


def _forward_bfloat16(x, weight, bias, code, params, seed, counter, z_out, save_z, y_out, any_activation, parts,
                      x_bits, weight_bits):
    """y = act(x @ W + b) with x and W rounded to bfloat16 on the way into their bit patterns: one bfloat16 GEMM
    (oneDNN, on the shared OpenMP pool), then the epilogue on blocks of rows. Returns whether x @ W is finite."""
    rows, inner = x.shape
    columns = weight.shape[1]
    _bfloat16_bits(x, x_bits)
    _bfloat16_bits(weight, weight_bits)
    if gemm_bf16(NO_TRANSPOSE, NO_TRANSPOSE, rows, columns, inner, x_bits, inner, weight_bits, columns, 0.0, y_out,
                 columns) != 0:
        raise RuntimeError("oneDNN's bfloat16 GEMM refused its arguments")
    nonfinite = 0
    for part in prange(parts):
        first, last = _row_block(rows, part, parts)
        nonfinite += _epilogue_rows(first, last, y_out, bias, code, params, seed, counter, z_out, save_z,
                                    any_activation)
    return nonfinite == 0


def _backward_bfloat16(x, weight, grad_z, grad_weight, grad_bias, grad_x, input_grad, accumulate, parts, x_bits,
                       weight_bits, grad_bits, forward_bits):
    """The products of a bfloat16 backward, dZ already formed and rounded: dX = dZ @ W.T and dW (+)= x.T @ dZ as
    bfloat16 GEMMs on the operands' bits (the forward's, or taken here after a forward with dropout, which
    multiplied in float32 and left none), db (+)= column sums of dZ, row by row."""
    rows, columns = grad_z.shape
    inner = weight.shape[0]
    if not forward_bits:
        _bfloat16_bits(x, x_bits)
        _bfloat16_bits(weight, weight_bits)
    _bfloat16_bits(grad_z, grad_bits)
    if input_grad and gemm_bf16(NO_TRANSPOSE, TRANSPOSE, rows, inner, columns, grad_bits, columns, weight_bits,
                                columns, 0.0, grad_x, inner) != 0:
        raise RuntimeError("oneDNN's bfloat16 GEMM refused its arguments")
    if gemm_bf16(TRANSPOSE, NO_TRANSPOSE, inner, columns, rows, x_bits, inner, grad_bits, columns,
                 1.0 if accumulate else 0.0, grad_weight, columns) != 0:
        raise RuntimeError("oneDNN's bfloat16 GEMM refused its arguments")
    if grad_bias.shape[0] == 0:
        return
    for part in prange(parts):
        first, last = _row_block(columns, part, parts)
        _bias_sums(grad_z, grad_bias, first, last, accumulate)


if bfloat16_gemm.AVAILABLE:
    forward_bfloat16_parallel, forward_bfloat16_serial = parallel_and_serial(_forward_bfloat16,
                                                                             "dense_forward_bfloat16", NO_FUSION)
    backward_bfloat16_parallel, backward_bfloat16_serial = parallel_and_serial(_backward_bfloat16,
                                                                               "dense_backward_bfloat16", NO_FUSION)


def dense_forward_bfloat16(x, weight, bias, activation, z_out, y_out, x_rounded_out, weight_rounded_out, x_bits,
                           weight_bits):
    """dense_forward on x and W rounded to bfloat16: through oneDNN's bfloat16 GEMM when it is installed and the
    product large enough (``bfloat16_gemm.py``; the operands go straight into their bit patterns, one pass each),
    else the float32 kernels on the rounded operands (the same products, summed in another order)."""
    if not bfloat16_gemm.used_for(x.shape[0], weight.shape[0], weight.shape[1]):
        return _float32_forward_bfloat16(x, weight, bias, activation, z_out, y_out, x_rounded_out, weight_rounded_out,
                                         x_bits, weight_bits)
    code, params, seed, counter = activation
    parts = _parts(x, weight)
    return (forward_bfloat16_parallel if parts > 1 else forward_bfloat16_serial)(
        _contiguous(x), weight, bias, code, params, np.uint64(seed), np.uint64(counter), z_out, z_out is not y_out,
        y_out, any_activation_for(code), parts, x_bits, weight_bits)


def dense_backward_bfloat16(x, weight, grad_z, grad_z_work, grad_weight, grad_bias, grad_x, accumulate, x_bits,
                            weight_bits, grad_bits, forward_bits):
    """The products of a bfloat16 backward on rounded operands (dZ formed and rounded by the layer): oneDNN's
    bfloat16 GEMMs when installed, else the identity's float32 backward."""
    if not bfloat16_gemm.used_for(x.shape[0], weight.shape[0], weight.shape[1]):
        return _float32_backward_bfloat16(x, weight, grad_z, grad_z_work, grad_weight, grad_bias, grad_x, accumulate,
                                          x_bits, weight_bits, grad_bits, forward_bits)
    parts = _parts(x, weight)
    input_grad = grad_x is not None
    (backward_bfloat16_parallel if parts > 1 else backward_bfloat16_serial)(
        _contiguous(x), weight, grad_z, grad_weight, grad_bias, grad_x if input_grad else grad_z, input_grad,
        bool(accumulate), parts, x_bits, weight_bits, grad_bits, bool(forward_bits))


def parts_for(rows, fan_in, fan_out):
    """How many blocks (threads) a layer's products are split into: 1 runs the serial kernel."""
    if not blas.PER_THREAD_CONTROL or rows * fan_in * fan_out < PARALLEL_MIN_MULTIPLY_ADDS:
        return 1
    return min(numba_threads(), rows, fan_out)


def _parts(x, weight):
    return parts_for(x.shape[0], weight.shape[0], weight.shape[1])


def input_grad_rows(rows, fan_in, fan_out):
    """How many rows of dX = dZ @ W.T (rows x fan_in) one BLAS call computes in the backward; compiled steps make
    the same choice from the same numbers. OpenBLAS's small-matrix kernels take this transposition only for outputs
    of at most about a thousand elements; past that its general path packs both operands first, which costs a small
    batch about as much as the product itself, so calls of fewer rows each run faster in all. Larger batches gain
    little, and narrow outputs and cores without those kernels lose: they keep one call (docs/cpu-engine.md)."""
    if (not blas_provider.SMALL_MATRIX_KERNELS or rows * fan_in * fan_out >= PARALLEL_MIN_MULTIPLY_ADDS
            or rows > SMALL_BATCH_ROWS or fan_out < SMALL_MATRIX_MIN_COLUMNS
            or rows * fan_in <= SMALL_TRANSPOSED_OUTPUT):
        return rows
    return max(1, SMALL_TRANSPOSED_OUTPUT // fan_in)


def by_columns(rows, fan_in, fan_out, code):
    """Whether a float32/float64 Dense forward of this shape and activation code splits its GEMM by columns
    (``_forward_columns``); compiled steps make the same choice from the same numbers."""
    parts = parts_for(rows, fan_in, fan_out)
    return (parts > 1 and any_activation_for(code) is None and fan_out >= rows
            and fan_out >= 2 * COLUMN_ALIGN * parts)


def forward_kernel_name(rows, fan_in, fan_out, code):
    """``"forward_columns"`` or ``"forward"``: the forward kernels (``dense.<name>_parallel`` and ``_serial``) for
    this shape and activation code, as the layer path and the generated steps name them."""
    return "forward_columns" if by_columns(rows, fan_in, fan_out, code) else "forward"


def forward_kernels(rows, fan_in, fan_out, code):
    """The (parallel, serial) forward kernels for this shape and activation code."""
    return _FORWARD_KERNELS[forward_kernel_name(rows, fan_in, fan_out, code)]


def _contiguous(x):
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def dense_forward(x, weight, bias, activation, z_out, y_out):
    code, params, seed, counter = activation
    if not blas.AVAILABLE:
        return _numpy_dense_forward(x, weight, bias, code, params, seed, counter, z_out, y_out)
    parts = _parts(x, weight)
    parallel, serial = forward_kernels(x.shape[0], weight.shape[0], weight.shape[1], code)
    return (parallel if parts > 1 else serial)(
        _contiguous(x), weight, bias, code, params, np.uint64(seed), np.uint64(counter), z_out, z_out is not y_out,
        y_out, any_activation_for(code), parts)


def dense_dropout_forward(x, weight, bias, activation, p, dropout_seed, z_out, a_out, mask_out, y_out):
    code, params, seed, counter = activation
    if not blas.AVAILABLE:
        return _numpy_dense_dropout_forward(x, weight, bias, code, params, seed, counter, p, dropout_seed, z_out,
                                            a_out, mask_out, y_out)
    parts = _parts(x, weight)
    return (dropout_forward_parallel if parts > 1 else dropout_forward_serial)(
        _contiguous(x), weight, bias, code, params, np.uint64(seed), np.uint64(counter), z_out, z_out is not a_out,
        float(p), y_out.dtype.type(1.0 / (1.0 - p)), np.uint64(dropout_seed), mask_out, a_out, y_out,
        any_activation_for(code), parts)


def dense_backward(x, weight, grad_y, z, y, activation, grad_z_work, grad_weight, grad_bias, grad_x, accumulate):
    code, params, seed, counter = activation
    if not blas.AVAILABLE:
        return _numpy_dense_backward(x, weight, grad_y, z, y, code, params, seed, counter, grad_z_work, grad_weight,
                                     grad_bias, grad_x, accumulate)
    _backward_call(x, weight, grad_y, z, y, False, _NO_MASK, code, params, seed, counter, grad_z_work, grad_weight,
                   grad_bias, grad_x, accumulate)


def dense_dropout_backward(x, weight, grad_y, z, a, mask, p, activation, grad_z_work, grad_weight, grad_bias, grad_x,
                           accumulate):
    code, params, seed, counter = activation
    if not blas.AVAILABLE:
        return _numpy_dense_dropout_backward(x, weight, grad_y, z, a, mask, p, code, params, seed, counter,
                                             grad_z_work, grad_weight, grad_bias, grad_x, accumulate)
    _backward_call(x, weight, grad_y, z, a, True, mask, code, params, seed, counter, grad_z_work, grad_weight,
                   grad_bias, grad_x, accumulate, grad_y.dtype.type(1.0 / (1.0 - p)))


def _backward_call(x, weight, grad_y, z, a, dropout, mask, code, params, seed, counter, grad_z, grad_weight,
                   grad_bias, grad_x, accumulate, scale=1.0):
    parts = _parts(x, weight)
    input_grad = grad_x is not None
    (backward_parallel if parts > 1 else backward_serial)(
        _contiguous(x), weight, grad_y, z, a, dropout, mask,
        grad_y.dtype.type(scale), code, params, np.uint64(seed), np.uint64(counter), grad_z, grad_weight, grad_bias,
        grad_x if input_grad else grad_z, input_grad, bool(accumulate), any_activation_for(code), parts,
        input_grad_rows(x.shape[0], weight.shape[0], weight.shape[1]))


def bind_dense_forward(weight, bias, code, params, seed, z_out, y_out):
    """``dense_forward`` bound (kernels/ops.py): the kernel variant, the split and the constant arguments chosen once,
    so a call is the compiled call alone. x must be C-contiguous, of the bound batch size."""
    if not blas.AVAILABLE:
        return _bind_general_forward(weight, bias, code, params, seed, z_out, y_out)
    parts = parts_for(y_out.shape[0], weight.shape[0], weight.shape[1])
    parallel, serial = forward_kernels(y_out.shape[0], weight.shape[0], weight.shape[1], code)
    kernel = parallel if parts > 1 else serial
    seed, save_z, any_activation = np.uint64(seed), z_out is not y_out, any_activation_for(code)

    def forward(x, counter):
        return kernel(x, weight, bias, code, params, seed, np.uint64(counter), z_out, save_z, y_out, any_activation,
                      parts)
    return forward


def bind_dense_backward(weight, z, y, code, params, seed, grad_z_work, grad_weight, grad_bias, grad_x):
    """``dense_backward`` bound (kernels/ops.py), as ``bind_dense_forward``."""
    if not blas.AVAILABLE:
        return _bind_general_backward(weight, z, y, code, params, seed, grad_z_work, grad_weight, grad_bias, grad_x)
    parts = parts_for(grad_z_work.shape[0], weight.shape[0], weight.shape[1])
    block_rows = input_grad_rows(grad_z_work.shape[0], weight.shape[0], weight.shape[1])
    kernel = backward_parallel if parts > 1 else backward_serial
    scale, seed, any_activation = grad_z_work.dtype.type(1.0), np.uint64(seed), any_activation_for(code)

    def backward(x, grad_y, counter, input_grad, accumulate):
        kernel(x, weight, grad_y, z, y, False, _NO_MASK, scale, code, params, seed, np.uint64(counter), grad_z_work,
               grad_weight, grad_bias, grad_x if input_grad else grad_z_work, input_grad, accumulate, any_activation,
               parts, block_rows)
    return backward


# -- without a BLAS callable from compiled code: numpy's matmul, then the serial row kernels -----------------------
def _numpy_dense_forward(x, weight, bias, code, params, seed, counter, z_out, y_out):
    np.matmul(x, weight, out=y_out)
    finite = all_finite(y_out)
    activate_rows(y_out, bias, code, params, np.uint64(seed), np.uint64(counter), z_out, z_out is not y_out,
                  y_out, False, any_activation_for(code))
    return finite


def _numpy_dense_dropout_forward(x, weight, bias, code, params, seed, counter, p, dropout_seed, z_out, a_out,
                                 mask_out, y_out):
    np.matmul(x, weight, out=a_out)
    finite = all_finite(a_out)
    activate_dropout_rows(a_out, bias, code, params, np.uint64(seed), np.uint64(counter), z_out, z_out is not a_out,
                          float(p), y_out.dtype.type(1.0 / (1.0 - p)), np.uint64(dropout_seed), mask_out, y_out,
                          any_activation_for(code))
    return finite


def _numpy_dense_dropout_backward(x, weight, grad_y, z, a, mask, p, code, params, seed, counter,
                                  grad_z_work, grad_weight, grad_bias, grad_x, accumulate):
    dropout_activation_grad_rows(grad_y, mask, grad_y.dtype.type(1.0 / (1.0 - p)), z, a, code, params,
                                 np.uint64(seed), np.uint64(counter), grad_z_work, grad_bias, accumulate,
                                 any_activation_for(code))
    _weight_and_input_grads(x, weight, grad_z_work, grad_weight, grad_x, accumulate)


def _numpy_dense_backward(x, weight, grad_y, z, y, code, params, seed, counter,
                          grad_z_work, grad_weight, grad_bias, grad_x, accumulate):
    activation_grad_rows(grad_y, z, y, code, params, np.uint64(seed), np.uint64(counter), grad_z_work,
                         grad_bias, accumulate, any_activation_for(code))
    _weight_and_input_grads(x, weight, grad_z_work, grad_weight, grad_x, accumulate)


def _weight_and_input_grads(x, weight, grad_z_work, grad_weight, grad_x, accumulate):
    if accumulate:
        grad_weight += x.T @ grad_z_work  # the rarer path: one temporary
    else:
        np.matmul(x.T, grad_z_work, out=grad_weight)
    if grad_x is not None:
        np.matmul(grad_z_work, weight.T, out=grad_x)


_bind_general_forward, _bind_general_backward = dense_bindings(dense_forward, dense_backward)
# without oneDNN, or for products too small for it: the float32 kernels on the rounded operands
_float32_forward_bfloat16, _float32_backward_bfloat16 = bfloat16_through_float32(round_bfloat16, dense_forward,
                                                                                 dense_backward)
