"""Checkpoints: a model's parameters and buffers, an optimizer's state and user data in one .npz file.

Written atomically (a temporary file in the same folder, fsync, then rename), so a crash mid-write leaves the
previous checkpoint intact. The random streams of the model's layers (each layer's seed and counter: dropout
masks, RReLU slopes) are saved too, so a resumed run draws the masks the uninterrupted run would have. Loading
checks everything before changing anything: a truncated file, a model of another shape or an optimizer of
another kind is a ValueError and the model and optimizer stay as they were.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import numpy as np

from ._files import atomic_path

if TYPE_CHECKING:  # for the type hints only
    from .layers import Module
    from .optim.optimizer import Optimizer

FORMAT = "fastdl-checkpoint-1"


def _npz(path):
    """``path`` with the .npz suffix numpy's own savez adds when it is missing."""
    path = os.fspath(path)
    return path if path.endswith(".npz") else path + ".npz"


def _check_arguments(function, path, model, optimizer):
    """The path comes first (``torch.save`` takes the object first: a call written that way is named here)."""
    from .layers import Module
    from .optim.optimizer import Optimizer

    if not isinstance(path, (str, os.PathLike)):
        swapped = " (the path comes first)" if isinstance(path, Module) else ""
        raise TypeError(f"fastdl.{function}: the call is {function}(path, model, optimizer=None); path must be a "
                        f"str or os.PathLike, got {type(path).__name__}{swapped}")
    if not isinstance(model, Module):
        raise TypeError(f"fastdl.{function}: model must be a fastdl Module, got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, Optimizer):
        raise TypeError(f"fastdl.{function}: optimizer must be a fastdl optimizer or None, got "
                        f"{type(optimizer).__name__}")


def save(path: str | os.PathLike, model: Module, optimizer: Optimizer | None = None, extra=None) -> str:
    """Write ``model`` (and ``optimizer``, and JSON-serializable ``extra``) to ``path``, a .npz file (the suffix is
    added when missing, as ``numpy.savez`` does); returns the path written. ``load`` finds it by either name."""
    _check_arguments("save", path, model, optimizer)
    arrays = {f"model/{name}": value for name, value in model.state_dict().items()}
    meta = {"format": FORMAT, "extra": extra, "random": _random_streams(model)}
    if optimizer is not None:
        state = optimizer.state_dict()
        arrays.update({f"optimizer/{key}": value for key, value in state.pop("state").items()})
        meta["optimizer"] = state
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path = _npz(path)
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as file:
            np.savez(file, **arrays)
    return path


def _random_modules(model):
    return [module for module in model.modules() if hasattr(module, "counter")]


def _random_streams(model):
    """[[seed, counter], ...] of every layer that draws random numbers, in the model's order."""
    return [[int(module.seed), int(module.counter)] for module in _random_modules(model)]


def _check_random_streams(streams, model, path):
    modules = _random_modules(model)
    if len(streams) != len(modules) or not all(
            len(stream) == 2 and all(isinstance(value, int) and value >= 0 for value in stream) for stream in streams):
        raise ValueError(f"fastdl.load: {path} holds {len(streams)} random streams (seed, counter) for a model with "
                         f"{len(modules)} randomized layers")
    return modules


def _read(path):
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except Exception as error:  # a damaged file fails in zipfile, zlib, numpy or json with their own types
        # (BadZipFile, NotImplementedError for a flipped compression method, zlib.error, EOFError, ...)
        raise ValueError(f"fastdl.load: {path} is not a readable fastdl checkpoint "
                         f"({type(error).__name__}: {error})") from error
    if meta.get("format") != FORMAT:
        raise ValueError(f"fastdl.load: {path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    return arrays, meta


def load(path: str | os.PathLike, model: Module, optimizer: Optimizer | None = None):
    """Restore ``model`` (and ``optimizer``) from ``path`` (or ``path`` + ".npz", what ``save(path)`` wrote);
    returns the ``extra`` saved with it."""
    _check_arguments("load", path, model, optimizer)
    if not os.path.exists(path) and os.path.exists(_npz(path)):
        path = _npz(path)
    if not os.path.exists(path):  # the error a resume written as `except FileNotFoundError: start afresh` expects
        tried = f"{path} (nor {_npz(path)})" if _npz(path) != str(path) else str(path)
        raise FileNotFoundError(f"fastdl.load: no checkpoint at {tried}")
    arrays, meta = _read(path)
    model_state = {name[len("model/"):]: value for name, value in arrays.items() if name.startswith("model/")}
    if optimizer is not None and "optimizer" not in meta:
        raise ValueError(f"fastdl.load: {path} holds no optimizer state")
    # checkpoints written before the random streams were saved have none: those layers keep theirs
    streams = meta.get("random")
    random_modules = _check_random_streams(streams, model, path) if streams is not None else []
    before = model.state_dict()
    model.load_state_dict(model_state)
    if optimizer is not None:
        optimizer_state = dict(meta["optimizer"])
        optimizer_state["state"] = {name[len("optimizer/"):]: value for name, value in arrays.items()
                                    if name.startswith("optimizer/")}
        try:
            optimizer.load_state_dict(optimizer_state)
        except Exception:
            model.load_state_dict(before)  # nothing is lost: the model goes back to what it was
            raise
    for module, (seed, counter) in zip(random_modules, streams or []):
        module.seed, module.counter = seed, counter
    return meta.get("extra")
