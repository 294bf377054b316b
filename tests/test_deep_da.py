"""Deep domain adaptation inside TransferMLPClassifier / TransferMLPRegressor.

The accuracy tests follow the protocol of ``benchmarks/bench_deep_da.py`` on
``load_digits``: a random half of the images is the labelled source (898);
the other half, the target, is shifted (one pixel to the right plus
N(0, 0.1) noise, or its contrast squeezed, x * 0.3 + 0.35): 449 unlabelled
target images train the adaptation, 450 score it. One network for all:
conv3x3x16 -> ReLU -> maxpool -> Linear(256, 32) -> ReLU -> Linear(32, 10),
Adam 3e-3, batches of 64, 30 epochs.
"""

import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import sklearn
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.metadata_routing import get_routing_for_object
from skorch.callbacks import Callback
from torch import nn

import skxfer._estimators as estimators_module
from skxfer import TransferMLPClassifier, TransferMLPRegressor
from skxfer._adaptation import TargetStream, coral_loss, mcc_loss
from skxfer._losses import SourceTarget
from skxfer.adapt import CORAL, CircularValidation, make_da_pipeline

DATA = Path(__file__).resolve().parent / "data"
KW = dict(random_state=0, device="cpu")


# ---- the protocol ----------------------------------------------------------------


def shifted_digits(seed, shift):
    """(X_source, y_source, X_adapt, X_test, y_test) as in the module docstring."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).reshape(-1, 8, 8).astype(np.float32)
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(X))
    source, target = order[:898], order[898:]
    X_target = X[target].copy()
    if shift == "pixel":
        X_target = np.roll(X_target, 1, axis=2)
        X_target[:, :, 0] = 0.0
        X_target += rng.normal(0.0, 0.1, X_target.shape).astype(np.float32)
    else:  # contrast
        X_target = X_target * 0.3 + 0.35
    return (X[source], y[source], X_target[:449], X_target[449:],
            y[target][449:])


def cnn(seed):
    """The protocol's convolutional backbone, its weights drawn from ``seed``
    (every method of a seed starts from the same network)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten())


def protocol(seed, **params):
    return TransferMLPClassifier(
        (32,), backbone=cnn(seed), freeze=False, lr=3e-3, batch_size=64,
        max_epochs=30, n_iter_no_change=30, random_state=seed, device="cpu",
        **params)


# the settings the accuracy tests compare (one weight per method)
CANDIDATES = {
    "source_only": dict(adaptation="source_only"),
    "coral": dict(adaptation="coral", adaptation_weight=30.0),
    "mcc": dict(adaptation="mcc", adaptation_weight=1.0),
}
SEEDS = range(5)
SEARCH_SEEDS = range(3)


def _packed(seed, shift):
    X_s, y_s, X_a, X_test, y_test = shifted_digits(seed, shift)
    X = np.concatenate([X_s, X_a])
    y = np.r_[y_s, np.full(len(X_a), -1)]
    return X, y, X_test, y_test


class _Results:
    """Target test accuracies, each model fitted once.

    ``source(seed)``: the protocol's network trained on the source rows (the
    same model as ``adaptation='source_only'`` on the packed rows: the target
    rows are dropped). ``end_to_end(shift, seed, name)``: a candidate trained
    end to end. ``head(shift, seed, name)``: the source network wholly frozen
    (features then head), a new head trained on its features; ``name`` may
    be ``"chosen"``: the candidate ``GridSearchCV(scoring=
    CircularValidation())`` picks (refit=False: its refit is that
    candidate's fit on the same rows).
    """

    def __init__(self):
        self.cache = {}

    def _once(self, key, compute):
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    def source(self, seed):
        def fit():
            X_s, y_s, *_ = shifted_digits(seed, "pixel")
            return protocol(seed).fit(X_s, y_s)
        return self._once(("source", seed), fit)

    def end_to_end(self, shift, seed, name):
        def score():
            X, y, X_test, y_test = _packed(seed, shift)
            model = (self.source(seed) if name == "source_only"
                     else protocol(seed, **CANDIDATES[name]).fit(X, y))
            return model.score(X_test, y_test)
        return self._once(("end to end", shift, seed, name), score)

    def head(self, shift, seed, name):
        X, y, X_test, y_test = _packed(seed, shift)
        head = TransferMLPClassifier(
            (32,), backbone=self.source(seed), lr=3e-3, batch_size=64,
            max_epochs=30, n_iter_no_change=30, random_state=seed, device="cpu")

        def score():
            if name == "chosen":
                search = GridSearchCV(
                    head, [{k: [v] for k, v in p.items()}
                           for p in CANDIDATES.values()],
                    scoring=CircularValidation(), cv=3, refit=False,
                ).fit(X, y)
                return self.head(shift, seed, list(CANDIDATES)[search.best_index_])
            model = head.set_params(**CANDIDATES[name]).fit(X, y)
            assert model._plan.features_first
            return model.score(X_test, y_test)
        return self._once(("head", shift, seed, name), score)


@pytest.fixture(scope="module")
def results():
    return _Results()


def test_coral_and_mcc_beat_source_only_on_the_pixel_shift(results):
    accuracy = {name: float(np.mean([results.end_to_end("pixel", seed, name)
                                     for seed in SEEDS]))
                for name in CANDIDATES}
    source_only, coral, mcc = (accuracy[k] for k in ("source_only", "coral", "mcc"))
    print(f"pixel shift, end to end, 5 seeds: source only {source_only:.3f}, "
          f"CORAL {coral:.3f} ({coral - source_only:+.3f}), MCC {mcc:.3f} "
          f"({mcc - source_only:+.3f})")
    assert coral >= source_only + 0.05
    assert mcc > source_only


@pytest.mark.parametrize("shift", ["pixel", "contrast"])
def test_circular_validation_choice_is_no_worse_than_source_only(results, shift):
    # on the fast path: the source network frozen, heads trained on its features
    source_only, chosen = (
        float(np.mean([results.head(shift, seed, name) for seed in SEARCH_SEEDS]))
        for name in ("source_only", "chosen"))
    print(f"{shift} shift, features then head, 3 seeds: source only "
          f"{source_only:.3f}, chosen by CircularValidation {chosen:.3f} "
          f"({chosen - source_only:+.3f})")
    assert chosen >= source_only - 0.01


# ---- what -1 means -------------------------------------------------------------------


@pytest.fixture(scope="module")
def rows():
    """Small digit rows: 240 labelled source rows, 120 unlabelled target rows
    (a shifted copy of other rows), and the target's true labels."""
    X, y = load_digits(return_X_y=True)
    X = X[:360] / 16.0
    y = y[:360]
    X_target = np.clip(X[240:] * 0.5 + 0.3, 0, 1)
    X_all = np.concatenate([X[:240], X_target])
    y_all = np.r_[y[:240], np.full(120, -1)]
    return X_all, y_all, y[240:]


SMALL = dict(hidden_layer_sizes=(16,), max_epochs=4, batch_size=32, **KW)


def test_without_adaptation_minus_one_is_an_ordinary_class(rows):
    X, y, _ = rows
    plain = TransferMLPClassifier(**SMALL).fit(X, y)
    assert plain.classes_.tolist() == [-1, *range(10)]
    relabelled = TransferMLPClassifier(**SMALL).fit(X, np.where(y == -1, -5, y))
    # the same encoded targets, the same training: bit for bit
    np.testing.assert_array_equal(plain.predict_proba(X),
                                  relabelled.predict_proba(X))


def test_source_only_is_the_plain_fit_on_the_labelled_rows(rows):
    X, y, _ = rows
    labelled = y != -1
    source_only = TransferMLPClassifier(adaptation="source_only", **SMALL).fit(X, y)
    plain = TransferMLPClassifier(**SMALL).fit(X[labelled], y[labelled])
    assert source_only.classes_.tolist() == list(range(10))
    np.testing.assert_array_equal(source_only.predict_proba(X),
                                  plain.predict_proba(X))
    assert source_only.n_features_in_ == 64 and "coral" not in source_only.history_[0]


@pytest.mark.parametrize("method", ["coral", "mcc"])
def test_without_target_rows_one_warning_then_source_only(rows, method):
    X, y, _ = rows
    labelled = y != -1
    with pytest.warns(UserWarning) as record:
        model = TransferMLPClassifier(adaptation=method, **SMALL).fit(
            X[labelled], y[labelled])
    messages = [str(w.message) for w in record if "target rows" in str(w.message)]
    assert messages == [
        f"TransferMLPClassifier(adaptation={method!r}) found no target rows (no "
        "row of y masked with -1 as unlabelled, and no sample_domain < 0): it "
        "trains on the source rows alone, as adaptation='source_only'."
    ]
    assert record[0].filename == __file__
    plain = TransferMLPClassifier(**SMALL).fit(X[labelled], y[labelled])
    np.testing.assert_array_equal(model.predict_proba(X), plain.predict_proba(X))


def test_sample_domain_makes_minus_one_the_mask_and_labelled_target_rows_train(rows):
    X, y, y_target = rows
    domain = np.r_[np.ones(240, int), -np.ones(120, int)]
    # adaptation=None with sample_domain: -1 is the mask (rows dropped)
    masked = TransferMLPClassifier(**SMALL).fit(X, y, sample_domain=domain)
    source_only = TransferMLPClassifier(adaptation="source_only", **SMALL).fit(X, y)
    assert masked.classes_.tolist() == list(range(10))
    np.testing.assert_array_equal(masked.predict_proba(X),
                                  source_only.predict_proba(X))
    # labelled target rows join the supervised loss
    y_some = y.copy()
    y_some[240:300] = y_target[:60]
    with_labels = TransferMLPClassifier(adaptation="source_only", **SMALL).fit(
        X, y_some, sample_domain=domain)
    plain = TransferMLPClassifier(**SMALL).fit(X[:300], y_some[:300])
    np.testing.assert_array_equal(with_labels.predict_proba(X),
                                  plain.predict_proba(X))
    # without sample_domain they are source rows: no target rows left but the
    # masked ones
    spied = TransferMLPClassifier(adaptation="coral", callbacks=[_PairSpy()], **SMALL)
    assert _PairSpy.of(spied.fit(X, y_some)).n_target_rows() == 60
    spied.fit(X, y_some, sample_domain=domain)
    assert _PairSpy.of(spied).n_target_rows() == 120


def test_regressor_masks_with_nan_and_refuses_mcc_by_name(rows):
    X, y, _ = rows
    y_reg = np.where(y == -1, np.nan, y.astype(float))
    reg = TransferMLPRegressor(adaptation="coral", adaptation_weight=10.0,
                               **SMALL).fit(X, y_reg)
    assert len(reg.history_[:, "coral"]) == 4 and reg.history_[-1, "coral"] > 0
    assert reg.predict(X[240:]).shape == (120,)
    plain = TransferMLPRegressor(adaptation="source_only", **SMALL).fit(X, y_reg)
    assert not np.array_equal(plain.predict(X), reg.predict(X))
    with pytest.raises(ValueError, match=re.escape(
        "The 'adaptation' parameter of TransferMLPRegressor must be None or a str "
        "among 'source_only', 'coral' ('mcc' reads class probabilities: a "
        "classifier's method). Got 'mcc' instead."
    )):
        TransferMLPRegressor(adaptation="mcc", **SMALL).fit(X, y_reg)
    # NaN without adaptation and without domains: refused as before
    with pytest.raises(ValueError, match="NaN"):
        TransferMLPRegressor(**SMALL).fit(X, y_reg)


def test_bad_parameters_and_labels_are_refused_with_the_fix(rows):
    X, y, _ = rows
    with pytest.raises(ValueError) as err:
        TransferMLPClassifier(adaptation="dann", adaptation_weight=-1,
                              adaptation_layer=3).fit(X, y)
    assert str(err.value).splitlines() == [
        "The 'adaptation' parameter of TransferMLPClassifier must be None or a "
        "str among 'source_only', 'coral', 'mcc'. Got 'dann' instead.",
        "The 'adaptation_weight' parameter of TransferMLPClassifier must be a "
        "float >= 0. Got -1 instead.",
        "The 'adaptation_layer' parameter of TransferMLPClassifier must be None "
        "or the name of a layer of module_ (e.g. 'head.hidden.0'). Got 3 "
        "instead.",
    ]
    coral = TransferMLPClassifier(adaptation="coral", **SMALL)
    with pytest.raises(ValueError, match="y holds only the labels -1 and 1"):
        coral.fit(X[:20], np.where(np.arange(20) % 2, 1, -1))
    with pytest.raises(ValueError, match="y holds the string '-1'"):
        coral.fit(X[:20], np.array(["a", "b", "-1", "a"] * 5))
    with pytest.raises(ValueError, match="masks 120 rows with NaN"):
        coral.fit(X, np.where(y == -1, np.nan, y))
    with pytest.raises(ValueError, match=re.escape(
            "TransferMLPClassifier found no labelled rows to train on: every row "
            "of y is masked as an unlabelled target row (-1).")):
        coral.fit(X[240:], y[240:])
    with pytest.raises(ValueError, match="marks 2 source rows"):
        coral.fit(X[:10], np.r_[[-1, -1], y[2:10]], sample_domain=np.ones(10))
    with pytest.raises(ValueError, match="classes holds -1"):
        coral.partial_fit(X, y, classes=[-1, *range(10)])
    assert not hasattr(coral, "net_")  # nothing half-fitted


def test_alignment_layer_choice(rows):
    X, y, _ = rows
    no_hidden = TransferMLPClassifier((), adaptation="coral", **KW)
    with pytest.raises(ValueError, match=re.escape(
            "adaptation='coral' aligns the head's last hidden layer, and this "
            "network has none (hidden_layer_sizes=()) and no backbone that trains")):
        no_hidden.fit(X, y)
    TransferMLPClassifier((), adaptation="mcc", max_epochs=2, **KW).fit(X, y)
    with pytest.raises(ValueError, match=re.escape(
            "adaptation_layer='hidden.7' is not a layer of the network; its layers "
            "are named as in module_, like ['hidden', 'hidden.0', 'hidden.0.act', "
            "'hidden.0.linear', 'output'].")):
        TransferMLPClassifier((16,), adaptation="coral", adaptation_layer="hidden.7",
                              **KW).fit(X, y)
    first = TransferMLPClassifier((16, 8), adaptation="coral", adaptation_weight=100,
                                  adaptation_layer="hidden.0", max_epochs=2, **KW)
    last = clone(first).set_params(adaptation_layer=None)
    assert not np.array_equal(first.fit(X, y).predict_proba(X),
                              last.fit(X, y).predict_proba(X))


# ---- paired batches ---------------------------------------------------------------


class _PairSpy(Callback):
    """Records each training step's (labelled rows, target rows).

    The estimator trains with a copy of its callbacks: read what the copy
    saw with ``_PairSpy.of(model)``.
    """

    @staticmethod
    def of(model):
        return dict(model.net_.callbacks_)["callback_0"]

    def initialize(self):
        self.steps = []
        self.valid = []
        return self

    def on_batch_begin(self, net, batch=None, training=None, **kwargs):
        X = batch[0]
        if not training:
            self.valid.append((X, batch[1]))
            return
        if isinstance(X, SourceTarget):
            self.steps.append((X.source.detach().clone(), X.target.detach().clone()))
        else:
            self.steps.append((X.detach().clone(), None))

    def n_target_rows(self):
        """Distinct target rows seen (by their content)."""
        rows = torch.cat([t.flatten(1) for _, t in self.steps if t is not None])
        return len(torch.unique(rows, dim=0))


def _ids(n_source, n_target):
    """Rows whose first feature is their position: the rows are traceable."""
    X = np.random.RandomState(0).rand(n_source + n_target, 4).astype(np.float32)
    X[:, 0] = np.arange(len(X))
    y = np.r_[np.arange(n_source) % 2, np.full(n_target, -1)]
    return X, y


@pytest.mark.parametrize("n_target", [20, 300])
def test_every_step_pairs_a_target_batch_of_its_size(n_target):
    X, y = _ids(100, n_target)
    seen = _PairSpy.of(TransferMLPClassifier(
        (4,), adaptation="coral", batch_size=25, max_epochs=3,
        callbacks=[_PairSpy()], **KW).fit(X, y))
    assert len(seen.steps) == 3 * 4  # an epoch: one pass over the labelled rows
    for source, target in seen.steps:
        assert len(source) == len(target) == 25
        assert (source[:, 0] < 100).all() and (target[:, 0] >= 100).all()
    ids = [int(i) - 100 for _, t in seen.steps for i in t[:, 0]]
    if n_target == 20:  # the smaller domain is cycled: 5 full rounds an epoch
        for epoch in range(3):
            counts = np.bincount(ids[epoch * 100:(epoch + 1) * 100], minlength=20)
            assert (counts == 5).all()
    else:  # the larger one is seen whole over three epochs, each row once
        assert sorted(ids) == list(range(300))


def test_a_short_last_batch_is_left_out_unless_it_is_the_only_one():
    X, y = _ids(110, 40)
    model = TransferMLPClassifier((4,), adaptation="mcc", batch_size=25,
                                  max_epochs=4, callbacks=[_PairSpy()], **KW)
    seen = _PairSpy.of(model.fit(X, y))
    assert [len(s) for s, _ in seen.steps] == [25] * 16  # 4 a epoch, not 5
    trained = np.unique(torch.cat([s[:, 0] for s, _ in seen.steps]).numpy())
    assert len(trained) == 110  # reshuffled each epoch: every row trains
    few = _PairSpy.of(model.set_params(batch_size=200).fit(X, y))
    assert [(len(s), len(t)) for s, t in few.steps] == [(110, 110)] * 4


def test_paired_batches_are_seeded_by_random_state():
    X, y = _ids(96, 50)

    def order(seed):
        seen = _PairSpy.of(TransferMLPClassifier(
            (4,), adaptation="mcc", batch_size=32, max_epochs=2,
            callbacks=[_PairSpy()], random_state=seed, device="cpu").fit(X, y))
        return [t[:, 0].tolist() for _, t in seen.steps]

    assert order(0) == order(0)
    assert order(0) != order(1)
    # the labelled batches come in the order they would without a target
    seen = _PairSpy.of(TransferMLPClassifier(
        (4,), adaptation="coral", batch_size=32, max_epochs=2,
        callbacks=[_PairSpy()], **KW).fit(X, y))
    plain = _PairSpy.of(TransferMLPClassifier(
        (4,), batch_size=32, max_epochs=2, callbacks=[_PairSpy()],
        **KW).fit(X[:96], y[:96]))
    assert [s[:, 0].tolist() for s, _ in seen.steps] == [
        s[:, 0].tolist() for s, _ in plain.steps]


def test_target_stream_restarts_with_a_new_order():
    stream = TargetStream(4, np.random.RandomState(0))
    drawn = stream.draw(10)
    assert sorted(drawn[:4]) == sorted(drawn[4:8]) == [0, 1, 2, 3]
    assert list(drawn[:4]) != list(drawn[4:8])
    assert sorted(np.r_[drawn[8:], stream.draw(2)]) == [0, 1, 2, 3]


def small_cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten())


@pytest.fixture(scope="module")
def images():
    X, y = load_digits(return_X_y=True)
    X = (X[:150] / 16.0).reshape(-1, 8, 8).astype(np.float32)
    y = y[:150] % 3
    X[100:] = np.clip(X[100:] * 0.5 + 0.3, 0, 1)
    return X, np.r_[y[:100], np.full(50, -1)]


@pytest.fixture(scope="module")
def image_source(images):
    X, y = images
    return TransferMLPClassifier((8,), backbone=small_cnn(), freeze=False,
                                 max_epochs=2, **KW).fit(X[:100], y[:100])


@pytest.mark.parametrize("path", ["rows through a backbone", "features then head",
                                  "images in memory", "images streamed"])
@pytest.mark.parametrize("method", ["coral", "mcc"])
def test_each_training_path_pairs_and_aligns(images, image_source, path, method,
                                             monkeypatch):
    X, y = images
    params = dict(hidden_layer_sizes=(8,), adaptation=method, batch_size=16,
                  max_epochs=2, adaptation_weight=10.0, **KW)
    if path == "rows through a backbone":
        X = X.reshape(len(X), -1)
        params.update(backbone=TransferMLPClassifier((8,), max_epochs=2, **KW).fit(
            X[:100], y[:100]), freeze=False)
        plan = "end_to_end"
    elif path == "features then head":
        params.update(backbone=image_source)  # wholly frozen: stored features
        plan = "features_then_head"
    else:
        params.update(backbone=small_cnn(), freeze=False)
        plan = "end_to_end"
        if path == "images streamed":
            monkeypatch.setattr(estimators_module, "_IN_MEMORY_BYTES", 0)
            X = list(X)
    model = TransferMLPClassifier(callbacks=[_PairSpy()], **params).fit(X, y)
    seen = _PairSpy.of(model)
    again = TransferMLPClassifier(**params).fit(X, y)
    assert model._plan.mode == plan
    assert len(seen.steps) == 2 * 6  # whole batches of 16 of the 100 rows
    assert all(len(s) == len(t) for s, t in seen.steps)
    assert seen.n_target_rows() == 50
    values = model.history_[:, method]
    assert len(values) == 2 and all(v > 0 for v in values)
    assert model.classes_.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(model.predict_proba(X), again.predict_proba(X))
    assert model.predict(X[:3]).shape == (3,)  # any rows, no domains


# ---- with everything the estimators do ------------------------------------------


def test_early_stopping_holds_out_labelled_rows_and_scores_them_supervised(rows):
    X, y, _ = rows
    model = TransferMLPClassifier(
        (16,), adaptation="mcc", adaptation_weight=3.0, early_stopping=True,
        max_epochs=1, callbacks=[_PairSpy()], **KW).fit(X, y)
    seen = _PairSpy.of(model)
    X_valid = torch.cat([b for b, _ in seen.valid])
    y_valid = torch.cat([t for _, t in seen.valid])
    assert len(X_valid) == 24 and (y_valid >= 0).all()  # 10% of the labelled rows
    with torch.no_grad():
        logits = model.module_(X_valid)
    supervised = nn.functional.cross_entropy(logits, y_valid).item()
    assert model.validation_loss_curve_[0] == pytest.approx(supervised, rel=1e-5)
    assert model.history_[0, "mcc"] > 0


def test_a_validation_set_of_its_own_scores_the_supervised_loss_alone(rows):
    X, y, y_target = rows
    X_val, y_val = X[240:300], y_target[:60]  # labelled rows of the target
    model = TransferMLPClassifier(
        (16,), adaptation="coral", adaptation_weight=100.0, early_stopping=True,
        max_epochs=2, n_iter_no_change=5, batch_size=32, callbacks=[_PairSpy()],
        **KW).fit(X, y, X_val=X_val, y_val=y_val)
    seen = _PairSpy.of(model)
    assert all(t is not None and len(t) == len(s) for s, t in seen.steps)
    # every labelled row trains (no split of X): 7 whole batches of 32 an epoch
    assert len(seen.steps) == 2 * 7
    assert torch.cat([b for b, _ in seen.valid]).shape[0] == 2 * 60
    with torch.no_grad():
        logits = model.module_(torch.as_tensor(X_val, dtype=torch.float32))
    supervised = nn.functional.cross_entropy(
        logits, torch.as_tensor(y_val)).item()
    assert model.validation_loss_curve_[-1] == pytest.approx(supervised, rel=1e-5)
    assert model.history_[-1, "coral"] > 0
    assert model.net_.train_split is None  # the validation set is not kept
    # with sample_domain: labelled target rows train, the domains as given
    domain = np.r_[np.ones(240, int), -np.ones(120, int)]
    y_some = y.copy()
    y_some[300:320] = y_target[60:80]
    TransferMLPClassifier((16,), adaptation="mcc", early_stopping=True,
                          max_epochs=1, **KW).fit(
        X, y_some, X_val=X_val, y_val=y_val, sample_domain=domain)
    # unlabelled rows have no place in a validation set
    masked = np.r_[y_val[:50], np.full(10, -1)]
    with pytest.raises(ValueError, match=re.escape(
            "y_val holds 10 row(s) masked as unlabelled target rows (-1). The "
            "validation loss is the supervised loss")):
        TransferMLPClassifier(adaptation="coral", early_stopping=True, **SMALL).fit(
            X, y, X_val=X_val, y_val=masked)
    y_reg = np.where(y == -1, np.nan, y.astype(float))
    with pytest.raises(ValueError, match=re.escape("y_val holds 1 row(s) masked "
                                                   "as unlabelled target rows (NaN)")):
        TransferMLPRegressor(adaptation="coral", early_stopping=True, **SMALL).fit(
            X, y_reg, X_val=X_val, y_val=np.r_[y_val[:59], np.nan])


def test_weights_of_target_rows_are_not_used_and_classes_are_weighed_by_labels(rows):
    X, y, _ = rows
    w = np.random.RandomState(0).rand(len(y)) + 0.5
    w_other = w.copy()
    w_other[y == -1] = 7.0
    kw = dict(adaptation="coral", adaptation_weight=10.0, **SMALL)
    a = TransferMLPClassifier(**kw).fit(X, y, sample_weight=w)
    b = TransferMLPClassifier(**kw).fit(X, y, sample_weight=w_other)
    c = TransferMLPClassifier(**kw).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))
    balanced = TransferMLPClassifier(class_weight="balanced", **kw).fit(X, y)
    np.testing.assert_allclose(
        balanced._class_weights,
        compute_class_weight("balanced", classes=np.arange(10), y=y[y != -1]))


def test_lp_ft_with_l2_sp_and_layer_rates_aligns_in_both_phases(images):
    X, y = images
    model = TransferMLPClassifier(
        (8,), backbone=small_cnn(), freeze=True, unfreeze_at=1, l2_sp=0.1,
        backbone_lr_factor=0.5, backbone_lr_decay=0.5, adaptation="coral",
        adaptation_weight=100.0, batch_size=16, max_epochs=3, **KW).fit(X, y)
    assert model._plan.mode == "end_to_end"
    assert model.history_[0, "l2_sp"] == 0.0 and model.history_[2, "l2_sp"] > 0
    assert all(v > 0 for v in model.history_[:, "coral"])
    loss = np.array(model.loss_curve_)
    assert (loss > np.array(model.history_[:, "coral"])).all()  # a part of it


def test_warm_start_and_partial_fit_continue_with_target_rows(rows):
    X, y, _ = rows
    model = TransferMLPClassifier(adaptation="mcc", **SMALL).fit(X, y)
    model.set_params(warm_start=True, max_epochs=2, adaptation_weight=0.5).fit(X, y)
    assert model.n_iter_ == 6 and len(model.history_[:, "mcc"]) == 6
    domain = np.r_[np.ones(240, int), -np.ones(120, int)]
    chunked = TransferMLPClassifier(adaptation="coral", **SMALL)
    for part in (slice(0, None, 2), slice(1, None, 2)):
        chunked.partial_fit(X[part], y[part], classes=np.arange(10),
                            sample_domain=domain[part])
    assert chunked.n_iter_ == 2 and len(chunked.history_[:, "coral"]) == 2
    assert chunked.classes_.tolist() == list(range(10))


def test_binary_and_multiclass(rows):
    # measured (seed 0): multiclass source only 0.408, MCC 0.758, CORAL(w=100)
    # 0.717; binary (odd/even) 0.833, 0.875, 0.683
    X, y, y_target = rows
    binary = np.where(y == -1, -1, y % 2)
    for labels, y_true in ((y, y_target), (binary, y_target % 2)):
        scores = {}
        for method, weight in (("source_only", 1.0), ("mcc", 1.0), ("coral", 100.0)):
            model = TransferMLPClassifier(
                (16,), adaptation=method, adaptation_weight=weight, max_epochs=30,
                lr=0.01, **KW).fit(X, labels)
            n_classes = len(np.unique(y_true))
            assert model.classes_.tolist() == list(range(n_classes))
            assert model.predict_proba(X[240:]).shape == (120, n_classes)
            scores[method] = model.score(X[240:], y_true)
        assert scores["mcc"] > scores["source_only"] + 0.03, scores


def test_pickles_and_clones_keep_the_adaptation(rows, tmp_path):
    X, y, _ = rows
    model = TransferMLPClassifier(adaptation="coral", adaptation_weight=5.0,
                                  adaptation_layer="hidden.0", **SMALL).fit(X, y)
    loaded = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.get_params()["adaptation_layer"] == "hidden.0"
    twin = clone(model)
    assert twin.get_params() == model.get_params() and not hasattr(twin, "net_")
    np.testing.assert_array_equal(twin.fit(X, y).predict_proba(X),
                                  model.predict_proba(X))


def test_pickles_written_before_adaptation_load_with_its_defaults(rows):
    X, y, _ = rows
    for name in ("core_mlp_early_stopping.pkl", "mlp_skxfer_0.1.0.dev0.pkl"):
        with open(DATA / name, "rb") as f:
            old = pickle.load(f)
        assert {k: old.get_params()[k] for k in
                ("adaptation", "adaptation_weight", "adaptation_layer")} == {
            "adaptation": None, "adaptation_weight": 1.0, "adaptation_layer": None}
        if old.n_features_in_ == X.shape[1]:
            old.predict(X[:3])
        refit = clone(old).set_params(adaptation="mcc", max_epochs=2,
                                      early_stopping=False)
        assert refit.fit(X, y).history_[-1, "mcc"] > 0


def test_history_verbose_table_and_plot_show_the_term(rows, capsys):
    import matplotlib

    matplotlib.use("Agg")
    from skxfer.plotting import plot_history

    X, y, _ = rows
    model = TransferMLPClassifier(adaptation="coral", adaptation_weight=100.0,
                                  verbose=1, **SMALL).fit(X, y)
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["epoch", "coral", "train_loss", "dur"]
    labels = [line.get_label() for line in plot_history(model).get_lines()]
    assert labels == ["training loss", "coral term (in the training loss)"]


# ---- label-free selection and the DA tools ------------------------------------------


def test_fit_requests_sample_domain_so_da_tools_pass_it():
    for est in (TransferMLPClassifier(), TransferMLPRegressor()):
        routing = get_routing_for_object(est)
        assert routing.consumes("fit", ["sample_domain"])
        assert routing.consumes("partial_fit", ["sample_domain"])
        assert not routing.consumes("predict", ["sample_domain"])


def test_grid_search_with_circular_validation_on_the_mask_and_with_routing(rows):
    X, y, _ = rows
    grid = {"adaptation": ["source_only", "coral", "mcc"],
            "adaptation_weight": [1.0, 10.0]}
    search = GridSearchCV(TransferMLPClassifier(**SMALL), grid,
                          scoring=CircularValidation(), cv=3).fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert len(scores) == 6 and np.isfinite(scores).all()
    assert search.best_estimator_.classes_.tolist() == list(range(10))
    # with metadata routing: sample_domain reaches fit and the scorer
    domain = np.r_[np.ones(240, int), -np.ones(120, int)]
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    with sklearn.config_context(enable_metadata_routing=True):
        routed = GridSearchCV(TransferMLPClassifier(**SMALL), grid,
                              scoring=CircularValidation(), cv=folds).fit(
            X, y, sample_domain=domain)
    np.testing.assert_allclose(
        routed.cv_results_["mean_test_score"],
        GridSearchCV(TransferMLPClassifier(**SMALL), grid,
                     scoring=CircularValidation(), cv=folds).fit(X, y)
        .cv_results_["mean_test_score"])


def test_as_the_last_step_of_a_da_pipeline_it_trains_on_the_same_rows(rows):
    X, y, _ = rows
    pipe = make_da_pipeline(CORAL(), TransferMLPClassifier(**SMALL)).fit(X, y)
    domain = np.where(y == -1, -2, 1)
    mapped = CORAL().fit_transform(X, y, sample_domain=domain)
    labelled = y != -1
    alone = TransferMLPClassifier(**SMALL).fit(mapped[labelled], y[labelled])
    last = pipe.steps_[-1][1]
    np.testing.assert_array_equal(last.predict_proba(mapped),
                                  alone.predict_proba(mapped))
    adapted = make_da_pipeline(
        CORAL(), TransferMLPClassifier(adaptation="mcc", **SMALL)).fit(X, y)
    assert adapted.steps_[-1][1].history_[-1, "mcc"] > 0


def test_losses_match_skadas_formulas():
    rng = torch.Generator().manual_seed(0)
    a, b = torch.randn(20, 5, generator=rng), torch.randn(30, 5, generator=rng) * 2
    centred = [x - x.mean(0) for x in (a, b)]
    covs = [x.T @ x / (len(x) - 1) for x in centred]
    expected = ((covs[0] - covs[1]) ** 2).sum() / (4 * 25)
    torch.testing.assert_close(coral_loss(a, b), expected)
    logits = torch.randn(16, 4, generator=rng)
    p = torch.softmax(logits, 1)
    h = -(p * torch.log(p + 1e-7)).sum(1)
    w = (1 + torch.exp(-h)) / torch.mean(1 + torch.exp(-h))
    c = torch.einsum("ij,ik->jk", p, torch.diag(w) @ p)
    c = c / c.sum(1, keepdim=True)
    expected = torch.mean(torch.sum(torch.abs(c - torch.diag(torch.diag(c))), 1))
    torch.testing.assert_close(mcc_loss(logits), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mcc_loss(torch.zeros(1, 3)) >= 0  # one row: finite
