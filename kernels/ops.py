"""The contract between fastdl's layers and its kernels: every op a backend offers, with its parameters in order.

A backend (``kernels/reference``: numpy, the ground truth; ``kernels/cpu``: Numba; ``kernels/cuda``: CUDA through
CuPy, or on the CPU through the emulator) is a package whose ``__init__`` gathers exactly these ops from its
modules (``gather``); the layers call ``get_backend().kernels.<op>(...)``. tests/test_op_contract.py checks that
every backend offers every op with exactly these parameter names, in this order, and nothing else.

Each parameter is ``name:role``:
    in      an array the op reads
    out     an array the op writes (its previous contents are ignored)
    inout   an array the op updates in place (parameters, optimizer moments, running statistics, accumulated
            gradients)
    work    a scratch array the op may use (a backend may ignore it)
    scalar  a number or flag
    group   several values that travel together, as one named tuple (``ActivationArgs``)
Arrays are C-contiguous and of the data's dtype (float32 or float64) unless said otherwise: masks are uint8,
labels int64, ``seed`` and ``counter`` the counter generator's key (``counter_rng``).

Adding an op: add it here, then to each backend's module; the contract test names what is missing.
"""

from typing import NamedTuple


class ActivationArgs(NamedTuple):
    """An activation as the kernels take it (the ops' ``activation`` parameter): ``code`` picks the formula
    (``reference/activations.py``), ``params`` holds its constants (an array of the data's dtype, ``NUM_PARAMS`` long),
    and ``seed`` with the layer's ``counter`` key its random draws (RReLU's slopes)."""
    code: int
    params: object
    seed: int
    counter: int


ACTIVATION = "activation:group"
GROUPED = "hyper:in piece_bounds:in piece_groups:in"  # an optimizer update's per-group hyperparameters

# The columns of ``hyper`` for each optimizer update, in order (the Optimizer classes write them, the kernels read
# them by position). LARS's and LAMB's ops share one table each.
ADAM_COLUMNS = ("weight_decay", "l1", "decay_factor", "beta1", "beta2", "step_size", "bias_correction2_sqrt", "eps")
LARS_COLUMNS = ("weight_decay", "l1", "lr", "momentum", "trust_coefficient", "eps")
LAMB_COLUMNS = ("weight_decay", "l1", "lr", "beta1", "beta2", "bias_correction1", "bias_correction2", "eps")
HYPER_COLUMNS = {
    "sgd_step": ("weight_decay", "l1", "lr"),
    "sgd_momentum_step": ("weight_decay", "l1", "lr", "buffer_decay", "grad_coefficient", "direct", "lookahead"),
    "adagrad_step": ("weight_decay", "l1", "lr", "eps"),
    "rmsprop_step": ("weight_decay", "l1", "lr", "alpha", "eps", "momentum"),
    "adam_step": ADAM_COLUMNS,
    "adam_bfloat16_step": ADAM_COLUMNS,
    "lars_trust_ratios": LARS_COLUMNS,
    "lars_step": LARS_COLUMNS,
    "lamb_moments": LAMB_COLUMNS,
    "lamb_apply": LAMB_COLUMNS,
}

_SPECS = {
    # activations and dense layers (``dense.py`` in each backend). The dense forwards return whether x @ weight is
    # finite, tested on the product as the epilogue reads it (NaN or Inf in x always shows there): the layer scans
    # x itself only when it is not. Such results ("finiteness flags", here and in batch norm) are a bool, or on the
    # GPU a flag read when it is tested (kernels/cuda/flags.py) so that no layer waits for the device
    "activation_forward": f"x:in {ACTIVATION} y_out:out",
    "activation_backward": f"grad_y:in z:in y:in {ACTIVATION} grad_z_out:out",
    "all_finite": "x:in",
    "dense_forward": f"x:in weight:in bias:in {ACTIVATION} z_out:out y_out:out",
    "dense_backward": f"x:in weight:in grad_y:in z:in y:in {ACTIVATION} grad_z_work:work grad_weight:inout "
                      "grad_bias:inout grad_x:out accumulate:scalar",
    "dense_dropout_forward": f"x:in weight:in bias:in {ACTIVATION} p:scalar dropout_seed:scalar z_out:out a_out:out "
                             "mask_out:out y_out:out",
    "dense_dropout_backward": f"x:in weight:in grad_y:in z:in a:in mask:in p:scalar {ACTIVATION} grad_z_work:work "
                              "grad_weight:inout grad_bias:inout grad_x:out accumulate:scalar",
    # the two dense ops BOUND: everything but the per-call values fixed, returned as a function the layer keeps while
    # what it was bound to stays the same (its weights, workspaces, activation, batch size); on a small model the
    # per-call Python of the general ops costs as much as the kernels. bind_dense_forward's function is
    # forward(x, counter) -> dense_forward's finiteness flag; bind_dense_backward's is
    # backward(x, grad_y, counter, input_grad, accumulate), dense_backward with grad_x written only when input_grad
    "bind_dense_forward": "weight:in bias:in code:scalar params:in seed:scalar z_out:out y_out:out",
    "bind_dense_backward": "weight:in z:in y:in code:scalar params:in seed:scalar grad_z_work:work grad_weight:inout "
                           "grad_bias:inout grad_x:out",
    # a float32 array rounded to bfloat16 values (ties to even), kept as float32: a Dense layer's GEMM operands in
    # bfloat16 compute
    "round_bfloat16": "x:in y_out:out",
    # a Dense layer's forward in bfloat16 compute (without dropout): x and the weight as float32, rounded here to
    # bfloat16 (ties to even; rounding is idempotent, so rounded operands may come in too), then the products: a
    # bfloat16 GEMM where the backend has one, from the operands' bit patterns (uint16: x_bits, weight_bits, left for
    # the backward), else the float32 kernels on the rounded operands (x_rounded_out, weight_rounded_out, left for
    # the backward; the same exact products, float32 sums). Each backend writes what its backward reads
    "dense_forward_bfloat16": f"x:in weight:in bias:in {ACTIVATION} z_out:out y_out:out x_rounded_out:out "
                              "weight_rounded_out:out x_bits:out weight_bits:out",
    "dense_backward_bfloat16": "x:in weight:in grad_z:in grad_z_work:work grad_weight:inout grad_bias:inout "
                               "grad_x:out accumulate:scalar x_bits:inout weight_bits:inout grad_bits:work "
                               "forward_bits:scalar",
    # dropout (``dropout.py``)
    "dropout_forward": "x:in p:scalar seed:scalar counter:scalar mask_out:out y_out:out",
    "dropout_backward": "grad_y:in mask:in p:scalar grad_x:out",
    # learnable activations (``learnable.py``)
    "prelu_forward": "x:in slope:in y_out:out",
    "prelu_backward": "x:in slope:in grad_y:in grad_x:out grad_slope:inout accumulate:scalar",
    "apl_forward": "x:in hinge_slopes:in hinge_offsets:in y_out:out",
    "apl_backward": "x:in hinge_slopes:in hinge_offsets:in grad_y:in grad_x:out grad_slopes:inout "
                    "grad_offsets:inout accumulate:scalar",
    "soft_exponential_forward": "x:in alpha:in y_out:out",
    "soft_exponential_backward": "x:in alpha:in grad_y:in grad_x:out grad_alpha:inout accumulate:scalar",
    # losses (``losses.py``): each returns the loss as a Python float
    "softmax_cross_entropy": "logits:in labels:in label_smoothing:scalar reduction_sum:scalar grad_out:out",
    "mse": "pred:in target:in reduction_sum:scalar grad_out:out",
    "binary_cross_entropy_with_logits": "logits:in targets:in reduction_sum:scalar grad_out:out",
    # batch normalization (``normalization.py``): the forward passes return a finiteness flag, false for NaN or Inf in x
    "batchnorm_forward_train": f"x:in weight:in bias:in eps:scalar running_factor:scalar running_mean:inout "
                               f"running_var:inout num_batches_tracked:inout {ACTIVATION} mean_out:out "
                               "inv_std_out:out y_out:out workspace:work scratch:work totals:work",
    "batchnorm_forward_eval": f"x:in weight:in bias:in eps:scalar running_mean:in running_var:in {ACTIVATION} "
                              "mean_out:out inv_std_out:out y_out:out workspace:work",
    "batchnorm_backward": f"x:in grad_y:in y:in weight:in bias:in mean:in inv_std:in {ACTIVATION} training:scalar "
                          "grad_x:out grad_weight:inout grad_bias:inout accumulate:scalar workspace:work "
                          "scratch:work totals:work",
    # batch norm's training forward and its backward BOUND, as the dense ops above: bind_batchnorm_forward_train's
    # function is forward(x, running_factor, counter) -> batchnorm_forward_train's finiteness flag (the running
    # statistics updated); bind_batchnorm_backward's is backward(x, grad_y, counter, accumulate), batchnorm_backward
    # of a training forward
    "bind_batchnorm_forward_train": "weight:in bias:in eps:scalar running_mean:inout running_var:inout "
                                    "num_batches_tracked:inout code:scalar params:in seed:scalar mean_out:out "
                                    "inv_std_out:out y_out:out workspace:work scratch:work totals:work",
    "bind_batchnorm_backward": "y:in weight:in bias:in mean:in inv_std:in code:scalar params:in seed:scalar "
                               "grad_x:out grad_weight:inout grad_bias:inout workspace:work scratch:work totals:work",
    # optimizer updates over one flat buffer (``optim.py``): ``hyper`` holds one row per parameter group, its columns
    # the op's HYPER_COLUMNS (float64; the kernels narrow them to the parameters' dtype); piece k of the buffer
    # covers [piece_bounds[k], piece_bounds[k + 1]) and takes the row piece_groups[k] (pieces never straddle two
    # tensors, so two groups never share one)
    "sgd_step": f"param:inout grad:in grad_scale:scalar {GROUPED}",
    "sgd_momentum_step": f"param:inout grad:in buffer:inout grad_scale:scalar {GROUPED}",
    "adagrad_step": f"param:inout grad:in sum_of_squared:inout grad_scale:scalar {GROUPED}",
    "rmsprop_step": f"param:inout grad:in square_avg:inout grad_avg:inout buffer:inout grad_scale:scalar {GROUPED}",
    "adam_step": f"param:inout grad:in exp_avg:inout exp_avg_sq:inout max_exp_avg_sq:inout grad_scale:scalar {GROUPED}",
    "adam_bfloat16_step": f"param:inout grad:in exp_avg:inout exp_avg_sq:inout seed:scalar counter:scalar "
                          f"grad_scale:scalar {GROUPED}",
    "segment_sums_of_squares": "first:in second:in piece_bounds:in piece_segments:in partials:work sums:out",
    # per tensor s: the row of its group is segment_groups[s]
    "lars_trust_ratios": "sums:in adapt:in grad_scale:scalar hyper:in segment_groups:in ratios:out",
    "lars_step": f"param:inout grad:in buffer:inout ratios:in piece_segments:in grad_scale:scalar {GROUPED}",
    "lamb_moments": f"param:in grad:in exp_avg:inout exp_avg_sq:inout piece_segments:in partials:work sums:out "
                    f"grad_scale:scalar {GROUPED}",
    "lamb_trust_ratios": "sums:in ratios:out",
    "lamb_apply": f"param:inout exp_avg:in exp_avg_sq:in ratios:in piece_segments:in {GROUPED}",
}

ROLES = ("in", "out", "inout", "work", "scalar", "group")


def dense_bindings(dense_forward, dense_backward):
    """(bind_dense_forward, bind_dense_backward) calling a backend's general dense ops: for backends whose ops cost
    little next to their kernels (the reference, CUDA), or the cpu backend without a BLAS it can call."""

    def bind_dense_forward(weight, bias, code, params, seed, z_out, y_out):
        def forward(x, counter):
            return dense_forward(x, weight, bias, ActivationArgs(code, params, seed, counter), z_out, y_out)
        return forward

    def bind_dense_backward(weight, z, y, code, params, seed, grad_z_work, grad_weight, grad_bias, grad_x):
        def backward(x, grad_y, counter, input_grad, accumulate):
            dense_backward(x, weight, grad_y, z, y, ActivationArgs(code, params, seed, counter), grad_z_work,
                           grad_weight, grad_bias, grad_x if input_grad else None, accumulate)
        return backward

    return bind_dense_forward, bind_dense_backward


def batchnorm_bindings(batchnorm_forward_train, batchnorm_backward):
    """(bind_batchnorm_forward_train, bind_batchnorm_backward) calling a backend's general batch-norm ops, as
    ``dense_bindings``."""

    def bind_batchnorm_forward_train(weight, bias, eps, running_mean, running_var, num_batches_tracked, code, params,
                                     seed, mean_out, inv_std_out, y_out, workspace, scratch, totals):
        def forward(x, running_factor, counter):
            return batchnorm_forward_train(x, weight, bias, eps, running_factor, running_mean, running_var,
                                           num_batches_tracked, ActivationArgs(code, params, seed, counter), mean_out,
                                           inv_std_out, y_out, workspace, scratch, totals)
        return forward

    def bind_batchnorm_backward(y, weight, bias, mean, inv_std, code, params, seed, grad_x, grad_weight, grad_bias,
                                workspace, scratch, totals):
        def backward(x, grad_y, counter, accumulate):
            batchnorm_backward(x, grad_y, y, weight, bias, mean, inv_std, ActivationArgs(code, params, seed, counter),
                               True, grad_x, grad_weight, grad_bias, accumulate, workspace, scratch, totals)
        return backward

    return bind_batchnorm_forward_train, bind_batchnorm_backward


def _parse(spec):
    parameters = tuple(tuple(item.split(":")) for item in spec.split())
    for name, role in parameters:
        if role not in ROLES:
            raise ValueError(f"parameter {name!r} has role {role!r}, not one of {ROLES}")
    return parameters


OPS = {name: _parse(spec) for name, spec in _SPECS.items()}  # op -> ((parameter, role), ...)


def parameter_names(op):
    return tuple(name for name, _ in OPS[op])


def is_elementwise_update(op):
    """Whether ``op`` updates one flat buffer element by element from the gradient and its own state arrays:
    ``param:inout grad:in <state>:inout ... grad_scale:scalar hyper piece_bounds piece_groups``, nothing else. The
    compiled step runs these inside its one call (as ``<op without _step>_serial`` / ``_parallel`` of cpu/optim.py)."""
    parameters = OPS[op]
    head, tail = parameters[:-4], parameters[-4:]
    return (op.endswith("_step") and tail == _parse(f"grad_scale:scalar {GROUPED}") and len(head) >= 2
            and head[:2] == (("param", "inout"), ("grad", "in")) and all(role == "inout" for _, role in head[2:]))


ELEMENTWISE_UPDATES = tuple(op for op in OPS if is_elementwise_update(op))


def gather(backend, *modules):
    """{op: function} for every op, found in ``modules`` (a backend's own); ImportError naming any op missing, or
    defined differently in two of them."""
    found, problems = {}, []
    for op in OPS:
        functions = {id(getattr(module, op)): getattr(module, op) for module in modules if hasattr(module, op)}
        if len(functions) != 1:
            problems.append(f"{op} ({'missing' if not functions else 'defined twice'})")
            continue
        found[op] = next(iter(functions.values()))
    if problems:
        raise ImportError(f"the {backend} backend's ops do not match kernels/ops.py: {', '.join(problems)}")
    return found
