"""Train an MLP on the digits that ship with fastdl, evaluate it, save it, load it back: the README's example."""
import sys

import fastdl
from fastdl import losses

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
(x_train, y_train), (x_test, y_test) = fastdl.datasets.load_digits()
model = fastdl.Sequential(
    fastdl.Dense(64, 128, activation="relu", seed=0),
    fastdl.BatchNorm(128, activation="relu"),
    fastdl.Dense(128, 10, seed=1),
)
optimizer = fastdl.optim.AdamW(model.parameters(), lr=3e-3)
history = fastdl.fit(model, losses.softmax_cross_entropy, optimizer, (x_train, y_train), epochs=epochs,
                     batch_size=64, progress=False, seed=0)
print(f"trained {len(history.records)} epochs, last loss {history.records[-1]['loss']:.4f}")
print("test accuracy", fastdl.evaluate(model, x_test, y_test)["accuracy"])

path = fastdl.save("digits-mlp", model, optimizer)       # digits-mlp.npz, written atomically
copy = fastdl.Sequential(fastdl.Dense(64, 128, activation="relu"), fastdl.BatchNorm(128, activation="relu"),
                         fastdl.Dense(128, 10))
fastdl.load(path, copy)
print("reloaded test accuracy", fastdl.evaluate(copy, x_test, y_test)["accuracy"])
