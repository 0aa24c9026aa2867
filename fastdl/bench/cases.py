"""The benchmark cases: each op at sizes that matter, with the bytes or flops it must move.

A case builds one callable per contender: ``build()`` runs fastdl on the active backend (the suite builds and
calls it under each backend in turn), ``build_torch(device)`` the closest PyTorch equivalent, or None.
Bytes count what the op must read and write (the write-allocate read not counted); flops count GEMM flops.
GPU callables synchronize inside, so a time is the op's, not its launch's.
"""

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

import fastdl
from fastdl import optim

BANDWIDTH, GEMM = "GB/s", "GFLOP/s"


@dataclass
class Case:
    op: str
    size: str
    unit: str  # BANDWIDTH or GEMM: which ceiling judges it
    work: float  # bytes or flops per call
    build: Callable[[], Callable[[], object]]
    build_torch: Optional[Callable[[str], Callable[[], object]]] = None
    quick: bool = False
    build_jax: Optional[Callable[[], Callable[[], object]]] = None  # JAX on the CPU, where it is installed
    compute: str = "float32"  # the GEMMs' operands: "bfloat16" cases are judged by the bfloat16 GEMM's ceiling

    @property
    def name(self):
        return f"{self.op} [{self.size}]"


def _synchronized(call):
    """The call, followed by a device synchronization when the active backend is the GPU."""
    if fastdl.get_backend().name != "gpu":
        return call
    import cupy

    stream = cupy.cuda.get_current_stream()

    def run():
        call()
        stream.synchronize()
    return run


def _torch_synchronized(call, device):
    if device != "cuda":
        return call
    import torch

    def run():
        call()
        torch.cuda.synchronize()
    return run


def _random(shape, dtype=np.float32, seed=0):
    return fastdl.asarray(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


# -- dense ----------------------------------------------------------------------------------------------------------
TORCH_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "gelu": "gelu"}


def _autocast(device, compute):
    """PyTorch's counterpart of fastdl's bfloat16 compute: autocast (a no-op context for float32)."""
    import contextlib

    import torch

    return torch.autocast(device, dtype=torch.bfloat16) if compute == "bfloat16" else contextlib.nullcontext()


def dense_case(activation, shape, backward, quick, dropout=0.0, compute="float32"):
    """A Dense layer's forward (or forward and backward); with ``compute="bfloat16"`` against PyTorch's autocast."""
    batch, fan_in, fan_out = shape

    def build():
        layer = fastdl.Dense(fan_in, fan_out, activation=activation, seed=0, dropout=dropout, compute_dtype=compute)
        x, grad = _random((batch, fan_in)), _random((batch, fan_out), seed=1)
        if backward:
            return _synchronized(lambda: (layer(x), layer.backward(grad)))
        return _synchronized(lambda: layer(x))

    def build_torch(device):
        import torch

        linear = torch.nn.Linear(fan_in, fan_out, device=device)
        act = getattr(torch.nn.functional, TORCH_ACTIVATIONS[activation])
        # requires_grad on x: PyTorch then computes dX too, as fastdl's backward does
        x = torch.randn(batch, fan_in, device=device, requires_grad=backward)
        grad = torch.randn(batch, fan_out, device=device)
        # fastdl fuses dropout into the layer; PyTorch applies it after (the same work a user's model does)
        after = (lambda t: torch.nn.functional.dropout(t, dropout)) if dropout else (lambda t: t)

        def forward():
            with torch.no_grad(), _autocast(device, compute):
                after(act(linear(x)))

        def forward_backward():
            linear.zero_grad(set_to_none=False)
            x.grad = None
            with _autocast(device, compute):
                y = after(act(linear(x)))
            y.backward(grad.to(y.dtype))
        return _torch_synchronized(forward_backward if backward else forward, device)

    extras = (f", dropout {dropout}" if dropout else "") + (", bfloat16" if compute == "bfloat16" else "")
    op = f"dense {'fwd+bwd' if backward else 'fwd'} ({activation}{extras})"
    flops = 2 * batch * fan_in * fan_out * (3 if backward else 1)
    return Case(op, "x".join(map(str, shape)), GEMM, flops, build, build_torch, quick, compute=compute)


# -- softmax cross-entropy ----------------------------------------------------------------------------------------
def cross_entropy_case(rows, classes, quick):
    def build():
        logits = _random((rows, classes))
        labels = fastdl.asarray(np.random.default_rng(1).integers(0, classes, rows))
        grad = fastdl.get_backend().xp.empty_like(logits)
        return _synchronized(lambda: fastdl.losses.softmax_cross_entropy(logits, labels, out=grad))

    def build_torch(device):
        import torch

        logits = torch.randn(rows, classes, device=device, requires_grad=True)
        labels = torch.randint(0, classes, (rows,), device=device)

        def run():
            logits.grad = None
            torch.nn.functional.cross_entropy(logits, labels).backward()
        return _torch_synchronized(run, device)

    # reads the logits and labels, writes the gradient
    return Case("softmax cross-entropy (loss + grad)", f"{rows}x{classes}", BANDWIDTH,
                2 * 4 * rows * classes + 8 * rows, build, build_torch, quick)


# -- batch norm ----------------------------------------------------------------------------------------------------
def batchnorm_case(kind, shape, quick):
    rows, features = shape

    def build():
        layer = fastdl.BatchNorm(features)
        x, grad = _random(shape), _random(shape, seed=1)
        if kind == "eval":
            layer.eval()
            return _synchronized(lambda: layer(x))
        if kind == "backward":
            layer(x)
            return _synchronized(lambda: layer.backward(grad))
        return _synchronized(lambda: layer(x))

    def build_torch(device):
        import torch

        layer = torch.nn.BatchNorm1d(features, device=device)
        x = torch.randn(*shape, device=device, requires_grad=kind == "backward")
        grad = torch.randn(*shape, device=device)
        if kind == "eval":
            layer.eval()
        if kind == "backward":
            y = layer(x)

            def backward():
                y.backward(grad, retain_graph=True)
            return _torch_synchronized(backward, device)

        def forward():
            with torch.no_grad():
                layer(x)
        return _torch_synchronized(forward, device)

    arrays = 3 if kind == "backward" else 2  # backward reads x and dy, writes dx; forwards read x, write y
    return Case(f"batch norm {kind}", f"{rows}x{features}", BANDWIDTH, arrays * 4 * rows * features, build,
                build_torch, quick)


# -- dropout -------------------------------------------------------------------------------------------------------
def dropout_case(elements, quick):
    shape = (elements // 1024, 1024) if elements >= 1024 else (1, elements)

    def build():
        layer = fastdl.Dropout(0.5, seed=0)
        x = _random(shape)
        return _synchronized(lambda: layer(x))

    def build_torch(device):
        import torch

        x = torch.randn(*shape, device=device)

        def run():
            with torch.no_grad():
                torch.nn.functional.dropout(x, 0.5, training=True)
        return _torch_synchronized(run, device)

    # reads x, writes y and a one-byte mask
    return Case("dropout fwd (p=0.5)", f"{shape[0]}x{shape[1]}", BANDWIDTH, 9 * elements, build, build_torch, quick)


# -- optimizers ----------------------------------------------------------------------------------------------------
# name: (fastdl class and arguments, PyTorch class and arguments or None, bytes moved per float32 parameter)
OPTIMIZERS = {
    "SGD momentum": ((optim.SGD, dict(lr=0.01, momentum=0.9)), ("SGD", dict(lr=0.01, momentum=0.9)), 20),
    "SGD Nesterov": ((optim.SGD, dict(lr=0.01, momentum=0.9, nesterov=True)),
                     ("SGD", dict(lr=0.01, momentum=0.9, nesterov=True)), 20),
    "Adagrad": ((optim.Adagrad, {}), ("Adagrad", {}), 20),
    "RMSprop": ((optim.RMSprop, {}), ("RMSprop", {}), 20),
    "Adam": ((optim.Adam, {}), ("Adam", {}), 28),
    "Adam + clip": ((optim.Adam, dict(max_grad_norm=1.0)), ("Adam", {}), 32),  # + the norm pass reading g
    "AdamW": ((optim.AdamW, {}), ("AdamW", {}), 28),
    # the optional states: amsgrad's running maximum (+ read and write), centered RMSprop's gradient average and
    # its momentum buffer (p, g, square, average, buffer read; all but g written)
    "Adam amsgrad": ((optim.Adam, dict(amsgrad=True)), ("Adam", dict(amsgrad=True)), 36),
    "RMSprop centered momentum": ((optim.RMSprop, dict(centered=True, momentum=0.9)),
                                  ("RMSprop", dict(centered=True, momentum=0.9)), 36),
    # bfloat16 m and v (2 bytes each) against PyTorch's float32 Adam, the alternative a user has
    "Adam bf16 moments": ((optim.Adam, dict(moments_dtype="bfloat16")), ("Adam", {}), 20),
    "LARS": ((optim.LARS, dict(lr=0.1)), None, 28),  # norm pass reads p, g; step reads p, g, b, writes p, b
    "LAMB": ((optim.LAMB, {}), None, 40),  # moments read p, g, m, v, write m, v; apply reads p, m, v, writes p
}
# one big tensor (memory bound) and the many small tensors of a small MLP (per-call overhead dominates)
LAYOUTS = {"1 x 10M": [(10_000_000,)],
           "MLP 64-64-64-10": [(64, 64), (64,), (64, 64), (64,), (64, 10), (10,)]}
# PyTorch's fused=True exists for these (Adagrad's on the CPU only: torch 2.11 refuses it on CUDA, seen on an
# H200); the others use foreach=True
FUSED = {"SGD", "Adagrad", "Adam", "AdamW"}
FUSED_CPU_ONLY = {"Adagrad"}


def optimizer_case(name, layout, quick):
    (cls, kwargs), reference, bytes_per_parameter = OPTIMIZERS[name]
    shapes = LAYOUTS[layout]
    elements = sum(int(np.prod(shape)) for shape in shapes)

    def build():
        parameters = [fastdl.Parameter(_random(shape, seed=i) * 0.1) for i, shape in enumerate(shapes)]
        optimizer = cls(parameters, **kwargs)
        for i, parameter in enumerate(parameters):
            parameter.grad = _random(shape=parameter.shape, seed=100 + i)
        return _synchronized(optimizer.step)

    def build_torch(device):
        import torch

        tensors = [(torch.randn(shape, device=device) * 0.1).requires_grad_(True) for shape in shapes]
        for tensor in tensors:
            tensor.grad = torch.randn(tensor.shape, device=device)
        torch_name, torch_kwargs = reference
        fused = torch_name in FUSED and not (device != "cpu" and torch_name in FUSED_CPU_ONLY)
        variant = {"fused": True} if fused else {"foreach": True}
        optimizer = getattr(torch.optim, torch_name)(tensors, **torch_kwargs, **variant)

        def step():
            if name.endswith("clip"):
                torch.nn.utils.clip_grad_norm_(tensors, 1.0, foreach=True)
            optimizer.step()
        return _torch_synchronized(step, device)

    return Case(f"optimizer {name}", layout, BANDWIDTH, bytes_per_parameter * elements, build,
                build_torch if reference else None, quick)


# -- whole training steps ----------------------------------------------------------------------------------------
STEP_PATHS = ("compile_step", "layer path")


def _mlp_layers(sizes, batchnorm):
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        if batchnorm and not last:
            layers += [fastdl.Dense(fan_in, fan_out, seed=i), fastdl.BatchNorm(fan_out, activation="relu")]
        else:
            layers.append(fastdl.Dense(fan_in, fan_out, activation="identity" if last else "relu", seed=i))
    return fastdl.Sequential(*layers)


def mlp_step_case(sizes, batch, batchnorm, quick, path="compile_step", compute="float32"):
    """One training step (forward, softmax cross-entropy, backward, Adam) of an MLP, through ``compile_step`` or
    the layer path a user writes by hand (``model(x)``, the loss, ``model.backward``, ``optimizer.step()``); with
    ``compute="bfloat16"`` the Dense layers compute in bfloat16, against PyTorch's autocast."""
    if path not in STEP_PATHS:
        raise ValueError(f"mlp_step_case: path must be one of {STEP_PATHS}, got {path!r}")

    def build():
        model = _mlp_layers(sizes, batchnorm).set_compute_dtype(compute)
        optimizer = optim.Adam(model.parameters())
        x = _random((batch, sizes[0]))
        labels = fastdl.asarray(np.random.default_rng(1).integers(0, sizes[-1], batch))
        if path == "compile_step":
            step = fastdl.compile_step(model, fastdl.losses.softmax_cross_entropy, optimizer, quiet=True)
            return _synchronized(lambda: step(x, labels))
        grad = fastdl.get_backend().xp.empty((batch, sizes[-1]), dtype=np.float32)

        def layer_step():
            fastdl.losses.softmax_cross_entropy(model(x), labels, out=grad)
            model.backward(grad, input_grad=False)
            optimizer.step()
        return _synchronized(layer_step)

    def build_torch(device):
        import torch

        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(torch.nn.Linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                layers += ([torch.nn.BatchNorm1d(fan_out)] if batchnorm else []) + [torch.nn.ReLU()]
        model = torch.nn.Sequential(*layers).to(device)
        optimizer = torch.optim.Adam(model.parameters(), fused=True)
        x = torch.randn(batch, sizes[0], device=device)
        labels = torch.randint(0, sizes[-1], (batch,), device=device)

        def step():
            optimizer.zero_grad(set_to_none=False)
            with _autocast(device, compute):
                loss = torch.nn.functional.cross_entropy(model(x), labels)
            loss.backward()
            optimizer.step()
        return _torch_synchronized(step, device)

    pairs = list(zip(sizes[:-1], sizes[1:]))
    # forward, dW and dX GEMMs per layer; the first layer needs no dX
    flops = sum(2 * batch * a * b * 3 for a, b in pairs) - 2 * batch * sizes[0] * sizes[1]
    kind = ("Dense+BN+ReLU" if batchnorm else "Dense+ReLU") + (", bfloat16" if compute == "bfloat16" else "")
    build_jax = (lambda: jax_mlp_step(sizes, batch, batchnorm)) if compute == "float32" else None
    return Case(f"MLP train step ({kind}, Adam), {path}", f"{'-'.join(map(str, sizes))}, batch {batch}", GEMM, flops,
                build, build_torch, quick, build_jax=build_jax, compute=compute)


def jax_mlp_step(sizes, batch, batchnorm):
    """The same step in JAX (jit, parameters and optimizer state donated), Adam written out as PyTorch's."""
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.PRNGKey(0), len(sizes))
    params = []
    for key, fan_in, fan_out in zip(keys, sizes[:-1], sizes[1:]):
        layer = {"w": jax.random.normal(key, (fan_in, fan_out), jnp.float32) / np.sqrt(fan_in),
                 "b": jnp.zeros(fan_out, jnp.float32)}
        if batchnorm and fan_out != sizes[-1]:
            layer["gamma"], layer["beta"] = jnp.ones(fan_out, jnp.float32), jnp.zeros(fan_out, jnp.float32)
        params.append(layer)

    def loss(params, x, labels):
        h = x
        for index, layer in enumerate(params):
            h = h @ layer["w"] + layer["b"]
            if index < len(params) - 1:
                if "gamma" in layer:
                    mean, var = h.mean(0), h.var(0)
                    h = (h - mean) * jax.lax.rsqrt(var + 1e-5) * layer["gamma"] + layer["beta"]
                h = jax.nn.relu(h)
        log_probabilities = jax.nn.log_softmax(h)
        return -jnp.take_along_axis(log_probabilities, labels[:, None], 1).mean()

    def step(params, m, v, t, x, labels):
        grads = jax.grad(loss)(params, x, labels)
        t = t + 1
        m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, grads)
        v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, grads)
        correction1, correction2 = 1 - 0.9 ** t, 1 - 0.999 ** t
        params = jax.tree_util.tree_map(
            lambda p, m, v: p - 1e-3 * (m / correction1) / (jnp.sqrt(v / correction2) + 1e-8), params, m, v)
        return params, m, v, t

    compiled = jax.jit(step, donate_argnums=(0, 1, 2))
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = [params, zeros, jax.tree_util.tree_map(jnp.zeros_like, params), jnp.float32(0)]
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, sizes[0]), dtype=np.float32))
    labels = jnp.asarray(np.random.default_rng(1).integers(0, sizes[-1], batch))

    def run():
        state[:] = compiled(*state, x, labels)
        jax.block_until_ready(state[0])
    return run


def all_cases():
    cases = []
    for activation in ("relu", "tanh", "gelu"):
        for shape in ((256, 1024, 1024), (32, 64, 64)):
            for backward in (False, True):
                cases.append(dense_case(activation, shape, backward, quick=activation == "relu"))
    cases.append(dense_case("gelu", (256, 1024, 1024), True, quick=False, dropout=0.2))  # the fused dropout
    cases += [cross_entropy_case(32, 10, quick=True), cross_entropy_case(4096, 1000, quick=True)]
    for kind in ("train forward", "backward", "eval"):
        for shape in ((1024, 1024), (4096, 512), (32, 64)):
            cases.append(batchnorm_case(kind, shape, quick=shape == (1024, 1024) or kind == "train forward"))
    cases += [dropout_case(1 << 22, quick=True), dropout_case(2048, quick=False)]
    for name in OPTIMIZERS:
        for layout in LAYOUTS:
            cases.append(optimizer_case(name, layout, quick=name in ("Adam", "SGD momentum")))
    for path in STEP_PATHS:
        cases += [mlp_step_case([64, 64, 64, 10], 32, False, quick=True, path=path),
                  mlp_step_case([256, 256, 10], 128, False, quick=False, path=path),
                  mlp_step_case([784, 1024, 1024, 10], 256, False, quick=False, path=path),
                  mlp_step_case([64, 64, 64, 10], 32, True, quick=True, path=path),
                  mlp_step_case([784, 1024, 1024, 10], 256, True, quick=True, path=path)]
    # bfloat16 compute against PyTorch's autocast (the full suite)
    cases.append(dense_case("relu", (256, 1024, 1024), True, quick=False, compute="bfloat16"))
    for path in STEP_PATHS:
        for batchnorm in (False, True):
            cases.append(mlp_step_case([784, 1024, 1024, 10], 256, batchnorm, quick=False, path=path,
                                       compute="bfloat16"))
    return cases


def suite(name):
    """The cases of the 'quick' or 'full' suite."""
    if name not in ("quick", "full"):
        raise ValueError(f"fastdl bench: suite must be 'quick' or 'full', got {name!r}")
    return [case for case in all_cases() if name == "full" or case.quick]
