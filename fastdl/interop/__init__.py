"""Models in and out of fastdl: PyTorch modules, safetensors files, ONNX graphs.

>>> torch_model = fastdl.interop.to_torch(model)           # a torch.nn.Sequential with the same outputs
>>> model = fastdl.interop.from_torch(torch_model)         # and back
>>> fastdl.interop.save_safetensors(model, "model.safetensors")   # PyTorch's state_dict names and layout
>>> fastdl.interop.to_onnx(model, "model.onnx")            # for onnxruntime and other inference engines

Each needs its own package (PyTorch, ``safetensors``, ``onnx``), imported only when called.
"""

from .onnx_export import to_onnx
from .pytorch import from_torch, to_torch
from .safetensors_files import load_safetensors, save_safetensors

__all__ = ["from_torch", "load_safetensors", "save_safetensors", "to_onnx", "to_torch"]
