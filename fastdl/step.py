"""``compile_step``: a whole training step (forward, loss, backward, optimizer update) as ONE compiled call.

For small and medium MLPs a framework's step is mostly per-op dispatch from Python. ``compile_step`` writes,
for the model's exact structure, a short Python module whose one ``@njit`` function calls the same kernels the
layers call (the dense kernels with their GEMMs through the BLAS provider, batch norm, dropout, the loss, the
optimizer's update over its flat buffer), in the order the layer-by-layer path runs them. So the results are
the layer path's, and the model, its gradients, running statistics, random counters and the optimizer's state
are left exactly as that path leaves them. The module is written to a
cache folder and compiled with ``cache=True``, so a second process loads it from disk.

Supported: a ``Sequential`` (nested ones are flattened) of ``Dense`` (float32 or bfloat16 compute), ``BatchNorm``,
``Activation`` and ``Dropout`` layers, with ``softmax_cross_entropy``, ``mse`` or
``binary_cross_entropy_with_logits`` (mean reduction), float32 or float64, on the ``cpu`` backend, in training
mode. Every optimizer of ``fastdl.optim`` works; SGD, Adagrad, RMSprop, Adam and AdamW (with ``max_grad_norm``,
``l1``, ``skip_nonfinite``) update inside the compiled call, LARS and LAMB (two or three kernels with Python between
them) right after it.
Anything else runs the layer-by-layer path, with a one-line ``CompileStepFallback`` warning saying why.
"""

from __future__ import annotations

import hashlib
import importlib.util
import operator
import os
import pathlib
import struct
import sys
import warnings
from typing import NamedTuple

import numba
import numpy as np

from . import _checks
from . import losses as fastdl_losses
from . import step_emitters as emitters
from ._files import write_text_atomically
from .backend import get_backend
from ._typing import Loss
from .layers import Activation, Dense, Module, Sequential
from .kernels.cpu import cache_repair
from .normalization import BatchNorm, Dropout
from .optim.optimizer import Optimizer
from .step_emitters import BAD_INPUT, BAD_TARGET, FUSABLE_UPDATES, NONFINITE_BATCHNORM, NONFINITE_OUTPUT, SKIPPED

LOSS_KERNELS = {
    fastdl_losses.softmax_cross_entropy: "cross_entropy",
    fastdl_losses.mse: "mse",
    fastdl_losses.binary_cross_entropy_with_logits: "bce",
}

LAYER_PATH = "layer path"  # marks a batch size the compiled step leaves to the layer path (see CompiledStep._emit)


class CallArguments(NamedTuple):
    """One batch size's compiled step: its source, the per-call arrays (refreshed each call) and the values its
    other parameters are bound to, and the model's output buffer (what the loss reads)."""
    source: str
    counters: np.ndarray
    factors: np.ndarray
    hyper: np.ndarray
    status: np.ndarray
    values: tuple
    output: np.ndarray
    names: tuple = ()  # the generated step's parameter names after CALL_PARAMETERS, one per value


def _first_line(error):
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else ""


class CompileStepFallback(RuntimeWarning):
    """``compile_step`` could not compile this model and runs it layer by layer (same results, slower)."""


def cache_dir():
    """Where generated step modules (and Numba's cache of them) live: $FASTDL_CACHE_DIR or ~/.cache/fastdl."""
    root = os.environ.get("FASTDL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "fastdl")
    return pathlib.Path(root) / "steps"


def compile_step(model: Module, loss: Loss, optimizer: Optimizer, quiet: bool = False,
                 accumulation_steps: int = 1) -> CompiledStep:
    """``step = compile_step(model, loss, optimizer)``; then ``value = step(x, y)`` trains on one batch.

    ``loss`` is one of ``fastdl.losses.softmax_cross_entropy``, ``mse``, ``binary_cross_entropy_with_logits``.
    Returns a ``CompiledStep``; ``step.compiled`` tells whether it runs as one compiled call, ``step.reason``
    why not. ``quiet=True`` suppresses the fallback warning.

    ``accumulation_steps=k`` accumulates gradients: each call runs forward and backward on its micro-batch and
    adds the gradients of its samples' losses; every k-th call updates once with their mean over all samples
    accumulated, which is the update of one batch holding all k micro-batches (for models without batch norm or
    dropout, whose forward depends on the batch). ``step.updated`` tells whether the last call updated;
    ``step.flush()`` updates with what is accumulated (``fit`` calls it at the end of each epoch). Each call
    returns its micro-batch's mean loss.
    """
    return CompiledStep(model, loss, optimizer, quiet, accumulation_steps)


def check_optimizer_holds_the_model(model, optimizer, owner):
    """A training step over an optimizer built for other parameters would compute the model's gradients and update
    nothing of it (an optimizer over some of them, to freeze the rest, is fine)."""
    held = {id(parameter) for parameter in optimizer.parameters}
    if not any(id(parameter) in held for parameter in model.parameters()):
        raise ValueError(f"{owner}: the {type(optimizer).__name__} holds none of the model's parameters (built over "
                         "another model?); build it over model.parameters()")


def flat_layers(model):
    """The layers of a model, nested Sequentials flattened, in order."""
    if isinstance(model, Sequential):
        return [leaf for layer in model.layers for leaf in flat_layers(layer)]
    return [model]


class CompiledStep:
    """A training step for one model, loss and optimizer; see ``compile_step``."""

    def __init__(self, model, loss, optimizer, quiet=False, accumulation_steps=1, rank_local=False):
        if isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, (int, np.integer)) \
                or accumulation_steps < 1:
            raise ValueError(f"compile_step: accumulation_steps must be a positive integer, got {accumulation_steps!r}")
        fastdl_losses.check_loss(loss, "compile_step")
        check_optimizer_holds_the_model(model, optimizer, "compile_step")
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.rank_local = rank_local  # trains on this rank alone, in a distributed job too (fastdl.tune's members)
        self.accumulation_steps = int(accumulation_steps)
        self.accumulated_batches = self.accumulated_samples = 0  # since the last update
        self.updated = False  # whether the latest call updated the parameters
        self.layers = flat_layers(model)
        self.outputs = None  # the model's output of the latest step (the loss's input)
        self._kernel = None  # the step with every kernel serial; others (per set of parallel layers) in _kernels
        self._kernels = {}  # generated source -> its compiled step
        self._arguments = {}  # per batch size: CallArguments (or LAYER_PATH)
        self.reason = self._unsupported()
        if self.reason is None:
            # the layers whose random counters advance each step, and the batch norms that track statistics
            self._counted = [(index, layer) for index, layer in enumerate(self.layers)
                             if not isinstance(layer, Dropout) or layer.p > 0]
            self._tracking = [(index, layer) for index, layer in enumerate(self.layers)
                              if isinstance(layer, BatchNorm) and layer.track_running_stats]
            self._fused = self._fused_update_name()
            self._parallel_update = emitters.parallel_update(self.optimizer)
            try:
                self._kernel = self._kernel_for(self._emit(2, serial=True).source)
            except Exception as error:  # a compiler failure must not stop training: the layer path is exact
                self.reason = f"compiling the step failed ({type(error).__name__}: {_first_line(error)})"
        if self.reason is not None and not quiet and get_backend().name == "cpu":
            warnings.warn(f"compile_step: {self.reason}; running the layer-by-layer path", CompileStepFallback,
                          stacklevel=3)

    def _kernel_for(self, source):
        """The compiled step of this source: compiled only for the sets of parallel layers the batch sizes in use
        need (a small model never compiles a parallel one)."""
        kernel = self._kernels.get(source)
        if kernel is None:
            kernel = self._kernels[source] = _load(source)
        return kernel

    @property
    def compiled(self):
        return self._kernel is not None

    # -- what fastdl.tune reads to run this step for many members at once ---------------------------------------
    @property
    def fused_update(self):
        """The update kernel the compiled step runs itself (one of FUSABLE_UPDATES), or None."""
        return self._fused

    @property
    def counted_layers(self):
        """(index, layer) of the layers whose random counters advance each step."""
        return self._counted

    @property
    def tracking_layers(self):
        """(index, layer) of the batch norms that update running statistics."""
        return self._tracking

    @property
    def output_width(self):
        """The model's output width (what the targets are checked against)."""
        return self._output_width()

    def serial_arguments(self, batch):
        """The generated step for ``batch`` rows with every kernel serial, and the values it is called with (a
        CallArguments), or LAYER_PATH; its update's hyperparameter rows are written for the optimizer's next step."""
        return self._emit(batch, serial=True)

    def _unsupported(self):
        if get_backend().name != "cpu":
            return f"the '{get_backend().name}' backend has no compiled step (only 'cpu')"
        from . import distributed

        if distributed.world_size() > 1 and not self.rank_local:
            return "in a distributed job the gradients' all-reduce must run between backward and update"
        from .kernels.cpu import blas

        if not blas.AVAILABLE:
            return "no BLAS library (MKL or numpy's own) could be located for calls from compiled code"
        if self.loss not in LOSS_KERNELS:
            return (f"loss {getattr(self.loss, '__name__', self.loss)!r} is not one of fastdl.losses' "
                    f"{', '.join(function.__name__ for function in LOSS_KERNELS)}")
        dtypes = set()
        for index, layer in enumerate(self.layers):
            if not isinstance(layer, (Dense, BatchNorm, Activation, Dropout)):
                return f"layer {index} ({getattr(layer, 'name', type(layer).__name__)}) is not supported"
            if isinstance(layer, (Dense, BatchNorm)):
                dtypes.add(np.dtype(layer.dtype))
        if len(dtypes) != 1:
            return f"the layers mix dtypes {sorted(map(str, dtypes))}"
        self.dtype = dtypes.pop()
        if not isinstance(self.layers[0], Dense):
            return "the first layer must be Dense (it fixes the input width)"
        return None

    def _fused_update_name(self):
        """The kernel the optimizer's update runs as, when it is one kernel over one flat buffer; else None."""
        if len(self.optimizer.groups) != 1 or type(self.optimizer).update_arrays is Optimizer.update_arrays:
            return None
        name = self._next_update_call()[0]
        return name if name in FUSABLE_UPDATES else None  # others run as the optimizer's own step

    def _next_update_call(self):
        """The optimizer's (kernel, arrays, (hyper, piece_bounds, piece_groups)) for its next step, its
        hyperparameter rows written for that step (Adam's bias corrections depend on the step number); the rows
        are the same array every step."""
        optimizer = self.optimizer
        return optimizer.update_call(optimizer.groups[0], optimizer.state[0], optimizer.steps + 1)

    # -- the call ---------------------------------------------------------------------------------------------
    def __call__(self, x, y):
        if getattr(x, "ndim", None) == 2 and x.shape[0] == 0:  # before either path moves a counter or a moment
            raise ValueError(f"compile_step: x has no rows (shape {tuple(x.shape)}); a training step needs a sample")
        accumulating = self.accumulation_steps > 1
        update = not accumulating or self.accumulated_batches + 1 == self.accumulation_steps
        # accumulating: the gradient of the summed loss adds into the parameters' gradients, and the update divides
        # by the number of samples (as the optimizer's grad_scale, inside its kernel)
        samples = self.accumulated_samples + len(x)
        grad_scale = 1.0 / samples if accumulating else 1.0
        if self._kernel is None or not all(map(_TRAINING, self.layers)):
            value = self._layer_path(x, y, accumulating, update, grad_scale)
        else:
            value = self._compiled_path(x, y, accumulating, update, grad_scale)
        self.updated = update
        self.accumulated_batches, self.accumulated_samples = (0, 0) if update else (self.accumulated_batches + 1,
                                                                                      samples)
        return value

    def flush(self):
        """Update with the gradients accumulated since the last update, if any (an epoch's last micro-batches);
        returns whether it updated."""
        if self.accumulated_batches == 0:
            return False
        self.optimizer.step(grad_scale=1.0 / self.accumulated_samples)
        self.accumulated_batches = self.accumulated_samples = 0
        return True

    def _layer_path(self, x, y, accumulating=False, update=True, grad_scale=1.0):
        outputs = self.model(x)
        try:
            value, grad = self.loss(outputs, y, reduction="sum") if accumulating else self.loss(outputs, y)
        except Exception:  # bad targets: the compiled path refuses them before its forward, so this one undoes its own
            self.model.undo_forward()
            raise
        self.model.backward(grad, accumulate=self.accumulated_batches > 0, input_grad=False)
        if update:
            self.optimizer.step(grad_scale=grad_scale)
        self.outputs = outputs
        return float(value) / len(y) if accumulating else float(value)

    def _check_input(self, x, y):
        first = self.layers[0]
        array_type = get_backend().array_type
        if (type(x) is array_type and type(y) is array_type and x.ndim == 2 and x.dtype == self.dtype
                and x.shape[1] == first.in_features and x.flags.c_contiguous):  # what the checks below pass as it is
            if LOSS_KERNELS[self.loss] == "cross_entropy":
                if y.ndim == 1 and y.shape[0] == x.shape[0] and y.dtype == np.int64:
                    return x, y
            elif y.dtype == self.dtype and y.flags.c_contiguous and y.shape == (x.shape[0], self._output_width()):
                return x, y
        _checks.array(x, "compile_step", "x", ndim=2, dtype=self.dtype, last_dim=first.in_features)
        if LOSS_KERNELS[self.loss] == "cross_entropy":
            _checks.backend_array(y, "compile_step", "y")
            if y.ndim != 1 or y.shape[0] != x.shape[0] or y.dtype.kind not in "iu":
                raise ValueError(f"compile_step: y must be integer labels of shape ({x.shape[0]},) for x of shape "
                                 f"{tuple(x.shape)}, got {y.dtype} {tuple(y.shape)}")
            return np.ascontiguousarray(x), y.astype(np.int64, copy=False)
        _checks.array(y, "compile_step", "y", dtype=self.dtype)
        expected = (x.shape[0], self._output_width())
        if y.shape != expected:
            raise ValueError(f"compile_step: y must have the model output's shape {expected}, got {tuple(y.shape)}")
        return np.ascontiguousarray(x), np.ascontiguousarray(y)

    def _output_width(self):
        return next(layer.out_features for layer in reversed(self.layers) if isinstance(layer, Dense))

    def _compiled_path(self, x, y, accumulating=False, update=True, grad_scale=1.0):
        x, y = self._check_input(x, y)
        optimizer = self.optimizer
        optimizer.check_ready(get_backend())
        arguments = self._arguments.get(x.shape[0])
        if arguments is None:
            arguments = self._arguments[x.shape[0]] = self._emit(x.shape[0])
        if arguments is LAYER_PATH:
            return self._layer_path(x, y, accumulating, update, grad_scale)
        counters, factors, hyper, status = arguments.counters, arguments.factors, arguments.hyper, arguments.status
        # every random counter and running-statistics factor as the layers would set them for this step
        for index, layer in self._counted:
            counters[index] = layer.counter + 1
        for index, layer in self._tracking:
            factors[index] = layer.running_factor()
        fused = self._fused is not None
        # packed straight into the array's memory, as the optimizer's hyperparameter rows (six item assignments
        # cost several times one call): the clipping threshold, skip_nonfinite, whether backward adds to the
        # gradients, the loss's gradient (of the sum: 1, of the mean: 0), whether the compiled step updates, the
        # gradients' scale
        struct.pack_into("6d", hyper, 0, optimizer.max_grad_norm or 0.0, float(optimizer.skip_nonfinite),
                         float(self.accumulated_batches > 0), 1.0 if accumulating else 0.0, float(update and fused),
                         grad_scale)
        if fused and update:  # the update's hyperparameter rows for this step, written into the array the step holds
            optimizer.hyper_rows(self._fused, optimizer.steps + 1)
        try:
            kernel = self._kernel_for(arguments.source)
            value = kernel(x, y, counters, factors, hyper, status, *arguments.values)
        except Exception as error:  # generating or compiling (on the first call) failed; nothing ran yet
            if kernel_ran(error):
                raise
            self._kernel, self.reason = None, f"compiling the step failed ({type(error).__name__}: {error})"
            warnings.warn(f"compile_step: {self.reason}; running the layer-by-layer path", CompileStepFallback,
                          stacklevel=2)
            return self._layer_path(x, y, accumulating, update, grad_scale)
        code = int(status[0])
        if code in (BAD_INPUT, BAD_TARGET):
            self._raise_input_error(code, x, y)
        # a forward stopped by NaN or Inf has put the running statistics back: nothing changed, as on the layer path
        if code == NONFINITE_BATCHNORM:
            raise ValueError("compile_step: a BatchNorm input became NaN or Inf during the forward pass")
        if code == NONFINITE_OUTPUT:
            raise ValueError(f"compile_step: the model's output contains NaN or Inf "
                             f"(shape {arguments.output.shape})")
        for index, layer in self._counted:  # the forward ran: counters moved on (batch norm's kernels count their
            layer.counter += 1            # batches with the running statistics, as on the layer path)
        self.outputs = arguments.output
        value = float(value) / x.shape[0] if accumulating else float(value)
        if not update:
            return value
        if not fused:
            optimizer.step(grad_scale=grad_scale)
            return value
        measured = optimizer.max_grad_norm is not None or optimizer.skip_nonfinite
        optimizer.count_step(float(status[1]) if measured else None, skipped=code == SKIPPED)
        return value

    def _raise_input_error(self, code, x, y):
        if code == BAD_INPUT:
            raise ValueError(f"compile_step: x contains NaN or Inf (shape {tuple(x.shape)})")
        if LOSS_KERNELS[self.loss] == "cross_entropy":
            classes = self._arguments[x.shape[0]].output.shape[1]
            raise ValueError(f"compile_step: labels must lie in [0, {classes}), got values in "
                             f"[{int(y.min())}, {int(y.max())}]")
        raise ValueError(f"compile_step: y contains NaN or Inf (shape {tuple(y.shape)})")

    # -- the generated step ---------------------------------------------------------------------------------
    def _emit(self, batch, serial=False):
        """The generated step for this batch size and the values it is called with (see step_emitters), or
        LAYER_PATH for a batch of one with batch norm (the layer path then raises BatchNorm's own error: one sample
        has no variance). ``serial`` writes every layer's serial kernels, whatever the batch size."""
        if batch < 2 and any(isinstance(layer, BatchNorm) for layer in self.layers):
            return LAYER_PATH
        emission = emitters.Emission(batch, self.dtype)
        output_name, output, width = emitters.emit_layers(emission, self.layers, serial)
        emitters.emit_loss(emission, LOSS_KERNELS[self.loss], output_name, width)
        update_call = self._next_update_call() if self._fused is not None else None
        emitters.emit_update(emission, self.optimizer, update_call, self._parallel_update)
        n = len(self.layers)
        # factors: -1 (no running update, nor a count) for the layers that do not track statistics; hyper: the
        # clipping threshold, skip_nonfinite and the accumulation flags (see _compiled_path)
        return CallArguments(emission.source(), np.zeros(n, np.uint64), np.full(n, -1.0), np.zeros(6), np.zeros(2),
                             tuple(emission.values), output, tuple(emission.names))


_TRAINING = operator.attrgetter("training")


def kernel_ran(error):
    """Whether ``error`` came from inside a compiled step that ran, rather than from generating or compiling it."""
    return not isinstance(error, (numba.core.errors.NumbaError, OSError, SyntaxError, ImportError))


def _load(source):
    """The generated module's ``training_step``, compiled once per machine (see ``load_generated``)."""
    return load_generated(source).training_step


def load_generated(source):
    """Import the generated module from the cache folder (written atomically), compiled once per machine; its
    cached functions load a damaged disk-cache entry as a miss."""
    from .kernels.cpu.cache_guard import source_digest

    key = hashlib.sha256((source + source_digest() + numba.__version__).encode()).hexdigest()[:16]
    name = f"fastdl_step_{key}"
    if name in sys.modules:
        return sys.modules[name]
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    if not path.exists() or path.read_text() != source:
        write_text_atomically(path, source)
    # The step calls parallel kernels; machine code loaded from Numba's disk cache jumps straight into the threading
    # layer, which only a parallel dispatcher's own call starts: a fresh process crashed on its first cached step
    # (numba issue 8578). Asking for the thread count starts the layer.
    numba.get_num_threads()
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    cache_repair.guard_modules([module])
    return module
