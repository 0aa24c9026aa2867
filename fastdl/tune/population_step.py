"""The compiled call that trains K members at once: each member's own compiled step, K of them in one parallel loop.

Every member has the structure of member 0, so ``compile_step`` writes the same step source for each; only the
values it binds differ (weights, moments, seeds, learning rates). This module stacks those values member by member
and writes one more function around the member step::

    for m in prange(K):
        losses[m] = training_step(x[m * each], y[m * each], counters[m], ..., R3[m, a:b].reshape(...), ...)

so member m runs exactly the kernels, in exactly the order, of its own ``compile_step`` with every kernel serial
(over the same blocks of rows and columns: a GEMM's blocks can sum otherwise than the whole product): it ends
bit-identical to training alone (tested). The parallelism is across members, one member per thread at a
time, where each member alone would be too small to split.

Stacking keeps the arrays' aliasing: a Dense weight is a view into its optimizer's flat buffer, and the step's
``z`` is its ``y`` when the activation needs no pre-activation. So each member's arrays are traced to the buffers
they view (their "roots"), each root is stacked over the members (row k = member k's root), and each array is
rebuilt in the loop as the same window of its root's row (``views``: start, stop, shape). Offsets, shapes and the
members' numbers (seeds, dropout rates: stacked too) are arguments, not source text, so models that differ only in
widths or values share one compiled function.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# the population's arrays its step reads and writes besides the members' own (kernels/cpu/population.py), in the
# order it takes them
RECORDS = ("member_counters", "counted", "optimizer_steps", "skipped_steps", "measures_norm", "grad_norms",
           "norm_known", "diverged", "clipping", "skipping", "rows_window", "rows_first")

CACHE_LINE = 64
MAX_VIEW_DIMENSIONS = 3  # the step's arrays are at most 2-d today; one more for slack


def _root(array):
    """The outermost array of the same dtype that ``array`` views (aligned buffers are typed views of raw bytes: the
    typed view is the root)."""
    while isinstance(array.base, np.ndarray) and array.base.dtype == array.dtype and array.base.flags.c_contiguous:
        array = array.base
    return array


def _address(array):
    return array.__array_interface__["data"][0]


def aligned_rows(count, size, dtype):
    """A (count, padded size) C-contiguous array whose rows each start on a cache line (batch norm's buffers take
    streaming stores; a row is what one member's buffer was)."""
    dtype = np.dtype(dtype)
    per_line = max(1, CACHE_LINE // dtype.itemsize)
    row = max(per_line, -(-size // per_line) * per_line)
    flat = np.zeros(count * row + per_line, dtype)
    start = (-_address(flat) % CACHE_LINE) // dtype.itemsize
    return flat[start:start + count * row].reshape(count, row)


class ArrayValue(NamedTuple):
    """One bound array: its root's index, and its window there (start, stop in elements; shape)."""
    root: int
    start: int
    shape: tuple


class MemberRoots:
    """The distinct buffers one member's bound arrays view, in first-seen order."""

    def __init__(self):
        self.roots, self._index = [], {}

    def locate(self, array, where):
        if not array.flags.c_contiguous:
            raise ValueError(f"Population: {where} is not C-contiguous; the population cannot stack it")
        root = _root(array)
        index = self._index.get(id(root))
        if index is None:
            index = self._index[id(root)] = len(self.roots)
            self.roots.append(root)
        offset = _address(array) - _address(root)
        return ArrayValue(index, offset // array.itemsize, tuple(array.shape))


class StackedRoots:
    """Every root stacked over the members, shared by the steps of every batch size (the parameters' flat buffers
    and optimizer moments are the same roots at any batch size; each batch size adds its own work buffers)."""

    def __init__(self, members):
        self.members = members
        self.stacked = {}  # id(member 0's root) -> (stacked array, [each member's root])

    def stack(self, member_roots):
        """The stacked array of each root in ``member_roots`` (one MemberRoots per member, same structure)."""
        first = member_roots[0]
        result = []
        for index, root in enumerate(first.roots):
            roots = [each.roots[index] for each in member_roots]
            for member, other in enumerate(roots):
                if other.shape != root.shape or other.dtype != root.dtype:
                    raise ValueError(f"Population: member {member} has a buffer of shape {other.shape} {other.dtype} "
                                     f"where member 0 has {root.shape} {root.dtype}; members must match in structure")
            known = self.stacked.get(id(root))
            if known is not None:
                if any(a is not b for a, b in zip(known[1], roots)):
                    raise ValueError("Population: the members' buffers changed since the population was built "
                                     "(an optimizer rebuilt over a member?); build a new Population")
                result.append(known[0])
                continue
            stacked = aligned_rows(self.members, root.size, root.dtype)
            for member, other in enumerate(roots):
                stacked[member, :root.size] = other.reshape(-1)
            self.stacked[id(root)] = (stacked, roots)
            result.append(stacked)
        return result

    def write_back(self, members=None):
        """Copy the population's rows into each member's own buffers (``members``: indices, default all)."""
        for stacked, roots in self.stacked.values():
            for member in range(self.members) if members is None else members:
                roots[member].reshape(-1)[...] = stacked[member, :roots[member].size]

    def read_in(self, members=None):
        """Copy each member's own buffers into the population's rows (after a member was changed directly)."""
        for stacked, roots in self.stacked.values():
            for member in range(self.members) if members is None else members:
                stacked[member, :roots[member].size] = roots[member].reshape(-1)

    def row_view(self, member_roots_0, value):
        """Every member's view of one bound array, as a (members, *shape) numpy array (strided)."""
        stacked = self.stacked[id(member_roots_0.roots[value.root])][0]
        size = int(np.prod(value.shape, dtype=np.int64))
        return stacked[:, value.start:value.start + size].reshape((self.members,) + value.shape)


class PopulationArguments(NamedTuple):
    """One batch size's population step: its source, the per-member call arrays, and the values it is called with."""
    source: str
    counters: np.ndarray  # (members, layers)
    factors: np.ndarray
    hyper: np.ndarray
    status: np.ndarray
    values: tuple
    output: np.ndarray  # (members, batch, width): each member's model output of the last step
    arrays: dict  # bound name -> every member's array, (members, *shape) (views into the stacked buffers)


def _scalars_differ(values):
    first = values[0]
    return any(type(value) is not type(first) or value != first for value in values[1:])


def _same_types(values):
    return all(type(value) is type(values[0]) for value in values)


def _readable(name):
    """A step argument's name for a message: 'l0_any_activation' -> "layer 0's 'any_activation'"."""
    layer, _, rest = name.partition("_")
    if layer[:1] == "l" and layer[1:].isdigit() and rest:
        return f"layer {layer[1:]}'s {rest!r}"
    return repr(name)


class StackedCall(NamedTuple):
    """Members' bound values stacked for a loop over the members: the text of member m's call arguments, the loop
    function's parameters that carry them and the values those take (views, the stacked roots, stacked scalars), and
    every member's output and bound arrays as (members, *shape) views."""
    member_call: str
    parameters: tuple
    values: tuple
    output: np.ndarray
    arrays: dict


def stack_members(member_arguments, roots):
    """Stack the values of members whose generated functions (``member_arguments``: one per member, with the same
    ``source``, and their ``names``, ``values`` and ``output``) match, into ``roots`` (StackedRoots)."""
    members = len(member_arguments)
    member_names = member_arguments[0].names
    source = member_arguments[0].source
    for member, arguments in enumerate(member_arguments):
        if arguments.source != source:
            raise ValueError(f"Population: member {member}'s model or optimizer differs in structure from member 0's "
                             "(layer kinds, activations, dropout, batch norm options, optimizer algorithm)")
    located = [MemberRoots() for _ in range(members)]
    layout = []  # per bound name: ("array", ArrayValue), ("scalar", value) or ("scalars", stacked values)
    for position, name in enumerate(member_names):
        values = [arguments.values[position] for arguments in member_arguments]
        if isinstance(values[0], np.ndarray):
            placed = [located[member].locate(value, name) for member, value in enumerate(values)]
            for member, value in enumerate(placed):
                if value != placed[0] and value.shape != placed[0].shape:
                    raise ValueError(f"Population: member {member}'s {_readable(name)} has shape {value.shape} where "
                                     f"member 0's has {placed[0].shape}; members must match in structure and sizes")
                if value != placed[0]:  # the same shape in another place: the step's arrays alias differently
                    raise ValueError(f"Population: member {member}'s {_readable(name)} shares memory with other "
                                     f"arrays of its step differently from member 0's; members must match in "
                                     f"structure (activations, dropout on or off, batch norm options)")
            layout.append(("array", placed[0]))
        elif values[0] is None or not _same_types(values):  # None selects code at compile time: a constant
            if _scalars_differ(values):
                raise ValueError(f"Population: members differ in {_readable(name)} ({values[0]!r} and others); "
                                 "members must match in structure (activations, dropout on or off, batch norm "
                                 "options)")
            layout.append(("scalar", values[0]))
        else:  # stacked even when equal: the source, and so the compiled code, does not depend on the values
            layout.append(("scalars", np.array(values, dtype=np.asarray(values[0]).dtype)))
    outputs = [located[member].locate(arguments.output, "the output") for member, arguments in
               enumerate(member_arguments)]
    stacked_roots = roots.stack(located)
    views = np.zeros((len(member_names), 2 + MAX_VIEW_DIMENSIONS), np.int64)
    call, values, parameters = [], [], []
    for position, (name, (kind, value)) in enumerate(zip(member_names, layout)):
        if kind == "array":
            if not 1 <= len(value.shape) <= MAX_VIEW_DIMENSIONS:
                raise ValueError(f"Population: {name!r} has {len(value.shape)} dimensions; the population step "
                                 f"stacks arrays of 1 to {MAX_VIEW_DIMENSIONS}")
            size = int(np.prod(value.shape, dtype=np.int64))
            views[position, :2] = value.start, value.start + size
            views[position, 2:2 + len(value.shape)] = value.shape
            shape = ", ".join(f"views[{position}, {2 + axis}]" for axis in range(len(value.shape)))
            call.append(f"R{value.root}[m, views[{position}, 0]:views[{position}, 1]].reshape(({shape},))")
        elif kind == "scalars":
            parameters.append(f"s{position}")
            values.append(value)
            call.append(f"s{position}[m]")
        else:
            parameters.append(f"c{position}")
            values.append(value)
            call.append(f"c{position}")
    root_names = [f"R{index}" for index in range(len(stacked_roots))]
    output = roots.row_view(located[0], outputs[0])
    arrays = {name: roots.row_view(located[0], value) for name, (kind, value) in zip(member_names, layout)
              if kind == "array"}
    return StackedCall(", ".join(call), tuple(["views"] + root_names + parameters), (views, *stacked_roots, *values),
                       output, arrays)


def build(member_arguments, roots):
    """The population step over members whose ``compile_step`` gave ``member_arguments`` (CallArguments, one per
    member, same source), stacking their arrays into ``roots`` (StackedRoots)."""
    members = len(member_arguments)
    stacked = stack_members(member_arguments, roots)
    signature = ", ".join(["x", "y", "each", "counters", "factors", "hyper", "status", "active", "losses",
                           "update_rows", *RECORDS, *stacked.parameters])
    member_call = ", ".join(["counters[m]", "factors[m]", "hyper[m]", "status[m]", stacked.member_call])
    # one function for both kinds of batch (one compilation): x and y carry a leading member axis, of length 1 when
    # every member takes the same batch (each = 0)
    function = f'''

@njit(parallel=True, cache=True, **WITHOUT_REFERENCE_COUNTS)
def population_step({signature}):
    if not prepare_members(active, optimizer_steps, rows_window, rows_first, update_rows, counters, counted,
                           member_counters, hyper, clipping, skipping, status, losses):
        return ROWS_MISSING
    # the member steps' GEMMs run on their own thread: set once here, outside the loop (see kernels/cpu/blas.py)
    previous = blas_single_threaded()
    for m in prange(active.shape[0]):
        if active[m]:
            losses[m] = training_step(x[m * each], y[m * each], {member_call})
    blas_threads_restore(previous)
    if record_members(active, status, losses, member_counters, optimizer_steps, skipped_steps, measures_norm,
                      grad_norms, norm_known, diverged):
        return REFUSED
    return RAN
'''
    first = member_arguments[0]
    population_source = (first.source + "\nfrom numba import prange\nfrom fastdl.kernels.cpu.blas import "
                         "blas_single_threaded, blas_threads_restore\nfrom fastdl.kernels.cpu.population import "
                         "RAN, REFUSED, ROWS_MISSING, prepare_members, record_members\n" + function)
    per_member = [np.repeat(array[None], members, axis=0) for array in
                  (first.counters, first.factors, first.hyper, first.status)]
    return PopulationArguments(population_source, *per_member, stacked.values, stacked.output, stacked.arrays)


def build_evaluation(member_arguments, roots):
    """The population's evaluation over members whose eval-mode forwards gave ``member_arguments``
    (EvaluationArguments, one per member, same source): ``population_evaluation(x, y, counters, active, values,
    ...)`` writes each active member's mean loss on (x, y) into values[m] and leaves its output in the returned
    view. Returns (source, counters (members, layers), the values after ``values``, the outputs' view)."""
    stacked = stack_members(member_arguments, roots)
    signature = ", ".join(["x", "y", "counters", "active", "values", *stacked.parameters])
    function = f'''

@njit(parallel=True, cache=True, **WITHOUT_REFERENCE_COUNTS)
def population_evaluation({signature}):
    previous = blas_single_threaded()
    for m in prange(active.shape[0]):
        if active[m]:
            values[m] = evaluation_step(x, y, counters[m], {stacked.member_call})
    blas_threads_restore(previous)
'''
    source = (member_arguments[0].source + "\nfrom numba import prange\nfrom fastdl.kernels.cpu.blas import "
              "blas_single_threaded, blas_threads_restore\n" + function)
    counters = np.stack([arguments.counters for arguments in member_arguments])
    return source, counters, stacked.values, stacked.output
