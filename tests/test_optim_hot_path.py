"""The optimizer step in a hot loop: no allocation in steady state, no recompilation; bad input changes nothing."""

import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

import fastdl
from fastdl import optim

ALL = [
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    (optim.Adagrad, {}),
    (optim.RMSprop, dict(centered=True, momentum=0.9)),
    (optim.Adam, dict(amsgrad=True)),
    (optim.AdamW, {}),
    (optim.LARS, dict(lr=0.1)),
    (optim.LAMB, {}),
]


def model_parameters(size=300_000):
    """Enough parameters for the parallel kernels, plus small tensors for the serial ones."""
    rng = np.random.default_rng(0)
    shapes = [(size // 100, 100), (100,), (7, 3)]
    parameters = [fastdl.Parameter(rng.standard_normal(shape).astype(np.float32)) for shape in shapes]
    for parameter in parameters:
        parameter.grad = rng.standard_normal(parameter.shape).astype(np.float32)
    return parameters


@pytest.mark.parametrize("cls, kwargs", ALL, ids=[cls.__name__ for cls, _ in ALL])
@pytest.mark.parametrize("size", [300_000, 1000], ids=["parallel", "serial"])
def test_step_allocates_nothing_and_never_recompiles(cls, kwargs, size):
    from fastdl.kernels.cpu import optim as kernels

    with fastdl.use_backend("cpu"):
        optimizer = cls(model_parameters(size), max_grad_norm=1.0, **kwargs)
        optimizer.step()
        optimizer.step()
        dispatchers = [value for value in vars(kernels).values() if hasattr(value, "signatures")]
        compiled = [len(dispatcher.signatures) for dispatcher in dispatchers]
        tracemalloc.start()
        for step in range(20):
            optimizer.lr = 0.01 / (step + 1)  # a new lr every step, as a schedule would set it
            optimizer.step()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert [len(dispatcher.signatures) for dispatcher in dispatchers] == compiled
    # One float32 state array here is 1.2 MB; what remains is Python scalars and call frames.
    assert peak < 8 * 1024, f"steady-state step allocated {peak} bytes"


def snapshot(parameters, optimizer):
    return ([fastdl.to_numpy(p.data).copy() for p in parameters], [fastdl.to_numpy(p.grad).copy() for p in parameters],
            optimizer.state_dict() if optimizer is not None else None)


def assert_unchanged(before, after):
    for old, new in zip(before[0] + before[1], after[0] + after[1]):
        np.testing.assert_array_equal(old, new)
    if before[2] is not None:
        assert before[2]["steps"] == after[2]["steps"]
        assert before[2]["hyperparameters"] == after[2]["hyperparameters"]
        for key, value in before[2]["state"].items():
            np.testing.assert_array_equal(value, after[2]["state"][key])


@pytest.mark.parametrize("make, message", [
    (lambda ps: optim.SGD(ps, lr=-0.1), r"SGD: lr must be in \[0, inf\), got -0.1"),
    (lambda ps: optim.Adam(ps, betas=(1.0, 0.9)), r"Adam: betas\[0\] must be in \[0, 1\), got 1.0"),
    (lambda ps: optim.Adam(ps, betas=(0.9, -0.1)), r"Adam: betas\[1\] must be in \[0, 1\), got -0.1"),
    (lambda ps: optim.LAMB(ps, betas=(0.9,)), r"LAMB: betas must be a pair"),
    (lambda ps: optim.Adam(ps, eps=0.0), r"Adam: eps must be in \(0, inf\), got 0.0"),
    (lambda ps: optim.RMSprop(ps, alpha=1.5), r"RMSprop: alpha must be in \[0, 1\], got 1.5"),
    (lambda ps: optim.Adagrad(ps, eps=-1e-10), r"Adagrad: eps must be in \(0, inf\)"),
    (lambda ps: optim.AdamW(ps, weight_decay=float("nan")), r"AdamW: weight_decay must be in \[0, inf\), got nan"),
    (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), r"SGD: Nesterov momentum needs momentum > 0"),
    (lambda ps: optim.Adam(ps, max_grad_norm=0), r"Adam: max_grad_norm must be in \(0, inf\)"),
    (lambda ps: optim.Adam(ps, l1=-1), r"Adam: l1 must be in \[0, inf\)"),
])
def test_bad_hyperparameters_are_clear_errors_before_the_parameters_move(make, message):
    parameters = model_parameters(1000)
    before = snapshot(parameters, None)
    with pytest.raises(ValueError, match=message):
        make(parameters)
    assert all(p._flat is None for p in parameters)
    assert_unchanged(before, snapshot(parameters, None))


def test_setting_a_bad_lr_later_is_an_error_and_keeps_the_old_one():
    optimizer = optim.Adam(model_parameters(1000), lr=0.01)
    with pytest.raises(ValueError, match=r"Adam: lr must be in \[0, inf\), got -1.0"):
        optimizer.lr = -1.0
    assert optimizer.lr == 0.01


def test_non_parameters_are_a_type_error():
    with pytest.raises(TypeError, match="Adam: expected fastdl Parameters"):
        optim.Adam([np.zeros(3, np.float32)])


@pytest.mark.parametrize("value, error, message", [
    (np.zeros((3, 7), np.float32), ValueError, r"cannot assign grad of shape \(3, 7\) to a parameter of shape \(7, 3\)"),
    (np.zeros((7, 3), np.float64), TypeError, r"cannot assign grad of dtype float64 to a float32 parameter"),
    (None, TypeError, r"grad cannot be set to None"),
])
def test_a_gradient_of_the_wrong_shape_or_dtype_is_refused_and_nothing_changes(value, error, message):
    parameters = model_parameters(1000)
    optimizer = optim.Adam(parameters)
    optimizer.step()
    before = snapshot(parameters, optimizer)
    with pytest.raises(error, match=message):
        parameters[2].grad = value
    assert_unchanged(before, snapshot(parameters, optimizer))
    optimizer.step()  # and the buffers still work
    assert optimizer.steps == 2


def test_load_state_dict_of_another_model_or_algorithm_changes_nothing():
    parameters = model_parameters(1000)
    optimizer = optim.Adam(parameters)
    optimizer.step()
    other = optim.Adam(model_parameters(2000))
    before = snapshot(parameters, optimizer)
    with pytest.raises(ValueError, match="parameter shapes"):
        optimizer.load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match="the state is from 'SGD'"):
        optimizer.load_state_dict(optim.SGD(model_parameters(1000), lr=0.1).state_dict())
    amsgrad_state = optim.Adam(model_parameters(1000), amsgrad=True).state_dict()
    with pytest.raises(ValueError, match="were the options, e.g. amsgrad or momentum, different"):
        optimizer.load_state_dict(amsgrad_state)
    assert_unchanged(before, snapshot(parameters, optimizer))


def test_a_corrupt_or_mismatched_checkpoint_is_an_error_and_the_model_stays(tmp_path):
    model = fastdl.Sequential(fastdl.Dense(3, 4, seed=0), fastdl.Dense(4, 2, seed=1))
    optimizer = optim.Adam(model.parameters())
    fastdl.save(tmp_path / "good.npz", model, optimizer)
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    before = model.state_dict()
    with pytest.raises(ValueError, match="truncated.npz is not a readable fastdl checkpoint"):
        fastdl.load(tmp_path / "truncated.npz", model, optimizer)
    other = fastdl.Sequential(fastdl.Dense(3, 5, seed=0), fastdl.Dense(5, 2, seed=1))
    fastdl.save(tmp_path / "other.npz", other, optim.Adam(other.parameters()))
    with pytest.raises(ValueError, match=r"0.weight has shape \(3, 5\), the model's is \(3, 4\)"):
        fastdl.load(tmp_path / "other.npz", model, optimizer)
    # a missing file is the FileNotFoundError a resume (`except FileNotFoundError: start afresh`) waits for
    with pytest.raises(FileNotFoundError, match=r"fastdl.load: no checkpoint at .*missing \(nor .*missing.npz\)"):
        fastdl.load(tmp_path / "missing", model, optimizer)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["good.npz", "other.npz", "truncated.npz"]


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    from fastdl._files import atomic_path, umask, write_text_atomically

    target = tmp_path / "results.md"
    write_text_atomically(target, "old")
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask()  # an ordinary file, not mkstemp's private one
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as temporary:
            with open(temporary, "w") as file:
                file.write("half of the ne")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["results.md"]


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and process ids as POSIX has them")
def test_a_write_killed_midway_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    from fastdl._files import ABANDONED_AFTER_SECONDS, write_text_atomically

    writer = ("import sys, time\nfrom fastdl._files import atomic_path\n"
              "with atomic_path(sys.argv[1]) as temporary:\n"
              "    open(temporary, 'w').write('half of a checkpoint')\n    print('writing', flush=True)\n"
              "    time.sleep(60)\n")
    process = subprocess.Popen([sys.executable, "-c", writer, str(tmp_path / "model.npz")], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline() == "writing\n"
    process.kill()
    process.wait(timeout=10)
    [abandoned] = tmp_path.glob(".fastdl-*")
    live = tmp_path / f".fastdl-{os.getpid()}@{abandoned.name.split('@')[1]}@abcdefgh.tmp"  # this process: writing
    old = tmp_path / ".fastdl-k2j4h1x9.tmp"  # an older name without a process id: removed once a day old
    recent = tmp_path / ".fastdl-p8q7r6s5.tmp"
    for path in (live, old, recent):
        path.write_text("x")
    os.utime(old, (time.time() - ABANDONED_AFTER_SECONDS - 60,) * 2)
    write_text_atomically(tmp_path / "notes.md", "new")
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([live.name, recent.name, "notes.md"])


def test_every_byte_flip_in_a_checkpoints_zip_headers_is_a_value_error_or_changes_nothing(tmp_path):
    """Flipped bytes in the first member's header and in the central directory: a ValueError, or (a field nobody
    reads, such as a timestamp) the very state that was saved; never other data, never another exception type."""
    model = fastdl.Sequential(fastdl.Dense(3, 4, seed=0), fastdl.Dense(4, 2, seed=1))
    optimizer = optim.Adam(model.parameters())
    optimizer.step()
    fastdl.save(tmp_path / "good.npz", model, optimizer)
    data = (tmp_path / "good.npz").read_bytes()
    saved = model.state_dict()
    refused = 0
    for position in [*range(64), *range(len(data) - 120, len(data))]:
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        (tmp_path / "damaged.npz").write_bytes(bytes(damaged))
        try:
            fastdl.load(tmp_path / "damaged.npz", model, optimizer)
        except ValueError as error:
            assert "damaged.npz" in str(error)
            refused += 1
        for name, value in model.state_dict().items():
            np.testing.assert_array_equal(value, saved[name], err_msg=f"byte {position}")
    assert refused > 80  # most flips are caught (100 of these 184 today)


def test_save_adds_npz_as_numpy_does_and_load_finds_it_by_either_name(tmp_path):
    model = fastdl.Sequential(fastdl.Dense(3, 2, seed=0))
    assert fastdl.save(tmp_path / "model", model) == str(tmp_path / "model.npz")
    assert fastdl.save(tmp_path / "kept.npz", model) == str(tmp_path / "kept.npz")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kept.npz", "model.npz"]
    other = fastdl.Sequential(fastdl.Dense(3, 2, seed=1))
    for name in ("model", "model.npz"):
        other[0].weight.data[...] = 0
        fastdl.load(tmp_path / name, other)
        np.testing.assert_array_equal(other[0].weight.data, model[0].weight.data)
