"""Data-parallel training over MPI, with the ranks as processes on this machine (``mpiexec -n 2``).

The reference for every comparison is one process training on the concatenated batch: with the gradients
averaged over 2 ranks of batch B, the parameters must match one rank at batch 2B to rounding.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastdl

pytest.importorskip("mpi4py", reason="MPI tests need mpi4py and an MPI library (pip install mpi4py mpich)")


def _mpiexec():
    beside_python = pathlib.Path(sys.executable).parent / "mpiexec"
    return str(beside_python) if beside_python.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec found (pip install mpich)")

COMMON = """
import sys
import numpy as np
import fastdl
from fastdl import distributed as dist

def build(seed=0):
    return fastdl.Sequential(fastdl.Dense(5, 7, activation="tanh", seed=seed, dtype="float64"),
                             fastdl.Dense(7, 3, seed=seed + 1, dtype="float64"))

def make_optimizer(name, parameters):
    if name == "sgd":
        return fastdl.optim.SGD(parameters, lr=0.1, momentum=0.9)
    if name == "sgd_clipped":
        return fastdl.optim.SGD(parameters, lr=0.1, momentum=0.9, max_grad_norm=0.05)
    if name == "adam":
        return fastdl.optim.Adam(parameters, lr=0.01)
    return fastdl.optim.Adam(parameters, lr=0.01, max_grad_norm=0.05)

def data(step, batch):
    rng = np.random.default_rng(step)
    return rng.standard_normal((batch, 5)), rng.integers(0, 3, batch)
"""


def run_ranks(tmp_path, body, ranks=2, timeout=240):
    """The job's ranks' output. Tests compute their single-process reference first: it compiles the kernels the
    ranks need into Numba's disk cache, where two ranks compiling together (a waiting MPICH rank spins on a core)
    ran past the timeout on a 2-core machine with a cold cache."""
    script = tmp_path / "job.py"
    script.write_text(COMMON + textwrap.dedent(body))
    env = {**os.environ, "FASTDL_BACKEND": "cpu"}
    return subprocess.run([MPIEXEC, "-n", str(ranks), sys.executable, str(script), str(tmp_path)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def single_process(optimizer_name, steps=3, batch=8):
    with fastdl.use_backend("cpu"):
        model = fastdl.Sequential(fastdl.Dense(5, 7, activation="tanh", seed=0, dtype="float64"),
                                  fastdl.Dense(7, 3, seed=1, dtype="float64"))
        optimizer = {"sgd": lambda p: fastdl.optim.SGD(p, lr=0.1, momentum=0.9),
                     "sgd_clipped": lambda p: fastdl.optim.SGD(p, lr=0.1, momentum=0.9, max_grad_norm=0.05),
                     "adam": lambda p: fastdl.optim.Adam(p, lr=0.01),
                     "adam_clipped": lambda p: fastdl.optim.Adam(p, lr=0.01, max_grad_norm=0.05)}[optimizer_name](
            model.parameters())
        for step in range(steps):
            rng = np.random.default_rng(step)
            x, y = rng.standard_normal((batch, 5)), rng.integers(0, 3, batch)
            value, grad = fastdl.losses.softmax_cross_entropy(model(x), y)
            model.backward(grad, input_grad=False)
            optimizer.step()
        return [p.data.copy() for p in model.parameters()]


@pytest.mark.parametrize("overlap", [False, True, "interleaved"],
                         ids=["allreduce_after", "overlapping_backward", "overlapping_backward_interleaved_buffer"])
def test_two_ranks_at_batch_b_match_one_process_at_batch_2b(tmp_path, overlap):
    """'interleaved': the optimizer's buffer holds the layers' parameters out of layer order, so per-layer ranges
    overlap and the overlapping all-reduce must not reduce any piece twice."""
    body = f"""
    dist.init()
    rank, size = dist.rank(), dist.world_size()
    results = {{}}
    for name in ("sgd", "sgd_clipped", "adam", "adam_clipped"):
        model = build(seed=rank * 10)  # different initial weights on purpose: the broadcast must fix them
        parameters = model.parameters()
        if {overlap!r} == "interleaved":
            parameters = [parameters[0], parameters[2], parameters[1], parameters[3]]
        optimizer = make_optimizer(name, parameters)
        dist.broadcast_parameters(model)
        for step in range(3):
            x, y = data(step, 8)
            share = slice(rank * 4, (rank + 1) * 4)
            value, grad = fastdl.losses.softmax_cross_entropy(model(x[share]), y[share])
            if {str(overlap)!r} != "False":
                dist.backward_and_allreduce(model, grad, optimizer)
            else:
                model.backward(grad, input_grad=False)
                dist.allreduce_gradients(optimizer)
            optimizer.step()
        for i, p in enumerate(model.parameters()):
            results[f"{{name}}.{{i}}"] = p.data
    np.savez(f"{{sys.argv[1]}}/rank{{rank}}.npz", **results)
    """
    # first: the ranks then load its kernels from the cache
    expected = {name: single_process(name) for name in ("sgd", "sgd_clipped", "adam", "adam_clipped")}
    done = run_ranks(tmp_path, body)
    assert done.returncode == 0, done.stderr
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    for name in ("sgd", "sgd_clipped", "adam", "adam_clipped"):
        for i, reference in enumerate(expected[name]):
            for result in ranks:
                np.testing.assert_allclose(result[f"{name}.{i}"], reference, rtol=1e-12, atol=1e-13,
                                           err_msg=f"{name} parameter {i}")


def test_distributed_fit_matches_single_process_fit_on_the_global_batch(tmp_path):
    body = """
    x = np.random.default_rng(5).standard_normal((40, 5))
    y = np.random.default_rng(6).integers(0, 3, 40)
    model = build()
    optimizer = fastdl.optim.Adam(model.parameters(), lr=0.01)
    history = fastdl.fit(model, fastdl.losses.softmax_cross_entropy, optimizer, (x, y), epochs=2, batch_size=4,
                         seed=3, distributed=True, progress=False)
    np.savez(f"{sys.argv[1]}/rank{dist.rank()}.npz", *[p.data for p in model.parameters()],
             loss=np.array(history["loss"]))
    """
    with fastdl.use_backend("cpu"):  # first: the ranks then load its kernels from the cache
        x = np.random.default_rng(5).standard_normal((40, 5))
        y = np.random.default_rng(6).integers(0, 3, 40)
        model = fastdl.Sequential(fastdl.Dense(5, 7, activation="tanh", seed=0, dtype="float64"),
                                  fastdl.Dense(7, 3, seed=1, dtype="float64"))
        history = fastdl.fit(model, fastdl.losses.softmax_cross_entropy,
                             fastdl.optim.Adam(model.parameters(), lr=0.01), (x, y), epochs=2, batch_size=8, seed=3,
                             progress=False)
    done = run_ranks(tmp_path, body)
    assert done.returncode == 0, done.stderr
    for rank in range(2):
        result = np.load(tmp_path / f"rank{rank}.npz")
        for i, p in enumerate(model.parameters()):
            np.testing.assert_allclose(result[f"arr_{i}"], p.data, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(result["loss"], history["loss"], rtol=1e-12)


def test_a_model_that_differs_between_ranks_is_a_clear_error_not_a_hang(tmp_path):
    body = """
    dist.init()
    model = build() if dist.rank() == 0 else fastdl.Sequential(fastdl.Dense(5, 9, seed=0, dtype="float64"))
    optimizer = make_optimizer("sgd", model.parameters())
    dist.allreduce_gradients(optimizer)
    """
    done = run_ranks(tmp_path, body, timeout=120)
    assert done.returncode != 0
    assert "gradient buffer 0 differs between ranks (rank 0: 66 x float64, rank 1: 54 x float64)" in done.stderr


@pytest.mark.parametrize("difference, message", [
    ("optimizer",
     "the optimizer differs between ranks: rank 0 has 'optimizer: Adam' where rank 1 has 'optimizer: SGD'"),
    ("extra_batch_norm", "the model differs between ranks: rank 0 has 'layer 1: Dense(7->3, identity)' where rank 1 "
                         "has 'layer 1: BatchNorm(7)'"),
])
def test_ranks_with_different_models_or_optimizers_end_at_once_with_the_difference(tmp_path, difference, message):
    """Before: Adam on rank 0 and SGD with momentum on rank 1 hung in fit; an extra parameterless BatchNorm (same
    parameter count) named the wrong buffer."""
    body = f"""
    dist.init()
    model = build()
    if dist.rank() == 1 and {difference!r} == "extra_batch_norm":
        model = fastdl.Sequential(model[0], fastdl.BatchNorm(7, affine=False, dtype="float64"), model[1])
    name = "sgd" if dist.rank() == 1 and {difference!r} == "optimizer" else "adam"
    optimizer = make_optimizer(name, model.parameters())
    x, y = data(0, 16)
    fastdl.fit(model, fastdl.losses.softmax_cross_entropy, optimizer, (x, y), epochs=1, batch_size=4,
               progress=False, distributed=True)
    """
    done = run_ranks(tmp_path, body, timeout=60)
    assert done.returncode != 0
    assert message in done.stderr


def test_a_rank_that_fails_ends_the_job_instead_of_leaving_the_others_waiting(tmp_path):
    body = """
    dist.init()
    model = build()
    optimizer = make_optimizer("sgd", model.parameters())
    if dist.rank() == 1:
        raise RuntimeError("rank 1 lost its data")
    dist.allreduce_gradients(optimizer)  # rank 0 would wait here forever without the abort
    """
    done = run_ranks(tmp_path, body, timeout=120)
    assert done.returncode != 0
    assert "rank 1 lost its data" in done.stderr


def test_batches_give_each_rank_its_share_of_every_global_batch():
    x = np.arange(22)[:, None].astype(np.float32)
    y = np.arange(22)
    single = [yb.copy() for _, yb in fastdl.data.batches(x, y, 6, seed=1)]
    shards = [[yb.copy() for _, yb in fastdl.data.batches(x, y, 3, seed=1, rank=r, world_size=2)] for r in range(2)]
    assert len(fastdl.data.batches(x, y, 3, seed=1, rank=0, world_size=2)) == len(shards[0]) == 4
    for whole, first, second in zip(single, *shards):
        np.testing.assert_array_equal(np.concatenate([first, second]), whole[:2 * len(first)])
    assert [len(s) for s in shards[0]] == [3, 3, 3, 2]  # the last global batch of 4 splits 2 + 2
    with pytest.raises(ValueError, match="same seed"):
        fastdl.data.batches(x, y, 3, rank=0, world_size=2)
    with pytest.raises(ValueError, match=r"rank must lie in \[0, 2\)"):
        fastdl.data.batches(x, y, 3, seed=0, rank=2, world_size=2)


def test_functions_need_init_first():
    from fastdl import distributed

    if distributed._state["context"] is not None:
        pytest.skip("this process already joined an MPI job")
    with pytest.raises(RuntimeError, match="init"):
        distributed.allreduce_gradients(fastdl.optim.SGD(fastdl.Dense(2, 2).parameters(), lr=0.1))
    assert distributed.rank() == 0 and distributed.world_size() == 1 and distributed.is_main()


def test_synchronized_batch_norm_equals_one_process_on_the_concatenated_batch(tmp_path):
    body = """
    dist.init()
    rank = dist.rank()
    def model_with(sync):
        return fastdl.Sequential(fastdl.Dense(5, 6, seed=0, dtype="float64"),
                                 fastdl.BatchNorm(6, activation="tanh", dtype="float64", sync=sync),
                                 fastdl.Dense(6, 3, seed=1, dtype="float64"))
    model = model_with(True)
    optimizer = fastdl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(3):
        x, y = data(step, 8)
        x = x * 3 + 5  # a mean far from 0: the statistics must combine, not just add
        share = slice(rank * 4, (rank + 1) * 4)
        value, grad = fastdl.losses.softmax_cross_entropy(model(x[share]), y[share])
        model.backward(grad, input_grad=False)
        dist.allreduce_gradients(optimizer)
        optimizer.step()
    np.savez(f"{sys.argv[1]}/rank{rank}.npz", *[p.data for p in model.parameters()],
             running_mean=model[1].running_mean, running_var=model[1].running_var)
    """
    with fastdl.use_backend("cpu"):  # first: the ranks then load its kernels from the cache
        model = fastdl.Sequential(fastdl.Dense(5, 6, seed=0, dtype="float64"),
                                  fastdl.BatchNorm(6, activation="tanh", dtype="float64"),
                                  fastdl.Dense(6, 3, seed=1, dtype="float64"))
        optimizer = fastdl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for step in range(3):
            rng = np.random.default_rng(step)
            x, y = rng.standard_normal((8, 5)) * 3 + 5, rng.integers(0, 3, 8)
            value, grad = fastdl.losses.softmax_cross_entropy(model(x), y)
            model.backward(grad, input_grad=False)
            optimizer.step()
    done = run_ranks(tmp_path, body)
    assert done.returncode == 0, done.stderr
    for rank in range(2):
        result = np.load(tmp_path / f"rank{rank}.npz")
        for i, p in enumerate(model.parameters()):
            np.testing.assert_allclose(result[f"arr_{i}"], p.data, rtol=1e-10, atol=1e-12, err_msg=f"parameter {i}")
        np.testing.assert_allclose(result["running_mean"], model[1].running_mean, rtol=1e-12)
        np.testing.assert_allclose(result["running_var"], model[1].running_var, rtol=1e-10)


def test_the_per_buffer_caches_forget_a_dead_buffer_whose_address_a_new_one_takes():
    """Keyed by id() alone, a new buffer at a dead one's address skipped the size check on one rank only: that rank
    went on to the all-reduce while the other waited in the check's all-gather, both forever."""
    from fastdl import distributed

    cache = distributed._ByIdentity()
    collisions = 0
    for _ in range(20):
        old = np.zeros(1000)
        old_id = id(old)
        cache.put("checked", old)
        assert cache.get(old) == "checked"
        del old
        new = np.zeros(1000)
        collisions += id(new) == old_id
        assert cache.get(new) is None
    assert collisions  # the situation did arise: CPython reuses the freed object's memory


GRID_SEARCH = """
import numpy as np
import fastdl

def grid_data():
    rng = np.random.default_rng(7)
    return ((rng.standard_normal((48, 6)).astype(np.float32), rng.integers(0, 3, 48)),
            (rng.standard_normal((24, 6)).astype(np.float32), rng.integers(0, 3, 24)))

def build_model(params):  # the structure tests/test_tune.py trains (the ranks load its compiled step)
    return fastdl.Sequential(fastdl.Dense(6, params["width"], activation="relu", seed=1),
                             fastdl.Dense(params["width"], params["width"], activation="relu", seed=2),
                             fastdl.Dense(params["width"], 3, seed=3))

def build_optimizer(model, params):
    return fastdl.optim.AdamW(model.parameters(), lr=params["lr"])

def search(distributed):
    train, val = grid_data()
    return fastdl.tune.grid_search(build_model, build_optimizer, {"width": [8, 5], "lr": [1e-2, 3e-2]}, train, val,
                                   epochs=3, batch_size=16, seed=3, progress=False, distributed=distributed)

def summary(result):
    rows = [(row["params"], row["score"], row["best_epoch"], row["epochs"]) for row in result.rows]
    weights = [float(p.data.astype(np.float64).sum()).hex() for p in result.best_model.parameters()]
    return repr((rows, result.best_index, weights))
"""


def test_grid_search_deals_the_populations_out_over_the_ranks(tmp_path):
    namespace = {}
    exec(GRID_SEARCH, namespace)  # the single-process reference (it also compiles what the ranks load)
    with fastdl.use_backend("cpu"):
        expected = namespace["summary"](namespace["search"](False))
    result = run_ranks(tmp_path, GRID_SEARCH + """
from fastdl import distributed as dist
dist.init()
with open(f"{sys.argv[1]}/rank{dist.rank()}.txt", "w") as file:  # one file per rank: printed lines interleave
    file.write(summary(search(True)))
""")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)] == [expected, expected]
