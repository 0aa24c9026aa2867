"""Batch normalization for the CPU.

Batch norm training forward is two passes over x: (1) per-feature shifted sums over fixed blocks of
BLOCK_ROWS rows (each block's partials in the data's type, shifted by the first row so data with a large mean
keeps its digits), added in float64 into groups of blocks, groups combined in float64 in group order, so the
result never depends on the thread count; (2) one pass that normalizes, scales, shifts and applies the fused
activation in place on each output row. Running statistics are updated in the same call. Backward is two passes
too: the reductions sum(dz) and sum(dz * x_hat), then dx, recomputing x_hat and the activation's derivative on
the fly (never materialized).

x is split into one chunk of rows per thread, the same in every pass, and the second pass walks its chunk from
the end: the rows the first pass read last are still in that core's L2. The reductions sweep four rows at a time
(their accumulators' loads and stores, not memory, bounded the one-row loops), and the output passes write large
aligned outputs with streaming stores (``streaming.py``): both passes are otherwise bound by memory traffic on the
benchmark host, and a streamed y or dx skips the read of its lines.

Each kernel body is written once (a plain function with ``prange``, its helpers inlined) and compiled twice
(``compile_twice.py``): ``*_parallel`` for inputs of at least PARALLEL_MIN_ELEMENTS, ``*_serial`` below, where
waking a second thread pool costs more than it saves (see ``dense.py``).
"""

import math

import numpy as np
from numba import njit, prange

from .activations import IDENTITY, RELU, activate_in_place, any_activation_for, grad_in_place
from .compile_twice import NO_FUSION, numba_threads, parallel_and_serial
from .reductions import row_nonfinite
from .streaming import fence_streaming_stores, store, store_streaming, streams
from .vector_width import wide_vectors

BLOCK_ROWS = 64
# Blocks' sums are added in float64 into groups of GROUP_BLOCKS blocks by the thread that summed them, while they
# are in its cache; only the groups' sums are combined across threads (the blocks' own sums, read from the other
# core's cache, cost a third of the statistics pass).
GROUP_BLOCKS = 4
PARALLEL_MIN_ELEMENTS = 1 << 18


def blocks_for(rows):
    return (rows + BLOCK_ROWS - 1) // BLOCK_ROWS


def groups_for(rows):
    return (blocks_for(rows) + GROUP_BLOCKS - 1) // GROUP_BLOCKS


def totals_shape(rows, columns):
    """The float64 ``totals`` buffer: two rows of final sums, then each group's two rows of sums."""
    return 2 + 2 * groups_for(rows), columns


@njit(inline="always")
def copy_statistics(source, destination):
    """destination[:] = source, one element at a time: Numba copies a whole-array assignment between arrays that
    may overlap through a temporary array, which code compiled without its runtime cannot allocate
    (``reference_counts.py``). The compiled step saves and restores the running statistics with it."""
    for i in range(source.size):
        destination[i] = source[i]


@njit(inline="always")
def _share(chunk, chunks, items):
    """Items first..stop-1 of one of ``chunks`` equal shares."""
    per = (items + chunks - 1) // chunks
    return min(items, chunk * per), min(items, (chunk + 1) * per)


@njit(inline="always")
def _chunk_blocks(chunk, chunks, blocks):
    """Blocks first..stop-1 of one thread's chunk, in whole groups: every pass over x gives each thread the same
    rows, and each group is summed by one thread."""
    first, stop = _share(chunk, chunks, (blocks + GROUP_BLOCKS - 1) // GROUP_BLOCKS)
    return first * GROUP_BLOCKS, min(blocks, stop * GROUP_BLOCKS)


@njit(inline="always")
def _fold_into_group(b, block_first, block_second, group_first, group_second):
    """Adds block b's two rows of sums into its group's float64 rows (the group's first block sets them)."""
    first_in_group = b % GROUP_BLOCKS == 0
    for j in range(group_first.shape[0]):
        group_first[j] = (0.0 if first_in_group else group_first[j]) + block_first[j]
    for j in range(group_second.shape[0]):
        group_second[j] = (0.0 if first_in_group else group_second[j]) + block_second[j]


@njit(inline="always")
def _column_range(chunk, chunks, columns):
    """Columns first..stop-1 of one thread's chunk, in multiples of 16 so threads rarely share a cache line."""
    per = ((columns + chunks - 1) // chunks + 15) // 16 * 16
    return min(columns, chunk * per), min(columns, (chunk + 1) * per)


@njit(inline="always")
def _combine_groups(first, first_row, second, second_row, groups, first_total, second_total, start, stop):
    """first_total = sum of rows first[first_row : first_row + groups] in float64, in row order (the same result
    for any number of threads), and likewise for second; columns start..stop-1 only (threads split the columns).
    Walked row by row: summing each column down the rows instead does not vectorize."""
    # slices indexed from 0: over range(start, stop) Numba cannot tell an index is never negative, and its
    # wraparound test keeps the loop from vectorizing
    first_sums, second_sums = first_total[start:stop], second_total[start:stop]
    first_sums[:] = 0.0
    second_sums[:] = 0.0
    for g in range(groups):
        first_group = first[first_row + g, start:stop]
        second_group = second[second_row + g, start:stop]
        for j in range(first_sums.shape[0]):
            first_sums[j] += first_group[j]
            second_sums[j] += second_group[j]


@njit(inline="always")
def _shifted_sums(x, start, stop, shift, sums, squares):
    """sums = sum of (x[i] - shift) and squares = sum of (x[i] - shift)^2 over rows start..stop-1.

    Four rows per sweep: each accumulator is loaded and stored once per four rows instead of every row, which
    made the pass twice as slow as a plain read of x (it was bound by the accumulators' loads and stores)."""
    sums[:] = 0
    squares[:] = 0
    i = start
    while i + 4 <= stop:
        row0, row1, row2, row3 = x[i], x[i + 1], x[i + 2], x[i + 3]
        for j in range(sums.shape[0]):
            d0 = row0[j] - shift[j]
            d1 = row1[j] - shift[j]
            d2 = row2[j] - shift[j]
            d3 = row3[j] - shift[j]
            sums[j] += (d0 + d1) + (d2 + d3)
            squares[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
        i += 4
    for i in range(i, stop):
        row = x[i]
        for j in range(sums.shape[0]):
            d = row[j] - shift[j]
            sums[j] += d
            squares[j] += d * d


@njit(inline="always")
def _statistics(x, chunks, workspace, scratch, totals, mean_out, inv_std_out, eps):
    """Biased mean and 1/sqrt(var + eps) per feature, into mean_out and inv_std_out (float64).

    Three-level sums: each block of 64 rows accumulates (x - shift) and (x - shift)^2 in the data's own type
    (short sums of shifted values keep their digits, and the loop vectorizes: ``_shifted_sums``); blocks are
    added in float64 into their group's rows of ``totals``, and groups combined in float64 in group order, each
    thread over its share of the columns: the same result for any number of threads. ``shift`` is the first
    row, so a large common mean cancels before anything is summed.
    Leaves the biased variance of feature j in workspace[-1, j] (for the running-variance update). Returns
    False when x holds NaN or Inf (a non-finite value poisons its block's sums), so no separate check pass.
    """
    T = x.dtype.type
    rows, columns = x.shape
    blocks = (rows + 64 - 1) // 64
    groups = (blocks + GROUP_BLOCKS - 1) // GROUP_BLOCKS
    shift = x[0]
    for chunk in prange(chunks):
        wide_vectors()
        first, stop = _chunk_blocks(chunk, chunks, blocks)
        for b in range(first, stop):
            # sums and squares live in different arrays: as two rows of one array LLVM cannot prove them apart
            # and would not vectorize the loop
            _shifted_sums(x, b * 64, min(rows, (b + 1) * 64), shift, workspace[b], scratch[b])
            g = b // GROUP_BLOCKS
            _fold_into_group(b, workspace[b], scratch[b], totals[2 + g], totals[2 + groups + g])
    nonfinite = 0
    for chunk in prange(chunks):
        wide_vectors()
        start, stop = _column_range(chunk, chunks, columns)
        _combine_groups(totals, 2, totals, 2 + groups, groups, mean_out, inv_std_out, start, stop)
        chunk_nonfinite = 0
        for j in range(start, stop):
            total = mean_out[j]
            total_squares = inv_std_out[j]
            chunk_nonfinite += not (math.isfinite(total) and math.isfinite(total_squares))
            shifted_mean = total / rows
            variance = max(total_squares / rows - shifted_mean * shifted_mean, 0.0)
            mean_out[j] = np.float64(shift[j]) + shifted_mean
            inv_std_out[j] = 1.0 / math.sqrt(variance + eps)
            workspace[-1, j] = T(variance)
        nonfinite += chunk_nonfinite
    return nonfinite == 0


@njit(inline="always")
def _centring_rows(weight, bias, mean, inv_std, workspace, T):
    """Per-feature constants in the data's type for z = (x - mean_hi) * scale + shift: scale = weight * inv_std,
    mean_hi = the mean rounded to the data's type, shift = bias - (mean - mean_hi) * scale in float64. x - mean_hi
    is exact or nearly so for x near the mean, so this is accurate in float32 even for a mean of 1e4, where
    x * scale + (bias - mean * scale) would cancel catastrophically; and it is one subtraction and one
    multiply-add per element."""
    scale = workspace[-4]
    mean_hi = workspace[-3]
    shift = workspace[-2]
    for j in range(mean.shape[0]):
        scale64 = weight[j] * inv_std[j]
        scale[j] = T(scale64)
        mean_hi[j] = T(mean[j])
        shift[j] = T(bias[j] - (mean[j] - np.float64(mean_hi[j])) * scale64)
    return scale, mean_hi, shift


@njit(inline="always")
def _normalize(x, chunks, weight, bias, mean, inv_std, code, params, seed, counter, y_out, workspace, check_finite,
               any_activation):
    """y = act((x - mean_hi) * scale + shift) (see ``_centring_rows``).

    Each thread walks its chunk of blocks last to first (rows within a block in order, for the prefetchers):
    after the statistics pass the rows it read last are still in its core's L2, and are normalized before they
    are evicted (the second read of x is otherwise as slow as the first). With check_finite (evaluation: no statistics pass saw x) returns how many rows of x hold NaN
    or Inf, tested on each row while it is in L1; otherwise 0."""
    T = y_out.dtype.type
    rows, columns = x.shape
    scale, mean_hi, shift = _centring_rows(weight, bias, mean, inv_std, workspace, T)
    p0 = params[0]
    p1 = params[1]
    blocks = (rows + 64 - 1) // 64
    stream = streams(y_out) and (code == IDENTITY or code == RELU)  # other activations rewrite y in place
    nonfinite = 0
    for chunk in prange(chunks):
        wide_vectors()
        first, stop = _chunk_blocks(chunk, chunks, blocks)
        chunk_nonfinite = 0
        for b in range(stop - 1, first - 1, -1):
            for i in range(b * 64, min(rows, (b + 1) * 64)):
                row = x[i]
                y_row = y_out[i]
                if code == RELU:  # the common case fused into the loop itself
                    for j in range(columns):
                        z = (row[j] - mean_hi[j]) * scale[j] + shift[j]
                        store(y_row, j, z if z > 0 else T(0.0), stream)
                else:
                    for j in range(columns):
                        store(y_row, j, (row[j] - mean_hi[j]) * scale[j] + shift[j], stream)
                    if code != IDENTITY:
                        activate_in_place(code, y_row, p0, p1, seed, counter, i * columns, any_activation)
                if check_finite:
                    chunk_nonfinite += row_nonfinite(row)
        if stream:
            fence_streaming_stores()
        nonfinite += chunk_nonfinite
    return nonfinite


def _forward_train(x, chunks, weight, bias, eps, running_factor, running_mean, running_var, num_batches_tracked, code,
                   params, seed, counter, mean_out, inv_std_out, y_out, workspace, scratch, totals, any_activation):
    if not _statistics(x, chunks, workspace, scratch, totals, mean_out, inv_std_out, eps):
        return False  # non-finite input: running statistics and output left untouched
    rows = x.shape[0]
    if running_factor >= 0:
        for j in range(x.shape[1]):
            unbiased = np.float64(workspace[-1, j]) * rows / (rows - 1)
            running_mean[j] = (1 - running_factor) * running_mean[j] + running_factor * mean_out[j]
            running_var[j] = (1 - running_factor) * running_var[j] + running_factor * unbiased
        num_batches_tracked[0] += 1
    # x is known finite here (its sums were)
    _normalize(x, chunks, weight, bias, mean_out, inv_std_out, code, params, seed, counter, y_out, workspace, False,
               any_activation)
    return True


def _forward_eval(x, chunks, weight, bias, eps, running_mean, running_var, code, params, seed, counter, mean_out,
                  inv_std_out, y_out, workspace, any_activation):
    for j in range(x.shape[1]):
        mean_out[j] = running_mean[j]  # the statistics the backward uses, saved here rather than by the layer
        inv_std_out[j] = 1.0 / math.sqrt(running_var[j] + eps)
    return _normalize(x, chunks, weight, bias, running_mean, inv_std_out, code, params, seed, counter, y_out,
                      workspace, True, any_activation) == 0


@njit(inline="always")
def _grad_z_row(row, grad_y_row, y_row, scale, mean_hi, shift, code, p0, p1, T, seed, counter, base, out_row,
                any_activation):
    """out_row = dL/dz for one row: z recomputed from x, the activation's derivative applied on the fly."""
    for j in range(row.shape[0]):
        out_row[j] = (row[j] - mean_hi[j]) * scale[j] + shift[j]
    grad_in_place(code, grad_y_row, out_row, y_row, p0, p1, seed, counter, base, any_activation)


@njit(inline="always")
def _centred_and_grad_z(x, grad_y, j, mean_hi, scale, shift, relu):
    """(x - mean_hi, dL/dz) at column j for identity or ReLU (its mask recomputed from x, never stored)."""
    T = scale.dtype.type
    centred = x[j] - mean_hi[j]
    grad_z = grad_y[j]
    if relu:
        grad_z = grad_z * (T(1.0) if centred * scale[j] + shift[j] > 0 else T(0.0))
    return centred, grad_z


@njit(inline="always")
def _gradient_sums(x, grad_y, start, stop, mean_hi, scale, shift, relu, sum_dz, sum_dz_centred):
    """sum_dz += dz and sum_dz_centred += dz (x - mean_hi) over rows start..stop-1, for identity or ReLU; four rows
    per sweep, as in ``_shifted_sums``."""
    i = start
    while i + 4 <= stop:
        x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
        g0, g1, g2, g3 = grad_y[i], grad_y[i + 1], grad_y[i + 2], grad_y[i + 3]
        for j in range(sum_dz.shape[0]):
            c0, dz0 = _centred_and_grad_z(x0, g0, j, mean_hi, scale, shift, relu)
            c1, dz1 = _centred_and_grad_z(x1, g1, j, mean_hi, scale, shift, relu)
            c2, dz2 = _centred_and_grad_z(x2, g2, j, mean_hi, scale, shift, relu)
            c3, dz3 = _centred_and_grad_z(x3, g3, j, mean_hi, scale, shift, relu)
            sum_dz[j] += (dz0 + dz1) + (dz2 + dz3)
            sum_dz_centred[j] += (dz0 * c0 + dz1 * c1) + (dz2 * c2 + dz3 * c3)
        i += 4
    for i in range(i, stop):
        for j in range(sum_dz.shape[0]):
            centred, grad_z = _centred_and_grad_z(x[i], grad_y[i], j, mean_hi, scale, shift, relu)
            sum_dz[j] += grad_z
            sum_dz_centred[j] += grad_z * centred


@njit(inline="always")
def _grad_x(x, grad_y, j, mean_hi, scale, shift, slope, offset, relu):
    """dx[j] for identity or ReLU (its mask recomputed from x): scale dz + slope (x - mean_hi) + offset."""
    centred, grad_z = _centred_and_grad_z(x, grad_y, j, mean_hi, scale, shift, relu)
    return grad_z * scale[j] + centred * slope[j] + offset[j]


@njit(inline="always")
def _block_gradient_sums(x, grad_y, y, b, scale, mean_hi, shift, code, p0, p1, seed, counter, sum_dz,
                         sum_dz_centred, grad_z, any_activation):
    """sum_dz = sum of dz and sum_dz_centred = sum of dz (x - mean_hi) over block b's rows; grad_z is a one-row
    buffer for activations whose derivative needs y (dz is never stored whole)."""
    T = scale.dtype.type
    rows, columns = x.shape
    sum_dz[:] = 0
    sum_dz_centred[:] = 0
    start, stop = b * 64, min(rows, (b + 1) * 64)
    # identity and ReLU: dz computed inside the loop, one pass over the rows. The flag must be a constant here:
    # passed as a run-time value the serial kernels' sums did not vectorize
    if code == IDENTITY:
        _gradient_sums(x, grad_y, start, stop, mean_hi, scale, shift, False, sum_dz, sum_dz_centred)
        return
    if code == RELU:
        _gradient_sums(x, grad_y, start, stop, mean_hi, scale, shift, True, sum_dz, sum_dz_centred)
        return
    for i in range(start, stop):
        row = x[i]
        _grad_z_row(row, grad_y[i], y[i], scale, mean_hi, shift, code, p0, p1, T, seed, counter, i * columns,
                    grad_z, any_activation)
        for j in range(columns):
            sum_dz[j] += grad_z[j]
            sum_dz_centred[j] += grad_z[j] * (row[j] - mean_hi[j])


@njit(inline="always")
def _grad_x_row(row, grad_row, y_row, out, i, scale, mean_hi, shift, slope, offset, code, p0, p1, seed,
                counter, stream, any_activation):
    """One row of dx = scale dz + slope (x - mean_hi) + offset."""
    T = scale.dtype.type
    columns = row.shape[0]
    # identity and ReLU: one loop each, streamed or not (LLVM did not split the loop on these flags itself)
    if code == IDENTITY and stream:
        for j in range(columns):
            store_streaming(out, j, _grad_x(row, grad_row, j, mean_hi, scale, shift, slope, offset, False))
    elif code == IDENTITY:
        for j in range(columns):
            out[j] = _grad_x(row, grad_row, j, mean_hi, scale, shift, slope, offset, False)
    elif code == RELU and stream:
        for j in range(columns):
            store_streaming(out, j, _grad_x(row, grad_row, j, mean_hi, scale, shift, slope, offset, True))
    elif code == RELU:
        for j in range(columns):
            out[j] = _grad_x(row, grad_row, j, mean_hi, scale, shift, slope, offset, True)
    else:
        _grad_z_row(row, grad_row, y_row, scale, mean_hi, shift, code, p0, p1, T, seed, counter, i * columns,
                    out, any_activation)
        for j in range(columns):
            out[j] = out[j] * scale[j] + (row[j] - mean_hi[j]) * slope[j] + offset[j]


def _backward(x, chunks, grad_y, y, weight, bias, mean, inv_std, code, params, seed, counter, training, grad_x,
              grad_weight, grad_bias, accumulate, workspace, scratch, totals, any_activation):
    T = grad_x.dtype.type
    rows, columns = x.shape
    p0 = params[0]
    p1 = params[1]
    blocks = (rows + 64 - 1) // 64
    scale, mean_hi, shift = _centring_rows(weight, bias, mean, inv_std, workspace, T)
    groups = (blocks + GROUP_BLOCKS - 1) // GROUP_BLOCKS
    for chunk in prange(chunks):
        wide_vectors()
        first, stop = _chunk_blocks(chunk, chunks, blocks)
        for b in range(first, stop):
            # the two sums in different arrays so LLVM can prove them apart and vectorize
            _block_gradient_sums(x, grad_y, y, b, scale, mean_hi, shift, code, p0, p1, seed, counter,
                                 workspace[b], scratch[blocks + b], scratch[b], any_activation)
            g = b // GROUP_BLOCKS
            _fold_into_group(b, workspace[b], scratch[blocks + b], totals[2 + g], totals[2 + groups + g])
    # Groups combined in float64 in group order, each thread over its share of the columns (as in _statistics).
    # With x_hat = (x - mean) inv_std, the closed form dx = scale (dz - mean(dz) - x_hat mean(dz x_hat)) is
    # scale * dz + slope * (x - mean) + offset per feature, = scale * dz + slope * (x - mean_hi) + offset - slope *
    # mean_lo with mean_lo = mean - mean_hi; the sums over x - mean_hi are corrected by mean_lo * sum(dz) likewise.
    sum_dz = totals[0]
    sum_dz_centred = totals[1]
    slope = workspace[0]  # the blocks' sums are folded into totals by now: their rows are free
    offset = workspace[1]
    for chunk in prange(chunks):
        wide_vectors()
        start, stop = _column_range(chunk, chunks, columns)
        _combine_groups(totals, 2, totals, 2 + groups, groups, sum_dz, sum_dz_centred, start, stop)
        for j in range(start, stop):
            total = sum_dz[j]
            mean_lo = mean[j] - np.float64(mean_hi[j])
            total_x_hat = inv_std[j] * (sum_dz_centred[j] - mean_lo * total)
            grad_bias[j] = (grad_bias[j] if accumulate else 0) + total
            grad_weight[j] = (grad_weight[j] if accumulate else 0) + total_x_hat
            if training:
                slope64 = -weight[j] * inv_std[j] * inv_std[j] * total_x_hat / rows
                slope[j] = T(slope64)
                offset[j] = T(-weight[j] * inv_std[j] * total / rows - mean_lo * slope64)
            else:
                slope[j] = 0
                offset[j] = 0
    stream = streams(grad_x) and (code == IDENTITY or code == RELU)  # other activations write dz first, then dx
    for chunk in prange(chunks):
        wide_vectors()
        first, stop = _chunk_blocks(chunk, chunks, blocks)
        # last block first: the rows the sums pass read last are still in this core's L2 (see _normalize)
        for b in range(stop - 1, first - 1, -1):
            for i in range(b * 64, min(rows, (b + 1) * 64)):
                _grad_x_row(x[i], grad_y[i], y[i], grad_x[i], i, scale, mean_hi, shift, slope, offset, code,
                            p0, p1, seed, counter, stream, any_activation)
        if stream:
            fence_streaming_stores()


forward_train_parallel, forward_train_serial = parallel_and_serial(_forward_train, "forward_train", NO_FUSION)
forward_eval_parallel, forward_eval_serial = parallel_and_serial(_forward_eval, "forward_eval", NO_FUSION)
backward_parallel, backward_serial = parallel_and_serial(_backward, "backward", NO_FUSION)


def _large(x):
    return x.size >= PARALLEL_MIN_ELEMENTS


def chunks_for(elements):
    """How many chunks of rows the kernels split an input of this many elements into (1: the serial kernel)."""
    return numba_threads() if elements >= PARALLEL_MIN_ELEMENTS else 1


def _kernel_and_chunks(x, parallel, serial):
    """The kernel for x's size and how many chunks of rows it splits x into: one per thread, so that each
    thread's passes over x touch the same rows (a chunk count, not a thread count, would not change results)."""
    chunks = chunks_for(x.size)
    return (parallel if chunks > 1 else serial), chunks


def batchnorm_forward_train(x, weight, bias, eps, running_factor, running_mean, running_var, num_batches_tracked,
                            activation, mean_out, inv_std_out, y_out, workspace, scratch, totals):
    code, params, seed, counter = activation
    kernel, chunks = _kernel_and_chunks(x, forward_train_parallel, forward_train_serial)
    return kernel(x, chunks, weight, bias, float(eps), float(running_factor), running_mean, running_var,
                  num_batches_tracked, code, params, np.uint64(seed), np.uint64(counter), mean_out, inv_std_out, y_out,
                  workspace, scratch, totals, any_activation_for(code))


def batchnorm_forward_eval(x, weight, bias, eps, running_mean, running_var, activation, mean_out, inv_std_out, y_out,
                           workspace):
    """Returns False when x holds NaN or Inf (y is then not meaningful; no running statistic is written)."""
    code, params, seed, counter = activation
    kernel, chunks = _kernel_and_chunks(x, forward_eval_parallel, forward_eval_serial)
    return kernel(x, chunks, weight, bias, float(eps), running_mean, running_var, code, params, np.uint64(seed),
                  np.uint64(counter), mean_out, inv_std_out, y_out, workspace, any_activation_for(code))


def batchnorm_backward(x, grad_y, y, weight, bias, mean, inv_std, activation, training, grad_x, grad_weight,
                       grad_bias, accumulate, workspace, scratch, totals):
    code, params, seed, counter = activation
    kernel, chunks = _kernel_and_chunks(x, backward_parallel, backward_serial)
    kernel(x, chunks, grad_y, y, weight, bias, mean, inv_std, code, params, np.uint64(seed), np.uint64(counter),
           bool(training), grad_x, grad_weight, grad_bias, bool(accumulate), workspace, scratch, totals,
           any_activation_for(code))


def bind_batchnorm_forward_train(weight, bias, eps, running_mean, running_var, num_batches_tracked, code, params, seed,
                                 mean_out, inv_std_out, y_out, workspace, scratch, totals):
    """``batchnorm_forward_train`` bound (kernels/ops.py): the kernel variant, the chunk count and the constant
    arguments chosen once, so a call is the compiled call alone. x must be C-contiguous, of y_out's shape."""
    kernel, chunks = _kernel_and_chunks(y_out, forward_train_parallel, forward_train_serial)
    eps, seed, any_activation = float(eps), np.uint64(seed), any_activation_for(code)

    def forward(x, running_factor, counter):
        return kernel(x, chunks, weight, bias, eps, float(running_factor), running_mean, running_var,
                      num_batches_tracked, code, params, seed, np.uint64(counter), mean_out, inv_std_out, y_out,
                      workspace, scratch, totals, any_activation)
    return forward


def bind_batchnorm_backward(y, weight, bias, mean, inv_std, code, params, seed, grad_x, grad_weight, grad_bias,
                            workspace, scratch, totals):
    """``batchnorm_backward`` of a training forward, bound (kernels/ops.py), as ``bind_batchnorm_forward_train``."""
    kernel, chunks = _kernel_and_chunks(y, backward_parallel, backward_serial)
    seed, any_activation = np.uint64(seed), any_activation_for(code)

    def backward(x, grad_y, counter, accumulate):
        kernel(x, chunks, grad_y, y, weight, bias, mean, inv_std, code, params, seed, np.uint64(counter), True, grad_x,
               grad_weight, grad_bias, accumulate, workspace, scratch, totals, any_activation)
    return backward
