"""What a population step does for every member before and after the members' own steps, compiled.

Before: each active member's update rows for its step number (from the rows computed ahead by
``fastdl/tune/update_rows.py``), its random counters, its clipping and skipping options, its status. After: each
member's counts (random counters, optimizer steps, skipped steps), its measured gradient norm, and whether it
diverged. This is a few dozen numbers per member; done in Python, as numpy operations between two population steps,
it ran where the members' kernels had just pushed numpy's and the interpreter's code and data out of the caches,
and each small operation cost several times what it costs alone. Run inside the compiled call it costs next to
nothing.
"""

import math

import numpy as np
from numba import njit

from .step_status import BAD_INPUT, BAD_TARGET, DONE, NONFINITE_BATCHNORM, NONFINITE_OUTPUT, SKIPPED
from .reference_counts import WITHOUT_REFERENCE_COUNTS

# what the population step returns
RAN, ROWS_MISSING, REFUSED = 0, 1, 2


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS)
def prepare_members(active, optimizer_steps, rows_window, rows_first, update_rows, counters, counted, member_counters,
                    hyper, clipping, skipping, status, losses):
    """Set up every active member's step; False, touching nothing, when a member's step number is outside the
    window of update rows (the caller computes a new window and calls again)."""
    members = active.shape[0]
    for m in range(members):
        if active[m]:
            ahead = optimizer_steps[m] + 1 - rows_first[m]
            if ahead < 0 or ahead >= rows_window.shape[0]:
                return False
    for m in range(members):
        losses[m] = math.nan
        if not active[m]:
            continue
        window_row = optimizer_steps[m] + 1 - rows_first[m]
        # element by element: a whole-row assignment between arrays that may overlap copies through a temporary
        for group in range(update_rows.shape[1]):
            for column in range(update_rows.shape[2]):
                update_rows[m, group, column] = rows_window[window_row, m, group, column]
        for column in range(counted.shape[0]):
            counters[m, counted[column]] = member_counters[m, column] + np.uint64(1)
        hyper[m, 0] = clipping[m]
        hyper[m, 1] = skipping[m]
        status[m, 0] = DONE
    return True


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS)
def record_members(active, status, losses, member_counters, optimizer_steps, skipped_steps, measures_norm,
                   grad_norms, norm_known, diverged):
    """Each active member's counts after its step, as its own compile_step records them; a member whose forward
    was not finite is marked diverged and stops. Returns whether a member refused its batch (a kernel disagreeing
    with the checks made before)."""
    refused = False
    for m in range(active.shape[0]):
        if not active[m]:
            continue
        code = status[m, 0]
        ran = code == DONE or code == SKIPPED
        if ran:
            for column in range(member_counters.shape[1]):
                member_counters[m, column] += np.uint64(1)
            if measures_norm[m]:
                grad_norms[m] = status[m, 1]
                norm_known[m] = True
        else:
            losses[m] = math.nan
        if code == DONE:
            optimizer_steps[m] += 1
        elif code == SKIPPED:
            skipped_steps[m] += 1
        elif code == NONFINITE_OUTPUT or code == NONFINITE_BATCHNORM:
            diverged[m] = True
            active[m] = False
        elif code == BAD_INPUT or code == BAD_TARGET:
            refused = True
    return refused


@njit(inline="always")
def _first_largest(row):
    """The index numpy's argmax gives: the first largest value, a NaN counting as largest."""
    best = 0
    for j in range(1, row.shape[0]):
        if math.isnan(row[best]):
            break
        if math.isnan(row[j]) or row[j] > row[best]:
            best = j
    return best


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS)
def add_batch_scores(losses, rows, outputs, labels, each, classification, total, correct):
    """``Population.fit``'s running sums after a step of ``rows`` samples: total[m] += the member's loss times
    ``rows`` (0 for a member that did not train) and, for classification, correct[m] += the rows whose largest
    output is the label (numpy's argmax). ``labels[m * each]`` are member m's labels (each 0: one batch for all)."""
    for m in range(losses.shape[0]):
        total[m] += 0.0 if math.isnan(losses[m]) else losses[m] * rows
        if not classification:
            continue
        member_labels = labels[m * each]
        count = 0
        for i in range(outputs.shape[1]):
            count += _first_largest(outputs[m, i]) == member_labels[i]
        correct[m] += count


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS)
def add_correct(outputs, labels, members, correct):
    """correct[m] += the rows of outputs[m] whose largest output (numpy's argmax) is the label, for each member m
    in ``members`` (a mask); every member's outputs are of the same samples."""
    for m in range(outputs.shape[0]):
        if members[m]:
            for i in range(outputs.shape[1]):
                correct[m] += _first_largest(outputs[m, i]) == labels[i]
