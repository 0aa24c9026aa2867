"""fastdl.sklearn: the estimators pass scikit-learn's own estimator checks, and train as fastdl.fit would."""

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

import sklearn.neural_network  # noqa: E402

import fastdl  # noqa: E402
from fastdl.sklearn import MLPClassifier, MLPRegressor  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

# Checks expected to fail, with the reason (scikit-learn's expected_failed_checks).
EXPECTED_FAILURES = {
    "MLPRegressor": {
        "check_methods_subset_invariance": "predictions are float32: a float32 GEMM over fewer rows may round the "
                                           "last bit differently (seen: 2e-7 relative); the check asks 1e-7",
    },
}


@pytest.fixture(autouse=True)
def cpu_backend():
    with fastdl.use_backend("cpu"):
        yield


@parametrize_with_checks([MLPClassifier(), MLPRegressor()],
                         expected_failed_checks=lambda estimator: EXPECTED_FAILURES.get(type(estimator).__name__, {}))
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def digits():
    (x, y), (x_test, y_test) = fastdl.datasets.load_digits()
    return x, y, x_test, y_test


def test_classifier_learns_digits_with_scikit_learn_names_and_string_labels():
    x, y, x_test, y_test = digits()
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    model = MLPClassifier(hidden_layer_sizes=(64,), random_state=0).fit(x, names[y])
    assert model.classes_.tolist() == sorted(names.tolist())
    theirs = sklearn.neural_network.MLPClassifier(hidden_layer_sizes=(64,), random_state=0).fit(x, names[y])
    # the same parameters and stopping rule: the same accuracy to within a few test images
    assert model.score(x_test, names[y_test]) > theirs.score(x_test, names[y_test]) - 0.02
    probabilities = model.predict_proba(x_test)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert 1 <= model.n_iter_ <= 200 and len(model.loss_curve_) == model.n_iter_
    assert [w.shape for w in model.coefs_] == [(64, 64), (64, 10)]


def test_the_same_random_state_gives_the_same_model_and_fastdl_options_train():
    x, y, x_test, y_test = digits()
    options = dict(max_iter=20, batch_size=32, random_state=3, batch_norm=True, dropout=0.1)
    first, second = MLPClassifier((32,), **options).fit(x, y), MLPClassifier((32,), **options).fit(x, y)
    np.testing.assert_array_equal(first.predict_proba(x_test), second.predict_proba(x_test))
    assert first.score(x_test, y_test) > 0.9


def test_early_stopping_keeps_the_best_validation_epoch():
    x, y, _, _ = digits()
    model = MLPClassifier((32,), max_iter=200, early_stopping=True, n_iter_no_change=3, random_state=0).fit(x, y)
    assert model.n_iter_ < 200
    assert model.best_validation_score_ == max(model.validation_scores_)


def test_regressor_fits_a_smooth_function_with_several_outputs():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (400, 3))
    y = np.stack([np.sin(2 * x[:, 0]) + x[:, 1] ** 2, x[:, 2] * x[:, 0]], axis=1)
    model = MLPRegressor((64, 64), max_iter=300, learning_rate_init=3e-3, random_state=0).fit(x, y)
    assert model.predict(x).shape == (400, 2)
    assert model.score(x, y) > 0.9


def test_works_inside_pipeline_and_grid_search_cv():
    x, y, x_test, y_test = digits()
    search = GridSearchCV(make_pipeline(StandardScaler(), MLPClassifier((32,), max_iter=20, batch_size=32,
                                                                         random_state=0)),
                          {"mlpclassifier__alpha": [1e-4, 1e-2]}, cv=2)
    search.fit(x[:600], y[:600])
    assert search.best_estimator_.score(x_test, y_test) > 0.85  # trained on 300 images


@pytest.mark.parametrize("parameter, value, message", [
    ("hidden_layer_sizes", (0,), "hidden_layer_sizes"), ("learning_rate_init", 0.0, "learning_rate_init"),
    ("optimizer", "lbfgs", "optimizer must be one of"), ("batch_size", 0, "batch_size"),
    ("dropout", 1.0, "dropout"), ("max_iter", 0, "max_iter"),
])
def test_bad_parameters_are_refused_at_fit(parameter, value, message):
    x, y, _, _ = digits()
    with pytest.raises(ValueError, match=message):
        MLPClassifier(**{parameter: value}).fit(x[:50], y[:50])
