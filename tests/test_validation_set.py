"""A validation set of one's own for early stopping: fit(..., X_val, y_val)."""

import inspect
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import sklearn
import torch
from sklearn.base import clone
from sklearn.metrics import log_loss, mean_squared_error
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

import skxfer
from skxfer import (
    PretrainedFeatureExtractor,
    TransferMLPClassifier,
    TransferMLPRegressor,
)

KW = dict(random_state=0, device="cpu")
# lr 0.01 learns the digits fast enough that a validation set with wrong labels
# gets worse from the first epoch on
ES = dict(hidden_layer_sizes=(32,), lr=1e-2, early_stopping=True,
          n_iter_no_change=3, max_epochs=40, **KW)


@pytest.fixture(scope="module")
def data():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    return X[:1200], y[:1200], X[1200:], y[1200:]


def _with_transform_input():
    return "transform_input" in inspect.signature(Pipeline).parameters


# ---- what goes with what ------------------------------------------------------------


@pytest.mark.parametrize("Est", [TransferMLPClassifier, TransferMLPRegressor])
def test_x_val_needs_early_stopping(Est, data):
    X, y, X_val, y_val = data
    with pytest.raises(ValueError) as err:
        Est((8,), **KW).fit(X, y, X_val=X_val, y_val=y_val)
    assert str(err.value) == (
        "X_val and y_val are passed to fit while early_stopping is False. The "
        "validation set serves early stopping: set early_stopping=True to stop "
        "on it, or leave X_val and y_val out."
    )


@pytest.mark.parametrize("given, message", [
    ({"X_val": 0}, "X_val is provided, but y_val was not provided."),
    ({"y_val": 0}, "y_val is provided, but X_val was not provided."),
    ({"sample_weight_val": 0},
     "sample_weight_val is provided, but X_val and y_val were not provided."),
    ({"X_val": 0, "sample_weight_val": 0},
     "X_val is provided, but y_val was not provided."),
])
def test_x_val_and_y_val_come_together(given, message, data):
    X, y, X_val, y_val = data
    values = {"X_val": X_val, "y_val": y_val,
              "sample_weight_val": np.ones(len(y_val))}
    clf = TransferMLPClassifier(**ES)
    with pytest.raises(ValueError) as err:
        clf.fit(X, y, **{k: values[k] for k in given})
    assert str(err.value) == message
    assert not hasattr(clf, "net_")


def test_partial_fit_takes_no_validation_set(data):
    X, y, X_val, y_val = data
    with pytest.raises(TypeError, match="X_val"):
        TransferMLPClassifier((8,), **KW).partial_fit(
            X, y, classes=np.arange(10), X_val=X_val, y_val=y_val)


@pytest.mark.parametrize("bad, match", [
    ("features", r"In X_val, y_val: X has 10 features, but TransferMLPClassifier "
                 r"is expecting 64 features as input"),
    ("length", r"In X_val, y_val: Found input variables with inconsistent "
               r"numbers of samples: \[597, 596\]"),
    ("label", r"y_val holds labels array\(\[10, 11\]\) that are not among the "
              r"classes of y, array\(\[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\]\)\."),
    ("nan", r"In X_val, y_val: Input X contains NaN"),
    ("weights", r"sample_weight_val.shape == \(3,\), expected \(597,\)"),
    ("negative", r"Negative values in data passed to sample_weight_val\."),
])
def test_a_bad_validation_set_is_named_and_changes_nothing(bad, match, data):
    X, y, X_val, y_val = data
    clf = TransferMLPClassifier(**{**ES, "warm_start": True}).fit(X, y)
    before = (clf.n_iter_, clf.net_, clf.predict_proba(X_val))
    kw = {"X_val": X_val, "y_val": y_val}
    if bad == "features":
        kw["X_val"] = X_val[:, :10]
    elif bad == "length":
        kw["y_val"] = y_val[:-1]
    elif bad == "label":
        kw["y_val"] = np.where(np.arange(len(y_val)) < 2, 10 + np.arange(
            len(y_val)), y_val)
    elif bad == "nan":
        kw["X_val"] = np.where(np.arange(len(y_val))[:, None] == 3, np.nan, X_val)
    elif bad == "weights":
        kw["sample_weight_val"] = np.ones(3)
    else:
        kw["sample_weight_val"] = -np.ones(len(y_val))
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y, **kw)
    assert (clf.n_iter_, clf.net_) == before[:2]
    np.testing.assert_array_equal(clf.predict_proba(X_val), before[2])


def test_y_val_takes_ys_label_kind(data):
    X, y, X_val, y_val = data
    names = np.array(["zero", "one", "two", "three", "four", "five", "six",
                      "seven", "eight", "nine"])
    clf = TransferMLPClassifier(**ES).fit(X, names[y], X_val=X_val,
                                          y_val=names[y_val])
    best = int(np.argmin(clf.validation_loss_curve_))  # whose weights are kept
    assert clf.validation_scores_[best] == pytest.approx(
        clf.score(X_val, names[y_val]))
    with pytest.raises(ValueError, match=r"^y_val holds labels array\(\[0, 1, "):
        TransferMLPClassifier(**ES).fit(X, names[y], X_val=X_val, y_val=y_val)
    with pytest.raises(ValueError, match="^In y_val: Unknown label type: "
                                         "continuous"):
        TransferMLPClassifier(**ES).fit(X, y, X_val=X_val, y_val=y_val + 0.5)


def test_the_regressors_y_val_has_ys_targets(data):
    X, y, X_val, y_val = data
    with pytest.raises(ValueError, match=r"^y_val has 2 target\(s\), but y has 1\.$"):
        TransferMLPRegressor(**ES).fit(
            X, y.astype(float), X_val=X_val, y_val=np.c_[y_val, y_val])


# ---- early stopping on the given set -------------------------------------------------


@pytest.mark.parametrize("wrong", ["shifted", "shuffled"])
def test_early_stopping_stops_where_the_given_set_says(wrong, data):
    X, y, X_val, y_val = data
    # labels that the training makes ever less likely: the validation loss
    # rises from the first epoch, so the first epoch is the best
    bad = ((y_val + 1) % 10 if wrong == "shifted"
           else np.random.RandomState(0).permutation(y_val))
    clf = TransferMLPClassifier(**ES).fit(X, y, X_val=X_val, y_val=bad)
    curve = clf.validation_loss_curve_
    assert np.all(np.diff(curve) > 0), curve
    assert clf.n_iter_ == 1 + ES["n_iter_no_change"]
    # the weights kept are those of the first epoch, scored on the given set
    assert clf.best_validation_loss_ == pytest.approx(curve[0])
    assert log_loss(bad, clf.predict_proba(X_val), labels=np.arange(10)) == (
        pytest.approx(curve[0], abs=1e-5))
    assert clf.validation_scores_[0] == pytest.approx(clf.score(X_val, bad))
    # on a split of the training data, the same estimator trains on
    split = TransferMLPClassifier(**ES).fit(X, y)
    assert split.n_iter_ > 3 * clf.n_iter_
    # and on the right labels of the same rows too
    right = TransferMLPClassifier(**ES).fit(X, y, X_val=X_val, y_val=y_val)
    assert right.n_iter_ > 3 * clf.n_iter_
    assert right.best_validation_score_ == pytest.approx(max(
        right.validation_scores_))
    assert right.best_validation_score_ > 0.9


def test_a_given_set_validates_every_epoch_and_all_of_x_trains(data):
    X, y, X_val, y_val = data
    clf = TransferMLPClassifier(**ES).fit(X, y, X_val=X_val, y_val=y_val)
    epoch = clf.history_[0]
    assert sum(b.get("train_batch_size", 0) for b in epoch["batches"]) == len(X)
    assert sum(b.get("valid_batch_size", 0) for b in epoch["batches"]) == len(X_val)
    # the validation loss at the kept (best) epoch is the given set's loss
    best = int(np.argmin(clf.validation_loss_curve_))
    assert log_loss(y_val, clf.predict_proba(X_val)) == pytest.approx(
        clf.validation_loss_curve_[best], abs=1e-5)
    assert clf.validation_scores_[best] == pytest.approx(clf.score(X_val, y_val))
    # batch_size='auto' counts all of X as training rows
    assert clf.net_.batch_size == 200
    # the given set is not kept by the fitted model, nor pickled
    assert clf.net_.train_split is None
    # (ten copies of the set: the same losses, ten times the bytes)
    tenfold = TransferMLPClassifier(**ES).fit(
        X, y, X_val=np.tile(X_val, (10, 1)), y_val=np.tile(y_val, 10))
    assert tenfold.validation_loss_curve_ == pytest.approx(
        clf.validation_loss_curve_, rel=1e-5)
    # (it has ten times the validation batches in its history: 34 kB; the
    # copies alone take 1.5 MB as float32)
    assert len(pickle.dumps(tenfold)) - len(pickle.dumps(clf)) < 50_000


def test_the_regressor_stops_on_a_given_set(data):
    X, y, X_val, y_val = data
    y, y_val = y.astype(float) / 9, y_val.astype(float) / 9
    wrong = 1 - y_val  # the opposite digit's value: worse once it learns y
    reg = TransferMLPRegressor(**ES).fit(X, y, X_val=X_val, y_val=wrong)
    best = int(np.argmin(reg.validation_loss_curve_))
    assert reg.n_iter_ == best + 1 + ES["n_iter_no_change"] < 8
    assert mean_squared_error(wrong, reg.predict(X_val)) == pytest.approx(
        reg.best_validation_loss_, rel=1e-5)
    assert reg.validation_scores_[best] == pytest.approx(reg.score(X_val, wrong))
    assert TransferMLPRegressor(**ES).fit(X, y).n_iter_ > 2 * reg.n_iter_


def test_validation_weights_weigh_the_validation_loss(data):
    X, y, X_val, y_val = data
    keep = np.arange(len(y_val)) % 3 != 0
    weights = keep * (1.0 + (np.arange(len(y_val)) % 2))  # 0, 1 and 2
    twice = np.r_[np.flatnonzero(keep), np.flatnonzero(weights == 2)]
    weighted = TransferMLPClassifier(**ES).fit(
        X, y, X_val=X_val, y_val=y_val, sample_weight_val=weights)
    repeated = TransferMLPClassifier(**ES).fit(
        X, y, X_val=X_val[twice], y_val=y_val[twice])
    np.testing.assert_allclose(weighted.validation_loss_curve_,
                               repeated.validation_loss_curve_, rtol=1e-5)
    np.testing.assert_allclose(weighted.validation_scores_,
                               repeated.validation_scores_)
    assert weighted.n_iter_ == repeated.n_iter_
    # training weights and validation weights are separate
    w = np.random.RandomState(0).uniform(0.5, 2, len(y))
    both = TransferMLPClassifier(**ES).fit(
        X, y, sample_weight=w, X_val=X_val, y_val=y_val, sample_weight_val=weights)
    only_train = TransferMLPClassifier(**ES).fit(
        X, y, sample_weight=w, X_val=X_val[twice], y_val=y_val[twice])
    np.testing.assert_allclose(both.validation_loss_curve_,
                               only_train.validation_loss_curve_, rtol=1e-5)


def test_plot_history_draws_the_given_sets_curve(data):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from skxfer.plotting import plot_history

    X, y, X_val, y_val = data
    clf = TransferMLPClassifier(**ES).fit(X, y, X_val=X_val, y_val=(y_val + 1) % 10)
    ax = plot_history(clf)
    line = {ln.get_label(): ln for ln in ax.get_lines()}["validation loss"]
    np.testing.assert_array_equal(line.get_ydata(), clf.validation_loss_curve_)
    matplotlib.pyplot.close("all")


# ---- warm starts -----------------------------------------------------------------


def test_a_warm_start_stops_on_the_set_it_is_given(data):
    X, y, X_val, y_val = data
    clf = TransferMLPClassifier(**{**ES, "max_epochs": 5, "warm_start": True})
    clf.fit(X, y)  # on a split of X
    clf.set_params(max_epochs=40).fit(X, y, X_val=X_val, y_val=(y_val + 1) % 10)
    assert clf.n_iter_ == 5 + 1 + ES["n_iter_no_change"]
    assert clf.best_validation_loss_ == pytest.approx(
        clf.validation_loss_curve_[5])
    # and goes on with it
    clf.fit(X, y, X_val=X_val, y_val=(y_val + 1) % 10)
    assert clf.n_iter_ == 9 + 1 + ES["n_iter_no_change"]


def test_a_warm_start_after_a_given_set_needs_one(data):
    X, y, X_val, y_val = data
    clf = TransferMLPClassifier(**{**ES, "warm_start": True})
    clf.fit(X, y, X_val=X_val, y_val=y_val)
    before = (clf.n_iter_, clf.net_)
    with pytest.raises(ValueError) as err:
        clf.fit(X, y)
    assert str(err.value) == (
        "This TransferMLPClassifier was fitted with a validation set of its own "
        "(X_val, y_val), so all of its training data has trained the network: a "
        "validation split of X would score it on rows it has learned. Pass "
        "X_val and y_val again to continue with early_stopping=True, or fit "
        "anew (warm_start=False)."
    )
    assert (clf.n_iter_, clf.net_) == before
    # without early stopping it continues; the rule holds after that too
    clf.set_params(early_stopping=False, max_epochs=2).fit(X, y)
    assert clf.n_iter_ == before[0] + 2
    with pytest.raises(ValueError, match="fitted with a validation set"):
        clf.set_params(early_stopping=True).fit(X, y)
    # a pickled model keeps the rule; a new fit starts afresh
    loaded = pickle.loads(pickle.dumps(clf))
    with pytest.raises(ValueError, match="fitted with a validation set"):
        loaded.fit(X, y)
    loaded.set_params(warm_start=False, max_epochs=3).fit(X, y)
    loaded.set_params(warm_start=True).fit(X, y)
    assert loaded.n_iter_ == 6


# ---- images and backbones --------------------------------------------------------


ROWS = [0]


class Counting(nn.Module):
    """A small CNN that counts the images it computes."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.body = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(1, 8, 3), relu=nn.ReLU(),
                pool=nn.AdaptiveAvgPool2d(2), flatten=nn.Flatten()))

    def forward(self, x):
        ROWS[0] += len(x)
        return self.body(x)


@pytest.fixture
def images(data):
    X, y, X_val, y_val = data
    skxfer.clear_feature_store()
    ROWS[0] = 0
    yield (X[:300].reshape(-1, 8, 8).astype(np.float32), y[:300],
           X_val[:100].reshape(-1, 8, 8).astype(np.float32), y_val[:100])
    skxfer.clear_feature_store()


def test_the_store_serves_the_validation_images_too(images):
    X, y, X_val, y_val = images
    backbone = PretrainedFeatureExtractor(Counting(), weights=None, device="cpu",
                                          feature_store=True)
    grid = GridSearchCV(
        TransferMLPClassifier(backbone=backbone, early_stopping=True, max_epochs=5,
                              **KW),
        {"hidden_layer_sizes": [(), (8,)], "lr": [1e-3, 1e-2]}, cv=3,
    ).fit(X, y, X_val=X_val, y_val=y_val)  # passed whole: not as long as X
    assert ROWS[0] <= 1.05 * (len(X) + len(X_val)) + 1, ROWS[0]
    best = grid.best_estimator_
    direct = clone(best).fit(X, y, X_val=X_val, y_val=y_val)
    np.testing.assert_allclose(best.validation_loss_curve_,
                               direct.validation_loss_curve_, rtol=1e-6)
    assert direct.validation_scores_[np.argmin(direct.validation_loss_curve_)] == (
        pytest.approx(direct.score(X_val, y_val)))


@pytest.mark.parametrize("memory", ["in memory", "streamed"])
def test_images_end_to_end_validate_on_the_given_images(memory, images,
                                                        monkeypatch):
    X, y, X_val, y_val = images
    if memory == "streamed":  # decoded batch by batch, by skorch's DataLoader
        monkeypatch.setattr("skxfer._estimators._IN_MEMORY_BYTES", 0)
    clf = TransferMLPClassifier(
        (16,), backbone=Counting(), freeze=False, early_stopping=True,
        n_iter_no_change=2, max_epochs=6, lr=1e-2, **KW,
    ).fit(X, y, X_val=X_val, y_val=y_val)
    best = int(np.argmin(clf.validation_loss_curve_))
    assert log_loss(y_val, clf.predict_proba(X_val), labels=np.arange(10)) == (
        pytest.approx(clf.validation_loss_curve_[best], abs=1e-4))
    assert clf.validation_scores_[best] == pytest.approx(clf.score(X_val, y_val))
    assert sum(b.get("valid_batch_size", 0)
               for b in clf.history_[0]["batches"]) == 100


# ---- metadata routing ------------------------------------------------------------


def test_fit_requests_the_validation_set():
    with sklearn.config_context(enable_metadata_routing=True):
        clf = TransferMLPClassifier().set_fit_request(
            X_val=True, y_val=True, sample_weight_val=True)
        routing = clf.get_metadata_routing()
        assert routing.consumes("fit", ["X_val", "y_val", "sample_weight_val"]) == {
            "X_val", "y_val", "sample_weight_val"}


@pytest.mark.skipif(not _with_transform_input(),
                    reason="Pipeline(transform_input=...) needs scikit-learn >= 1.6")
def test_a_pipeline_transforms_x_val_with_steps_fitted_on_x(data):
    X, y, X_val, y_val = data
    X, X_val = X * 16 + 3, X_val * 16 + 3  # scaling matters
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = Pipeline(
            [("scale", StandardScaler()),
             ("clf", TransferMLPClassifier(**ES).set_fit_request(
                 X_val=True, y_val=True))],
            transform_input=["X_val"],
        ).fit(X, y, X_val=X_val, y_val=y_val)
    scaler = StandardScaler().fit(X)
    direct = TransferMLPClassifier(**ES).fit(
        scaler.transform(X), y, X_val=scaler.transform(X_val), y_val=y_val)
    assert pipe[-1].validation_loss_curve_ == direct.validation_loss_curve_
    assert pipe[-1].n_iter_ == direct.n_iter_
    # the scaler was fitted on X only (not on X and X_val)
    np.testing.assert_array_equal(pipe[0].mean_, scaler.mean_)


@pytest.mark.skipif(not _with_transform_input(),
                    reason="Pipeline(transform_input=...) needs scikit-learn >= 1.6")
def test_a_search_under_routing_validates_every_candidate_on_the_set(data):
    X, y, X_val, y_val = data
    X, y = X[:600], y[:600]
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = Pipeline(
            [("scale", StandardScaler()),
             ("clf", TransferMLPClassifier(**ES).set_fit_request(
                 X_val=True, y_val=True))],
            transform_input=["X_val"],
        )
        grid = GridSearchCV(pipe, {"clf__hidden_layer_sizes": [(8,), (32,)]},
                            cv=2).fit(X, y, X_val=X_val, y_val=(y_val + 1) % 10)
    # every fit stopped on the given (wrong) labels: after the first epoch
    best = grid.best_estimator_[-1]
    assert best.n_iter_ == 1 + ES["n_iter_no_change"]
    scaler = StandardScaler().fit(X)
    direct = clone(best).fit(scaler.transform(X), y, X_val=scaler.transform(X_val),
                             y_val=(y_val + 1) % 10)
    assert best.validation_loss_curve_ == direct.validation_loss_curve_
