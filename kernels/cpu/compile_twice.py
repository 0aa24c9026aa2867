"""One kernel body compiled twice, with Numba's ``parallel`` option and without.

Large inputs take the ``*_parallel`` kernel, small ones the ``*_serial`` one (waking a second thread pool costs
more than it saves there; see ``dense.py``). Both compile the same plain Python body: calling one
``inline="always"`` body from two decorated wrappers made Numba run its front end over the whole body again at
each call site, 2-3 s of the 15 s cold compilation of batch norm's backward. Each copy gets its own name because
Numba's disk cache names its files after the function, not the compile options: two dispatchers of one function
would load each other's machine code.
"""

import types

import numba
from numba import njit
from numba.core.cpu_options import ParallelOptions
from numba.np.ufunc import parallel as _numba_parallel

from .reference_counts import WITH_REFERENCE_COUNTS, WITHOUT_REFERENCE_COUNTS

# Consecutive prange loops over the same chunks would be fused into one by Numba, which cannot see that the
# second reads what other threads wrote in the first (block sums, a GEMM's blocks): the passes must stay separate
# loops. An options object, not a dict: Numba pops the keys of a dict, so a second compilation would fuse again.
NO_FUSION = ParallelOptions({"fusion": False})


def _renamed(body, name):
    function = types.FunctionType(body.__code__.replace(co_name=name), body.__globals__, name, body.__defaults__,
                                  body.__closure__)
    function.__qualname__ = name
    function.__module__ = body.__module__
    function.__doc__ = body.__doc__
    return function


def parallel_and_serial(body, name, parallel=True, **options):
    """(``name``_parallel, ``name``_serial): ``body`` compiled with ``parallel`` and without, both cached on disk;
    the serial one without reference counting, the parallel one with it whoever calls it first
    (``reference_counts.py``)."""
    return (njit(parallel=parallel, cache=True, **WITH_REFERENCE_COUNTS, **options)(_renamed(body, f"{name}_parallel")),
            njit(cache=True, **WITHOUT_REFERENCE_COUNTS, **options)(_renamed(body, f"{name}_serial")))


def numba_threads():
    """``numba.get_num_threads()``, read straight from the threading layer once Numba has started it: the public
    call takes two locks, and right after a large kernel (the layer's previous call), from cold caches, it cost
    several times more. Falls back to the public call before start-up, or where Numba's internals differ."""
    if getattr(_numba_parallel, "_is_initialized", False):
        read = getattr(_numba_parallel, "_get_num_threads", None)
        if read is not None:
            return read()
    return numba.get_num_threads()
