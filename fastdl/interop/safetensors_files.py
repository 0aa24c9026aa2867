"""A model's tensors in a safetensors file, under the names and in the layout of ``to_torch(model).state_dict()``:
PyTorch (``safetensors.torch.load_file``), numpy and other frameworks read it, and a file PyTorch wrote for the same
architecture loads back. The ``safetensors`` package does the format (an optional extra)."""

import os

import numpy as np

from .._files import atomic_path
from ..backend import asarray, to_numpy
from ..layers import Module
from .layout import state_names, torch_layout


def _safetensors_numpy():
    try:
        import safetensors.numpy
    except ImportError as error:
        raise ImportError('fastdl.interop: safetensors files need the safetensors package (pip install safetensors, or '
                          'pip install ".[safetensors]" in a fastdl checkout)') from error
    return safetensors.numpy


def save_safetensors(model: Module, path: str | os.PathLike) -> str | os.PathLike:
    """Write ``model``'s parameters and batch-norm statistics to ``path`` (atomically: readers see the old file or
    the new one); returns the path."""
    files = _safetensors_numpy()
    tensors = {}
    for name, (array, transposed) in state_names(torch_layout(model)).items():
        value = to_numpy(array)
        if name.endswith("num_batches_tracked"):
            value = value.reshape(())
        tensors[name] = np.array(value.T if transposed else value, order="C")  # (ascontiguousarray makes 0-d 1-d)
    data = files.save(tensors, metadata={"format": "pt", "producer": "fastdl"})
    with atomic_path(path, suffix=".safetensors") as temporary:
        with open(temporary, "wb") as file:
            file.write(data)
    return path


def load_safetensors(model: Module, path: str | os.PathLike) -> Module:
    """Load ``path`` (written by ``save_safetensors``, or by PyTorch for the same architecture) into ``model``.
    Every name, shape and dtype is checked before anything changes: a ValueError lists what does not match."""
    tensors = _safetensors_numpy().load_file(path)
    expected = state_names(torch_layout(model))
    problems = [f"missing {name}" for name in expected if name not in tensors]
    problems += [f"unexpected {name}" for name in tensors if name not in expected]
    values = {}
    for name, (array, transposed) in expected.items():
        if name not in tensors:
            continue
        value = tensors[name]
        value = value.reshape(1) if name.endswith("num_batches_tracked") else value.T if transposed else value
        if value.shape != array.shape:
            problems.append(f"{name} has shape {tensors[name].shape}, the model needs "
                            f"{array.shape[::-1] if transposed else array.shape}")
        elif value.dtype.kind != np.dtype(array.dtype).kind:
            problems.append(f"{name} has dtype {value.dtype}, the model holds {array.dtype}")
        values[name] = value
    if problems:
        raise ValueError(f"load_safetensors: {path} does not fit the model: {'; '.join(problems)}")
    for name, (array, _) in expected.items():
        array[...] = asarray(np.ascontiguousarray(values[name]).astype(array.dtype, copy=False))
    return model
