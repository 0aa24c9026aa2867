"""A fastdl model as the ``torch.nn.Sequential`` that computes the same function: one list of modules, each with
its constructor's arguments and the fastdl arrays behind its ``state_dict`` entries.

``to_torch``, the safetensors files and the ONNX export all read this one layout, so a file written by one is read
by the others under the same names: ``"<index>.weight"`` of a ``Linear`` is fastdl's weight transposed to PyTorch's
(out, in), a batch norm's ``num_batches_tracked`` is a 0-d int64, and an activation fused into a Dense or a batch
norm is a module of its own right after it (as is a Dense's fused dropout).
"""

from dataclasses import dataclass, field

from ..layers import Activation, Dense, PReLU, Sequential
from ..normalization import BatchNorm, Dropout

# fastdl activation -> (torch.nn module, (fastdl constant, the module's attribute of the same meaning) ...), read in
# both directions; GELU's "approximate" is "none" in PyTorch where fastdl leaves it out, softmax runs over dim -1
TORCH_ACTIVATIONS = {
    "relu": ("ReLU", ()),
    "sigmoid": ("Sigmoid", ()),
    "tanh": ("Tanh", ()),
    "softsign": ("Softsign", ()),
    "silu": ("SiLU", ()),
    "leaky_relu": ("LeakyReLU", (("alpha", "negative_slope"),)),
    "elu": ("ELU", (("alpha", "alpha"),)),
    "rrelu": ("RReLU", (("lower", "lower"), ("upper", "upper"))),
    "softplus": ("Softplus", (("beta", "beta"), ("threshold", "threshold"))),
    "gelu": ("GELU", (("approximate", "approximate"),)),
    "softmax": ("Softmax", ()),
}
FIXED_OPTIONS = {"GELU": {"approximate": "none"}, "Softmax": {"dim": -1}}  # defaults the constants may override


def torch_options(kind, constants, pairs):
    """The torch module's constructor arguments for a fastdl activation's constants."""
    return {**FIXED_OPTIONS.get(kind, {}), **{attribute: constants[name] for name, attribute in pairs
                                              if name in constants}}


def fastdl_constants(module, pairs):
    """A torch activation module's constants as fastdl names them (GELU's default "none" left out)."""
    constants = {name: getattr(module, attribute) for name, attribute in pairs}
    return {name: value for name, value in constants.items() if (name, value) != ("approximate", "none")}


@dataclass
class TorchModule:
    """One module of the equivalent ``torch.nn.Sequential``."""
    kind: str  # the torch.nn class name
    options: dict = field(default_factory=dict)  # its constructor's keyword arguments
    tensors: dict = field(default_factory=dict)  # state_dict suffix -> (fastdl array, stored transposed)
    source: object = None  # the fastdl layer it comes from (for messages)


def flatten(model):
    if isinstance(model, Sequential):
        return [leaf for layer in model.layers for leaf in flatten(layer)]
    return [model]


def _activation(spec, layer):
    if spec.name == "identity":
        return []
    if spec.name not in TORCH_ACTIVATIONS:
        raise ValueError(f"{layer.name}: the activation {spec.name!r} has no PyTorch module; supported: "
                         f"{sorted(TORCH_ACTIVATIONS)}")
    kind, pairs = TORCH_ACTIVATIONS[spec.name]
    return [TorchModule(kind, torch_options(kind, spec.params, pairs), source=layer)]


def torch_layout(model):
    """The modules of the ``torch.nn.Sequential`` equivalent to ``model`` (a fastdl Sequential, nested ones
    flattened, or one layer); ValueError naming a layer that has no PyTorch counterpart."""
    modules = []
    for layer in flatten(model):
        if isinstance(layer, Dense):
            tensors = {"weight": (layer.weight.data, True)}
            if layer.bias is not None:
                tensors["bias"] = (layer.bias.data, False)
            modules.append(TorchModule("Linear", {"in_features": layer.in_features, "out_features": layer.out_features,
                                                  "bias": layer.bias is not None}, tensors, layer))
            modules += _activation(layer.activation, layer)
            if layer.dropout:
                modules.append(TorchModule("Dropout", {"p": layer.dropout}, source=layer))
        elif isinstance(layer, BatchNorm):
            tensors = {}
            if layer.affine:
                tensors.update(weight=(layer.weight.data, False), bias=(layer.bias.data, False))
            if layer.track_running_stats:
                tensors.update(running_mean=(layer.running_mean, False), running_var=(layer.running_var, False),
                               num_batches_tracked=(layer.num_batches_tracked, False))
            modules.append(TorchModule("BatchNorm1d", {
                "num_features": layer.num_features, "eps": layer.eps, "momentum": layer.momentum,
                "affine": layer.affine, "track_running_stats": layer.track_running_stats}, tensors, layer))
            modules += _activation(layer.activation, layer)
        elif isinstance(layer, Activation):
            modules += _activation(layer.spec, layer) or [TorchModule("Identity", source=layer)]
        elif isinstance(layer, Dropout):
            modules.append(TorchModule("Dropout", {"p": layer.p}, source=layer))
        elif isinstance(layer, PReLU):
            modules.append(TorchModule("PReLU", {"num_parameters": layer.num_parameters},
                                       {"weight": (layer.weight.data, False)}, layer))
        else:
            name = getattr(layer, "name", type(layer).__name__)
            raise ValueError(f"{name}: {type(layer).__name__} has no PyTorch module to convert to")
    return modules


def state_names(modules):
    """{state_dict name: (fastdl array, transposed)} of a layout, in PyTorch's order."""
    return {f"{index}.{suffix}": value for index, module in enumerate(modules)
            for suffix, value in module.tensors.items()}
