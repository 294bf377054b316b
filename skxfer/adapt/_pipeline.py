"""The DA pipeline: aligners see every row, the last step the labelled source.

Steps get ``sample_domain`` by their declared metadata requests
(``get_routing_for_object``), never by their signatures; the rule of
``score`` without domains lives here and is shared with the scorers.
"""

from copy import deepcopy

import numpy as np
from sklearn import config_context, get_config
from sklearn.base import BaseEstimator, clone, is_classifier, is_regressor
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils import Bunch, get_tags
from sklearn.utils.metadata_routing import (
    MetadataRequest,
    MetadataRouter,
    MethodMapping,
    get_routing_for_object,
    process_routing,
)
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from ._domains import (
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


def _skipped(step):
    return step is None or (isinstance(step, str) and step == "passthrough")


def _requests_domain(step, method):
    """Whether ``step.method`` is to get ``sample_domain``: its declared request.

    Decided by scikit-learn's metadata routing (``get_routing_for_object``),
    whether or not routing is enabled, so a ``Pipeline``, ``ColumnTransformer``
    or ``FeatureUnion`` holding an aligner is seen to consume it. A step whose
    method takes ``sample_domain`` without declaring whether it wants it is
    refused, naming the declaration. An estimator that implements no
    metadata routing (scikit-learn's ``AdaBoostClassifier``) consumes none.
    """
    try:
        routing = get_routing_for_object(step)
    except NotImplementedError:
        return False
    if routing.consumes(method, ["sample_domain"]):
        return True
    if isinstance(routing, MetadataRequest):
        simple = ("fit", "transform") if method == "fit_transform" else (method,)
        for name in simple:
            request = getattr(routing, name, None)
            if request is not None and request.requests.get("sample_domain", 0) is None:
                owner = type(step).__name__
                raise ValueError(
                    f"{owner}.{name} takes sample_domain but does not declare "
                    "whether it wants it, and DA pipelines pass it by declared "
                    "metadata requests. Declare it on the class, "
                    f"__metadata_request__{name} = {{'sample_domain': True}}, or "
                    f"call step.set_{name}_request(sample_domain=True) inside "
                    "sklearn.config_context(enable_metadata_routing=True)."
                )
    return False


def _call(step, method, *args, sample_domain=None, domain=True, params=None):
    """``step.method(*args, **params)``, with ``sample_domain`` when ``domain``
    is true.

    A router (a scikit-learn ``Pipeline``, ``ColumnTransformer``, ...) passes
    metadata to its steps only with metadata routing enabled: it is called
    inside ``config_context(enable_metadata_routing=True)``, whatever the
    global setting, so a nested aligner gets its domains either way. A method
    that requests skada's ``allow_source`` gets ``allow_source=True``: the
    domains given are to be used as they are.
    """
    params = dict(params or {})
    if not domain or sample_domain is None:
        return getattr(step, method)(*args, **params)
    routing = get_routing_for_object(step)
    params["sample_domain"] = sample_domain
    if routing.consumes(method, ["allow_source"]):
        params["allow_source"] = True  # skada's estimators refuse source rows else
    if isinstance(routing, MetadataRouter):
        with config_context(enable_metadata_routing=True):
            return getattr(step, method)(*args, **params)
    return getattr(step, method)(*args, **params)


def _final_role(name, step):
    """How a DA pipeline fits its last estimator (a ``Pipeline`` opened up).

    'skip' ('passthrough'); 'rows': on the labelled source rows (it does not
    take domains: a classifier, a regressor, a transformer); 'all': on every
    row, with the domains, for an estimator that reads the mask itself (an
    aligner, a DA pipeline, skada's estimators and selectors, a
    ``ColumnTransformer`` of aligners). A meta-estimator that only passes the
    domains on to an aligner inside it (``GridSearchCV``,
    ``CalibratedClassifierCV`` around a pipeline) would train its estimator
    on the masked rows too: refused, naming the fix.
    """
    if _skipped(step):
        return "skip"
    if not _requests_domain(step, "fit"):
        return "rows"
    routing = get_routing_for_object(step)
    if isinstance(routing, MetadataRequest) or not (
        is_classifier(step) or is_regressor(step) or hasattr(step, "predict")
    ):
        return "all"
    for key, pair in routing:
        if key == "$self_request" and pair.router.consumes("fit", ["sample_domain"]):
            return "all"  # it asks for the domains itself (skada's selectors)
    raise ValueError(
        f"The last step {name!r} ({type(step).__name__}) passes sample_domain on "
        "to a step inside it, but fits its own estimator on every row it gets, "
        "so the unlabelled target rows would train it too (-1 as a class, NaN "
        "as a target). Put the aligner in a step of its own before it: "
        "make_da_pipeline(CORAL(), LogisticRegression()); a search goes around "
        "the whole DA pipeline: GridSearchCV(make_da_pipeline(CORAL(), "
        "LogisticRegression()), ...)."
    )


def _opened(name, step):
    """A last step with its ``Pipeline`` layers opened up: the transformers
    inside them, then the last estimator's name and the estimator."""
    chain = []
    while isinstance(step, Pipeline):
        chain += list(step.steps[:-1])
        name, step = step.steps[-1]
    return chain, name, step


def _step_params(owner, steps, params):
    """Fit metadata for each step, ``{name: {method: {param: value}}}``.

    With metadata routing enabled, by the steps' requests
    (``process_routing``); without, by ``<step name>__<param>`` names, as a
    scikit-learn ``Pipeline`` takes them.
    """
    if not params:
        return {}
    names = [name for name, step in steps if not _skipped(step)]
    if get_config().get("enable_metadata_routing", False):
        routed = process_routing(owner, "fit", **params)
        return {name: routed[name] for name in names if name in routed}
    who = type(owner).__name__
    by_step = {}
    for key, value in params.items():
        name, sep, param = key.partition("__")
        if not sep:
            last = names[-1] if names else "step"
            raise ValueError(
                f"{who}.fit does not accept the {key} parameter. You can pass "
                "parameters to specific steps of your pipeline using the "
                f"stepname__parameter format, e.g. `{who}.fit(X, y, "
                f"{last}__{key}={key})`, or enable metadata routing and request "
                f"them (set_fit_request({key}=True))."
            )
        if name not in names:
            listed = ", ".join(repr(n) for n in names)
            raise ValueError(
                f"{who}.fit got {key}, but the pipeline has no step named "
                f"{name!r} (steps: {listed})."
            )
        by_step.setdefault(name, {})[param] = value
    return {name: {"fit": p, "fit_transform": p} for name, p in by_step.items()}


def _rows_of(params, rows, n_rows):
    """The entries of ``params`` that hold one value per row, at ``rows``."""
    return {
        key: _take_rows(value, rows)
        if hasattr(value, "__len__") and not isinstance(value, (str, bytes, dict))
        and _n_rows(value) == n_rows else value
        for key, value in params.items()
    }


def _domains_to_score(y, sample_domain, task, domains_matter):
    """The rows to score and their domains, by the one rule of ``score``.

    Returns ``(sample_domain, labelled, ambiguous)``: the domains (None: score
    without domains), the labelled rows, and whether the call is ambiguous (a
    label on every row, no ``sample_domain``, and an estimator for which the
    domains matter), which callers refuse.
    """
    sample_domain, labelled = read_domains(y, sample_domain, task=task)
    ambiguous = sample_domain is None and labelled.all() and domains_matter
    return sample_domain, labelled, ambiguous


def _final_has(attr):
    def check(self):
        final = self.steps_[-1][1] if hasattr(self, "steps_") else self.steps[-1][1]
        if _skipped(final):
            return attr in ("transform", "fit_transform")
        return hasattr(final, attr)

    return check


class DAPipeline(BaseEstimator):
    """A pipeline for domain adaptation: aligners see all rows, the last step
    trains on the labelled source rows.

    A scikit-learn ``Pipeline`` cannot drop rows, so it would train its
    classifier on the target rows too (with the mask -1 as a class). Here the
    intermediate steps (scalers, feature extractors, aligners) are fitted on
    every row -- source and target -- and the last step only on the source
    rows that have a label. Build one with :func:`make_da_pipeline`.

    The last step's role is decided by what it is:

    - a classifier, regressor or transformer that takes no domains (a
      ``GridSearchCV`` or ``CalibratedClassifierCV`` around one included):
      fitted on the labelled source rows;
    - an estimator that asks for ``sample_domain`` itself and reads the mask
      (an aligner -- the pipeline is then a transformer --, a DA pipeline,
      skada's estimators): fitted on every row, with the domains;
    - a scikit-learn ``Pipeline`` is opened up: its transformers are fitted
      on every row like intermediate steps, its own last step by these rules,
      so ``make_da_pipeline(make_pipeline(CORAL(), LogisticRegression()))``
      is ``make_da_pipeline(CORAL(), LogisticRegression())``;
    - a meta-estimator that passes the domains on to an aligner inside it
      (``GridSearchCV(make_pipeline(CORAL(), LogisticRegression()))``) would
      train its estimator on the masked rows too: refused, naming the fix
      (the aligner in a step of its own; a search around the DA pipeline).

    Domains reach ``fit`` as ``sample_domain`` (source rows > 0, target rows
    < 0), or, without it, from the mask in ``y`` by :func:`read_domains`'s
    rule: rows labelled -1 (classes) or NaN (regressors) are unlabelled target
    rows, the others source rows. Target labels never train the last step.
    Steps whose declared metadata requests consume ``sample_domain`` (this
    module's aligners, skada's adapters, and a ``Pipeline`` or
    ``ColumnTransformer`` holding one) get it, with or without metadata
    routing enabled; the others get the rows alone. Without target rows, the
    aligners are the identity and the pipeline is an ordinary one.

    At prediction time rows without ``sample_domain`` are target rows
    (``predict(X, sample_domain=1)`` maps them as source rows).

    ``score`` evaluates the labelled rows of ``y``, each in its own domain.
    Without ``sample_domain`` the domains come from the mask of ``y``, as at
    ``fit``: when it masks rows, the labelled ones are source rows -- what a
    held-out fold holds in a cross-validation on the masked ``y``. A ``y``
    with a label on every row and no ``sample_domain`` is ambiguous (source
    rows, or labelled target rows as skada's ``SupervisedScorer`` passes
    them?): it is refused, naming ``sample_domain=-1``, unless the pipeline
    was fitted without target rows, where the domains change nothing. (Give
    skada's scorer ``SupervisedScorer(make_da_scorer("accuracy"))``: it then
    scores the target rows as target rows.)

    Scoring with a named scorer (``scoring="accuracy"``, ``"f1"``) is wrong on
    a DA pipeline: scikit-learn calls ``predict(X)`` without domains, so
    held-out source rows are not mapped and masked target rows count as
    errors. Use ``scoring=make_da_scorer("f1_macro")``, which scores the
    labelled rows each in its own domain, or ``scoring=CircularValidation()``
    without target labels.

    With ``sklearn.set_config(enable_metadata_routing=True)``,
    ``sample_domain`` passed to ``cross_validate`` (``params=``) or
    ``GridSearchCV.fit`` reaches ``fit`` and ``score`` (and this module's
    scorers): it is requested by default (``score`` requests
    ``sample_weight`` too), and ``set_fit_request`` / ``set_score_request``
    change that. Without routing, it reaches ``fit`` only. See the module's
    docstring for both ways. Fit metadata for the steps (``sample_weight``)
    is routed as a ``Pipeline`` routes it: by the steps' requests
    (``LogisticRegression().set_fit_request(sample_weight=True)``) with
    routing, as ``logisticregression__sample_weight=w`` without; the last
    step gets the values of the rows it trains on.

    It has a ``Pipeline``'s conveniences: ``named_steps``, ``len(pipe)``,
    ``pipe[-1]``, ``pipe["coral"]``, ``pipe[:-1]`` (a DA pipeline, fitted if
    ``pipe`` is), ``set_output`` and ``get_feature_names_out``.

    Parameters
    ----------
    steps : list of (str, estimator) tuples
        Transformers (or 'passthrough'), then a final estimator (or
        'passthrough'), as in ``sklearn.pipeline.Pipeline``. Steps are cloned
        at ``fit``; the fitted ones are in ``steps_``.

    Attributes
    ----------
    steps_ : list of (str, estimator) tuples
        The fitted steps.
    named_steps_ : Bunch
        The fitted steps by name.
    classes_ : ndarray of shape (n_classes,)
        The classes of a final classifier (never the mask -1).
    n_features_in_ : int
        Number of features of the first step, when it records it.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names of the first step, when it records them.

    See Also
    --------
    make_da_pipeline : build a DAPipeline without naming the steps.
    make_da_scorer : a named scorer made right for DA pipelines.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skxfer.adapt import CORAL, make_da_pipeline, pack_domains
    >>> X, y = make_classification(400, n_features=5, random_state=0)
    >>> shift = np.diag([3.0, 0.3, 1.0, 2.0, 0.5])
    >>> X, y, sample_domain = pack_domains(X[:200], y[:200], X[200:] @ shift)
    >>> pipe = make_da_pipeline(CORAL(), LogisticRegression())
    >>> pipe = pipe.fit(X, y)              # domains read from y: -1 is target
    >>> pipe.classes_
    array([0, 1])
    >>> pipe.predict(X[200:]).shape        # rows without a domain: target
    (200,)
    """

    __metadata_request__fit = {"sample_domain": True}
    __metadata_request__score = {
        "sample_domain": True,
        "sample_weight": True,
        "allow_source": True,
    }
    __metadata_request__predict = {"sample_domain": True}
    __metadata_request__predict_proba = {"sample_domain": True}
    __metadata_request__predict_log_proba = {"sample_domain": True}
    __metadata_request__decision_function = {"sample_domain": True}
    __metadata_request__transform = {"sample_domain": True}

    def __init__(self, steps):
        self.steps = steps

    # -- parameters, as sklearn.pipeline.Pipeline names them

    def get_params(self, deep=True):
        """Parameters of the pipeline and, with ``deep``, of its steps.

        Parameters
        ----------
        deep : bool, default=True
            Also return each step (by name) and its parameters
            (``name__param``).

        Returns
        -------
        params : dict
        """
        out = super().get_params(deep=False)
        if not deep:
            return out
        try:
            named = dict(self.steps)
        except (TypeError, ValueError):
            return out  # not a list of (name, step) pairs: fit will say so
        out.update(named)
        for name, step in named.items():
            if hasattr(step, "get_params") and not isinstance(step, type):
                for key, value in step.get_params(deep=True).items():
                    out[f"{name}__{key}"] = value
        return out

    def set_params(self, **params):
        """Set parameters; a step name replaces that step.

        Parameters
        ----------
        **params : dict
            ``steps``, ``<step name>`` (a new step or 'passthrough') or
            ``<step name>__<param>``.

        Returns
        -------
        self : DAPipeline
        """
        if "steps" in params:
            self.steps = params.pop("steps")
        try:
            names = [name for name, _ in self.steps]
        except (TypeError, ValueError):
            names = []
        for key in list(params):
            if "__" not in key and key in names:
                new = params.pop(key)
                self.steps = [
                    (name, new if name == key else step) for name, step in self.steps
                ]
        if params:
            super().set_params(**params)
        return self

    def _validated_steps(self):
        steps = self.steps
        if not isinstance(steps, (list, tuple)) or not steps:
            raise ValueError(
                "The 'steps' parameter of DAPipeline must be a non-empty list of "
                f"(name, estimator) tuples. Got {steps!r} instead."
            )
        problems = []
        for item in steps:
            if not (
                isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
            ):
                problems.append(f"{item!r} is not a (name, estimator) tuple")
        if problems:
            raise ValueError(
                "The 'steps' parameter of DAPipeline must be a list of (name, "
                "estimator) tuples: " + "; ".join(problems) + "."
            )
        names = [name for name, _ in steps]
        if len(set(names)) != len(names):
            problems.append(f"step names must be unique, got {names!r}")
        problems += [f"step name {n!r} contains '__'" for n in names if "__" in n]
        problems += [f"step name {n!r} is a parameter of DAPipeline" for n in names
                     if n == "steps"]
        for name, step in steps[:-1]:
            if _skipped(step):
                continue
            if isinstance(step, type) or not (
                hasattr(step, "fit") and hasattr(step, "transform")
            ):
                problems.append(
                    f"step {name!r} must be a transformer (fit and transform) or "
                    f"'passthrough', got {step!r}"
                )
        name, final = steps[-1]
        if isinstance(final, type) or not (_skipped(final) or hasattr(final, "fit")):
            problems.append(
                f"the last step {name!r} must be an estimator (with fit) or "
                f"'passthrough', got {final!r}"
            )
        if problems:
            raise ValueError("Invalid DAPipeline steps: " + "; ".join(problems) + ".")
        return list(steps)

    # -- fitting

    def fit(self, X, y=None, sample_domain=None, **params):
        """Fit the steps: intermediate ones on all rows, the last on labelled
        source rows.

        A ``Pipeline`` as the last step is opened up: its transformers (an
        aligner among them) are fitted on every row, as intermediate steps,
        and its own last estimator on the labelled source rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Source and target rows (whatever the first step takes: features,
            images, file paths).
        y : array-like of shape (n_samples,), default=None
            Labels; unlabelled rows masked with -1 (classes) or NaN
            (regressors), read by :func:`read_domains`. Target rows' labels
            are never used for training.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            Source rows > 0, target rows < 0. None: read from the mask of
            ``y`` (masked rows are target rows, the others source rows).
        **params : dict
            Fit metadata for the steps, one value per row (the last step gets
            those of the rows it trains on). With metadata routing enabled, by
            the steps' requests (``set_fit_request(sample_weight=True)``);
            without, named ``<step name>__<param>``, as
            ``logisticregression__sample_weight=w``.

        Returns
        -------
        self : DAPipeline
        """
        steps = self._validated_steps()
        final_name, final = steps[-1]
        _, leaf_name, leaf = _opened(final_name, final)
        role = _final_role(leaf_name, leaf)
        task = _task_of(final)
        n_rows = _n_rows(X)
        if y is None:
            sample_domain, labelled = _check_sample_domain(sample_domain, n_rows), None
        else:
            y_arr = np.asarray(y)
            if len(y_arr) != n_rows:
                raise ValueError(
                    f"y has {len(y_arr)} entries but X has {n_rows} rows."
                )
            sample_domain, labelled = read_domains(y_arr, sample_domain, task=task)
        y_steps = y
        if sample_domain is not None and labelled is not None:
            hidden = (sample_domain < 0) & labelled
            if hidden.any():  # target labels never train anything
                y_steps = _masked_copy(y_arr, hidden, task)
        train = np.ones(n_rows, bool) if sample_domain is None else sample_domain > 0
        if labelled is not None and role == "rows":
            train &= labelled
            if not train.any():
                kind = "NaN" if task == "regression" else "-1"
                raise ValueError(
                    f"y has no labelled source rows to train the last step "
                    f"{leaf_name!r} on: all {n_rows} rows are target rows or "
                    f"masked as unlabelled ({kind})."
                )

        def fit_chain(chain, Xt, given):
            """Fit transformers in place on every row; the rows transformed."""
            for name, step in chain:
                if _skipped(step):
                    continue
                routed = given.get(name, {})
                if hasattr(step, "fit_transform"):
                    Xt = _call(step, "fit_transform", Xt, y_steps,
                               sample_domain=sample_domain,
                               domain=_requests_domain(step, "fit_transform"),
                               params=routed.get("fit_transform"))
                else:
                    _call(step, "fit", Xt, y_steps, sample_domain=sample_domain,
                          domain=_requests_domain(step, "fit"),
                          params=routed.get("fit"))
                    Xt = _call(step, "transform", Xt, sample_domain=sample_domain,
                               domain=_requests_domain(step, "transform"),
                               params=routed.get("transform"))
            return Xt

        fitted = [(name, step if _skipped(step) else clone(step))
                  for name, step in steps]
        given = _step_params(self, steps, params)
        Xt = fit_chain(fitted[:-1], X, given)
        name, step = fitted[-1]
        while isinstance(step, Pipeline):  # opened: its steps are ours (a clone)
            given = _step_params(step, step.steps,
                                 given.get(name, {}).get("fit", {}))
            Xt = fit_chain(step.steps[:-1], Xt, given)
            name, step = step.steps[-1]
        routed = given.get(name, {}).get("fit", {})
        if role == "all":
            _call(step, "fit", Xt, y_steps, sample_domain=sample_domain,
                  params=routed)
        elif role == "rows":
            rows = np.flatnonzero(train)
            if len(rows) < n_rows:
                Xt, routed = _take_rows(Xt, rows), _rows_of(routed, rows, n_rows)
            if len(rows) == n_rows:
                step.fit(Xt, y, **routed)
            elif y is None:
                step.fit(Xt, **routed)
            else:
                step.fit(Xt, y_arr[rows], **routed)
        self.steps_ = fitted
        self.named_steps_ = Bunch(**dict(fitted))
        self._adapted = sample_domain is not None and bool(np.any(sample_domain < 0))
        return self

    def __sklearn_is_fitted__(self):
        return hasattr(self, "steps_")

    def get_metadata_routing(self):
        """The pipeline's metadata requests and its steps' fit requests.

        The pipeline requests ``sample_domain`` (``fit``, ``score``, the
        predict methods, ``transform``) and ``sample_weight`` and
        ``allow_source`` in ``score`` itself; fit metadata that a step
        requests (``set_fit_request(sample_weight=True)``) is routed to it.

        Returns
        -------
        routing : MetadataRouter
        """
        router = MetadataRouter(owner=type(self).__name__).add_self_request(self)
        try:
            steps = self._validated_steps()
        except (TypeError, ValueError):
            return router  # invalid steps: fit raises the error that says what
        for i, (name, step) in enumerate(steps):
            try:
                if _skipped(step):
                    continue
                get_routing_for_object(step)
            except NotImplementedError:
                continue  # no metadata routing (AdaBoostClassifier): no metadata
            mapping = MethodMapping()
            if i == len(steps) - 1:
                callees = ("fit",)
            elif hasattr(step, "fit_transform"):
                callees = ("fit_transform",)
            else:
                callees = ("fit", "transform")
            for caller in ("fit", "fit_transform"):
                for callee in callees:
                    mapping.add(caller=caller, callee=callee)
            router.add(**{name: step}, method_mapping=mapping)
        return router

    # -- prediction

    def _through(self, X, sample_domain):
        """Rows through every fitted transformer (those of a ``Pipeline`` last
        step too): ``(Xt, last estimator, sample_domain)``."""
        check_is_fitted(self)
        chain, _, leaf = _opened(*self.steps_[-1])
        sample_domain = _check_sample_domain(sample_domain, _n_rows(X))
        Xt = X
        for _, step in self.steps_[:-1] + chain:
            if _skipped(step):
                continue
            Xt = _call(step, "transform", Xt, sample_domain=sample_domain,
                       domain=_requests_domain(step, "transform"))
        return Xt, leaf, sample_domain

    @property
    def _final(self):
        return self.steps_[-1][1]

    def _predict(self, method, X, sample_domain):
        Xt, leaf, sample_domain = self._through(X, sample_domain)
        return _call(leaf, method, Xt, sample_domain=sample_domain,
                     domain=_requests_domain(leaf, method))

    @available_if(_final_has("predict"))
    def predict(self, X, sample_domain=None):
        """Predict; rows without ``sample_domain`` are target rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Rows to predict.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            Domain of each row (source > 0 are mapped by the aligners).
            None: all target rows.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        return self._predict("predict", X, sample_domain)

    @available_if(_final_has("predict_proba"))
    def predict_proba(self, X, sample_domain=None):
        """Class probabilities; rows without ``sample_domain`` are target rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Rows to predict.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            Domain of each row. None: all target rows.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return self._predict("predict_proba", X, sample_domain)

    @available_if(_final_has("predict_log_proba"))
    def predict_log_proba(self, X, sample_domain=None):
        """Log of the class probabilities; rows without a domain are target rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Rows to predict.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            Domain of each row. None: all target rows.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        return self._predict("predict_log_proba", X, sample_domain)

    @available_if(_final_has("decision_function"))
    def decision_function(self, X, sample_domain=None):
        """Decision function; rows without ``sample_domain`` are target rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Rows to predict.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            Domain of each row. None: all target rows.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        return self._predict("decision_function", X, sample_domain)

    @available_if(_final_has("transform"))
    def transform(self, X, sample_domain=None):
        """Transform with every step; rows without a domain are target rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Rows to transform.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            Domain of each row. None: all target rows.

        Returns
        -------
        X_new : array-like of shape (n_samples, n_features_out)
        """
        Xt, leaf, sample_domain = self._through(X, sample_domain)
        if _skipped(leaf):
            return Xt
        return _call(leaf, "transform", Xt, sample_domain=sample_domain,
                     domain=_requests_domain(leaf, "transform"))

    @available_if(_final_has("transform"))
    def fit_transform(self, X, y=None, sample_domain=None, **params):
        """Fit, then transform the same rows: ``fit(...).transform(...)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Source and target rows.
        y : array-like of shape (n_samples,), default=None
            Labels, unlabelled rows masked; see :meth:`fit`.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            Source rows > 0, target rows < 0; None: read from the mask of
            ``y`` as in :meth:`fit`.
        **params : dict
            Fit metadata for the steps, as :meth:`fit` takes them.

        Returns
        -------
        X_new : array-like of shape (n_samples, n_features_out)
        """
        self.fit(X, y, sample_domain=sample_domain, **params)
        if sample_domain is None and y is not None:
            sample_domain, _ = read_domains(y, task=_task_of(self._final))
        return self.transform(X, sample_domain=sample_domain)

    @available_if(_final_has("score"))
    def score(self, X, y, sample_weight=None, sample_domain=None, *,
              allow_source=True):
        """The last step's score on the labelled rows, each in its domain.

        Without ``sample_domain`` the domains come from the mask of ``y``, as
        at :meth:`fit`: masked rows are skipped and the labelled rows are
        source rows. A label on every row with no ``sample_domain`` is refused
        (are they source rows, or labelled target rows?) unless the pipeline
        was fitted without target rows; say ``sample_domain=-1`` to score
        labelled target rows. That refusal, and rows with no label at all,
        raise :class:`DomainSplitError`: in a search they are folds that split
        the domains apart (``KFold`` on packed data), and the error stops the
        search, with advice for splitting, where a ``ValueError`` would score
        every candidate NaN.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Rows to score.
        y : array-like of shape (n_samples,)
            True labels; rows masked with -1 (classes) or NaN (regressors)
            are skipped.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the rows, passed on to the last step's ``score`` for
            the rows scored.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            Domain of each row: source > 0 (mapped by the aligners), target
            < 0. None: read from the mask of ``y``, as above.
        allow_source : bool, default=True
            False refuses source rows (skada passes this flag; it changes
            nothing else).

        Returns
        -------
        score : float
            Accuracy for classifiers, R^2 for regressors (the last step's
            ``score``).
        """
        check_is_fitted(self)
        n_rows = _n_rows(X)
        y_arr = np.asarray(y)
        if len(y_arr) != n_rows:
            raise ValueError(f"y has {len(y_arr)} entries but X has {n_rows} rows.")
        task = _task_of(self._final)
        sample_domain, labelled, ambiguous = _domains_to_score(
            y_arr, sample_domain, task, getattr(self, "_adapted", True),
        )
        if ambiguous:
            raise DomainSplitError(
                _ambiguous("DAPipeline.score", task) + " skada's SupervisedScorer "
                "calls score so, with the target labels and without their "
                "domains: give it scoring=skxfer.adapt.make_da_scorer('accuracy') "
                "(or any other metric), which scores the rows in the domains it "
                "passes."
            )
        if not labelled.any():
            raise _split_error("DAPipeline.score", "labelled rows", task)
        if not allow_source and sample_domain is not None and np.any(
            sample_domain[labelled] > 0
        ):
            raise ValueError(
                "score got source rows (sample_domain > 0) with allow_source="
                "False."
            )
        rows = np.flatnonzero(labelled)
        domains = None if sample_domain is None else sample_domain[rows]
        if len(rows) < n_rows:
            X, y_arr = _take_rows(X, rows), y_arr[rows]
        weights = {}
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight)
            if len(sample_weight) != n_rows:
                raise ValueError(
                    f"sample_weight has {len(sample_weight)} entries but X has "
                    f"{n_rows} rows."
                )
            weights["sample_weight"] = sample_weight[rows]
        Xt, leaf, domains = self._through(X, domains)
        return _call(leaf, "score", Xt, y_arr, sample_domain=domains,
                     domain=_requests_domain(leaf, "score"), params=weights)

    # -- what the last step learned

    @property
    def classes_(self):
        """The classes of the final classifier."""
        check_is_fitted(self)
        return self._final.classes_

    def _first(self):
        check_is_fitted(self)
        for _, step in self.steps_:
            if not _skipped(step):
                return step
        raise AttributeError("DAPipeline has only 'passthrough' steps.")

    @property
    def n_features_in_(self):
        """Number of features seen by the first step."""
        try:
            return self._first().n_features_in_
        except NotFittedError as err:
            raise AttributeError(str(err)) from err

    @property
    def feature_names_in_(self):
        """Feature names seen by the first step."""
        try:
            return self._first().feature_names_in_
        except NotFittedError as err:
            raise AttributeError(str(err)) from err

    # -- the scikit-learn Pipeline API

    @property
    def named_steps(self):
        """The steps by name: the fitted ones after ``fit`` (as in a
        ``Pipeline``, whose steps are fitted in place), those given before."""
        if hasattr(self, "steps_"):
            return self.named_steps_
        return Bunch(**dict(self.steps))

    def __len__(self):
        """The number of steps."""
        return len(self.steps)

    def __getitem__(self, ind):
        """A step (by index or name), or a DA pipeline of a slice of the steps.

        As in a ``Pipeline``: after ``fit`` the steps are the fitted ones, and
        a slice of a fitted pipeline is fitted (``pipe[:-1].transform(X)``).
        """
        fitted = hasattr(self, "steps_")
        if isinstance(ind, slice):
            if ind.step not in (None, 1):
                raise ValueError("DAPipeline slicing only supports a step of 1")
            sliced = type(self)(self.steps[ind])
            if fitted:
                sliced.steps_ = self.steps_[ind]
                sliced.named_steps_ = Bunch(**dict(sliced.steps_))
                sliced._adapted = getattr(self, "_adapted", True)
            return sliced
        steps = self.steps_ if fitted else self.steps
        if isinstance(ind, str):
            return dict(steps)[ind]
        return steps[ind][1]

    def set_output(self, *, transform=None):
        """Set the output container of every step's ``transform``.

        As ``Pipeline.set_output``: ``'default'``, ``'pandas'``, ``'polars'``
        or None (unchanged), set on the steps given (kept by ``fit``, which
        clones them) and on the fitted ones.

        Parameters
        ----------
        transform : {'default', 'pandas', 'polars'} or None, default=None

        Returns
        -------
        self : DAPipeline
        """
        if transform is None:
            return self
        for _, step in list(self.steps) + list(getattr(self, "steps_", [])):
            if _skipped(step) or not (hasattr(step, "transform")
                                      or hasattr(step, "fit_transform")):
                continue
            if not hasattr(step, "set_output"):
                raise ValueError(
                    f"Unable to configure output for {step} because `set_output` "
                    "is not available."
                )
            step.set_output(transform=transform)
        return self

    def get_feature_names_out(self, input_features=None):
        """Output feature names, through every fitted step.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Input feature names; None: those the first step saw.

        Returns
        -------
        feature_names_out : ndarray of str
        """
        check_is_fitted(self)
        names = input_features
        for name, step in self.steps_:
            if _skipped(step):
                continue
            if not hasattr(step, "get_feature_names_out"):
                raise AttributeError(
                    f"Estimator {name} does not provide get_feature_names_out. Did "
                    "you mean to call pipeline[:-1].get_feature_names_out()?"
                )
            names = step.get_feature_names_out(names)
        return names

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        try:
            steps = [step for _, step in self.steps if not _skipped(step)]
            first_tags = get_tags(steps[0])
            tags.input_tags.pairwise = first_tags.input_tags.pairwise
            tags.input_tags.allow_nan = all(
                get_tags(s).input_tags.allow_nan for s in steps
            )
            tags.input_tags.sparse = all(get_tags(s).input_tags.sparse for s in steps)
            final = self.steps[-1][1]
            if not _skipped(final):
                last = get_tags(final)
                tags.estimator_type = last.estimator_type
                tags.target_tags.required = last.target_tags.required
                tags.target_tags.multi_output = last.target_tags.multi_output
                tags.classifier_tags = deepcopy(last.classifier_tags)
                tags.regressor_tags = deepcopy(last.regressor_tags)
                tags.transformer_tags = deepcopy(last.transformer_tags)
        except (AttributeError, IndexError, TypeError, ValueError):
            pass  # invalid steps: fit raises the error that says what is wrong
        return tags


def _auto_names(steps):
    """``make_pipeline``'s names: the lowercased class, numbered if repeated."""
    names = [
        step if isinstance(step, str) else type(step).__name__.lower()
        for step in steps
    ]
    counts = {name: names.count(name) for name in names}
    seen = {}
    for i, name in enumerate(names):
        if counts[name] > 1:
            seen[name] = seen.get(name, 0) + 1
            names[i] = f"{name}-{seen[name]}"
    return names


def make_da_pipeline(*steps):
    """Build a :class:`DAPipeline` from estimators, naming them automatically.

    Like ``sklearn.pipeline.make_pipeline`` (and skada's
    ``make_da_pipeline``): each step is named after its class, lowercased
    (``coral``, ``logisticregression``); a ``(name, estimator)`` tuple keeps
    its name.

    Score it with ``make_da_scorer(...)`` or ``CircularValidation()``, not a
    named scorer: see :class:`DAPipeline`.

    Parameters
    ----------
    *steps : estimators or (str, estimator) tuples
        Transformers and aligners, then the final estimator.

    Returns
    -------
    pipeline : DAPipeline

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skxfer.adapt import CORAL, make_da_pipeline
    >>> pipe = make_da_pipeline(StandardScaler(), CORAL(), LogisticRegression())
    >>> [name for name, _ in pipe.steps]
    ['standardscaler', 'coral', 'logisticregression']
    >>> pipe = pipe.set_params(coral="passthrough")   # the source-only baseline
    """
    if not steps:
        raise TypeError("make_da_pipeline() needs at least one step.")
    unnamed = [step for step in steps if not isinstance(step, tuple)]
    auto = iter(_auto_names(unnamed))
    named = [step if isinstance(step, tuple) else (next(auto), step) for step in steps]
    return DAPipeline(named)
