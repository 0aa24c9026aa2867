"""The training helpers: batches, fit with early stopping, evaluate, summary, the digits job and its CLI."""

import numpy as np
import pytest

import fastdl
from fastdl import losses, optim


def test_batches_cover_every_sample_once_per_epoch_and_reshuffle():
    x = np.arange(50, dtype=np.float32).reshape(25, 2)
    y = np.arange(25)
    loader = fastdl.data.batches(x, y, 4, seed=0)
    assert len(loader) == 7
    orders = []
    for _ in range(2):
        seen = []
        for xb, yb in loader:
            np.testing.assert_array_equal(xb[:, 0], 2 * yb)  # rows stay paired with their labels
            seen.extend(yb.tolist())
        assert sorted(seen) == list(range(25))
        orders.append(seen)
    assert orders[0] != orders[1]
    assert [int(v) for _, yb in fastdl.data.batches(x, y, 4, seed=0) for v in yb] == orders[0]  # same seed, same order
    assert sum(len(yb) for _, yb in fastdl.data.batches(x, y, 4, drop_last=True)) == 24
    assert [yb.tolist() for _, yb in fastdl.data.batches(x, y, 10, shuffle=False)][0] == list(range(10))


def test_batches_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="batches: x has 3 samples but y has 2"):
        fastdl.data.batches(np.zeros((3, 1)), np.zeros(2), 2)


def two_blobs(seed, samples=200):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, samples)
    x = (rng.standard_normal((samples, 4)) + 1.5 * y[:, None]).astype(np.float32)
    return x, y


def test_fit_learns_and_records_every_epoch(backend):
    model = fastdl.Sequential(fastdl.Dense(4, 16, activation="relu", seed=0), fastdl.Dense(16, 2, seed=1))
    history = fastdl.fit(model, losses.softmax_cross_entropy, optim.Adam(model.parameters(), lr=0.01),
                         train=two_blobs(0), val=two_blobs(1), epochs=5, batch_size=16, progress=False, seed=0)
    assert len(history) == 5 and history["epoch"] == [1, 2, 3, 4, 5]
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_accuracy"][-1] > 0.8
    assert all(record["samples_per_second"] > 0 for record in history.records)
    assert model.training  # fit leaves the model in training mode, evaluate restored it each epoch


def test_early_stopping_stops_and_restores_the_best_weights():
    model = fastdl.Sequential(fastdl.Dense(4, 16, activation="relu", seed=0), fastdl.Dense(16, 2, seed=1))
    optimizer = optim.SGD(model.parameters(), lr=0.05)
    best_states = {}

    def remember(record, model):
        best_states[record["epoch"]] = model.state_dict()
        if record["epoch"] == 3:  # scramble the weights and stop learning: epoch 3 (or earlier) stays the best
            for parameter in model.parameters():
                parameter.data = np.random.default_rng(0).standard_normal(parameter.shape).astype(np.float32) * 3
            optimizer.lr = 0.0
        return False

    stopper = fastdl.EarlyStopping(patience=2)
    history = fastdl.fit(model, losses.softmax_cross_entropy, optimizer, train=two_blobs(0), val=two_blobs(1),
                         epochs=30, batch_size=16, early_stopping=stopper, callbacks=[remember], progress=False)
    assert history.stopped_early and len(history) == 5  # epochs 4 and 5 bring nothing: patience 2 stops there
    best = int(np.argmin(history["val_loss"])) + 1
    assert history.best_epoch == best <= 3
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, best_states[best][name])


@pytest.mark.parametrize("empty", ["train", "val"])
def test_fit_refuses_an_empty_dataset_before_training(empty):
    model = fastdl.Sequential(fastdl.Dense(4, 2, seed=0))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    before = [p.data.copy() for p in model.parameters()]
    x, y = two_blobs(0, samples=20)
    data = {"train": (x, y), "val": (x, y)}
    data[empty] = (x[:0], y[:0])
    with pytest.raises(ValueError, match=f"fit: {empty}'s x has no rows"):
        fastdl.fit(model, losses.softmax_cross_entropy, optimizer, train=data["train"], val=data["val"], epochs=1,
                   progress=False)
    assert optimizer.steps == 0
    for parameter, old in zip(model.parameters(), before):
        np.testing.assert_array_equal(parameter.data, old)
    with pytest.raises(ValueError, match="evaluate: x has no rows"):
        fastdl.evaluate(model, x[:0], y[:0])


@pytest.mark.parametrize("damage,error,message", [
    (lambda x, y: (x, y[:-1]), ValueError, r"fit: val's x has 20 samples but its y has 19"),
    (lambda x, y: (x, y.astype(np.float32)), ValueError,
     r"fit: softmax_cross_entropy takes val's y as integer class labels of shape \(20,\), got float32 \(20,\)"),
    (lambda x, y: (x, np.eye(2, dtype=np.int64)[y]), ValueError, r"integer class labels of shape \(20,\), got int64 "
                                                              r"\(20, 2\)"),
    (lambda x, y: (x,), TypeError, r"fit: val must be an \(x, y\) pair, got tuple"),
    # these surfaced as "'list' object has no attribute 'shape'", as a sample count of x's features, and named
    # compile_step
    (lambda x, y: (x.tolist(), y), TypeError, r"fit: val's x must be an array \(numpy, or the active backend's\), "
                                              r"got list; np.asarray makes one"),
    (lambda x, y: (x[None], y), ValueError, r"fit: val's x must have 2 dimensions \(samples, features\), got shape "
                                            r"\(1, 20, 4\)"),
    (lambda x, y: (x.astype(np.float64), y), TypeError, r"fit: val's x has dtype float64, the model's parameters "
                                                        r"float32 \(shape \(20, 4\)\); convert it with "
                                                        r"x.astype\(np.float32\)"),
])
def test_fit_checks_its_data_before_training_naming_itself(damage, error, message):
    """These used to surface at the first batch, named after fit's helpers ("batches: ...", "compile_step: ...")
    or as a bare unpacking error."""
    model = fastdl.Sequential(fastdl.Dense(4, 2, seed=0))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    before = [p.data.copy() for p in model.parameters()]
    x, y = two_blobs(0, samples=20)
    with pytest.raises(error, match=message):
        fastdl.fit(model, losses.softmax_cross_entropy, optimizer, train=(x, y), val=damage(x, y), epochs=1,
                   progress=False)
    assert optimizer.steps == 0
    for parameter, old in zip(model.parameters(), before):
        np.testing.assert_array_equal(parameter.data, old)


@pytest.mark.parametrize("damage,message", [
    (lambda x, y: (x, np.where(np.arange(len(y)) == len(y) - 1, 2, y)),
     r"fit: train's labels must lie in \[0, 2\) for the model's 2 outputs, got values in \[0, 2\]"),
    (lambda x, y: (np.where(np.arange(len(x))[:, None] == len(x) - 3, np.nan, x).astype(np.float32), y),
     r"fit: train's x contains NaN or Inf \(shape \(40, 4\)\)"),
    (lambda x, y: (x[:, :3], y), r"fit: train's x has 3 features, the model takes 4 \(shape \(40, 3\)\)"),
], ids=["label", "nan", "features"])
def test_fit_refuses_a_bad_sample_in_a_late_batch_before_training_any(damage, message):
    """A label out of range or NaN in the last batch stopped fit with a step's message after it had trained on
    every batch before it."""
    model = fastdl.Sequential(fastdl.Dense(4, 2, seed=0))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    before = [p.data.copy() for p in model.parameters()]
    x, y = two_blobs(0, samples=40)
    with pytest.raises(ValueError, match=message):
        fastdl.fit(model, losses.softmax_cross_entropy, optimizer, train=damage(x, y), epochs=1, batch_size=8,
                   progress=False)
    assert optimizer.steps == 0
    for parameter, old in zip(model.parameters(), before):
        np.testing.assert_array_equal(parameter.data, old)


def test_fit_refuses_bad_regression_targets_before_training():
    model = fastdl.Sequential(fastdl.Dense(4, 1, seed=0))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    x = np.random.default_rng(0).standard_normal((40, 4)).astype(np.float32)
    y = np.ones((40, 1), np.float32)
    y[37] = np.inf
    with pytest.raises(ValueError, match=r"fit: train's y contains NaN or Inf \(shape \(40, 1\)\)"):
        fastdl.fit(model, losses.mse, optimizer, train=(x, y), epochs=1, batch_size=8, progress=False)
    with pytest.raises(TypeError, match=r"fit: train's y has dtype bool, the model's parameters float32 \(shape "
                                        r"\(40, 1\)\); convert it with y.astype\(np.float32\)"):
        fastdl.fit(model, losses.binary_cross_entropy_with_logits, optimizer, train=(x, y > 0), epochs=1,
                   progress=False)
    assert optimizer.steps == 0


@pytest.mark.parametrize("call", ["save", "load"])
def test_checkpoint_functions_name_a_swapped_call(tmp_path, call):
    """torch.save takes the object first; fastdl.save and load take the path first."""
    model = fastdl.Sequential(fastdl.Dense(4, 2, seed=0))
    path = fastdl.save(tmp_path / "model.npz", model)
    function = getattr(fastdl, call)
    with pytest.raises(TypeError, match=rf"fastdl.{call}: the call is {call}\(path, model, optimizer=None\); path "
                                        r"must be a str or os.PathLike, got Sequential \(the path comes first\)"):
        function(model, path)
    with pytest.raises(TypeError, match=rf"fastdl.{call}: model must be a fastdl Module, got dict"):
        function(path, model.state_dict())
    with pytest.raises(TypeError, match=rf"fastdl.{call}: optimizer must be a fastdl optimizer or None, got dict"):
        function(path, model, {})


def test_evaluate_reports_loss_and_accuracy_in_eval_mode():
    model = fastdl.Sequential(fastdl.Dense(4, 2, seed=0), fastdl.Dropout(0.5, seed=1))
    x, y = two_blobs(0)
    scores = fastdl.evaluate(model, x, y)
    logits = fastdl.Dense(4, 2, seed=0)(x)  # the same weights without dropout: eval mode is identity
    expected_loss, _ = losses.softmax_cross_entropy(logits, y)
    assert scores["loss"] == pytest.approx(float(expected_loss), rel=1e-5)
    assert scores["accuracy"] == pytest.approx(float((logits.argmax(axis=1) == y).mean()))
    assert model.training


def test_summary_lists_layers_shapes_and_parameter_counts():
    model = fastdl.Sequential(fastdl.Dense(64, 32, seed=0), fastdl.BatchNorm(32, activation="relu"),
                              fastdl.Dropout(0.1), fastdl.Dense(32, 10, seed=1))
    text = model.summary()
    assert "(N, 32)" in text and "(N, 10)" in text
    assert f"{64 * 32 + 32 + 2 * 32 + 32 * 10 + 10:,}" in text.splitlines()[-1]
    printed = []
    assert model.summary(print_fn=printed.append) == text and printed == [text]


def test_history_plot_writes_a_png_or_says_what_is_missing(tmp_path):
    history = fastdl.History()
    history.records = [{"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4},
                       {"epoch": 2, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.7, "val_accuracy": 0.7}]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="History.plot needs matplotlib"):
            history.plot(tmp_path / "curves.png")
        return
    path = history.plot(tmp_path / "curves.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_history_figure_labels_its_axes_and_marks_the_best_epoch():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    history = fastdl.History()
    history.records = [{"epoch": 1, "loss": 1.0, "val_loss": 1.1}, {"epoch": 2, "loss": 0.5, "val_loss": 0.7},
                       {"epoch": 3, "loss": 0.4, "val_loss": 0.9}]
    assert history.best() == 2  # the lowest validation loss
    figure = history.figure()
    try:
        (axis,) = figure.axes  # a regression: no accuracy panel
        assert (axis.get_xlabel(), axis.get_ylabel()) == ("epoch", "loss")
        labels = [line.get_label() for line in axis.get_lines()]
        assert labels == ["training loss", "validation loss", "best epoch (2)"]
        assert list(axis.get_lines()[2].get_xdata()) == [2, 2]
    finally:
        plt.close(figure)
    history.best_epoch = 3  # what early stopping chose wins
    assert history.best() == 3


def test_digits_ship_with_the_package():
    (x_train, y_train), (x_test, y_test) = fastdl.datasets.load_digits()
    assert x_train.shape == (1438, 64) and x_test.shape == (359, 64)
    assert x_train.dtype == np.float32 and 0 <= x_train.min() and x_train.max() <= 1
    assert set(np.unique(y_test)) == set(range(10))


def test_the_main_job_reaches_97_percent_on_the_digits_with_its_defaults(tmp_path):
    from fastdl import train_digits

    accuracy, history = train_digits.train(out=str(tmp_path), progress=False, log=lambda *args: None)
    assert accuracy >= 0.97
    assert (tmp_path / "checkpoint.npz").exists()


def test_train_command_runs_end_to_end(tmp_path, capsys):
    from fastdl.__main__ import main

    assert main(["train", "--epochs", "2", "--hidden", "16", "--optimizer", "sgd", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "samples/s" in out and str(tmp_path / "checkpoint.npz") in out
    model = fastdl.train_digits.build_model(16, seed=0)
    extra = fastdl.load(tmp_path / "checkpoint.npz", model)
    assert extra["epochs"] == 2


def test_train_command_rejects_an_unknown_optimizer(tmp_path, capsys):
    from fastdl.__main__ import main

    assert main(["train", "--optimizer", "adamax", "--out", str(tmp_path)]) == 2
    assert "argument --optimizer: invalid choice: 'adamax'" in capsys.readouterr().err


@pytest.mark.parametrize("arguments,message", [
    (["train", "--epochs", "0"], "argument --epochs: must be a positive integer, got 0"),
    (["train", "--epochs", "-1"], "argument --epochs: must be a positive integer, got -1"),
    (["train", "--batch-size", "many"], "argument --batch-size: must be a positive integer, got 'many'"),
    (["train", "--lr", "-0.1"], "argument --lr: must be a positive number, got -0.1"),
    (["train", "--backend", "tpu"], "argument --backend: invalid choice: 'tpu'"),
    (["demo", "--steps", "0"], "argument --steps: must be a positive integer, got 0"),
], ids=["epochs_0", "epochs_negative", "batch_size_text", "lr_negative", "backend", "demo_steps_0"])
def test_cli_refuses_bad_options_before_doing_anything(tmp_path, capsys, arguments, message):
    from fastdl.__main__ import main

    checkpoint = tmp_path / "checkpoint.npz"
    checkpoint.write_bytes(b"an earlier run's checkpoint")
    assert main(arguments + (["--out", str(tmp_path)] if arguments[0] == "train" else [])) == 2
    assert message in capsys.readouterr().err
    assert checkpoint.read_bytes() == b"an earlier run's checkpoint"


def test_cli_checks_the_output_folder_before_training(tmp_path, capsys):
    from fastdl.__main__ import main

    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    assert main(["train", "--out", str(a_file)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_cli_version_and_help(capsys):
    from fastdl.__main__ import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fastdl {fastdl.__version__}"
    assert main(["train", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "width of both hidden layers (default: 128)" in " ".join(help_text.split())


def test_manual_seed_makes_unseeded_layers_and_fit_reproducible():
    def run():
        model = fastdl.Sequential(fastdl.Dense(4, 16, activation="rrelu"), fastdl.Dropout(0.3),
                                  fastdl.Dense(16, 2, dropout=0.2))
        history = fastdl.fit(model, losses.softmax_cross_entropy, optim.Adam(model.parameters(), lr=0.01),
                             train=two_blobs(0, samples=64), epochs=2, batch_size=16, progress=False)
        return [p.data.copy() for p in model.parameters()], history["loss"]

    # on the reference backend: the seeds are the point here, not the compiled step (a new model to compile)
    with fastdl.use_backend("numpy"):
        try:
            fastdl.manual_seed(7)
            first = run()
            fastdl.manual_seed(7)
            second = run()
            fastdl.manual_seed(8)
            third = run()
        finally:
            fastdl.manual_seed(None)
    assert first[1] == second[1] and first[1] != third[1]
    for a, b in zip(first[0], second[0]):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="manual_seed: seed must be a non-negative integer or None, got -1"):
        fastdl.manual_seed(-1)


def test_print_model_shows_every_layer_with_its_settings():
    model = fastdl.Sequential(fastdl.Dense(4, 8, activation="relu", seed=0), fastdl.BatchNorm(8),
                              fastdl.Dropout(0.2), fastdl.PReLU(8), fastdl.Standardize(8), fastdl.Dense(8, 2, seed=1))
    text = repr(model)
    assert "object at" not in text
    for line in ["(0): Dense(4, 8, activation='relu', bias=True)", "(2): Dropout(p=0.2)", "(3): PReLU(8)",
                 "(4): Standardize(8)"]:
        assert line in text


def test_batch_callbacks_see_every_step_and_can_stop_training(tmp_path):
    model = fastdl.Sequential(fastdl.Dense(4, 2, seed=0))
    seen = []

    def watch(record, model):
        seen.append((record["epoch"], record["batch"], record["loss"] > 0, record["lr"]))
        return record["epoch"] == 2 and record["batch"] == 3

    logger = fastdl.CSVLogger(tmp_path / "log.csv")
    history = fastdl.fit(model, losses.softmax_cross_entropy, optim.SGD(model.parameters(), lr=0.1),
                         train=two_blobs(0, samples=80), epochs=5, batch_size=16, progress=False,
                         batch_callbacks=[watch], callbacks=[logger])
    assert seen == [(1, b, True, 0.1) for b in range(1, 6)] + [(2, b, True, 0.1) for b in range(1, 4)]
    assert len(history) == 2 and history.stopped_early
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["epoch", "loss", "lr"] and len(rows) == 3
    assert [float(row.split(",")[1]) for row in rows[1:]] == history["loss"]
    assert [path.name for path in tmp_path.iterdir()] == ["log.csv"]  # written atomically: no temporary left
