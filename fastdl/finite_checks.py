"""One NaN policy for the layers: kernels raise a finiteness flag on the data they already read; the layer turns a
false flag into its clear error, before any state is left changed.

On the CPU a flag is a bool and the layer tests it at once. On the GPU it stays on the device
(``kernels/cuda/flags.py``): testing it at once would make every layer wait for the device. Inside a ``Sequential``
forward the layers therefore leave their device flags to one read at its end (``deferred()``); a false one undoes
the whole forward (every layer's ``undo_forward``) and raises the first failing layer's error, so a refused batch
still changes nothing, with one wait per forward instead of one per layer.
"""

import contextvars

_pending = contextvars.ContextVar("fastdl_pending_finite_checks", default=None)


def check(flag, refuse, *arguments):
    """``refuse(*arguments)`` (which raises the layer's error, or returns when the flag was a false alarm) when
    ``flag`` is false: now, or for a device flag inside a ``Sequential`` forward, when that forward ends."""
    pending = _pending.get()
    if pending is not None and hasattr(flag, "read_together") and len(pending) < flag.capacity:
        pending.append((flag, refuse, arguments))
        return
    if not flag:
        refuse(*arguments)


class deferred:
    """``with deferred() as checks: ...; checks.resolve()``: device flags raised inside are read together by
    ``resolve``; only the outermost block reads (a nested Sequential's forward leaves them to its container)."""

    def __enter__(self):
        self.outermost = _pending.get() is None
        if self.outermost:
            self._token = _pending.set([])
        return self

    def resolve(self):
        """Read the pending flags in one go and run the first false one's ``refuse`` (which may raise)."""
        if not self.outermost:
            return
        pending = _pending.get()
        if not pending:
            return
        flags = [flag for flag, _, _ in pending]
        results = type(flags[0]).read_together(flags)
        checks = list(pending)
        pending.clear()
        for finite, (_, refuse, arguments) in zip(results, checks):
            if not finite:
                refuse(*arguments)

    def __exit__(self, *exc_info):
        if self.outermost:
            _pending.reset(self._token)
        return False
