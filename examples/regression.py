"""Regression with a mean-squared-error loss, a learning-rate schedule and early stopping on a validation split."""
import numpy as np

import fastdl
from fastdl import losses

rng = np.random.default_rng(0)
x = rng.uniform(-2, 2, (2000, 3)).astype(np.float32)
y = (np.sin(x[:, :1]) * x[:, 1:2] + 0.5 * x[:, 2:] ** 2).astype(np.float32)  # a smooth surface to fit
train, val = (x[:1600], y[:1600]), (x[1600:], y[1600:])

model = fastdl.Sequential(fastdl.Dense(3, 64, activation="silu", seed=0), fastdl.Dense(64, 64, activation="silu",
                          seed=1), fastdl.Dense(64, 1, seed=2))
optimizer = fastdl.optim.Adam(model.parameters(), lr=1e-2)
history = fastdl.fit(model, losses.mse, optimizer, train, val=val, epochs=40, batch_size=64, progress=False, seed=0,
                     scheduler=fastdl.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=40),
                     early_stopping=fastdl.EarlyStopping(patience=8))
best = history.best()  # the epoch early stopping restored the weights of (epochs count from 1)
print(f"best epoch {best} of {len(history)}: validation MSE {history['val_loss'][best - 1]:.4f} "
      f"(the target's variance: {val[1].var():.4f})")
print("validation MSE of the restored model:", fastdl.evaluate(model, *val, loss=losses.mse)["loss"])
