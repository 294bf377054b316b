"""Domain adaptation tried as an adversary would, second round: each case gave
a wrong number, a NaN search or a raw message, and has the behaviour that
replaced it.

- a pipeline (or meta-estimator) as the last step of a DA pipeline;
- labels: strings holding '-1', class names, missing values, NaN for
  classes, unsigned integers and booleans;
- folds a DA pipeline's own ``score`` cannot read, and the advice for them;
- fit metadata (``sample_weight``) routed to the steps, on and off;
- scorers on plain estimators, scorer objects in ``CircularValidation``,
  custom scorers that read the fitted model;
- aligners on degenerate domains, huge values, refused refits;
- the scikit-learn ``Pipeline`` API on a DA pipeline;
- the warning of an aligner in a plain ``Pipeline``.
"""

import io
import re
import warnings

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import UnsetMetadataPassedError
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import f1_score, make_scorer
from sklearn.model_selection import (
    GridSearchCV,
    StratifiedKFold,
    cross_val_score,
    cross_validate,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import LabelEncoder, StandardScaler
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


def _shift(X, seed):
    rng = np.random.RandomState(seed)
    return X * rng.uniform(0.3, 3.0, X.shape[1]) + rng.normal(0, 2.0, X.shape[1])


@pytest.fixture(scope="module")
def cls():
    """Two classes, 150 source and 150 shifted target rows, packed."""
    X, y = make_classification(300, n_features=5, n_informative=3, n_redundant=0,
                               random_state=0)
    X_s, y_s, X_t, y_t = X[:150], y[:150], _shift(X[150:], 0), y[150:]
    X_all, y_all, domain = pack_domains(X_s, y_s, X_t)
    return X_s, y_s, X_t, y_t, X_all, y_all, domain


@pytest.fixture(scope="module")
def reg():
    """A regression target, 150 source and 150 shifted target rows, packed."""
    X, y = make_regression(300, n_features=5, noise=5.0, random_state=0)
    X_s, y_s, X_t, y_t = X[:150], y[:150], _shift(X[150:], 0), y[150:]
    X_all, y_all, domain = pack_domains(X_s, y_s, X_t, task="regression")
    return X_s, y_s, X_t, y_t, X_all, y_all, domain


GRID = {"coral": ["passthrough", CORAL()]}


# ---- a pipeline or a meta-estimator as the last step ------------------------------


@pytest.mark.parametrize("routing", [False, True], ids=["routing off", "routing on"])
def test_a_pipeline_as_last_step_trains_its_estimator_on_labelled_source_rows(
        cls, reg, routing):
    X_s, y_s, X_t, y_t, X, y, domain = cls
    flat = make_da_pipeline(StandardScaler(), CORAL(), LogisticRegression()).fit(X, y)
    with sklearn.config_context(enable_metadata_routing=routing):
        nested = make_da_pipeline(
            StandardScaler(), make_pipeline(CORAL(), LogisticRegression())).fit(X, y)
    # it trained the classifier on every row, -1 a third class: 0.133 on target
    assert list(nested.classes_) == [0, 1]
    np.testing.assert_allclose(nested.predict_proba(X_t), flat.predict_proba(X_t))
    np.testing.assert_allclose(nested.predict_proba(X_s, sample_domain=1),
                               flat.predict_proba(X_s, sample_domain=1))
    assert nested.score(X, y) == flat.score(X, y)
    assert (make_da_scorer("accuracy")(nested, X, y)
            == make_da_scorer("accuracy")(flat, X, y))
    # the fitted last step is the user's pipeline, fitted: usable alone
    inner = nested.named_steps_["pipeline"]
    assert inner.named_steps["coral"].mean_target_ is not None
    assert list(inner.named_steps["logisticregression"].classes_) == [0, 1]
    # a DA pipeline as the last step reads the mask itself; rows keep their
    # domains through it (source rows were predicted as target rows)
    inner = make_da_pipeline(StandardScaler(), make_da_pipeline(
        CORAL(), LogisticRegression())).fit(X, y)
    np.testing.assert_allclose(inner.predict_proba(X_s, sample_domain=1),
                               flat.predict_proba(X_s, sample_domain=1))
    # the regressor form raised "Input y contains NaN"
    X_s, y_s, X_t, y_t, X, y, domain = reg
    flat = make_da_pipeline(CORAL(), Ridge()).fit(X, y)
    nested = make_da_pipeline(make_pipeline(CORAL(), Ridge())).fit(X, y)
    np.testing.assert_allclose(nested.predict(X_t), flat.predict(X_t))


def test_circular_validation_over_a_pipeline_last_step(cls):
    X, y = cls[4:6]
    folds = list(StratifiedKFold(3).split(X, y))
    scores = {}
    for name, pipe, grid in (
        ("flat", make_da_pipeline(StandardScaler(), CORAL(), LogisticRegression()),
         GRID),
        ("nested", make_da_pipeline(StandardScaler(),
                                    make_pipeline(CORAL(), LogisticRegression())),
         {"pipeline__coral": ["passthrough", CORAL()]}),
    ):
        search = GridSearchCV(pipe, grid, scoring=CircularValidation(), cv=folds)
        scores[name] = search.fit(X, y).cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores["nested"]))      # CORAL scored NaN
    np.testing.assert_allclose(scores["nested"], scores["flat"])


LAST_STEP_REFUSAL = (
    "passes sample_domain on to a step inside it, but fits its own estimator on "
    "every row it gets, so the unlabelled target rows would train it too (-1 as a "
    "class, NaN as a target). Put the aligner in a step of its own before it: "
    "make_da_pipeline(CORAL(), LogisticRegression()); a search goes around the "
    "whole DA pipeline: GridSearchCV(make_da_pipeline(CORAL(), "
    "LogisticRegression()), ...)."
)


@pytest.mark.parametrize("meta", [
    lambda: GridSearchCV(make_pipeline(CORAL(), LogisticRegression()),
                         {"logisticregression__C": [0.1, 1.0]}, cv=3),
    lambda: CalibratedClassifierCV(make_pipeline(CORAL(), LogisticRegression()),
                                   cv=3),
], ids=["GridSearchCV", "CalibratedClassifierCV"])
def test_a_meta_estimator_routing_domains_as_last_step_is_refused(cls, meta):
    X, y = cls[4:6]
    meta = meta()
    name = type(meta).__name__
    with pytest.raises(ValueError, match=re.escape(
        f"The last step {name.lower()!r} ({name}) " + LAST_STEP_REFUSAL
    )):
        make_da_pipeline(StandardScaler(), meta).fit(X, y)
    # the fix: the aligner a step of its own; the meta-estimator then trains on
    # the labelled source rows like any last step
    fixed = make_da_pipeline(StandardScaler(), CORAL(),
                             CalibratedClassifierCV(LogisticRegression(), cv=3))
    assert list(fixed.fit(X, y).classes_) == [0, 1]


# ---- labels -------------------------------------------------------------------------


def _strings_from_a_csv(y_s, n_target):
    pd = pytest.importorskip("pandas")
    csv = "label\n" + "\n".join(list(np.array(["cat", "dog"])[y_s])
                                + ["-1"] * n_target)
    return pd.read_csv(io.StringIO(csv))["label"]


STRING_REFUSAL = (
    "y holds the string '-1' (class names given with -1 for the unlabelled rows "
    "become strings, as do labels read from a CSV file), and '-1' may be a real "
    "class, e.g. a folder name. Encode the classes as integers and mask the "
    "unlabelled rows with the number -1: encoder = "
    "sklearn.preprocessing.LabelEncoder().fit(y_source), then "
    "pack_domains(X_source, encoder.transform(y_source), X_target); "
    "encoder.inverse_transform reads predictions back. Or give sample_domain "
    "(source > 0, target < 0)."
)


@pytest.mark.parametrize("container", ["read_csv", "string dtype", "categorical",
                                       "object array", "list"])
def test_strings_holding_minus_one_are_refused_in_every_container(cls, container):
    X_s, y_s, X_t, y_t, X, y, domain = cls
    from_csv = _strings_from_a_csv(y_s, len(X_t))
    y_str = {
        "read_csv": lambda: from_csv,
        "string dtype": lambda: from_csv.astype("string"),
        "categorical": lambda: from_csv.astype("category"),
        "object array": lambda: from_csv.to_numpy(dtype=object),
        "list": lambda: list(np.array(["cat", "dog"], dtype=object)[y_s])
        + [-1] * len(X_t),
    }[container]()
    pipe = make_da_pipeline(CORAL(), LogisticRegression())
    # '-1' was a third class: 99% of the target rows predicted '-1'
    with pytest.raises(ValueError, match=re.escape(STRING_REFUSAL)):
        pipe.fit(X, y_str)
    with pytest.raises(ValueError, match=re.escape(STRING_REFUSAL)):
        read_domains(y_str)
    # a folder named '-1' is a class when the domains are given, or beside the
    # number -1 in an object array
    folders = np.where(y_s == 0, "-1", "7").astype(object)
    assert list(pipe.fit(X, np.r_[folders, folders], sample_domain=domain)
                .classes_) == ["-1", "7"]
    assert list(pipe.fit(X, np.r_[folders, np.full(len(X_t), -1, dtype=object)])
                .classes_) == ["-1", "7"]


NAMES_REFUSAL = (
    "y_source holds class names: packed with the number -1 for the unlabelled "
    "target rows they would make a y that scikit-learn's cross-validation cannot "
    "read (its splitters sort the labels, and names do not sort with -1). Encode "
    "the classes first: encoder = sklearn.preprocessing.LabelEncoder().fit("
    "y_source); pack_domains(X_source, encoder.transform(y_source), X_target); "
    "encoder.inverse_transform(pipe.predict(X)) reads predictions back as names."
)


def test_class_names_are_encoded_before_packing_so_searches_run(cls):
    X_s, y_s, X_t, y_t = cls[:4]
    names = np.array(["cat", "dog"])[y_s]
    # the packed object array broke cross_val_score's default cv (TypeError:
    # '<' not supported between instances of 'int' and 'str')
    with pytest.raises(ValueError, match=re.escape(NAMES_REFUSAL)):
        pack_domains(X_s, names, X_t)
    encoder = LabelEncoder().fit(names)
    X, y, _ = pack_domains(X_s, encoder.transform(names), X_t)
    pipe = make_da_pipeline(CORAL(), LogisticRegression())
    for scoring in (None, make_da_scorer("accuracy"), CircularValidation()):
        assert np.all(np.isfinite(cross_val_score(pipe, X, y, cv=3,
                                                  scoring=scoring)))
    predicted = encoder.inverse_transform(pipe.fit(X, y).predict(X_t))
    assert np.mean(predicted == np.array(["cat", "dog"])[y_t]) > 0.6
    # labelled target rows given as names: nothing to mask, packed as they are
    packed = pack_domains(X_s, names, X_t, y_target=np.array(["cat", "dog"])[y_t])
    assert packed[1].tolist()[-1] in ("cat", "dog")


def test_unsigned_and_boolean_labels_in_pack_domains(cls):
    X_s, y_s, X_t, y_t = cls[:4]
    # uint8 (torchvision's MNIST targets) raised OverflowError
    X, y, _ = pack_domains(X_s, y_s.astype(np.uint8), X_t)
    assert y.dtype == np.int16 and y[-1] == -1
    assert list(make_da_pipeline(CORAL(), LogisticRegression()).fit(X, y)
                .classes_) == [0, 1]
    for dtype, widened in ((np.uint16, np.int32), (np.uint32, np.int64),
                           (np.uint64, np.int64)):
        assert pack_domains(X_s, y_s.astype(dtype), X_t)[1].dtype == widened
    # booleans became [True, False, -1] and then "Unknown label type"
    with pytest.raises(ValueError, match=re.escape(
        "y_source holds booleans, which cannot hold the mask -1 of the unlabelled "
        "target rows: give the classes as integers, y_source.astype(int) (False "
        "0, True 1)."
    )):
        pack_domains(X_s, y_s.astype(bool), X_t)


MISSING_REFUSAL = (
    "y holds 150 missing labels (None, NaN or pd.NA) among class names or other "
    "objects, and the mask of unlabelled target rows is the number -1 for classes "
    "(NaN for a float regression target). Encode the classes as integers "
    "(sklearn.preprocessing.LabelEncoder, fitted on the labelled rows) and mask "
    "the unlabelled rows with -1, as pack_domains does."
)


@pytest.mark.parametrize("missing", ["None", "pd.NA", "NaN from read_csv"])
def test_missing_labels_are_refused_naming_the_mask(cls, missing):
    pd = pytest.importorskip("pandas")
    X_s, y_s, X_t, y_t, X, y, domain = cls
    names = list(np.array(["cat", "dog"])[y_s])
    y_missing = {
        "None": lambda: np.array(names + [None] * len(X_t), dtype=object),
        "pd.NA": lambda: pd.Series(names + [pd.NA] * len(X_t), dtype=object),
        "NaN from read_csv": lambda: pd.read_csv(io.StringIO("row,label\n" + "\n".join(
            f"{i},{name}" for i, name in enumerate(names + [""] * len(X_t)))))["label"],
    }[missing]()
    # None: raw TypeError from sorting; pd.NA: "boolean value of NA is ambiguous"
    with pytest.raises(ValueError, match=re.escape(MISSING_REFUSAL)):
        make_da_pipeline(CORAL(), LogisticRegression()).fit(X, y_missing)


def test_nan_masked_classes_are_refused_so_cross_validation_runs(cls):
    X_s, y_s, X_t, y_t, X, y, domain = cls
    y_nan = np.r_[y_s.astype(float), np.full(len(X_t), np.nan)]
    pipe = make_da_pipeline(CORAL(), LogisticRegression())
    # fit accepted it; cross_val_score then failed: "Input y contains NaN"
    with pytest.raises(ValueError, match=re.escape(
        "y masks 150 rows with NaN, but the last step is a classifier, whose "
        "unlabelled rows are masked with -1 (scikit-learn's cross-validation "
        "refuses a classifier's y holding NaN). Mask them with -1: "
        "y = np.where(np.isnan(y), -1, y)."
    )):
        pipe.fit(X, y_nan)
    fixed = np.where(np.isnan(y_nan), -1, y_nan)
    scores = cross_val_score(pipe, X, fixed, cv=3, scoring=make_da_scorer("accuracy"))
    assert np.all(scores > 0.6)
    # NaN stays the regression mask, and a mask anywhere the task is not known
    assert read_domains(y_nan)[0].tolist() == domain.tolist()


# ---- folds that DAPipeline.score cannot read -----------------------------------------


def test_default_score_on_unreadable_folds_stops_the_search(cls, reg):
    # a regressor's default cv=3 on packed data: a fold of source rows only
    # (ambiguous), one of target rows only (nothing labelled); every candidate
    # scored NaN and the first won
    X_s, y_s, X_t, y_t, X, y, domain = reg
    search = GridSearchCV(make_da_pipeline(CORAL(), Ridge()), GRID, cv=3)
    with pytest.raises(DomainSplitError, match="keeps both domains") as err:
        search.fit(X, y)
    message = str(err.value)
    assert message.startswith("DAPipeline.score got a label on every row and no "
                              "sample_domain, so it cannot tell which domain the "
                              "rows come from")
    # the advice works for a regressor: no StratifiedKFold on the NaN-masked y
    assert "StratifiedKFold on the masked y" not in message
    advice = ("stratify the folds by domain, cv=list(StratifiedKFold(3, "
              "shuffle=True, random_state=0).split(X, sample_domain))")
    assert advice in message
    # ... and leads: the fold is the problem, not the call (it led with
    # "Pass sample_domain=-1")
    assert message.index(advice) < message.index("sample_domain=-1")
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, domain))
    search = GridSearchCV(make_da_pipeline(CORAL(), Ridge()), GRID, cv=folds)
    assert np.all(np.isfinite(search.fit(X, y).cv_results_["mean_test_score"]))
    # a fold without labelled rows stops the search too
    pipe = make_da_pipeline(CORAL(), Ridge()).fit(X, y)
    with pytest.raises(DomainSplitError, match=re.escape(
        "DAPipeline.score found no labelled rows to score."
    )):
        pipe.score(X_t, np.full(len(X_t), np.nan))
    # a classifier's message keeps its own advice
    X_s, y_s, X_t, y_t, X, y, domain = cls
    pipe = make_da_pipeline(CORAL(), LogisticRegression()).fit(X, y)
    with pytest.raises(DomainSplitError, match=re.escape(
        "a classifier's default cv (StratifiedKFold on the masked y, where -1 is "
        "one more class) does"
    )):
        pipe.score(X_t, y_t)


def test_split_advice_for_a_regressor_works_when_followed(reg):
    X_s, y_s, X_t, y_t, X, y, domain = reg
    pipe = make_da_pipeline(CORAL(), Ridge())
    with pytest.raises(DomainSplitError) as err:
        cross_val_score(pipe, X, y, cv=3, scoring=make_da_scorer("r2"))
    assert "StratifiedKFold(3, shuffle=True, random_state=0).split(X, " \
           "sample_domain)" in str(err.value)
    for split_on in (domain, np.isnan(y)):
        folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(
            X, split_on))
        assert np.all(np.isfinite(cross_val_score(pipe, X, y, cv=folds,
                                                  scoring=make_da_scorer("r2"))))


def test_prediction_entropy_without_probabilities_names_the_fix(reg):
    X, y = reg[4:6]
    pipe = make_da_pipeline(CORAL(), Ridge()).fit(X, y)
    with pytest.raises(ValueError, match=re.escape(
        "PredictionEntropyScorer needs an estimator with predict_proba; DAPipeline "
        "has none. It scores a classifier's predicted probabilities (e.g. "
        "LogisticRegression, or SVC(probability=True)); without them, or for a "
        "regressor, score with CircularValidation()."
    )):
        PredictionEntropyScorer()(pipe, X, y)


# ---- fit metadata --------------------------------------------------------------------


def _weights(y_s, n_target):
    return np.r_[np.where(y_s == 1, 10.0, 1.0), np.ones(n_target)]


def _weighted_by_hand(X_s, y_s, X_t, w_s):
    coral = CORAL().fit(np.vstack([X_s, X_t]), sample_domain=np.r_[
        np.ones(len(X_s), int), -2 * np.ones(len(X_t), int)])
    mapped = coral.transform(X_s, sample_domain=1)
    return LogisticRegression().fit(mapped, y_s, sample_weight=w_s).coef_


def test_fit_weights_reach_the_last_step_routing_on(cls):
    X_s, y_s, X_t, y_t, X, y, domain = cls
    w = _weights(y_s, len(X_t))
    with sklearn.config_context(enable_metadata_routing=True):
        lr = LogisticRegression().set_fit_request(sample_weight=True)
        pipe = make_da_pipeline(CORAL(), lr).fit(X, y, sample_weight=w)
        result = cross_validate(make_da_pipeline(CORAL(), lr), X, y, cv=3,
                                params={"sample_weight": w}, return_estimator=True)
        nested = make_da_pipeline(make_pipeline(CORAL(), lr)).fit(
            X, y, sample_weight=w)
    np.testing.assert_allclose(nested.predict_proba(X), pipe.predict_proba(X))
    # as in a Pipeline, a step that takes the weights must say whether it
    # wants them (they were dropped without a word); False weights the score
    with sklearn.config_context(enable_metadata_routing=True):
        with pytest.raises(UnsetMetadataPassedError, match=re.escape(
            "[sample_weight] are passed but are not explicitly set as requested "
            "or not requested for LogisticRegression.fit"
        )):
            make_da_pipeline(CORAL(), LogisticRegression()).fit(X, y, sample_weight=w)
        declined = LogisticRegression().set_fit_request(sample_weight=False)
        scores = cross_validate(make_da_pipeline(CORAL(), declined), X, y, cv=3,
                                params={"sample_weight": w}, error_score="raise")
    assert np.all(np.isfinite(scores["test_score"]))
    # the weights reached DAPipeline.score only: coef equal to the unweighted
    np.testing.assert_allclose(pipe.named_steps_["logisticregression"].coef_,
                               _weighted_by_hand(X_s, y_s, X_t, w[:150]))
    unweighted = make_da_pipeline(CORAL(), LogisticRegression()).fit(X, y)
    assert not np.allclose(pipe.named_steps_["logisticregression"].coef_,
                           unweighted.named_steps_["logisticregression"].coef_)
    folds = StratifiedKFold(3).split(X, y)
    for fitted, (train, _) in zip(result["estimator"], folds, strict=True):
        source = train[train < 150]
        np.testing.assert_allclose(
            fitted.named_steps_["logisticregression"].coef_,
            _weighted_by_hand(X[source], y[source], X[train[train >= 150]],
                              w[source]), rtol=1e-6)


def test_fit_weights_reach_the_last_step_routing_off(cls):
    X_s, y_s, X_t, y_t, X, y, domain = cls
    w = _weights(y_s, len(X_t))
    # TypeError: unexpected keyword argument 'logisticregression__sample_weight'
    pipe = make_da_pipeline(CORAL(), LogisticRegression())
    pipe.fit(X, y, logisticregression__sample_weight=w)
    np.testing.assert_allclose(pipe.named_steps_["logisticregression"].coef_,
                               _weighted_by_hand(X_s, y_s, X_t, w[:150]))
    scores = cross_val_score(pipe, X, y, cv=3,
                             params={"logisticregression__sample_weight": w})
    assert np.all(np.isfinite(scores))
    with pytest.raises(ValueError, match=re.escape(
        "DAPipeline.fit does not accept the sample_weight parameter. You can pass "
        "parameters to specific steps of your pipeline using the "
        "stepname__parameter format, e.g. "
        "`DAPipeline.fit(X, y, logisticregression__sample_weight=sample_weight)`, "
        "or enable metadata routing and request them "
        "(set_fit_request(sample_weight=True))."
    )):
        pipe.fit(X, y, sample_weight=w)
    with pytest.raises(ValueError, match=re.escape(
        "DAPipeline.fit got lr__sample_weight, but the pipeline has no step named "
        "'lr' (steps: 'coral', 'logisticregression')."
    )):
        pipe.fit(X, y, lr__sample_weight=w)
    # a pipeline as the last step takes them as a Pipeline does, one level down
    nested = make_da_pipeline(make_pipeline(CORAL(), LogisticRegression()))
    nested.fit(X, y, pipeline__logisticregression__sample_weight=w)
    np.testing.assert_allclose(nested.predict_proba(X), pipe.predict_proba(X))
    # weights of an intermediate step cover every row
    scaled = make_da_pipeline(StandardScaler(), CORAL(), LogisticRegression())
    scaled.fit(X, y, standardscaler__sample_weight=w)
    expected = StandardScaler().fit(X, sample_weight=w)
    np.testing.assert_allclose(scaled.named_steps_["standardscaler"].mean_,
                               expected.mean_)


# ---- scorers -------------------------------------------------------------------------


def test_make_da_scorer_on_a_plain_estimator_scores_every_row(cls):
    X_s, y_s = cls[:2]
    y = np.r_[y_s[:100], np.full(50, -1)]        # three real classes: -1, 0, 1
    lr = LogisticRegression().fit(X_s, y)
    # the rows of class -1 were dropped: 0.63 for a true accuracy of 0.52
    assert make_da_scorer("accuracy")(lr, X_s, y) == lr.score(X_s, y)
    w = np.linspace(0.5, 2.0, len(y))
    assert make_da_scorer("accuracy")(lr, X_s, y, sample_weight=w) == lr.score(
        X_s, y, sample_weight=w)


def test_circular_validation_takes_scorer_objects(cls):
    X, y = cls[4:6]
    pipe = make_da_pipeline(CORAL(), LogisticRegression()).fit(X, y)
    by_name = CircularValidation(source_scorer="f1")(pipe, X, y)
    # both were called as metric(y_true, y_pred): "missing 1 required argument"
    assert CircularValidation(source_scorer=make_scorer(f1_score))(pipe, X, y) \
        == by_name
    assert CircularValidation(source_scorer=make_da_scorer("f1"))(pipe, X, y) \
        == by_name
    assert CircularValidation(source_scorer=f1_score)(pipe, X, y) == by_name

    def my_metric(y_true, y_pred):
        return f1_score(y_true, y_pred)

    def my_scorer(estimator, X_, y_):
        return f1_score(y_, estimator.predict(X_))

    assert CircularValidation(source_scorer=my_metric)(pipe, X, y) == by_name
    assert CircularValidation(source_scorer=my_scorer)(pipe, X, y) == by_name
    with pytest.raises(ValueError, match=re.escape(
        "The 'source_scorer' of CircularValidation must be a scorer name, as "
        "scoring= takes (e.g. 'accuracy', 'f1_macro', 'neg_mean_absolute_error'), "
        "a scorer scorer(estimator, X, y) (make_scorer, make_da_scorer) or a "
        "metric metric(y_true, y_pred); got <function"
    )):
        CircularValidation(source_scorer=lambda a: 0.0)(pipe, X, y)
    # a search with a scorer object: finite, where every candidate was NaN
    folds = list(StratifiedKFold(3).split(X, y))
    search = GridSearchCV(make_da_pipeline(CORAL(), LogisticRegression()), GRID,
                          cv=folds, scoring=CircularValidation(make_scorer(f1_score)))
    assert np.all(np.isfinite(search.fit(X, y).cv_results_["mean_test_score"]))


def test_a_custom_scorer_reads_the_fitted_model(cls):
    X, y = cls[4:6]

    def sparsity(estimator, X_, y_):
        coef = estimator.named_steps_["logisticregression"].coef_
        return float((np.abs(coef) < 0.1).mean())

    pipe = make_da_pipeline(CORAL(), LogisticRegression())
    # "'_InDomain' object has no attribute 'named_steps_'"
    scores = cross_val_score(pipe, X, y, cv=3, scoring=make_da_scorer(sparsity),
                             error_score="raise")
    assert np.all((scores >= 0) & (scores <= 1))
    fitted = pipe.fit(X, y)
    assert make_da_scorer(sparsity)(fitted, X, y) == sparsity(fitted, X, y)


# ---- aligners ------------------------------------------------------------------------


def test_coral_refuses_a_domain_of_identical_rows():
    rng = np.random.RandomState(0)
    X_s, X_t = rng.normal(size=(50, 4)), rng.normal(size=(8, 4)) * 2 + 1
    # two identical target rows mapped every source row to 0
    X = np.vstack([X_s, X_t[:1], X_t[:1]])
    with pytest.raises(ValueError, match=re.escape(
        "CORAL needs at least 2 distinct rows of each domain to estimate a "
        "covariance; the 2 target rows are all the same."
    )):
        CORAL().fit(X, sample_domain=np.r_[np.ones(50, int), -2, -2])
    # identical source rows mapped a new source row to 2.5e158
    X = np.vstack([np.repeat(X_s[:1], 20, 0), X_t])
    with pytest.raises(ValueError, match=re.escape(
        "the 20 source rows are all the same."
    )):
        CORAL().fit(X, sample_domain=np.r_[np.ones(20, int), -2 * np.ones(8, int)])


@pytest.mark.parametrize("aligner", [CORAL(), CORAL(reg=0.3), CORAL(reg=0),
                                     SubspaceAlignment(3)], ids=repr)
@pytest.mark.parametrize("scale", [1e160, 1e-160])
def test_aligners_on_huge_and_tiny_values_scale_with_them(cls, aligner, scale):
    X, domain = cls[4], cls[6]
    # 1e160: the variances overflowed, every feature was "constant", NaN out;
    # SubspaceAlignment said the source rows do not vary
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        big = clone(aligner).fit(X * scale, sample_domain=domain)
        scaled = big.transform(X * scale, sample_domain=domain)
    plain = clone(aligner).fit_transform(X, sample_domain=domain)
    np.testing.assert_allclose(scaled / scale, plain, rtol=1e-9, atol=1e-9)
    # new rows of either domain too
    for sample_domain in (1, -1):
        np.testing.assert_allclose(
            big.transform(X[:5] * scale, sample_domain=sample_domain) / scale,
            clone(aligner).fit(X, sample_domain=domain).transform(
                X[:5], sample_domain=sample_domain), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("aligner", ["CORAL", "SubspaceAlignment"])
def test_a_refused_refit_leaves_the_aligner_as_it_was(aligner):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(60, 5))
    domain = np.r_[np.ones(30, int), -2 * np.ones(30, int)]
    if aligner == "CORAL":
        est = CORAL().fit(X, sample_domain=domain)
        refit = dict(X=X[:31, :3], sample_domain=np.r_[np.ones(30, int), -2])
    else:
        est = SubspaceAlignment(2).fit(X, sample_domain=domain)
        refit = dict(X=X[:, :3], sample_domain=domain)
    before = est.transform(X, sample_domain=domain)
    with pytest.raises(ValueError):
        if aligner == "SubspaceAlignment":
            est.set_params(n_components=4)
        est.fit(**refit)
    est.set_params(**({"n_components": 2} if aligner == "SubspaceAlignment" else {}))
    # n_features_in_ was 3 with statistics of 5 features: transform failed
    assert est.n_features_in_ == 5
    np.testing.assert_array_equal(est.transform(X, sample_domain=domain), before)


def test_a_plain_pipeline_warns_only_where_the_mask_is_plausible():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(100, 3))
    y = np.abs(rng.normal(size=100)) + 0.05
    y[:5] = -1.0                                 # real regression values
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        make_pipeline(CORAL(), Ridge()).fit(X, y)    # warned "5 rows masked"
    y[:5] = np.nan                               # the regression mask
    with pytest.warns(UserWarning, match="CORAL.fit got y with 5 rows") as record:
        with pytest.raises(ValueError, match="Input y contains NaN"):
            make_pipeline(CORAL(), Ridge()).fit(X, y)
    # at the caller's line, not inside skxfer or scikit-learn
    assert record[0].filename == __file__
    classes = np.r_[np.zeros(50, int), np.ones(45, int), np.full(5, -1)]
    with pytest.warns(UserWarning, match="CORAL.fit got y with 5 rows") as record:
        make_pipeline(CORAL(), LogisticRegression()).fit(X, classes)
    assert record[0].filename == __file__
    with pytest.warns(UserWarning) as record:
        CORAL().fit(X, classes)
    assert record[0].filename == __file__


# ---- the scikit-learn Pipeline API ---------------------------------------------------


def test_da_pipeline_has_the_pipeline_api(cls):
    pd = pytest.importorskip("pandas")
    X, y, domain = cls[4], cls[5], cls[6]
    pipe = make_da_pipeline(StandardScaler(), CORAL(), "passthrough")
    # before fit: the steps given
    assert len(pipe) == 3
    assert list(pipe.named_steps) == ["standardscaler", "coral", "passthrough"]
    assert pipe.named_steps["coral"] is pipe.steps[1][1] is pipe[1] is pipe["coral"]
    assert pipe.set_output(transform="pandas") is pipe
    out = pipe.fit_transform(X, sample_domain=domain)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["x0", "x1", "x2", "x3", "x4"]
    assert list(pipe.get_feature_names_out()) == list(out.columns)
    np.testing.assert_allclose(
        out.to_numpy(),
        make_da_pipeline(StandardScaler(), CORAL()).fit_transform(
            X, sample_domain=domain))
    # after fit: the fitted steps, as a Pipeline's
    assert pipe.named_steps["coral"] is pipe.named_steps_["coral"] is pipe[1]
    assert pipe.named_steps["coral"].mean_target_ is not None
    head = pipe[:2]
    assert len(head) == 2 and head.steps_[1][1] is pipe.steps_[1][1]
    np.testing.assert_allclose(head.transform(X, sample_domain=domain).to_numpy(),
                               out.to_numpy())
    with pytest.raises(ValueError, match="slicing only supports a step of 1"):
        pipe[::2]
    classifier = make_da_pipeline(StandardScaler(), LogisticRegression())
    with pytest.raises(AttributeError, match=re.escape(
        "Estimator logisticregression does not provide get_feature_names_out. Did "
        "you mean to call pipeline[:-1].get_feature_names_out()?"
    )):
        classifier.fit(X, y).get_feature_names_out()
    assert list(classifier[:-1].get_feature_names_out()) == [f"x{i}" for i in range(5)]
