"""Data-parallel training across processes: MPI (mpi4py) for CPU ranks, NCCL (CuPy) for GPU ranks.

Every gradient of a model lives in the optimizer's one flat buffer per dtype, so a step needs ONE all-reduce
per buffer, not one per tensor. Launch with ``mpirun -n N python train.py`` (or ``mpirun -n N fastdl train
--distributed``)::

    fastdl.distributed.init()
    model = ...; optimizer = fastdl.optim.Adam(model.parameters())
    fastdl.distributed.broadcast_parameters(model)          # every rank starts from rank 0's weights
    for xb, yb in fastdl.data.batches(x, y, 32, seed=0, rank=dist.rank(), world_size=dist.world_size()):
        value, grad = loss(model(xb), yb)
        model.backward(grad, input_grad=False)
        fastdl.distributed.allreduce_gradients(optimizer)   # the mean gradient over all ranks, in place
        optimizer.step()                                     # clipping then sees the global gradient

Batch-norm statistics are per rank, as in PyTorch's ``BatchNorm1d`` (each rank normalizes with its own batch).
A rank that raises aborts the whole job (no rank is left waiting in a collective). Ranks that built different
models or optimizers are an error naming the first difference and the rank (``check_same_setup``, which the
broadcasts run first), and buffers that differ between ranks are an error before any data moves.
"""

import sys
import time
import weakref

import numpy as np

from .backend import get_backend
from .layers import Sequential

_state = {"context": None}


class _ByIdentity:
    """Values cached per tuple of live objects. A plain ``id()`` key also matches a new object that took a dead
    one's address, which happens on one rank and not on another: the ranks then disagreed on whether to check a
    buffer (one waited in an all-gather, the other in an all-reduce, forever). Entries hold weak references and
    count only while their objects live; objects that cannot be weakly referenced are never cached."""

    def __init__(self):
        self._entries = {}

    def get(self, *objects):
        entry = self._entries.get(tuple(map(id, objects)))
        if entry is not None and all(ref() is obj for ref, obj in zip(entry[0], objects)):
            return entry[1]
        return None

    def put(self, value, *objects):
        try:
            refs = tuple(weakref.ref(obj) for obj in objects)
        except TypeError:
            return
        if len(self._entries) > 256:  # forget the dead
            self._entries = {key: entry for key, entry in self._entries.items()
                             if all(ref() is not None for ref in entry[0])}
        self._entries[tuple(map(id, objects))] = (refs, value)


class _Context:
    def __init__(self, name, comm, rank, world_size, nccl=None):
        self.name, self.comm, self.rank, self.world_size, self.nccl = name, comm, rank, world_size, nccl
        self.checked = _ByIdentity()  # the buffers whose size and dtype every rank agreed on


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise RuntimeError("fastdl.distributed: MPI needs mpi4py and an MPI library; install them with "
                           f"`pip install mpi4py mpich` (or `pip install \".[mpi]\"` in a fastdl checkout) ({error})"
                           ) from error
    return MPI


def init(backend=None):
    """Join the job started by mpirun: ``backend`` "mpi" (CPU ranks, the default on the cpu and numpy backends)
    or "nccl" (GPU ranks: each rank takes device rank % device_count, the NCCL id travels over MPI).
    Returns (rank, world_size). Calling it again returns the same."""
    context = _state["context"]
    if context is not None:
        return context.rank, context.world_size
    if backend is None:
        backend = "nccl" if get_backend().name == "gpu" else "mpi"
    if backend not in ("mpi", "nccl"):
        raise ValueError(f"fastdl.distributed.init: backend must be 'mpi' or 'nccl', got {backend!r}")
    MPI = _mpi()
    comm = MPI.COMM_WORLD
    nccl = None
    if backend == "nccl":
        try:
            import cupy
            from cupy.cuda import nccl as cupy_nccl
        except ImportError as error:
            raise RuntimeError("fastdl.distributed: NCCL needs CuPy with NCCL (`pip install cupy-cuda12x`) "
                               f"({error})") from error
        cupy.cuda.Device(comm.rank % cupy.cuda.runtime.getDeviceCount()).use()
        unique_id = comm.bcast(cupy_nccl.get_unique_id() if comm.rank == 0 else None, root=0)
        nccl = cupy_nccl.NcclCommunicator(comm.size, unique_id, comm.rank)
    _state["context"] = _Context(backend, comm, comm.rank, comm.size, nccl)
    _abort_job_on_uncaught_exception(comm)
    return comm.rank, comm.size


def _abort_job_on_uncaught_exception(comm):
    """An exception on one rank would leave the others waiting in a collective forever: abort them all."""
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        sys.stderr.flush()
        if comm.size > 1:
            # mpiexec forwards each rank's stderr asynchronously; aborting at once sometimes lost the traceback
            # (an empty stderr in a loaded CI run), so its forwarder gets a moment to pass the message on first
            time.sleep(0.5)
            comm.Abort(1)
    sys.excepthook = hook


def _context():
    context = _state["context"]
    if context is None:
        raise RuntimeError("fastdl.distributed: call fastdl.distributed.init() first (inside mpirun)")
    return context


def rank():
    context = _state["context"]
    return 0 if context is None else context.rank


def world_size():
    context = _state["context"]
    return 1 if context is None else context.world_size


def is_main():
    """True on rank 0 (and without distributed training): the rank that prints and writes files."""
    return rank() == 0


def _check_same_everywhere(context, array, what):
    """Every rank must hand a buffer of the same size and dtype to a collective, else it would mix garbage."""
    if context.checked.get(array) == (array.size, str(array.dtype)):
        return
    signatures = context.comm.allgather((int(array.size), str(array.dtype)))
    if len(set(signatures)) != 1:
        sizes = ", ".join(f"rank {r}: {n} x {d}" for r, (n, d) in enumerate(signatures))
        raise ValueError(f"fastdl.distributed: {what} differs between ranks ({sizes}); every rank must build the "
                         "same model and optimizer")
    context.checked.put((array.size, str(array.dtype)), array)


def _host(array):
    """MPI works on host memory: GPU arrays go through NCCL instead."""
    return array if isinstance(array, np.ndarray) else None


BUCKET_BYTES = 2 << 20  # all-reduce pieces: MPICH moves large buffers faster in pieces (bench/allreduce_report.py)


def _buckets(start, stop, itemsize, bucket_bytes):
    step = max(1, bucket_bytes // itemsize)
    return [(first, min(first + step, stop)) for first in range(start, stop, step)]


def _allreduce(context, array, what, bucket_bytes=BUCKET_BYTES):
    _check_same_everywhere(context, array, what)
    if context.nccl is not None:
        import cupy
        from cupy.cuda import nccl

        kind = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}[array.dtype]
        context.nccl.allReduce(array.data.ptr, array.data.ptr, array.size, kind, nccl.NCCL_SUM,
                               cupy.cuda.get_current_stream().ptr)
        return
    MPI = _mpi()
    for first, last in _buckets(0, array.size, array.itemsize, bucket_bytes):
        context.comm.Allreduce(MPI.IN_PLACE, _host(array)[first:last], op=MPI.SUM)


def _broadcast(context, array, root, what):
    _check_same_everywhere(context, array, what)
    if context.nccl is not None:
        import cupy
        from cupy.cuda import nccl

        kind = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64,
                np.dtype(np.int64): nccl.NCCL_INT64}[array.dtype]
        context.nccl.bcast(array.data.ptr, array.size, kind, root, cupy.cuda.get_current_stream().ptr)
        return
    context.comm.Bcast(_host(array), root=root)


def _gradient_buffers(target):
    """The flat gradient buffers of an optimizer, or of a model's parameters (one per FlatParameters, else one
    per parameter for parameters that never went into an optimizer)."""
    groups = getattr(target, "groups", None)
    if groups is not None:
        return [group.grad for group in groups]
    buffers, seen = [], set()
    for parameter in target.parameters():
        flat = parameter._flat
        if flat is None or flat.stale:
            buffers.append(parameter.grad)
        elif id(flat) not in seen:
            seen.add(id(flat))
            buffers.append(flat.grad)
    return buffers


def allreduce_gradients(target, average=True, bucket_bytes=BUCKET_BYTES):
    """Sum (``average``: then divide by world_size) the gradients of ``target`` (an optimizer or a model) over
    all ranks, in place, over each flat buffer: cut into pieces of ``bucket_bytes`` whatever the tensors are
    (one call per tensor would send tiny messages for biases and one huge one for a big matrix)."""
    context = _context()
    for index, buffer in enumerate(_gradient_buffers(target)):
        _allreduce(context, buffer, f"gradient buffer {index}", bucket_bytes)
        if average and context.world_size > 1:
            buffer *= buffer.dtype.type(1.0 / context.world_size)


def backward_and_allreduce(model, grad_out, optimizer, average=True):
    """``model.backward(grad_out, input_grad=False)`` with each layer's gradients all-reduced (non-blocking) as
    soon as that layer's backward is done, so communication overlaps the backward of earlier layers. Falls back
    to one blocking all-reduce after the backward for GPU ranks and for models that are not a Sequential."""
    context = _context()
    groups = optimizer.groups
    if context.nccl is not None or not isinstance(model, Sequential) or len(groups) != 1:
        model.backward(grad_out, input_grad=False)
        allreduce_gradients(optimizer, average)
        return
    group = groups[0]
    spans = _layer_spans(model, group)
    if spans is None:  # the layers' parameters do not tile the buffer in ranges of their own: no overlap possible
        model.backward(grad_out, input_grad=False)
        allreduce_gradients(optimizer, average)
        return
    _check_same_everywhere(context, group.grad, "gradient buffer 0")
    MPI = _mpi()
    requests = []
    for index in range(len(model.layers) - 1, -1, -1):
        grad_out = model.layers[index].backward(grad_out, input_grad=index > 0)
        for first, last in spans[index]:
            requests.append(context.comm.Iallreduce(MPI.IN_PLACE, group.grad[first:last], op=MPI.SUM))
    MPI.Request.Waitall(requests)
    if average and context.world_size > 1:
        group.grad *= group.grad.dtype.type(1.0 / context.world_size)


_spans_cache = _ByIdentity()


def _layer_spans(model, group):
    """Per layer, the pieces of the flat gradient buffer holding its parameters' gradients (computed once per model
    and buffer); None unless the layers' ranges are disjoint and cover the whole buffer (else a piece could be
    reduced twice, or not at all)."""
    cached = _spans_cache.get(model, group)
    if cached is None or cached[0] != len(model.layers):
        offsets = {id(p): (int(start), int(stop)) for p, start, stop in
                   zip(group.parameters, group.offsets[:-1], group.offsets[1:])}
        ranges = []
        for layer in model.layers:
            owned = [offsets[id(p)] for p in layer.parameters() if id(p) in offsets]
            ranges.append((min(a for a, _ in owned), max(b for _, b in owned)) if owned else None)
        present = sorted(r for r in ranges if r is not None)
        tiles = (sum(b - a for a, b in present) == group.size
                 and all(previous[1] <= current[0] for previous, current in zip(present, present[1:])))
        spans = [[] if r is None else _buckets(r[0], r[1], group.grad.itemsize, BUCKET_BYTES)
                 for r in ranges] if tiles else None
        cached = (len(model.layers), spans)
        _spans_cache.put(cached, model, group)
    return cached[1]


def _named_modules(module, prefix=""):
    yield prefix.rstrip(".") or "(model)", module
    for index, child in enumerate(module.children()):
        yield from _named_modules(child, f"{prefix}{index}.")


def _model_layout(model):
    """What every rank's model must share, one readable line per item: each layer (kind, sizes, activation), each
    parameter and state buffer (name, shape, dtype)."""
    lines = [f"layer {path}: {getattr(module, 'name', type(module).__name__)}"
             for path, module in _named_modules(model)]
    lines += [f"parameter {name}: shape {tuple(p.shape)}, {p.dtype}" for name, p in model.named_parameters()]
    lines += [f"state buffer {name}: shape {tuple(b.shape)}, {b.dtype}" for name, b in model.named_buffers()]
    return lines


def _optimizer_layout(optimizer):
    """What every rank's optimizer must share: its algorithm, its parameter groups and the layout of its state."""
    lines = [f"optimizer: {type(optimizer).__name__}"]
    for index, (group, state) in enumerate(zip(optimizer.groups, optimizer.state)):
        lines.append(f"parameter group {index}: {group.data.size} x {group.data.dtype}")
        lines += [f"optimizer state {index}.{name}: shape {tuple(array.shape)}, {array.dtype}"
                  for name, array in sorted(state.items())]
    return lines


def _first_difference(reference, other, other_rank):
    for index, (mine, theirs) in enumerate(zip(reference, other)):
        if mine != theirs:
            return f"rank 0 has {mine!r} where rank {other_rank} has {theirs!r}"
    if len(reference) > len(other):
        return f"rank 0 has {reference[len(other)]!r} where rank {other_rank} has nothing more"
    return f"rank {other_rank} has {other[len(reference)]!r} where rank 0 has nothing more"


def check_same_setup(model=None, optimizer=None):
    """Raise ValueError, on every rank, naming the first difference and the rank, unless every rank built the same
    model (layers, parameter and buffer shapes and dtypes) and optimizer (algorithm, state layout).

    One small all-gather; ``broadcast_parameters`` and ``broadcast_optimizer_state`` (so ``fit(distributed=True)``)
    call it before their first collective: ranks that disagree would otherwise wait on each other forever or mix
    one rank's weights into another's differently shaped ones.
    """
    context = _context()
    layout = (_model_layout(model) if model is not None else []) + (
        _optimizer_layout(optimizer) if optimizer is not None else [])
    layouts = context.comm.allgather(layout)
    for other_rank, other in enumerate(layouts):
        if other != layouts[0]:
            raise ValueError(f"fastdl.distributed: the {'model' if model is not None else 'optimizer'} differs "
                             f"between ranks: {_first_difference(layouts[0], other, other_rank)}; every rank must "
                             "build the same model and optimizer")


def broadcast_parameters(model, root=0):
    """Copy rank ``root``'s parameters and state buffers (running statistics) to every rank, in place."""
    context = _context()
    check_same_setup(model=model)
    seen = set()
    for parameter in model.parameters():
        flat = parameter._flat
        if flat is not None and not flat.stale:
            if id(flat) not in seen:
                seen.add(id(flat))
                _broadcast(context, flat.data, root, "parameter buffer")
        else:
            _broadcast(context, parameter.data, root, f"parameter {parameter!r}")
    for module in model.modules():
        for name in module.state_buffers:
            _broadcast(context, getattr(module, name), root, f"{type(module).__name__}.{name}")


def broadcast_optimizer_state(optimizer, root=0):
    """Copy rank ``root``'s optimizer state (moments, step counts, hyperparameters) to every rank."""
    context = _context()
    check_same_setup(optimizer=optimizer)
    for index, state in enumerate(optimizer.state):
        for name, array in state.items():
            _broadcast(context, array, root, f"optimizer state {index}.{name}")
    steps, skipped, max_grad_norm, groups = context.comm.bcast(
        (optimizer.steps, optimizer.skipped_steps, optimizer.max_grad_norm, optimizer._group_settings()), root=root)
    optimizer.steps, optimizer.skipped_steps, optimizer.max_grad_norm = steps, skipped, max_grad_norm
    for group, settings in zip(optimizer.param_groups, groups):  # check_same_setup: the same groups everywhere
        group.update({name: value for name, value in settings.items() if name != "params"})


def sum_over_ranks(values):
    """Element-wise sums of a short list of numbers over every rank (epoch totals, accuracy counts)."""
    return [float(v) for v in _context().comm.allreduce(np.asarray(values, dtype=np.float64), op=_mpi().SUM)]


def gather_objects(value):
    """[value of rank 0, value of rank 1, ...] on every rank (small Python values, e.g. batch statistics)."""
    return _context().comm.allgather(value)


def sum_arrays(array):
    """Element-wise sum of a small float64 host array over every rank (a new array)."""
    total = np.array(array, dtype=np.float64)
    _context().comm.Allreduce(_mpi().IN_PLACE, total, op=_mpi().SUM)
    return total


def broadcast_object(value, root=0):
    """A small Python value from rank ``root`` (e.g. a seed) to every rank."""
    return _context().comm.bcast(value, root=root)
