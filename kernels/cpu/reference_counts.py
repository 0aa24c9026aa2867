"""Compile options for kernels that allocate nothing: without Numba's reference counting.

Numba counts the references to every array a compiled function touches, views included: each row a kernel takes
(``y_out[i]``), each piece of the flat parameter buffer, each array passed on to another kernel adds one to its
parent's counter and subtracts it again, with atomic instructions. Its pruning pass removes the pairs it can prove
useless within a block, not those around a call or across a branch, which is where the row helpers sit: a small
model's step made well over a thousand such calls, a large share of its time (docs/cpu-engine.md), and a population
of such models pays it per member, with both threads counting on the same stacked buffers.

A kernel compiled without the runtime (Numba's ``_nrt`` option) emits none of it; it cannot allocate arrays (Numba
refuses to compile one that does), which these kernels never do, and its arrays stay owned by the caller for the
call's duration. Arguments from Python are then read without a counter of their own (no allocation per array per
call either). The layers' parallel kernels keep the runtime: they take a view per row of blocks large enough that
the counting does not show; the population steps, parallel loops over the members' serial steps, run without it.

Those that keep it say so (WITH_REFERENCE_COUNTS): a kernel's options left open are taken from the compiled function
that calls it when Numba compiles it there first, and a parallel kernel compiled first inside a generated step (no
runtime) could not compile its parallel loop (which allocates), so that step fell back to the layer path; which
call came first decided it.
"""


def _options(runtime):
    """{"_nrt": runtime}, or {} on a Numba without the option (an internal module path, which may move): the
    kernels then count references, as before, and compute the same values."""
    try:
        from numba.core.cpu import CPUTargetOptions
    except ImportError:
        return {}
    return {"_nrt": runtime} if hasattr(CPUTargetOptions, "_nrt") else {}


WITHOUT_REFERENCE_COUNTS = _options(False)
WITH_REFERENCE_COUNTS = _options(True)
