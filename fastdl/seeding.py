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


def default_seed(seed=None):
    """``seed`` when given; else the next seed of the global sequence, or fresh entropy when none was set."""
    if seed is not None:
        return seed
    sequence = _state["sequence"]
    source = np.random.SeedSequence() if sequence is None else sequence.spawn(1)[0]
    return int(source.generate_state(1, np.uint64)[0])
