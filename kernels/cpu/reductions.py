"""Row reductions that vectorize: a maximum over four running maxima, sums in float64 with reassociation.

A plain ``for`` loop that keeps one running max or sum is one chain of dependent operations, and LLVM may not
reorder float additions without being told; these are the forms the row kernels (softmax, cross-entropy) use.
"""

from numba import njit


@njit(fastmath={"reassoc"}, cache=True)
def sums_in_float64(first, second):
    """(sum(first), sum(second)) in float64. Reassociation lets LLVM keep several partial sums in vector lanes:
    in one chain each add waits for the last (most of a wide cross-entropy loss's time). The order is
    fixed by this function's compiled loop, vectorized once, so the result does not change between calls or
    callers (compile_step's bit-exact tests); only these additions carry the flag, so exp's rounding tricks are
    not reassociated. (Fused multiply-adds in a whole kernel did make compile_step's copy differ: not used.)"""
    first_total = 0.0
    second_total = 0.0
    for j in range(first.shape[0]):
        first_total += first[j]
        second_total += second[j]
    return first_total, second_total


@njit(inline="always")
def largest(row):
    """max(row) over four interleaved running maxima: one running maximum is a chain of compares, each waiting
    for the last (a max is exact, so the result is the same in any order)."""
    m0 = m1 = m2 = m3 = row[0]
    n = row.shape[0]
    j = 0
    while j + 4 <= n:
        m0 = max(m0, row[j])
        m1 = max(m1, row[j + 1])
        m2 = max(m2, row[j + 2])
        m3 = max(m3, row[j + 3])
        j += 4
    for j in range(j, n):
        m0 = max(m0, row[j])
    return max(max(m0, m1), max(m2, m3))


@njit(fastmath={"reassoc"}, cache=True)
def sum_in_float64(row):
    """sum(row) in float64, vectorized as ``sums_in_float64`` is."""
    total = 0.0
    for j in range(row.shape[0]):
        total += row[j]
    return total


@njit(inline="always")
def row_nonfinite(row):
    """Whether a row holds NaN or Inf: x - x is 0 only for finite x, and an "or" of those tests vectorizes (an element
    count cost more than a whole pass of the kernels that call this)."""
    found = False
    for j in range(row.shape[0]):
        found |= row[j] - row[j] != 0
    return found
