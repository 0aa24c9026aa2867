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
Arrays are C-contiguous and of the data's dtype (float32 or float64) unless said otherwise: masks are uint8,
labels int64, ``params`` is the activation's constants (2 elements, ``activation_table.NUM_PARAMS``) in the data's
dtype, ``seed`` and ``counter`` are the counter generator's key (``counter_rng``), ``code`` an activation code
(``activation_table``).

Adding an op: add it here, then to each backend's module; the contract test names what is missing.
"""

ACTIVATION = "code:scalar params:in seed:scalar counter:scalar"

_SPECS = {
    # activations and dense layers (``dense.py`` in each backend). The dense forwards return whether x @ weight is
    # finite, tested on the product as the epilogue reads it (NaN or Inf in x always shows there): the layer scans
    # x itself only when it is not
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
    # batch normalization (``normalization.py``): the forward passes return False for NaN or Inf in x
    "batchnorm_forward_train": f"x:in weight:in bias:in eps:scalar running_factor:scalar running_mean:inout "
                               f"running_var:inout num_batches_tracked:inout {ACTIVATION} mean_out:out "
                               "inv_std_out:out y_out:out workspace:work scratch:work totals:work",
    "batchnorm_forward_eval": f"x:in weight:in bias:in eps:scalar running_mean:in running_var:in {ACTIVATION} "
                              "mean_out:out inv_std_out:out y_out:out workspace:work",
    "batchnorm_backward": f"x:in grad_y:in y:in weight:in bias:in mean:in inv_std:in {ACTIVATION} training:scalar "
                          "grad_x:out grad_weight:inout grad_bias:inout accumulate:scalar workspace:work "
                          "scratch:work totals:work",
    # optimizer updates over one flat buffer (``optim.py``)
    "sgd_step": "param:inout grad:in grad_scale:scalar weight_decay:scalar l1:scalar lr:scalar",
    "sgd_momentum_step": "param:inout grad:in buffer:inout grad_scale:scalar weight_decay:scalar l1:scalar lr:scalar "
                         "buffer_decay:scalar grad_coefficient:scalar direct:scalar lookahead:scalar",
    "adagrad_step": "param:inout grad:in sum_of_squared:inout grad_scale:scalar weight_decay:scalar l1:scalar "
                    "lr:scalar eps:scalar",
    "rmsprop_step": "param:inout grad:in square_avg:inout grad_avg:inout buffer:inout grad_scale:scalar "
                    "weight_decay:scalar l1:scalar lr:scalar alpha:scalar eps:scalar momentum:scalar",
    "adam_step": "param:inout grad:in exp_avg:inout exp_avg_sq:inout max_exp_avg_sq:inout grad_scale:scalar "
                 "weight_decay:scalar l1:scalar decay_factor:scalar beta1:scalar beta2:scalar step_size:scalar "
                 "bias_correction2_sqrt:scalar eps:scalar",
    "adam_bfloat16_step": "param:inout grad:in exp_avg:inout exp_avg_sq:inout seed:scalar counter:scalar "
                          "grad_scale:scalar weight_decay:scalar l1:scalar decay_factor:scalar beta1:scalar "
                          "beta2:scalar step_size:scalar bias_correction2_sqrt:scalar eps:scalar",
    "segment_sums_of_squares": "first:in second:in piece_bounds:in piece_segments:in partials:work sums:out",
    "lars_trust_ratios": "sums:in adapt:in grad_scale:scalar trust_coefficient:scalar weight_decay:scalar "
                         "eps:scalar ratios:out",
    "lars_step": "param:inout grad:in buffer:inout ratios:in piece_bounds:in piece_segments:in grad_scale:scalar "
                 "weight_decay:scalar l1:scalar lr:scalar momentum:scalar",
    "lamb_moments": "param:in grad:in exp_avg:inout exp_avg_sq:inout piece_bounds:in piece_segments:in "
                    "partials:work sums:out grad_scale:scalar weight_decay:scalar l1:scalar beta1:scalar "
                    "beta2:scalar bias_correction1:scalar bias_correction2:scalar eps:scalar",
    "lamb_trust_ratios": "sums:in ratios:out",
    "lamb_apply": "param:inout exp_avg:in exp_avg_sq:in ratios:in piece_bounds:in piece_segments:in "
                  "weight_decay:scalar lr:scalar bias_correction1:scalar bias_correction2:scalar eps:scalar",
}

ROLES = ("in", "out", "inout", "work", "scalar")


def _parse(spec):
    parameters = tuple(tuple(item.split(":")) for item in spec.split())
    for name, role in parameters:
        if role not in ROLES:
            raise ValueError(f"parameter {name!r} has role {role!r}, not one of {ROLES}")
    return parameters


OPS = {name: _parse(spec) for name, spec in _SPECS.items()}  # op -> ((parameter, role), ...)


def parameter_names(op):
    return tuple(name for name, _ in OPS[op])


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
