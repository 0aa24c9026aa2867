"""``compile_step``: a whole training step (forward, loss, backward, optimizer update) as ONE compiled call.

For small and medium MLPs a framework's step is mostly per-op dispatch from Python. ``compile_step`` writes,
for the model's exact structure, a short Python module whose one ``@njit`` function calls the same kernels the
layers call (the dense kernels with their GEMMs through the BLAS provider, batch norm, dropout, the loss, the
optimizer's update over its flat buffer), in the order the layer-by-layer path runs them. So the results are
the layer path's, and the model, its gradients, running statistics, random counters and the optimizer's state
are left exactly as that path leaves them. The module is written to a
cache folder and compiled with ``cache=True``, so a second process loads it from disk.

Supported: a ``Sequential`` (nested ones are flattened) of ``Dense``, ``BatchNorm``, ``Activation`` and
``Dropout`` layers, with ``softmax_cross_entropy``, ``mse`` or ``binary_cross_entropy_with_logits`` (mean
reduction), float32 or float64, on the ``cpu`` backend, in training mode. Every optimizer of ``fastdl.optim``
works; SGD, Adagrad, RMSprop, Adam and AdamW (with ``max_grad_norm``, ``l1``, ``skip_nonfinite``) update
inside the compiled call, LARS and LAMB (two or three kernels with Python between them) right after it.
Anything else runs the layer-by-layer path, with a one-line ``CompileStepFallback`` warning saying why.
"""

import hashlib
import importlib.util
import os
import pathlib
import sys
import warnings

import numba
import numpy as np

from . import _checks
from . import losses as fastdl_losses
from ._files import write_text_atomically
from .backend import get_backend
from .layers import Activation, Dense, Sequential
from .kernels.cpu import cache_repair
from .kernels.cpu import dense as dense_kernels
from .kernels.cpu import losses as loss_kernels
from .kernels.cpu import normalization as bn_kernels
from .kernels.cpu import optim as optim_kernels
from .kernels.cpu.activations import any_activation_for
from .normalization import BatchNorm, Dropout
from .optim.clip import CLIP_EPS
from .optim.optimizer import Optimizer

LOSS_KERNELS = {
    fastdl_losses.softmax_cross_entropy: "cross_entropy",
    fastdl_losses.mse: "mse",
    fastdl_losses.binary_cross_entropy_with_logits: "bce",
}

# the optimizer updates the generated step can call itself (one kernel over the flat buffer, float scalars)
FUSABLE_UPDATES = ("sgd_step", "sgd_momentum_step", "adagrad_step", "rmsprop_step", "adam_step")
LAYER_PATH = "layer path"  # marks a batch size the compiled step leaves to the layer path (see _build_arguments)

# status codes the compiled step writes into status[0]
DONE, SKIPPED, BAD_INPUT, BAD_TARGET, NONFINITE_OUTPUT, NONFINITE_BATCHNORM = 1, 0, -1, -2, -3, -4


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


def compile_step(model, loss, optimizer, quiet=False, accumulation_steps=1):
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


def _flatten(model):
    if isinstance(model, Sequential):
        return [leaf for layer in model.layers for leaf in _flatten(layer)]
    return [model]


class CompiledStep:
    """A training step for one model, loss and optimizer; see ``compile_step``."""

    def __init__(self, model, loss, optimizer, quiet=False, accumulation_steps=1):
        if isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, (int, np.integer)) \
                or accumulation_steps < 1:
            raise ValueError(f"compile_step: accumulation_steps must be a positive integer, got {accumulation_steps!r}")
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.accumulation_steps = int(accumulation_steps)
        self.accumulated_batches = self.accumulated_samples = 0  # since the last update
        self.updated = False  # whether the latest call updated the parameters
        self.layers = _flatten(model)
        self.outputs = None  # the model's output of the latest step (the loss's input)
        self._kernel = None  # the step with every kernel serial; others per set of parallel layers, in _kernels
        self._kernels = {}
        self._arguments = {}  # per batch size: the buffers and parameter views the kernel reads and writes
        self._outputs_of = {}  # per batch size: the model's output buffer (what the loss reads)
        self.reason = self._unsupported()
        if self.reason is None:
            # the layers whose random counters advance each step, and the batch norms that track statistics
            self._counted = [(index, layer) for index, layer in enumerate(self.layers)
                             if not isinstance(layer, Dropout) or layer.p > 0]
            self._tracking = [(index, layer) for index, layer in enumerate(self.layers)
                              if isinstance(layer, BatchNorm) and layer.track_running_stats]
            self._fused = self._fused_update_name()
            self._parallel_update = self.optimizer.groups[0].grad.size >= optim_kernels.PARALLEL_MIN_ELEMENTS
            try:
                self._kernel = self._kernel_for((False,) * len(self.layers))
            except Exception as error:  # a compiler failure must not stop training: the layer path is exact
                self.reason = f"compiling the step failed ({type(error).__name__}: {_first_line(error)})"
        if self.reason is not None and not quiet and get_backend().name == "cpu":
            warnings.warn(f"compile_step: {self.reason}; running the layer-by-layer path", CompileStepFallback,
                          stacklevel=3)

    def _kernel_for(self, parallel_layers):
        """The step whose layer k runs its parallel kernels where ``parallel_layers[k]``: generated and compiled
        only for the combinations the batch sizes in use need (a small model never compiles a parallel one)."""
        kernel = self._kernels.get(parallel_layers)
        if kernel is None:
            kernel = self._kernels[parallel_layers] = _load(_generate(
                self.layers, LOSS_KERNELS[self.loss], self._fused, self._parallel_update, parallel_layers))
        return kernel

    @property
    def compiled(self):
        return self._kernel is not None

    def _unsupported(self):
        if get_backend().name != "cpu":
            return f"the '{get_backend().name}' backend has no compiled step (only 'cpu')"
        from . import distributed

        if distributed.world_size() > 1:
            return "in a distributed job the gradients' all-reduce must run between backward and update"
        from .kernels.cpu import blas

        if not blas.AVAILABLE:
            return "no BLAS library (MKL or numpy's own) could be located for calls from compiled code"
        if self.loss not in LOSS_KERNELS:
            return f"loss {getattr(self.loss, '__name__', self.loss)!r} is not one of {sorted(LOSS_KERNELS.values())}"
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
        if self._kernel is None or not all(layer.training for layer in self.layers):
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
            self.model._undo_forward()
            raise
        self.model.backward(grad, accumulate=self.accumulated_batches > 0, input_grad=False)
        if update:
            self.optimizer.step(grad_scale=grad_scale)
        self.outputs = outputs
        return float(value) / len(y) if accumulating else float(value)

    def _check_input(self, x, y):
        first = self.layers[0]
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
        optimizer._check_ready(get_backend())
        arguments = self._arguments.get(x.shape[0])
        if arguments is None:
            arguments = self._arguments[x.shape[0]] = self._build_arguments(x.shape[0])
        if arguments is LAYER_PATH:
            return self._layer_path(x, y, accumulating, update, grad_scale)
        counters, factors, hyper, status, tail, parallel_layers = arguments
        # every random counter and running-statistics factor as the layers would set them for this step
        for index, layer in self._counted:
            counters[index] = layer._counter + 1
        for index, layer in self._tracking:
            factors[index] = layer.running_factor()
        fused = self._fused is not None
        hyper[0] = optimizer.max_grad_norm or 0.0
        hyper[1] = float(optimizer.skip_nonfinite)
        hyper[2] = float(self.accumulated_batches > 0)  # backward adds to the gradients
        hyper[3] = 1.0 if accumulating else 0.0  # the loss's gradient: of the sum (1), or of the mean (0)
        hyper[4] = float(update and fused)  # the compiled step updates
        hyper[5] = grad_scale
        if fused and update:
            self._next_update_call()  # writes the update's hyperparameter rows (in the kernel's arguments) in place
        try:
            kernel = self._kernel_for(parallel_layers)
            value = kernel(x, y, counters, factors, hyper, status, *tail)
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
                             f"(shape {self._outputs_of[x.shape[0]].shape})")
        for index, layer in self._counted:  # the forward ran: counters moved on (batch norm's kernels count their
            layer._counter += 1            # batches with the running statistics, as on the layer path)
        self.outputs = self._outputs_of[x.shape[0]]
        value = float(value) / x.shape[0] if accumulating else float(value)
        if not update:
            return value
        if not fused:
            optimizer.step(grad_scale=grad_scale)
            return value
        if optimizer.max_grad_norm is not None or optimizer.skip_nonfinite:
            optimizer.last_grad_norm = float(status[1])
        if code == SKIPPED:
            optimizer.skipped_steps += 1
        else:
            optimizer.steps += 1
        return value

    def _raise_input_error(self, code, x, y):
        if code == BAD_INPUT:
            raise ValueError(f"compile_step: x contains NaN or Inf (shape {tuple(x.shape)})")
        if LOSS_KERNELS[self.loss] == "cross_entropy":
            classes = self._outputs_of[x.shape[0]].shape[1]
            raise ValueError(f"compile_step: labels must lie in [0, {classes}), got values in "
                             f"[{int(y.min())}, {int(y.max())}]")
        raise ValueError(f"compile_step: y contains NaN or Inf (shape {tuple(y.shape)})")

    # -- buffers ----------------------------------------------------------------------------------------------
    def _build_arguments(self, batch):
        """The kernel's arguments for this batch size, or LAYER_PATH for a batch of one with batch norm (the layer
        path then raises BatchNorm's own error: one sample has no variance)."""
        if batch < 2 and any(isinstance(layer, BatchNorm) for layer in self.layers):
            return LAYER_PATH
        dtype = self.dtype
        tail, parallel_layers = [], []
        width = self.layers[0].in_features
        for index, layer in enumerate(self.layers):
            shape = (batch, width)
            parallel_layers.append(False)
            if isinstance(layer, Dense):
                out = (batch, layer.out_features)
                code, params = layer.activation.kernel_args(dtype, True)
                y = last = np.empty(out, dtype)
                a = np.empty(out, dtype) if layer.dropout else y  # the activation's output, before dropout
                z = np.empty(out, dtype) if layer.activation.needs_preactivation else a
                has_bias = layer.bias is not None
                parts = dense_kernels.parts_for(batch, layer.in_features, layer.out_features)
                parallel_layers[-1] = parts > 1
                tail += [layer.weight.data, layer.bias.data if has_bias else layer._no_bias, layer.weight.grad,
                         layer.bias.grad if has_bias else layer._no_bias, code, params, np.uint64(layer.seed),
                         z, z is not a, y, np.empty(out, dtype), np.empty(shape, dtype), any_activation_for(code),
                         parts,
                         np.empty(out if layer.dropout else (0, 0), np.uint8),
                         dtype.type(1.0 / (1.0 - layer.dropout))]
                if layer.dropout:
                    tail += [float(layer.dropout), np.uint64(layer.dropout_seed), a]
                width = layer.out_features
            elif isinstance(layer, BatchNorm):
                code, params = layer.activation.kernel_args(dtype, True)
                weight, bias = layer._affine()
                if layer.affine:
                    grad_weight, grad_bias = layer.weight.grad, layer.bias.grad
                else:
                    grad_weight, grad_bias = np.empty(width, dtype), np.empty(width, dtype)
                blocks = (batch + 63) // 64
                chunks = bn_kernels.chunks_for(batch * width)
                parallel_layers[-1] = chunks > 1
                aligned = get_backend().empty  # y and dx on cache lines: large ones take streaming stores
                last = aligned(shape, dtype)
                tail += [weight, bias, grad_weight, grad_bias, layer.running_mean, layer.running_var,
                         layer.num_batches_tracked, float(layer.eps),
                         code, params, np.uint64(layer.seed), np.empty(width), np.empty(width), last,
                         np.empty((2 * blocks + 4, width), dtype), np.empty((2 * blocks, width), dtype),
                         np.empty(bn_kernels.totals_shape(batch, width)), aligned(shape, dtype),
                         any_activation_for(code), chunks, np.empty((2, width), dtype)]
            elif isinstance(layer, Activation):
                code, params = layer.spec.kernel_args(dtype, True)
                last = np.empty(shape, dtype)
                tail += [code, params, np.uint64(layer.seed), np.empty(shape, dtype), last, any_activation_for(code)]
            else:  # Dropout (p = 0 is the identity: the generated code passes the input through)
                dropped = np.empty(shape, dtype)
                last = dropped if layer.p > 0 else last
                tail += [float(layer.p), dtype.type(1.0 / (1.0 - layer.p)), np.uint64(layer.seed),
                         np.empty(shape, np.uint8), dropped, np.empty(shape, dtype)]
        tail += [np.empty((batch, width), dtype), loss_kernels.wide_rows(width)]  # the loss's gradient, vector width
        self._outputs_of[batch] = last
        group = self.optimizer.groups[0]
        norms = group.norms
        tail += [group.grad, norms.piece_bounds, norms.piece_segments, norms.partials, norms.sums]
        if self._fused is not None:
            _, arrays, (update_hyper, _, update_piece_groups) = self._next_update_call()
            tail += [*arrays, update_hyper, update_piece_groups]
        n = len(self.layers)
        # factors: -1 (no running update, nor a count) for the layers that do not track statistics; hyper: the
        # clipping threshold, skip_nonfinite and the accumulation flags (see _compiled_path)
        return (np.zeros(n, np.uint64), np.full(n, -1.0), np.zeros(6), np.zeros(2), tuple(tail),
                tuple(parallel_layers))

# -- code generation ----------------------------------------------------------------------------------------------
HEADER = '''"""Generated by fastdl.compile_step for one model structure; safe to delete (it is regenerated)."""
import math
import numpy as np
from numba import njit
from fastdl.kernels.cpu.dense import activate_rows, activation_grad_rows, all_finite_kernel
from fastdl.kernels.cpu import dense
from fastdl.kernels.cpu import dropout
from fastdl.kernels.cpu import normalization as bn
from fastdl.kernels.cpu import losses
from fastdl.kernels.cpu import optim
'''


def kernel_ran(error):
    """Whether ``error`` came from inside a compiled step that ran, rather than from generating or compiling it."""
    return not isinstance(error, (numba.core.errors.NumbaError, OSError, SyntaxError, ImportError))


def _generate(layers, loss_kind, update, parallel_update=False, parallel_layers=None):
    """Source of a module with ``training_step(x, y, counters, factors, hyper, status, *tail)``.

    Each kernel is the one the layer path runs for the same sizes: parallel over Numba's pool where
    ``parallel_layers[k]`` (the Dense GEMMs split into ``parts``, batch norm into ``chunks``) and for a large
    optimizer update, else serial on the calling thread.
    """
    names, forward, backward = [], [], []
    restore = []  # lines that undo the running-statistics updates of the batch norms run so far
    h = "x"
    parallel_layers = parallel_layers or (False,) * len(layers)
    for k, layer in enumerate(layers):
        p = f"l{k}_"
        variant = "parallel" if parallel_layers[k] else "serial"
        if isinstance(layer, Dense):
            args = ["weight", "bias", "grad_weight", "grad_bias", "code", "params", "seed", "z", "save_z", "y",
                    "grad_z", "grad_x", "any_activation", "parts", "mask", "scale"]
            common = f"{p}bias, {p}code, {p}params, {p}seed, counters[{k}], {p}z, {p}save_z"
            if layer.dropout:  # the activation's output a, then y = dropout(a), both in the epilogue's pass
                args += ["p", "dropout_seed", "a"]
                forward += [f"finite = dense.dropout_forward_{variant}({h}, {p}weight, {common}, {p}p, {p}scale, "
                            f"{p}dropout_seed, {p}mask, {p}a, {p}y, {p}any_activation, {p}parts)"]
                activation_output = f"{p}a"
            else:
                forward += [f"finite = dense.forward_{variant}({h}, {p}weight, {common}, {p}y, {p}any_activation, "
                            f"{p}parts)"]
                activation_output = f"{p}y"
            if k == 0:  # x is scanned only when its product with the first weights is not finite (x is read once)
                forward += ["if not finite and not all_finite_kernel(x.reshape(-1)):", f"    status[0] = {BAD_INPUT}",
                            "    return math.nan"]
            # the first layer computes no input gradient: grad_z stands in for the unused grad_x
            grad_x, input_grad = (f"{p}grad_x", "True") if k > 0 else (f"{p}grad_z", "False")
            grad_lines = [
                f"dense.backward_{variant}({h}, {p}weight, g, {p}z, {activation_output}, {bool(layer.dropout)}, "
                f"{p}mask, {p}scale, {p}code, {p}params, {p}seed, counters[{k}], {p}grad_z, {p}grad_weight, "
                f"{p}grad_bias, {grad_x}, {input_grad}, accumulate, {p}any_activation, {p}parts)"]
            if k > 0:
                grad_lines += [f"g = {p}grad_x"]
            out = f"{p}y"
        elif isinstance(layer, BatchNorm):
            args = ["weight", "bias", "grad_weight", "grad_bias", "running_mean", "running_var", "num_batches_tracked",
                    "eps", "code", "params", "seed", "mean", "inv_std", "y", "workspace", "scratch", "totals", "grad_x",
                    "any_activation", "chunks", "previous_running"]
            call = (f"({h}, {p}chunks, {p}weight, {p}bias, {p}eps, factors[{k}], {p}running_mean, {p}running_var, "
                    f"{p}num_batches_tracked, {p}code, {p}params, {p}seed, counters[{k}], {p}mean, {p}inv_std, {p}y, "
                    f"{p}workspace, {p}scratch, {p}totals, {p}any_activation)")
            # the running statistics as they were, put back if a later layer stops the step (this layer's own
            # kernel leaves them untouched when it finds NaN or Inf)
            forward += [f"{p}previous_running[0] = {p}running_mean", f"{p}previous_running[1] = {p}running_var",
                        f"finite = bn.forward_train_{variant}{call}", "if not finite:"]
            forward += [f"    {line}" for line in restore] + [f"    status[0] = {NONFINITE_BATCHNORM}",
                                                               "    return math.nan"]
            restore += [f"{p}running_mean[:] = {p}previous_running[0]", f"{p}running_var[:] = {p}previous_running[1]",
                        f"if factors[{k}] >= 0:", f"    {p}num_batches_tracked[0] -= 1"]
            back = (f"({h}, {p}chunks, g, {p}y, {p}weight, {p}bias, {p}mean, {p}inv_std, {p}code, {p}params, {p}seed, "
                    f"counters[{k}], True, {p}grad_x, {p}grad_weight, {p}grad_bias, accumulate, {p}workspace, "
                    f"{p}scratch, {p}totals, {p}any_activation)")
            grad_lines = [f"bn.backward_{variant}{back}", f"g = {p}grad_x"]
            out = f"{p}y"
        elif isinstance(layer, Activation):
            args = ["code", "params", "seed", "grad_x", "y", "any_activation"]
            forward += [f"activate_rows({h}, {p}params[:0], {p}code, {p}params, {p}seed, counters[{k}], {p}y, False, "
                        f"{p}y, True, {p}any_activation)"]
            grad_lines = [f"activation_grad_rows(g, {h}, {p}y, {p}code, {p}params, {p}seed, counters[{k}], "
                          f"{p}grad_x, {p}params[:0], False, {p}any_activation)", f"g = {p}grad_x"]
            out = f"{p}y"
        else:
            args = ["p", "scale", "seed", "mask", "y", "grad_x"]
            if layer.p > 0:
                call = (f"({h}.reshape(-1), {p}p, {p}scale, {p}seed, counters[{k}], {p}mask.reshape(-1), "
                        f"{p}y.reshape(-1))")
                forward += [f"dropout.dropout_forward_serial{call}"]
                grad_lines = [f"dropout.dropout_backward_kernel(g.reshape(-1), {p}mask.reshape(-1), {p}scale, "
                              f"{p}grad_x.reshape(-1))", f"g = {p}grad_x"]
                out = f"{p}y"
            else:
                grad_lines, out = [], h
        names += [p + a for a in args]
        backward = grad_lines + backward
        h = out
    names += ["grad_loss", "wide_loss", "flat_grad", "piece_bounds", "piece_segments", "partials", "sums"]
    if loss_kind == "cross_entropy":
        checks = [f"classes = {h}.shape[1]", "for i in range(y.shape[0]):",
                  "    if y[i] < 0 or y[i] >= classes:", f"        status[0] = {BAD_TARGET}", "        return math.nan"]
        loss = (f"value = losses.softmax_cross_entropy_kernel({h}, y, 0.0, "
                f"1.0 if hyper[3] > 0 else 1.0 / {h}.shape[0], grad_loss, wide_loss)")
    else:
        checks = ["if not all_finite_kernel(y.reshape(-1)):",
                  f"    status[0] = {BAD_TARGET}", "    return math.nan"]
        kernel = "mse_kernel" if loss_kind == "mse" else "bce_with_logits_kernel"
        loss = (f"value = losses.{kernel}({h}.reshape(-1), y.reshape(-1), 1.0 if hyper[3] > 0 else 1.0 / {h}.size, "
                "grad_loss.reshape(-1))")
    update_lines = ["status[0] = " + str(DONE)]
    state_names = []
    if update is not None:
        kernel = update[:-len("_step")]
        arrays = {"sgd": 2, "sgd_momentum": 3, "adagrad": 3, "rmsprop": 5, "adam": 5}[kernel]
        state_names = [f"o_{i}" for i in range(arrays)] + ["update_hyper", "update_piece_groups"]
        call = f"({', '.join(state_names[:arrays])}, T(grad_scale), update_hyper, piece_bounds, update_piece_groups)"
        update_lines = [
            "if hyper[4] == 0:  # accumulating: no update on this micro-batch",
            f"    status[0] = {DONE}",
            "    return value",
            "T = flat_grad.dtype.type",
            "grad_scale = hyper[5]  # Optimizer.step's grad_scale",
            "if hyper[0] > 0 or hyper[1] > 0:  # the optimizer's norm pass, same kernel, same pieces",
            "    optim.segment_sums_of_squares_serial(flat_grad, None, piece_bounds, piece_segments, partials, sums)",
            "    norm = math.sqrt(sums[:, 0].sum()) * grad_scale",
            "    status[1] = norm",
            "    if hyper[1] > 0 and not math.isfinite(norm):",
            f"        status[0] = {SKIPPED}",
            "        return value",
            "    if hyper[0] > 0:",
            f"        grad_scale = grad_scale * min(1.0, hyper[0] / (norm + {CLIP_EPS!r}))  # optim.clip.clip_scale",
            f"optim.{kernel}_{'parallel' if parallel_update else 'serial'}{call}",
            f"status[0] = {DONE}",
        ]
    names += state_names
    body = ["accumulate = hyper[2] > 0"] + checks + forward
    body += [f"if not all_finite_kernel({h}.reshape(-1)):"] + [f"    {line}" for line in restore]
    body += [f"    status[0] = {NONFINITE_OUTPUT}", "    return math.nan"]
    body += [loss, "g = grad_loss"] + backward + update_lines + ["return value"]
    signature = ", ".join(["x", "y", "counters", "factors", "hyper", "status"] + names)
    source = HEADER + "\n\n@njit(cache=True)\ndef training_step(" + signature + "):\n"
    return source + "".join(f"    {line}\n" for line in body)


def _load(source):
    """Import the generated module from the cache folder (written atomically), compiled once per machine."""
    from .kernels.cpu.cache_guard import source_digest

    key = hashlib.sha256((source + source_digest() + numba.__version__).encode()).hexdigest()[:16]
    name = f"fastdl_step_{key}"
    if name in sys.modules:
        return sys.modules[name].training_step
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
    return cache_repair.guard(module.training_step)
