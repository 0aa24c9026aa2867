"""Activations by name: resolves a name and its constants to the ``(code, params)`` every kernel takes.

Element-wise activations with fixed constants are fused into Dense (``Dense(..., activation="relu")``) or
used as a layer (``fastdl.Activation("leaky_relu", alpha=0.2)``). The ones with learnable parameters are
layers of their own: ``fastdl.PReLU``, ``fastdl.APL``, ``fastdl.SoftExponential``.

=============== ======================================================= ============================
name            f(z)                                                    f'(z)
=============== ======================================================= ============================
identity        z                                                       1
binary_step     1 if z >= 0 else 0                                      0 (undefined at 0)
sigmoid         1 / (1 + e^-z)                                          f (1 - f)
tanh            tanh z                                                  1 - f^2
softsign        z / (1 + |z|)                                           1 / (1 + |z|)^2
sqnl            1 (z > 2); z - z^2/4 (0..2); z + z^2/4 (-2..0); -1      1 -+ z/2 inside [-2, 2], else 0
relu            max(0, z)                                               1 if z > 0 else 0 (PyTorch)
brelu           relu(z) in even columns, -relu(-z) in odd ones          relu'(z), relu'(-z)
leaky_relu      z if z > 0 else alpha z             (alpha=0.01)        1 or alpha
rrelu           z if z >= 0 else a z, a ~ U(lower, upper) in training,  1 or a
                a = (lower + upper) / 2 in eval     (1/8, 1/3)
elu             z if z > 0 else alpha (e^z - 1)     (alpha=1)           1 or f + alpha
bent_identity   (sqrt(z^2 + 1) - 1) / 2 + z                             z / (2 sqrt(z^2 + 1)) + 1
silu (swish)    z sigmoid(z)                                            s (1 + z (1 - s))
soft_clipping   (1/alpha) log((1 + e^{alpha z}) / (1 + e^{alpha (z-1)}))  s(alpha z) - s(alpha (z - 1))
gelu            z Phi(z); approximate="tanh": 0.5 z (1 + tanh(sqrt(2/pi)(z + 0.044715 z^3)))
softplus        (1/beta) log(1 + e^{beta z}), z where beta z > threshold  sigmoid(beta z)
softmax         e^{z_j} / sum_k e^{z_k} over each row (outputs)         y (dy - sum(dy y))
=============== ======================================================= ============================

Where the lecture table (soft exponential's "+alpha" term, ReLU'(0)) and PyTorch differ, fastdl follows the
original papers and PyTorch; see each layer's docstring.
"""

import numpy as np

from .kernels.ops import ActivationArgs
from .kernels.reference import activations as table

_NO_ARGS = {}
_new_tuple = tuple.__new__

LEARNABLE = {"prelu": "fastdl.PReLU", "apl": "fastdl.APL", "soft_exponential": "fastdl.SoftExponential"}
RELU_LIKE = frozenset({"relu", "brelu", "leaky_relu", "rrelu", "elu", "silu", "swish", "gelu"})
ALIASES = {"swish": "silu", "linear": "identity", "none": "identity"}


class ActivationSpec:
    """A resolved activation: ``name``, ``code`` and the constants it was given (``params``, a dict)."""

    def __init__(self, name, **params):
        name = ALIASES.get(name, name)
        if name in LEARNABLE:
            raise ValueError(f"activation {name!r} has learnable parameters: use the layer {LEARNABLE[name]}")
        if name not in table.PARAMS:
            raise ValueError(f"unknown activation {name!r}; choose one of {sorted(table.PARAMS)} or "
                             f"{sorted(LEARNABLE)}")
        code, defaults = table.PARAMS[name]
        approximate = params.pop("approximate", "none") if name == "gelu" else "none"
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        allowed = [key for key, _ in defaults]
        unknown = set(params) - set(allowed)
        if unknown:
            raise ValueError(f"activation {name!r} takes {allowed or 'no parameters'}, got {sorted(unknown)}")
        self.name = name
        self.code = table.GELU_TANH if approximate == "tanh" else code
        self.params = {key: float(params.get(key, default)) for key, default in defaults}
        if approximate == "tanh":
            self.params["approximate"] = "tanh"
        self._check_constants()

    def _check_constants(self):
        p = self.params
        if self.name in ("soft_clipping", "softplus") and p.get("alpha", p.get("beta", 1.0)) <= 0:
            raise ValueError(f"{self.name}: its constant must be positive, got {p}")
        if self.name == "rrelu" and not 0 <= p["lower"] <= p["upper"]:
            raise ValueError(f"rrelu: need 0 <= lower <= upper, got lower={p['lower']}, upper={p['upper']}")

    @property
    def needs_preactivation(self):
        return self.code in table.NEEDS_PREACTIVATION

    @property
    def relu_like(self):
        return self.name in RELU_LIKE

    def kernel_args(self, dtype, training):
        """(code, params array of ``dtype``) for the kernels; RReLU in eval is leaky ReLU with the mean slope.

        Memoized per (dtype, training): the hot path builds no array per call.
        """
        key = (np.dtype(dtype), bool(training))
        cached = self.__dict__.setdefault("_kernel_args", {}).get(key)
        if cached is None:
            cached = self._kernel_args[key] = self._build_kernel_args(key[0], key[1])
        return cached

    def for_kernels(self, dtype, training, seed, counter):
        """The ``ActivationArgs`` the kernels take: the code and constants of ``kernel_args`` with the layer's random
        key (``seed``, ``counter``). Every layer call builds one: the memo is read with the caller's own key, and the
        tuple is made without the named tuple's Python-level constructor."""
        cached = self.__dict__.get("_kernel_args", _NO_ARGS).get((dtype, training))
        if cached is None:
            cached = self.kernel_args(dtype, training)
            self._kernel_args[dtype, training] = cached  # the caller's key too (a layer passes the same one)
        return _new_tuple(ActivationArgs, (*cached, seed, counter))

    def _build_kernel_args(self, dtype, training):
        values = [v for k, v in self.params.items() if k != "approximate"]
        code = self.code
        if code == table.RRELU and not training:
            code, values = table.LEAKY_RELU, [(values[0] + values[1]) / 2]
        values += [0.0] * (table.NUM_PARAMS - len(values))
        return code, np.array(values, dtype=dtype)

    def __repr__(self):
        extra = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"{self.name!r}{extra}"


def resolve(activation):
    """A name, an ``ActivationSpec`` or an ``fastdl.Activation`` layer -> ``ActivationSpec``; None is the identity
    (Keras' ``activation=None``: no activation)."""
    if activation is None:
        return ActivationSpec("identity")
    if isinstance(activation, ActivationSpec):
        return activation
    spec = getattr(activation, "spec", None)
    if isinstance(spec, ActivationSpec):
        return spec
    if isinstance(activation, str):
        return ActivationSpec(activation.lower())
    raise TypeError(f"activation must be a name, None or a fastdl.Activation, got {type(activation).__name__}")
