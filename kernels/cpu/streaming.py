"""Streaming (non-temporal) stores for the output passes of memory-bound kernels.

An ordinary store first reads the cache line it writes into (write-allocate), so a pass that reads x and writes y
moves three arrays' worth of bytes, not two. A streaming store writes whole lines straight to memory without that
read: batch norm's normalize pass and its dx pass got 15-20% faster with them on the 2-core benchmark host. They
pay only for outputs larger than the caches that would otherwise keep them (STREAMING_MIN_BYTES); below that the
next layer would find its input evicted.

``store_streaming`` marks one element's store ``!nontemporal``; inside a plain ``for j in range(n)`` loop LLVM
vectorizes it into full-vector non-temporal stores (vmovntps on x86). Those need vector-aligned addresses, which
the store's declared 64-byte alignment promises: call it only on rows for which ``streams`` is true (the row
starts on a 64-byte line and every row does), and only with ``j`` counted from 0 by 1. The layers allocate
their outputs aligned (``Backend.empty``).
"""

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

CACHE_LINE = 64
STREAMING_MIN_BYTES = 1 << 22  # twice this host's 2 MiB per-core L2: smaller outputs stay in cache for the next op


@intrinsic
def store_streaming(typingctx, row, index, value):
    """row[index] = value as a non-temporal store (row: 1-D C-contiguous; see the module's alignment rule)."""
    if not (isinstance(row, types.Array) and row.ndim == 1 and row.layout == "C" and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        row_type, _, value_type = signature.args
        array = context.make_array(row_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, row_type, array, [args[1]], wraparound=False)
        store = builder.store(context.cast(builder, args[2], value_type, row_type.dtype), pointer, align=CACHE_LINE)
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return types.void(row, index, value), codegen


@intrinsic
def fence_streaming_stores(typingctx):
    """Orders the streaming stores before later ones (they are weakly ordered): end each thread's share with it."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@njit(inline="always")
def streams(out):
    """True when the rows of the 2-D C-contiguous ``out`` can take streaming stores, and it is worth it."""
    return (out.nbytes >= STREAMING_MIN_BYTES and out.ctypes.data % CACHE_LINE == 0
            and out.strides[0] % CACHE_LINE == 0)



@njit(inline="always")
def store(row, index, value, stream):
    """row[index] = value, streamed when ``stream`` (loop-invariant: LLVM unswitches the loop on it)."""
    if stream:
        store_streaming(row, index, value)
    else:
        row[index] = value
