"""The global seed: after ``fastdl.manual_seed(n)``, every random choice fastdl makes without an explicit ``seed=``
(a layer's initialization and its dropout and RReLU streams, ``fit``'s and ``batches``' shuffling, the initializers)
draws its seed from one sequence started at n, so two runs of the same script give the same result, as after
``torch.manual_seed``. Without it (or after ``manual_seed(None)``) those seeds come from the operating system.
An explicit ``seed=`` always wins and does not move the sequence.
"""

import numpy as np

_state = {"sequence": None}


def manual_seed(seed):
    """Start the global seed sequence at ``seed`` (a non-negative integer), or stop it with ``None``."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"manual_seed: seed must be a non-negative integer or None, got {seed!r}")
    _state["sequence"] = None if seed is None else np.random.SeedSequence(int(seed))


def default_seed(seed=None, owner=None):
    """``seed`` when given (a non-negative integer below 2**64: the random streams hold it in 64 bits); else the
    next seed of the global sequence, or fresh entropy when none was set. ``owner`` names the caller in errors."""
    if seed is not None:
        where = f"{owner}: " if owner else ""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"{where}seed must be a non-negative integer or None, got {seed!r}")
        if not 0 <= seed < 2**64:
            raise ValueError(f"{where}seed must be a non-negative integer below 2**64 or None, got {seed!r}")
        return int(seed)
    sequence = _state["sequence"]
    source = np.random.SeedSequence() if sequence is None else sequence.spawn(1)[0]
    return int(source.generate_state(1, np.uint64)[0])
