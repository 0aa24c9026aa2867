"""BatchNorm, Dropout and Standardize layers."""

from __future__ import annotations

import numpy as np

from . import _checks
from . import finite_checks
from . import threads
from ._typing import DType
from .activations import resolve
from .backend import get_backend
from .kernels.reference import activations as table
from .kernels.cpu.normalization import totals_shape
from .backend import to_numpy as to_host
from .layers import Activation, Module, Parameter, _RandomCounter


class BatchNorm(_RandomCounter, Module):
    """Batch normalization over (N, C) (Ioffe & Szegedy, 2015), with an optional fused activation.

    Training: x_hat = (x - mean) / sqrt(var + eps) with the batch mean and the BIASED batch variance, then
    y = act(weight * x_hat + bias). The running statistics follow PyTorch's BatchNorm1d:
    ``running = (1 - momentum) * running + momentum * batch_stat`` with the UNBIASED variance for
    ``running_var``; ``momentum=None`` keeps a cumulative average instead. The textbook writes the same
    update as mu_hat = rho * mu_hat + (1 - rho) * mu, so rho = 1 - momentum (PyTorch's 0.1 is rho = 0.9).
    Evaluation normalizes with the running statistics (an affine map, whose backward is exact too).

    Args: num_features (C), eps, momentum, affine (learn weight and bias; else 1 and 0),
    track_running_stats (else batch statistics are used in eval too), activation (any element-wise name of
    the registry, applied in the same pass), dtype, sync.

    Data-parallel training (``fastdl.distributed``): by default each rank normalizes with its own batch's
    statistics, as PyTorch's ``BatchNorm1d``. ``sync=True`` normalizes with the statistics of the global batch
    (the per-feature counts, means and squared deviations of every rank, combined in rank order with Chan's
    formula, in float64), and its backward all-reduces the two per-feature sums, so N ranks at batch B train
    exactly like one process at batch N*B. That path runs the formulas with numpy temporaries (one small
    collective each way), not the fused kernels; outside a distributed job ``sync`` changes nothing.

    >>> bn = BatchNorm(4, activation="relu")
    >>> y = bn(np.random.rand(8, 4).astype(np.float32))
    """

    state_buffers = ("running_mean", "running_var", "num_batches_tracked")
    _forward_bound_to = None  # the binding whose forward ran last; None after the general path's

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, activation: str | Activation = "identity", dtype: DType = "float32",
                 seed: int | None = None, sync: bool = False):
        self.sync = bool(sync)
        self.num_features = _checks.positive_int(num_features, "BatchNorm", "num_features")
        self.dtype = _checks.float_dtype(dtype, "BatchNorm")
        if not eps > 0:
            raise ValueError(f"BatchNorm: eps must be positive, got {eps}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm: momentum must lie in [0, 1] or be None, got {momentum}")
        self.eps, self.momentum, self.affine = float(eps), momentum, bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.activation = resolve(activation)
        if self.activation.code in table.ROW_WISE:
            raise ValueError("BatchNorm: softmax is a row-wise output activation; use fastdl.Activation('softmax')")
        xp = get_backend().xp
        c = self.num_features
        if self.affine:
            self.weight = Parameter(xp.ones(c, dtype=self.dtype))
            self.bias = Parameter(xp.zeros(c, dtype=self.dtype))
        else:
            self._weight_constant, self._bias_constant = xp.ones(c, dtype=self.dtype), xp.zeros(c, dtype=self.dtype)
        self.running_mean = xp.zeros(c, dtype=self.dtype)
        self.running_var = xp.ones(c, dtype=self.dtype)
        self.num_batches_tracked = xp.zeros(1, dtype=np.int64)
        # the fused activation shows in summaries and messages; plain batch norm keeps the short name
        activation = "" if self.activation.name == "identity" else f", {self.activation.name}"
        self.name = f"BatchNorm({c}{activation})"
        self._forward_finite = True  # the last forward's finiteness flag (see undo_forward)
        self._init_random(seed)

    def running_factor(self):
        """The weight of this batch in the running statistics: ``momentum``, or 1 / batches seen so far (this one
        included) for the cumulative average of ``momentum=None``. The layer and the compiled step both use it."""
        return 1.0 / float(self.num_batches_tracked[0] + 1) if self.momentum is None else self.momentum

    def affine_arrays(self):
        """(weight, bias) as the kernels take them: the learned ones, or constant ones and zeros (affine=False)."""
        if self.affine:
            return self.weight.data, self.bias.data
        return self._weight_constant, self._bias_constant

    def _grad_arrays(self):
        """(grad_weight, grad_bias) as the backward kernels take them: the parameters' gradients, or two workspaces
        nobody reads (affine=False)."""
        if self.affine:
            return self.weight.grad, self.bias.grad
        return (self._workspace("unused_grad_weight", (self.num_features,), self.dtype),
                self._workspace("unused_grad_bias", (self.num_features,), self.dtype))

    def _synchronized(self):
        if not (self.sync and self.training):
            return False
        from . import distributed

        return distributed.world_size() > 1

    def _batch_buffers(self, shape, backend):
        """(y, mean, inv_std, workspace, scratch, totals, previous_running) for batches of this shape, kept between
        calls; previous_running holds the running mean and variance as they were before the last forward.

        One cached tuple, not seven workspace lookups: Python that runs right after a kernel that streamed
        megabytes through the caches runs from cold caches, so the layer's own statements cost several times
        their usual time (the lookups were ~5% of a 1024x1024 forward)."""
        buffers = self.__dict__.setdefault("_buffers", {})
        cached = buffers.get("batch")
        if cached is None or cached[0] != shape or cached[1] != backend.name:
            rows, c = shape
            blocks = (rows + 63) // 64
            # block partial sums (2 rows per block), then per-feature scale, mean_hi, shift and variance; float64
            # totals (2 rows), then the sums of groups of blocks (2 rows per group)
            cached = buffers["batch"] = (
                shape, backend.name, backend.empty(shape, self.dtype), backend.empty((c,), np.float64),
                backend.empty((c,), np.float64), backend.empty((2 * blocks + 4, c), self.dtype),
                backend.empty((2 * blocks, c), self.dtype), backend.empty(totals_shape(rows, c), np.float64),
                backend.empty((2, c), self.dtype))
        return cached[2:]

    def forward(self, x):
        binding = self.__dict__.get("_binding")
        if binding is not None and binding.accepts(self, x):  # the checks below passed for this x already
            return self._forward_bound(binding, x)
        if self.sync and self._synchronized():
            return self._forward_synchronized(x)
        self._forward_sync = False
        batch_statistics = self.training or not self.track_running_stats
        # The kernels detect NaN/Inf on the way (the statistics' sums, or a per-row test in the evaluation pass):
        # no separate pass over x.
        backend = _checks.array(x, self.name, "x", ndim=2, dtype=self.dtype, last_dim=self.num_features)
        if batch_statistics and x.shape[0] < 2:
            raise ValueError(f"{self.name}: training needs more than 1 sample per batch to compute a variance, "
                             f"got x of shape {tuple(x.shape)}")
        if not x.flags.c_contiguous:
            x = backend.xp.ascontiguousarray(x)
        kernels = backend.kernels
        buffers = self._batch_buffers(x.shape, backend)
        if self.training and self.track_running_stats and not self.sync:
            if binding is None or not binding.accepts(self, x):  # a contiguous copy may fit the binding still
                binding = self._binding = _BatchNormBinding(self, backend, x, buffers)
            return self._forward_bound(binding, x)
        self._binding = None
        y, mean, inv_std, workspace, scratch, totals, previous_running = buffers
        self._forward_updated_running = None
        counter = self.counter + 1 if self.training else self.counter  # taken only once the forward succeeded
        activation = self.activation.for_kernels(self.dtype, self.training, self.seed, counter)
        weight, bias = self.affine_arrays()
        if batch_statistics:
            factor = -1.0  # no running update
            if self.training and self.track_running_stats:
                factor = self.running_factor()
                self._save_running_statistics(previous_running)
            # the kernel counts the batch in num_batches_tracked with the running statistics (a ufunc call here,
            # right after the kernel, runs from cold caches)
            finite = kernels.batchnorm_forward_train(x, weight, bias, self.eps, factor, self.running_mean,
                                                     self.running_var, self.num_batches_tracked, activation, mean,
                                                     inv_std, y, workspace, scratch, totals)
        else:
            finite = kernels.batchnorm_forward_eval(x, weight, bias, self.eps, self.running_mean, self.running_var,
                                                    activation, mean, inv_std, y, workspace)
        if finite is not True:  # a bool True (the CPU's answer) needs nothing more
            finite_checks.check(finite, self._refuse, x)
        self.counter, self._forward_finite = counter, finite
        self._forward_input, self._forward_y = x, y
        self._forward_batch_statistics, self._forward_training = batch_statistics, self.training
        self._forward_counted = self.training
        self._forward_bound_to = None
        return y

    def _forward_bound(self, binding, x):
        """The training forward (batch statistics, running update) through the layer's bound kernel
        (``_BatchNormBinding``)."""
        counter = self.counter + 1  # taken only once the forward succeeded
        self._save_running_statistics(binding.previous_running)
        finite = binding.forward(x, self.running_factor(), counter)
        if finite is not True:  # a bool True (the CPU's answer) needs nothing more
            finite_checks.check(finite, self._refuse, x)
        self.counter, self._forward_finite = counter, finite
        if self._forward_bound_to is not binding:  # what the backward reads besides x is the binding's, call after call
            self._forward_y, self._forward_sync = binding.y, False
            self._forward_batch_statistics = self._forward_training = True
            self._forward_bound_to = binding
        self._forward_input, self._forward_counted = x, True
        return binding.y

    def _refuse(self, x):
        """NaN or Inf in x: the kernel changed no running statistic (nor the count) and left its outputs part-way."""
        self._forward_input = self._forward_updated_running = None
        raise ValueError(f"{self.name}: x contains NaN or Inf (shape {tuple(x.shape)})")

    def _save_running_statistics(self, previous_running):
        previous_running[0] = self.running_mean
        previous_running[1] = self.running_var
        self._forward_updated_running = previous_running

    def undo_forward(self):
        super().undo_forward()
        previous_running = self._forward_updated_running
        if previous_running is not None:
            self.running_mean[...] = previous_running[0]
            self.running_var[...] = previous_running[1]
            if self._forward_finite:  # the kernels count a batch only when x was finite (a GPU flag read here)
                self.num_batches_tracked[...] -= 1
            self._forward_updated_running = None

    def _forward_synchronized(self, x):
        from . import distributed

        backend = _checks.array(x, self.name, "x", ndim=2, dtype=self.dtype, last_dim=self.num_features, finite=True)
        xp = backend.xp
        x = xp.ascontiguousarray(x)
        x64 = x.astype(np.float64)
        local_mean = x64.mean(axis=0)
        local_squares = to_host(((x64 - local_mean) ** 2).sum(axis=0))
        parts = distributed.gather_objects((x.shape[0], to_host(local_mean), local_squares))
        count, mean, squares = parts[0]
        for other_count, other_mean, other_squares in parts[1:]:  # Chan et al.: merge (n, mean, M2) pairwise
            total = count + other_count
            delta = other_mean - mean
            mean = mean + delta * (other_count / total)
            squares = squares + other_squares + delta ** 2 * (count * other_count / total)
            count = total
        if count < 2:
            raise ValueError(f"{self.name}: training needs more than 1 sample over all ranks, got {count}")
        mean, variance = xp.asarray(mean), xp.asarray(squares / count)
        inv_std = 1.0 / xp.sqrt(variance + self.eps)
        weight, bias = self.affine_arrays()
        x_hat = (x64 - mean) * inv_std
        z = (x_hat * weight + bias).astype(self.dtype)
        y = self._workspace("y", x.shape, self.dtype)
        self.counter += 1
        self._forward_counted = self._forward_finite = True
        backend.kernels.activation_forward(z, self.activation.for_kernels(self.dtype, True, self.seed, self.counter), y)
        self._forward_updated_running = None
        if self.track_running_stats:
            self._save_running_statistics(self._workspace("previous_running", (2, self.num_features), self.dtype))
            factor = self.running_factor()
            self.running_mean[...] = (1 - factor) * self.running_mean + factor * mean
            self.running_var[...] = (1 - factor) * self.running_var + factor * (squares / (count - 1))
            self.num_batches_tracked += 1
        self._forward_input, self._forward_y, self._forward_training = x, y, True
        self._forward_sync, self._sync_saved = True, (x_hat, z, inv_std, count)
        self._forward_bound_to = None
        return y

    def _backward_synchronized(self, grad_out, accumulate):
        from . import distributed

        x, grad_out, grad_x = self._begin_backward(grad_out, self.dtype)
        x_hat, z, inv_std, count = self._sync_saved
        xp = get_backend().xp
        grad_z = xp.empty_like(z)
        activation = self.activation.for_kernels(self.dtype, True, self.seed, self.counter)
        get_backend().kernels.activation_backward(grad_out, z, self._forward_y, activation, grad_z)
        grad_z = grad_z.astype(np.float64)
        local = xp.stack([grad_z.sum(axis=0), (grad_z * x_hat).sum(axis=0)])
        total = xp.asarray(distributed.sum_arrays(to_host(local)))
        weight, _ = self.affine_arrays()
        if self.affine:  # this rank's share; averaging the gradients over the ranks makes them the global ones
            self.bias.grad[...] = (self.bias.grad if accumulate else 0) + local[0]
            self.weight.grad[...] = (self.weight.grad if accumulate else 0) + local[1]
        grad_x[...] = weight * inv_std * (grad_z - total[0] / count - x_hat * (total[1] / count))
        return grad_x

    def backward(self, grad_out, accumulate=False, input_grad=True):
        binding = self._forward_bound_to
        if binding is not None:
            x = self._saved(self.name)
            if binding.accepts_grad(self, grad_out):
                binding.backward(x, grad_out, self.counter, bool(accumulate))
                return binding.grad_x
        if getattr(self, "_forward_sync", False):
            return self._backward_synchronized(grad_out, accumulate)
        x, grad_out, grad_x = self._begin_backward(grad_out, self.dtype)
        weight, bias = self.affine_arrays()
        grad_weight, grad_bias = self._grad_arrays()
        activation = self.activation.for_kernels(self.dtype, self._forward_training, self.seed, self.counter)
        mean, inv_std, workspace, scratch, totals = self._buffers["batch"][3:8]  # the forward's (same shape)
        get_backend().kernels.batchnorm_backward(
            x, grad_out, self._forward_y, weight, bias, mean, inv_std, activation, self._forward_batch_statistics,
            grad_x, grad_weight, grad_bias, accumulate, workspace, scratch, totals)
        return grad_x

    def __repr__(self):
        return (f"BatchNorm({self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"activation={self.activation!r})")


class _BatchNormBinding:
    """A BatchNorm layer's training forward (batch statistics, running update) and its backward, bound (the
    backend's ``bind_batchnorm_forward_train`` and ``bind_batchnorm_backward``) for one batch shape, as Dense binds
    its own (``layers._DenseBinding``): a small model's two batch norms cost more in per-call Python than in their
    kernels. The layer keeps it while everything it was bound to stays what it was: the backend, the input's type,
    shape and dtype, training mode with running statistics and without ``sync``, the weight, bias, gradient and
    running-statistic arrays, eps, the activation and seed, the thread count (``fastdl.set_num_threads``). The
    momentum is read at each call."""

    __slots__ = ("backend", "array_type", "shape", "dtype", "weight", "bias", "grad_weight", "grad_bias", "running",
                 "eps", "activation", "seed", "generation", "y", "previous_running", "grad_x", "forward", "backward")

    def __init__(self, layer, backend, x, buffers):
        y, mean, inv_std, workspace, scratch, totals, previous_running = buffers
        self.backend, self.array_type, self.shape, self.dtype = backend, type(x), x.shape, x.dtype
        self.weight, self.bias = layer.affine_arrays()
        self.grad_weight, self.grad_bias = layer._grad_arrays()
        self.running = (layer.running_mean, layer.running_var, layer.num_batches_tracked)
        self.eps, self.activation, self.seed = layer.eps, layer.activation, layer.seed
        self.generation = threads.generation
        self.y, self.previous_running = y, previous_running
        self.grad_x = layer._workspace("grad_x", x.shape, layer.dtype)
        code, params = layer.activation.kernel_args(layer.dtype, True)
        kernels = backend.kernels
        self.forward = kernels.bind_batchnorm_forward_train(self.weight, self.bias, layer.eps, *self.running, code,
                                                            params, layer.seed, mean, inv_std, y, workspace, scratch,
                                                            totals)
        self.backward = kernels.bind_batchnorm_backward(y, self.weight, self.bias, mean, inv_std, code, params,
                                                        layer.seed, self.grad_x, self.grad_weight, self.grad_bias,
                                                        workspace, scratch, totals)

    # both checks run on every call: written out (no helper calls) for what they cost on small layers
    def accepts(self, layer, x):
        affine, running = layer.affine, self.running
        return (type(x) is self.array_type and x.shape == self.shape and x.dtype == self.dtype
                and x.flags.c_contiguous and layer.training and layer.track_running_stats and not layer.sync
                and (layer.weight._data if affine else layer._weight_constant) is self.weight
                and (layer.bias._data if affine else layer._bias_constant) is self.bias
                and (not affine or (layer.weight._grad is self.grad_weight and layer.bias._grad is self.grad_bias))
                and layer.running_mean is running[0] and layer.running_var is running[1]
                and layer.num_batches_tracked is running[2] and layer.eps == self.eps
                and layer.activation is self.activation and layer.seed == self.seed
                and threads.generation == self.generation and get_backend() is self.backend)

    def accepts_grad(self, layer, grad_out):
        """Whether the backward of the forward this binding ran can take ``grad_out`` as it is."""
        affine = layer.affine
        return (type(grad_out) is self.array_type and grad_out.shape == self.shape and grad_out.dtype == self.dtype
                and grad_out.flags.c_contiguous
                and (not affine or (layer.weight._grad is self.grad_weight and layer.bias._grad is self.grad_bias))
                and get_backend() is self.backend)


class Dropout(_RandomCounter, Module):
    """Inverted dropout (Srivastava et al., 2014): in training each element is zeroed with probability ``p``
    and survivors are scaled by 1 / (1 - p); the identity in eval. Backward reuses the forward's mask.

    The mask is a pure function of (seed, call counter, element index), so it is reproducible from ``seed``,
    independent of the thread count, and the same on every backend. It is stored as bytes.
    """

    def __init__(self, p: float = 0.5, seed: int | None = None):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must lie in [0, 1), got {p}")
        self.p = float(p)
        self._init_random(seed)

    @property
    def name(self):
        return f"Dropout(p={self.p})"

    def forward(self, x):
        backend = _checks.array(x, self.name, "x")
        _checks.float_array(x, self.name, "x")
        self._forward_active = self.training and self.p > 0
        self._forward_input, self._forward_counted = x, False
        if not self._forward_active:
            return x
        x = backend.xp.ascontiguousarray(x)
        y = self._workspace("y", x.shape, x.dtype)
        mask = self._workspace("mask", x.shape, np.uint8)
        self.counter += 1
        self._forward_counted = True
        backend.kernels.dropout_forward(x, self.p, self.seed, self.counter, mask, y)
        return y

    @property
    def mask(self):
        return self._buffers["mask"]

    def backward(self, grad_out, accumulate=False, input_grad=True):
        x = self._saved(self.name)
        grad_out = self._check_grad_out(grad_out, self.name, x.shape, x.dtype)
        if not self._forward_active:
            return grad_out
        grad_x = self._workspace("grad_x", x.shape, x.dtype)
        get_backend().kernels.dropout_backward(grad_out, self._buffers["mask"], self.p, grad_x)
        return grad_x


class Standardize(Module):
    """Input standardization: ``fit(x)`` learns each feature's mean and standard deviation on the training
    data; ``forward`` applies (x - mean) / std. A feature with zero spread is only centred (its std is taken
    as 1, never divided by). ``mean`` and ``std`` are saved with the model's state.
    """

    state_buffers = ("mean", "std")

    def __init__(self, num_features, dtype="float32"):
        self.num_features = _checks.positive_int(num_features, "Standardize", "num_features")
        self.dtype = _checks.float_dtype(dtype, "Standardize")
        xp = get_backend().xp
        self.mean = xp.zeros(self.num_features, dtype=self.dtype)
        self.std = xp.ones(self.num_features, dtype=self.dtype)
        self.name = f"Standardize({self.num_features})"

    def fit(self, x):
        backend = _checks.array(x, self.name, "x", ndim=2, last_dim=self.num_features, finite=True)
        x64 = backend.xp.asarray(x, dtype=np.float64)
        std = x64.std(axis=0)
        self.mean[...] = x64.mean(axis=0)
        self.std[...] = backend.xp.where(std > 0, std, 1.0)
        return self

    def forward(self, x):
        backend = _checks.array(x, self.name, "x", ndim=2, dtype=self.dtype, last_dim=self.num_features, finite=True)
        y = self._workspace("y", x.shape, self.dtype)
        backend.xp.subtract(x, self.mean, out=y)
        backend.xp.divide(y, self.std, out=y)
        self._forward_input = x
        return y

    def backward(self, grad_out, accumulate=False, input_grad=True):
        x, grad_out, grad_x = self._begin_backward(grad_out, self.dtype)
        get_backend().xp.divide(grad_out, self.std, out=grad_x)
        return grad_x


def standardize(x_train, *others):
    """Fit on ``x_train`` and return (Standardize layer, standardized copies of x_train and of each other array)."""
    array = x_train if hasattr(x_train, "dtype") else np.asarray(x_train)  # a CuPy array stays on its device
    layer = Standardize(array.shape[1], dtype=array.dtype).fit(x_train)
    return (layer, *(layer(a).copy() for a in (x_train, *others)))
