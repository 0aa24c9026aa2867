"""fastdl models to and from ``torch.nn.Sequential`` (PyTorch is not a dependency: it is imported when called)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..backend import asarray, to_numpy
from ..layers import Activation, Dense, Module, PReLU, Sequential
from ..normalization import BatchNorm, Dropout
from .layout import TORCH_ACTIVATIONS, fastdl_constants, torch_layout

if TYPE_CHECKING:
    import torch

TORCH_DTYPES = ("float32", "float64")
_BY_TORCH_KIND = {kind: name for name, (kind, _) in TORCH_ACTIVATIONS.items()}


def _torch():
    try:
        import torch
    except ImportError as error:
        raise ImportError("fastdl.interop: converting to or from PyTorch needs PyTorch "
                          "(https://pytorch.org/get-started)") from error
    return torch


def to_torch(model: Module) -> "torch.nn.Sequential":
    """A ``torch.nn.Sequential`` (CPU tensors, the model's dtype, its train/eval mode) computing what ``model``
    computes: ``Linear`` weights transposed to (out, in), each fused activation and dropout a module of its own,
    batch norms with their running statistics. ValueError naming a layer PyTorch has no module for."""
    torch = _torch()
    modules = []
    for entry in torch_layout(model):
        module = getattr(torch.nn, entry.kind)(**entry.options)
        with torch.no_grad():
            for name, (array, transposed) in entry.tensors.items():
                value = to_numpy(array)
                target = getattr(module, name)
                if name == "num_batches_tracked":
                    target.fill_(int(value.reshape(-1)[0]))
                    continue
                value = value.T if transposed else value
                setattr(module, name, torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(value)))
                        if isinstance(target, torch.nn.Parameter) else torch.from_numpy(np.ascontiguousarray(value)))
        module.train(getattr(entry.source, "training", True))
        modules.append(module)
    return torch.nn.Sequential(*modules)


def _flatten_torch(module, torch):
    if isinstance(module, torch.nn.Sequential):
        return [leaf for child in module for leaf in _flatten_torch(child, torch)]
    return [module]


def _activation_of(module, torch):
    """The fastdl activation (name, constants) of a torch activation module, or None."""
    kind = type(module).__name__
    name = _BY_TORCH_KIND.get(kind)
    if name is None or type(module) is not getattr(torch.nn, kind):
        return None
    if name == "softmax" and module.dim not in (-1, 1, None):
        raise ValueError(f"from_torch: Softmax over dim={module.dim}; fastdl's softmax runs over the last axis")
    return name, fastdl_constants(module, TORCH_ACTIVATIONS[name][1])


def _dtype_of(tensor):
    dtype = str(tensor.dtype).replace("torch.", "")
    if dtype not in TORCH_DTYPES:
        raise TypeError(f"from_torch: parameters must be float32 or float64, got {dtype}")
    return dtype


def _set(target, value):
    target[...] = asarray(np.ascontiguousarray(value.detach().cpu().numpy()).astype(target.dtype, copy=False))


def from_torch(module: "torch.nn.Module") -> Sequential:
    """A fastdl ``Sequential`` computing what ``module`` computes, on the active backend: ``module`` is a
    ``torch.nn.Sequential`` (nested ones flattened) of ``Linear``, ``BatchNorm1d``, ``Dropout``, ``Identity``,
    ``PReLU`` and the activations fastdl has (ReLU, LeakyReLU, ELU, RReLU, Sigmoid, Tanh, Softsign, SiLU, GELU,
    Softplus, Softmax). An element-wise activation right after a Linear or a BatchNorm1d (and a Dropout right after
    a Linear and its activation) is fused into that fastdl layer. ValueError naming any other module."""
    torch = _torch()
    children = _flatten_torch(module, torch)
    layers, index = [], 0
    nn = torch.nn

    def fusable_activation(position, row_wise_allowed):
        if position < len(children):
            activation = _activation_of(children[position], torch)
            if activation is not None and (row_wise_allowed or activation[0] != "softmax"):
                return activation
        return None

    while index < len(children):
        child = children[index]
        if type(child) is nn.Linear:
            activation = fusable_activation(index + 1, row_wise_allowed=False)
            after = index + 1 + (activation is not None)
            has_dropout = after < len(children) and type(children[after]) is nn.Dropout
            dropout = children[after].p if has_dropout else 0.0
            name, constants = activation or ("identity", {})
            layer = Dense(child.in_features, child.out_features, activation=Activation(name, **constants),
                          bias=child.bias is not None, dtype=_dtype_of(child.weight), dropout=dropout)
            _set(layer.weight.data, child.weight.T)
            if child.bias is not None:
                _set(layer.bias.data, child.bias)
            index = after + has_dropout
        elif type(child) is nn.BatchNorm1d:
            activation = fusable_activation(index + 1, row_wise_allowed=False)
            name, constants = activation or ("identity", {})
            dtype = _dtype_of(child.weight if child.affine else child.running_mean)
            layer = BatchNorm(child.num_features, eps=child.eps, momentum=child.momentum, affine=child.affine,
                              track_running_stats=child.track_running_stats, activation=Activation(name, **constants),
                              dtype=dtype)
            if child.affine:
                _set(layer.weight.data, child.weight)
                _set(layer.bias.data, child.bias)
            if child.track_running_stats:
                _set(layer.running_mean, child.running_mean)
                _set(layer.running_var, child.running_var)
                layer.num_batches_tracked[...] = int(child.num_batches_tracked)
            index += 1 + (activation is not None)
        elif type(child) is nn.Dropout:
            layer, index = Dropout(child.p), index + 1
        elif type(child) is nn.PReLU:
            layer = PReLU(child.num_parameters, dtype=_dtype_of(child.weight))
            _set(layer.weight.data, child.weight)
            index += 1
        elif type(child) is nn.Identity:
            index += 1
            continue
        else:
            activation = _activation_of(child, torch)
            if activation is None:
                raise ValueError(f"from_torch: module {index} ({type(child).__name__}) has no fastdl equivalent; "
                                 "supported: Linear, BatchNorm1d, Dropout, Identity, PReLU and the activations "
                                 f"{sorted(kind for kind, _ in TORCH_ACTIVATIONS.values())}")
            layer, index = Activation(activation[0], **activation[1]), index + 1
        layer.train(child.training)
        layers.append(layer)
    return Sequential(*layers)
