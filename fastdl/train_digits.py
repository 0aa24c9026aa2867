"""The main job: train an MLP on the handwritten digits shipped with fastdl and report what it learned.

Dense -> BatchNorm+ReLU (fused) -> Dropout, twice, then Dense to 10 logits; softmax cross-entropy; Adam (or
another optimizer) with a linear warm-up and cosine decay of the learning rate; early stopping on a
validation split carved from the training images. Prints the test accuracy and the throughput, writes the
learning curves (PNG, when matplotlib is installed) and a checkpoint.
"""

import os
import time

import numpy as np

from . import losses
from .checkpoint import save
from .datasets import load_digits
from .layers import Dense, Sequential
from .normalization import BatchNorm, Dropout
from .optim import SGD, Adam, AdamW, LAMB, RMSprop, lr_scheduler
from .training import EarlyStopping, evaluate, fit

OPTIMIZERS = {"adam": Adam, "adamw": AdamW, "sgd": SGD, "rmsprop": RMSprop, "lamb": LAMB}


def _silent(*args, **kwargs):
    pass


def build_model(hidden, seed, dropout=0.2, inputs=64, classes=10):
    return Sequential(
        Dense(inputs, hidden, seed=seed), BatchNorm(hidden, activation="relu"), Dropout(dropout, seed=seed + 1),
        Dense(hidden, hidden, seed=seed + 2), BatchNorm(hidden, activation="relu"), Dropout(dropout, seed=seed + 3),
        Dense(hidden, classes, seed=seed + 4),
    )


def make_optimizer(name, parameters, lr):
    if name not in OPTIMIZERS:
        raise ValueError(f"fastdl train: unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if name == "sgd":
        return SGD(parameters, lr=lr, momentum=0.9, nesterov=True)
    return OPTIMIZERS[name](parameters, lr=lr)


def train(epochs=40, batch_size=32, optimizer="adam", lr=3e-3, hidden=128, seed=0, out="fastdl-digits",
          progress=True, log=print, distributed=False):
    """Train and report; returns (test accuracy, History). ``distributed``: data-parallel over the ranks of
    mpirun (``batch_size`` per rank); only rank 0 logs and writes files."""
    started = time.perf_counter()
    if distributed:
        from . import distributed as dist

        dist.init()
        if not dist.is_main():
            log = _silent
    (x_train, y_train), (x_test, y_test) = load_digits()
    # the last 15% of a fixed permutation of the training images watch over early stopping
    order = np.random.default_rng(seed).permutation(len(x_train))
    cut = int(0.85 * len(order))
    train_part, val_part = order[:cut], order[cut:]
    model = build_model(hidden, seed)
    log(f"fastdl train: handwritten digits (8x8), {len(train_part)} training / {len(val_part)} validation / "
        f"{len(x_test)} test images")
    log(model.summary())
    opt = make_optimizer(optimizer, model.parameters(), lr)
    warmup = max(1, epochs // 10)
    schedule = lr_scheduler.WarmupLR(opt, warmup, start_factor=0.1,
                                     after=lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=max(1, epochs - warmup)))
    history = fit(model, losses.softmax_cross_entropy, opt, train=(x_train[train_part], y_train[train_part]),
                  val=(x_train[val_part], y_train[val_part]), epochs=epochs, batch_size=batch_size,
                  scheduler=schedule, early_stopping=EarlyStopping(patience=10), progress=progress, seed=seed,
                  distributed=distributed)
    test = evaluate(model, x_test, y_test)
    seconds = time.perf_counter() - started
    # the median epoch: the first one also pays the kernels' JIT compilation on a fresh install
    throughput = float(np.median(history["samples_per_second"]))
    log(f"test accuracy {test['accuracy']:.2%} (loss {test['loss']:.4f}) after {len(history)} epochs"
        f"{' (early stop, best epoch ' + str(history.best_epoch) + ')' if history.stopped_early else ''}; "
        f"training throughput {throughput:,.0f} samples/s (median epoch); {seconds:.1f} s in all, JIT compilation "
        "included")
    if log is _silent:
        return test["accuracy"], history
    os.makedirs(out, exist_ok=True)
    checkpoint = os.path.join(out, "checkpoint.npz")
    save(checkpoint, model, opt, extra={"test_accuracy": test["accuracy"], "epochs": len(history)})
    log(f"checkpoint: {checkpoint}")
    try:
        log(f"learning curves: {history.plot(os.path.join(out, 'learning_curves.png'))}")
    except RuntimeError as error:
        log(f"learning curves not drawn: {error}")
    return test["accuracy"], history
