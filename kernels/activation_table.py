"""The activations every backend implements, by integer code.

Kernels receive an activation as ``(code, params)``: ``code`` picks the formula and ``params`` is a small
array of the data's dtype holding its constants in the order of ``PARAMS`` below, so float32 kernels never
promote to float64 and changing a constant never recompiles. Each backend implements every code; the
formulas themselves live in ``reference/activations.py`` (numpy) and ``cpu/activations.py`` (Numba).

``NEEDS_PREACTIVATION`` lists the codes whose derivative needs ``z`` (the input of the activation); the
others can differentiate from the output ``y`` alone, so a layer saves only ``y`` for them.
"""

IDENTITY = 0
BINARY_STEP = 1
SIGMOID = 2
TANH = 3
SOFTSIGN = 4
SQNL = 5
RELU = 6
BRELU = 7
LEAKY_RELU = 8
RRELU = 9
ELU = 10
BENT_IDENTITY = 11
SILU = 12
SOFT_CLIPPING = 13
GELU = 14
GELU_TANH = 15
SOFTPLUS = 16
SOFTMAX = 17

# every code by name (the constants above are this module's only upper-case names so far): the CUDA compilers get
# them as -DFASTDL_<NAME>=<code> (kernels/cuda/sources.py)
CODES = {name: code for name, code in dict(globals()).items() if name.isupper()}

# name -> (code, ((parameter name, default), ...)) in the order they sit in the params array.
PARAMS = {
    "identity": (IDENTITY, ()),
    "binary_step": (BINARY_STEP, ()),
    "sigmoid": (SIGMOID, ()),
    "tanh": (TANH, ()),
    "softsign": (SOFTSIGN, ()),
    "sqnl": (SQNL, ()),
    "relu": (RELU, ()),
    "brelu": (BRELU, ()),
    "leaky_relu": (LEAKY_RELU, (("alpha", 0.01),)),
    "rrelu": (RRELU, (("lower", 1.0 / 8.0), ("upper", 1.0 / 3.0))),
    "elu": (ELU, (("alpha", 1.0),)),
    "bent_identity": (BENT_IDENTITY, ()),
    "silu": (SILU, ()),
    "soft_clipping": (SOFT_CLIPPING, (("alpha", 1.0),)),
    "gelu": (GELU, ()),  # approximate="tanh" selects GELU_TANH
    "softplus": (SOFTPLUS, (("beta", 1.0), ("threshold", 20.0))),
    "softmax": (SOFTMAX, ()),
}

NEEDS_PREACTIVATION = frozenset(
    {SQNL, BRELU, LEAKY_RELU, RRELU, BENT_IDENTITY, SILU, SOFT_CLIPPING, GELU, GELU_TANH, SOFTPLUS, SOFTSIGN}
)

# Codes that are applied row by row rather than element by element.
ROW_WISE = frozenset({SOFTMAX})

NUM_PARAMS = 2  # length of every params array
