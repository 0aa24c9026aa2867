"""scikit-learn estimators over fastdl: ``MLPClassifier`` and ``MLPRegressor`` (``pip install ".[sklearn]"``).

They take scikit-learn's ``MLPClassifier`` parameter names where they apply (``hidden_layer_sizes``, ``activation``,
``alpha``, ``batch_size``, ``learning_rate_init``, ``max_iter``, ``tol``, ``early_stopping``,
``validation_fraction``, ``n_iter_no_change``, ``random_state``, ...) with its defaults and stopping rules, plus
fastdl's own (``batch_norm``, ``dropout``, ``optimizer``), and train with ``fastdl.compile_step`` (float32), so they
work in ``Pipeline``, ``GridSearchCV`` and ``cross_val_score`` as scikit-learn's do, only faster.

Choices where scikit-learn's and fastdl's models differ (documented in docs/tune.md):
- ``alpha`` is scikit-learn's L2 penalty ``alpha / (2 n) ||W||^2`` over a batch of n samples: fastdl applies it as
  weight decay ``alpha / batch_size`` on the weights (not the biases) inside the optimizer's update.
- The classifier's output is a softmax over every class, two included (scikit-learn uses one logistic unit for
  two classes); ``predict_proba`` has one column per class either way.
- ``loss_curve_`` holds the mean data loss per epoch, without the penalty term.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError as error:  # an extra: say how to get it
    raise ImportError("fastdl.sklearn needs scikit-learn (>= 1.6): pip install scikit-learn, or install fastdl with "
                      "its 'sklearn' extra") from error

from . import losses as fastdl_losses
from .data import batches
from .layers import Dense, Sequential
from .normalization import BatchNorm, Dropout
from .optim import SGD, Adam, AdamW
from .step import compile_step

# scikit-learn's activation names, and fastdl's own for the rest
ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
OPTIMIZERS = ("adam", "adamw", "sgd")
PREDICT_ROWS = 4096  # rows per forward when predicting (bounds the activations' memory)


def _is_weight(name, parameter):
    return len(parameter.shape) > 1  # Dense weights; biases and batch norm's scale and shift take no penalty


class _FastdlMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, the network, the training loop."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, alpha=0.0001, batch_size="auto",
                 learning_rate_init=0.001, max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False,
                 momentum=0.9, early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, batch_norm=False, dropout=0.0, optimizer="adam"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.momentum = momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.batch_norm = batch_norm
        self.dropout = dropout
        self.optimizer = optimizer

    # -- checks (in fit, as scikit-learn does: the constructor only stores) --------------------------------------
    def _check_parameters(self):
        name = type(self).__name__
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, numbers.Integral) else list(sizes)
        if any(isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1 for size in sizes):
            raise ValueError(f"{name}: hidden_layer_sizes must be positive integers, got {self.hidden_layer_sizes!r}")
        if not isinstance(self.activation, str):
            raise ValueError(f"{name}: activation must be a name, got {self.activation!r}")
        for parameter, low, high in (("alpha", 0.0, None), ("learning_rate_init", 0.0, None), ("tol", 0.0, None),
                                     ("momentum", 0.0, 1.0), ("beta_1", 0.0, 1.0), ("beta_2", 0.0, 1.0),
                                     ("epsilon", 0.0, None), ("dropout", 0.0, 1.0),
                                     ("validation_fraction", 0.0, 1.0)):
            value = getattr(self, parameter)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) \
                    or value < low or (high is not None and value > high):
                raise ValueError(f"{name}: {parameter} must be a number in [{low}, {high if high else 'inf'}], got "
                                 f"{value!r}")
        if self.learning_rate_init <= 0:
            raise ValueError(f"{name}: learning_rate_init must be positive, got {self.learning_rate_init!r}")
        if self.dropout >= 1.0:
            raise ValueError(f"{name}: dropout must be below 1, got {self.dropout!r}")
        if self.early_stopping and not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"{name}: validation_fraction must lie in (0, 1), got {self.validation_fraction!r}")
        for parameter in ("max_iter", "n_iter_no_change"):
            value = getattr(self, parameter)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name}: {parameter} must be a positive integer, got {value!r}")
        if not (self.batch_size == "auto" or (isinstance(self.batch_size, numbers.Integral)
                                              and not isinstance(self.batch_size, bool) and self.batch_size >= 1)):
            raise ValueError(f"{name}: batch_size must be 'auto' or a positive integer, got {self.batch_size!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"{name}: optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        return sizes

    # -- the network -------------------------------------------------------------------------------------------
    def _build(self, inputs, outputs, sizes, seed):
        activation = ACTIVATIONS.get(self.activation, self.activation)
        layers, width = [], inputs
        for index, size in enumerate(sizes):
            layer_seed = seed + 3 * index
            if self.batch_norm:  # Dense -> BatchNorm (with the activation) -> Dropout
                layers += [Dense(width, size, seed=layer_seed),
                           BatchNorm(size, activation=activation, seed=layer_seed + 1)]
                if self.dropout:
                    layers.append(Dropout(self.dropout, seed=layer_seed + 2))
            else:
                layers.append(Dense(width, size, activation=activation, dropout=self.dropout, seed=layer_seed))
            width = size
        layers.append(Dense(width, outputs, seed=seed + 3 * len(sizes)))
        return Sequential(*layers)

    def _optimizer(self, model, batch_size):
        decay = self.alpha / batch_size
        parameters = model.named_parameters()
        if self.optimizer == "sgd":
            return SGD(parameters, lr=self.learning_rate_init, momentum=self.momentum, weight_decay=decay,
                       weight_decay_mask=_is_weight)
        algorithm = Adam if self.optimizer == "adam" else AdamW
        return algorithm(parameters, lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2), eps=self.epsilon,
                         weight_decay=decay, weight_decay_mask=_is_weight)

    # -- training ----------------------------------------------------------------------------------------------
    def _train(self, x, targets, outputs, loss, stratify):
        """Fit the network on float32 x and encoded targets; sets the fitted attributes."""
        sizes = self._check_parameters()
        random = check_random_state(self.random_state)
        seed = int(random.randint(np.iinfo(np.int32).max))
        validation = None
        if self.early_stopping:
            x, x_val, targets, y_val = train_test_split(x, targets, test_size=self.validation_fraction,
                                                        random_state=seed, stratify=stratify)
            validation = (x_val, y_val)
        rows = len(x)
        batch_size = min(200, rows) if self.batch_size == "auto" else min(int(self.batch_size), rows)
        model = self._build(x.shape[1], outputs, sizes, seed)
        if self.batch_norm and rows < 2:
            raise ValueError(f"{type(self).__name__}: batch_norm needs at least 2 training samples, got {rows}")
        optimizer = self._optimizer(model, batch_size)
        step = compile_step(model, loss, optimizer, quiet=True)
        loader = batches(x, targets, batch_size, shuffle=self.shuffle, seed=seed, drop_last=self.batch_norm
                         and rows % batch_size == 1)  # a lone sample has no batch statistics
        self.loss_curve_, self.validation_scores_ = [], [] if validation is not None else None
        self.best_loss_ = np.inf if validation is None else None
        self.best_validation_score_ = -np.inf if validation is not None else None
        best_state, waited, self.t_ = None, 0, 0
        for epoch in range(1, self.max_iter + 1):
            total, seen = 0.0, 0
            for xb, yb in loader:
                total += step(xb, yb) * len(xb)
                seen += len(xb)
            self.t_ += seen
            epoch_loss = total / seen
            if not np.isfinite(epoch_loss):
                raise ValueError(f"{type(self).__name__}: the training loss became {epoch_loss} at epoch {epoch}; "
                                 f"lower learning_rate_init ({self.learning_rate_init})")
            self.loss_curve_.append(epoch_loss)
            self.n_iter_ = epoch
            if validation is not None:
                self.model_ = model
                score = self._validation_score(*validation)
                self.validation_scores_.append(score)
                improved = score > self.best_validation_score_ + self.tol
                if score > self.best_validation_score_:
                    self.best_validation_score_, best_state = score, model.state_dict()
            else:
                improved = epoch_loss < self.best_loss_ - self.tol
                self.best_loss_ = min(self.best_loss_, epoch_loss)
            if self.verbose:
                print(f"Iteration {epoch}, loss = {epoch_loss:.8f}")
            waited = 0 if improved else waited + 1
            if waited >= self.n_iter_no_change:
                break
        else:
            warnings.warn(f"{type(self).__name__}: stopped at max_iter={self.max_iter} epochs before the "
                          f"{'validation score' if validation is not None else 'loss'} stopped improving",
                          ConvergenceWarning)
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        self.model_ = model
        self.loss_ = self.loss_curve_[-1]
        return self

    def _outputs(self, x):
        """The network's outputs for float32 rows, in eval mode, a block of rows at a time."""
        model = self.model_
        model.eval()
        return np.concatenate([np.array(model(np.ascontiguousarray(x[start:start + PREDICT_ROWS])))
                               for start in range(0, len(x), PREDICT_ROWS)]) if len(x) else np.zeros((0, 0))

    @property
    def coefs_(self):
        """The Dense layers' weights, (fan_in, fan_out) each, as scikit-learn's ``coefs_``."""
        check_is_fitted(self, "model_")
        return [np.array(layer.weight.data) for layer in self.model_.modules() if isinstance(layer, Dense)]

    @property
    def intercepts_(self):
        """The Dense layers' biases, as scikit-learn's ``intercepts_``."""
        check_is_fitted(self, "model_")
        return [np.array(layer.bias.data) for layer in self.model_.modules() if isinstance(layer, Dense)]

    def _input(self, X):
        """Rows to predict: float32, checked against what fit saw."""
        x = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        return np.ascontiguousarray(x, dtype=np.float32)

    def _training_data(self, X, y):
        x, y = validate_data(self, X, y, reset=True, dtype=(np.float64, np.float32), multi_output=True,
                             y_numeric=isinstance(self, RegressorMixin))
        return np.ascontiguousarray(x, dtype=np.float32), y


class MLPClassifier(ClassifierMixin, _FastdlMLP):
    """A multi-layer perceptron classifier trained by fastdl (softmax cross-entropy), scikit-learn's API.

    >>> from fastdl.sklearn import MLPClassifier  # doctest: +SKIP
    >>> MLPClassifier(hidden_layer_sizes=(128, 128), random_state=0).fit(X, y).score(X_test, y_test)  # doctest: +SKIP
    """

    def fit(self, X, y):
        x, y = self._training_data(X, y)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        self.n_outputs_ = 1
        stratify = encoded if self.early_stopping and np.bincount(encoded).min() >= 2 else None
        return self._train(x, encoded.astype(np.int64), len(self.classes_), fastdl_losses.softmax_cross_entropy,
                           stratify)

    def _validation_score(self, x, y):
        return float((self._outputs(x).argmax(axis=1) == y).mean())

    def predict_proba(self, X):
        """Class probabilities, one column per class of ``classes_``."""
        check_is_fitted(self, "model_")
        logits = self._outputs(self._input(X)).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def predict(self, X):
        check_is_fitted(self, "model_")
        return self.classes_[self._outputs(self._input(X)).argmax(axis=1)]


class MLPRegressor(RegressorMixin, _FastdlMLP):
    """A multi-layer perceptron regressor trained by fastdl (mean squared error), scikit-learn's API; ``y`` may
    have several columns."""

    def fit(self, X, y):
        x, y = self._training_data(X, y)
        y = np.asarray(y, dtype=np.float64)
        self._y_was_1d = y.ndim == 1
        targets = np.ascontiguousarray(y.reshape(len(y), -1), dtype=np.float32)
        self.n_outputs_ = targets.shape[1]
        return self._train(x, targets, self.n_outputs_, fastdl_losses.mse, None)

    def _validation_score(self, x, y):  # R^2, as scikit-learn's early stopping for regressors
        predicted = self._outputs(x).astype(np.float64)
        residual = ((y - predicted) ** 2).sum(axis=0)
        total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
        return float(np.mean(1.0 - residual / np.where(total == 0, 1.0, total)))

    def predict(self, X):
        check_is_fitted(self, "model_")
        predicted = self._outputs(self._input(X)).astype(np.float64)
        return predicted.ravel() if self._y_was_1d else predicted

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
