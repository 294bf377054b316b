"""Behaviour of TransferMLPClassifier and TransferMLPRegressor without a backbone."""

import io
import pickle
import re
import warnings

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import load_diabetes, make_classification, make_regression
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import Callback, LRScheduler

from skxfer import TransferMLPClassifier, TransferMLPRegressor

FAST = dict(hidden_layer_sizes=(16,), max_epochs=5, random_state=0, device="cpu")


@pytest.fixture(scope="module")
def blobs():
    X, y = make_classification(
        200, 8, n_informative=5, n_classes=3, random_state=0, class_sep=2.0
    )
    return X, y


@pytest.fixture(scope="module")
def digits_split():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.3, random_state=0, stratify=y)


# ---- accuracy on real data -----------------------------------------------------


def test_digits_accuracy_matches_sklearn_mlp(digits_split):
    # Measured here (mean of seeds 0-2, hidden (64,), 50 epochs, Adam lr 1e-3,
    # batch 200, held-out 30%): MLPClassifier 0.962; TransferMLPClassifier 0.961
    # plain, 0.978 with batch_norm=True.
    X_train, X_test, y_train, y_test = digits_split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's ConvergenceWarning at 50 epochs
        sk = np.mean(
            [
                MLPClassifier((64,), max_iter=50, random_state=s)
                .fit(X_train, y_train)
                .score(X_test, y_test)
                for s in range(3)
            ]
        )

    def ours(**kw):
        return np.mean(
            [
                TransferMLPClassifier((64,), max_epochs=50, random_state=s, **kw)
                .fit(X_train, y_train)
                .score(X_test, y_test)
                for s in range(3)
            ]
        )

    plain, bn = ours(), ours(batch_norm=True)
    assert sk > 0.95
    assert plain >= sk - 0.01  # the same network: on par with scikit-learn's
    assert bn >= sk  # with batch norm: at least scikit-learn's accuracy


def test_diabetes_regressor_beats_mean_predictor():
    # Measured here: R^2 0.34 on the held-out 30% (a mean predictor: -0.00,
    # LinearRegression 0.39).
    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, random_state=0
    )
    reg = TransformedTargetRegressor(
        make_pipeline(
            StandardScaler(),
            TransferMLPRegressor((16,), max_epochs=50, batch_size=32, random_state=0),
        ),
        transformer=StandardScaler(),
    )
    r2 = reg.fit(X_train, y_train).score(X_test, y_test)
    baseline = 1 - np.mean((y_test - y_train.mean()) ** 2) / np.var(y_test)
    assert baseline < 0.01
    assert r2 > 0.25
    assert r2 - baseline > 0.25


def test_multioutput_regression():
    X, y = make_regression(300, 6, n_targets=3, random_state=0, noise=1.0)
    y = StandardScaler().fit_transform(y)
    reg = TransferMLPRegressor((32,), max_epochs=80, lr=0.01, random_state=0)
    reg.fit(X, y)
    assert reg.n_outputs_ == 3
    assert reg.predict(X[:5]).shape == (5, 3)
    assert reg.score(X, y) > 0.9
    reg1 = TransferMLPRegressor(**FAST).fit(X, y[:, 0])
    assert reg1.predict(X[:5]).shape == (5,)


# ---- labels and inputs ------------------------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [
        np.array(["cat", "dog", "eel"]),
        np.array([3, 7, 11]),
        np.array([True, False]),
        np.array(["no", "yes"]),
    ],
)
def test_label_types(blobs, labels):
    X, y = blobs
    y_labels = labels[y % len(labels)]
    clf = TransferMLPClassifier((16,), max_epochs=40, lr=0.01, random_state=0)
    clf.fit(X, y_labels)
    assert list(clf.classes_) == sorted(labels.tolist())
    pred = clf.predict(X)
    assert pred.dtype == y_labels.dtype
    assert set(pred) <= set(labels.tolist())
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), len(labels))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert clf.score(X, y_labels) > 0.8


def test_input_kinds_give_same_model(blobs, tmp_path):
    pd = pytest.importorskip("pandas")
    X, y = blobs
    ref = TransferMLPClassifier(**FAST).fit(X, y).predict_proba(X)
    mm_path = tmp_path / "X.npy"
    np.save(mm_path, X)
    memmap = np.load(mm_path, mmap_mode="r")
    for X_kind in (
        X.astype(np.float32),
        memmap,
        pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])]),
        X.tolist(),
    ):
        clf = TransferMLPClassifier(**FAST).fit(X_kind, y)
        np.testing.assert_allclose(clf.predict_proba(X_kind), ref, atol=1e-6)
    Xi = np.round(X * 10).astype(np.int64)
    assert TransferMLPClassifier(**FAST).fit(Xi, y).predict(Xi).shape == (len(X),)


def test_dataframe_feature_names(blobs):
    pd = pytest.importorskip("pandas")
    X, y = blobs
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    clf = TransferMLPClassifier(**FAST).fit(df, y)
    assert list(clf.feature_names_in_) == list(df.columns)
    assert clf.n_features_in_ == X.shape[1]
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        clf.predict(X)


# ---- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize("Est", [TransferMLPClassifier, TransferMLPRegressor])
def test_bad_X(Est, blobs):
    X, y = blobs
    X_nan = X.copy()
    X_nan[3, 2] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        Est(**FAST).fit(X_nan, y)
    X_inf = X.copy()
    X_inf[0, 0] = np.inf
    with pytest.raises(ValueError, match="Input X contains infinity"):
        Est(**FAST).fit(X_inf, y)
    with pytest.raises(ValueError, match="Found array with 0 sample"):
        Est(**FAST).fit(X[:0], y[:0])
    # scikit-learn 1.6: "dim 3. X expected <= 2"; 1.9: "dim 3, while dim <= 2"
    with pytest.raises(ValueError, match=r"Found array with dim 3\W.*<= 2"):
        Est(**FAST).fit(X.reshape(len(X), 2, -1), y)
    # a ValueError like the other data problems, and the TypeError sklearn raises
    with pytest.raises(ValueError, match=r"Sparse data was passed.*\.toarray\(\)"):
        Est(**FAST).fit(sp.csr_matrix(X), y)
    with pytest.raises(TypeError, match="Sparse data was passed"):
        Est(**FAST).fit(sp.csr_matrix(X), y)
    fitted = Est(**FAST).fit(X, y)
    with pytest.raises(
        ValueError, match=f"X has 7 features, but {Est.__name__} is expecting 8"
    ):
        fitted.predict(X[:, :7])
    with pytest.raises(ValueError, match="Input X contains NaN"):
        fitted.predict(X_nan)


def test_bad_y(blobs):
    X, y = blobs
    with pytest.raises(
        ValueError, match="needs samples of at least 2 classes.*only one class: 0"
    ):
        TransferMLPClassifier(**FAST).fit(X, np.zeros(len(X), dtype=int))
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        TransferMLPClassifier(**FAST).fit(X, np.linspace(0, 1, len(X)))
    with pytest.raises(ValueError, match="Input y contains NaN"):
        TransferMLPRegressor(**FAST).fit(X, np.full(len(X), np.nan))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        TransferMLPClassifier(**FAST).fit(X, y[:-1])


def test_not_fitted(blobs):
    X, _ = blobs
    for est in (TransferMLPClassifier(), TransferMLPRegressor()):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            est.predict(X)
        with pytest.raises(NotFittedError, match="not fitted yet"):
            est.module_  # noqa: B018


def test_bad_params_are_all_named_in_one_error(blobs):
    X, y = blobs
    clf = TransferMLPClassifier(lr=-1, activation="swish", dropout=1.5, max_epochs=0)
    with pytest.raises(ValueError) as err:
        clf.fit(X, y)
    msg = str(err.value)
    assert "The 'lr' parameter of TransferMLPClassifier must be a float > 0. " in msg
    assert "Got -1 instead." in msg
    assert "The 'activation' parameter" in msg and "'relu'" in msg
    assert "The 'dropout' parameter" in msg and "[0, 1)" in msg
    assert "The 'max_epochs' parameter" in msg and "an int >= 1" in msg
    assert len(msg.splitlines()) == 4
    with pytest.raises(ValueError, match="'optimizer' parameter.*'adam'"):
        TransferMLPRegressor(optimizer="adamm").fit(X, y)
    with pytest.raises(ValueError, match="'hidden_layer_sizes' parameter"):
        TransferMLPRegressor(hidden_layer_sizes=(10, 0)).fit(X, y)
    with pytest.raises(ValueError, match="'device' parameter.*'auto', 'cpu'"):
        TransferMLPRegressor(device="gpu").fit(X, y)
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        TransferMLPRegressor(optimizer="sgd", nesterov=True, momentum=0).fit(X, y)
    with pytest.raises(ValueError, match="class_weight names labels \\[9\\]"):
        TransferMLPClassifier(class_weight={9: 2.0}, **FAST).fit(X, y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda(blobs):
    X, y = blobs
    clf = TransferMLPClassifier(hidden_layer_sizes=(4,), device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available.*device='auto'"):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")


def test_diverging_training_is_an_error_not_a_model(blobs):
    X, y = blobs
    clf = TransferMLPRegressor((32,), lr=1e6, optimizer="sgd", max_epochs=20)
    with pytest.raises(ValueError, match="Training diverged.*Lower `lr`"):
        clf.fit(X * 1e3, y * 1e3)
    with pytest.raises(NotFittedError):
        clf.predict(X)


# ---- reproducibility, persistence, devices ------------------------------------


def test_same_random_state_same_model(blobs):
    X, y = blobs
    kw = dict(hidden_layer_sizes=(16, 8), dropout=0.2, max_epochs=5, device="cpu")
    p1 = TransferMLPClassifier(random_state=3, **kw).fit(X, y).predict_proba(X)
    p2 = TransferMLPClassifier(random_state=3, **kw).fit(X, y).predict_proba(X)
    p3 = TransferMLPClassifier(random_state=4, **kw).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(p1, p2)
    assert not np.allclose(p1, p3)


def test_fit_leaves_the_users_torch_rng_alone(blobs):
    X, y = blobs
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    TransferMLPClassifier(**FAST).fit(X, y)
    np.testing.assert_array_equal(torch.rand(3), expected)


@pytest.mark.parametrize("Est", [TransferMLPClassifier, TransferMLPRegressor])
def test_pickle_and_joblib_roundtrip(Est, blobs, tmp_path):
    X, y = blobs
    est = Est(**FAST).fit(X, y)
    expected = est.predict(X)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict(X), expected)
    joblib.dump(est, tmp_path / "model.joblib")
    np.testing.assert_array_equal(
        joblib.load(tmp_path / "model.joblib").predict(X), expected
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_model_saved_on_cuda_loads_on_cpu(blobs):
    # a net pickled with device='cuda' is mapped to the CPU when CUDA is absent
    X, y = blobs
    clf = TransferMLPClassifier(**FAST).fit(X, y)
    expected = clf.predict_proba(X)
    clf.net_.device = "cuda"
    payload = pickle.dumps(clf)
    with pytest.warns(Warning) as caught:
        loaded = pickle.loads(payload)
    messages = " ".join(str(w.message) for w in caught)
    assert "no CUDA devices are available" in messages
    assert "Setting self.device = cpu" in messages
    assert str(loaded.net_.device) == "cpu"
    np.testing.assert_allclose(loaded.predict_proba(X), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_predict_and_cpu_roundtrip(blobs):
    X, y = blobs
    clf = TransferMLPClassifier(
        (32,), max_epochs=20, lr=0.01, random_state=0, device="auto"
    )
    clf.fit(X, y)
    assert clf.device_ == "cuda"
    assert next(clf.module_.parameters()).is_cuda
    assert clf.score(X, y) > 0.8
    buf = io.BytesIO()
    joblib.dump(clf, buf)
    buf.seek(0)
    np.testing.assert_array_equal(joblib.load(buf).predict(X), clf.predict(X))


# ---- training options ---------------------------------------------------------------


def test_module_structure_follows_parameters(blobs):
    X, y = blobs
    clf = TransferMLPClassifier(
        **FAST | dict(hidden_layer_sizes=(12, 6), activation="tanh"),
        batch_norm=True,
        dropout=0.3,
    ).fit(X, y)
    m = clf.module_
    assert [b.linear.out_features for b in m.hidden] == [12, 6]
    assert isinstance(m.hidden[0].bn, torch.nn.BatchNorm1d)
    assert isinstance(m.hidden[0].act, torch.nn.Tanh)
    assert m.hidden[1].dropout.p == 0.3
    assert m.output.out_features == 3
    linear = TransferMLPRegressor(**FAST | dict(hidden_layer_sizes=())).fit(X, y)
    assert len(linear.module_.hidden) == 0


@pytest.mark.parametrize(
    "init, expected_std",
    [
        # std of a 64 -> 32 layer's weights under each scheme
        ("kaiming_normal", np.sqrt(2 / 64)),
        ("xavier_normal", np.sqrt(2 / (64 + 32))),
        ("kaiming_uniform", np.sqrt(2 / 64)),
        ("xavier_uniform", np.sqrt(2 / (64 + 32))),
        # 'auto' is He for ReLU; the default is Glorot, as scikit-learn's MLP
        ("auto", np.sqrt(2 / 64)),
        (None, np.sqrt(2 / (64 + 32))),
    ],
)
def test_weight_init(init, expected_std):
    X = np.random.RandomState(0).randn(50, 64)
    y = np.arange(50) % 2
    kw = {} if init is None else {"init": init}
    clf = TransferMLPClassifier(
        (32,), max_epochs=1, lr=1e-12, random_state=0, **kw
    ).fit(X, y)
    w = clf.module_.hidden[0].linear.weight.detach().numpy()
    assert abs(w.std() - expected_std) / expected_std < 0.1
    # biases start at zero (one Adam step of lr 1e-12 moves them by 1e-12)
    assert np.abs(clf.module_.hidden[0].linear.bias.detach().numpy()).max() < 1e-9


@pytest.mark.parametrize(
    "optimizer", ["adam", "adamw", "nadam", "radam", "sgd", "rmsprop", "adagrad"]
)
def test_every_optimizer_learns(optimizer, blobs):
    X, y = blobs
    X = StandardScaler().fit_transform(X)
    lr = {"sgd": 0.05, "adagrad": 0.05}.get(optimizer, 0.005)
    clf = TransferMLPClassifier(
        (32,), optimizer=optimizer, lr=lr, max_epochs=30, batch_size=32,
        random_state=0,
        nesterov=optimizer == "sgd",
    ).fit(X, y)
    assert clf.loss_curve_[-1] < 0.6 * clf.loss_curve_[0]
    assert clf.score(X, y) > 0.85
    assert type(clf.net_.optimizer_).__name__.lower() == optimizer


def test_optimizer_params_and_weight_decay_reach_the_optimizer(blobs):
    X, y = blobs
    clf = TransferMLPClassifier(
        optimizer="sgd", momentum=0.5, nesterov=True, weight_decay=0.01,
        optimizer_params={"dampening": 0.0}, **FAST,
    ).fit(X, y)
    group = clf.net_.optimizer_.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (
        0.5, True, 0.01)
    clf = TransferMLPClassifier(
        optimizer=torch.optim.Adam, optimizer_params={"betas": (0.8, 0.9)}, **FAST
    ).fit(X, y)
    assert clf.net_.optimizer_.param_groups[0]["betas"] == (0.8, 0.9)


def test_early_stopping_stops_and_keeps_best_weights():
    X, y = make_classification(
        300, 20, n_informative=3, flip_y=0.3, random_state=0
    )
    clf = TransferMLPClassifier(
        (128, 128), lr=0.01, max_epochs=200, early_stopping=True,
        n_iter_no_change=5, validation_fraction=0.2, random_state=0,
    ).fit(X, y)
    assert clf.n_iter_ < 200
    assert len(clf.validation_loss_curve_) == clf.n_iter_
    best = int(np.argmin(clf.validation_loss_curve_))
    assert clf.n_iter_ - 1 - best == 5  # stopped after 5 epochs without progress
    assert clf.best_validation_loss_ == min(clf.validation_loss_curve_)
    # the restored weights are the best epoch's: their validation loss is the best
    plain = TransferMLPClassifier(**FAST).fit(X, y)
    assert plain.validation_loss_curve_ is None
    assert plain.best_validation_loss_ is None


def test_warm_start_and_partial_fit_continue_training(blobs):
    X, y = blobs
    clf = TransferMLPClassifier(warm_start=True, **FAST).fit(X, y)
    first = clf.module_.output.weight.detach().clone()
    clf.fit(X, y)
    assert clf.n_iter_ == 10
    assert clf.loss_curve_[5] < clf.loss_curve_[4] * 1.05  # no restart spike
    assert not torch.equal(first, clf.module_.output.weight)

    inc = TransferMLPClassifier(**FAST)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        inc.partial_fit(X, y)
    for chunk in np.array_split(np.arange(len(X)), 4):
        inc.partial_fit(X[chunk], y[chunk], classes=[0, 1, 2])
    assert inc.n_iter_ == 4
    with pytest.raises(ValueError, match="X has 7 features"):
        inc.partial_fit(X[:, :7], y)
    with pytest.raises(ValueError, match=r"has not seen \(classes_="):
        inc.partial_fit(X, y + 5)

    reg = TransferMLPRegressor(**FAST)
    for _ in range(3):
        reg.partial_fit(X, y.astype(float))
    assert reg.n_iter_ == 3


def test_class_weight_shifts_predictions_to_the_weighted_class():
    X, y = make_classification(
        400, 5, n_informative=2, weights=[0.9, 0.1], flip_y=0.1, random_state=0
    )
    kw = dict(hidden_layer_sizes=(16,), max_epochs=30, lr=0.01, random_state=0)
    plain = TransferMLPClassifier(**kw).fit(X, y)
    balanced = TransferMLPClassifier(class_weight="balanced", **kw).fit(X, y)
    heavy = TransferMLPClassifier(class_weight={1: 20.0}, **kw).fit(X, y)
    n_plain = (plain.predict(X) == 1).sum()
    assert (balanced.predict(X) == 1).sum() > n_plain
    assert (heavy.predict(X) == 1).sum() > (balanced.predict(X) == 1).sum()


def test_user_callbacks_are_copied_and_used(blobs):
    X, y = blobs
    sched = LRScheduler("StepLR", step_size=1, gamma=0.5)
    clf = TransferMLPClassifier(callbacks=[sched], lr=0.1, **FAST).fit(X, y)
    assert clf.net_.optimizer_.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**5)
    assert clf.callbacks[0] is sched and not hasattr(sched, "lr_scheduler_")


def test_verbose_prints_a_table_and_silent_by_default(blobs, capsys):
    X, y = blobs
    TransferMLPClassifier(**FAST).fit(X, y)
    assert capsys.readouterr().out == ""
    TransferMLPClassifier(verbose=1, early_stopping=True, **FAST).fit(X, y)
    out = capsys.readouterr().out
    assert re.search(r"epoch\s+train_loss\s+valid_loss", out)
    assert len(re.findall(r"^\s+\d+\s+\S+", out, flags=re.M)) == 5


# ---- scikit-learn tools ----------------------------------------------------------


def test_pipeline_gridsearch_and_parallel_cross_validation(digits_split):
    X_train, X_test, y_train, y_test = digits_split
    pipe = make_pipeline(
        StandardScaler(),
        TransferMLPClassifier(max_epochs=15, random_state=0, device="cpu"),
    )
    grid = GridSearchCV(
        pipe,
        {
            "transfermlpclassifier__hidden_layer_sizes": [(16,), (64,)],
            "transfermlpclassifier__lr": [1e-4, 3e-3],
        },
        cv=3,
    )
    grid.fit(X_train, y_train)
    assert grid.best_params_ == {
        "transfermlpclassifier__hidden_layer_sizes": (64,),
        "transfermlpclassifier__lr": 3e-3,
    }
    assert grid.score(X_test, y_test) > 0.93
    scores = cross_val_score(pipe, X_train, y_train, cv=3, n_jobs=2)
    assert scores.shape == (3,) and scores.min() > 0.9


class _Threads(Callback):
    def on_train_begin(self, net, **kwargs):
        self.threads = torch.get_num_threads()


def test_parallel_workers_do_not_oversubscribe_the_cores(blobs):
    import os

    from sklearn.model_selection import cross_validate

    X, y = blobs
    result = cross_validate(
        TransferMLPClassifier(callbacks=[("threads", _Threads())], **FAST),
        X, y, cv=2, n_jobs=2, return_estimator=True,
    )
    threads = [dict(est.net_.callbacks_)["threads"].threads
               for est in result["estimator"]]
    assert all(t * 2 <= max(os.cpu_count(), 2) for t in threads), threads


def test_regressor_in_pipeline_gridsearch_and_parallel_cross_validation():
    X, y = load_diabetes(return_X_y=True)
    y = (y - y.mean()) / y.std()
    pipe = make_pipeline(
        StandardScaler(),
        TransferMLPRegressor(max_epochs=30, batch_size=32, random_state=0,
                             device="cpu"),
    )
    grid = GridSearchCV(
        pipe,
        {
            "transfermlpregressor__hidden_layer_sizes": [(8,), (32,)],
            "transfermlpregressor__lr": [1e-5, 1e-3],
        },
        cv=3,
    ).fit(X, y)
    assert grid.best_params_["transfermlpregressor__lr"] == 1e-3
    assert grid.best_score_ > 0.3
    scores = cross_val_score(pipe, X, y, cv=3, n_jobs=2)
    assert scores.shape == (3,) and scores.mean() > 0.3
