"""Launchers for optim.cu: the signatures of kernels/cpu/optim.py, on CuPy arrays (or numpy on the emulator).

The per-group hyperparameter rows (``hyper``, float64, a few rows) are copied to the device each step into a reused
workspace; the piece tables never change for a buffer and are copied once. Per-tensor work (LARS, LAMB, norms) runs
one block per piece of the flat buffer; the small per-tensor tables live on the host, as on the CPU.
"""

import inspect

import numpy as np

from .. import ops
from ..bfloat16 import key_offset
from ..reference.optim import lamb_trust_ratios, lars_trust_ratios  # noqa: F401  (a few scalars per tensor: host)
from .launch import MAX_BLOCKS, NULL, THREADS, array_module, blocks, kernel, on_host, optional, workspace

SOURCE = "optim.cu"


PACK_BYTES = 16  # FastdlPack in optim.cu

_device_tables = {}


def _table(host, like):
    """``host`` (a piece table, fixed for its buffer) where the kernels can read it: copied to the GPU once. The cache
    keeps the host array alive, so its id (the key) cannot be reused by another array."""
    if on_host(like):
        return host
    if id(host) not in _device_tables:
        _device_tables[id(host)] = (host, array_module(like).asarray(host))
    return _device_tables[id(host)][1]


def _on_device(host, name, like):
    """The device's copy of a small float64 host array (trust ratios, hyperparameter rows), in a reused workspace;
    the host array itself on the emulator."""
    if on_host(like):
        return host
    device = workspace(name, host.shape, np.float64, like)
    device.set(host)
    return device


_layouts = {}


def _layout(piece_bounds, elements_per_thread):
    """(grid, blocks per piece) for a buffer's pieces: enough blocks per piece for its longest piece, the grid a
    multiple of them that covers every piece or loops over them. Fixed for a buffer: worked out once (the cache
    keeps the bounds alive, so their id, the key, cannot be reused)."""
    key = (id(piece_bounds), elements_per_thread)
    if key not in _layouts:
        pieces = len(piece_bounds) - 1
        longest = int(np.max(np.diff(piece_bounds))) if pieces else 1
        per_piece = max(1, min(-(-longest // (THREADS * elements_per_thread)), MAX_BLOCKS))
        _layouts[key] = (piece_bounds, (per_piece * max(1, min(pieces, MAX_BLOCKS // per_piece)),), per_piece)
    return _layouts[key][1:]


def _grouped(hyper, piece_bounds, piece_groups, like, elements_per_thread=1):
    """(grid, the kernel's trailing group arguments)."""
    grid, per_piece = _layout(piece_bounds, elements_per_thread)
    arguments = (_on_device(hyper, "hyper", like), np.int32(hyper.shape[1]), _table(piece_bounds, like),
                 _table(piece_groups, like), np.int64(len(piece_groups)), np.int32(per_piece))
    return grid, arguments


def _launch(name, param, arrays, grad_scale, hyper, piece_bounds, piece_groups, elements_per_thread=1):
    grid, groups = _grouped(hyper, piece_bounds, piece_groups, param, elements_per_thread)
    kernel(SOURCE, name, param.dtype, like=param)(grid, (THREADS,),
                                                  (*arrays, param.dtype.type(grad_scale), *groups))


def _address(array):
    return array.ctypes.data if on_host(array) else array.data.ptr


_packed_pieces = {}


def _packable(arrays, piece_bounds, itemsize):
    """Whether the arrays start on a 16-byte pack and so does every piece (worked out once per buffer)."""
    key = (id(piece_bounds), itemsize)
    if key not in _packed_pieces:  # the cache keeps the bounds alive: their id cannot be reused
        _packed_pieces[key] = (piece_bounds, not np.any(piece_bounds[:-1] % (PACK_BYTES // itemsize)))
    return _packed_pieces[key][1] and all(_address(a) % PACK_BYTES == 0 for a in arrays)


def _elementwise_update(op):
    """The launcher of an element-wise update (``ops.ELEMENTWISE_UPDATES``), with the contract's parameters: the
    kernel ``op`` of optim.cu over (param, grad, state arrays, grad_scale, the group tables); an empty state array
    (one the optimizer's options leave unused) goes as NULL. A new element-wise optimizer needs no launcher."""

    def launch_update(*arguments):
        *arrays, grad_scale, hyper, piece_bounds, piece_groups = arguments
        param, grad, *state = arrays
        _launch(op, param, (param, grad, *map(optional, state)), grad_scale, hyper, piece_bounds, piece_groups)

    launch_update.__name__ = launch_update.__qualname__ = op
    launch_update.__signature__ = inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in ops.parameter_names(op)])
    return launch_update


# Adam has a launcher of its own below (a packed kernel when every piece starts on a 16-byte pack)
globals().update({op: _elementwise_update(op) for op in ops.ELEMENTWISE_UPDATES if op != "adam_step"})


def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, grad_scale, hyper, piece_bounds, piece_groups):
    arrays = (param, grad, exp_avg, exp_avg_sq)
    if optional(max_exp_avg_sq) is NULL and _packable(arrays, piece_bounds, param.itemsize):
        _launch("adam_packed_step", param, arrays, grad_scale, hyper, piece_bounds, piece_groups,
                elements_per_thread=PACK_BYTES // param.itemsize)
        return
    _launch("adam_step", param, (*arrays, optional(max_exp_avg_sq)), grad_scale, hyper, piece_bounds, piece_groups)


def adam_bfloat16_step(param, grad, exp_avg, exp_avg_sq, seed, counter, grad_scale, hyper, piece_bounds,
                       piece_groups):
    _launch("adam_bfloat16_step", param, (param, grad, exp_avg, exp_avg_sq, np.uint32(key_offset(seed, counter))),
            grad_scale, hyper, piece_bounds, piece_groups)


def _piece_partials(partials, like):
    return partials if on_host(like) else workspace("piece_partials", partials.shape, np.float64, like)


def _segment_sums(segments, device_partials, sums, like):
    """sums[s] = the pieces of segment s added in order, into the host array ``sums``."""
    pieces, count = len(segments), len(sums)
    device_sums = sums if on_host(like) else workspace("segment_sums", sums.shape, np.float64, like)
    kernel(SOURCE, "segment_sums", like=like)(blocks(count), (THREADS,),
                                              (device_partials, segments, np.int32(pieces), np.int32(count),
                                               device_sums))
    if not on_host(like):
        sums[...] = device_sums.get()


def segment_sums_of_squares(first, second, piece_bounds, piece_segments, partials, sums):
    """sums[s] = (sum first^2, sum second^2) per segment, into the host array ``sums`` (one small copy back)."""
    device_partials = _piece_partials(partials, first)
    kernel(SOURCE, "piece_sums_of_squares", first.dtype, like=first)(
        (len(piece_segments),), (THREADS,), (first, optional(second), _table(piece_bounds, first), device_partials))
    _segment_sums(_table(piece_segments, first), device_partials, sums, first)


def _per_piece_groups(hyper, piece_bounds, piece_groups, like):
    """LARS's and LAMB's trailing arguments (one block per piece: no layout)."""
    hyper_on_device = _on_device(hyper, "hyper", like)
    return hyper_on_device, np.int32(hyper.shape[1]), _table(piece_bounds, like), _table(piece_groups, like)


def lars_step(param, grad, buffer, ratios, piece_segments, grad_scale, hyper, piece_bounds, piece_groups):
    kernel(SOURCE, "lars_step", param.dtype, like=param)(
        (len(piece_segments),), (THREADS,),
        (param, grad, buffer, _on_device(ratios, "ratios", param), _table(piece_segments, param),
         param.dtype.type(grad_scale), *_per_piece_groups(hyper, piece_bounds, piece_groups, param)))


def lamb_moments(param, grad, exp_avg, exp_avg_sq, piece_segments, partials, sums, grad_scale, hyper, piece_bounds,
                 piece_groups):
    device_partials = _piece_partials(partials, param)
    kernel(SOURCE, "lamb_moments", param.dtype, like=param)(
        (len(piece_segments),), (THREADS,),
        (param, grad, exp_avg, exp_avg_sq, device_partials, param.dtype.type(grad_scale),
         *_per_piece_groups(hyper, piece_bounds, piece_groups, param)))
    _segment_sums(_table(piece_segments, param), device_partials, sums, param)


def lamb_apply(param, exp_avg, exp_avg_sq, ratios, piece_segments, hyper, piece_bounds, piece_groups):
    kernel(SOURCE, "lamb_apply", param.dtype, like=param)(
        (len(piece_segments),), (THREADS,),
        (param, exp_avg, exp_avg_sq, _on_device(ratios, "ratios", param), _table(piece_segments, param),
         *_per_piece_groups(hyper, piece_bounds, piece_groups, param)))
