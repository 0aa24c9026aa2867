"""512-bit vectors for a kernel's loops, on CPUs that have them.

LLVM's tuning for Intel's AVX-512 server cores (Skylake-SP through Emerald Rapids) prefers 256-bit vectors, a guard
against the clock drop of the first AVX-512 parts, so the loops Numba vectorizes there use half the registers'
width. For batch norm's passes the full width is faster on the benchmark host (Emerald Rapids, measured in one
process against the same code without it): the training forward 1.02-1.28x, the ReLU backward 1.05-1.36x; and
so are the activations' formulas, which are bound by arithmetic, not memory (float32 forward 1.07-1.31x). Results
are bit-identical: each element's arithmetic is the same, only how many lanes run at once changes. The optimizers'
updates and Dense's ReLU/identity epilogue measured within noise (memory-bound), so they are left as they are.

``wide_vectors()`` gives the LLVM function it is lowered into the attribute "prefer-vector-width"="512", as clang's
``-mprefer-vector-width=512`` does. It marks the whole function, and each ``prange`` body is a function of its own:
call it first thing in each. Only a preference: a CPU without AVX-512 keeps the widest vectors it has, and other
architectures ignore the attribute.
"""

from numba import types
from numba.extending import intrinsic

PREFER_512_BIT = '"prefer-vector-width"="512"'


@intrinsic
def wide_vectors(typingctx):
    def codegen(context, builder, signature, args):
        # llvmlite's attribute set checks names against the attributes that take no value; this one is a
        # key="value" pair that LLVM reads from the same place, so it is added past that check. Only a hint: an
        # llvmlite whose attributes are no longer a set compiles the kernel at the default width instead
        try:
            set.add(builder.function.attributes, PREFER_512_BIT)
        except (AttributeError, TypeError):
            pass
        return context.get_dummy_value()

    return types.void(), codegen
