"""SGD, Adagrad, RMSprop, Adam, AdamW, LARS and LAMB: PyTorch's names, defaults and formulas.

Each class turns each parameter group's hyperparameters into one row of scalars (``group_scalars``) for one
fused kernel call over the flat buffer (``kernels/cpu/optim.py`` for the kernels, ``kernels/reference/optim.py`` for
the formulas). Every class also takes the common options ``max_grad_norm``, ``l1``, ``skip_nonfinite`` and
``weight_decay_mask`` of ``fastdl.optim.Optimizer``, and parameter groups in PyTorch's form.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from ..kernels import bfloat16
from .optimizer import Optimizer, check_number

MOMENTS_DTYPES = (None, "bfloat16")


def _check_betas(owner, betas):
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}") from None
    return (check_number(owner, "betas[0]", beta1, low=0, high=1, high_open=True),
            check_number(owner, "betas[1]", beta2, low=0, high=1, high_open=True))


def _any_momentum(optimizer):
    """Whether SGD or RMSprop keeps a momentum buffer: decided when the state is built (some group has momentum > 0),
    fixed from then on; a group with momentum 0 steps as without one."""
    return any(group["momentum"] != 0 for group in optimizer.param_groups)


def _refuse_new_momentum(optimizer, name, value):
    """``value``, unless it switches momentum on in an optimizer built without a buffer for it."""
    if name == "momentum" and value != 0 and getattr(optimizer, "uses_momentum", True) is False:
        raise ValueError(f"{type(optimizer).__name__}: momentum cannot be switched on after construction (it needs "
                         "a momentum buffer); build the optimizer with momentum > 0")
    return value


def _stacked(*columns):
    """Columns (arrays of one shape, or numbers) as one float64 array, the columns along a new last axis."""
    return np.stack(np.broadcast_arrays(*[np.asarray(column, np.float64) for column in columns]), axis=-1)


def _per_distinct(scalar_function, *arrays):
    """``scalar_function`` (Python floats in, a tuple of floats out) applied element by element over arrays of one
    shape, called once per distinct combination of their values (many optimizers usually share betas and step)."""
    keys = np.stack([np.asarray(array, np.float64).reshape(-1) for array in arrays], axis=-1)
    varying = np.flatnonzero((keys != keys[0]).any(axis=0))
    if len(varying) <= 1:  # the common case, at most the step numbers differ: a one-dimensional unique is fast
        column = varying[0] if len(varying) else 0
        values, inverse = np.unique(keys[:, column], return_inverse=True)
        distinct = np.repeat(keys[:1], len(values), axis=0)
        distinct[:, column] = values
    else:
        distinct, inverse = np.unique(keys, axis=0, return_inverse=True)
    results = np.array([scalar_function(*key) for key in distinct.tolist()], np.float64)
    return tuple(column[inverse.reshape(-1)].reshape(arrays[0].shape) for column in results.T)


class SGD(Optimizer):
    """Stochastic gradient descent, with heavy-ball or Nesterov momentum.

    b <- momentum b + (1 - dampening) g (b = g on the first step);  p <- p - lr b, or with ``nesterov``
    p <- p - lr (g + momentum b). ``dampening=momentum`` gives the textbook's exponential moving average
    b <- beta b + (1 - beta) g. g includes ``weight_decay * p``.

    >>> optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)  # doctest: +SKIP
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, **options):
        self.nesterov = bool(nesterov)
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay),
                         **options)

    def _check_groups(self):
        for index, group in enumerate(self.param_groups):
            if self.nesterov and (group["momentum"] <= 0 or group["dampening"] != 0):
                where = "" if len(self.param_groups) == 1 else f" (parameter group {index})"
                raise ValueError(f"SGD: Nesterov momentum needs momentum > 0 and dampening = 0, got "
                                 f"momentum={group['momentum']}, dampening={group['dampening']}{where}")

    def check(self, name, value):
        return _refuse_new_momentum(self, name, super().check(name, value))

    def state_names(self):
        self.uses_momentum = _any_momentum(self)
        return {"momentum_buffer": 0.0} if self.uses_momentum else {}

    def update_arrays(self, group, state):
        if not self.uses_momentum:
            return "sgd_step", (group.data, group.grad)
        return "sgd_momentum_step", (group.data, group.grad, state["momentum_buffer"])

    def group_scalars(self, group, step):
        if not self.uses_momentum:
            return group["weight_decay"], group["l1"], group["lr"]
        momentum = group["momentum"]
        if step == 1 or momentum == 0:  # b = g, as PyTorch's first step (and a group without momentum: p -= lr g)
            buffer_decay, grad_coefficient = 0.0, 1.0
        else:
            buffer_decay, grad_coefficient = momentum, 1.0 - group["dampening"]
        direct, lookahead = (1.0, momentum) if self.nesterov else (0.0, 1.0)
        return (group["weight_decay"], group["l1"], group["lr"], buffer_decay, grad_coefficient, direct, lookahead)

    row_options = ("nesterov",)

    def stacked_scalars(self, values, steps):
        if not self.uses_momentum:
            return _stacked(values["weight_decay"], values["l1"], values["lr"])
        momentum = values["momentum"]
        first = (steps[:, None] == 1) | (momentum == 0)
        nesterov = values["nesterov"] != 0
        return _stacked(values["weight_decay"], values["l1"], values["lr"], np.where(first, 0.0, momentum),
                        np.where(first, 1.0, 1.0 - values["dampening"]), np.where(nesterov, 1.0, 0.0),
                        np.where(nesterov, momentum, 1.0))


class Adagrad(Optimizer):
    """G <- G + g^2;  p <- p - lr_t g / (sqrt(G) + eps),  lr_t = lr / (1 + (t - 1) lr_decay) (Duchi et al. 2011)."""

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                 **options):
        self.initial_accumulator_value = check_number("Adagrad", "initial_accumulator_value",
                                                      initial_accumulator_value, low=0)
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps), **options)

    def check(self, name, value):
        if name == "eps":
            return check_number("Adagrad", name, value, low=0, low_open=True)
        return super().check(name, value)

    def state_names(self):
        return {"sum": self.initial_accumulator_value}

    def update_arrays(self, group, state):
        return "adagrad_step", (group.data, group.grad, state["sum"])

    def group_scalars(self, group, step):
        lr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
        return group["weight_decay"], group["l1"], lr, group["eps"]

    def stacked_scalars(self, values, steps):  # group_scalars is + - * / alone: the same code over arrays
        return _stacked(*self.group_scalars(values, steps[:, None]))


class RMSprop(Optimizer):
    """v <- alpha v + (1 - alpha) g^2;  p <- p - lr g / (sqrt(v) + eps) (Hinton's lecture 6e).

    ``centered`` divides by the standard deviation sqrt(v - a^2), a the running mean of g; ``momentum`` steps
    through a buffer b <- momentum b + g / (sqrt(v) + eps). As in PyTorch, eps sits outside the square root
    (the lecture's sqrt(v + eps) differs only for tiny v).
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                 **options):
        self.centered = bool(centered)
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum),
                         **options)

    def check(self, name, value):
        if name == "alpha":
            return check_number("RMSprop", name, value, low=0, high=1)
        if name == "eps":
            return check_number("RMSprop", name, value, low=0, low_open=True)
        return _refuse_new_momentum(self, name, super().check(name, value))

    def state_names(self):
        self.uses_momentum = _any_momentum(self)
        names = {"square_avg": 0.0}
        if self.centered:
            names["grad_avg"] = 0.0
        if self.uses_momentum:
            names["momentum_buffer"] = 0.0
        return names

    def update_arrays(self, group, state):
        return ("rmsprop_step",
                (group.data, group.grad, state["square_avg"], state.get("grad_avg"), state.get("momentum_buffer")))

    def group_scalars(self, group, step):
        return group["weight_decay"], group["l1"], group["lr"], group["alpha"], group["eps"], group["momentum"]

    def stacked_scalars(self, values, steps):  # no step in the rows: the same code over arrays
        return _stacked(*self.group_scalars(values, steps[:, None]))


class Adam(Optimizer):
    """Adam (Kingma and Ba 2015) with bias correction; ``amsgrad`` (Reddi et al. 2018) keeps the max of v.

    m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2;
    p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
    ``weight_decay`` adds weight_decay * p to g (L2); AdamW decouples it.

    ``moments_dtype="bfloat16"`` (float32 parameters, no AMSGrad) stores m and v as bfloat16, half the state's
    memory and a quarter less traffic per step: each step widens them to float32, updates and uses them in
    float32, and stores them rounded stochastically (unbiased, reproducible from the step number;
    ``fastdl/kernels/bfloat16.py``), so v still decays with beta2 = 0.999 where round-to-nearest would freeze
    it. The state arrays then hold the bfloat16 bit patterns as uint16 (numpy has no bfloat16 type);
    ``fastdl.kernels.bfloat16.to_float32`` reads them.
    """

    decoupled_weight_decay = False

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, moments_dtype: str | None = None,
                 **options):
        owner = type(self).__name__
        if moments_dtype not in MOMENTS_DTYPES:
            raise ValueError(f"{owner}: moments_dtype must be None (the parameters' dtype) or 'bfloat16', "
                             f"got {moments_dtype!r}")
        if moments_dtype == "bfloat16" and amsgrad:
            raise ValueError(f"{owner}: moments_dtype='bfloat16' does not support amsgrad")
        self.amsgrad = bool(amsgrad)
        self.moments_dtype = moments_dtype
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay), **options)

    def _check_parameters(self, parameters):
        if self.moments_dtype == "bfloat16":
            for index, parameter in enumerate(parameters):
                if parameter.dtype != np.float32:
                    raise TypeError(f"{type(self).__name__}: moments_dtype='bfloat16' needs float32 parameters, "
                                    f"parameter {index} {parameter!r} is {parameter.dtype}")

    def state_dtype(self, name, group):
        return np.dtype(np.uint16) if self.moments_dtype == "bfloat16" else group.dtype

    def check(self, name, value):
        owner = type(self).__name__
        if name == "betas":
            return _check_betas(owner, value)
        if name == "eps":
            return check_number(owner, name, value, low=0, low_open=True)
        return super().check(name, value)

    def state_names(self):
        names = {"exp_avg": 0.0, "exp_avg_sq": 0.0}
        if self.amsgrad:
            names["max_exp_avg_sq"] = 0.0
        return names

    def update_arrays(self, group, state):
        if self.moments_dtype == "bfloat16":
            return "adam_bfloat16_step", (group.data, group.grad, state["exp_avg"], state["exp_avg_sq"])
        return "adam_step", (group.data, group.grad, state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq"))

    def group_scalars(self, group, step):
        beta1, beta2 = group["betas"]
        lr, weight_decay = group["lr"], group["weight_decay"]
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        if self.decoupled_weight_decay:
            decay_factor, coupled_decay = 1 - lr * weight_decay, 0.0
        else:
            decay_factor, coupled_decay = 1.0, weight_decay
        return (coupled_decay, group["l1"], decay_factor, beta1, beta2, lr / bias_correction1,
                math.sqrt(bias_correction2), group["eps"])

    def stacked_scalars(self, values, steps):
        # group_scalars over arrays (written out again: group_scalars runs at every compile_step call, where each
        # Python call counts): the same + - * /, bit for bit; the bias corrections in Python floats, once per
        # distinct (beta1, beta2, step), as numpy's power may round otherwise than the C library's
        beta1, beta2 = values["betas"][..., 0], values["betas"][..., 1]
        lr, weight_decay = values["lr"], values["weight_decay"]
        bias_correction1, root_bias_correction2 = _per_distinct(
            lambda beta1, beta2, step: (1 - beta1 ** step, math.sqrt(1 - beta2 ** step)), beta1, beta2,
            np.broadcast_to(steps[:, None], beta1.shape))
        if self.decoupled_weight_decay:
            decay_factor, coupled_decay = 1 - lr * weight_decay, 0.0
        else:
            decay_factor, coupled_decay = 1.0, weight_decay
        return _stacked(coupled_decay, values["l1"], decay_factor, beta1, beta2, lr / bias_correction1,
                        root_bias_correction2, values["eps"])

    def _update(self, kernels, group, state, T, grad_scale):
        if self.moments_dtype != "bfloat16":
            return super()._update(kernels, group, state, T, grad_scale)
        name, arrays, tail = self.update_call(group, state, self.steps)
        # the rounding draws: element i of step t uses the counter generator at (seed, t, i)
        getattr(kernels, name)(*arrays, bfloat16.ROUNDING_SEED, self.steps, T(grad_scale), *tail)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter 2019): p <- (1 - lr weight_decay) p, then Adam."""

    decoupled_weight_decay = True

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, moments_dtype: str | None = None,
                 **options):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         moments_dtype=moments_dtype, **options)


class LARS(Optimizer):
    """Layer-wise adaptive rate scaling (You et al. 2017), momentum form.

    Per tensor: ratio = trust_coefficient ||p|| / (||g|| + weight_decay ||p|| + eps) (1 when a norm is 0);
    b <- momentum b + lr ratio (g + weight_decay p);  p <- p - b. With ``exclude_vectors`` (default) biases and
    other 1-D parameters (batch-norm scales) keep ratio 1, the common practice. The norms come from one
    reduction pass that also serves ``max_grad_norm``.
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0, trust_coefficient=0.001, eps=1e-8,
                 exclude_vectors=True, **options):
        self.exclude_vectors = bool(exclude_vectors)
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust_coefficient=trust_coefficient, eps=eps), **options)
        # per flat buffer, in the order of self.groups, which tensors get a trust ratio (by position, not id():
        # a pickled or copied optimizer's buffers are new objects)
        self._adapt = [np.logical_not(group.is_vector) if self.exclude_vectors else np.ones(len(group.sizes), bool)
                       for group in self.groups]
        self._sums_fresh = False

    def check(self, name, value):
        if name == "eps":
            return check_number("LARS", name, value, low=0, low_open=True)
        return super().check(name, value)

    def state_names(self):
        return {"momentum_buffer": 0.0}

    def _grad_square_sum(self, kernels):
        # The per-tensor norms of parameters and gradients in one pass; the global norm is their sum.
        self._sums_fresh = True
        return sum(float(group.norms.segment_sums(kernels, group.data, group.grad)[:, 1].sum())
                   for group in self.groups)

    def step(self, grad_scale=1.0):
        try:
            return super().step(grad_scale)
        finally:
            self._sums_fresh = False

    def group_scalars(self, group, step):  # kernels.ops.LARS_COLUMNS
        return (group["weight_decay"], group["l1"], group["lr"], group["momentum"], group["trust_coefficient"],
                group["eps"])

    def _update(self, kernels, group, state, T, grad_scale):
        norms = group.norms
        if not self._sums_fresh:
            norms.segment_sums(kernels, group.data, group.grad)
        index = self.groups.index(group)
        hyper = self.hyper_rows("lars", self.steps)
        kernels.lars_trust_ratios(norms.sums, self._adapt[index], float(grad_scale), hyper,
                                  self.segment_groups[index], norms.ratios)
        kernels.lars_step(group.data, group.grad, state["momentum_buffer"], norms.ratios, norms.piece_segments,
                          T(grad_scale), hyper, norms.piece_bounds, self.piece_groups[index])


class LAMB(Optimizer):
    """Layer-wise adaptive moments (You et al. 2019): Adam's direction, rescaled per tensor.

    r = m_hat / (sqrt(v_hat) + eps) + weight_decay p (bias-corrected moments as in Adam);
    p <- p - lr (||p|| / ||r||) r (ratio 1 when a norm is 0). Two passes: moments with the norms, then the update.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, **options):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay), **options)

    def check(self, name, value):
        if name == "betas":
            return _check_betas("LAMB", value)
        if name == "eps":
            return check_number("LAMB", name, value, low=0, low_open=True)
        return super().check(name, value)

    def state_names(self):
        return {"exp_avg": 0.0, "exp_avg_sq": 0.0}

    def group_scalars(self, group, step):  # kernels.ops.LAMB_COLUMNS
        beta1, beta2 = group["betas"]
        return (group["weight_decay"], group["l1"], group["lr"], beta1, beta2, 1 - beta1 ** step, 1 - beta2 ** step,
                group["eps"])

    def _update(self, kernels, group, state, T, grad_scale):
        norms = group.norms
        index = self.groups.index(group)
        hyper = self.hyper_rows("lamb", self.steps)
        grouped = (hyper, norms.piece_bounds, self.piece_groups[index])
        kernels.lamb_moments(group.data, group.grad, state["exp_avg"], state["exp_avg_sq"], norms.piece_segments,
                             norms.partials, norms.sums, T(grad_scale), *grouped)
        kernels.lamb_trust_ratios(norms.sums, norms.ratios)
        kernels.lamb_apply(group.data, state["exp_avg"], state["exp_avg_sq"], norms.ratios, norms.piece_segments,
                           *grouped)
