"""A model as an ONNX graph for inference (``onnxruntime``, TensorRT, OpenVINO, ...), built with the ``onnx``
package (an optional extra) from the same layout as ``to_torch``: Gemm for each Linear, BatchNormalization in its
inference form, the activations as ONNX operators (GELU and SiLU composed from Erf/Tanh and Sigmoid, so opset 17
suffices), dropout left out. The batch dimension is dynamic."""

import math
import os

import numpy as np

from .._files import atomic_path
from ..backend import to_numpy
from ..layers import Module
from .layout import torch_layout

OPSET = 17
ONNX_DTYPES = {np.dtype(np.float32): 1, np.dtype(np.float64): 11}  # onnx.TensorProto.FLOAT, DOUBLE


def _onnx():
    try:
        import onnx
    except ImportError as error:
        raise ImportError('fastdl.interop: ONNX export needs the onnx package (pip install onnx, or pip install '
                          '".[onnx]" in a fastdl checkout)') from error
    return onnx


class _Graph:
    """Nodes and initializers, each output named after its module."""

    def __init__(self, onnx, dtype):
        self.onnx, self.dtype, self.nodes, self.initializers = onnx, dtype, [], []

    def constant(self, name, value):
        array = np.asarray(value, dtype=self.dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op, inputs, output, **attributes):
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], name=output, **attributes))
        return output


def _activation(graph, entry, h, p):
    o, kind = entry.options, entry.kind
    simple = {"ReLU": "Relu", "Sigmoid": "Sigmoid", "Tanh": "Tanh", "Softsign": "Softsign"}
    if kind in simple:
        return graph.node(simple[kind], [h], p)
    if kind == "LeakyReLU":
        return graph.node("LeakyRelu", [h], p, alpha=float(o["negative_slope"]))
    if kind == "RReLU":  # inference: the mean slope, as in eval mode
        return graph.node("LeakyRelu", [h], p, alpha=float((o["lower"] + o["upper"]) / 2))
    if kind == "ELU":
        return graph.node("Elu", [h], p, alpha=float(o["alpha"]))
    if kind == "Softmax":
        return graph.node("Softmax", [h], p, axis=-1)
    if kind == "SiLU":
        return graph.node("Mul", [h, graph.node("Sigmoid", [h], p + "_sigmoid")], p)
    if kind == "Softplus":  # (1/beta) log(1 + e^(beta z)), z itself past the threshold
        beta, threshold = graph.constant(p + "_beta", o["beta"]), graph.constant(p + "_threshold", o["threshold"])
        scaled = graph.node("Mul", [h, beta], p + "_scaled")
        soft = graph.node("Div", [graph.node("Softplus", [scaled], p + "_softplus"), beta], p + "_soft")
        return graph.node("Where", [graph.node("Greater", [scaled, threshold], p + "_linear"), h, soft], p)
    if kind == "GELU":
        half, one = graph.constant(p + "_half", 0.5), graph.constant(p + "_one", 1.0)
        if o["approximate"] == "tanh":  # 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))
            cube = graph.node("Mul", [graph.node("Mul", [h, h], p + "_square"), h], p + "_cube")
            inner = graph.node("Add", [h, graph.node("Mul", [cube, graph.constant(p + "_c", 0.044715)], p + "_cz")],
                               p + "_inner")
            core = graph.node("Tanh", [graph.node("Mul", [inner, graph.constant(p + "_k", math.sqrt(2 / math.pi))],
                                                  p + "_u")], p + "_tanh")
        else:  # 0.5 z (1 + erf(z / sqrt 2))
            core = graph.node("Erf", [graph.node("Div", [h, graph.constant(p + "_sqrt2", math.sqrt(2))], p + "_w")],
                              p + "_erf")
        return graph.node("Mul", [graph.node("Mul", [h, half], p + "_hz"),
                                  graph.node("Add", [core, one], p + "_1p")], p)
    raise ValueError(f"{entry.source.name}: {kind} has no ONNX export")


def to_onnx(model: Module, path: str | os.PathLike, input_name: str = "x", output_name: str = "y"
            ) -> str | os.PathLike:
    """Write ``model`` (in its inference form: running statistics, no dropout) as an ONNX file at ``path``
    (atomically); returns the path. Check it with ``onnxruntime.InferenceSession(path)``."""
    onnx = _onnx()
    modules = torch_layout(model)
    if not modules or modules[0].kind != "Linear":
        raise ValueError("to_onnx: the model must start with a Dense layer (it fixes the input width)")
    dtype = np.dtype(modules[0].tensors["weight"][0].dtype)
    graph, h = _Graph(onnx, dtype), input_name
    width = modules[0].options["in_features"]
    for index, entry in enumerate(modules):
        p = f"m{index}"
        t = {name: to_numpy(array) for name, (array, _) in entry.tensors.items()}
        if entry.kind == "Linear":  # fastdl's weight is (in, out): Gemm's B as it is
            inputs = [h, graph.constant(p + "_weight", t["weight"])]
            if "bias" in t:
                inputs.append(graph.constant(p + "_bias", t["bias"]))
            h, width = graph.node("Gemm", inputs, p), entry.options["out_features"]
        elif entry.kind == "BatchNorm1d":
            if not entry.options["track_running_stats"]:
                raise ValueError(f"{entry.source.name}: without running statistics batch norm has no inference form")
            c = entry.options["num_features"]
            scale, bias = (t["weight"], t["bias"]) if entry.options["affine"] else (np.ones(c), np.zeros(c))
            statistics = [graph.constant(p + "_scale", scale), graph.constant(p + "_b", bias),
                          graph.constant(p + "_mean", t["running_mean"]), graph.constant(p + "_var", t["running_var"])]
            h = graph.node("BatchNormalization", [h, *statistics], p, epsilon=float(entry.options["eps"]))
        elif entry.kind in ("Dropout", "Identity"):
            continue
        elif entry.kind == "PReLU":
            h = graph.node("PRelu", [h, graph.constant(p + "_slope", t["weight"])], p)
        else:
            h = _activation(graph, entry, h, p)
    graph.nodes.append(onnx.helper.make_node("Identity", [h], [output_name], name=output_name))
    elem = ONNX_DTYPES[dtype]
    onnx_graph = onnx.helper.make_graph(
        graph.nodes, "fastdl_model",
        [onnx.helper.make_tensor_value_info(input_name, elem, ["batch", modules[0].options["in_features"]])],
        [onnx.helper.make_tensor_value_info(output_name, elem, ["batch", width])], graph.initializers)
    proto = onnx.helper.make_model(onnx_graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   producer_name="fastdl")
    onnx.checker.check_model(proto)
    with atomic_path(path, suffix=".onnx") as temporary:
        onnx.save(proto, temporary)
    return path
