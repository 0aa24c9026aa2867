"""``grid_search``: every setting of a hyperparameter grid trained, the settings that share a structure as one
``Population`` each, so a grid over learning rate x weight decay is one compiled call per step, not one per
setting."""

from __future__ import annotations

import itertools
import math
import sys
import time
from typing import Callable

from .. import losses as fastdl_losses
from ..step import LOSS_KERNELS, CompiledStep, check_optimizer_holds_the_model
from .population import Population


def expand_grid(grid) -> list[dict]:
    """Every setting of ``grid``: a dict of name -> list of values (all combinations, in order), or a list of such
    dicts (their settings one after another), as scikit-learn's ``ParameterGrid``."""
    grids = [grid] if isinstance(grid, dict) else list(grid)
    settings = []
    for part in grids:
        if not isinstance(part, dict):
            raise TypeError(f"grid_search: grid must be a dict of lists or a list of dicts, got {type(part).__name__}")
        names = list(part)
        for name in names:
            values = part[name]
            if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
                raise TypeError(f"grid_search: grid[{name!r}] must be a list of values, got {values!r}")
            if len(list(values)) == 0:
                raise ValueError(f"grid_search: grid[{name!r}] is empty")
        for combination in itertools.product(*(list(part[name]) for name in names)):
            settings.append(dict(zip(names, combination)))
    return settings


def structure_key(model, loss, optimizer):
    """What members of one population must share: the generated step's source and the sizes it binds."""
    step = CompiledStep(model, loss, optimizer, quiet=True, rank_local=True)
    if step.reason is not None:
        raise ValueError(f"grid_search: this setting cannot run as a compiled step: {step.reason}")
    arguments = step.serial_arguments(2)
    shapes = tuple(getattr(value, "shape", None) for value in arguments.values)
    return arguments.source, shapes


class GridSearchResult:
    """One row per setting (``rows``: its hyperparameters, score, best epoch, seconds, diverged) and the best one.

    ``score`` is the best validation accuracy over the epochs for softmax cross-entropy, else the lowest validation
    loss (``metric`` says which); ``best_model`` and ``best_optimizer`` are the best setting's, trained (with its
    best epoch's weights when early stopping restored them); ``best_params`` its setting. ``seconds`` is the
    setting's share of its population's wall time (the population's time divided by its members)."""

    def __init__(self, rows, metric, best_index, best_model, best_optimizer):
        self.rows, self.metric, self.best_index = rows, metric, best_index
        self.best_model, self.best_optimizer = best_model, best_optimizer

    @property
    def best_params(self):
        return self.rows[self.best_index]["params"]

    @property
    def best_score(self):
        return self.rows[self.best_index]["score"]

    def table(self):
        """The rows as aligned text, best marked with *."""
        names = list(self.rows[0]["params"]) if self.rows else []
        header = names + [self.metric, "best epoch", "epochs", "seconds"]
        lines = [header]
        for index, row in enumerate(self.rows):
            score = "diverged" if row["diverged"] and row["score"] is None else (
                "-" if row["score"] is None else f"{row['score']:.4f}")
            lines.append([repr(row["params"][name]) for name in names] + [
                score + (" *" if index == self.best_index else ""), str(row["best_epoch"]), str(row["epochs"]),
                f"{row['seconds']:.3f}"])
        widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
        return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in lines)

    def __repr__(self):
        return f"GridSearchResult({len(self.rows)} settings, best {self.best_params} {self.metric} {self.best_score})"


def grid_search(build_model: Callable, build_optimizer: Callable, grid, train, val, loss=None, epochs: int = 10,
                batch_size: int = 32, early_stopping=None, seed: int | None = None, progress: bool = True,
                distributed: bool = False, member_batches: bool = False) -> GridSearchResult:
    """Train one model per setting of ``grid`` and score each on ``val``; returns a ``GridSearchResult``.

    ``build_model(params)`` returns a fresh model for one setting (a dict, e.g. ``{"lr": 1e-3, "width": 128}``),
    ``build_optimizer(model, params)`` its optimizer. Settings whose models and optimizers share a structure (layer
    kinds, sizes, activations, algorithm) train together as one ``Population`` (``Population.fit``: the same
    epochs, batch order from ``seed``, ``early_stopping`` per member); settings that differ in width form separate
    populations. ``loss`` defaults to softmax cross-entropy.

    ``distributed=True`` (inside ``mpirun``, see ``fastdl.distributed``): the populations are dealt out over the
    ranks, each rank trains its own, and every rank returns the whole table and the best model.

    >>> result = fastdl.tune.grid_search(build_model, build_optimizer,  # doctest: +SKIP
    ...     {"lr": [1e-3, 3e-3], "weight_decay": [0, 1e-4]}, train=(x, y), val=(x_val, y_val), epochs=30)
    >>> print(result.table()); result.best_model  # doctest: +SKIP
    """
    loss = fastdl_losses.softmax_cross_entropy if loss is None else loss
    fastdl_losses.check_loss(loss, "grid_search")
    if loss not in LOSS_KERNELS:
        raise ValueError(f"grid_search: loss {getattr(loss, '__name__', loss)!r} is not one of softmax_cross_entropy, "
                         "mse, binary_cross_entropy_with_logits")
    if val is None:
        raise ValueError("grid_search: pass val=(x_val, y_val); the settings are compared on it")
    settings = expand_grid(grid)
    if distributed:
        from .. import distributed as dist

        dist.init()
        seed = dist.broadcast_object(seed)
        rank, world_size = dist.rank(), dist.world_size()
    else:
        rank, world_size = 0, 1
    built = [None] * len(settings)
    groups = {}  # structure key -> setting indices, in grid order
    for index, params in enumerate(settings):
        model = build_model(params)
        optimizer = build_optimizer(model, params)
        check_optimizer_holds_the_model(model, optimizer, f"grid_search: setting {params}")
        built[index] = (model, optimizer)
        groups.setdefault(structure_key(model, loss, optimizer), []).append(index)
    populations = list(groups.values())
    rows = [None] * len(settings)
    stream = sys.stderr
    for number, members in enumerate(populations):
        if number % world_size != rank:
            continue
        if progress:
            stream.write(f"population {number + 1}/{len(populations)}: {len(members)} settings\n")
        population = Population([built[index][0] for index in members], loss, [built[index][1] for index in members])
        start = time.perf_counter()
        history = population.fit(train, val, epochs=epochs, batch_size=batch_size, early_stopping=early_stopping,
                                 seed=seed, progress=progress, member_batches=member_batches)
        seconds = time.perf_counter() - start
        population.sync()
        for member, index in enumerate(members):
            score, epoch = history.member_best(member)
            rows[index] = {"params": settings[index], "score": score, "best_epoch": epoch,
                           "epochs": len(history.members[member]), "seconds": seconds / len(members),
                           "diverged": bool(population.diverged[member]), "population": number}
    metric = "val_accuracy" if LOSS_KERNELS[loss] == "cross_entropy" else "val_loss"
    if distributed:
        gathered = dist.gather_objects(rows)
        rows = [next(part[index] for part in gathered if part[index] is not None) for index in range(len(settings))]
    best_index = _best(rows, metric)
    best_model, best_optimizer = built[best_index] if best_index is not None else (None, None)
    if distributed and best_index is not None:
        owner = rows[best_index]["population"] % world_size
        state = dist.broadcast_object((best_model.state_dict(), best_optimizer.state_dict()) if owner == rank
                                      else None, root=owner)
        best_model.load_state_dict(state[0])
        best_optimizer.load_state_dict(state[1])
    return GridSearchResult(rows, metric, best_index, best_model, best_optimizer)


def _best(rows, metric):
    best_index, best_score = None, None
    for index, row in enumerate(rows):
        score = row["score"]
        if score is None or math.isnan(score):
            continue
        if best_score is None or (score > best_score if metric == "val_accuracy" else score < best_score):
            best_index, best_score = index, score
    return best_index

