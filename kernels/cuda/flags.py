"""Finiteness flags that stay on the device until someone reads them.

A forward kernel that finds NaN or Inf raises a flag (a count, or a 0/1 word) in device memory. Reading it at once
would copy it to the host after every layer, and each copy waits for the GPU to finish everything queued before it,
so a model's forward would run as a chain of waits. Instead the launchers return a ``DeviceFlag``: the flag's value
copied, on the device and in stream order, into the next slot of a ring, and read when asked. ``bool(flag)`` reads
one; ``DeviceFlag.read_together(flags)`` reads a whole pass's flags with one copy of the ring (the layer API does,
once per ``Sequential`` forward). On the emulator the ring is a numpy array and nothing waits.
"""

import numpy as np

from .launch import array_module, on_host

RING_SLOTS = 1024


class DeviceFlag:
    """Whether a kernel found its data finite, left on the device (see the module's docstring)."""

    __slots__ = ("ring", "slot", "finite_value")
    capacity = RING_SLOTS  # more flags than this, unread, and the oldest ones would be overwritten

    def __init__(self, ring, slot, finite_value):
        self.ring, self.slot, self.finite_value = ring, slot, finite_value

    def __bool__(self):
        value = self.ring[self.slot] if on_host(self.ring) else self.ring[self.slot:self.slot + 1].get()[0]
        return bool(value == self.finite_value)

    @staticmethod
    def read_together(flags):
        """[bool(flag) for flag in flags], with one copy to the host per ring (one per array module)."""
        copies = {}
        for flag in flags:
            if id(flag.ring) not in copies:
                copies[id(flag.ring)] = flag.ring if on_host(flag.ring) else flag.ring.get()
        return [bool(copies[id(flag.ring)][flag.slot] == flag.finite_value) for flag in flags]


_rings = {}  # array module name -> [ring, next slot]


def device_flag(value, finite_value):
    """A ``DeviceFlag`` of ``value[0]`` (a one-element array a kernel has just written, or is queued to write), which
    means finite when it equals ``finite_value``: copied into the ring's next slot without waiting."""
    xp = array_module(value)
    entry = _rings.get(xp.__name__)
    if entry is None:
        entry = _rings[xp.__name__] = [xp.zeros(RING_SLOTS, np.float64), 0]
    ring, slot = entry
    entry[1] = (slot + 1) % RING_SLOTS
    ring[slot:slot + 1] = value[:1]
    return DeviceFlag(ring, slot, finite_value)
