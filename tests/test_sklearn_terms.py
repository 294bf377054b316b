"""The MLP on scikit-learn's own terms: stopping on a plateau, sample weights,
the attributes and methods a MLPClassifier user reads."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_blobs
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from skxfer import TransferMLPClassifier, TransferMLPRegressor

KW = dict(random_state=0, device="cpu")


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(300, 6, centers=3, cluster_std=1.0, random_state=0)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0)[:400], y[:400]


# ---- tol and n_iter_no_change without early stopping ------------------------


def test_training_stops_on_a_loss_plateau(blobs):
    X, y = blobs
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = TransferMLPClassifier((16,), lr=0.05, tol=1e-3, n_iter_no_change=5,
                                    **KW).fit(X, y)
    assert clf.n_iter_ < clf.max_epochs
    curve = np.array(clf.loss_curve_)
    # each of the last n_iter_no_change epochs missed the best so far by tol
    # (scikit-learn's rule: the best is updated by any improvement) ...
    for i in range(len(curve) - 5, len(curve)):
        assert curve[i] > curve[:i].min() - 1e-3
    # ... and the epoch before them did not
    i = len(curve) - 6
    assert i == 0 or curve[i] <= curve[:i].min() - 1e-3
    assert clf.score(X, y) > 0.95


def test_hitting_max_epochs_warns_as_scikit_learn_does(blobs):
    X, y = blobs
    with pytest.warns(ConvergenceWarning, match="max_epochs=3 reached"):
        TransferMLPClassifier((16,), max_epochs=3, **KW).fit(X, y)
    with pytest.warns(ConvergenceWarning, match="max_epochs=3 reached"):
        TransferMLPRegressor((16,), max_epochs=3, **KW).fit(X, y.astype(float))


def test_partial_fit_runs_one_epoch_without_plateau_stop_or_warning(blobs):
    X, y = blobs
    clf = TransferMLPClassifier((16,), tol=10.0, n_iter_no_change=1, **KW)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        for _ in range(4):
            clf.partial_fit(X, y, classes=np.unique(y))
    assert clf.n_iter_ == 4


# ---- attributes and methods -------------------------------------------------------


def test_scikit_learn_attributes(digits):
    X, y = digits
    clf = TransferMLPClassifier((32,), max_epochs=5, **KW).fit(X, y)
    assert clf.loss_ == clf.loss_curve_[-1]
    assert clf.best_loss_ == min(clf.loss_curve_)
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X[:5])),
                               clf.predict_proba(X[:5]), rtol=1e-12)

    es = TransferMLPClassifier((32,), max_epochs=40, early_stopping=True,
                               n_iter_no_change=3, lr=0.01, **KW).fit(X, y)
    assert es.best_loss_ is None
    assert len(es.validation_scores_) == es.n_iter_
    assert all(0 <= s <= 1 for s in es.validation_scores_)
    assert es.best_validation_score_ == max(es.validation_scores_)
    assert es.best_validation_score_ > 0.8  # accuracy on the held-out tenth

    reg = TransferMLPRegressor((32,), max_epochs=30, early_stopping=True, lr=0.01,
                               **KW).fit(X, y.astype(float))
    assert len(reg.validation_scores_) == reg.n_iter_
    assert reg.best_validation_score_ > 0.3  # R² on the held-out tenth


# ---- sample_weight ------------------------------------------------------------------


def test_weight_two_equals_a_duplicated_row_in_the_loss(digits):
    X, y = digits
    clf = TransferMLPClassifier((8,), max_epochs=1, class_weight={0: 3.0}, **KW)
    clf.fit(X[:50], y[:50])
    net = clf.net_
    Xt = torch.as_tensor(X[:6], dtype=torch.float32)
    yt = torch.as_tensor(np.searchsorted(clf.classes_, y[:6]))
    with torch.no_grad():
        pred = net.module_(Xt)
        # the formula: sum(w * c * l) / sum(w * c), c the class weights
        weights = torch.tensor([2.0, 1, 1, 1, 1, 0.5])
        weighted = net.get_loss(pred, {"y": yt, "sample_weight": weights})
        c = torch.tensor([3.0 if k == 0 else 1.0 for k in clf.classes_])[yt]
        per = nn.functional.cross_entropy(pred, yt, reduction="none")
        expected = (weights * c * per).sum() / (weights * c).sum()
        # weight 2 on row 0 (and 0 on row 5) is row 0 given twice
        w2 = net.get_loss(pred, {"y": yt,
                                 "sample_weight": torch.tensor([2.0, 1, 1, 1, 1, 0])})
        rows = torch.tensor([0, 0, 1, 2, 3, 4])
        dup = net.get_loss(pred[rows], yt[rows])  # the plain criterion
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-6)
    assert w2.item() == pytest.approx(dup.item(), rel=1e-6)


@pytest.mark.parametrize("Est", [TransferMLPClassifier, TransferMLPRegressor])
def test_weight_two_trains_like_a_duplicated_row(Est, digits):
    X, y = digits
    X, y = X[:60], y[:60] % 3
    y = y.astype(float) if Est is TransferMLPRegressor else y
    w = np.ones(len(X))
    w[:10] = 2
    rows = np.r_[np.arange(10), np.arange(len(X))]
    # one batch per epoch: the same gradient, whatever the order
    kw = dict(hidden_layer_sizes=(8,), max_epochs=5, batch_size=200, **KW)
    a = Est(**kw).fit(X, y, sample_weight=w)
    b = Est(**kw).fit(X[rows], y[rows])
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-4)


def test_sample_weight_on_image_and_cached_feature_paths(digits):
    X, y = digits
    images = X.reshape(-1, 8, 8).astype(np.float32)
    task = (y % 2)
    w = np.where(task == 1, 20.0, 1.0)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten())
    for freeze in (True, False):
        kw = dict(hidden_layer_sizes=(), backbone=cnn, freeze=freeze,
                  max_epochs=5, lr=0.01, **KW)
        plain = TransferMLPClassifier(**kw).fit(images, task)
        heavy = TransferMLPClassifier(**kw).fit(images, task, sample_weight=w)
        assert heavy.predict(images).mean() > plain.predict(images).mean(), freeze


def test_sample_weight_errors(digits):
    X, y = digits
    clf = TransferMLPClassifier(max_epochs=1, **KW)
    with pytest.raises(ValueError, match=r"sample_weight.shape == \(3,\), expected"):
        clf.fit(X, y, sample_weight=[1, 2, 3])
    with pytest.raises(ValueError, match="Negative values"):
        clf.fit(X, y, sample_weight=-np.ones(len(X)))
    w = np.ones(len(X))
    clf.fit(X, y, sample_weight=w)
    assert (w == 1).all()  # not written to


# ---- one row predicts the same alone and in any batch ------------------------------


def test_rows_predict_the_same_alone_and_in_any_batch(digits):
    X, y = digits
    clf = TransferMLPClassifier((32, 16), max_epochs=3, **KW).fit(X, y)
    together = clf.predict_proba(X[:70])
    alone = np.vstack([clf.predict_proba(X[i : i + 1]) for i in range(70)])
    np.testing.assert_array_equal(alone, together)  # bit for bit
    np.testing.assert_array_equal(clf.predict_proba(X[33:47]), together[33:47])


@pytest.mark.parametrize("freeze", [True, False])
def test_image_rows_predict_the_same_alone_and_in_a_batch(digits, freeze):
    X, y = digits
    images = X.reshape(-1, 8, 8).astype(np.float32)
    cnn = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten())
    clf = TransferMLPClassifier((16,), backbone=cnn, freeze=freeze, max_epochs=2,
                                **KW).fit(images, y)
    together = clf.predict_proba(images[:40])
    alone = np.vstack([clf.predict_proba(images[i : i + 1]) for i in range(40)])
    np.testing.assert_allclose(alone, together, rtol=0, atol=1e-6)


# ---- weighted losses, zero weights, warm starts -----------------------------------


def test_weighted_validation_loss_is_the_weighted_mean_over_rows(digits):
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    w = np.where(np.arange(len(X)) % 2 == 0, 0.0, 1.0)
    clf = TransferMLPClassifier((8,), max_epochs=1, early_stopping=True,
                                validation_fraction=0.4, **KW)
    clf.fit(X, y, sample_weight=w)  # 719 held-out rows: three inference batches
    # recompute on the same split with the fitted network
    from sklearn.model_selection import train_test_split

    _, valid = train_test_split(np.arange(len(X)), test_size=int(np.ceil(
        len(X) * 0.4)), stratify=y, random_state=clf._split_seed)
    valid = np.sort(valid)
    net = clf.net_
    with torch.no_grad():
        pred = net.module_(torch.as_tensor(X[valid], dtype=torch.float32))
        per = nn.functional.cross_entropy(pred, torch.as_tensor(y[valid]),
                                          reduction="none").double().numpy()
    expected = (per * w[valid]).sum() / w[valid].sum()
    assert clf.validation_loss_curve_[0] == pytest.approx(expected, rel=1e-4)


def test_zero_weights_on_every_held_out_row(digits):
    X, y = digits
    w = np.zeros(len(X))
    w[:2] = 1
    clf = TransferMLPClassifier((8,), max_epochs=2, early_stopping=True,
                                validation_fraction=0.5, **KW)
    clf.fit(X, y % 2, sample_weight=w)
    assert clf.n_iter_ >= 1


@pytest.mark.parametrize("bad, message", [(0, "all zero"), (-1.0, "Negative values")])
def test_scalar_sample_weight_is_checked_like_an_array(digits, bad, message):
    X, y = digits
    with pytest.raises(ValueError, match=message):
        TransferMLPClassifier(max_epochs=1, **KW).fit(X, y, sample_weight=bad)


def test_warm_starts_carry_the_plateau_as_scikit_learn_does(blobs):
    X, y = blobs
    clf = TransferMLPRegressor((8,), max_epochs=3, n_iter_no_change=3, tol=10.0,
                               warm_start=True, **KW)
    epochs, warned = [], []
    for _ in range(3):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            before = getattr(clf, "n_iter_", 0)
            clf.fit(X, y.astype(float))
        epochs.append(clf.n_iter_ - before)
        warned.append(any(issubclass(w.category, ConvergenceWarning)
                          for w in caught))
    assert epochs[0] == 3 and epochs[1] < 3 and epochs[2] == 1, epochs
    assert warned[1:] == [False, False]


def test_no_plateau_stop_before_the_backbone_thaws(digits):
    X, y = digits
    source = TransferMLPClassifier((16,), max_epochs=5, **KW).fit(X, y)
    clf = TransferMLPClassifier((), backbone=source, freeze=True, unfreeze_at=5,
                                tol=1.0, n_iter_no_change=2, max_epochs=20,
                                **KW).fit(X, y % 2)
    assert clf.n_iter_ >= 5 + 2


# ---- batch_size='auto' -------------------------------------------------------------


def test_auto_batch_size_follows_what_passes_through_the_network(digits):
    X, y = digits  # 400 rows
    images = X.reshape(-1, 8, 8).astype(np.float32)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten())

    def rows(n):
        return np.resize(X, (n, X.shape[1])), np.resize(y, n)

    big_images = np.resize(images, (8000, 8, 8)), np.resize(y, 8000)
    clf = dict(hidden_layer_sizes=(4,), max_epochs=1, **KW)
    cases = [
        # (estimator, data, rows per step): scikit-learn's min(200, n) ...
        (TransferMLPClassifier(**clf), rows(150), 150),
        (TransferMLPClassifier(**clf), (X, y), 200),
        (TransferMLPClassifier(**clf), rows(6400), 200),
        # ... then n // 32 up to 512 on rows of features
        (TransferMLPClassifier(**clf), rows(8000), 250),
        (TransferMLPClassifier(**clf), rows(30000), 512),
        (TransferMLPClassifier(**clf | dict(batch_size=64)), (X, y), 64),
        # with early stopping, the rows left for training count: 9,000 of 10,000
        (TransferMLPClassifier(**clf | dict(early_stopping=True)), rows(10000), 281),
        (TransferMLPClassifier(**clf | dict(early_stopping=True)), rows(6600), 200),
        # a wholly frozen backbone: the head trains on rows of features
        (TransferMLPClassifier((), backbone=cnn, max_epochs=1, **KW), big_images,
         250),
        # images through a backbone that trains: at most 200 per step
        (TransferMLPClassifier((), backbone=cnn, freeze=False, max_epochs=1, **KW),
         big_images, 200),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for clf, data, expected in cases:
            clf.fit(*data)
            assert clf.net_.batch_size == expected, (clf, expected)
            n_train = len(data[0]) - (len(data[0]) // 10 if clf.early_stopping
                                      else 0)
            assert clf.net_.history[-1, "train_batch_count"] == -(
                -n_train // expected)
    assert TransferMLPClassifier().get_params()["batch_size"] == "auto"
    with pytest.raises(ValueError, match="'batch_size' parameter of "
                       "TransferMLPClassifier must be 'auto' or an int >= 1. "
                       "Got 'big' instead."):
        TransferMLPClassifier(batch_size="big").fit(X, y)


class _OutOfMemoryInTraining(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 8)

    def forward(self, x):
        if self.training:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate")
        return self.linear(x)


def test_out_of_memory_in_training_names_the_batch_size(digits):
    X, y = digits
    clf = TransferMLPClassifier((), backbone=_OutOfMemoryInTraining(), freeze=False,
                                max_epochs=1, **KW)
    with pytest.raises(torch.cuda.OutOfMemoryError,
                       match=r"in training \(batches of 200 samples; validation "
                             r"batches of 256\): .* Lower batch_size "
                             r"\(now 'auto'\)"):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")


def test_tensor_data_rows_as_a_dataset():
    from skxfer._net import TensorData

    data = TensorData(torch.arange(10.0).reshape(5, 2), torch.arange(5),
                      {"sample_weight": torch.arange(5.0) / 4})
    mask = torch.tensor([True, False, True, False, False])
    X, target = data[mask]
    assert X[:, 0].tolist() == [0.0, 4.0] and target["y"].tolist() == [0, 2]
    X, target = data[torch.tensor([-1])]
    assert X.tolist() == [[8.0, 9.0]] and target["y"].tolist() == [4]
    assert target["sample_weight"].tolist() == [1.0]
    X, target = data[3]
    assert X.tolist() == [6.0, 7.0] and int(target["y"]) == 3
