"""A hyperparameter grid trained as populations: 16 settings of learning rate x weight decay in one compiled
call per step, then the best setting's model, and the same model as a scikit-learn estimator.

    python examples/grid_search.py [epochs]
"""

import sys

import fastdl
from fastdl import optim

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
(x_train, y_train), (x_test, y_test) = fastdl.datasets.load_digits()
# the last 300 training images are the validation split the settings are compared on
train, val = (x_train[:-300], y_train[:-300]), (x_train[-300:], y_train[-300:])


def build_model(params):
    return fastdl.Sequential(fastdl.Dense(64, 64, activation="relu", seed=0),
                             fastdl.Dense(64, 64, activation="relu", seed=1),
                             fastdl.Dense(64, 10, seed=2))


def build_optimizer(model, params):
    return optim.AdamW(model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])


grid = {"lr": [3e-4, 1e-3, 3e-3, 1e-2], "weight_decay": [0.0, 1e-3, 1e-2, 1e-1]}
result = fastdl.tune.grid_search(build_model, build_optimizer, grid, train, val, epochs=epochs, batch_size=32,
                                 early_stopping=5, seed=0, progress=False)
print(result.table())
print("best setting", result.best_params, f"validation accuracy {result.best_score:.4f}")
print(f"test accuracy of the best model {fastdl.evaluate(result.best_model, x_test, y_test)['accuracy']:.4f}")

try:
    from fastdl.sklearn import MLPClassifier
except ImportError:  # scikit-learn is an extra
    print("(pip install scikit-learn for the estimator part)")
else:
    estimator = MLPClassifier((64, 64), learning_rate_init=result.best_params["lr"], batch_size=32, max_iter=epochs,
                              random_state=0).fit(*train)
    print(f"scikit-learn estimator test accuracy {estimator.score(x_test, y_test):.4f}")
