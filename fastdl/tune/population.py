"""``Population``: K models of one structure trained in lockstep, every member's step in ONE compiled call.

Small dense networks are where people run many trainings (grids over learning rate, weight decay, seeds). Each
member alone is too small to keep two cores busy, and paying Python's per-step cost K times dominates; a
population pays it once and runs the members side by side (``population_step.py``).
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

from .. import _checks
from .. import losses as fastdl_losses
from ..backend import get_backend
from ..data import batches
from ..evaluation_emitters import evaluation_arguments
from ..kernels.cpu.population import RAN, ROWS_MISSING, add_batch_scores, add_correct
from ..seeding import default_seed
from ..step import LAYER_PATH, LOSS_KERNELS, CompiledStep, check_optimizer_holds_the_model, flat_layers, load_generated
from ..training import EVALUATION_BATCH, EarlyStopping, History
from . import population_step
from .update_rows import UpdateRows


_NO_LABELS = np.zeros((1, 0), np.int64)  # what fit's running sums read as labels when the loss is not classification


class Population:
    """``Population(models, loss, optimizers)``: train K models of identical structure together.

    The models must match in layer kinds, sizes, activations and options (initial weights, dropout rates, seeds may
    differ); the optimizers must be of one algorithm over one flat buffer each (SGD, Adagrad, RMSprop, Adam, AdamW),
    with any hyperparameters per member (lr, weight decay, betas, momentum, ``max_grad_norm``). ``loss`` is one of
    ``fastdl.losses.softmax_cross_entropy``, ``mse``, ``binary_cross_entropy_with_logits``; the ``cpu`` backend.

    ``population.step(x, y)`` trains every active member on the batch in one compiled call and returns the K losses
    (NaN for a member that did not train); ``step(xs, ys)``, with a leading member axis (xs of shape (K, batch,
    features)), gives member k the batch ``(xs[k], ys[k])``. Member k ends bit-identical to training
    ``models[k]`` alone with ``compile_step`` on the same batches: it runs the same kernels in the same order.

    While it trains, the population holds the members' training state (weights, gradients, moments, running
    statistics) in stacked buffers. ``population.models`` and ``population.optimizers`` write it back to the
    members first, so they are ordinary fastdl models and optimizers, current as of the last step. Hyperparameters
    set on a member's optimizer (``optimizers[k].lr = ...``) take effect at the next step; after changing a
    member's weights or state (through ``population.models``), call ``population.reload()``.

    A member whose forward produces NaN or Inf (a learning rate too large) is left as it was before that step and
    marked ``diverged``; it stops training, the others go on. ``population.active`` says which members still train;
    ``population.stop(k)`` stops one.

    >>> population = Population(models, fastdl.losses.softmax_cross_entropy, optimizers)  # doctest: +SKIP
    >>> losses = population.step(x, y)  # doctest: +SKIP
    """

    def __init__(self, models, loss, optimizers):
        models, optimizers = list(models), list(optimizers)
        if not models:
            raise ValueError("Population: needs at least one model")
        if len(models) != len(optimizers):
            raise ValueError(f"Population: got {len(models)} models but {len(optimizers)} optimizers")
        if get_backend().name != "cpu":
            raise ValueError(f"Population: runs on the 'cpu' backend, the active one is '{get_backend().name}'")
        fastdl_losses.check_loss(loss, "Population")
        if loss not in LOSS_KERNELS:
            raise ValueError(f"Population: loss {getattr(loss, '__name__', loss)!r} is not one of "
                             f"softmax_cross_entropy, mse, binary_cross_entropy_with_logits")
        for member, optimizer in enumerate(optimizers):
            if type(optimizer) is not type(optimizers[0]):
                raise ValueError(f"Population: member {member}'s optimizer is {type(optimizer).__name__}, member 0's "
                                 f"{type(optimizers[0]).__name__}; the members share one algorithm")
            if _state_names(optimizer) != _state_names(optimizers[0]):
                raise ValueError(f"Population: member {member}'s {type(optimizer).__name__} keeps the state "
                                 f"{_state_names(optimizer)}, member 0's {_state_names(optimizers[0])}; options that "
                                 "add state (momentum on or off, centered, amsgrad) must match, their values may "
                                 "differ")
        owners = {}
        for member, model in enumerate(models):  # each member's state must be its own: it is stacked row by row
            for parameter in model.parameters():
                other = owners.setdefault(id(parameter), member)
                if other != member:
                    raise ValueError(f"Population: members {other} and {member} share a parameter; give each member "
                                     "its own model")
        _check_same_structure(models)
        first_layout = _group_layout(models[0], optimizers[0])
        for member, (model, optimizer) in enumerate(zip(models, optimizers)):
            check_optimizer_holds_the_model(model, optimizer, f"Population: member {member}")
            layout = _group_layout(model, optimizer)
            if layout != first_layout:
                raise ValueError(f"Population: member {member}'s {type(optimizer).__name__} groups the model's "
                                 f"parameters as {layout} (parameter indices), member 0's as {first_layout}; the "
                                 "members' parameter groups must match (their hyperparameters may differ)")
        self._models, self._optimizers, self.loss = models, optimizers, loss
        self._steps = []
        for member, (model, optimizer) in enumerate(zip(models, optimizers)):
            step = CompiledStep(model, loss, optimizer, quiet=True, rank_local=True)
            if step.reason is not None:
                raise ValueError(f"Population: member {member} cannot run as a compiled step: {step.reason}")
            if step.fused_update is None:
                raise ValueError(f"Population: {type(optimizer).__name__} over these parameters does not update in "
                                 "one element-wise kernel over one flat buffer (SGD, Adagrad, RMSprop, Adam, AdamW "
                                 "over parameters of one dtype do)")
            optimizer.check_ready(get_backend())
            self._steps.append(step)
        self.dtype = self._steps[0].dtype
        self.in_features = self._steps[0].layers[0].in_features
        self.size = len(models)
        self._roots = population_step.StackedRoots(self.size)
        self._arguments = {}  # per batch size: PopulationArguments
        self._evaluations = {}  # per batch size: (kernel, counters, its values after ``values``, the outputs' view)
        self._kernels = {}  # per source: the loaded module
        self.active = np.ones(self.size, bool)
        self.diverged = np.zeros(self.size, bool)
        self._dirty, self._last_arguments = False, None
        self._update_rows = UpdateRows(optimizers)
        self._read_python_state()
        self._losses = np.zeros(self.size)

    # -- the members' own state ---------------------------------------------------------------------------------
    def _read_python_state(self):
        """The counters and step counts that live in Python objects, not in arrays, as the members hold them."""
        first = self._steps[0]
        self._counted = [index for index, _ in first.counted_layers]
        self._tracking = [index for index, _ in first.tracking_layers]
        self._counters = np.array([[step.layers[index].counter for index in self._counted] for step in self._steps],
                                  dtype=np.uint64).reshape(self.size, len(self._counted))
        self._counted_layers = np.array(self._counted, np.int64)
        self._optimizer_steps = np.array([optimizer.steps for optimizer in self._optimizers], np.int64)
        self._skipped_steps = np.array([optimizer.skipped_steps for optimizer in self._optimizers], np.int64)
        norms = [getattr(optimizer, "last_grad_norm", None) for optimizer in self._optimizers]
        self._norm_known = np.array([norm is not None for norm in norms])
        self._grad_norms = np.array([math.nan if norm is None else norm for norm in norms], np.float64)

    def sync(self):
        """Write the population's state back into the members' models and optimizers (done by ``models`` and
        ``optimizers`` when a step ran since)."""
        if not self._dirty:
            return
        self._roots.write_back()
        for member, step in enumerate(self._steps):
            for column, index in enumerate(self._counted):
                step.layers[index].counter = int(self._counters[member, column])
            optimizer = self._optimizers[member]
            optimizer.steps, optimizer.skipped_steps = int(self._optimizer_steps[member]), int(
                self._skipped_steps[member])
            if self._norm_known[member]:
                optimizer.last_grad_norm = float(self._grad_norms[member])
        self._dirty = False

    def reload(self):
        """Read the members' state back in, after changing a member's weights, moments or counters directly."""
        self.sync()
        self._roots.read_in()
        self._read_python_state()

    @property
    def models(self):
        """The members' models, current as of the last step."""
        self.sync()
        return self._models

    @property
    def optimizers(self):
        """The members' optimizers, current as of the last step."""
        self.sync()
        return self._optimizers

    def stop(self, member):
        """Stop training member ``member`` (its state stays as it is)."""
        self.active[member] = False

    # -- the step -----------------------------------------------------------------------------------------------
    def _arguments_for(self, batch):
        arguments = self._arguments.get(batch)
        if arguments is None:
            member_arguments = [step.serial_arguments(batch) for step in self._steps]
            if any(arguments is LAYER_PATH for arguments in member_arguments):
                raise ValueError(f"Population: a batch of {batch} sample cannot train batch norm (one sample has no "
                                 "variance)")
            arguments = population_step.build(member_arguments, self._roots)
            self._configure(arguments)
            self._arguments[batch] = arguments
        return arguments

    def _configure(self, arguments):
        """The flags compile_step writes each call that never change in a population (the clipping and skipping
        columns are written every step: they are the members' optimizers' options, which may change)."""
        arguments.hyper[:, 2:4] = 0.0  # no accumulation
        arguments.hyper[:, 4] = 1.0  # the compiled step updates
        arguments.hyper[:, 5] = 1.0  # grad_scale

    def _kernel(self, source, name="population_step"):
        module = self._kernels.get(source)
        if module is None:
            module = self._kernels[source] = load_generated(source)
        return getattr(module, name)

    def _check_batch(self, x, y, caller="Population.step"):
        """(x, y, shared) checked: x (batch, features) shared by all members or (members, batch, features)."""
        shared = getattr(x, "ndim", None) == 2
        where = "xs" if getattr(x, "ndim", None) == 3 else "x"
        if getattr(x, "ndim", None) not in (None, 2, 3):  # neither form: name both
            raise ValueError(f"{caller}: x must be one batch for every member, shape (batch, {self.in_features}), or "
                             f"one per member, shape ({self.size}, batch, {self.in_features}); got shape "
                             f"{tuple(x.shape)}")
        if not shared:
            _checks.array(x, caller, where, ndim=3, dtype=self.dtype, last_dim=self.in_features)
            if x.shape[0] != self.size:
                raise ValueError(f"{caller}: xs must have one batch per member, shape ({self.size}, batch, "
                                 f"{self.in_features}), got {tuple(x.shape)}")
        else:
            _checks.array(x, caller, where, ndim=2, dtype=self.dtype, last_dim=self.in_features)
        rows = x.shape[-2]
        if rows == 0:
            raise ValueError(f"{caller}: {where} has no rows (shape {tuple(x.shape)})")
        leading = x.shape[:-1]
        if shared and not np.isfinite(x).all():
            raise ValueError(f"{caller}: x contains NaN or Inf (shape {tuple(x.shape)})")
        if not shared:
            finite = np.isfinite(x).reshape(self.size, -1).all(axis=1)
            if not finite.all():
                raise ValueError(f"{caller}: xs[{int(np.argmin(finite))}] contains NaN or Inf (shape "
                                 f"{tuple(x.shape)})")
        width = self._steps[0].output_width
        if LOSS_KERNELS[self.loss] == "cross_entropy":
            _checks.backend_array(y, caller, "y")
            if y.shape != leading or y.dtype.kind not in "iu":
                raise ValueError(f"{caller}: y must be integer labels of shape {leading} for x of shape "
                                 f"{tuple(x.shape)}, got {y.dtype} {tuple(y.shape)}")
            if y.size and (y.min() < 0 or y.max() >= width):
                raise ValueError(f"{caller}: labels must lie in [0, {width}), got values in "
                                 f"[{int(y.min())}, {int(y.max())}]")
            y = y.astype(np.int64, copy=False)
        else:
            _checks.array(y, caller, "y", dtype=self.dtype)
            if y.shape != leading + (width,):
                raise ValueError(f"{caller}: y must have the outputs' shape {leading + (width,)}, got "
                                 f"{tuple(y.shape)}")
            if not np.isfinite(y).all():
                raise ValueError(f"{caller}: y contains NaN or Inf (shape {tuple(y.shape)})")
        return np.ascontiguousarray(x), np.ascontiguousarray(y), shared

    def step(self, x, y):
        """Train every active member on (x, y), or member k on (xs[k], ys[k]); returns the K losses (float64,
        NaN where a member did not train)."""
        return self._run(*self._check_batch(x, y))

    def _run(self, x, y, shared):
        """``step`` on a checked batch (``fit`` checks its data once, not every batch)."""
        arguments = self._arguments_for(x.shape[-2])
        active = self.active
        counters, factors, status = arguments.counters, arguments.factors, arguments.status
        for index in self._tracking:  # each running-statistics factor as compile_step sets it
            for member, step in enumerate(self._steps):
                layer = step.layers[index]
                if layer.momentum is None:  # the cumulative average reads the count the population holds
                    tracked = arguments.arrays[f"l{index}_num_batches_tracked"]
                    factors[member, index] = 1.0 / float(tracked[member, 0] + 1)
                else:
                    factors[member, index] = layer.momentum
        rows = self._update_rows
        rows.refresh()
        kernel = self._kernel(arguments.source)
        self._dirty, self._last_arguments = True, arguments
        if shared:  # a member axis of length 1, read by every member
            x, y = x[None], y[None]
        # the random counters, update rows, options and counts are set and recorded inside (kernels/cpu/population.py)
        call = (x, y, np.int64(not shared), counters, factors, arguments.hyper, status, active, self._losses,
                arguments.arrays["update_hyper"], self._counters, self._counted_layers, self._optimizer_steps,
                self._skipped_steps, rows.measures_norm, self._grad_norms, self._norm_known, self.diverged,
                rows.clipping, rows.skipping)
        outcome = kernel(*call, rows.rows_window, rows.rows_first, *arguments.values)
        if outcome == ROWS_MISSING:  # a member's step number is past the rows computed ahead: nothing ran
            rows.compute_window(self._optimizer_steps + 1)
            outcome = kernel(*call, rows.rows_window, rows.rows_first, *arguments.values)
        if outcome != RAN:  # checked above; a kernel disagreeing
            raise RuntimeError("Population.step: a member's step refused its batch after the checks passed")
        return self._losses.copy()

    # -- scoring ------------------------------------------------------------------------------------------------
    def _evaluation_for(self, batch):
        evaluation = self._evaluations.get(batch)
        if evaluation is None:
            kind = LOSS_KERNELS[self.loss]
            member_arguments = [evaluation_arguments(step.layers, kind, batch, self.dtype) for step in self._steps]
            source, counters, values, output = population_step.build_evaluation(member_arguments, self._roots)
            kernel = self._kernel(source, "population_evaluation")
            evaluation = self._evaluations[batch] = (kernel, counters, values, output)
        return evaluation

    def _score(self, x, y, members):
        """The members in ``members`` (a mask) scored on checked (x, y) in eval mode, all in one compiled call per
        chunk of rows, from the population's own buffers: (mean losses, fractions correct or None), NaN for the
        other members. Each is ``evaluate(models[k], x, y, loss)``'s, bit for bit: the same kernels, the same chunks,
        the same sums (a member whose batch norm meets NaN or Inf scores NaN, where ``evaluate`` raises)."""
        total, correct = np.zeros(self.size), np.zeros(self.size, np.int64)
        values = np.full(self.size, math.nan)
        for start in range(0, len(x), EVALUATION_BATCH):
            xb, yb = x[start:start + EVALUATION_BATCH], y[start:start + EVALUATION_BATCH]
            kernel, counters, bound, output = self._evaluation_for(len(xb))
            counters[:, self._counted_layers] = self._counters  # each layer's counter as the member holds it
            kernel(xb, yb, counters, members, values, *bound)
            total += values * len(yb)  # evaluate's total_loss += float(value) * len(yb)
            if LOSS_KERNELS[self.loss] == "cross_entropy":
                add_correct(output, yb, members, correct)
        losses = np.where(members, total / len(x), math.nan)
        if LOSS_KERNELS[self.loss] != "cross_entropy":
            return losses, None
        return losses, np.where(members, correct / len(x), math.nan)

    def score(self, x, y):
        """Every member that has not diverged scored on (x, y) in eval mode: ``{"loss": array, "accuracy": array}``
        (accuracy for softmax cross-entropy), one value per member, NaN for a diverged member; each is
        ``fastdl.evaluate(models[k], x, y, loss)``'s value, computed for all members in one compiled call per 1024
        rows."""
        x, y, shared = self._check_batch(x, y, "Population.score")
        if not shared:
            raise ValueError(f"Population.score: x must be one data set for every member, shape (samples, "
                             f"{self.in_features}), got {tuple(x.shape)}")
        losses, accuracies = self._score(x, y, ~self.diverged)
        return {"loss": losses} if accuracies is None else {"loss": losses, "accuracy": accuracies}

    # -- training for epochs --------------------------------------------------------------------------------------
    def fit(self, train, val=None, epochs: int = 10, batch_size: int = 32, early_stopping=None,
            seed: int | None = None, progress: bool = True, member_batches: bool = False) -> PopulationHistory:
        """Train every member for ``epochs`` on ``train=(x, y)``; returns a ``PopulationHistory``.

        Each epoch shuffles ``train`` into mini-batches (one order for all members, or each member its own with
        ``member_batches=True``), steps the population on each, then scores every member on ``val`` (loss, and
        accuracy for softmax cross-entropy; ``evaluate``'s values, computed for all members in one call). Member k's
        records are ``fastdl.fit``'s (``history.members[k]``).
        ``early_stopping`` (a patience, or a ``fastdl.EarlyStopping`` whose settings every member copies) stops a
        member whose validation loss has not improved for that many epochs; the others go on, and each stopped
        member gets the weights of its best epoch back at the end (``restore_best``). A member that diverges stops
        at once. One progress line per epoch covers the population; ``history.best_member`` is the member with the
        best validation score (accuracy for classification, else the lowest loss).
        """
        # every batch is drawn from checked data (an empty x is refused here too)
        for name, data in (("train", train), ("val", val)):
            if data is not None and getattr(data[0], "ndim", None) == 3:  # step's per-member form, not a data set
                raise ValueError(f"Population.fit: {name}'s x must be one data set for every member, shape (samples, "
                                 f"{self.in_features}), got {tuple(data[0].shape)}; member_batches=True draws each "
                                 "member's own batches from it")
        x, y, _ = self._check_batch(*train, "Population.fit")
        if val is not None:
            x_val, y_val, _ = self._check_batch(*val, "Population.fit")
        if early_stopping is not None and val is None:
            raise ValueError("Population.fit: early_stopping watches the validation loss; pass val=(x_val, y_val)")
        stoppers = [_copy_stopper(early_stopping) for _ in range(self.size)] if early_stopping is not None else None
        seed = default_seed(seed, "Population.fit")
        classification = LOSS_KERNELS[self.loss] == "cross_entropy"
        history = PopulationHistory(self.size, "val_accuracy" if classification and val is not None else
                                    "val_loss" if val is not None else "loss")
        stream = sys.stderr
        for epoch in range(1, epochs + 1):
            if not self.active.any():
                break
            start = time.perf_counter()
            training = self.active.copy()
            total, correct, seen = np.zeros(self.size), np.zeros(self.size), 0
            for xb, yb in _epoch_batches(x, y, batch_size, seed, epoch, self.size if member_batches else None):
                losses = self._run(xb, yb, not member_batches)
                labels = (yb if member_batches else yb[None]) if classification else _NO_LABELS
                add_batch_scores(losses, xb.shape[-2], self.outputs, labels, np.int64(member_batches),
                                 classification, total, correct)
                seen += xb.shape[-2]
            seconds = time.perf_counter() - start
            if val is not None:
                val_losses, val_accuracies = self._score(x_val, y_val, training & ~self.diverged)
            if stoppers is not None:  # a stopper keeps the best epoch's weights: the members' own, written back
                self.sync()
            for member in np.flatnonzero(training):
                record = {"epoch": epoch, "loss": total[member] / seen, "lr": self._optimizers[member].lr,
                          "seconds": seconds,
                          "samples_per_second": seen * int(training.sum()) / seconds}
                if classification:
                    record["accuracy"] = correct[member] / seen
                if self.diverged[member]:
                    record["loss"] = math.nan
                elif val is not None:
                    record["val_loss"] = float(val_losses[member])
                    if classification:
                        record["val_accuracy"] = float(val_accuracies[member])
                history.members[member].records.append(record)
                if stoppers is not None and not self.diverged[member] and stoppers[member].update(
                        epoch, record["val_loss"], self._models[member]):
                    history.members[member].stopped_early = True
                    self.stop(member)
            history.update_best()
            if progress:
                stream.write(history.progress_line(epoch, epochs, self.active, self.diverged) + "\n")
                stream.flush()
        if stoppers is not None:
            self.sync()
            for member, stopper in enumerate(stoppers):
                history.members[member].best_epoch = stopper.best_epoch
                if stopper.restore_best and stopper.best_state is not None:
                    self._models[member].load_state_dict(stopper.best_state)
            self.reload()
        history.update_best()
        return history

    @property
    def outputs(self):
        """The members' model outputs of the last step, (members, batch, width) (a view, valid until the next)."""
        return None if self._last_arguments is None else self._last_arguments.output


def _check_same_structure(models):
    """Every member's layer kinds and parameter shapes are member 0's: a different width or depth is refused here,
    not at the first step. What else the compiled step fixes (activations, dropout on or off, batch norm options) is
    checked when the members' steps are stacked."""
    first = _structure(models[0])
    for member, model in enumerate(models[1:], start=1):
        layers = _structure(model)
        if layers != first:
            index = next((index for index, (ours, theirs) in enumerate(zip(first, layers)) if ours != theirs),
                         min(len(first), len(layers)))
            raise ValueError(f"Population: member {member} differs in structure from member 0 "
                             f"({_describe_layer(layers, index)}, member 0 {_describe_layer(first, index)}); members "
                             "share layer kinds and sizes")


def _state_names(optimizer):
    """The names of an optimizer's state arrays, per flat buffer: what its update kernel reads besides the
    hyperparameters (momentum 0 keeps no buffer, so it runs another kernel than any other momentum)."""
    return [sorted(state) for state in optimizer.state]


def _group_layout(model, optimizer):
    """Which of the model's parameters (by index) each of the optimizer's parameter groups holds."""
    index_of = {id(parameter): index for index, parameter in enumerate(model.parameters())}
    return [sorted(index_of.get(id(parameter), -1) for parameter in group["params"])
            for group in optimizer.param_groups]


def _structure(model):
    """[(layer kind, its parameters' shapes)] of a model's layers, nested Sequentials flattened."""
    return [(type(layer).__name__, [tuple(parameter.shape) for parameter in layer.parameters()])
            for layer in flat_layers(model)]


def _describe_layer(structure, index):
    if index >= len(structure):
        return f"{len(structure)} layers"
    kind, shapes = structure[index]
    return f"layer {index} a {kind} with parameters of shapes {shapes}"


def _copy_stopper(early_stopping):
    if isinstance(early_stopping, EarlyStopping):
        return EarlyStopping(early_stopping.patience, early_stopping.min_delta, early_stopping.restore_best)
    return EarlyStopping(patience=early_stopping)


def _epoch_batches(x, y, batch_size, seed, epoch, members):
    """One epoch's mini-batches: (x, y) batches in one shuffled order, or with ``members`` each member's own order
    stacked on a leading axis ((members, batch, features) and (members, batch, ...))."""
    if members is None:
        loader = batches(x, y, batch_size, shuffle=True, seed=seed)
        loader.epoch = epoch - 1
        yield from loader
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"Population.fit: batch_size must be a positive integer, got {batch_size!r}")
    orders = np.stack([np.random.default_rng((seed, epoch, member)).permutation(len(x)) for member in range(members)])
    for start in range(0, len(x), batch_size):
        chosen = orders[:, start:start + batch_size]
        yield np.ascontiguousarray(x[chosen]), np.ascontiguousarray(y[chosen])


class PopulationHistory:
    """Per-member ``History`` objects (``members[k]``), and the best member by ``metric`` over all epochs."""

    def __init__(self, size, metric):
        self.members = [History() for _ in range(size)]
        self.metric = metric  # val_accuracy (higher is better), val_loss or loss (lower is better)
        self.best_member = self.best_score = self.best_epoch = None

    def _better(self, score, best):
        if score is None or math.isnan(score):
            return False
        if best is None:
            return True
        return score > best if self.metric == "val_accuracy" else score < best

    def update_best(self):
        for member, history in enumerate(self.members):
            for record in history.records:
                score = record.get(self.metric)
                if self._better(score, self.best_score):
                    self.best_member, self.best_score, self.best_epoch = member, score, record["epoch"]

    def member_best(self, member):
        """(best score, its epoch) of one member, or (None, None) when it has no score."""
        best, epoch = None, None
        for record in self.members[member].records:
            score = record.get(self.metric)
            if self._better(score, best):
                best, epoch = score, record["epoch"]
        return best, epoch

    def progress_line(self, epoch, epochs, active, diverged):
        last = [history.records[-1] for history in self.members if history.records
                and history.records[-1]["epoch"] == epoch]
        losses = [record["loss"] for record in last if not math.isnan(record["loss"])]
        parts = [f"epoch {epoch}/{epochs}", f"members {len(self.members)}", f"training {int(active.sum())}"]
        if diverged.any():
            parts.append(f"diverged {int(diverged.sum())}")
        if losses:
            parts.append(f"loss median {float(np.median(losses)):.4f}")
        if self.best_member is not None:
            parts.append(f"best {self.metric} {self.best_score:.4f} (member {self.best_member}, epoch "
                         f"{self.best_epoch})")
        if last:
            parts.append(f"{last[0]['samples_per_second']:,.0f} samples/s")
        return "  ".join(parts)
