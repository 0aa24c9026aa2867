"""The Optimizer base: flat buffers, the optional norm pass (clipping, non-finite check), state dicts.

A step is one fused kernel call per dtype group over the flat buffers, preceded by at most one reduction pass
when something needs the gradient norm (``max_grad_norm``, ``skip_nonfinite``; LARS and LAMB need per-tensor
norms anyway). Hyperparameters are plain attributes, checked when set, and reach the kernels as scalars of the
parameters' dtype, so changing ``lr`` between steps never recompiles anything.
"""

import math

import numpy as np

from ..backend import get_backend, to_numpy
from .clip import clip_scale
from .flat import FlatParameters


def check_number(owner, name, value, low=None, high=None, low_open=False, high_open=False):
    """``value`` as a float, or a ValueError naming the optimizer, the argument and the allowed range."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}")
    value = float(value)
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or below or above:
        interval = f"{'(' if low_open else '['}{low if low is not None else '-inf'}, " \
                   f"{high if high is not None else 'inf'}{')' if high_open or high is None else ']'}"
        raise ValueError(f"{owner}: {name} must be in {interval}, got {value!r}")
    return value


class Optimizer:
    """Base class. Subclasses set ``state_names(…)`` and ``_update(...)``; see ``fastdl.optim.Adam`` for use.

    Common options:
        max_grad_norm: clip the global gradient norm to this (``torch.nn.utils.clip_grad_norm_`` semantics:
            gradients scaled by min(1, max_grad_norm / (norm + 1e-6))), fused into the update.
        l1: L1 penalty; its subgradient ``l1 * sign(p)`` is added to the gradient in the update kernel (L2 is
            ``weight_decay``).
        skip_nonfinite: when the gradients hold NaN or Inf, leave parameters and state untouched for that step;
            ``step()`` then returns False and ``skipped_steps`` counts it.
    """

    _hyperparameter_names = ()

    def __init__(self, params, hyperparameters, max_grad_norm=None, l1=0.0, skip_nonfinite=False):
        from ..layers import Parameter  # the layers module imports nothing from here

        owner = type(self).__name__
        parameters = []
        for parameter in params:
            if not isinstance(parameter, Parameter):
                raise TypeError(f"{owner}: expected fastdl Parameters (model.parameters()), got {type(parameter).__name__}")
            if all(parameter is not seen for seen in parameters):
                parameters.append(parameter)
        if not parameters:
            raise ValueError(f"{owner}: got an empty parameter list")
        backend = get_backend()
        for index, parameter in enumerate(parameters):
            if not isinstance(parameter.data, backend.array_type):
                raise TypeError(f"{owner}: parameter {index} {parameter!r} is a {type(parameter.data).__module__} array, "
                                f"not one of the active '{backend.name}' backend")
        self._check_parameters(parameters)
        # Every argument is checked before the parameters move into flat buffers: bad input changes nothing.
        self.__dict__["_hyperparameter_names"] = tuple(hyperparameters) + ("max_grad_norm", "l1")
        for name, value in hyperparameters.items():
            setattr(self, name, value)
        self.max_grad_norm = max_grad_norm
        self.l1 = l1
        self.skip_nonfinite = bool(skip_nonfinite)

        by_dtype = {}
        for parameter in parameters:
            by_dtype.setdefault(parameter.dtype, []).append(parameter)
        self.groups = [FlatParameters.of(group, backend.xp) for group in by_dtype.values()]
        self.state = [{name: backend.xp.full(group.size, fill, dtype=self.state_dtype(name, group))
                       for name, fill in self.state_names().items()} for group in self.groups]
        self.steps = 0
        self.skipped_steps = 0
        self.last_grad_norm = None

    def __setattr__(self, name, value):
        if name in self._hyperparameter_names:
            value = self._check_hyperparameter(name, value)
        object.__setattr__(self, name, value)

    def _check_hyperparameter(self, name, value):
        owner = type(self).__name__
        if name == "max_grad_norm":
            return None if value is None else check_number(owner, name, value, low=0, low_open=True)
        if name == "lr":
            return check_number(owner, name, value, low=0)
        return self.check(name, value)

    def check(self, name, value):
        """Validate one algorithm-specific hyperparameter; subclasses extend."""
        return check_number(type(self).__name__, name, value, low=0)

    def state_names(self):
        """{name: initial value} of the flat state arrays this algorithm keeps with its current options."""
        return {}

    def state_dtype(self, name, group):
        """The dtype of state array ``name`` of a group: the parameters' own, unless an algorithm stores it
        narrower (Adam's ``moments_dtype="bfloat16"``: uint16 bit patterns)."""
        return group.dtype

    def _check_parameters(self, parameters):
        """Checks on the parameters an algorithm's options need, before anything moves; subclasses extend."""

    @property
    def parameters(self):
        return [parameter for group in self.groups for parameter in group.parameters]

    def zero_grad(self):
        for group in self.groups:
            group.grad[...] = 0

    def _check_ready(self, backend):
        owner = type(self).__name__
        for group in self.groups:
            if group.stale:
                raise RuntimeError(f"{owner}: some of its parameters were taken over by an optimizer built later over "
                                   "a different parameter set; build a new optimizer over them instead")
            if not isinstance(group.data, backend.array_type):
                raise TypeError(f"{owner}: its parameters live on another backend than the active '{backend.name}'")

    def _grad_square_sum(self, kernels):
        """The norm pass: sum of squared gradients over every group (float64)."""
        return sum(float(group.norms.segment_sums(kernels, group.grad)[:, 0].sum()) for group in self.groups)

    def step(self):
        """One update of every parameter from its ``.grad``. Returns False if skipped (``skip_nonfinite``)."""
        backend = get_backend()
        self._check_ready(backend)
        grad_scale = 1.0
        if self.max_grad_norm is not None or self.skip_nonfinite:
            norm = math.sqrt(self._grad_square_sum(backend.kernels))
            self.last_grad_norm = norm
            if self.skip_nonfinite and not math.isfinite(norm):
                self.skipped_steps += 1
                return False
            if self.max_grad_norm is not None:
                grad_scale = clip_scale(norm, self.max_grad_norm)
        self.steps += 1
        for group, state in zip(self.groups, self.state):
            self._update(backend.kernels, group, state, group.dtype.type, grad_scale)
        return True

    def _update(self, kernels, group, state, T, grad_scale):
        """One group's update; the default runs the single kernel ``update_call`` describes."""
        name, arrays, scalars = self.update_call(group, state, self.steps)
        getattr(kernels, name)(*arrays, T(grad_scale), *(T(value) for value in scalars))

    def update_call(self, group, state, step):
        """(kernel name, arrays, scalars) of update number ``step`` (1 for the first): the update is
        ``kernel(*arrays, grad_scale, *scalars)`` with every scalar in the parameters' dtype (Adam's bias
        corrections depend on ``step``). ``fastdl.compile_step`` fuses this call into its compiled step.
        Algorithms whose update is more than one kernel (LARS, LAMB) override ``_update`` instead."""
        raise NotImplementedError

    def hyperparameters(self):
        return {name: getattr(self, name) for name in self._hyperparameter_names}

    def to(self, backend_name):
        """Move the flat parameter buffers and every state array to another backend ("numpy", "cpu", "gpu"):
        ``model.to("gpu"); optimizer.to("gpu")`` continues training where it stopped."""
        from ..backend import _load

        backend = _load(backend_name)
        for group, state in zip(self.groups, self.state):
            if not isinstance(group.data, backend.array_type):
                group.to(backend)
            for name in state:
                state[name] = backend.asarray(state[name])
        return self

    def state_dict(self):
        """Copies of everything a resumed run needs to continue bit for bit: hyperparameters, step counts, state."""
        return {
            "algorithm": type(self).__name__,
            "hyperparameters": self.hyperparameters(),
            "skip_nonfinite": self.skip_nonfinite,
            "steps": self.steps,
            "skipped_steps": self.skipped_steps,
            "parameter_shapes": [list(shape) for group in self.groups for shape in group.shapes],
            "state": {f"{index}.{name}": np.array(to_numpy(array))
                      for index, state in enumerate(self.state) for name, array in state.items()},
        }

    def load_state_dict(self, state_dict):
        """Restore a ``state_dict``; everything is checked before anything changes."""
        owner = type(self).__name__
        required = ("algorithm", "parameter_shapes", "state", "hyperparameters", "skip_nonfinite", "steps",
                    "skipped_steps")
        missing = [key for key in required if key not in state_dict]
        if missing:
            raise ValueError(f"{owner}.load_state_dict: the state has no {', '.join(missing)}")
        if state_dict["algorithm"] != owner:
            raise ValueError(f"{owner}.load_state_dict: the state is from {state_dict['algorithm']!r}")
        shapes = [list(shape) for group in self.groups for shape in group.shapes]
        if [list(shape) for shape in state_dict["parameter_shapes"]] != shapes:
            raise ValueError(f"{owner}.load_state_dict: parameter shapes {state_dict['parameter_shapes']} "
                             f"do not match this optimizer's {shapes}")
        expected = {f"{index}.{name}": array for index, state in enumerate(self.state) for name, array in state.items()}
        arrays = state_dict["state"]
        if set(arrays) != set(expected):
            raise ValueError(f"{owner}.load_state_dict: state arrays {sorted(arrays)}, expected {sorted(expected)} "
                             "(were the options, e.g. amsgrad or momentum, different?)")
        for key, array in expected.items():
            if tuple(np.shape(arrays[key])) != array.shape:
                raise ValueError(f"{owner}.load_state_dict: {key} has shape {tuple(np.shape(arrays[key]))}, "
                                 f"expected {array.shape}")
            saved_dtype = np.asarray(to_numpy(arrays[key])).dtype
            if (saved_dtype == np.uint16) != (array.dtype == np.uint16):  # bfloat16 bits vs values: no conversion
                raise ValueError(f"{owner}.load_state_dict: {key} holds {saved_dtype}, expected {array.dtype} "
                                 "(was moments_dtype different?)")
        if set(state_dict["hyperparameters"]) != set(self._hyperparameter_names):
            raise ValueError(f"{owner}.load_state_dict: hyperparameters {sorted(state_dict['hyperparameters'])}, "
                             f"expected {sorted(self._hyperparameter_names)}")
        hyperparameters = {name: self._check_hyperparameter(name, value)
                           for name, value in state_dict["hyperparameters"].items()}
        counts = {key: _count(state_dict[key], owner, key) for key in ("steps", "skipped_steps")}
        skip_nonfinite = state_dict["skip_nonfinite"]
        if not isinstance(skip_nonfinite, (bool, np.bool_)) and skip_nonfinite not in (0, 1):
            raise ValueError(f"{owner}.load_state_dict: skip_nonfinite must be a bool, got {skip_nonfinite!r}")
        backend = get_backend()
        converted = {key: backend.asarray(arrays[key], dtype=array.dtype) for key, array in expected.items()}
        # everything is checked and converted: from here on nothing can fail halfway
        for key, array in expected.items():
            array[...] = converted[key]
        for name, value in hyperparameters.items():
            object.__setattr__(self, name, value)
        self.skip_nonfinite = bool(skip_nonfinite)
        self.steps = counts["steps"]
        self.skipped_steps = counts["skipped_steps"]

    def __repr__(self):
        settings = ", ".join(f"{name}={value!r}" for name, value in self.hyperparameters().items())
        return f"{type(self).__name__}({settings})"


def _count(value, owner, name):
    """A step count from a state dict: a non-negative integer (a 0-d integer array, as .npz files hold, too)."""
    if isinstance(value, (bool, np.bool_)) or np.ndim(value) != 0 or not np.issubdtype(np.asarray(value).dtype,
                                                                                           np.integer):
        raise ValueError(f"{owner}.load_state_dict: {name} must be a non-negative integer, got {value!r}")
    if int(value) < 0:
        raise ValueError(f"{owner}.load_state_dict: {name} must be a non-negative integer, got {int(value)}")
    return int(value)
