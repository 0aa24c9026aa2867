"""The eval-mode forward and loss that ``evaluate`` runs layer by layer, written as one generated function.

``Population.fit`` scores every member on the validation set after each epoch. Layer by layer that is a Python
call per layer and per member, one member at a time, after copying the members' state back; the population instead
runs this function for every member in one parallel loop over its own stacked buffers (``tune/population_step.py``).
The lines name the kernels the layers call in eval mode (running statistics, dropout off, RReLU's mean slope,
bfloat16 operands rounded), with the same arguments and the same blocks of rows, so each member's validation loss
is ``evaluate``'s bit for bit (tested).
"""

from typing import NamedTuple

import numpy as np

from .kernels.cpu import bfloat16_gemm
from .kernels.cpu import dense as dense_kernels
from .kernels.cpu import losses as loss_kernels
from .kernels.cpu import normalization as bn_kernels
from .kernels.cpu.activations import any_activation_for
from .layers import Activation, Dense
from .normalization import BatchNorm, Dropout
from .step_emitters import HEADER


class EvaluationArguments(NamedTuple):
    """One batch size's evaluation: its source, the values its parameters after ``x, y, counters`` are bound to (in
    ``names``' order), the model's output buffer, and each layer's random counter as the layer holds it now."""
    source: str
    names: tuple
    values: tuple
    output: np.ndarray
    counters: np.ndarray


class _Emission:
    def __init__(self, batch, dtype):
        self.batch, self.dtype = batch, np.dtype(dtype)
        self.names, self.values, self.lines = [], [], []

    def bind(self, prefix, **values):
        for key, value in values.items():
            self.names.append(prefix + key)
            self.values.append(value)


def _dense(emission, k, layer, h, width):
    """Dense in eval mode: GEMM, bias and activation (no dropout), as ``Dense.forward`` runs them."""
    batch, dtype, p = emission.batch, emission.dtype, f"l{k}_"
    code, params = layer.activation.kernel_args(dtype, False)
    y = np.empty((batch, layer.out_features), dtype)
    parts = dense_kernels.parts_for(batch, layer.in_features, layer.out_features)
    emission.bind(p, weight=layer.weight.data, bias=layer.bias_arrays()[0], code=code, params=params,
                  seed=np.uint64(layer.seed), y=y, any_activation=any_activation_for(code), parts=parts)
    # z is not kept (nothing goes backward): the activation's output is the same with or without it
    common = f"{p}bias, {p}code, {p}params, {p}seed, counters[{k}], {p}y, False, {p}y, {p}any_activation, {p}parts"
    # the kernel Dense.forward's backend picks for this shape and activation
    forward = dense_kernels.forward_kernel_name(batch, layer.in_features, layer.out_features, code)
    if layer.compute_dtype != "bfloat16":
        emission.lines.append(f"dense.{forward}_serial({h}, {p}weight, {common})")
    elif bfloat16_gemm.used_for(batch, layer.in_features, layer.out_features):  # the cpu backend's choice
        emission.bind(p, x_bits=np.empty((batch, width), np.uint16),
                      weight_bits=np.empty(layer.weight.data.shape, np.uint16))
        emission.lines.append(f"dense.forward_bfloat16_serial({h}, {p}weight, {common}, {p}x_bits, {p}weight_bits)")
    else:  # the float32 kernels on the rounded operands
        emission.bind(p, x_bfloat16=np.empty((batch, width), dtype),
                      weight_bfloat16=np.empty_like(layer.weight.data))
        emission.lines += [f"dense.round_bfloat16_serial({h}.reshape(-1), {p}x_bfloat16.reshape(-1))",
                           f"dense.round_bfloat16_serial({p}weight.reshape(-1), {p}weight_bfloat16.reshape(-1))",
                           f"dense.{forward}_serial({p}x_bfloat16, {p}weight_bfloat16, {common})"]
    return f"{p}y", y, layer.out_features


def _batchnorm(emission, k, layer, h, width):
    """BatchNorm in eval mode: the running statistics, or the batch's own without tracking (nothing is updated).
    NaN or Inf in its input makes the loss NaN (``evaluate`` raises BatchNorm's error there)."""
    batch, dtype, p = emission.batch, emission.dtype, f"l{k}_"
    code, params = layer.activation.kernel_args(dtype, False)
    weight, bias = layer.affine_arrays()
    blocks = (batch + 63) // 64
    y = np.empty((batch, width), dtype)
    emission.bind(p, weight=weight, bias=bias, running_mean=layer.running_mean, running_var=layer.running_var,
                  eps=float(layer.eps), code=code, params=params, seed=np.uint64(layer.seed), mean=np.empty(width),
                  inv_std=np.empty(width), y=y, workspace=np.empty((2 * blocks + 4, width), dtype),
                  any_activation=any_activation_for(code))
    if layer.track_running_stats:
        call = (f"bn.forward_eval_serial({h}, 1, {p}weight, {p}bias, {p}eps, {p}running_mean, {p}running_var, "
                f"{p}code, {p}params, {p}seed, counters[{k}], {p}mean, {p}inv_std, {p}y, {p}workspace, "
                f"{p}any_activation)")
    else:  # the batch's statistics, no running update (factor -1) and no count
        emission.bind(p, num_batches_tracked=layer.num_batches_tracked,
                      scratch=np.empty((2 * blocks, width), dtype),
                      totals=np.empty(bn_kernels.totals_shape(batch, width)))
        call = (f"bn.forward_train_serial({h}, 1, {p}weight, {p}bias, {p}eps, -1.0, {p}running_mean, "
                f"{p}running_var, {p}num_batches_tracked, {p}code, {p}params, {p}seed, counters[{k}], {p}mean, "
                f"{p}inv_std, {p}y, {p}workspace, {p}scratch, {p}totals, {p}any_activation)")
    emission.lines += [f"if not {call}:", "    return math.nan"]
    return f"{p}y", y, width


def _activation(emission, k, layer, h, width):
    p = f"l{k}_"
    code, params = layer.spec.kernel_args(emission.dtype, False)
    y = np.empty((emission.batch, width), emission.dtype)
    emission.bind(p, code=code, params=params, seed=np.uint64(layer.seed), y=y,
                  any_activation=any_activation_for(code))
    emission.lines.append(f"activate_rows({h}, {p}params[:0], {p}code, {p}params, {p}seed, counters[{k}], {p}y, "
                          f"False, {p}y, True, {p}any_activation)")
    return f"{p}y", y, width


def _loss(emission, loss_kind, h, width):
    """The loss of the mean, as ``fastdl.losses`` computes it (its gradient is written and not used)."""
    emission.bind("", grad_loss=np.empty((emission.batch, width), emission.dtype),
                  wide_loss=loss_kernels.wide_rows(width))
    if loss_kind == "cross_entropy":
        return (f"return losses.softmax_cross_entropy_kernel({h}, y, 0.0, 1.0 / {h}.shape[0], grad_loss, "
                "wide_loss)")
    kernel = "mse_kernel" if loss_kind == "mse" else "bce_with_logits_kernel"
    return f"return losses.{kernel}({h}.reshape(-1), y.reshape(-1), 1.0 / {h}.size, grad_loss.reshape(-1))"


def evaluation_arguments(layers, loss_kind, batch, dtype):
    """The generated ``evaluation_step(x, y, counters, ...)`` for ``batch`` rows of a model made of ``layers``
    (compile_step's layer kinds) and the values it is called with; it returns the batch's mean loss."""
    emission = _Emission(batch, dtype)
    h, output, width = "x", None, layers[0].in_features
    for k, layer in enumerate(layers):
        if isinstance(layer, Dense):
            h, output, width = _dense(emission, k, layer, h, width)
        elif isinstance(layer, BatchNorm):
            h, output, width = _batchnorm(emission, k, layer, h, width)
        elif isinstance(layer, Activation):
            h, output, width = _activation(emission, k, layer, h, width)
        elif not isinstance(layer, Dropout):  # dropout is the identity in eval mode
            raise TypeError(f"evaluation has no emitter for {type(layer).__name__}")
    emission.lines.append(_loss(emission, loss_kind, h, width))
    signature = ", ".join(("x", "y", "counters") + tuple(emission.names))
    decorator = "@njit(cache=True, **WITHOUT_REFERENCE_COUNTS)"  # allocates nothing (reference_counts.py)
    source = HEADER + f"\n\n{decorator}\ndef evaluation_step({signature}):\n" + "".join(
        f"    {line}\n" for line in emission.lines)
    counters = np.array([getattr(layer, "counter", 0) for layer in layers], np.uint64)
    return EvaluationArguments(source, tuple(emission.names), tuple(emission.values), output, counters)
