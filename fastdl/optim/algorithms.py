"""SGD, Adagrad, RMSprop, Adam, AdamW, LARS and LAMB: PyTorch's names, defaults and formulas.

Each class turns its hyperparameters into the scalars of one fused kernel call (see ``kernels/cpu/optim.py``
for the kernels, ``kernels/reference/optim.py`` for the formulas). Every class also takes the common options
``max_grad_norm``, ``l1`` and ``skip_nonfinite`` of ``fastdl.optim.Optimizer``.
"""

import math

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


class SGD(Optimizer):
    """Stochastic gradient descent, with heavy-ball or Nesterov momentum.

    b <- momentum b + (1 - dampening) g (b = g on the first step);  p <- p - lr b, or with ``nesterov``
    p <- p - lr (g + momentum b). ``dampening=momentum`` gives the textbook's exponential moving average
    b <- beta b + (1 - beta) g. g includes ``weight_decay * p``.

    >>> optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)  # doctest: +SKIP
    """

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, **options):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(f"SGD: Nesterov momentum needs momentum > 0 and dampening = 0, got momentum={momentum}, "
                             f"dampening={dampening}")
        self.nesterov = bool(nesterov)
        self.uses_momentum = momentum != 0
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay),
                         **options)

    def check(self, name, value):
        if name == "momentum" and (value != 0) != self.uses_momentum:
            raise ValueError("SGD: momentum cannot be switched on or off after construction (it changes the state)")
        return super().check(name, value)

    def state_names(self):
        return {"momentum_buffer": 0.0} if self.uses_momentum else {}

    def update_call(self, group, state, step):
        if not self.uses_momentum:
            return "sgd_step", (group.data, group.grad), (self.weight_decay, self.l1, self.lr)
        first = step == 1
        buffer_decay, grad_coefficient = (0.0, 1.0) if first else (self.momentum, 1.0 - self.dampening)
        direct, lookahead = (1.0, self.momentum) if self.nesterov else (0.0, 1.0)
        return ("sgd_momentum_step", (group.data, group.grad, state["momentum_buffer"]),
                (self.weight_decay, self.l1, self.lr, buffer_decay, grad_coefficient, direct, lookahead))


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

    def update_call(self, group, state, step):
        lr = self.lr / (1 + (step - 1) * self.lr_decay)
        return "adagrad_step", (group.data, group.grad, state["sum"]), (self.weight_decay, self.l1, lr, self.eps)


class RMSprop(Optimizer):
    """v <- alpha v + (1 - alpha) g^2;  p <- p - lr g / (sqrt(v) + eps) (Hinton's lecture 6e).

    ``centered`` divides by the standard deviation sqrt(v - a^2), a the running mean of g; ``momentum`` steps
    through a buffer b <- momentum b + g / (sqrt(v) + eps). As in PyTorch, eps sits outside the square root
    (the lecture's sqrt(v + eps) differs only for tiny v).
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                 **options):
        self.centered = bool(centered)
        self.uses_momentum = momentum != 0
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum),
                         **options)

    def check(self, name, value):
        if name == "alpha":
            return check_number("RMSprop", name, value, low=0, high=1)
        if name == "eps":
            return check_number("RMSprop", name, value, low=0, low_open=True)
        if name == "momentum" and (value != 0) != self.uses_momentum:
            raise ValueError("RMSprop: momentum cannot be switched on or off after construction (it changes the state)")
        return super().check(name, value)

    def state_names(self):
        names = {"square_avg": 0.0}
        if self.centered:
            names["grad_avg"] = 0.0
        if self.uses_momentum:
            names["momentum_buffer"] = 0.0
        return names

    def update_call(self, group, state, step):
        return ("rmsprop_step",
                (group.data, group.grad, state["square_avg"], state.get("grad_avg"), state.get("momentum_buffer")),
                (self.weight_decay, self.l1, self.lr, self.alpha, self.eps, self.momentum))


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

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 moments_dtype=None, **options):
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

    def update_call(self, group, state, step):
        beta1, beta2 = self.betas
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        if self.decoupled_weight_decay:
            decay_factor, coupled_decay = 1 - self.lr * self.weight_decay, 0.0
        else:
            decay_factor, coupled_decay = 1.0, self.weight_decay
        scalars = (coupled_decay, self.l1, decay_factor, beta1, beta2, self.lr / bias_correction1,
                   math.sqrt(bias_correction2), self.eps)
        if self.moments_dtype == "bfloat16":
            return "adam_bfloat16_step", (group.data, group.grad, state["exp_avg"], state["exp_avg_sq"]), scalars
        return ("adam_step",
                (group.data, group.grad, state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq")), scalars)

    def _update(self, kernels, group, state, T, grad_scale):
        if self.moments_dtype != "bfloat16":
            return super()._update(kernels, group, state, T, grad_scale)
        name, arrays, scalars = self.update_call(group, state, self.steps)
        # the rounding draws: element i of step t uses the counter generator at (seed, t, i)
        getattr(kernels, name)(*arrays, bfloat16.ROUNDING_SEED, self.steps, T(grad_scale), *(T(s) for s in scalars))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter 2019): p <- (1 - lr weight_decay) p, then Adam."""

    decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 moments_dtype=None, **options):
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
        # per group (by identity: groups can be shared with another optimizer), which tensors get a trust ratio
        self._adapt = {id(group): np.logical_not(group.is_vector) if self.exclude_vectors
                       else np.ones(len(group.sizes), bool) for group in self.groups}
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

    def step(self):
        try:
            return super().step()
        finally:
            self._sums_fresh = False

    def _update(self, kernels, group, state, T, grad_scale):
        norms = group.norms
        if not self._sums_fresh:
            norms.segment_sums(kernels, group.data, group.grad)
        adapt = self._adapt[id(group)]
        kernels.lars_trust_ratios(norms.sums, adapt, float(grad_scale), self.trust_coefficient, self.weight_decay,
                                  self.eps, norms.ratios)
        kernels.lars_step(group.data, group.grad, state["momentum_buffer"], norms.ratios, norms.piece_bounds,
                          norms.piece_segments, T(grad_scale), T(self.weight_decay), T(self.l1), T(self.lr),
                          T(self.momentum))


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

    def _update(self, kernels, group, state, T, grad_scale):
        beta1, beta2 = self.betas
        bias_correction1 = T(1 - beta1 ** self.steps)
        bias_correction2 = T(1 - beta2 ** self.steps)
        norms = group.norms
        kernels.lamb_moments(group.data, group.grad, state["exp_avg"], state["exp_avg_sq"], norms.piece_bounds,
                             norms.piece_segments, norms.partials, norms.sums, T(grad_scale), T(self.weight_decay),
                             T(self.l1), T(beta1), T(beta2), bias_correction1, bias_correction2, T(self.eps))
        kernels.lamb_trust_ratios(norms.sums, norms.ratios)
        kernels.lamb_apply(group.data, state["exp_avg"], state["exp_avg_sq"], norms.ratios, norms.piece_bounds,
                           norms.piece_segments, T(self.weight_decay), T(self.lr), bias_correction1, bias_correction2,
                           T(self.eps))
