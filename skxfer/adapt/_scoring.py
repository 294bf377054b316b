"""Scoring DA estimators: named metrics made right, label-free selection.

:func:`make_da_scorer` (any scorer, each labelled row in its own domain),
:class:`PredictionEntropyScorer` and :class:`CircularValidation` (without
target labels); they raise :class:`DomainSplitError` (defined with the
convention in ``_domains``), which stops a search whose folds cannot be
scored.
"""

import inspect
from copy import deepcopy

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.metrics import balanced_accuracy_score, get_scorer, r2_score
from sklearn.utils import get_tags
from sklearn.utils.metadata_routing import MetadataRequest
from sklearn.utils.metaestimators import available_if

from ._domains import (
    SOURCE_DOMAIN,
    TARGET_DOMAIN,
    UNKNOWN_TARGET_DOMAIN,
    DomainSplitError,
    _ambiguous,
    _check_sample_domain,
    _masked_copy,
    _n_rows,
    _split_error,
    _take_rows,
    _task_of,
    read_domains,
)
from ._pipeline import _call, _domains_to_score, _requests_domain


class _DomainScorer:
    """What the scorers share: a metadata request for ``sample_domain``."""

    def _request(self):
        if "_metadata_request" not in self.__dict__:
            request = MetadataRequest(owner=type(self).__name__)
            request.score.add_request(param="sample_domain", alias=True)
            self._metadata_request = request
        return self._metadata_request

    def set_score_request(self, **requests):
        """Say which metadata the scorer gets under metadata routing.

        ``sample_domain`` is requested by default; works whether or not
        routing is enabled.

        Parameters
        ----------
        **requests : bool or str
            ``param=True`` (requested), ``False`` (not), or an alias.

        Returns
        -------
        self
        """
        for param, alias in requests.items():
            self._request().score.add_request(param=param, alias=alias)
        return self

    def get_metadata_routing(self):
        """The scorer's metadata requests (``sample_domain`` by default).

        Returns
        -------
        routing : MetadataRequest
        """
        return deepcopy(self._request())


class _InDomain:
    """A fitted estimator seen by a scorer: its predictions made in domains.

    scikit-learn's scorers call ``predict(X)`` (or ``predict_proba``,
    ``decision_function``) with the rows alone; this face passes each row's
    domain on to an estimator whose routing consumes ``sample_domain``. Every
    other attribute is the estimator's (a custom scorer may read
    ``named_steps_`` or ``coef_``).
    """

    def __init__(self, estimator, sample_domain):
        self.estimator = estimator
        self.sample_domain = sample_domain

    def __getattr__(self, name):
        if name.startswith("__") or name in ("estimator", "sample_domain"):
            raise AttributeError(name)  # unpickling, copying: not forwarded
        return getattr(self.estimator, name)

    def __sklearn_tags__(self):
        return get_tags(self.estimator)

    @property
    def classes_(self):
        return self.estimator.classes_

    def _response(self, method, X):
        return _call(self.estimator, method, X, sample_domain=self.sample_domain,
                     domain=_requests_domain(self.estimator, method))

    @available_if(lambda self: hasattr(self.estimator, "predict"))
    def predict(self, X):
        return self._response("predict", X)

    @available_if(lambda self: hasattr(self.estimator, "predict_proba"))
    def predict_proba(self, X):
        return self._response("predict_proba", X)

    @available_if(lambda self: hasattr(self.estimator, "predict_log_proba"))
    def predict_log_proba(self, X):
        return self._response("predict_log_proba", X)

    @available_if(lambda self: hasattr(self.estimator, "decision_function"))
    def decision_function(self, X):
        return self._response("decision_function", X)


class _Constant(ClassifierMixin, BaseEstimator):
    """Predicts one class everywhere (for a scorer, where a fit cannot run)."""

    def __init__(self, value=None, classes=None):
        self.value = value
        self.classes = classes

    @property
    def classes_(self):
        return np.asarray(self.classes)

    def predict(self, X):
        return np.full(_n_rows(X), self.value, dtype=np.asarray(self.classes).dtype)

    def predict_proba(self, X):
        proba = np.zeros((_n_rows(X), len(self.classes)))
        proba[:, list(self.classes).index(self.value)] = 1.0
        return proba


def _domains_matter(estimator):
    """Whether an estimator's predictions depend on ``sample_domain``."""
    if not _requests_domain(estimator, "predict"):
        return False
    return getattr(estimator, "_adapted", True)  # a DAPipeline knows its fit


def _as_scorer(scoring, name):
    if isinstance(scoring, str):
        return get_scorer(scoring)
    if callable(scoring):
        return scoring
    raise ValueError(
        f"{name} must be a scorer name, as scoring= takes (e.g. 'accuracy', "
        f"'f1_macro', 'neg_mean_absolute_error'), or a callable; got {scoring!r}."
    )


def _required_arguments(function):
    """How many positional arguments ``function`` needs (None: unknown)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    return sum(
        1 for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        and p.default is p.empty
    )


def _source_scoring(source_scorer, regression):
    """``CircularValidation``'s source scorer: ('metric', f) for
    ``f(y_true, y_pred)``, ('scorer', s) for ``s(estimator, X, y)``."""
    if source_scorer is None:
        return "metric", r2_score if regression else balanced_accuracy_score
    if isinstance(source_scorer, str):
        return "scorer", _as_scorer(
            source_scorer, "The 'source_scorer' of CircularValidation")
    if isinstance(source_scorer, _DomainScorer):
        return "scorer", source_scorer
    needed = _required_arguments(source_scorer) if callable(source_scorer) else None
    if needed == 2:
        return "metric", source_scorer
    if needed == 3:  # make_scorer's scorers, scorer(estimator, X, y) functions
        return "scorer", source_scorer
    raise ValueError(
        "The 'source_scorer' of CircularValidation must be a scorer name, as "
        "scoring= takes (e.g. 'accuracy', 'f1_macro', 'neg_mean_absolute_error'), "
        "a scorer scorer(estimator, X, y) (make_scorer, make_da_scorer) or a "
        f"metric metric(y_true, y_pred); got {source_scorer!r}."
    )


class _DAScorer(_DomainScorer):
    """A scorer for DA estimators: see :func:`make_da_scorer`."""

    def __init__(self, scoring):
        self.scoring = scoring
        self._scorer = _as_scorer(scoring, "scoring")

    def __call__(self, estimator, X, y, sample_weight=None, sample_domain=None):
        """Score the labelled rows of ``X``, each in its own domain's frame.

        Parameters
        ----------
        estimator : fitted estimator
            A :class:`DAPipeline`, skada's pipelines, or any estimator.
        X : array-like of shape (n_samples, ...)
            Rows to score.
        y : array-like of shape (n_samples,)
            True labels; masked rows (-1 / NaN) are skipped.
        sample_weight : array-like of shape (n_samples,), default=None
            Passed on, for the rows scored, to the underlying scorer (route it
            with ``set_score_request(sample_weight=True)``).
        sample_domain : array-like of shape (n_samples,) or int, default=None
            Domain of each row. None: read from the mask of ``y``.

        Returns
        -------
        score : float
        """
        who = f"make_da_scorer({self.scoring!r})"
        n_rows = _n_rows(X)
        y = np.asarray(y)
        if len(y) != n_rows:
            raise ValueError(f"y has {len(y)} entries but X has {n_rows} rows.")
        kwargs = {}
        if not _requests_domain(estimator, "predict"):
            # a plain estimator: no domains, no mask (-1 may be a class)
            if sample_weight is not None:
                kwargs["sample_weight"] = sample_weight
            return float(self._scorer(estimator, X, y, **kwargs))
        task = _task_of(estimator)
        sample_domain, labelled, ambiguous = _domains_to_score(
            y, sample_domain, task, _domains_matter(estimator)
        )
        if ambiguous:
            raise DomainSplitError(_ambiguous(who, task))
        if not labelled.any():
            raise _split_error(who, "labelled rows", task)
        rows = np.flatnonzero(labelled)
        domains = None if sample_domain is None else sample_domain[rows]
        if sample_weight is not None:
            kwargs["sample_weight"] = np.asarray(sample_weight)[rows]
        in_domain = _InDomain(estimator, domains)
        return float(self._scorer(in_domain, _take_rows(X, rows), y[rows], **kwargs))

    def __repr__(self):
        return f"make_da_scorer({self.scoring!r})"


def make_da_scorer(scoring):
    """A named (or any) scorer made right for domain adaptation.

    scikit-learn's scorers call ``predict(X)`` with the rows alone. On a
    :class:`DAPipeline` that is wrong twice: held-out source rows are
    predicted as target rows (unmapped), and masked target rows (-1) count as
    errors. The scorer returned here scores only the labelled rows, each in
    its own domain's frame: source rows predicted as source rows, labelled
    target rows as target rows. The domains come from ``sample_domain`` when
    it is routed (it is requested), otherwise from the mask of ``y`` by
    :func:`read_domains`'s rule, as the pipeline's ``fit`` reads them.

    Without routing, a held-out fold of the masked ``y`` has source labels
    only: the score is then the metric on held-out source rows in the
    adapted frame -- a sound guide to the classifier, a weak one to the
    adaptation (compare adaptations with :class:`CircularValidation`). With
    labelled target rows and ``sample_domain`` routed, they are scored as
    target rows. A fold with a label on every row and no ``sample_domain``
    is refused (source rows, or labelled target rows?), as ``DAPipeline.score``
    refuses it; a fold without labelled rows raises :class:`DomainSplitError`.

    On an estimator whose predictions take no domains (its routing does not
    consume ``sample_domain`` in ``predict``: a plain classifier) the scorer
    is the plain one: every row is scored, and -1 is an ordinary class there.

    Parameters
    ----------
    scoring : str or callable
        A scorer name, as ``scoring=`` takes (``'accuracy'``, ``'f1_macro'``,
        ``'roc_auc'``, ``'neg_mean_absolute_error'``...), or a callable
        ``scorer(estimator, X, y)``. A callable gets the labelled rows and a
        face of the fitted estimator whose ``predict``, ``predict_proba``,
        ``predict_log_proba`` and ``decision_function`` pass the rows'
        domains on; every other attribute is the estimator's own
        (``estimator.named_steps_``, ``estimator.classes_``).

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y, sample_weight=None, sample_domain=None)``,
        for ``scoring=`` in ``GridSearchCV``, ``cross_validate`` and
        ``cross_val_score``, with metadata routing on or off. It requests
        ``sample_domain``; ``scorer.set_score_request(sample_weight=True)``
        routes weights too.

    See Also
    --------
    CircularValidation : score adaptations without target labels.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.model_selection import GridSearchCV
    >>> from skxfer.adapt import CORAL, make_da_pipeline, make_da_scorer, pack_domains
    >>> X, y = make_classification(300, n_features=4, random_state=0)
    >>> X, y, _ = pack_domains(X[:150], y[:150], X[150:] * 3.0)
    >>> search = GridSearchCV(
    ...     make_da_pipeline(CORAL(), LogisticRegression()),
    ...     {"coral": ["passthrough", CORAL()]},
    ...     scoring=make_da_scorer("f1_macro"), cv=3,
    ... ).fit(X, y)
    >>> search.scorer_
    make_da_scorer('f1_macro')
    """
    return _DAScorer(scoring)


def _target_rows(X, y, sample_domain, who):
    """Target rows for an unsupervised scorer: sample_domain, else the y mask."""
    n_rows = _n_rows(X)
    sample_domain = _check_sample_domain(sample_domain, n_rows)
    if sample_domain is None and y is not None:
        y = np.asarray(y)
        if len(y) != n_rows:
            raise ValueError(f"y has {len(y)} entries but X has {n_rows} rows.")
        sample_domain, _ = read_domains(y, task="classification")
        if sample_domain is None:
            raise _split_error(who, "target rows", "classification")
    if sample_domain is None:
        return None, np.arange(n_rows)
    target = np.flatnonzero(sample_domain < 0)
    if not len(target):
        raise _split_error(who, "target rows", "classification")
    return sample_domain[target], target


class PredictionEntropyScorer(_DomainScorer):
    """Score without target labels: the (negative) entropy of the predictions.

    Mean Shannon entropy (in nats) of the predicted class probabilities on the
    target rows, negated so that higher is better, as ``GridSearchCV`` and
    ``cross_val_score`` expect (0 is the best possible score, ``-log(K)`` the
    worst with ``K`` classes). Skada's ``PredictionEntropyScorer`` (after
    Morerio et al., 2018) averages ``p log p`` over rows *and* classes: on
    the same predictions this score is ``K`` times skada's (both rank
    candidates alike when they predict the same classes).

    Use it as ``scoring=PredictionEntropyScorer()``. The target rows are
    those with ``sample_domain < 0`` when it is given (metadata routing),
    otherwise those masked in ``y`` (-1), otherwise every row; a fold without
    target rows raises :class:`DomainSplitError`.

    It needs ``predict_proba``: on a regressor, or a classifier without
    probabilities (``SVC()``), it raises a ``ValueError`` naming the fix. In
    a search that is scikit-learn's NaN score with a "Scoring failed"
    warning, as for any scorer a candidate cannot answer (a grid may mix
    ``SVC(probability=True)`` with ``SVC()``); use ``CircularValidation()``
    there.

    Limits: entropy measures confidence, not correctness. A model sure of
    the wrong class scores well, so does one that puts every target row in
    one class, and less regularised or overfitted classifiers look better.
    Compare candidates that differ in how they *adapt* (an aligner, its
    ``reg`` or ``n_components``, 'passthrough'), with the same classifier,
    and check the chosen model on a few labelled target rows when you can.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.model_selection import GridSearchCV
    >>> from skxfer.adapt import (
    ...     CORAL, PredictionEntropyScorer, make_da_pipeline, pack_domains)
    >>> X, y = make_classification(300, n_features=4, random_state=0)
    >>> X, y, _ = pack_domains(X[:150], y[:150], X[150:] * 3.0)
    >>> search = GridSearchCV(
    ...     make_da_pipeline(CORAL(), LogisticRegression()),
    ...     {"coral": ["passthrough", CORAL()]},
    ...     scoring=PredictionEntropyScorer(), cv=3,
    ... ).fit(X, y)
    >>> bool(search.best_score_ <= 0)
    True
    """

    def __call__(self, estimator, X, y=None, sample_domain=None):
        """Negative mean prediction entropy on the target rows of ``X``.

        Parameters
        ----------
        estimator : fitted estimator with ``predict_proba``
            A :class:`DAPipeline`, or any classifier.
        X : array-like of shape (n_samples, ...)
            Rows to score; only target rows count.
        y : array-like of shape (n_samples,), default=None
            Labels with the target rows masked (-1); used only to find the
            target rows when ``sample_domain`` is None.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            Target rows < 0.

        Returns
        -------
        score : float
            ``mean_rows(sum_k p_k log p_k)`` over target rows; <= 0.
        """
        if not hasattr(estimator, "predict_proba"):
            raise ValueError(
                "PredictionEntropyScorer needs an estimator with predict_proba; "
                f"{type(estimator).__name__} has none. It scores a classifier's "
                "predicted probabilities (e.g. LogisticRegression, or "
                "SVC(probability=True)); without them, or for a regressor, score "
                "with CircularValidation()."
            )
        domains, rows = _target_rows(X, y, sample_domain, "PredictionEntropyScorer")
        X_target = X if len(rows) == _n_rows(X) else _take_rows(X, rows)
        proba = _InDomain(estimator, domains).predict_proba(X_target)
        proba = np.clip(np.asarray(proba, dtype=np.float64), 0.0, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            plogp = np.where(proba > 0, proba * np.log(proba), 0.0)
        return float(np.mean(plogp.sum(axis=1)))

    def __repr__(self):
        return "PredictionEntropyScorer()"


class CircularValidation(_DomainScorer):
    """Score without target labels: can the target predictions teach back the
    source labels?

    Circular (reverse) validation, as in skada's ``CircularValidation``
    (Bruzzone and Marconcini, 2010): the fitted DA estimator labels the
    target rows; a clone is then fitted the other way round -- those
    predicted target labels as its labelled source, the true source rows as
    its unlabelled target -- and predicts the source rows. The score is the
    balanced accuracy (R^2 for regressors) of these predictions against the
    true source labels. An adaptation that keeps the classes apart in both
    directions scores high; one that collapses the target rows into a single
    class scores at chance, however confident it is.

    Use it as ``scoring=CircularValidation()`` in ``GridSearchCV`` or
    ``cross_validate``, on any estimator whose metadata routing consumes
    ``sample_domain`` in ``fit`` (a :class:`DAPipeline`, skada's pipelines).
    On a held-out fold the source rows are those with a label and
    ``sample_domain > 0`` (or, without ``sample_domain``, every labelled
    row) and the target rows those with ``sample_domain < 0`` (or masked in
    ``y``); each fold needs both, and a fold without raises
    :class:`DomainSplitError` (which stops the search: split with a
    classifier's default ``StratifiedKFold`` on the masked ``y``, which
    spreads the masked rows over the folds, not ``KFold`` on packed data).

    Limits: every score fits the estimator once more (on the held-out
    fold), doubling the cost of a search. It assumes the method works as
    well from target to source as from source to target, and a fold's
    backward fit sees only that fold's rows. It ranks adaptations; it is not
    an estimate of target accuracy.

    Parameters
    ----------
    source_scorer : str, callable or None, default=None
        How the backward predictions of the source rows are scored, higher
        is better: a scorer name, as ``scoring=`` takes (``'f1_macro'``,
        ``'neg_mean_absolute_error'``...), a scorer ``scorer(estimator, X,
        y)`` (``make_scorer(...)``, ``make_da_scorer(...)``, a function of
        three arguments), or a metric ``metric(y_true, y_pred)`` (a function
        of two arguments, e.g. ``f1_score``). None:
        ``balanced_accuracy_score`` for classifiers, ``r2_score`` for
        regressors.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.model_selection import GridSearchCV
    >>> from skxfer.adapt import (
    ...     CORAL, CircularValidation, make_da_pipeline, pack_domains)
    >>> X, y = make_classification(300, n_features=4, random_state=0)
    >>> X, y, _ = pack_domains(X[:150], y[:150], X[150:] * [3.0, 0.2, 1.0, 5.0])
    >>> search = GridSearchCV(
    ...     make_da_pipeline(CORAL(), LogisticRegression()),
    ...     {"coral": ["passthrough", CORAL()]},
    ...     scoring=CircularValidation(), cv=3,
    ... ).fit(X, y)
    >>> search.best_params_
    {'coral': CORAL()}
    """

    def __init__(self, source_scorer=None):
        self.source_scorer = source_scorer

    def __call__(self, estimator, X, y=None, sample_domain=None):
        """Circular-validation score of a fitted DA estimator on ``X``.

        Parameters
        ----------
        estimator : fitted DA estimator
            Its metadata routing must consume ``sample_domain`` in ``fit``
            (a :class:`DAPipeline`, skada's pipelines).
        X : array-like of shape (n_samples, ...)
            Source and target rows.
        y : array-like of shape (n_samples,)
            Source labels; target rows masked (-1 / NaN) or told apart by
            ``sample_domain``.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            Source rows > 0, target rows < 0.

        Returns
        -------
        score : float
            Higher is better.
        """
        if not _requests_domain(estimator, "fit"):
            raise ValueError(
                "CircularValidation refits the estimator with swapped domains, "
                "so its fit must consume sample_domain (by its metadata "
                "requests), as a DAPipeline's (make_da_pipeline) or skada's "
                f"pipelines' do; {type(estimator).__name__}.fit does not."
            )
        task = _task_of(estimator)
        if y is None:
            raise ValueError(
                "CircularValidation needs y: the labels of the source rows, "
                "with the target rows masked (-1 for classes, NaN for "
                "regression)."
            )
        n_rows = _n_rows(X)
        y = np.asarray(y)
        if len(y) != n_rows:
            raise ValueError(f"y has {len(y)} entries but X has {n_rows} rows.")
        domains, labelled = read_domains(y, sample_domain, task=task)
        if domains is None or not np.any(domains < 0):
            raise _split_error("CircularValidation", "target rows", task)
        source = np.flatnonzero((domains > 0) & labelled)
        target = np.flatnonzero(domains < 0)
        if not len(source):
            raise _split_error("CircularValidation", "labelled source rows", task)
        regression = task == "regression" or (task is None and y.dtype.kind == "f"
                                              and np.isnan(y).any())
        X_source, y_source = _take_rows(X, source), y[source]
        predicted = np.asarray(
            _InDomain(estimator, domains[target]).predict(_take_rows(X, target))
        )
        backward_target = np.full(len(source), UNKNOWN_TARGET_DOMAIN)
        if not regression and len(np.unique(predicted)) == 1:
            # one class cannot train a classifier; it would predict it everywhere
            classes = getattr(estimator, "classes_", None)
            if classes is None:  # e.g. skada's pipelines do not expose them
                classes = np.unique(np.r_[y_source, predicted[:1]])
            backward = _Constant(predicted[0], list(classes))
        else:
            # backward: the target rows, with their predicted labels, become the
            # source; the source rows become the (unlabelled) target
            rows = np.concatenate([target, source])
            y_back = _masked_copy(
                np.concatenate([predicted, y_source]),
                np.arange(len(target), len(rows)),
                "regression" if regression else "classification",
            )
            back_domains = np.r_[np.full(len(target), SOURCE_DOMAIN),
                                 np.full(len(source), TARGET_DOMAIN)]
            backward = clone(estimator)
            _call(backward, "fit", _take_rows(X, rows), y_back,
                  sample_domain=back_domains)
        kind, scorer = _source_scoring(self.source_scorer, regression)
        if kind == "metric":
            y_pred = _InDomain(backward, backward_target).predict(X_source)
            return float(scorer(y_source, y_pred))
        if isinstance(scorer, _DomainScorer):  # skxfer's: domains as metadata
            return float(scorer(backward, X_source, y_source,
                                sample_domain=backward_target))
        return float(scorer(_InDomain(backward, backward_target), X_source,
                            y_source))

    def __repr__(self):
        if self.source_scorer is None:
            return "CircularValidation()"
        return f"CircularValidation(source_scorer={self.source_scorer!r})"
