"""skxfer.adapt with skada, both ways: skada's splitters and scorers on a
DAPipeline, skxfer's scorers on a skada pipeline.

Every combination gives the right figure or a clear refusal, never a wrong
number. The figures are checked against a second computation that shares no
code with the combination under test: the same splitter and scorer on skada's
own pipeline (``StandardScaler``, ``CORALAdapter``, ``LogisticRegression``:
the same model, 3e-11 apart), the target labels the pipelines never see
(routed to the scorer only, as ``target_labels``), or the scorer's formula
written out on each fold's fitted model.

``import skada`` switches on scikit-learn's metadata routing for the whole
process: the ``skada`` fixture imports it and restores the setting after each
test, and the last test checks that it is off again. Without skada (or where
it cannot be imported) the tests are skipped.
"""

import importlib.util
import re
import warnings

import numpy as np
import pytest
import sklearn
from scipy.special import softmax
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.neighbors import KernelDensity
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from skxfer.adapt import (
    CORAL,
    CircularValidation,
    DomainSplitError,
    PredictionEntropyScorer,
    make_da_pipeline,
    make_da_scorer,
    pack_domains,
)

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("skada") is None, reason="skada is not installed"
)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with threadpool_limits(1):
        yield


@pytest.fixture
def skada():
    """skada, imported with scikit-learn's configuration restored afterwards."""
    saved = sklearn.get_config()
    try:
        module = pytest.importorskip("skada")  # turns metadata routing on
        import skada.datasets
        import skada.metrics
        import skada.model_selection  # noqa: F401
        with sklearn.config_context(enable_metadata_routing=True):
            yield module
    finally:
        sklearn.set_config(**saved)


# ---- data: one source and one target; or three domains packed for LODO ------------


def shifted(seed, n, scale):
    """Source rows of a problem, and target rows rescaled and offset."""
    X, y = make_classification(n, n_features=5, n_informative=3, n_redundant=1,
                               class_sep=1.5, random_state=seed)
    rng = np.random.RandomState(seed)
    return X, y, X * rng.uniform(*scale, 5) + rng.normal(0.0, 2.0, 5)


def two_domains():
    """(X, y masked, sample_domain, target labels): 100 source, 100 target rows
    (target accuracy: 0.57 source only, 0.97 with CORAL)."""
    X, y, moved = shifted(1, 200, (0.3, 3.0))
    X, y_masked, domain = pack_domains(X[:100], y[:100], moved[100:])
    return X, y_masked, domain, y


def lodo_domains(skada):
    """Three domains, each once as a source (k) and once as a target (-k), as
    skada's ``DomainAwareDataset.pack_lodo`` lays them out."""
    domains = []
    for k, scale in enumerate([(1.0, 1.0), (0.3, 3.0), (0.5, 2.0)]):
        X, y, moved = shifted(k, 80, scale)
        domains.append((X if k == 0 else moved, y, f"domain{k}"))
    dataset = skada.datasets.DomainAwareDataset(domains)
    X, y_masked, domain = dataset.pack_lodo(return_X_y=None, return_type="array")
    names = list(dataset.domain_names_)
    _, y, same = dataset.pack(as_sources=names, as_targets=names,
                              mask_target_labels=False, return_type="array")
    assert np.array_equal(same, domain)
    return X, y_masked, domain, y


def pipelines(skada):
    """skxfer's DA pipeline and skada's, the same model."""
    ours = make_da_pipeline(StandardScaler(), CORAL(), LogisticRegression())
    theirs = skada.make_da_pipeline(StandardScaler(), skada.CORALAdapter(),
                                    LogisticRegression())
    return ours, theirs


SPLITTERS = ["SourceTargetShuffleSplit", "DomainShuffleSplit",
             "StratifiedDomainShuffleSplit", "LeaveOneDomainOut"]


def split_and_data(skada, name):
    if name == "LeaveOneDomainOut":
        cv = skada.model_selection.LeaveOneDomainOut(
            max_n_splits=3, test_size=0.3, random_state=0)
        return cv, lodo_domains(skada)
    cv = getattr(skada.model_selection, name)(n_splits=2, test_size=0.3,
                                             random_state=0)
    return cv, two_domains()


def run(estimator, data, cv, scoring, y=None, **routed):
    """cross_validate with sample_domain (and ``routed``) routed; raises."""
    X, y_masked, domain, _ = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skada's own warnings (one class left...)
        return cross_validate(
            estimator, X, y_masked if y is None else y, cv=cv, scoring=scoring,
            params={"sample_domain": domain, **routed}, error_score="raise",
            return_estimator=True, return_indices=True,
        )


def folds(result, data):
    """Each fold's fitted estimator and its held-out rows."""
    X, y_masked, domain, y = data
    for estimator, test in zip(result["estimator"], result["indices"]["test"],
                               strict=True):
        yield estimator, X[test], y_masked[test], domain[test], y[test]


def predict(estimator, method, X, domain):
    """Predictions in domains, from skxfer's pipeline or skada's."""
    params = {"sample_domain": domain}
    if not hasattr(estimator, "steps_"):
        params["allow_source"] = True  # skada's adapters refuse source rows else
    return getattr(estimator, method)(X, **params)


# ---- skada's scorers on a DAPipeline ----------------------------------------------

SKADA_SCORERS = ["SupervisedScorer", "ImportanceWeightedScorer",
                 "PredictionEntropyScorer", "SoftNeighborhoodDensity",
                 "CircularValidation", "MixValScorer"]


def skada_scorer(skada, name):
    if name == "MixValScorer":
        return skada.metrics.MixValScorer(random_state=0)
    return getattr(skada.metrics, name)()


def by_hand(name, estimator, X, y_masked, domain, y):
    """What skada's scorer ``name`` computes, written out on one fold."""
    target = domain < 0
    if name == "ImportanceWeightedScorer":
        # source accuracy, each source row weighted by p_target(x) / p_source(x)
        source = ~target
        log_ws = KernelDensity().fit(X[source]).score_samples(X[source])
        log_wt = KernelDensity().fit(X[target]).score_samples(X[source])
        weights = np.exp(log_wt - log_ws)
        right = predict(estimator, "predict", X[source], domain[source]) == y[source]
        return np.sum(weights * right) / np.sum(weights)
    if name == "MixValScorer":
        # accuracy, as target rows, on mixes of target rows (alpha 0.55) labelled
        # with the first row's prediction; pairs predicted alike and unalike
        X_t = X[target]
        pairs = np.random.RandomState(0).permutation(len(X_t))
        labels = predict(estimator, "predict", X_t, domain[target])
        mixed = 0.55 * X_t + 0.45 * X_t[pairs]
        ice = []
        for rows in (labels == labels[pairs], labels != labels[pairs]):
            right = predict(estimator, "predict", mixed[rows], -1) == labels[rows]
            ice.append(np.mean(right) if rows.any() else np.nan)
        return np.nanmean(ice)
    proba = predict(estimator, "predict_proba", X[target], domain[target])
    if name == "PredictionEntropyScorer":
        # mean over target rows and classes of p log p
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.mean(np.where(proba > 0, proba * np.log(proba), 0.0))
    if name == "SoftNeighborhoodDensity":
        unit = proba / np.linalg.norm(proba, axis=1, keepdims=True)
        similarity = unit @ unit.T / 0.05
        np.fill_diagonal(similarity, -np.diag(similarity))
        p = softmax(similarity, axis=1)
        return np.mean(np.sum(-p * np.log(p), axis=1))
    raise AssertionError(name)


@pytest.mark.parametrize("scorer", SKADA_SCORERS)
@pytest.mark.parametrize("splitter", SPLITTERS)
def test_skada_scorer_on_a_da_pipeline(skada, splitter, scorer):
    cv, data = split_and_data(skada, splitter)
    ours, theirs = pipelines(skada)
    target_labels = data[3]
    routed = {"target_labels": target_labels} if scorer == "SupervisedScorer" else {}
    if scorer == "ImportanceWeightedScorer":
        # skada's pipeline needs its classifier to request weights
        theirs = skada.make_da_pipeline(
            StandardScaler(), skada.CORALAdapter(),
            LogisticRegression().set_score_request(sample_weight=True))
    reference = run(theirs, data, cv, skada_scorer(skada, scorer), **routed)
    if scorer == "SupervisedScorer":
        # it calls score(X_target, y_target) without domains: refused, with the
        # fix; a DomainSplitError, so that a search stops rather than score NaN
        with pytest.raises(DomainSplitError, match=re.escape(
            "give it scoring=skxfer.adapt.make_da_scorer('accuracy')"
        )):
            run(ours, data, cv, skada_scorer(skada, scorer), **routed)
        # ... the fix: the same figure as skada's pipeline, the target accuracy
        fixed = skada.metrics.SupervisedScorer(make_da_scorer("accuracy"))
        result = run(ours, data, cv, fixed, **routed)
        expected = [np.mean(est.predict(X[domain < 0]) == y[domain < 0])
                    for est, X, _, domain, y in folds(result, data)]
        np.testing.assert_allclose(result["test_score"], expected, rtol=0, atol=1e-12)
    else:
        result = run(ours, data, cv, skada_scorer(skada, scorer))
        if scorer == "CircularValidation":
            # skxfer's own implementation of circular validation
            expected = run(ours, data, cv, CircularValidation())["test_score"]
        else:
            expected = [by_hand(scorer, *fold) for fold in folds(result, data)]
        np.testing.assert_allclose(result["test_score"], expected, rtol=1e-7)
    assert np.all(np.isfinite(result["test_score"]))
    np.testing.assert_allclose(result["test_score"], reference["test_score"],
                               rtol=1e-6, atol=1e-9)


# ---- skxfer's scorers on a skada pipeline -----------------------------------------

SKXFER_SCORERS = ["CircularValidation", "PredictionEntropyScorer", "make_da_scorer"]


@pytest.mark.parametrize("scorer", SKXFER_SCORERS)
@pytest.mark.parametrize("splitter", SPLITTERS)
def test_skxfer_scorer_on_a_skada_pipeline(skada, splitter, scorer):
    cv, data = split_and_data(skada, splitter)
    ours, theirs = pipelines(skada)
    X, y_masked, domain, y = data
    # the folds of the masked y (a stratified splitter splits on y)
    cv = list(cv.split(X, y_masked, sample_domain=domain))
    if scorer == "make_da_scorer":
        # target labels in y, domains routed: every held-out row is scored, each
        # in its own domain; neither pipeline trains on the target labels
        scoring, y_given = make_da_scorer("accuracy"), y
    else:
        scoring = CircularValidation() if scorer == "CircularValidation" else (
            PredictionEntropyScorer())
        y_given = y_masked
    result = run(theirs, data, cv, scoring, y=y_given)
    assert np.all(np.isfinite(result["test_score"]))
    if scorer == "make_da_scorer":
        expected = [np.mean(predict(est, "predict", X, domain) == y)
                    for est, X, _, domain, y in folds(result, data)]
        blind = run(theirs, data, cv, scoring)  # the same folds, target rows masked
        for est, est_blind in zip(result["estimator"], blind["estimator"],
                                  strict=True):
            assert np.array_equal(predict(est, "predict", X, domain),
                                  predict(est_blind, "predict", X, domain))
    elif scorer == "PredictionEntropyScorer":
        expected = []
        for est, X, _, domain, _ in folds(result, data):
            proba = predict(est, "predict_proba", X[domain < 0], domain[domain < 0])
            with np.errstate(divide="ignore", invalid="ignore"):
                plogp = np.where(proba > 0, proba * np.log(proba), 0.0)
            expected.append(np.mean(plogp.sum(axis=1)))
    else:
        # skada's own implementation of circular validation, on the same pipeline
        expected = run(theirs, data, cv, skada.metrics.CircularValidation())[
            "test_score"]
    np.testing.assert_allclose(result["test_score"], expected, rtol=1e-7, atol=1e-12)
    # and on skxfer's pipeline, the same model: the same figures
    np.testing.assert_allclose(run(ours, data, cv, scoring, y=y_given)["test_score"],
                               result["test_score"], rtol=1e-6, atol=1e-9)


# ---- what does not combine, and a search ------------------------------------------


@pytest.mark.parametrize("scorer", ["DeepEmbeddedValidation", "MaNoScorer"])
def test_skada_scorers_for_sklearn_pipelines_are_refused_not_wrong(skada, scorer):
    # both take a scikit-learn Pipeline (or skada's torch models, by module_)
    X, y_masked, domain, _ = two_domains()
    ours, _ = pipelines(skada)
    fitted = ours.fit(X, y_masked, sample_domain=domain)
    with pytest.raises(AttributeError, match="'DAPipeline' object has no attribute "
                                             "'module_'"):
        getattr(skada.metrics, scorer)()(fitted, X, y_masked, sample_domain=domain)
    # in a cross-validation: NaN and scikit-learn's warning, never a number
    cv = skada.model_selection.DomainShuffleSplit(n_splits=2, test_size=0.3,
                                                  random_state=0)
    with pytest.warns(UserWarning, match="Scoring failed"):
        scores = cross_validate(ours, X, y_masked, cv=cv,
                                scoring=getattr(skada.metrics, scorer)(),
                                params={"sample_domain": domain})
    assert np.all(np.isnan(scores["test_score"]))


def test_grid_search_with_skada_splitter_and_target_labels_picks_coral(skada):
    X, y_masked, domain, y = two_domains()
    ours, _ = pipelines(skada)
    cv = skada.model_selection.StratifiedDomainShuffleSplit(
        n_splits=2, test_size=0.3, random_state=0)
    grid = {"coral": ["passthrough", CORAL()]}
    search = GridSearchCV(
        ours, grid, cv=cv, error_score="raise",
        scoring=skada.metrics.SupervisedScorer(make_da_scorer("accuracy")),
    ).fit(X, y_masked, sample_domain=domain, target_labels=y)
    # each candidate's figure: its mean target accuracy over the folds, by hand
    for i, params in enumerate(search.cv_results_["params"]):
        accuracies = []
        for train, test in cv.split(X, y_masked, domain):
            pipe = clone(ours).set_params(**params).fit(
                X[train], y_masked[train], sample_domain=domain[train])
            target = test[domain[test] < 0]
            accuracies.append(np.mean(pipe.predict(X[target]) == y[target]))
        assert np.isclose(search.cv_results_["mean_test_score"][i],
                          np.mean(accuracies), rtol=0, atol=1e-12)
    assert isinstance(search.best_params_["coral"], CORAL)
    scores = search.cv_results_["mean_test_score"]
    assert scores[1] > scores[0] + 0.05, scores


def test_routing_is_off_again_after_the_skada_tests():
    # the last test of this module: importing skada turned metadata routing on
    # for the process; the fixture restored it, so the rest of the suite runs in
    # scikit-learn's default mode
    assert sklearn.get_config()["enable_metadata_routing"] is False
