"""scikit-learn's estimator checks on every public estimator.

A fast configuration (small network, few epochs, fixed seed) keeps the checks
quick; they still train for real, since some checks need a fitted model to beat
a score (e.g. ``check_classifiers_train`` needs accuracy > 0.83).
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from skxfer import TransferMLPClassifier, TransferMLPRegressor

FAST = dict(hidden_layer_sizes=(16,), max_epochs=60, lr=0.01, batch_size=32,
            random_state=0, device="cpu")


def _estimators():
    return [TransferMLPClassifier(**FAST), TransferMLPRegressor(**FAST)]


@parametrize_with_checks(_estimators())
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
