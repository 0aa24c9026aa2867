"""Population report: many small models trained at once, against training them one by one, JAX's vmap and
scikit-learn's GridSearchCV, measured side by side in one process.

    python bench/population_report.py            # writes bench/results/cpu-population.{md,json}
    python bench/population_report.py --quick    # fewer rounds, no file unless --out

1. One step of 64 members of 64-64-64-10 at batch 32 with Adam (each member its own learning rate): a
   ``fastdl.tune.Population`` step, 64 ``compile_step`` calls one after another (one per model), and
   ``jax.jit(jax.vmap(step))`` over the same 64 members (parameters and state donated). Medians of interleaved
   rounds; GFLOP/s from the counted multiply-adds, against the machine's GEMM ceiling.
2. A grid of 16 settings (learning rate x L2 penalty) of a 128-128 MLP on the bundled digits, 30 epochs each at
   batch 32, scored on one validation split: ``fastdl.tune.grid_search`` against scikit-learn's ``GridSearchCV``
   over its ``MLPClassifier`` (the same split through ``PredefinedSplit``, ``n_jobs`` 1 and 2), wall time and the
   best validation accuracy of each.
"""

import argparse
import datetime
import json
import os
import pathlib
import statistics
import sys
import time
import warnings

import numpy as np

import fastdl
from fastdl import losses, optim
from fastdl.bench.ceilings import cpu_ceilings, higher
from fastdl.bench.runner import cpu_model
from fastdl.bench.timing import interleaved_rounds, medians, paired

RESULTS = pathlib.Path(__file__).parent / "results"
SIZES, BATCH, MEMBERS = [64, 64, 64, 10], 32, 64
LEARNING_RATES = np.geomspace(1e-4, 1e-2, MEMBERS)
GRID = {"lr": [1e-4, 3e-4, 1e-3, 3e-3], "alpha": [1e-5, 1e-4, 1e-3, 1e-2]}
GRID_EPOCHS, GRID_BATCH, GRID_WIDTH = 30, 32, 128


def mlp(sizes, seed):
    layers = [fastdl.Dense(fan_in, fan_out, activation="relu" if index < len(sizes) - 2 else "identity",
                           seed=seed + index) for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]))]
    return fastdl.Sequential(*layers)


def multiply_adds(sizes, batch):
    """Forward, weight gradients and input gradients (none for the first layer) of one step."""
    products = [fan_in * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
    return batch * (3 * sum(products) - products[0])


def jax_population_step(sizes, batch, learning_rates):
    """The same members in JAX: one step vmapped over the members, jitted, state donated; Adam as PyTorch's."""
    import jax
    import jax.numpy as jnp

    def init(key):
        keys = jax.random.split(key, len(sizes) - 1)
        return [{"w": jax.random.normal(k, (fan_in, fan_out), jnp.float32) / np.sqrt(fan_in),
                 "b": jnp.zeros(fan_out, jnp.float32)} for k, fan_in, fan_out in zip(keys, sizes[:-1], sizes[1:])]

    def loss(params, x, labels):
        h = x
        for index, layer in enumerate(params):
            h = h @ layer["w"] + layer["b"]
            if index < len(params) - 1:
                h = jax.nn.relu(h)
        return -jnp.take_along_axis(jax.nn.log_softmax(h), labels[:, None], 1).mean()

    def step(params, m, v, t, lr, x, labels):
        value, grads = jax.value_and_grad(loss)(params, x, labels)
        t = t + 1
        m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, grads)
        v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, grads)
        correction1, correction2 = 1 - 0.9 ** t, 1 - 0.999 ** t
        params = jax.tree_util.tree_map(
            lambda p, m, v: p - lr * (m / correction1) / (jnp.sqrt(v / correction2) + 1e-8), params, m, v)
        return params, m, v, t, value

    members = len(learning_rates)
    compiled = jax.jit(jax.vmap(step, in_axes=(0, 0, 0, 0, 0, None, None)), donate_argnums=(0, 1, 2, 3))
    params = jax.vmap(init)(jax.random.split(jax.random.PRNGKey(0), members))
    state = [params, jax.tree_util.tree_map(jnp.zeros_like, params), jax.tree_util.tree_map(jnp.zeros_like, params),
             jnp.zeros(members, jnp.float32)]
    lr = jnp.asarray(learning_rates, jnp.float32)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, sizes[0]), dtype=np.float32))
    labels = jnp.asarray(np.random.default_rng(1).integers(0, sizes[-1], batch))

    def run():
        *state[:], value = compiled(*state, lr, x, labels)
        jax.block_until_ready(value)
    return run


def population_rows(rounds, seconds):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], BATCH)
    models = [mlp(SIZES, 10 * k) for k in range(MEMBERS)]
    population = fastdl.tune.Population(models, losses.softmax_cross_entropy,
                                        [optim.Adam(m.parameters(), lr=lr) for m, lr in zip(models, LEARNING_RATES)])
    alone = [mlp(SIZES, 10 * k) for k in range(MEMBERS)]
    steps = [fastdl.compile_step(m, losses.softmax_cross_entropy, optim.Adam(m.parameters(), lr=lr))
             for m, lr in zip(alone, LEARNING_RATES)]

    def one_by_one():
        for step in steps:
            step(x, y)

    calls = {"population step": lambda: population.step(x, y), "64 compile_step calls": one_by_one}
    try:
        calls["jax.jit(jax.vmap(step))"] = jax_population_step(SIZES, BATCH, LEARNING_RATES)
    except ImportError:
        pass
    per_round = interleaved_rounds(calls, rounds=rounds, seconds_per_call=seconds)
    times = medians(per_round)
    flops = 2 * multiply_adds(SIZES, BATCH) * MEMBERS
    rows = []
    for name, us in times.items():
        row = {"path": name, "us": us, "member_steps_per_s": MEMBERS / us * 1e6, "GFLOPs": flops / us / 1e3}
        if name != "population step":
            row["population_speedup"] = paired(per_round, name, "population step")
        rows.append(row)
    return rows, per_round


def digits_split():
    (x, y), _ = fastdl.datasets.load_digits()
    order = np.random.default_rng(0).permutation(len(x))
    validation = order[:len(x) // 5]
    training = order[len(x) // 5:]
    return x[training], y[training], x[validation], y[validation]


def fastdl_grid(x, y, x_val, y_val):
    def build_model(params):
        return mlp([64, GRID_WIDTH, GRID_WIDTH, 10], 0)

    def build_optimizer(model, params):  # alpha as scikit-learn applies it: L2 on the weights, per batch
        return optim.Adam(model.named_parameters(), lr=params["lr"], weight_decay=params["alpha"] / GRID_BATCH,
                          weight_decay_mask=lambda name, parameter: len(parameter.shape) > 1)

    start = time.perf_counter()
    result = fastdl.tune.grid_search(build_model, build_optimizer, GRID, (x, y), (x_val, y_val), epochs=GRID_EPOCHS,
                                     batch_size=GRID_BATCH, seed=0, progress=False)
    return time.perf_counter() - start, result.best_score, result.best_params


def sklearn_grid(x, y, x_val, y_val, jobs):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV, PredefinedSplit
    from sklearn.neural_network import MLPClassifier

    split = PredefinedSplit(np.concatenate([np.full(len(x), -1), np.zeros(len(x_val))]))
    search = GridSearchCV(
        MLPClassifier((GRID_WIDTH, GRID_WIDTH), batch_size=GRID_BATCH, max_iter=GRID_EPOCHS,
                      n_iter_no_change=GRID_EPOCHS + 1, random_state=0),
        {"learning_rate_init": GRID["lr"], "alpha": GRID["alpha"]}, cv=split, n_jobs=jobs, refit=False)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(np.concatenate([x, x_val]), np.concatenate([y, y_val]))
    return time.perf_counter() - start, float(search.best_score_), search.best_params_


def grid_rows(rounds):
    x, y, x_val, y_val = digits_split()
    fastdl_grid(x, y, x_val, y_val)  # compiles the population step
    runs = {"fastdl grid_search": [], "GridSearchCV n_jobs=1": [], "GridSearchCV n_jobs=2": []}
    best = {}
    try:
        import sklearn  # noqa: F401
    except ImportError:
        runs = {"fastdl grid_search": []}
    for _ in range(rounds):
        for name in runs:
            if name == "fastdl grid_search":
                seconds, score, params = fastdl_grid(x, y, x_val, y_val)
            else:
                seconds, score, params = sklearn_grid(x, y, x_val, y_val, int(name[-1]))
            runs[name].append(seconds)
            best[name] = (score, params)
    rows = []
    fastdl_seconds = statistics.median(runs["fastdl grid_search"])
    for name, seconds in runs.items():
        rows.append({"path": name, "seconds": statistics.median(seconds), "all_seconds": seconds,
                     "best_val_accuracy": best[name][0], "best_params": best[name][1],
                     "fastdl_speedup": statistics.median(seconds) / fastdl_seconds})
    return rows


def markdown(report):
    lines = [f"# Populations on the CPU ({report['date']})", "",
             f"Machine: {report['machine']}; {report['threads']} threads; BLAS {report['blas']}; GEMM ceiling "
             f"{report['ceilings']['gemm_GFLOPs']:.0f} GFLOP/s (float32, {report['ceilings']['gemm_side']}^3).", "",
             f"## One step of {MEMBERS} members, {'-'.join(map(str, SIZES))}, batch {BATCH}, Adam", "",
             "| path | time per step | member steps/s | GFLOP/s | % of GEMM ceiling | population's speedup |",
             "|---|---|---|---|---|---|"]
    for row in report["population"]:
        speedup = f"{row['population_speedup']:.2f}x" if "population_speedup" in row else "-"
        lines.append(f"| {row['path']} | {row['us'] / 1e3:.3f} ms | {row['member_steps_per_s']:,.0f} | "
                     f"{row['GFLOPs']:.1f} | {100 * row['GFLOPs'] / report['ceilings']['gemm_GFLOPs']:.0f}% | "
                     f"{speedup} |")
    lines += ["", f"Medians of {report['rounds']} interleaved rounds; speedups paired within rounds.", "",
              f"## Grid search: {len(GRID['lr']) * len(GRID['alpha'])} settings (lr x alpha), {GRID_WIDTH}-"
              f"{GRID_WIDTH} MLP, digits, {GRID_EPOCHS} epochs at batch {GRID_BATCH}, one validation split", "",
              "| path | wall time | fastdl's speedup | best validation accuracy | best setting |", "|---|---|---|---|---|"]
    for row in report["grid"]:
        lines.append(f"| {row['path']} | {row['seconds']:.2f} s | {row['fastdl_speedup']:.1f}x | "
                     f"{row['best_val_accuracy']:.4f} | {row['best_params']} |")
    lines += ["", f"Medians of {report['grid_rounds']} rounds (each: fastdl, then scikit-learn n_jobs=1 and 2); "
              "fastdl's population step compiled before timing."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds; writes only with --out")
    parser.add_argument("--out", help="JSON path (the .md beside it); default bench/results/cpu-population.json")
    arguments = parser.parse_args(argv)
    fastdl.set_backend("cpu")
    rounds, grid_rounds = (3, 1) if arguments.quick else (9, 3)
    report = {"date": datetime.date.today().isoformat(), "machine": f"{cpu_model()}, {os.cpu_count()} cores",
              "threads": fastdl.get_num_threads()[1], "blas": fastdl.blas_info().get("provider"),
              "rounds": rounds, "grid_rounds": grid_rounds}
    before = cpu_ceilings(quick=True)
    report["population"], report["per_round"] = population_rows(rounds, 0.3 if not arguments.quick else 0.1)
    report["ceilings"] = higher(before, cpu_ceilings(quick=True))  # as fastdl bench: the higher of before and after
    report["grid"] = grid_rows(grid_rounds)
    text = markdown(report)
    sys.stdout.write(text)
    if arguments.out or not arguments.quick:
        out = pathlib.Path(arguments.out) if arguments.out else RESULTS / "cpu-population.json"
        out.write_text(json.dumps(report, indent=1, default=str) + "\n")
        out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
