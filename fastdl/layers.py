"""The thin layer API: Parameter, Module, Dense, Activation, PReLU, APL, SoftExponential, Sequential.

Layers check their inputs, own their workspaces and call the active backend's kernels; they hold no maths.
Outputs are the layer's workspaces: ``forward`` returns an array that the next ``forward`` overwrites (the
hot path allocates nothing), so copy it if you keep it. ``backward`` uses what the last ``forward`` saw.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from . import _checks
from . import finite_checks
from . import threads
from . import init as initializers
from ._typing import Array, DType
from .activations import ActivationSpec, resolve
from .backend import get_backend, to_numpy
from .seeding import default_seed


class Parameter:
    """A learnable array ``data`` and its gradient ``grad`` (same shape and dtype).

    ``data`` and ``grad`` are fixed arrays: kernels write into them and assigning to either copies the values
    in (after checking shape and dtype), so an optimizer can turn both into views of one flat buffer once and
    they stay its views.
    """

    def __init__(self, data):
        self._data = data
        self._grad = np.zeros_like(data)  # a CuPy array gets CuPy zeros (NumPy dispatches on the type)
        self._flat = None  # the FlatParameters whose buffers hold data and grad, once an optimizer takes them

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, values):
        self._assign(self._data, values, "data")

    @property
    def grad(self):
        return self._grad

    @grad.setter
    def grad(self, values):
        self._assign(self._grad, values, "grad")

    def _assign(self, target, values, name):
        if values is target:
            return  # ``p.data -= step`` already updated in place; Python's assignment back must not copy it again
        if values is None:
            raise TypeError(f"{self!r}: {name} cannot be set to None; zero it with zero_grad()")
        shape = tuple(getattr(values, "shape", np.shape(values)))
        if shape != target.shape:
            raise ValueError(f"{self!r}: cannot assign {name} of shape {shape} to a parameter of shape {target.shape}")
        dtype = getattr(values, "dtype", None)
        if dtype is not None and dtype != target.dtype:
            raise TypeError(f"{self!r}: cannot assign {name} of dtype {dtype} to a {target.dtype} parameter")
        target[...] = values

    def _bind(self, data_view, grad_view, flat):
        """Move into an optimizer's flat buffers (the views already hold the values)."""
        self._data, self._grad, self._flat = data_view, grad_view, flat

    def __setstate__(self, state):
        # pickle and deepcopy turn views into copies: a parameter of an optimizer's flat buffers becomes a view of
        # the restored buffers again (here, or by the buffers' own __setstate__ if they are restored after it)
        self.__dict__.update(state)
        if self._flat is not None and self._flat.restored:
            self._flat.rebind(self)

    @property
    def shape(self):
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype

    def __repr__(self):
        return f"Parameter(shape={self._data.shape}, dtype={self._data.dtype})"


class Module:
    """Base class: ``forward``/``__call__``, ``backward``, parameters, train/eval, state dicts."""

    training = True

    def __call__(self, x: Array) -> Array:
        if type(x) is not np.ndarray:  # another library's tensor (PyTorch, JAX) is read in place through DLPack
            x = _checks.from_dlpack(x, self, "x")
        return self.forward(x)

    def forward(self, x: Array) -> Array:
        raise NotImplementedError

    def backward(self, grad_out: Array, accumulate: bool = False, input_grad: bool = True) -> Array | None:
        """dL/d(input) from dL/d(output); writes (or, with ``accumulate``, adds) the parameter gradients."""
        raise NotImplementedError

    def __repr__(self):
        """The layer's name (its kind and settings), as in ``print(model)``; layers with more to say override it."""
        name = getattr(self, "name", None)
        return name if isinstance(name, str) else f"{type(self).__name__}()"

    def __getstate__(self):
        """Pickling and ``copy.deepcopy`` leave a layer's bound kernels behind (functions over its arrays: Dense's and
        BatchNorm's bindings); the copy binds its own on its first call."""
        state = dict(self.__dict__)
        state.pop("_binding", None)
        if state.get("_forward_bound_to") is not None:
            state["_forward_bound_to"] = None
        return state

    def undo_forward(self):
        """Put back the state the last forward changed (random counters, running statistics): a container calls
        it on the layers that ran when a later one refuses the batch, so a refused call changes nothing."""

    def children(self):
        return []

    def modules(self):
        yield self
        for child in self.children():
            yield from child.modules()

    def named_parameters(self, prefix=""):
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for index, child in enumerate(self.children()):
            yield from child.named_parameters(f"{prefix}{index}.")

    def parameters(self):
        return [parameter for _, parameter in self.named_parameters()]

    # Names of non-learnable arrays saved with the state (running statistics, fitted means).
    state_buffers = ()

    def named_buffers(self, prefix=""):
        for name in self.state_buffers:
            yield prefix + name, getattr(self, name)
        for index, child in enumerate(self.children()):
            yield from child.named_buffers(f"{prefix}{index}.")

    def train(self, mode=True):
        for module in self.modules():
            module.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def set_compute_dtype(self, compute_dtype: str) -> Module:
        """Every ``Dense`` inside multiplies in ``compute_dtype``: "bfloat16" (GEMM operands rounded to bfloat16,
        float32 accumulation; parameters, gradients and the optimizer's state stay float32) or "float32"; returns
        the module. Checked for every layer before any changes."""
        dense_layers = [module for module in self.modules() if isinstance(module, Dense)]
        for layer in dense_layers:
            _check_compute_dtype(compute_dtype, layer)
        for layer in dense_layers:
            layer.compute_dtype = compute_dtype
        return self

    def zero_grad(self):
        for parameter in self.parameters():
            parameter.grad[...] = 0

    def to(self, backend_name):
        """Move parameters, gradients, buffers (running statistics) and constants to another backend ("numpy",
        "cpu", "gpu"); returns the module. Parameters that an optimizer holds in a flat buffer move with the whole
        buffer (call ``optimizer.to`` too, for its state). Saved activations and workspaces are dropped: the next
        backward needs a new forward. Use it with the target backend active (``fastdl.set_backend``)."""
        from .backend import _load

        backend = _load(backend_name)
        flats = []
        for parameter in self.parameters():
            if parameter._flat is not None:
                if all(parameter._flat is not flat for flat in flats):
                    flats.append(parameter._flat)
            else:
                parameter._data, parameter._grad = backend.asarray(parameter._data), backend.asarray(parameter._grad)
        for flat in flats:
            if not isinstance(flat.data, backend.array_type):
                flat.to(backend)
        for module in self.modules():
            for name, value in list(vars(module).items()):
                if name == "_buffers":
                    value.clear()
                elif _is_array(value) and name.startswith("_forward"):
                    setattr(module, name, None)
                elif _is_array(value) and not isinstance(value, backend.array_type):
                    setattr(module, name, backend.asarray(value))
        return self

    def state_dict(self):
        """Copies of every parameter's values and buffer, by dotted name (``"0.weight"``, ``"1.running_mean"``)."""
        state = {name: np.array(to_numpy(p.data)) for name, p in self.named_parameters()}
        state.update({name: np.array(to_numpy(b)) for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state):
        """Copy values in place (views into flat buffers stay valid); all names and shapes are checked first."""
        named = {name: p.data for name, p in self.named_parameters()}
        named.update(self.named_buffers())
        missing, unexpected = set(named) - set(state), set(state) - set(named)
        if missing or unexpected:
            raise ValueError(f"{type(self).__name__}.load_state_dict: missing {sorted(missing)}, "
                             f"unexpected {sorted(unexpected)}")
        for name, array in named.items():
            if tuple(np.shape(state[name])) != array.shape:
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: {name} has shape {tuple(np.shape(state[name]))}, "
                    f"the model's is {array.shape}"
                )
        converted = {name: get_backend().asarray(state[name], dtype=array.dtype) for name, array in named.items()}
        for name, array in named.items():
            array[...] = converted[name]

    def summary(self, in_features=None, print_fn=None):
        """A table of the layers with their output shapes and parameter counts, as a string; ``print_fn`` (Keras's
        argument: ``model.summary(print_fn=print)``) is also called with it.

        Output shapes come from one forward pass of a zero sample in eval mode (the modes are restored);
        ``in_features`` is needed only when the first layer does not declare it.
        """
        layers = list(self.children()) or [self]
        first = layers[0]
        in_features = in_features or getattr(first, "in_features", None) or getattr(first, "num_features", None)
        if in_features is None:
            raise ValueError(f"{type(self).__name__}.summary: pass in_features (the first layer does not declare it)")
        dtype = next((p.dtype for p in self.parameters()), np.dtype("float32"))
        modes = [module.training for module in self.modules()]
        self.eval()
        rows, x = [], get_backend().xp.zeros((1, in_features), dtype=dtype)
        try:
            for index, layer in enumerate(layers):
                x = layer(x)
                count = sum(int(p.data.size) for p in layer.parameters())
                rows.append((f"({index}) {getattr(layer, 'name', type(layer).__name__)}", f"(N, {x.shape[1]})", count))
        finally:
            for module, mode in zip(self.modules(), modes):
                module.training = mode
        width = max(len(row[0]) for row in rows) + 2
        lines = [f"{'layer':<{width}}{'output':<14}{'parameters':>12}"]
        lines += [f"{name:<{width}}{shape:<14}{count:>12,}" for name, shape, count in rows]
        lines.append(f"{'total':<{width}}{'':<14}{sum(row[2] for row in rows):>12,}")
        table = "\n".join(lines)
        if print_fn is not None:
            print_fn(table)
        return table

    def _workspace(self, key, shape, dtype):
        """A buffer kept between calls, reallocated only when the shape changes."""
        buffers = self.__dict__.setdefault("_buffers", {})
        buffer = buffers.get(key)
        if buffer is None or buffer.shape != shape or buffer.dtype != dtype:
            buffer = get_backend().empty(shape, dtype)
            buffers[key] = buffer
        return buffer

    def _saved(self, owner):
        saved = getattr(self, "_forward_input", None)
        if saved is None:
            raise RuntimeError(f"{_checks.label(owner)}: backward called before forward "
                               "(or after a forward that failed)")
        return saved

    def _begin_backward(self, grad_out, dtype):
        """(saved input, checked contiguous grad_out, grad_x workspace) for layers whose output has the input's
        shape."""
        x = self._saved(self.name)
        grad_out = self._check_grad_out(grad_out, self.name, x.shape, dtype)
        return x, grad_out, self._workspace("grad_x", x.shape, dtype)

    def _check_grad_out(self, grad_out, owner, expected_shape, dtype):
        grad_out = _checks.from_dlpack(grad_out, owner, "grad_out")
        _checks.array(grad_out, owner, "grad_out", dtype=dtype)
        if grad_out.shape != expected_shape:
            raise ValueError(f"{_checks.label(owner)}: grad_out has shape {tuple(grad_out.shape)}, the forward output "
                             f"had {expected_shape}")
        return grad_out if grad_out.flags.c_contiguous else get_backend().xp.ascontiguousarray(grad_out)


def _is_array(value):
    return isinstance(value, np.ndarray) or type(value).__module__.startswith("cupy")


def _refuse_nonfinite(layer, x):
    """A layer's refusal of x with NaN or Inf (its flag may be read after the layer ran: nothing is left to
    differentiate)."""
    layer._forward_input = None
    raise ValueError(f"{_checks.label(layer)}: x contains NaN or Inf (shape {tuple(x.shape)})")


class _RandomCounter:
    """Randomized layers draw from (seed, counter): each training forward advances the counter."""

    def _init_random(self, seed):
        self.seed = default_seed(seed, type(self).__name__)
        self.counter = 0
        self._forward_counted = False  # whether the last forward advanced the counter

    def undo_forward(self):
        if self._forward_counted:
            self.counter -= 1
            self._forward_counted = False


DROPOUT_STREAM = 0x5851F42D4C957F2D  # xor-ed into a Dense layer's seed for its dropout mask
COMPUTE_DTYPES = ("float32", "bfloat16")


class BFloat16Notice(UserWarning):
    """bfloat16 compute runs with bfloat16's numerics but through the float32 GEMM, so it is not faster (no bfloat16
    GEMM provider, or a backend without one)."""


def _check_compute_dtype(compute_dtype, layer):
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"{_checks.label(layer)}: compute_dtype must be one of {COMPUTE_DTYPES}, got "
                         f"{compute_dtype!r}")
    if compute_dtype == "bfloat16" and np.dtype(layer.dtype) != np.float32:
        raise ValueError(f"{_checks.label(layer)}: compute_dtype='bfloat16' needs float32 parameters, the layer's "
                         f"are {np.dtype(layer.dtype).name}")
    if compute_dtype == "bfloat16":
        _notice_bfloat16()


_noticed = []


def _notice_bfloat16():
    from .kernels.cpu import bfloat16_gemm
    from .kernels.cuda import gemm as cuda_gemm

    backend = get_backend().name
    if (backend == "cpu" and bfloat16_gemm.AVAILABLE) or backend == "cuda-emulator" or (
            backend == "gpu" and cuda_gemm.device_has_bfloat16()):  # the emulator plays a device that has one
        return
    if not _noticed:  # once per process
        _noticed.append(True)
        import warnings

        warnings.warn("fastdl: bfloat16 compute rounds the GEMM operands to bfloat16 and multiplies them with the "
                      "float32 GEMM (no bfloat16 GEMM here: on the CPU, pip install the 'onednn' extra on x86-64 "
                      "Linux; on a GPU, it needs compute capability 8.0 or newer): bfloat16's numerics, not its "
                      "speed", BFloat16Notice, stacklevel=4)


class Dense(_RandomCounter, Module):
    """y = act(x @ weight + bias), with the activation fused into the layer's kernels.

    Args:
        in_features, out_features: sizes; ``weight`` has shape (in_features, out_features), ``bias`` (out,).
        activation: a name from ``fastdl.activations`` or an ``fastdl.Activation`` (for constants, e.g.
            ``fastdl.Activation("leaky_relu", alpha=0.2)``); None is "identity".
        bias: learn a bias (initialized to zero).
        init: initializer name or function; default He (Kaiming) uniform for ReLU-like activations,
            Xavier (Glorot) uniform otherwise.
        seed: makes the initialization (and RReLU's draws) reproducible.
        dropout: inverted dropout on the output in training, fused into the same pass as bias and activation
            (forward) and activation gradient (backward). The mask is exactly the one
            ``Dropout(p, seed=layer.dropout_seed)`` placed after the layer would draw, so both spellings train
            identically; it is stored as bytes.
        dtype: "float32" or "float64".
        compute_dtype: "float32", or "bfloat16": the GEMMs take x, the weight and the backward's dZ rounded to
            the nearest bfloat16 (ties to even) and accumulate in float32, as a bfloat16 GEMM does (PyTorch's
            autocast); the bias, the activation and every gradient's other arithmetic stay float32, as do the
            parameters, gradients and the optimizer's state. On the cpu backend the products run as bfloat16 GEMMs
            where oneDNN is installed (``fastdl.blas_info()``). ``Module.set_compute_dtype`` switches a model.

    >>> layer = Dense(4, 3, activation="relu", seed=0)
    >>> y = layer(np.ones((2, 4), dtype=np.float32))
    """

    _forward_bound_to = None  # the binding whose forward ran last; None after the general path's

    def __init__(self, in_features: int, out_features: int, activation: str | Activation = "identity",
                 bias: bool = True, init: str | Callable | None = None, seed: int | None = None,
                 dtype: DType = "float32", dropout: float = 0.0, compute_dtype: str = "float32"):
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"Dense: dropout must lie in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.in_features = _checks.positive_int(in_features, "Dense", "in_features")
        self.out_features = _checks.positive_int(out_features, "Dense", "out_features")
        self.dtype = _checks.float_dtype(dtype, "Dense")
        _check_compute_dtype(compute_dtype, self)
        self.compute_dtype = compute_dtype
        self.activation = resolve(activation)
        if init is None:
            init = "kaiming_uniform" if self.activation.relu_like else "xavier_uniform"
        # one seed for the weights and the layer's random streams, as an explicit one
        seed = default_seed(seed, "Dense")
        rng = np.random.default_rng(seed)
        shape = (self.in_features, self.out_features)
        self.weight = Parameter(get_backend().asarray(initializers.get(init)(shape, seed=rng, dtype=self.dtype)))
        self.bias = Parameter(get_backend().xp.zeros(self.out_features, dtype=self.dtype)) if bias else None
        self._no_bias = get_backend().xp.zeros(0, dtype=self.dtype)
        self._init_random(seed)

    def bias_arrays(self):
        """(bias, its gradient) as the kernels take them: two empty arrays for a layer without a bias."""
        if self.bias is None:
            return self._no_bias, self._no_bias
        return self.bias.data, self.bias.grad

    @property
    def dropout_seed(self):
        """The seed of this layer's dropout mask: a stream apart from the activation's (RReLU) draws."""
        return self.seed ^ DROPOUT_STREAM

    @property
    def name(self):
        dropout = f", dropout={self.dropout}" if self.dropout else ""
        compute = ", bfloat16" if self.compute_dtype == "bfloat16" else ""
        return f"Dense({self.in_features}->{self.out_features}, {self.activation.name}{dropout}{compute})"

    def forward(self, x):
        binding = self.__dict__.get("_binding")
        if binding is not None and binding.accepts(self, x):  # the checks below passed for this x already
            return self._forward_bound(binding, x)
        backend = _checks.array(x, self, "x", ndim=2, dtype=self.dtype, last_dim=self.in_features)
        batch = x.shape[0]
        y = self._workspace("y", (batch, self.out_features), self.dtype)
        z = self._workspace("z", y.shape, self.dtype) if self.activation.needs_preactivation else y
        if self.compute_dtype == "float32" and not (self.training and self.dropout > 0):
            if not x.flags.c_contiguous:  # a copy: the binding may still fit it (a strided batch each call)
                x = backend.xp.ascontiguousarray(x)
            if binding is None or not binding.accepts(self, x):
                binding = self._binding = _DenseBinding(self, backend, x, z, y)
            return self._forward_bound(binding, x)
        self._binding = None
        counter = self.counter + 1 if self.training else self.counter  # taken only once the forward succeeded
        activation = self.activation.for_kernels(self.dtype, self.training, self.seed, counter)
        bias = self.bias_arrays()[0]
        self._forward_dropout = self.training and self.dropout > 0
        input_, weight = x, self.weight.data
        if self.compute_dtype == "bfloat16":  # the GEMM's operands rounded (NaN and Inf stay what they are)
            input_, weight = self._workspace("x_bfloat16", x.shape, self.dtype), self._workspace(
                "weight_bfloat16", weight.shape, self.dtype)
            if self._forward_dropout:  # without dropout, the bfloat16 forward rounds them itself
                backend.kernels.round_bfloat16(x, input_)
                backend.kernels.round_bfloat16(self.weight.data, weight)
        if self._forward_dropout:
            # y is the dropped output; the activation's output a is kept for the backward (sigmoid' uses it)
            a = self._workspace("a", y.shape, self.dtype)
            z = z if self.activation.needs_preactivation else a
            mask = self._workspace("mask", y.shape, np.uint8)
            finite = backend.kernels.dense_dropout_forward(input_, weight, bias, activation, self.dropout,
                                                           self.dropout_seed, z, a, mask, y)
            self._forward_a = a
        else:  # bfloat16: the rounded operands (or their bit patterns) are left for the backward
            finite = backend.kernels.dense_forward_bfloat16(x, self.weight.data, bias, activation, z, y, input_,
                                                            weight, *self._bfloat16_bits(x.shape[0]))
            self._forward_a = y
        if finite is not True:  # a bool True (the CPU's answer) needs nothing more
            finite_checks.check(finite, self._refuse, x, backend)
        self.counter = counter
        self._forward_input, self._forward_z, self._forward_y = x, z, y
        self._forward_operands = (input_, weight)  # what the backward's products take
        self._forward_compute = self.compute_dtype
        self._forward_training = self._forward_counted = self.training
        self._forward_bound_to = None
        return y

    def _forward_bound(self, binding, x):
        """The float32 forward without dropout through the layer's bound kernel (see _DenseBinding)."""
        training = binding.training  # the layer's mode, as accepts checked
        counter = self.counter + 1 if training else self.counter  # taken only once the forward succeeded
        finite = binding.forward(x, counter)
        if finite is not True:  # a bool True (the CPU's answer) needs nothing more
            finite_checks.check(finite, self._refuse, x, binding.backend)
        self.counter = counter
        if self._forward_bound_to is not binding:  # what the backward reads besides x is the binding's, call after call
            self._forward_z, self._forward_y, self._forward_a = binding.z, binding.y, binding.y
            self._forward_operands = None  # read by the bfloat16 backward only
            self._forward_compute, self._forward_dropout, self._forward_training = "float32", False, training
            self._forward_bound_to = binding
        self._forward_input, self._forward_counted = x, training
        return binding.y

    def _refuse(self, x, backend):
        """NaN or Inf in x shows in the product the kernel read; x itself is scanned only then (a product that
        overflowed from finite x is returned as it is)."""
        if not backend.kernels.all_finite(x):
            self._forward_input = None  # the workspaces hold this refused forward now
            raise ValueError(f"{_checks.label(self)}: x contains NaN or Inf (shape {tuple(x.shape)})")

    def backward(self, grad_out, accumulate=False, input_grad=True):
        x = self._saved(self)
        binding = self._forward_bound_to
        if binding is not None and binding.accepts_grad(self, grad_out):
            binding.backward(x, grad_out, self.counter, input_grad, bool(accumulate))
            return binding.grad_x if input_grad else None
        grad_out = self._check_grad_out(grad_out, self, self._forward_y.shape, self.dtype)
        grad_z = self._workspace("grad_z", grad_out.shape, self.dtype)
        grad_x = self._workspace("grad_x", x.shape, self.dtype) if input_grad else None
        activation = self.activation.for_kernels(self.dtype, self._forward_training, self.seed, self.counter)
        grad_bias = self.bias_arrays()[1]
        kernels = get_backend().kernels
        if self._forward_compute == "bfloat16":
            self._backward_bfloat16(kernels, grad_out, activation, grad_z, grad_bias, grad_x, accumulate)
            return grad_x
        if self._forward_dropout:
            kernels.dense_dropout_backward(x, self.weight.data, grad_out, self._forward_z, self._forward_a,
                                           self._buffers["mask"], self.dropout, activation, grad_z, self.weight.grad,
                                           grad_bias, grad_x, accumulate)
        else:
            kernels.dense_backward(x, self.weight.data, grad_out, self._forward_z, self._forward_y, activation, grad_z,
                                   self.weight.grad, grad_bias, grad_x, accumulate)
        return grad_x

    def _backward_bfloat16(self, kernels, grad_out, activation, grad_z, grad_bias, grad_x, accumulate):
        """dZ as in float32 (dropout's mask, then the activation's derivative), rounded to bfloat16; then the
        products, dX = dZ @ W.T and dW = x.T @ dZ, on the rounded operands, and the bias gradient from the rounded
        dZ (``dense_backward_bfloat16``)."""
        grad = grad_out
        if self._forward_dropout:
            grad = self._workspace("grad_a", grad_out.shape, self.dtype)
            kernels.dropout_backward(grad_out, self._buffers["mask"], self.dropout, grad)
        kernels.activation_backward(grad, self._forward_z, self._forward_a, activation, grad_z)
        rounded = self._workspace("grad_z_bfloat16", grad_z.shape, self.dtype)
        kernels.round_bfloat16(grad_z, rounded)
        input_, weight = self._forward_operands
        kernels.dense_backward_bfloat16(input_, weight, rounded, grad_z, self.weight.grad, grad_bias, grad_x,
                                        accumulate, *self._bfloat16_bits(grad_z.shape[0]),
                                        self._workspace("grad_bits", grad_z.shape, np.uint16),
                                        not self._forward_dropout)

    def _bfloat16_bits(self, batch):
        """The bfloat16 bit patterns of x and the weight, where the backend multiplies them as bfloat16."""
        return (self._workspace("x_bits", (batch, self.in_features), np.uint16),
                self._workspace("weight_bits", (self.in_features, self.out_features), np.uint16))

    def __repr__(self):
        dropout = f", dropout={self.dropout}" if self.dropout else ""
        compute = f", compute_dtype={self.compute_dtype!r}" if self.compute_dtype != "float32" else ""
        return (f"Dense({self.in_features}, {self.out_features}, activation={self.activation!r}, "
                f"bias={self.bias is not None}{dropout}{compute})")


class _DenseBinding:
    """A Dense layer's float32 forward and backward without dropout, bound (the backend's ``bind_dense_forward`` and
    ``bind_dense_backward``) for one batch shape: on a small model the layer path's per-call Python cost as much as
    its kernels. The layer keeps it while everything it was bound to stays what it was: the backend, the input's
    type, shape and dtype, the mode, the weight, bias and gradient arrays (an optimizer moves them into its flat
    buffers), the activation, seed and compute settings, the thread count (``fastdl.set_num_threads``)."""

    __slots__ = ("backend", "array_type", "shape", "dtype", "training", "weight", "bias", "grad_weight", "grad_bias",
                 "activation", "seed", "generation", "z", "y", "grad_x", "forward", "backward")

    def __init__(self, layer, backend, x, z, y):
        self.backend, self.array_type, self.shape, self.dtype = backend, type(x), x.shape, x.dtype
        self.training, self.activation, self.seed = layer.training, layer.activation, layer.seed
        self.weight, self.grad_weight = layer.weight.data, layer.weight.grad
        self.bias, self.grad_bias = layer.bias_arrays()
        self.generation = threads.generation
        self.z, self.y = z, y
        self.grad_x = layer._workspace("grad_x", x.shape, layer.dtype)
        code, params = layer.activation.kernel_args(layer.dtype, layer.training)
        kernels = backend.kernels
        self.forward = kernels.bind_dense_forward(self.weight, self.bias, code, params, layer.seed, z, y)
        self.backward = kernels.bind_dense_backward(self.weight, z, y, code, params, layer.seed,
                                                    layer._workspace("grad_z", y.shape, layer.dtype),
                                                    self.grad_weight, self.grad_bias, self.grad_x)

    # both checks run on every call: written out (no helper calls) for what they cost on small layers
    def accepts(self, layer, x):
        weight, bias = layer.weight, layer.bias
        return (type(x) is self.array_type and x.shape == self.shape and x.dtype == self.dtype
                and x.flags.c_contiguous and layer.training is self.training and weight._data is self.weight
                and weight._grad is self.grad_weight and (layer._no_bias if bias is None else bias._data) is self.bias
                and layer.activation is self.activation and layer.seed == self.seed
                and layer.compute_dtype == "float32" and not (self.training and layer.dropout > 0)
                and threads.generation == self.generation and get_backend() is self.backend)

    def accepts_grad(self, layer, grad_out):
        """Whether the backward of the forward this binding ran can take ``grad_out`` as it is."""
        weight, bias = layer.weight, layer.bias
        return (type(grad_out) is self.array_type and grad_out.shape == self.y.shape and grad_out.dtype == self.dtype
                and grad_out.flags.c_contiguous and weight._data is self.weight and weight._grad is self.grad_weight
                and (layer._no_bias if bias is None else bias._grad) is self.grad_bias
                and get_backend() is self.backend)


class Activation(_RandomCounter, Module):
    """An activation as a layer of its own: ``Activation("elu", alpha=0.5)``; any name of the registry,
    ``softmax`` included (over the last axis). See ``fastdl.activations`` for every formula."""

    def __init__(self, name: str, seed: int | None = None, **params: float | str):
        self.spec = ActivationSpec(name.lower(), **params)
        self._init_random(seed)

    @property
    def name(self):
        return f"Activation({self.spec.name})"

    def forward(self, x):
        _checks.backend_array(x, self.name, "x")
        _checks.float_array(x, self.name, "x")
        backend = _checks.array(x, self.name, "x")
        if x.ndim == 0:
            raise ValueError(f"{self.name}: x must have at least one dimension, got a scalar")
        finite = backend.kernels.all_finite(x)
        if finite is not True:  # a bool True (the CPU's answer) needs nothing more
            finite_checks.check(finite, _refuse_nonfinite, self, x)
        x = backend.xp.ascontiguousarray(x)
        y = self._workspace("y", x.shape, x.dtype)
        if self.training:
            self.counter += 1
        activation = self.spec.for_kernels(x.dtype, self.training, self.seed, self.counter)
        backend.kernels.activation_forward(x, activation, y)
        self._forward_input, self._forward_y, self._forward_training = x, y, self.training
        self._forward_counted = self.training
        return y

    def backward(self, grad_out, accumulate=False, input_grad=True):
        x, grad_out, grad_x = self._begin_backward(grad_out, self._saved(self.name).dtype)
        activation = self.spec.for_kernels(x.dtype, self._forward_training, self.seed, self.counter)
        get_backend().kernels.activation_backward(grad_out, x, self._forward_y, activation, grad_x)
        return grad_x

    def __repr__(self):
        return f"Activation({self.spec!r})"


class _LearnableActivation(Module):
    """Shared plumbing: per-feature parameters over the last axis, one kernel pair per layer."""

    def _check_input(self, x):
        features = None if self.num_parameters == 1 else self.num_parameters
        backend = _checks.array(x, self.name, "x", dtype=self.dtype, last_dim=features)
        if x.ndim == 0:
            raise ValueError(f"{self.name}: x must have at least one dimension, got a scalar")
        finite = backend.kernels.all_finite(x)
        if finite is not True:  # a bool True (the CPU's answer) needs nothing more
            finite_checks.check(finite, _refuse_nonfinite, self, x)
        return backend, backend.xp.ascontiguousarray(x)


class PReLU(_LearnableActivation):
    """y = x for x >= 0, a * x otherwise, with the slope ``a`` learned (He et al., 2015).

    ``num_parameters=1`` shares one slope; otherwise one per feature (last axis). ``init=0.25`` as PyTorch.
    """

    def __init__(self, num_parameters=1, init=0.25, dtype="float32"):
        self.num_parameters = _checks.positive_int(num_parameters, "PReLU", "num_parameters")
        self.dtype = _checks.float_dtype(dtype, "PReLU")
        self.weight = Parameter(get_backend().xp.full(self.num_parameters, init, dtype=self.dtype))
        self.name = f"PReLU({self.num_parameters})"

    def forward(self, x):
        backend, x = self._check_input(x)
        y = self._workspace("y", x.shape, self.dtype)
        backend.kernels.prelu_forward(x, self.weight.data, y)
        self._forward_input = x
        return y

    def backward(self, grad_out, accumulate=False, input_grad=True):
        x, grad_out, grad_x = self._begin_backward(grad_out, self.dtype)
        get_backend().kernels.prelu_backward(x, self.weight.data, grad_out, grad_x, self.weight.grad, accumulate)
        return grad_x


class APL(_LearnableActivation):
    """Adaptive piecewise linear unit (Agostinelli et al., 2015), per feature j:

    y = max(0, x) + sum_{s=1..S} a_s,j * max(0, -x + b_s,j), with ``hinge_slopes`` a and ``hinge_offsets`` b
    of shape (S, features) learned. Slopes start at 0 (the unit starts as ReLU); offsets are drawn from a
    standard normal (``seed``), so the hinges sit at different places.
    """

    def __init__(self, num_features, hinges=2, seed=None, dtype="float32"):
        self.num_parameters = _checks.positive_int(num_features, "APL", "num_features")
        hinges = _checks.positive_int(hinges, "APL", "hinges")
        self.dtype = _checks.float_dtype(dtype, "APL")
        xp = get_backend().xp
        rng = np.random.default_rng(default_seed(seed, "APL"))
        offsets = rng.standard_normal((hinges, self.num_parameters)).astype(self.dtype)
        self.hinge_slopes = Parameter(xp.zeros((hinges, self.num_parameters), dtype=self.dtype))
        self.hinge_offsets = Parameter(get_backend().asarray(offsets))
        self.name = f"APL({self.num_parameters}, hinges={hinges})"

    def forward(self, x):
        backend, x = self._check_input(x)
        y = self._workspace("y", x.shape, self.dtype)
        backend.kernels.apl_forward(x, self.hinge_slopes.data, self.hinge_offsets.data, y)
        self._forward_input = x
        return y

    def backward(self, grad_out, accumulate=False, input_grad=True):
        x, grad_out, grad_x = self._begin_backward(grad_out, self.dtype)
        get_backend().kernels.apl_backward(x, self.hinge_slopes.data, self.hinge_offsets.data, grad_out, grad_x,
                                           self.hinge_slopes.grad, self.hinge_offsets.grad, accumulate)
        return grad_x


class SoftExponential(_LearnableActivation):
    """Soft exponential (Godfrey & Gashler, 2015), interpolating log, identity and exp with a learned alpha:

    f(a, x) = -ln(1 - a (x + a)) / a for a < 0;  x for a = 0;  (e^{a x} - 1) / a + a for a > 0.

    The lecture table drops the "+ a" of the a > 0 branch; the paper's form (continuous in a) is used here.
    For a < 0 the function is defined only where 1 - a (x + a) > 0 (NaN elsewhere).
    """

    def __init__(self, num_parameters=1, init=0.0, dtype="float32"):
        self.num_parameters = _checks.positive_int(num_parameters, "SoftExponential", "num_parameters")
        self.dtype = _checks.float_dtype(dtype, "SoftExponential")
        self.alpha = Parameter(get_backend().xp.full(self.num_parameters, init, dtype=self.dtype))
        self.name = f"SoftExponential({self.num_parameters})"

    def forward(self, x):
        backend, x = self._check_input(x)
        y = self._workspace("y", x.shape, self.dtype)
        backend.kernels.soft_exponential_forward(x, self.alpha.data, y)
        self._forward_input = x
        return y

    def backward(self, grad_out, accumulate=False, input_grad=True):
        x, grad_out, grad_x = self._begin_backward(grad_out, self.dtype)
        get_backend().kernels.soft_exponential_backward(x, self.alpha.data, grad_out, grad_x, self.alpha.grad,
                                                        accumulate)
        return grad_x


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse.

    ``backward(grad, input_grad=False)`` skips the first layer's input gradient (nobody needs it in training).
    """

    def __init__(self, *modules: Module):
        for index, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(f"Sequential: item {index} is a {type(module).__name__}, not a fastdl Module")
        self.layers = list(modules)

    def children(self):
        return self.layers

    def forward(self, x):
        if not get_backend().device_flags:  # every flag is a bool its layer has tested already
            return self._forward_layers(x, None)
        # the layers' device finiteness flags are read once, at the end (fastdl/finite_checks.py)
        with finite_checks.deferred() as checks:
            x = self._forward_layers(x, checks)
            try:
                checks.resolve()
            except Exception:
                self.undo_forward()
                raise
        return x

    def _forward_layers(self, x, checks):
        for index, layer in enumerate(self.layers):
            try:
                x = layer(x)
            except Exception:  # the layers before it ran: put back what they changed, then report the refusal
                for done in reversed(self.layers[:index]):
                    done.undo_forward()
                if checks is not None:
                    checks.resolve()  # but NaN or Inf an earlier layer found on the device comes first
                raise
        return x

    def undo_forward(self):
        for layer in reversed(self.layers):
            layer.undo_forward()

    def backward(self, grad_out, accumulate=False, input_grad=True):
        for index in range(len(self.layers) - 1, -1, -1):
            wants_input_grad = input_grad or index > 0
            grad_out = self.layers[index].backward(grad_out, accumulate=accumulate, input_grad=wants_input_grad)
        return grad_out

    def __getitem__(self, index):
        return self.layers[index]

    def __len__(self):
        return len(self.layers)

    def __repr__(self):
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"
