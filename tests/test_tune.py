"""fastdl.tune: a Population's member k must end exactly where training model k alone with compile_step ends.

The population runs each member's own compiled step (every kernel serial) inside one parallel loop, so the
comparisons are for bit equality: parameters, gradients, moments, running statistics, counters, step counts. The
tests share two model structures so the suite compiles few population steps.
"""

import numpy as np
import pytest

import fastdl
from fastdl import losses, optim
from fastdl.tune import Population, expand_grid, grid_search

from test_compiled_step import assert_same_state, snapshot

FEATURES, CLASSES = 8, 3


@pytest.fixture(autouse=True)
def cpu_backend():
    with fastdl.use_backend("cpu"):
        yield


def mlp(seed, width=16, momentum=0.1, batch_norm=False):
    """The two structures the tests use: Dense-ReLU x2 -> Dense, or Dense -> BatchNorm-ReLU -> Dropout -> Dense."""
    if batch_norm:
        return fastdl.Sequential(fastdl.Dense(FEATURES, width, seed=seed),
                                 fastdl.BatchNorm(width, activation="relu", momentum=momentum, seed=seed + 1),
                                 fastdl.Dropout(0.2, seed=seed + 2), fastdl.Dense(width, CLASSES, seed=seed + 3))
    return fastdl.Sequential(fastdl.Dense(FEATURES, width, activation="relu", seed=seed),
                             fastdl.Dense(width, width, activation="relu", seed=seed + 1),
                             fastdl.Dense(width, CLASSES, seed=seed + 2))


# per member: its optimizer's hyperparameters (learning rate, decay, clipping all differ)
SETTINGS = [dict(lr=1e-2, weight_decay=0.0), dict(lr=3e-3, weight_decay=1e-2, max_grad_norm=0.5),
            dict(lr=3e-2, weight_decay=1e-3, betas=(0.8, 0.99))]


def members(batch_norm=False, algorithm=optim.AdamW):
    models = [mlp(10 * k, momentum=None if batch_norm and k == 1 else 0.1, batch_norm=batch_norm)
              for k in range(len(SETTINGS))]
    return models, [algorithm(model.parameters(), **settings) for model, settings in zip(models, SETTINGS)]


def batch(seed, rows=12, members=None):
    rng = np.random.default_rng(seed)
    shape = (rows,) if members is None else (members, rows)
    return rng.standard_normal(shape + (FEATURES,)).astype(np.float32), rng.integers(0, CLASSES, shape)


@pytest.mark.parametrize("batch_norm", [False, True], ids=["mlp", "batchnorm-dropout"])
def test_each_member_ends_bit_identical_to_training_alone(batch_norm):
    models, optimizers = members(batch_norm)
    alone_models, alone_optimizers = members(batch_norm)
    steps = [fastdl.compile_step(m, losses.softmax_cross_entropy, o) for m, o in zip(alone_models, alone_optimizers)]
    population = Population(models, losses.softmax_cross_entropy, optimizers)
    for seed in range(3):  # one batch for all members
        x, y = batch(seed)
        population_losses = population.step(x, y)
        np.testing.assert_array_equal(population_losses, [step(x, y) for step in steps])
    for seed in range(3, 5):  # each member its own batch, of another size
        xs, ys = batch(seed, rows=7, members=len(models))
        population_losses = population.step(xs, ys)
        np.testing.assert_array_equal(population_losses, [step(xs[k], ys[k]) for k, step in enumerate(steps)])
    np.testing.assert_array_equal(population.outputs[2], steps[2].outputs)
    for k in range(len(models)):
        assert_same_state(snapshot(population.models[k], population.optimizers[k]),
                          snapshot(alone_models[k], alone_optimizers[k]))


def test_members_split_their_products_as_compile_step_does():
    """At 4096 rows the 16 x 16 layer's products (2**20 multiply-adds) are split in blocks by compile_step; each
    member runs the same blocks on its thread (the BLAS sums a block differently from the whole product)."""
    from fastdl.kernels.cpu import dense

    if dense.parts_for(4096, 16, 16) == 1:
        pytest.skip("one thread: compile_step splits nothing")
    models, optimizers = members()
    alone_models, alone_optimizers = members()
    steps = [fastdl.compile_step(m, losses.softmax_cross_entropy, o) for m, o in zip(alone_models, alone_optimizers)]
    population = Population(models, losses.softmax_cross_entropy, optimizers)
    for seed in range(2):
        x, y = batch(seed, rows=4096)
        np.testing.assert_array_equal(population.step(x, y), [step(x, y) for step in steps])
    for k in range(len(models)):
        assert_same_state(snapshot(population.models[k], population.optimizers[k]),
                          snapshot(alone_models[k], alone_optimizers[k]))


def test_fit_matches_fastdl_fit_per_member_with_early_stopping():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((90, FEATURES)).astype(np.float32), rng.integers(0, CLASSES, 90)
    x_val, y_val = rng.standard_normal((30, FEATURES)).astype(np.float32), rng.integers(0, CLASSES, 30)
    models, optimizers = members()
    population = Population(models, losses.softmax_cross_entropy, optimizers)
    history = population.fit((x, y), (x_val, y_val), epochs=6, batch_size=16, early_stopping=2, seed=5,
                             progress=False)
    for k in range(len(models)):
        alone = mlp(10 * k)
        alone_optimizer = optim.AdamW(alone.parameters(), **SETTINGS[k])
        alone_history = fastdl.fit(alone, losses.softmax_cross_entropy, alone_optimizer, (x, y), (x_val, y_val),
                                   epochs=6, batch_size=16, early_stopping=fastdl.EarlyStopping(2), seed=5,
                                   progress=False)
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert history.members[k][key] == alone_history[key], (k, key)
        assert history.members[k].stopped_early == alone_history.stopped_early
        assert history.members[k].best_epoch == alone_history.best_epoch
        assert_same_state(snapshot(population.models[k], population.optimizers[k]),
                          snapshot(alone, alone_optimizer))
    scores = [max(h["val_accuracy"]) for h in history.members]
    assert history.best_member == int(np.argmax(scores)) and history.best_score == max(scores)


def test_a_diverging_member_stops_unchanged_and_the_others_train_on():
    models, optimizers = members()
    models[1].layers[2].weight.data[...] = np.inf  # its outputs are not finite on the first step
    before = snapshot(models[1], optimizers[1])
    alone_models, alone_optimizers = members()
    population = Population(models, losses.softmax_cross_entropy, optimizers)
    x, y = batch(0)
    population_losses = population.step(x, y)
    assert np.isnan(population_losses[1]) and np.isfinite(population_losses[[0, 2]]).all()
    assert population.diverged.tolist() == [False, True, False] and population.active.tolist() == [True, False, True]
    population.step(*batch(1))
    assert_same_state(snapshot(population.models[1], population.optimizers[1]), before)
    step = fastdl.compile_step(alone_models[2], losses.softmax_cross_entropy, alone_optimizers[2])
    step(x, y), step(*batch(1))
    assert_same_state(snapshot(population.models[2], population.optimizers[2]),
                      snapshot(alone_models[2], alone_optimizers[2]))


def test_an_optimizer_option_changed_between_steps_takes_effect_as_alone():
    models, optimizers = members()
    population = Population(models, losses.softmax_cross_entropy, optimizers)
    alone_models, alone_optimizers = members()
    steps = [fastdl.compile_step(m, losses.softmax_cross_entropy, o) for m, o in zip(alone_models, alone_optimizers)]
    population.step(*batch(0))
    [step(*batch(0)) for step in steps]
    population.optimizers[0].max_grad_norm = alone_optimizers[0].max_grad_norm = 1e-3  # clipping starts
    population.optimizers[1].max_grad_norm = alone_optimizers[1].max_grad_norm = None  # and stops
    np.testing.assert_array_equal(population.step(*batch(1)), [step(*batch(1)) for step in steps])
    for k in range(2):
        assert_same_state(snapshot(population.models[k], population.optimizers[k]),
                          snapshot(alone_models[k], alone_optimizers[k]))


def test_reload_takes_a_member_changed_directly():
    models, optimizers = members()
    population = Population(models, losses.softmax_cross_entropy, optimizers)
    population.step(*batch(0))
    population.models[0].layers[2].bias.data[...] = 0.5
    population.reload()
    population.step(*batch(1))
    alone_models, alone_optimizers = members()
    step = fastdl.compile_step(alone_models[0], losses.softmax_cross_entropy, alone_optimizers[0])
    step(*batch(0))
    alone_models[0].layers[2].bias.data[...] = 0.5
    step(*batch(1))
    assert_same_state(snapshot(population.models[0], population.optimizers[0]),
                      snapshot(alone_models[0], alone_optimizers[0]))


@pytest.mark.parametrize("case, message", [
    ("xs of the wrong member count", "one batch per member"),
    ("NaN in one member's batch", r"xs\[1\] contains NaN"),
    ("labels out of range", "labels must lie in"),
    ("labels of the wrong shape", "integer labels of shape"),
    ("float64 x", "float32"),
    ("one sample as a 1-D x", r"x must be one batch for every member, shape \(batch, 8\), or one per member, shape "
                              r"\(3, batch, 8\); got shape \(8,\)"),
])
def test_bad_batches_are_refused_before_any_member_trains(case, message):
    models, optimizers = members()
    population = Population(models, losses.softmax_cross_entropy, optimizers)
    before = [snapshot(m, o) for m, o in zip(models, optimizers)]
    xs, ys = batch(0, members=3)
    if case == "xs of the wrong member count":
        xs, ys = xs[:2], ys[:2]
    elif case == "NaN in one member's batch":
        xs[1, 3, 2] = np.nan
    elif case == "labels out of range":
        ys[2, 0] = CLASSES
    elif case == "labels of the wrong shape":
        ys = ys[:, :5]
    elif case == "one sample as a 1-D x":
        xs, ys = xs[0, 0], ys[0, :1]
    else:
        xs = xs.astype(np.float64)
    with pytest.raises((ValueError, TypeError), match=message):
        population.step(xs, ys)
    for k in range(3):
        assert_same_state(snapshot(population.models[k], population.optimizers[k]), before[k])


def test_members_that_differ_in_structure_are_refused_naming_the_member():
    models = [mlp(0), mlp(1), mlp(2, width=12)]
    optimizers = [optim.Adam(m.parameters()) for m in models]
    # a width or a depth is refused when the population is built, not at its first step
    with pytest.raises(ValueError, match=r"member 2 differs in structure from member 0 \(layer 0 a Dense with "
                                         r"parameters of shapes \[\(8, 12\), \(12,\)\], member 0 layer 0 a Dense "
                                         r"with parameters of shapes \[\(8, 16\), \(16,\)\]\)"):
        Population(models, losses.softmax_cross_entropy, optimizers)
    deeper = [mlp(0), fastdl.Sequential(*mlp(3).layers, fastdl.Dense(CLASSES, CLASSES, seed=9))]
    with pytest.raises(ValueError, match=r"member 1 differs in structure from member 0 \(layer 3 a Dense .*, member "
                                         r"0 3 layers\)"):
        Population(deeper, losses.softmax_cross_entropy, [optim.Adam(m.parameters()) for m in deeper])
    # an optimizer built over another model would train nothing of its member
    with pytest.raises(ValueError, match=r"Population: member 1: the Adam holds none of the model's parameters"):
        Population(models[:2], losses.softmax_cross_entropy, [optim.Adam(models[0].parameters()),
                                                              optim.Adam(mlp(1).parameters())])
    # an activation the compiled step fixes is refused when the steps are stacked, naming the layer
    other = [mlp(0), fastdl.Sequential(fastdl.Dense(FEATURES, 16, activation="tanh", seed=4), *mlp(4).layers[1:])]
    population = Population(other, losses.softmax_cross_entropy, [optim.Adam(m.parameters()) for m in other])
    with pytest.raises(ValueError, match=r"member.* layer 0's .*members must match in structure \(activations"):
        population.step(*batch(0))
    # momentum 0 keeps no buffer: refused when built, naming the state (was: "members differ in 'o_4'" at a step)
    momentum = [optim.RMSprop(models[0].parameters(), momentum=0.0), optim.RMSprop(models[1].parameters(),
                                                                                   momentum=0.5)]
    with pytest.raises(ValueError, match=r"member 1's RMSprop keeps the state \[\['momentum_buffer', "
                                         r"'square_avg'\]\], member 0's \[\['square_avg'\]\]; options that add "
                                         r"state \(momentum on or off"):
        Population(models[:2], losses.softmax_cross_entropy, momentum)
    # parameter groups decide the flat buffer's order and the update rows: refused when built, naming them
    grouped = [optim.Adam(models[0].parameters()), optim.Adam(models[1].named_parameters(), weight_decay=0.1,
                                                              weight_decay_mask=lambda name, p: len(p.shape) > 1)]
    with pytest.raises(ValueError, match=r"member 1's Adam groups the model's parameters as \[\[0, 2, 4\], \[1, 3, "
                                         r"5\]\] \(parameter indices\), member 0's as \[\[0, 1, 2, 3, 4, 5\]\]"):
        Population(models[:2], losses.softmax_cross_entropy, grouped)
    mixed = [optim.Adam(models[0].parameters()), optim.SGD(models[1].parameters(), lr=0.1)]
    with pytest.raises(ValueError, match="member 1's optimizer is SGD"):
        Population(models[:2], losses.softmax_cross_entropy, mixed)
    shared = mlp(0)
    with pytest.raises(ValueError, match="members 0 and 1 share a parameter"):
        Population([shared, shared], losses.softmax_cross_entropy,
                   [optim.Adam(shared.parameters()), optim.Adam(shared.parameters())])
    with pytest.raises(ValueError, match="one element-wise kernel"):
        Population(models[:1], losses.softmax_cross_entropy, [optim.LAMB(models[0].parameters())])


def test_expand_grid_takes_a_dict_or_a_list_of_dicts():
    assert expand_grid({"lr": [1, 2], "width": [3]}) == [{"lr": 1, "width": 3}, {"lr": 2, "width": 3}]
    assert expand_grid([{"lr": [1]}, {"lr": [2], "decay": [0, 1]}]) == [
        {"lr": 1}, {"lr": 2, "decay": 0}, {"lr": 2, "decay": 1}]
    with pytest.raises(ValueError, match="empty"):
        expand_grid({"lr": []})
    with pytest.raises(TypeError, match="list of values"):
        expand_grid({"lr": 0.1})


def test_grid_search_trains_each_setting_as_it_would_train_alone():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((64, FEATURES)).astype(np.float32), rng.integers(0, CLASSES, 64)
    val = rng.standard_normal((32, FEATURES)).astype(np.float32), rng.integers(0, CLASSES, 32)
    grid = {"lr": [1e-2, 3e-2], "weight_decay": [0.0, 1e-2], "width": [16, 12]}

    def build_model(params):
        return mlp(3, width=params["width"])

    def build_optimizer(model, params):
        return optim.AdamW(model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])

    result = grid_search(build_model, build_optimizer, grid, (x, y), val, epochs=3, batch_size=16, seed=4,
                         progress=False)
    assert len(result.rows) == 8 and len({row["population"] for row in result.rows}) == 2  # one per width
    last_scores = []
    for row in result.rows:
        model = build_model(row["params"])
        history = fastdl.fit(model, losses.softmax_cross_entropy, build_optimizer(model, row["params"]), (x, y), val,
                             epochs=3, batch_size=16, seed=4, progress=False)
        assert row["score"] == max(history["val_accuracy"])
        assert row["best_epoch"] == 1 + int(np.argmax(history["val_accuracy"]))
        last_scores.append(history["val_accuracy"][-1])
    best = max(range(8), key=lambda index: (result.rows[index]["score"], -index))  # the first of equal scores
    assert result.best_index == best and result.best_params == result.rows[best]["params"]
    # the best setting's model as it ended (no early stopping here: after its last epoch)
    assert fastdl.evaluate(result.best_model, *val)["accuracy"] == last_scores[best]
    assert "val_accuracy" in result.table() and "*" in result.table()
    # an optimizer that ignores the model it is given trains nothing of it: refused, naming the setting
    stray = mlp(9)
    with pytest.raises(ValueError, match=r"grid_search: setting \{'lr': 0.01, 'weight_decay': 0.0, 'width': 16\}: "
                                         r"the AdamW holds none of the model's parameters"):
        grid_search(build_model, lambda model, params: optim.AdamW(stray.parameters()), grid, (x, y), val,
                    epochs=1, progress=False)


def test_fit_refuses_bad_training_or_validation_data_before_an_epoch():
    models, optimizers = members()
    population = Population(models, losses.softmax_cross_entropy, optimizers)
    before = [snapshot(m, o) for m, o in zip(models, optimizers)]
    x, y = batch(0, rows=20)
    bad_x = x.copy()
    bad_x[4, 1] = np.inf
    with pytest.raises(ValueError, match="Population.fit: x contains NaN or Inf"):
        population.fit((bad_x, y), epochs=1, progress=False)
    with pytest.raises(ValueError, match="Population.fit: labels must lie in"):
        population.fit((x, y), (x, y + CLASSES), epochs=1, progress=False)
    # step's per-member form (members, batch, features) is not a data set: it crashed in Numba's typing
    xs, ys = batch(1, rows=20, members=3)
    with pytest.raises(ValueError, match=r"Population.fit: train's x must be one data set for every member, shape "
                                         r"\(samples, 8\), got \(3, 20, 8\); member_batches=True"):
        population.fit((xs, ys), epochs=1, progress=False)
    for k in range(3):
        assert_same_state(snapshot(population.models[k], population.optimizers[k]), before[k])


# -- the members' update rows, computed for all members at once ------------------------------------------------------
def _random_groups(rng, algorithm, member, shared_betas):
    """Two parameter groups over a small layer, with hyperparameters drawn per member and group (betas shared by
    every member, as in a grid, or by most), and the algorithm's state-shaping options fixed."""
    layer = fastdl.Dense(4, 3, seed=member)

    def settings():
        lr = float(10 ** rng.uniform(-4, -1))
        if algorithm is optim.Adagrad:
            return dict(lr=lr, lr_decay=float(rng.choice([0.0, 1e-3, 0.37])), weight_decay=float(rng.uniform(0, 0.1)))
        if algorithm is optim.RMSprop:
            return dict(lr=lr, alpha=float(rng.uniform(0.8, 0.999)), momentum=float(rng.uniform(0.1, 0.9)))
        if algorithm is optim.SGD:  # the even members take nesterov: momentum > 0, no dampening
            if member % 2 == 0:
                return dict(lr=lr, momentum=float(rng.choice([0.5, 0.9])), dampening=0.0)
            return dict(lr=lr, momentum=float(rng.choice([0.0, 0.5, 0.9])), dampening=float(rng.uniform(0, 0.5)))
        betas = (0.9, 0.999) if member % 3 or shared_betas else (float(rng.uniform(0.5, 0.95)),
                                                                    float(rng.uniform(0.9, 0.9999)))
        return dict(lr=lr, betas=betas, eps=float(10 ** rng.uniform(-10, -6)), weight_decay=float(rng.uniform(0, 0.1)))

    groups = [{"params": [layer.weight], **settings()}, {"params": [layer.bias], **settings()}]
    if algorithm is optim.SGD:
        return optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=member % 2 == 0, l1=float(rng.uniform(0, 1e-3)))
    return algorithm(groups, l1=float(rng.uniform(0, 1e-3)))


@pytest.mark.parametrize("algorithm, shared_betas, steps", [
    (optim.SGD, False, "differ"), (optim.Adagrad, False, "differ"), (optim.RMSprop, False, "differ"),
    (optim.Adam, False, "differ"), (optim.AdamW, False, "differ"), (optim.Adam, True, "differ"),
    (optim.Adam, True, "one step")])
def test_update_rows_of_every_member_are_its_optimizers_own_bit_for_bit(algorithm, shared_betas, steps, monkeypatch):
    """The population computes its members' rows over arrays, for several steps ahead (``stacked_scalars``); each
    row must be exactly what the member's own optimizer gives compile_step at that step number."""
    from fastdl.tune import update_rows

    rng = np.random.default_rng(7)
    optimizers = [_random_groups(rng, algorithm, member, shared_betas) for member in range(7)]
    next_steps = np.array([1, 1, 2, 5, 5, 999, 123456], np.int64)
    if steps == "one step":  # every member at one step number, one row ahead: a single distinct (betas, step)
        next_steps[:] = 5
        monkeypatch.setattr(update_rows, "WINDOW_ROWS", 14)
    rows = update_rows.UpdateRows(optimizers)
    rows.refresh()
    rows.compute_window(next_steps)
    assert rows.rows_window.shape[0] == (1 if steps == "one step" else 4096 // 14)
    for ahead in range(rows.rows_window.shape[0]):
        for member, optimizer in enumerate(optimizers):
            expected = [list(optimizer.group_scalars(group, int(next_steps[member]) + ahead))
                        for group in optimizer.param_groups]
            assert rows.rows_window[ahead, member].tolist() == expected, (ahead, member)


def test_hyperparameters_edited_in_every_way_take_effect_as_alone(monkeypatch):
    """Edits reach the rows computed ahead: a group's value, ``|=``, an optimizer-wide setting, a restored state;
    and the rows run out every two steps here (a small window), so members also step across windows."""
    from fastdl.tune import update_rows

    monkeypatch.setattr(update_rows, "WINDOW_ROWS", 6)  # 2 steps ahead for 3 members
    models, optimizers = members()
    population = Population(models, losses.softmax_cross_entropy, optimizers)
    alone_models, alone_optimizers = members()
    steps = [fastdl.compile_step(m, losses.softmax_cross_entropy, o) for m, o in zip(alone_models, alone_optimizers)]
    saved = optim.AdamW(mlp(5).parameters(), lr=0.2, betas=(0.7, 0.95), weight_decay=0.3)
    edits = {1: lambda optimizers: optimizers[0].param_groups[0].__setitem__("lr", 0.05),
             3: lambda optimizers: optimizers[1].param_groups[0].__ior__({"betas": (0.5, 0.9), "eps": 1e-3}),
             5: lambda optimizers: setattr(optimizers[2], "weight_decay", 0.25)}
    for seed in range(8):  # one kind of edit at a time: each must be seen on its own
        if seed in edits:
            edits[seed](population.optimizers), edits[seed](alone_optimizers)
        if seed == 6:
            state = {**saved.state_dict(), "state": population.optimizers[1].state_dict()["state"],
                     "steps": population.optimizers[1].steps}
            population.optimizers[1].load_state_dict(state)
            population.reload()
            alone_optimizers[1].load_state_dict(state)
        x, y = batch(seed)
        np.testing.assert_array_equal(population.step(x, y), [step(x, y) for step in steps], err_msg=str(seed))
        if seed == 0:
            kernel = population._kernel(population._last_arguments.source)
            signatures = len(kernel.signatures)
    assert len(kernel.signatures) == signatures  # new rows, edits and a reload recompile nothing
    assert population.optimizers[1].lr == 0.2
    for k in range(len(models)):
        assert_same_state(snapshot(population.models[k], population.optimizers[k]),
                          snapshot(alone_models[k], alone_optimizers[k]))


class _SGDWithoutStackedRows(optim.SGD):
    stacked_scalars = None


class _SGDWithOwnRows(optim.SGD):  # inherits SGD's stacked form, which does not know its rows
    def group_scalars(self, group, step):
        rows = super().group_scalars(group, step)
        return rows[:2] + (rows[2] * 0.5,) + rows[3:]


@pytest.mark.parametrize("OwnSGD", [_SGDWithoutStackedRows, _SGDWithOwnRows])
def test_an_algorithm_without_stacked_rows_asks_each_member(OwnSGD):
    """A user's optimizer class without ``stacked_scalars``, or with rows of its own, still trains in a population,
    each member's rows asked of its optimizer one step at a time; here SGD with momentum, its first step special."""
    models, alone_models = [mlp(10 * k) for k in range(3)], [mlp(10 * k) for k in range(3)]
    settings = [dict(lr=0.1, momentum=0.9), dict(lr=0.03, momentum=0.5, dampening=0.1),
                dict(lr=0.05, momentum=0.9, nesterov=True)]
    population = Population(models, losses.softmax_cross_entropy,
                            [OwnSGD(m.parameters(), **s) for m, s in zip(models, settings)])
    alone_optimizers = [OwnSGD(m.parameters(), **s) for m, s in zip(alone_models, settings)]
    steps = [fastdl.compile_step(m, losses.softmax_cross_entropy, o) for m, o in zip(alone_models, alone_optimizers)]
    for seed in range(3):
        x, y = batch(seed)
        np.testing.assert_array_equal(population.step(x, y), [step(x, y) for step in steps])
    for k in range(3):
        assert_same_state(snapshot(population.models[k], population.optimizers[k]),
                          snapshot(alone_models[k], alone_optimizers[k]))


@pytest.mark.parametrize("each", [0, 1], ids=["one batch", "a batch per member"])
def test_fits_running_sums_are_numpys(each):
    """Population.fit's per-step sums, compiled: numpy's argmax (ties to the first, a NaN counts as largest) and
    a member that did not train (NaN loss) adding nothing."""
    from fastdl.kernels.cpu.population import add_batch_scores

    rng = np.random.default_rng(3)
    outputs = rng.integers(0, 3, (4, 9, 3)).astype(np.float32)  # many ties
    labels = rng.integers(0, 3, (4 if each else 1, 9))
    # rows each rule decides: a tie (the first), a NaN after a larger value (the NaN), two NaNs (the first)
    outputs[0, 0], outputs[1, 2], outputs[2, 3] = [1, 2, 2], [2, np.nan, 1], [np.nan, 2, np.nan]
    labels[0, 0], labels[each, 2], labels[2 * each, 3] = 1, 1, 0
    outputs[3] = np.nan
    losses = np.array([0.5, 1.25, np.nan, 2.0])
    total, correct = np.full(4, 0.25), np.full(4, 1.0)
    add_batch_scores(losses, 9, outputs, labels, np.int64(each), True, total, correct)
    np.testing.assert_array_equal(total, 0.25 + np.where(np.isnan(losses), 0.0, losses) * 9)
    np.testing.assert_array_equal(correct, 1.0 + (outputs.argmax(axis=2) == (labels if each else labels[0])).sum(axis=1))
    add_batch_scores(losses, 9, outputs, np.zeros((1, 0), np.int64), np.int64(0), False, total, correct)  # regression
    np.testing.assert_array_equal(total, 0.25 + np.where(np.isnan(losses), 0.0, losses) * 18)


def _scored_structure(kind, seed):
    """Models whose eval-mode forward differs from training's in each way the population's evaluation must follow."""
    if kind == "batchnorm-running":  # running statistics; a Dropout layer and fused dropout switched off
        return fastdl.Sequential(fastdl.Dense(FEATURES, 16, dropout=0.3, seed=seed),
                                 fastdl.BatchNorm(16, activation="tanh", seed=seed + 1),
                                 fastdl.Dropout(0.3, seed=seed + 2), fastdl.Dense(16, CLASSES, seed=seed + 3))
    if kind == "batchnorm-batch":  # no running statistics: the batch's own, nothing updated
        return fastdl.Sequential(fastdl.Dense(FEATURES, 16, seed=seed),
                                 fastdl.BatchNorm(16, activation="relu", track_running_stats=False, seed=seed + 1),
                                 fastdl.Dense(16, CLASSES, seed=seed + 2))
    if kind == "rrelu-activation":  # RReLU's mean slope; an Activation layer
        return fastdl.Sequential(fastdl.Dense(FEATURES, 16, activation="rrelu", seed=seed),
                                 fastdl.Activation("gelu", seed=seed + 1), fastdl.Dense(16, CLASSES, seed=seed + 2))
    return fastdl.Sequential(fastdl.Dense(FEATURES, 16, activation="silu", seed=seed).set_compute_dtype("bfloat16"),
                             fastdl.Dense(16, CLASSES, seed=seed + 1))


# each loss with one batch-norm kind and one other: every pairing compiles a population step and an evaluation of
# its own (40-60 s cold), and the losses' scoring differs only after the forward
@pytest.mark.parametrize("kind, loss", [("batchnorm-running", losses.softmax_cross_entropy),
                                        ("batchnorm-batch", losses.mse), ("rrelu-activation", losses.mse),
                                        ("bfloat16", losses.softmax_cross_entropy)],
                         ids=["batchnorm-running-cross-entropy", "batchnorm-batch-mse", "rrelu-activation-mse",
                              "bfloat16-cross-entropy"])
def test_fits_validation_scores_are_evaluates_bit_for_bit(kind, loss):
    """Population.fit scores its members in one compiled call from its own buffers; each member's val_loss and
    val_accuracy must be fastdl.evaluate's of that member's model, over validation sets of two chunks (1024 rows,
    then the rest)."""
    rng = np.random.default_rng(7)

    def data(rows):
        x = rng.standard_normal((rows, FEATURES)).astype(np.float32)
        if loss is losses.mse:
            return x, rng.standard_normal((rows, CLASSES)).astype(np.float32)
        return x, rng.integers(0, CLASSES, rows)

    train, val = data(96), data(1100)
    models = [_scored_structure(kind, 10 * k) for k in range(3)]
    optimizers = [optim.Adam(model.parameters(), lr=lr) for model, lr in zip(models, (1e-2, 3e-2, 1e-3))]
    population = Population(models, loss, optimizers)
    history = population.fit(train, val, epochs=2, batch_size=32, seed=1, progress=False)
    scored = population.score(*val)
    for k, model in enumerate(population.models):
        expected = fastdl.evaluate(model, *val, loss=loss)
        assert set(scored) == set(expected)
        for key, value in expected.items():
            assert history.members[k].records[-1][f"val_{key}"] == value, (k, key)
            assert scored[key][k] == value, (k, key)
    # scoring changed nothing a member holds (running statistics, counters)
    before = [snapshot(model, optimizer) for model, optimizer in zip(population.models, population.optimizers)]
    population.score(*val)
    for k in range(3):
        assert_same_state(snapshot(population.models[k], population.optimizers[k]), before[k])


def test_score_leaves_diverged_members_out_and_refuses_bad_data():
    models, optimizers = members()
    models[1].layers[2].weight.data[...] = np.inf
    population = Population(models, losses.softmax_cross_entropy, optimizers)
    population.step(*batch(0))
    x, y = batch(1, rows=40)
    scores = population.score(x, y)
    assert np.isnan(scores["loss"][1]) and np.isnan(scores["accuracy"][1])
    for k in (0, 2):
        expected = fastdl.evaluate(population.models[k], x, y)
        assert (scores["loss"][k], scores["accuracy"][k]) == (expected["loss"], expected["accuracy"])
    with pytest.raises(ValueError, match=r"Population.score: x must be one data set"):
        population.score(*batch(2, members=3))
    with pytest.raises(ValueError, match=r"Population.score: labels must lie in \[0, 3\)"):
        population.score(x, np.full(40, 3))


def test_validation_counts_argmax_as_numpy():
    from fastdl.kernels.cpu.population import add_correct

    rng = np.random.default_rng(4)
    outputs = rng.integers(0, 3, (3, 9, 3)).astype(np.float32)
    outputs[0, 0], outputs[1, 2], outputs[2, 3] = [1, 2, 2], [2, np.nan, 1], [np.nan, 2, np.nan]
    labels = rng.integers(0, 3, 9)
    labels[0], labels[2], labels[3] = 1, 1, 0
    correct = np.full(3, 2, np.int64)
    add_correct(outputs, labels, np.array([True, False, True]), correct)
    expected = 2 + (outputs.argmax(axis=2) == labels).sum(axis=1)
    np.testing.assert_array_equal(correct, np.where([True, False, True], expected, 2))
