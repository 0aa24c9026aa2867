"""Learning-rate schedules with PyTorch's semantics: build after the optimizer, call ``step()`` once per epoch
(or per iteration) after ``optimizer.step()``.

Each schedule is a closed form ``lr_at(t, base_lr)`` of the step count t and a parameter group's lr when its first
schedule was built (``base_lr``; kept in the group as ``"initial_lr"``, PyTorch's key, so schedules built one after
the other, as for ``SequentialLR``, share it). Every parameter group follows the schedule from its own base lr, as
in PyTorch. A schedule restored from its ``state_dict`` continues exactly where it stopped. ``ReduceLROnPlateau``
alone follows a monitored value instead (``step(value)``).
"""

import bisect
import math

from .optimizer import check_number


class LRScheduler:
    def __init__(self, optimizer, last_epoch=-1):
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
            self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        elif not hasattr(self, "base_lrs"):
            raise ValueError(f"{type(self).__name__}: last_epoch={last_epoch} needs base_lrs (resume with "
                             "load_state_dict)")
        self.last_epoch = last_epoch
        self.step()

    @property
    def base_lr(self):
        """The first parameter group's base lr."""
        return self.base_lrs[0]

    def lr_at(self, epoch, base_lr):
        raise NotImplementedError

    def step(self):
        self.last_epoch += 1
        self._apply()

    def _apply(self):
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.lr_at(self.last_epoch, base_lr)

    def get_last_lr(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self):
        return {"base_lrs": list(self.base_lrs), "last_epoch": self.last_epoch}

    def _restore_base_lrs(self, state):
        # a state saved before parameter groups existed holds one base_lr
        count = len(self.optimizer.param_groups)
        base_lrs = [float(lr) for lr in state["base_lrs"]] if "base_lrs" in state else [float(state["base_lr"])] * count
        if len(base_lrs) != count:
            raise ValueError(f"{type(self).__name__}.load_state_dict: {len(base_lrs)} base lrs for {count} parameter "
                             "groups")
        self.base_lrs = base_lrs

    def load_state_dict(self, state):
        self._restore_base_lrs(state)
        self.last_epoch = int(state["last_epoch"])
        self._apply()


class LambdaLR(LRScheduler):
    """lr_t = base_lr * lr_lambda(t)."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        if not callable(lr_lambda):
            raise TypeError(f"LambdaLR: lr_lambda must be callable, got {lr_lambda!r}")
        self.lr_lambda = lr_lambda
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch, base_lr):
        return base_lr * self.lr_lambda(epoch)


class StepLR(LRScheduler):
    """lr_t = base_lr * gamma ** (t // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be a positive integer, got {step_size!r}")
        self.step_size = step_size
        self.gamma = check_number("StepLR", "gamma", gamma, low=0)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch, base_lr):
        return base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """lr_t = base_lr * gamma ** t."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = check_number("ExponentialLR", "gamma", gamma, low=0)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch, base_lr):
        return base_lr * self.gamma ** epoch


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

    def lr_at(self, epoch, base_lr):
        fraction = min(epoch, self.total_iters) / self.total_iters
        return base_lr * ((1 - fraction) * self.start_factor + fraction * self.end_factor)


class CosineAnnealingLR(LRScheduler):
    """lr_t = eta_min + (base_lr - eta_min) (1 + cos(pi t / T_max)) / 2 (Loshchilov and Hutter 2017, no restarts)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        if isinstance(T_max, bool) or not isinstance(T_max, int) or T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be a positive integer, got {T_max!r}")
        self.T_max = T_max
        self.eta_min = check_number("CosineAnnealingLR", "eta_min", eta_min, low=0)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch, base_lr):
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


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
        lrs = [group["lr"] for group in optimizer.param_groups]
        self.after = after(optimizer) if after is not None else None
        for group, lr in zip(optimizer.param_groups, lrs):  # building ``after`` set its first lr; the warm-up
            group["lr"] = lr                                 # starts from the original one
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch, base_lr):
        if epoch < self.warmup_steps:
            fraction = epoch / self.warmup_steps
            return base_lr * ((1 - fraction) * self.start_factor + fraction)
        if self.after is None:
            return base_lr
        return self.after.lr_at(epoch - self.warmup_steps, base_lr)

    def state_dict(self):
        state = super().state_dict()
        if self.after is not None:
            state["after"] = self.after.state_dict()
        return state

    def load_state_dict(self, state):
        if self.after is not None:
            self.after._restore_base_lrs(state["after"])
            self.after.last_epoch = int(state["after"]["last_epoch"])
        super().load_state_dict(state)


class MultiStepLR(LRScheduler):
    """lr_t = base_lr * gamma ** (the number of milestones <= t)."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        milestones = list(milestones)
        if not milestones or any(isinstance(m, bool) or not isinstance(m, int) or m < 0 for m in milestones):
            raise ValueError(f"MultiStepLR: milestones must be non-negative integers, got {milestones!r}")
        self.milestones = sorted(milestones)
        self.gamma = check_number("MultiStepLR", "gamma", gamma, low=0)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch, base_lr):
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, epoch)


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith and Topin 2019), stepped once per batch, with PyTorch's phases and defaults.

    The lr rises from max_lr / div_factor to max_lr over the first ``pct_start`` of ``total_steps`` (or
    ``epochs * steps_per_epoch``), then falls to max_lr / (div_factor * final_div_factor); ``three_phase`` falls
    back to the start first. With ``cycle_momentum`` the momentum (SGD's, or Adam's beta1) moves the other way
    between ``max_momentum`` and ``base_momentum``. ``anneal_strategy`` is "cos" or "linear". Stepping past the
    last step is a ValueError, as in PyTorch.
    """

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None, pct_start=0.3,
                 anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85, max_momentum=0.95, div_factor=25.0,
                 final_div_factor=1e4, three_phase=False, last_epoch=-1):
        owner = "OneCycleLR"
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError(f"{owner}: pass total_steps, or epochs and steps_per_epoch")
            total_steps = epochs * steps_per_epoch
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"{owner}: total_steps must be a positive integer, got {total_steps!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"{owner}: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.total_steps = total_steps
        groups = optimizer.param_groups
        max_lrs = list(max_lr) if isinstance(max_lr, (list, tuple)) else [max_lr] * len(groups)
        if len(max_lrs) != len(groups):
            raise ValueError(f"{owner}: max_lr has {len(max_lrs)} values for {len(groups)} parameter groups")
        max_lrs = [check_number(owner, "max_lr", value, low=0, low_open=True) for value in max_lrs]
        self.max_lr = max_lrs[0]
        pct_start = check_number(owner, "pct_start", pct_start, low=0, high=1)
        self.div_factor = check_number(owner, "div_factor", div_factor, low=0, low_open=True)
        self.final_div_factor = check_number(owner, "final_div_factor", final_div_factor, low=0, low_open=True)
        self.anneal_strategy = anneal_strategy
        self.cycle_momentum = bool(cycle_momentum)
        if self.cycle_momentum and not (hasattr(optimizer, "betas") or getattr(optimizer, "uses_momentum",
                                                                             getattr(optimizer, "momentum", 0) > 0)):
            raise ValueError(f"{owner}: cycle_momentum needs an optimizer with betas, or built with momentum > 0 "
                             f"({type(optimizer).__name__} has neither); pass cycle_momentum=False")
        self.base_momentum = check_number(owner, "base_momentum", base_momentum, low=0, high=1)
        self.max_momentum = check_number(owner, "max_momentum", max_momentum, low=0, high=1)
        top, bottom = self.max_momentum, self.base_momentum
        rise = float(pct_start * total_steps) - 1
        # (last step, lr from, lr to, momentum from, momentum to); lrs as "initial", "max" or "min", per group
        if three_phase:
            self.phases = [(rise, "initial", "max", top, bottom),
                           (2 * float(pct_start * total_steps) - 2, "max", "initial", bottom, top),
                           (total_steps - 1, "initial", "min", top, top)]
        else:
            self.phases = [(rise, "initial", "max", top, bottom), (total_steps - 1, "max", "min", bottom, top)]
        if last_epoch == -1:  # PyTorch's keys: every group starts at its max_lr / div_factor
            for group, peak in zip(groups, max_lrs):
                group["initial_lr"] = peak / self.div_factor
                group["max_lr"] = peak
                group["min_lr"] = group["initial_lr"] / self.final_div_factor
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start, end, fraction):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2 * (math.cos(math.pi * fraction) + 1)
        return (end - start) * fraction + start

    def _phase_values(self, step, base_lr):
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR: stepped {step} times, past total_steps={self.total_steps}")
        levels = {"initial": base_lr, "max": base_lr * self.div_factor, "min": base_lr / self.final_div_factor}
        start = 0
        for index, (end, lr_from, lr_to, momentum_from, momentum_to) in enumerate(self.phases):
            if step <= end or index == len(self.phases) - 1:
                fraction = (step - start) / (end - start)
                return (self._anneal(levels[lr_from], levels[lr_to], fraction),
                        self._anneal(momentum_from, momentum_to, fraction))
            start = end

    def lr_at(self, epoch, base_lr):
        return self._phase_values(epoch, base_lr)[0]

    def step(self):
        super().step()
        if self.cycle_momentum:
            momentum = self._phase_values(self.last_epoch, self.base_lrs[0])[1]
            for group in self.optimizer.param_groups:
                if "betas" in group:
                    group["betas"] = (momentum, group["betas"][1])
                else:
                    group["momentum"] = momentum


class SequentialLR(LRScheduler):
    """``schedulers[i]`` from ``milestones[i - 1]`` on, each counting its own steps from 0 there (PyTorch's
    SequentialLR): ``SequentialLR(opt, [LinearLR(opt, 0.1, 1.0, 5), CosineAnnealingLR(opt, 95)], [5])`` warms up
    for 5 steps, then anneals. Every schedule starts from the optimizer's lr when the first was built."""

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        schedulers, milestones = list(schedulers), list(milestones)
        if len(milestones) != len(schedulers) - 1 or milestones != sorted(milestones):
            raise ValueError(f"SequentialLR: needs one increasing milestone between each two schedulers, got "
                             f"{len(schedulers)} schedulers and milestones {milestones!r}")
        if any(scheduler.optimizer is not optimizer for scheduler in schedulers):
            raise ValueError("SequentialLR: every scheduler must drive the optimizer given to SequentialLR")
        self.schedulers, self.milestones = schedulers, milestones
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch, base_lr):
        index = bisect.bisect_right(self.milestones, epoch)
        start = self.milestones[index - 1] if index else 0
        return self.schedulers[index].lr_at(epoch - start, base_lr)

    def state_dict(self):
        return {**super().state_dict(), "schedulers": [scheduler.state_dict() for scheduler in self.schedulers]}

    def load_state_dict(self, state):
        for scheduler, inner in zip(self.schedulers, state["schedulers"]):
            scheduler._restore_base_lrs(inner)
        super().load_state_dict(state)


class ReduceLROnPlateau:
    """Multiply every group's lr by ``factor`` (not below ``min_lr``: one value, or one per group) once the monitored
    value (``step(value)``, e.g. the validation loss: ``fit`` passes it) has not improved for ``patience`` epochs,
    with PyTorch's modes, thresholds, cooldown and floor."""

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0.0, eps=1e-8):
        owner = "ReduceLROnPlateau"
        if mode not in ("min", "max") or threshold_mode not in ("rel", "abs"):
            raise ValueError(f"{owner}: mode must be 'min' or 'max' and threshold_mode 'rel' or 'abs', got "
                             f"{mode!r}, {threshold_mode!r}")
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{owner}: {name} must be a non-negative integer, got {value!r}")
        self.optimizer = optimizer
        self.mode, self.threshold_mode = mode, threshold_mode
        self.factor = check_number(owner, "factor", factor, low=0, high=1, high_open=True)
        self.threshold = check_number(owner, "threshold", threshold, low=0)
        count = len(optimizer.param_groups)
        min_lrs = list(min_lr) if isinstance(min_lr, (list, tuple)) else [min_lr] * count
        if len(min_lrs) != count:
            raise ValueError(f"{owner}: min_lr has {len(min_lrs)} values for {count} parameter groups")
        self.min_lrs = [check_number(owner, "min_lr", value, low=0) for value in min_lrs]
        self.eps = check_number(owner, "eps", eps, low=0)
        self.patience, self.cooldown = patience, cooldown
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = self.cooldown_counter = self.last_epoch = 0

    def _better(self, value):
        if self.mode == "min":
            return value < (self.best * (1 - self.threshold) if self.threshold_mode == "rel" else self.best - self.threshold)
        return value > (self.best * (1 + self.threshold) if self.threshold_mode == "rel" else self.best + self.threshold)

    def step(self, value):
        value = float(value)
        self.last_epoch += 1
        if self._better(value):
            self.best, self.num_bad_epochs = value, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
                reduced = max(group["lr"] * self.factor, min_lr)
                if group["lr"] - reduced > self.eps:
                    group["lr"] = reduced
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0

    def get_last_lr(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self):
        return {"best": self.best, "num_bad_epochs": self.num_bad_epochs, "cooldown_counter": self.cooldown_counter,
                "last_epoch": self.last_epoch}

    def load_state_dict(self, state):
        self.best = float(state["best"])
        self.num_bad_epochs, self.cooldown_counter = int(state["num_bad_epochs"]), int(state["cooldown_counter"])
        self.last_epoch = int(state["last_epoch"])
