"""Learning-rate schedules with PyTorch's semantics: build after the optimizer, call ``step()`` once per epoch
(or per iteration) after ``optimizer.step()``.

Each schedule is a closed form ``lr_at(t)`` of the step count t and the optimizer's lr when the schedule was
built (``base_lr``), so a schedule restored from its ``state_dict`` continues exactly where it stopped.
"""

import math

from .optimizer import check_number


class LRScheduler:
    def __init__(self, optimizer, last_epoch=-1):
        self.optimizer = optimizer
        if last_epoch == -1:
            self.base_lr = optimizer.lr
        elif not hasattr(self, "base_lr"):
            raise ValueError(f"{type(self).__name__}: last_epoch={last_epoch} needs base_lr (resume with load_state_dict)")
        self.last_epoch = last_epoch
        self.step()

    def lr_at(self, epoch):
        raise NotImplementedError

    def step(self):
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def get_last_lr(self):
        return [self.optimizer.lr]

    def state_dict(self):
        return {"base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def load_state_dict(self, state):
        self.base_lr = float(state["base_lr"])
        self.last_epoch = int(state["last_epoch"])
        self.optimizer.lr = self.lr_at(self.last_epoch)


class LambdaLR(LRScheduler):
    """lr_t = base_lr * lr_lambda(t)."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        if not callable(lr_lambda):
            raise TypeError(f"LambdaLR: lr_lambda must be callable, got {lr_lambda!r}")
        self.lr_lambda = lr_lambda
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        return self.base_lr * self.lr_lambda(epoch)


class StepLR(LRScheduler):
    """lr_t = base_lr * gamma ** (t // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be a positive integer, got {step_size!r}")
        self.step_size = step_size
        self.gamma = check_number("StepLR", "gamma", gamma, low=0)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """lr_t = base_lr * gamma ** t."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = check_number("ExponentialLR", "gamma", gamma, low=0)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** epoch


class LinearLR(LRScheduler):
    """The textbook's linear decay alpha_t = (1 - t/tau) alpha_0 + (t/tau) alpha_tau, constant after tau.

    alpha_0 = start_factor * base_lr, alpha_tau = end_factor * base_lr, tau = total_iters (PyTorch's names and
    defaults). For a pure decay to 1% of the lr over 100 epochs: ``LinearLR(opt, 1.0, 0.01, 100)``.
    """

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        self.start_factor = check_number("LinearLR", "start_factor", start_factor, low=0, high=1, low_open=True)
        self.end_factor = check_number("LinearLR", "end_factor", end_factor, low=0, high=1)
        if isinstance(total_iters, bool) or not isinstance(total_iters, int) or total_iters < 1:
            raise ValueError(f"LinearLR: total_iters must be a positive integer, got {total_iters!r}")
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        fraction = min(epoch, self.total_iters) / self.total_iters
        return self.base_lr * ((1 - fraction) * self.start_factor + fraction * self.end_factor)


class CosineAnnealingLR(LRScheduler):
    """lr_t = eta_min + (base_lr - eta_min) (1 + cos(pi t / T_max)) / 2 (Loshchilov and Hutter 2017, no restarts)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        if isinstance(T_max, bool) or not isinstance(T_max, int) or T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be a positive integer, got {T_max!r}")
        self.T_max = T_max
        self.eta_min = check_number("CosineAnnealingLR", "eta_min", eta_min, low=0)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


class WarmupLR(LRScheduler):
    """Linear warm-up from start_factor * base_lr to base_lr over ``warmup_steps``, then ``after`` (or constant).

    ``after`` is another schedule's class and arguments as a function of the optimizer, so it counts its own
    steps from the end of the warm-up:

    >>> sched = WarmupLR(opt, 100, after=lambda o: CosineAnnealingLR(o, T_max=900))  # doctest: +SKIP
    """

    def __init__(self, optimizer, warmup_steps, start_factor=0.01, after=None, last_epoch=-1):
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 1:
            raise ValueError(f"WarmupLR: warmup_steps must be a positive integer, got {warmup_steps!r}")
        self.warmup_steps = warmup_steps
        self.start_factor = check_number("WarmupLR", "start_factor", start_factor, low=0, high=1)
        base_lr = optimizer.lr
        self.after = after(optimizer) if after is not None else None
        optimizer.lr = base_lr  # building ``after`` set its first lr; the warm-up starts from the original one
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        if epoch < self.warmup_steps:
            fraction = epoch / self.warmup_steps
            return self.base_lr * ((1 - fraction) * self.start_factor + fraction)
        if self.after is None:
            return self.base_lr
        return self.after.lr_at(epoch - self.warmup_steps)

    def state_dict(self):
        state = super().state_dict()
        if self.after is not None:
            state["after"] = self.after.state_dict()
        return state

    def load_state_dict(self, state):
        if self.after is not None:
            self.after.base_lr = float(state["after"]["base_lr"])
            self.after.last_epoch = int(state["after"]["last_epoch"])
        super().load_state_dict(state)
