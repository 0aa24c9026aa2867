"""One contiguous buffer for the values and one for the gradients of many parameters of one dtype.

After ``FlatParameters(parameters)`` each ``Parameter.data`` / ``.grad`` is a view into ``data`` / ``grad``, so
an optimizer updates the whole model with one kernel call. The buffer is split into pieces of at most
PIECE_ELEMENTS that never cross a parameter boundary: per-tensor norms (LARS, LAMB, clipping) are sums over
pieces, computed in parallel and combined in a fixed order.
"""

import numpy as np

PIECE_ELEMENTS = 1 << 16


def piece_table(sizes):
    """(piece_bounds, piece_segments): pieces of at most PIECE_ELEMENTS covering consecutive segments of ``sizes``."""
    bounds, segments, offset = [0], [], 0
    for segment, size in enumerate(sizes):
        for start in range(offset, offset + size, PIECE_ELEMENTS):
            stop = min(start + PIECE_ELEMENTS, offset + size)
            bounds.append(stop)
            segments.append(segment)
        offset += size
    return np.array(bounds, dtype=np.int64), np.array(segments, dtype=np.int64)


class NormWorkspace:
    """Piece tables and float64 scratch for per-segment sums of squares over a buffer with these segment sizes."""

    def __init__(self, sizes):
        self.piece_bounds, self.piece_segments = piece_table(sizes)
        self.partials = np.zeros((len(self.piece_segments), 2))
        self.sums = np.zeros((len(sizes), 2))
        self.ratios = np.ones(len(sizes))

    def segment_sums(self, kernels, first, second=None):
        """sums[s] = (sum first^2, sum second^2) per segment s, in float64."""
        kernels.segment_sums_of_squares(first, second, self.piece_bounds, self.piece_segments, self.partials, self.sums)
        return self.sums


class FlatParameters:
    """Parameters of one dtype moved into one ``data`` and one ``grad`` buffer (their values are kept).

    A parameter belongs to at most one FlatParameters: building a new one over a parameter that already
    belongs to another marks the old one ``stale`` (its optimizer then refuses to step rather than update
    copies nobody reads). ``FlatParameters.of`` reuses an existing buffer over exactly the same parameters,
    so two optimizers over one model share it and both work.
    """

    def __init__(self, parameters, xp):
        self.parameters = list(parameters)
        self.dtype = self.parameters[0].dtype
        self.shapes = [tuple(p.shape) for p in self.parameters]
        self.sizes = [int(p.data.size) for p in self.parameters]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        total = int(self.offsets[-1])
        self.data = xp.empty(total, dtype=self.dtype)
        self.grad = xp.empty(total, dtype=self.dtype)
        for parameter, data_view, grad_view in self._views():
            data_view[...] = parameter.data
            grad_view[...] = parameter.grad
            if parameter._flat is not None and parameter._flat is not self:
                parameter._flat.stale = True
            parameter._bind(data_view, grad_view, self)
        self.is_vector = np.array([len(shape) <= 1 for shape in self.shapes])
        self.norms = NormWorkspace(self.sizes)
        self.stale = False

    def to(self, backend):
        """Move both buffers to ``backend`` (a Backend) and point every parameter at views of the moved ones."""
        self.data, self.grad = backend.asarray(self.data), backend.asarray(self.grad)
        for parameter, data_view, grad_view in self._views():
            parameter._bind(data_view, grad_view, self)

    def _views(self):
        """(parameter, its view of data, its view of grad) for each parameter, in buffer order."""
        for parameter, shape, start, stop in zip(self.parameters, self.shapes, self.offsets[:-1], self.offsets[1:]):
            yield parameter, self.data[start:stop].reshape(shape), self.grad[start:stop].reshape(shape)

    @property
    def restored(self):
        """False while pickle or deepcopy has created this object but not yet set its state."""
        return "data" in self.__dict__

    def __setstate__(self, state):
        # pickle and deepcopy restore the parameters' arrays as copies, not views of these buffers: point every
        # parameter restored so far back at its views (the others do it themselves, Parameter.__setstate__). The
        # buffers hold the values: the copies were taken from the very same memory.
        self.__dict__.update(state)
        for parameter, data_view, grad_view in self._views():
            if "_flat" in parameter.__dict__:
                parameter._bind(data_view, grad_view, self)

    def rebind(self, parameter):
        """Point one restored parameter at its views of the buffers."""
        for candidate, data_view, grad_view in self._views():
            if candidate is parameter:
                parameter._bind(data_view, grad_view, self)
                return

    @classmethod
    def of(cls, parameters, xp):
        parameters = list(parameters)
        current = parameters[0]._flat
        if current is not None and not current.stale and current.parameters == parameters:
            return current
        return cls(parameters, xp)

    @property
    def size(self):
        return int(self.offsets[-1])
