"""The Optimizer base: parameter groups, flat buffers, the optional norm pass (clipping, non-finite check), state dicts.

A step is one fused kernel call per dtype over the flat buffers (``groups``: one ``FlatParameters`` per dtype),
preceded by at most one reduction pass when something needs the gradient norm (``max_grad_norm``,
``skip_nonfinite``; LARS and LAMB need per-tensor norms anyway). Parameter groups (PyTorch's ``param_groups``) do
not split that call: the kernel gets one small row of hyperparameters per group and, per piece of the buffer, the
row of the group its tensor belongs to. Hyperparameters are checked when set and reach the kernels as numbers, so
changing ``lr`` between steps never recompiles anything.
"""

import inspect
import math
import struct

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


class _EditCount:
    """How many times any optimizer's hyperparameters or options were set in this process: code that keeps the
    update rows of many optimizers (``fastdl.tune.Population``) recomputes them only when it moved."""

    value = 0

    @classmethod
    def advance(cls):
        cls.value += 1


def hyperparameter_edits():
    """The number of hyperparameter edits so far (any optimizer, any parameter group); it only grows."""
    return _EditCount.value


# what an optimizer sets on itself as it steps: not an edit of its hyperparameters
_STEP_RECORDS = frozenset({"steps", "skipped_steps", "last_grad_norm"})


_NO_TABLE = (None, None)


class ParamGroup(dict):
    """One entry of ``optimizer.param_groups``: ``"params"`` (its Parameters) and the group's hyperparameters,
    which can be read and set between steps; each value is checked when set, as the optimizer's own are."""

    def __init__(self, optimizer, values):
        super().__init__(values)
        self._optimizer = optimizer

    def __setitem__(self, key, value):
        super().__setitem__(key, self._optimizer._check_group_value(key, value))
        _EditCount.advance()

    def update(self, *args, **kwargs):
        checked = {key: self._optimizer._check_group_value(key, value) for key, value in dict(*args, **kwargs).items()}
        super().update(checked)  # every value checked first: a bad one changes nothing
        _EditCount.advance()

    def __ior__(self, other):
        self.update(other)
        return self

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def __reduce__(self):
        # pickle and deepcopy: the values come back unchecked (they were checked when set), because the optimizer
        # that checks them is itself still being restored at that point
        return _restored_group, (dict(self),), self.__dict__


def _restored_group(values):
    group = ParamGroup.__new__(ParamGroup)
    dict.update(group, values)
    return group


def _refuse_unordered(params, owner):
    # a set's order changes between runs, and with it the flat buffer's layout: saved states would not load
    if isinstance(params, (set, frozenset)):
        raise TypeError(f"{owner}: parameters must come in an ordered collection (a list), not a set")


def _named(items, owner):
    """[(name or None, Parameter)] from Parameters or (name, Parameter) pairs."""
    from ..layers import Parameter  # the layers module imports nothing from here

    named = []
    for item in items:
        if isinstance(item, Parameter):
            named.append((None, item))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Parameter):
            named.append((str(item[0]), item[1]))
        else:
            raise TypeError(f"{owner}: expected fastdl Parameters (model.parameters()), (name, Parameter) pairs "
                            f"(model.named_parameters()) or parameter groups (dicts with 'params'), got "
                            f"{type(item).__name__}")
    return named


class Optimizer:
    """Base class. Subclasses set ``state_names(…)``, ``update_arrays(...)`` and ``group_scalars(...)``; see
    ``fastdl.optim.Adam`` for use.

    ``params`` is ``model.parameters()``, ``model.named_parameters()``, or a list of parameter groups in PyTorch's
    form, ``[{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]``: each group's keys override the
    optimizer's arguments for its parameters; ``optimizer.param_groups`` holds them (``"lr"``, ``"weight_decay"``,
    ... readable and settable between steps). ``optimizer.lr`` (or any other hyperparameter) reads the first
    group's value; setting it sets it in every group. Options that shape the state (``amsgrad``, ``nesterov``,
    ``centered``, ``moments_dtype``, ...) and ``max_grad_norm`` (a global norm) are the optimizer's, not a group's.

    Common options:
        max_grad_norm: clip the global gradient norm to this (``torch.nn.utils.clip_grad_norm_`` semantics:
            gradients scaled by min(1, max_grad_norm / (norm + 1e-6))), fused into the update.
        l1: L1 penalty; its subgradient ``l1 * sign(p)`` is added to the gradient in the update kernel (L2 is
            ``weight_decay``).
        skip_nonfinite: when the gradients hold NaN or Inf, leave parameters and state untouched for that step;
            ``step()`` then returns False and ``skipped_steps`` counts it.
        weight_decay_mask: which parameters get weight decay (optax's ``mask``): a callable of (name, parameter)
            returning True to decay (names come from ``model.named_parameters()``; None for bare parameters), or one
            boolean per parameter. The others get ``weight_decay`` 0. ``fastdl.optim.weight_decay_groups(model)``
            is the common split (no decay on biases and normalization parameters).
    """

    _group_names = ()  # the hyperparameters every parameter group carries, set per instance

    def __init__(self, params, hyperparameters, max_grad_norm=None, l1=0.0, skip_nonfinite=False,
                 weight_decay_mask=None):
        owner = type(self).__name__
        self.__dict__["_group_names"] = tuple(hyperparameters) + ("l1",)
        self.__dict__["_optimizer_options"] = self._construction_options()
        # Everything is checked before the parameters move into flat buffers: bad input changes nothing.
        self.defaults = {name: self._check_hyperparameter(name, value)
                         for name, value in {**hyperparameters, "l1": l1}.items()}
        self.max_grad_norm = max_grad_norm
        self.skip_nonfinite = bool(skip_nonfinite)
        groups = self._parse_groups(params, weight_decay_mask)
        parameters = [parameter for _, named in groups for _, parameter in named]
        backend = get_backend()
        for index, parameter in enumerate(parameters):
            if not isinstance(parameter.data, backend.array_type):
                raise TypeError(f"{owner}: parameter {index} {parameter!r} is a {type(parameter.data).__module__} "
                                f"array, not one of the active '{backend.name}' backend")
        self._check_parameters(parameters)
        self.param_groups = [ParamGroup(self, {**self.defaults, **settings,
                                               "params": [parameter for _, parameter in named]})
                             for settings, named in groups]
        self._check_groups()

        by_dtype = {}
        for parameter in parameters:
            by_dtype.setdefault(parameter.dtype, []).append(parameter)
        self.groups = [FlatParameters.of(flat, backend.xp) for flat in by_dtype.values()]
        group_of = {id(parameter): index for index, group in enumerate(self.param_groups)
                    for parameter in group["params"]}
        # per flat buffer: the parameter group of each tensor, and of each piece (what the update kernels index)
        self.segment_groups = [np.array([group_of[id(parameter)] for parameter in flat.parameters], np.int64)
                               for flat in self.groups]
        self.piece_groups = [segments[flat.norms.piece_segments]
                             for flat, segments in zip(self.groups, self.segment_groups)]
        self._hyper_tables = {}  # per update kernel: its hyperparameter rows, one per group, rewritten each step
        self.state = [{name: backend.xp.full(flat.size, fill, dtype=self.state_dtype(name, flat))
                       for name, fill in self.state_names().items()} for flat in self.groups]
        self.steps = 0
        self.skipped_steps = 0
        self.last_grad_norm = None

    # -- parameter groups -------------------------------------------------------------------------------------------
    def _construction_options(self):
        """Arguments of this class that shape the optimizer as a whole: a group cannot set them."""
        names = set()
        for cls in type(self).__mro__:
            if "__init__" in vars(cls):
                names |= set(inspect.signature(cls.__init__).parameters)
        return names - set(self._group_names) - {"self", "params", "options", "hyperparameters"}

    def _parse_groups(self, params, weight_decay_mask):
        """[(overrides, [(name, Parameter)])] from the ``params`` argument, each parameter in one group only."""
        owner = type(self).__name__
        from ..layers import Parameter  # the layers module imports nothing from here

        if isinstance(params, dict):
            params = [params]
        _refuse_unordered(params, owner)
        items = list(params)
        if not items:
            raise ValueError(f"{owner}: got an empty parameter list")
        if all(isinstance(item, dict) for item in items):
            groups = []
            for index, group in enumerate(items):
                if "params" not in group:
                    raise ValueError(f"{owner}: parameter group {index} has no 'params'")
                members = group["params"]
                _refuse_unordered(members, owner)
                members = [members] if isinstance(members, Parameter) else list(members)
                overrides = {key: value for key, value in group.items() if key != "params"}
                fixed = sorted(set(overrides) & self._optimizer_options)
                if fixed:
                    raise ValueError(f"{owner}: parameter group {index} sets {', '.join(fixed)}, which apply to the "
                                     "whole optimizer; pass them to the optimizer instead")
                overrides = {key: self._check_group_value(key, value) for key, value in overrides.items()}
                named = _named(members, owner)
                if not named:
                    raise ValueError(f"{owner}: parameter group {index} has no parameters")
                groups.append((overrides, named))
        elif any(isinstance(item, dict) for item in items):
            raise TypeError(f"{owner}: params mixes parameter groups (dicts) with parameters")
        else:
            groups = [({}, _named(items, owner))]
        seen = {}
        for index, (_, named) in enumerate(groups):
            unique = []
            for name, parameter in named:
                if id(parameter) in seen:
                    if seen[id(parameter)] != index:
                        raise ValueError(f"{owner}: parameter {name or parameter!r} appears in parameter groups "
                                         f"{seen[id(parameter)]} and {index}")
                    continue
                seen[id(parameter)] = index
                unique.append((name, parameter))
            named[:] = unique
        if weight_decay_mask is not None:
            groups = self._mask_weight_decay(groups, weight_decay_mask)
        return groups

    def _mask_weight_decay(self, groups, mask):
        owner = type(self).__name__
        if "weight_decay" not in self._group_names:
            raise ValueError(f"{owner}: weight_decay_mask needs an optimizer with weight_decay")
        named = [pair for _, members in groups for pair in members]
        if callable(mask):
            decays = [bool(mask(name, parameter)) for name, parameter in named]
        else:
            decays = list(mask)
            if len(decays) != len(named) or not all(isinstance(d, (bool, np.bool_)) for d in decays):
                raise ValueError(f"{owner}: weight_decay_mask must be a callable or {len(named)} booleans (one per "
                                 f"parameter), got {len(decays)} values")
        decay_of = {id(parameter): bool(decay) for (_, parameter), decay in zip(named, decays)}
        split = []
        for overrides, members in groups:
            decayed = [pair for pair in members if decay_of[id(pair[1])]]
            kept = [pair for pair in members if not decay_of[id(pair[1])]]
            if decayed:
                split.append((overrides, decayed))
            if kept:
                split.append(({**overrides, "weight_decay": 0.0}, kept))
        return split

    def _check_group_value(self, key, value):
        owner = type(self).__name__
        if key == "params":
            raise ValueError(f"{owner}: a parameter group's params cannot change (build a new optimizer)")
        if key in self._group_names:
            return self._check_hyperparameter(key, value)
        if key in self._optimizer_options:
            raise ValueError(f"{owner}: {key} applies to the whole optimizer, not to one parameter group")
        return value  # other keys (a name, PyTorch's initial_lr) are kept as given, as PyTorch does

    def _check_groups(self):
        """Checks across a group's hyperparameters once the groups exist; subclasses extend."""

    def __getattr__(self, name):
        # only called when normal lookup fails: a hyperparameter reads the first group's value
        if name in self.__dict__.get("_group_names", ()):
            groups = self.__dict__.get("param_groups")
            if groups:
                return groups[0][name]
            return self.__dict__["defaults"][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name in _STEP_RECORDS:  # set by every step: first, and nothing more to do
            object.__setattr__(self, name, value)
            return
        if name == "max_grad_norm":
            value = None if value is None else check_number(type(self).__name__, name, value, low=0, low_open=True)
        elif name in self._group_names:
            value = self._check_hyperparameter(name, value)
            self.defaults[name] = value
            for group in self.__dict__.get("param_groups", ()):
                group[name] = value
            return
        object.__setattr__(self, name, value)
        if not name.startswith("_"):  # an option (max_grad_norm, nesterov, ...); the step records returned above
            _EditCount.advance()

    def _check_hyperparameter(self, name, value):
        owner = type(self).__name__
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
        """The dtype of state array ``name`` of a flat buffer: the parameters' own, unless an algorithm stores it
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

    def check_ready(self, backend):
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

    def step(self, grad_scale=1.0):
        """One update of every parameter from its ``.grad``. Returns False if skipped (``skip_nonfinite``).

        ``grad_scale`` multiplies the gradients before anything reads them (the norm, clipping, the update), inside
        the update kernel: gradient accumulation's 1 / (samples accumulated) costs no pass of its own."""
        backend = get_backend()
        self.check_ready(backend)
        if grad_scale != 1.0:
            grad_scale = check_number(type(self).__name__, "grad_scale", grad_scale, low=0, low_open=True)
        norm = None
        if self.max_grad_norm is not None or self.skip_nonfinite:
            norm = math.sqrt(self._grad_square_sum(backend.kernels)) * grad_scale
            if self.skip_nonfinite and not math.isfinite(norm):
                self.count_step(norm, skipped=True)
                return False
            if self.max_grad_norm is not None:
                grad_scale = grad_scale * clip_scale(norm, self.max_grad_norm)
        self.count_step(norm)
        for group, state in zip(self.groups, self.state):
            self._update(backend.kernels, group, state, group.dtype.type, grad_scale)
        return True

    def count_step(self, grad_norm=None, skipped=False):
        """Record one step: its gradient norm (when measured, for clipping or skipping) and whether it was skipped.
        ``step`` and ``compile_step`` (whose kernel ran the update) both call it."""
        if grad_norm is not None:
            self.last_grad_norm = grad_norm
        if skipped:
            self.skipped_steps += 1
        else:
            self.steps += 1

    def _update(self, kernels, group, state, T, grad_scale):
        """One flat buffer's update; the default runs the single kernel ``update_call`` describes."""
        name, arrays, tail = self.update_call(group, state, self.steps)
        getattr(kernels, name)(*arrays, T(grad_scale), *tail)

    def update_call(self, group, state, step):
        """(kernel name, arrays, (hyper, piece_bounds, piece_groups)) of update number ``step`` (1 for the first) of
        flat buffer ``group``: the update is ``kernel(*arrays, grad_scale, hyper, piece_bounds, piece_groups)``,
        ``hyper`` holding one row of ``group_scalars`` per parameter group (Adam's bias corrections depend on
        ``step``). ``fastdl.compile_step`` fuses this call into its compiled step. Algorithms whose update is more
        than one kernel (LARS, LAMB) override ``_update`` instead."""
        name, arrays = self.update_arrays(group, state)
        piece_groups = self.piece_groups[0] if group is self.groups[0] else self.piece_groups[self.groups.index(group)]
        return name, arrays, (self.hyper_rows(name, step), group.norms.piece_bounds, piece_groups)

    def update_arrays(self, group, state):
        """(kernel name, the arrays it updates) for a flat buffer."""
        raise NotImplementedError

    def group_scalars(self, group, step):
        """The hyperparameter columns of the update kernel (``kernels.ops.HYPER_COLUMNS``) for one parameter group
        (a ``param_groups`` entry) at update number ``step``."""
        raise NotImplementedError

    # group_scalars of many optimizers of one algorithm at once, for populations: ``stacked_scalars(values, steps)``
    # with values[name] the hyperparameter ``name`` of every member's every group, shape (members, groups) (and a
    # trailing axis for a tuple, betas), and steps (members,), returns (members, groups, columns), row [k, g] equal
    # bit for bit to member k's group_scalars(group g, steps[k]). None: the algorithm has no such form. The options
    # group_scalars reads besides the groups' (SGD's nesterov) are in ``values`` too, named in ``row_options``.
    stacked_scalars = None
    row_options = ()

    def hyper_rows(self, name, step):
        """The float64 table (one row per parameter group) the update kernel ``name`` reads at update ``step``;
        the same array every step, rewritten in place."""
        groups = self.param_groups
        values = (self.group_scalars(groups[0], step) if len(groups) == 1
                  else [value for group in groups for value in self.group_scalars(group, step)])
        table, layout = self._hyper_tables.get(name, _NO_TABLE)
        if table is None or table.size != len(values) or table.shape[0] != len(groups):
            table = np.empty((len(groups), len(values) // len(groups)))
            layout = f"{table.size}d"
            self._hyper_tables[name] = table, layout
        # packed straight into the array's memory: several times faster than numpy's assignment from tuples, which
        # matters for small models, where the whole update takes a few microseconds
        struct.pack_into(layout, table, 0, *values)
        return table

    def hyperparameters(self):
        """The first parameter group's hyperparameters and ``max_grad_norm`` (``param_groups`` holds every group's)."""
        return {**{name: self.param_groups[0][name] for name in self._group_names}, "max_grad_norm": self.max_grad_norm}

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
            "param_groups": self._group_settings(),
            "state": {f"{index}.{name}": np.array(to_numpy(array))
                      for index, state in enumerate(self.state) for name, array in state.items()},
        }

    def _group_settings(self):
        """Each parameter group's hyperparameters and the indices of its parameters (in ``self.parameters`` order)."""
        index_of = {id(parameter): index for index, parameter in enumerate(self.parameters)}
        return [{**{name: group[name] for name in self._group_names},
                 "params": [index_of[id(parameter)] for parameter in group["params"]]} for group in self.param_groups]

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
        expected_names = set(self._group_names) | {"max_grad_norm"}
        if set(state_dict["hyperparameters"]) != expected_names:
            raise ValueError(f"{owner}.load_state_dict: hyperparameters {sorted(state_dict['hyperparameters'])}, "
                             f"expected {sorted(expected_names)}")
        saved = dict(state_dict["hyperparameters"])
        max_grad_norm = saved.pop("max_grad_norm")
        if max_grad_norm is not None:
            max_grad_norm = check_number(owner, "max_grad_norm", max_grad_norm, low=0, low_open=True)
        # a state saved before parameter groups existed holds one set of hyperparameters, for every group
        groups = state_dict.get("param_groups") or [{**saved, "params": settings["params"]}
                                                    for settings in self._group_settings()]
        if [list(group.get("params", ())) for group in groups] != [s["params"] for s in self._group_settings()]:
            raise ValueError(f"{owner}.load_state_dict: the state's parameter groups "
                             f"{[list(group.get('params', ())) for group in groups]} (parameter indices) differ from "
                             f"this optimizer's {[s['params'] for s in self._group_settings()]}")
        group_values = []
        for group in groups:
            if set(group) - {"params"} != set(self._group_names):
                raise ValueError(f"{owner}.load_state_dict: a parameter group holds {sorted(set(group) - {'params'})}, "
                                 f"expected {sorted(self._group_names)}")
            group_values.append({name: self._check_hyperparameter(name, group[name]) for name in self._group_names})
        counts = {key: _count(state_dict[key], owner, key) for key in ("steps", "skipped_steps")}
        skip_nonfinite = state_dict["skip_nonfinite"]
        if not isinstance(skip_nonfinite, (bool, np.bool_)) and skip_nonfinite not in (0, 1):
            raise ValueError(f"{owner}.load_state_dict: skip_nonfinite must be a bool, got {skip_nonfinite!r}")
        backend = get_backend()
        converted = {key: backend.asarray(arrays[key], dtype=array.dtype) for key, array in expected.items()}
        # everything is checked and converted: from here on nothing can fail halfway
        for key, array in expected.items():
            array[...] = converted[key]
        for group, values in zip(self.param_groups, group_values):
            dict.update(group, values)  # checked above; the settings below count as the edit
        self.defaults.update({name: self._check_hyperparameter(name, value) for name, value in saved.items()})
        self.max_grad_norm = max_grad_norm
        self.skip_nonfinite = bool(skip_nonfinite)
        self.steps = counts["steps"]
        self.skipped_steps = counts["skipped_steps"]

    def __repr__(self):
        settings = ", ".join(f"{name}={value!r}" for name, value in self.hyperparameters().items())
        if len(self.param_groups) == 1:
            return f"{type(self).__name__}({settings})"
        lines = [f"{type(self).__name__}(max_grad_norm={self.max_grad_norm!r}"]
        for index, group in enumerate(self.param_groups):
            values = ", ".join(f"{name}={group[name]!r}" for name in self._group_names)
            lines.append(f"  group {index} ({len(group['params'])} parameters): {values}")
        return "\n".join(lines) + ")"


def _count(value, owner, name):
    """A step count from a state dict: a non-negative integer (a 0-d integer array, as .npz files hold, too)."""
    if isinstance(value, (bool, np.bool_)) or np.ndim(value) != 0 or not np.issubdtype(np.asarray(value).dtype,
                                                                                           np.integer):
        raise ValueError(f"{owner}.load_state_dict: {name} must be a non-negative integer, got {value!r}")
    if int(value) < 0:
        raise ValueError(f"{owner}.load_state_dict: {name} must be a non-negative integer, got {int(value)}")
    return int(value)
