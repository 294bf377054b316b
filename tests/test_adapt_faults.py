"""Domain adaptation as users (and adversaries) use it: the cases that gave a
silent wrong number or a raw message, each with the behaviour that replaced it.

- named scorers on DA pipelines (``make_da_scorer``);
- ``score`` without domains, weights and skada's flags;
- nested pipelines, routing by declared metadata requests, on and off;
- one mask rule for every label kind (``read_domains``, ``pack_domains``);
- label-free selection (``CircularValidation``) on bad folds and other
  estimators;
- numerics: near-constant features, CORAL's centred frame, subspace ranks.

skada is compared in a subprocess (``import skada`` switches on scikit-learn's
metadata routing for the whole process) and only where it is installed; the
comparisons that must always run reproduce skada's formulas here.
"""

import importlib.util
import json
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import make_column_transformer
from sklearn.covariance import ledoit_wolf
from sklearn.datasets import load_digits, make_classification, make_regression
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import AdaBoostClassifier
from sklearn.exceptions import DataDimensionalityWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import f1_score
from sklearn.model_selection import (
    GridSearchCV,
    KFold,
    StratifiedKFold,
    cross_val_score,
    train_test_split,
)
from sklearn.pipeline import make_pipeline, make_union
from sklearn.preprocessing import StandardScaler
from sklearn.utils.metadata_routing import get_routing_for_object
from threadpoolctl import threadpool_limits

from skxfer.adapt import (
    CORAL,
    CircularValidation,
    DomainSplitError,
    PredictionEntropyScorer,
    SubspaceAlignment,
    make_da_pipeline,
    make_da_scorer,
    pack_domains,
    read_domains,
)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with threadpool_limits(1):
        yield


def covariance_shift(seed, n=1000):
    """Source and target halves of one problem; target features x * s + b."""
    X, y = make_classification(
        n, n_features=10, n_informative=5, n_redundant=2, class_sep=1.5,
        random_state=seed,
    )
    rng = np.random.RandomState(seed)
    scale, offset = rng.uniform(0.2, 3.0, 10), rng.normal(0.0, 2.0, 10)
    half = n // 2
    return X[:half], y[:half], X[half:] * scale + offset, y[half:]


def the_pipeline(aligner=None):
    """The pipeline of the common search: scaler, aligner, logistic regression."""
    return make_da_pipeline(StandardScaler(), CORAL() if aligner is None else aligner,
                            LogisticRegression())


GRID = {"coral": ["passthrough", CORAL()]}


@pytest.fixture(scope="module")
def shift():
    """README's recalibrated sensor: source only 0.824, CORAL 0.970 on target."""
    X_s, y_s, X_t, y_t = covariance_shift(0)
    X, y, domain = pack_domains(X_s, y_s, X_t)
    return X_s, y_s, X_t, y_t, X, y, domain


# ---- named scorers --------------------------------------------------------------


def test_named_scorer_is_made_right_by_make_da_scorer(shift):
    X_s, y_s, X_t, y_t, X, y, domain = shift
    # scikit-learn's "accuracy" predicts held-out source rows as target rows and
    # counts the masked target rows as errors: every candidate below 0.5
    named = GridSearchCV(the_pipeline(), GRID, scoring="accuracy", cv=3).fit(X, y)
    assert np.all(named.cv_results_["mean_test_score"] < 0.5)
    da = GridSearchCV(the_pipeline(), GRID, scoring=make_da_scorer("accuracy"),
                      cv=3).fit(X, y)
    # each held-out fold: its labelled rows, source rows mapped as source rows
    folds = StratifiedKFold(3).split(X, y)
    for i, (train, test) in enumerate(folds):
        for j, aligner in enumerate(GRID["coral"]):
            pipe = the_pipeline(aligner).fit(X[train], y[train])
            source = test[y[test] != -1]
            expected = np.mean(pipe.predict(X[source], sample_domain=1) == y[source])
            assert da.cv_results_[f"split{i}_test_score"][j] == expected
    # the two are within a point: source labels cannot rank adaptations
    assert np.ptp(da.cv_results_["mean_test_score"]) < 0.01


def test_make_da_scorer_picks_coral_where_target_labels_are_known(shift):
    # the common search, with the target labels known (an evaluation, or a few
    # labelled target rows) and routed with sample_domain; folds keep both domains
    X_s, y_s, X_t, y_t, X, y, domain = shift
    X_eval, y_eval, _ = pack_domains(X_s, y_s, X_t, y_target=y_t)
    folds = list(StratifiedKFold(3).split(X, y))
    picked = {}
    with sklearn.config_context(enable_metadata_routing=True):
        for scoring in ("accuracy", make_da_scorer("accuracy")):
            search = GridSearchCV(the_pipeline(), GRID, scoring=scoring, cv=folds)
            search.fit(X_eval, y_eval, sample_domain=domain)
            picked[str(scoring)] = search.best_params_["coral"]
    assert picked["accuracy"] == "passthrough"        # the named scorer's choice
    assert isinstance(picked["make_da_scorer('accuracy')"], CORAL)
    # target accuracy of each: 0.824 (source only) and 0.970 (CORAL)
    for aligner, accuracy in (("passthrough", 0.824), (CORAL(), 0.970)):
        pipe = the_pipeline(aligner).fit(X, y)
        assert np.isclose(np.mean(pipe.predict(X_t) == y_t), accuracy)


def test_make_da_scorer_with_routing_off_and_on_and_weights(shift):
    X_s, y_s, X_t, y_t, X, y, domain = shift
    scorer = make_da_scorer("f1_macro")
    off = cross_val_score(the_pipeline(), X, y, scoring=scorer, cv=3)
    with sklearn.config_context(enable_metadata_routing=True):
        on = cross_val_score(the_pipeline(), X, y, scoring=scorer, cv=3,
                             params={"sample_domain": domain})
    assert np.allclose(off, on) and np.all(off > 0.9)
    assert "sample_domain" in get_routing_for_object(scorer).consumes(
        "score", ["sample_domain"])
    # weights reach the metric for the rows scored; a callable scorer works too
    pipe = the_pipeline().fit(X, y)
    w = np.random.RandomState(0).uniform(size=len(y))
    weighted = make_da_scorer("accuracy")(pipe, X, y, sample_weight=w)
    labelled = y != -1
    right = pipe.predict(X[labelled], sample_domain=1) == y[labelled]
    assert np.isclose(weighted, np.average(right, weights=w[labelled]))
    assert make_da_scorer(lambda est, X_, y_: est.predict(X_).mean())(
        pipe, X, y) == pipe.predict(X[labelled], sample_domain=1).mean()
    with pytest.raises(ValueError, match=re.escape(
        "scoring must be a scorer name, as scoring= takes (e.g. 'accuracy', "
        "'f1_macro', 'neg_mean_absolute_error'), or a callable; got 3."
    )):
        make_da_scorer(3)


def test_make_da_scorer_refuses_a_fold_it_cannot_read(shift):
    X_s, y_s, X_t, y_t, X, y, domain = shift
    pipe = the_pipeline().fit(X, y)
    scorer = make_da_scorer("accuracy")
    with pytest.raises(DomainSplitError, match=re.escape(
        "make_da_scorer('accuracy') got a label on every row and no "
        "sample_domain, so it cannot tell which domain the rows come from"
    )):
        scorer(pipe, X_t, y_t)
    assert scorer(pipe, X_t, y_t, sample_domain=-1) == np.mean(
        pipe.predict(X_t) == y_t)
    with pytest.raises(DomainSplitError, match=re.escape(
        "make_da_scorer('accuracy') found no labelled rows to score."
    )):
        scorer(pipe, X_t, np.full(len(X_t), -1))
    # a pipeline fitted without target rows: the domains change nothing
    plain = the_pipeline().fit(X_s, y_s)
    assert scorer(plain, X_s, y_s) == plain.score(X_s, y_s)


# ---- score without domains, weights, skada's flags ---------------------------------


def test_score_without_domains_is_refused_where_ambiguous(shift):
    X_s, y_s, X_t, y_t, X, y, domain = shift
    pipe = the_pipeline().fit(X, y)
    # skada's SupervisedScorer calls score(X_target, y_target): labelled target
    # rows without a domain used to be scored as source rows (0.892, not 0.970);
    # a DomainSplitError (not a ValueError), so that a search stops on it
    with pytest.raises(DomainSplitError, match=re.escape(
        "DAPipeline.score got a label on every row and no sample_domain, so it "
        "cannot tell which domain the rows come from: at fit a label marks a "
        "source row, at predict a row without a domain is a target row. In a "
        "search, split so that every fold keeps both domains: a classifier's "
        "default cv (StratifiedKFold on the masked y, where -1 is one more "
        "class) does, as do StratifiedKFold(shuffle=True) and skada's "
        "StratifiedDomainShuffleSplit; KFold on packed data does not. Called "
        "directly, pass sample_domain=-1 for labelled target rows "
        "(sample_domain=1 for source rows), or mask the unlabelled target rows "
        "in y (-1 for classes, NaN for regression)."
    )):
        pipe.score(X_t, y_t)
    assert pipe.score(X_t, y_t, sample_domain=-1) == np.mean(pipe.predict(X_t) == y_t)
    assert np.isclose(pipe.score(X_t, y_t, sample_domain=-1), 0.970)
    # the default score of a cross-validation fold keeps its meaning
    assert pipe.score(X, y) == pipe.score(X_s, y_s, sample_domain=1)


def test_score_takes_sample_weight_and_allow_source(shift):
    X_s, y_s, X_t, y_t, X, y, domain = shift
    pipe = the_pipeline().fit(X, y, sample_domain=domain)
    w = np.random.RandomState(1).uniform(size=len(X_s))
    right = pipe.predict(X_s, sample_domain=1) == y_s
    assert np.isclose(
        pipe.score(X_s, y_s, sample_weight=w, sample_domain=1, allow_source=True),
        np.average(right, weights=w),
    )
    assert get_routing_for_object(pipe).consumes(
        "score", ["sample_weight", "sample_domain", "allow_source"]
    ) == {"sample_weight", "sample_domain", "allow_source"}
    with pytest.raises(ValueError, match=re.escape(
        "score got source rows (sample_domain > 0) with allow_source=False."
    )):
        pipe.score(X_s, y_s, sample_domain=1, allow_source=False)


# ---- nested pipelines and routing by declared requests -----------------------------


NESTED = {
    "pipeline": lambda: make_da_pipeline(make_pipeline(StandardScaler(), CORAL()),
                                         LogisticRegression()),
    "column transformer": lambda: make_da_pipeline(
        StandardScaler(), make_column_transformer((CORAL(), list(range(10)))),
        LogisticRegression()),
    "feature union": lambda: make_da_pipeline(
        make_union(make_pipeline(StandardScaler(), CORAL())), LogisticRegression()),
}


@pytest.mark.parametrize("routing", [False, True], ids=["routing off", "routing on"])
@pytest.mark.parametrize("nested", NESTED)
def test_nested_aligner_adapts_like_the_flat_one(shift, nested, routing):
    X_s, y_s, X_t, y_t, X, y, domain = shift
    flat = the_pipeline().fit(X, y)
    with sklearn.config_context(enable_metadata_routing=routing):
        pipe = NESTED[nested]().fit(X, y)
        assert np.allclose(pipe.predict_proba(X_t), flat.predict_proba(X_t))
        assert np.allclose(pipe.predict_proba(X_s, sample_domain=1),
                           flat.predict_proba(X_s, sample_domain=1))
    assert np.isclose(np.mean(pipe.predict(X_t) == y_t), 0.970)   # not 0.824
    assert sklearn.get_config()["enable_metadata_routing"] is False


def test_aligner_in_a_plain_pipeline_warns_that_it_is_the_identity(shift):
    X_s, y_s, X_t, y_t, X, y, domain = shift
    with pytest.warns(UserWarning, match=re.escape(
        "CORAL.fit got y with 500 rows masked as unlabelled target rows (-1 or "
        "NaN) but no sample_domain, so it sees no target rows and is fitted as "
        "the identity. A scikit-learn Pipeline does not tell its steps the "
        "domains: build the pipeline with skxfer.adapt.make_da_pipeline"
    )):
        make_pipeline(StandardScaler(), CORAL(), LogisticRegression()).fit(X, y)
    with pytest.warns(UserWarning, match="SubspaceAlignment.fit got y with 3 rows"):
        SubspaceAlignment().fit(X[:10], np.r_[np.zeros(7), np.full(3, np.nan)])
    with warnings.catch_warnings():
        # the identity warning is a UserWarning; others (scipy deprecating an
        # option scikit-learn 1.6's lbfgs passes) are not this test's business
        warnings.simplefilter("error", UserWarning)
        CORAL().fit(X_s, y_s)                           # nothing masked
        CORAL().fit(X_s, np.where(y_s == 0, -1, 1))     # -1 a class: {-1, 1}
        the_pipeline().fit(X, y)                        # domains given


def test_steps_without_metadata_routing_still_fit(shift):
    # AdaBoostClassifier implements no metadata routing: it gets no domains
    X_s, y_s, X_t, y_t, X, y, domain = shift
    pipe = make_da_pipeline(StandardScaler(), CORAL(),
                            AdaBoostClassifier(n_estimators=5, random_state=0))
    pipe.fit(X, y)
    assert list(pipe.classes_) == [0, 1]
    assert make_da_scorer("accuracy")(pipe, X, y) == pipe.score(X, y)


class _AlignerWithoutRequest(BaseEstimator):
    def fit(self, X, y=None, sample_domain=None):
        return self

    def transform(self, X, sample_domain=None):
        return X


def test_a_step_that_takes_domains_without_declaring_them_is_refused(shift):
    X, y = shift[4:6]
    pipe = make_da_pipeline(_AlignerWithoutRequest(), LogisticRegression())
    with pytest.raises(ValueError, match=re.escape(
        "_AlignerWithoutRequest.fit takes sample_domain but does not declare "
        "whether it wants it, and DA pipelines pass it by declared metadata "
        "requests. Declare it on the class, __metadata_request__fit = "
        "{'sample_domain': True}, or call step.set_fit_request("
        "sample_domain=True) inside sklearn.config_context("
        "enable_metadata_routing=True)."
    )):
        pipe.fit(X, y)


# ---- one mask rule for every label kind ------------------------------------------


@pytest.mark.parametrize("kind", ["list", "int array", "object array", "pandas"])
def test_the_mask_reads_the_same_from_every_container(kind):
    pd = pytest.importorskip("pandas")
    labels = [0, 2, -1, 1, -1]
    y = {
        "list": labels,
        "int array": np.array(labels),
        "object array": np.array(labels, dtype=object),
        "pandas": pd.Series(labels),
    }[kind]
    domain, labelled = read_domains(y)
    assert domain.tolist() == [1, 1, -2, 1, -2]
    assert labelled.tolist() == [True, True, False, True, False]


def test_string_labels_with_a_minus_one_mask(shift):
    X_s, y_s, X_t, y_t, X, y, domain = shift
    names = np.array(["cat", "dog"], dtype=object)[y_s]
    as_list = list(names) + [-1] * len(X_t)      # np.asarray: '<U', -1 is '-1'
    with pytest.raises(ValueError, match=re.escape(
        "y holds the string '-1' (class names given with -1 for the unlabelled "
        "rows become strings, as do labels read from a CSV file), and '-1' may "
        "be a real class, e.g. a folder name. Encode the classes as integers"
    )):
        the_pipeline().fit(X, as_list)
    # an object array keeps -1 a number: fit and predict read it right (a
    # search cannot sort it; tests/test_adapt_review.py encodes the names)
    fitted = the_pipeline().fit(X, np.array(as_list, dtype=object))
    assert list(fitted.classes_) == ["cat", "dog"]
    assert np.mean(fitted.predict(X_t) == np.array(["cat", "dog"])[y_t]) > 0.95
    # a folder named '-1' is a class when the domains are given
    folders = np.where(y_s == 0, "-1", "7")
    pipe = the_pipeline().fit(X, np.r_[folders, folders[:len(X_t)]],
                              sample_domain=domain)
    assert list(pipe.classes_) == ["-1", "7"]


def test_a_real_class_minus_one_is_refused():
    X_s, y_s, X_t, _ = covariance_shift(1, n=200)
    relabelled = y_s - 1                               # classes -1 and 0
    with pytest.raises(ValueError, match=re.escape(
        "y_source holds the label -1 in 54 rows, which marks unlabelled target "
        "rows in domain adaptation: relabel the classes (e.g. "
        "sklearn.preprocessing.LabelEncoder) before packing."
    )):
        pack_domains(X_s, relabelled, X_t)
    # given domains: a source row marked -1 is not silently dropped
    X = np.vstack([X_s, X_t])
    domain = np.r_[np.ones(100, int), -2 * np.ones(100, int)]
    with pytest.raises(ValueError, match=re.escape(
        "y marks 54 source rows (sample_domain > 0) as unlabelled (-1): the mask "
        "is for unlabelled target rows. If -1 is a class, relabel the classes "
        "(e.g. sklearn.preprocessing.LabelEncoder); drop source rows without a "
        "label."
    )):
        the_pipeline().fit(X, np.r_[relabelled, relabelled], sample_domain=domain)


def test_labels_minus_one_and_one_are_refused():
    X_s, y_s, X_t, _ = covariance_shift(2, n=200)
    X = np.vstack([X_s, X_t])
    signs = np.where(np.r_[y_s, y_s] == 0, -1, 1)         # an SVM's {-1, +1}
    message = re.escape(
        "y holds only the labels -1 and 1: -1 marks unlabelled target rows, and "
        "cannot be told from a class -1 here. If -1 is a class, relabel the "
        "classes (e.g. sklearn.preprocessing.LabelEncoder) and mask unlabelled "
        "rows with -1, or give sample_domain (source > 0, target < 0)."
    )
    with pytest.raises(ValueError, match=message):
        the_pipeline().fit(X, signs)
    with pytest.raises(ValueError, match="negative labels besides the mask -1"):
        read_domains([-3, -1, 0, 2])


def test_integer_valued_regression_targets_are_masked_with_nan():
    X, y = make_regression(400, n_features=5, noise=1.0, random_state=0)
    y = np.round(y / 20.0)                 # whole numbers, as float (the advice)
    X_t = X[200:] * [2.0, 0.5, 1.0, 3.0, 1.0] + 1.0
    with pytest.raises(ValueError, match=re.escape(
        "y_source holds whole numbers stored as floats: are they classes or "
        "regression targets? Say which: pack_domains(..., task='classification') "
        "masks the unlabelled target rows with -1, task='regression' with NaN."
    )):
        pack_domains(X[:200], y[:200], X_t)
    X_all, y_all, _ = pack_domains(X[:200], y[:200], X_t, task="regression")
    assert np.isnan(y_all[200:]).all()
    pipe = make_da_pipeline(CORAL(), Ridge()).fit(X_all, y_all)
    assert pipe.named_steps_["coral"].mean_target_ is not None          # adapted
    source_only = make_da_pipeline(Ridge()).fit(X[:200], y[:200])
    assert np.allclose(pipe.named_steps_["ridge"].coef_.shape, (5,))
    assert not np.allclose(pipe.predict(X_t), source_only.predict(X_t))
    # integers with -1 for a regressor: a mask or a value?
    X_int, y_int, _ = pack_domains(X[:200], np.abs(y[:200]).astype(int), X_t)
    assert y_int.dtype.kind == "i" and y_int[-1] == -1     # packed as classes
    with pytest.raises(ValueError, match=re.escape(
        "y holds integers with -1 and the last step is a regressor, whose "
        "unlabelled rows are masked with NaN: is -1 a mask or a value?"
    )):
        make_da_pipeline(CORAL(), Ridge()).fit(X_int, y_int)


# ---- label-free selection ---------------------------------------------------------


@pytest.mark.parametrize("scoring", [CircularValidation(), PredictionEntropyScorer(),
                                     make_da_scorer("accuracy")], ids=repr)
def test_a_fold_without_target_rows_stops_the_search(shift, scoring):
    X_s, y_s, X_t, y_t, X, y, domain = shift
    # KFold on packed data: the first fold holds source rows only
    search = GridSearchCV(the_pipeline(), GRID, scoring=scoring, cv=KFold(3))
    with pytest.raises(DomainSplitError, match="keeps both domains"):
        search.fit(X, y)


def test_routing_recipe_with_unshuffled_folds_stops_the_search(shift):
    X_s, y_s, X_t, y_t, X, y, domain = shift
    X_eval, y_eval, _ = pack_domains(X_s, y_s, X_t, y_target=y_t)
    search = GridSearchCV(the_pipeline(), GRID, scoring=CircularValidation(),
                          cv=StratifiedKFold(3))
    with sklearn.config_context(enable_metadata_routing=True):
        with pytest.raises(DomainSplitError, match=re.escape(
            "CircularValidation found no target rows to score."
        )):
            search.fit(X_eval, y_eval, sample_domain=domain)


def test_circular_validation_takes_scorer_names(shift):
    X_s, y_s, X_t, y_t, X, y, domain = shift
    pipe = the_pipeline().fit(X, y)
    default = CircularValidation()(pipe, X, y)
    assert CircularValidation(source_scorer="balanced_accuracy")(pipe, X, y) == default
    f1 = CircularValidation(source_scorer="f1_macro")(pipe, X, y)
    assert 0.9 < f1 < 1 and f1 != default
    with pytest.raises(ValueError, match=re.escape(
        "The 'source_scorer' of CircularValidation must be a scorer name"
    )):
        CircularValidation(source_scorer=3)(pipe, X, y)
    # target rows all predicted as one class: the backward model predicts it too
    dummy = make_da_pipeline(CORAL(), DummyClassifier()).fit(X, y)
    assert CircularValidation()(dummy, X, y) == 0.5
    constant = np.full(len(y_s), dummy.predict(X_t[:1])[0])
    assert CircularValidation(source_scorer="f1_macro")(dummy, X, y) == f1_score(
        y_s, constant, average="macro")
    assert CircularValidation(source_scorer="roc_auc")(dummy, X, y) == 0.5


class _RoutedDA(ClassifierMixin, BaseEstimator):
    """A DA estimator whose fit takes ``**params`` and declares sample_domain."""

    __metadata_request__fit = {"sample_domain": True}
    __metadata_request__predict = {"sample_domain": True}

    def __init__(self, reg="auto"):
        self.reg = reg

    def fit(self, X, y, **params):
        self.pipe_ = the_pipeline(CORAL(self.reg)).fit(X, y, **params)
        self.classes_ = self.pipe_.classes_
        return self

    def predict(self, X, **params):
        return self.pipe_.predict(X, **params)


def test_circular_validation_on_an_estimator_that_routes_domains(shift):
    X_s, y_s, X_t, y_t, X, y, domain = shift
    routed = _RoutedDA().fit(X, y, sample_domain=domain)
    pipe = the_pipeline().fit(X, y)
    assert CircularValidation()(routed, X, y) == CircularValidation()(pipe, X, y)
    search = GridSearchCV(_RoutedDA(), {"reg": ["auto", 0.5]},
                          scoring=CircularValidation(), cv=3).fit(X, y)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))


# ---- numerics and corners -----------------------------------------------------------


def _skada_coral(X, domain):
    """skada's CORALAdapter(reg='auto') output, its formula written out."""

    def covariance(rows):
        scaler = StandardScaler().fit(rows)
        cov = ledoit_wolf(scaler.transform(rows))[0]
        return scaler.scale_[:, None] * cov * scaler.scale_[None, :]

    def power(cov, p):
        w, V = np.linalg.eigh(cov)
        return (V * w**p) @ V.T

    source, target = X[domain > 0], X[domain < 0]
    out = np.empty_like(X)
    out[domain > 0] = ((source - source.mean(0)) @ power(covariance(source), -0.5)
                       @ power(covariance(target), 0.5))
    out[domain < 0] = target - target.mean(0)
    return out


def test_coral_on_near_constant_pixels_matches_skada():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    source, target = train_test_split(np.arange(len(y)), test_size=0.5,
                                      stratify=y, random_state=0)
    # the target's blank pixels sit at 0.3: constant up to rounding
    X_all, _, domain = pack_domains(X[source], y[source], 0.3 + 0.4 * X[target])
    assert 0 < np.std(X_all[domain < 0], axis=0)[0] < 1e-14
    ours = CORAL().fit_transform(X_all, sample_domain=domain)
    assert np.abs(ours - _skada_coral(X_all, domain)).max() < 1e-8
    # both domains in the target's centred frame
    assert np.allclose(ours.mean(axis=0), 0.0)


def test_subspace_dimensions_beyond_the_data():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(21, 6))
    one_target_row = np.r_[np.ones(20, int), -1]
    with pytest.raises(ValueError, match=re.escape(
        "SubspaceAlignment needs target rows that vary to find a principal "
        "direction; the 1 target row(s) do not (give at least 2 distinct rows of "
        "each domain)."
    )):
        SubspaceAlignment().fit(X, sample_domain=one_target_row)
    three_target_rows = np.r_[np.ones(18, int), -np.ones(3, int)]
    with pytest.warns(DataDimensionalityWarning, match=re.escape(
        "n_components=5 is more than the data supports: the centred rows have "
        "rank 6 (source, 18 rows) and 2 (target, 3 rows); SubspaceAlignment "
        "keeps 2 directions."
    )):
        sa = SubspaceAlignment(n_components=5).fit(X, sample_domain=three_target_rows)
    assert sa.n_components_ == 2 and sa.transform(X).shape == (21, 2)
    default = SubspaceAlignment().fit(X, sample_domain=three_target_rows)
    assert default.n_components_ == 2


def test_passthrough_last_step_keeps_transform(shift):
    X = shift[4]
    domain = shift[6]
    pipe = make_da_pipeline(StandardScaler(), CORAL(), "passthrough")
    assert hasattr(pipe, "transform") and hasattr(pipe, "fit_transform")
    out = pipe.fit_transform(X, sample_domain=domain)
    expected = make_da_pipeline(StandardScaler(), CORAL()).fit_transform(
        X, sample_domain=domain)
    assert np.allclose(out, expected)
    assert np.allclose(pipe.transform(X, sample_domain=domain), expected)


def test_prediction_entropy_scale_against_skada(shift):
    X_s, y_s, X_t, y_t, X, y, domain = shift
    pipe = the_pipeline().fit(X, y)
    proba = pipe.predict_proba(X_t)
    skada_value = np.mean(proba * np.log(proba))      # skada: rows and classes
    ours = PredictionEntropyScorer()(pipe, X, y)
    assert np.isclose(ours, proba.shape[1] * skada_value)
    assert "times skada's" in PredictionEntropyScorer.__doc__


def test_coral_output_is_centred_so_a_classifier_converges_sooner(shift):
    X_s, y_s, X_t, y_t, X, y, domain = shift
    pipe = make_da_pipeline(CORAL(), LogisticRegression(max_iter=1000)).fit(X, y)
    mapped = pipe.named_steps_["coral"].transform(X, sample_domain=domain)
    assert np.allclose(mapped.mean(axis=0), 0.0)
    uncentred = mapped + pipe.named_steps_["coral"].mean_target_
    slow = LogisticRegression(max_iter=1000).fit(uncentred[:500], y_s)
    assert pipe.named_steps_["logisticregression"].n_iter_[0] < slow.n_iter_[0]


# ---- skada itself, in its own process ------------------------------------------------

SKADA_SCRIPT = r"""
import json, sys, warnings
import numpy as np
sys.path.insert(0, sys.argv[1])
from test_adapt_faults import covariance_shift, the_pipeline, _skada_coral
import skada
from skada import CORALAdapter, make_da_pipeline as skada_pipeline
from skada.metrics import (CircularValidation as SkadaCV, ImportanceWeightedScorer,
                           PredictionEntropyScorer as SkadaEntropy, SupervisedScorer)
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KernelDensity
from sklearn.preprocessing import StandardScaler
from skxfer.adapt import (CORAL, CircularValidation, DomainSplitError,
                          PredictionEntropyScorer, make_da_scorer, pack_domains)
warnings.simplefilter("ignore")
out = {}
X, y = load_digits(return_X_y=True)
s, t = train_test_split(np.arange(len(y)), test_size=0.5, stratify=y, random_state=0)
X_all, _, d = pack_domains(X[s] / 16, y[s], 0.3 + 0.4 * X[t] / 16)
theirs = CORALAdapter().fit_transform(X_all, sample_domain=d)
ours = CORAL().fit_transform(X_all, sample_domain=d)
out["coral"] = float(np.abs(ours - theirs).max())
out["coral_formula"] = float(np.abs(_skada_coral(X_all, d) - theirs).max())
X_s, y_s, X_t, y_t = covariance_shift(0)
X, y, d = pack_domains(X_s, y_s, X_t)
pipe = the_pipeline().fit(X, y, sample_domain=d)
try:
    SupervisedScorer()(pipe, X, y, sample_domain=d, target_labels=np.r_[y_s, y_t])
    out["supervised"] = "no error"
except DomainSplitError as err:
    out["supervised"] = str(err)
iw = ImportanceWeightedScorer()(pipe, X, y, sample_domain=d)
ws = KernelDensity().fit(X_s).score_samples(X_s)
wt = KernelDensity().fit(X_t).score_samples(X_s)
w = np.exp(wt - ws)
out["iw"] = [iw, pipe.score(X_s, y_s, sample_weight=w / w.sum(), sample_domain=1)]
k = len(pipe.classes_)
out["entropy"] = [k * SkadaEntropy()(pipe, X, y, sample_domain=d),
                  PredictionEntropyScorer()(pipe, X, y, sample_domain=d)]
sk = skada_pipeline(StandardScaler(), CORALAdapter(), LogisticRegression())
sk.fit(X, y, sample_domain=d)
out["circular_on_skada"] = [CircularValidation()(sk, X, y, sample_domain=d),
                            SkadaCV()(sk, X, y, sample_domain=d)]
out["circular_on_ours"] = [CircularValidation()(pipe, X, y, sample_domain=d),
                           SkadaCV()(pipe, X, y, sample_domain=d)]
y_true = np.r_[y_s, y_t]
pred = sk.predict(X, sample_domain=d, allow_source=True)
out["da_scorer_on_skada"] = [make_da_scorer("accuracy")(sk, X, y_true, sample_domain=d),
                             float(np.mean(pred == y_true))]
print(json.dumps(out))
"""


@pytest.mark.skipif(importlib.util.find_spec("skada") is None,
                    reason="skada is not installed")
def test_against_skada_in_its_own_process(tmp_path):
    tests = str(__import__("pathlib").Path(__file__).parent)
    done = subprocess.run([sys.executable, "-c", SKADA_SCRIPT, tests],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["coral"] < 1e-8 and out["coral_formula"] < 1e-8
    assert "sample_domain=-1" in out["supervised"]
    assert np.isclose(*out["iw"])
    assert np.isclose(*out["entropy"])
    assert np.isclose(*out["circular_on_skada"])
    assert np.isclose(*out["circular_on_ours"])
    assert np.isclose(*out["da_scorer_on_skada"])

