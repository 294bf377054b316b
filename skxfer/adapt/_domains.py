"""The domain convention: per-row domains, the one mask rule, packing.

skada's per-sample convention (source rows > 0, target rows < 0 in
``sample_domain``; unlabelled target rows masked in ``y``, -1 for classes,
NaN for regression), read by one rule, :func:`read_domains`, everywhere in
:mod:`skxfer.adapt`; :func:`pack_domains` lays two domains out that way.
"""

import numbers

import numpy as np
import scipy.sparse as sp
from sklearn.base import is_classifier, is_regressor

# skada's defaults: source rows 1, target rows -2 when packed, and -1 for rows
# that reach transform/predict without a domain
SOURCE_DOMAIN = 1
TARGET_DOMAIN = -2
UNKNOWN_TARGET_DOMAIN = -1
MASKED_CLASS = -1
TASKS = ("classification", "regression")


class DomainSplitError(BaseException):
    """Rows without the domains a DA scorer needs: a fold without target rows.

    Raised by :meth:`DAPipeline.score`, :func:`make_da_scorer`'s scorers,
    :class:`CircularValidation` and :class:`PredictionEntropyScorer` when the
    rows they get cannot be scored: no target rows, no labelled rows, or no
    way to tell the domains apart. In a search this is the splitter's doing
    (``KFold`` on packed data puts all source rows in one fold), so it is a
    mistake of the whole search, not of one candidate.

    It derives from ``BaseException``, not ``Exception``, on purpose:
    scikit-learn's ``GridSearchCV``, ``cross_validate`` and
    ``cross_val_score`` turn any ``Exception`` a scorer raises into a NaN
    score (``error_score``) and carry on, so every candidate would score NaN
    and the search would return the first one. This error stops the search
    instead, with the fix in its message. Catch it by name.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skxfer.adapt import (
    ...     CircularValidation, DomainSplitError, make_da_pipeline)
    >>> X, y = np.arange(20.0).reshape(10, 2), np.array([0, 1] * 5)
    >>> pipe = make_da_pipeline(LogisticRegression()).fit(X, y)
    >>> try:
    ...     CircularValidation()(pipe, X, y)     # no target rows in y
    ... except DomainSplitError as err:
    ...     print(str(err)[:48])
    CircularValidation found no target rows to score
    """


def _split_advice(task):
    """How to split so that every fold keeps both domains, for a task."""
    by_domain = (
        "stratify the folds by domain, cv=list(StratifiedKFold(3, shuffle=True, "
        "random_state=0).split(X, sample_domain))"
    )
    if task == "classification":
        how = (
            "a classifier's default cv (StratifiedKFold on the masked y, where -1 "
            "is one more class) does, as do StratifiedKFold(shuffle=True) and "
            "skada's StratifiedDomainShuffleSplit; KFold on packed data does not."
        )
    elif task == "regression":
        how = (
            f"{by_domain} (or .split(X, np.isnan(y)) on the NaN-masked y); a "
            "regressor's default cv (KFold) on packed data does not keep both."
        )
    else:
        how = (
            f"{by_domain} (a classifier's default cv does so by itself on the "
            "masked y); KFold on packed data does not."
        )
    return "In a search, split so that every fold keeps both domains: " + how


_MASKS = "-1 for classes, NaN for regression"


def _split_error(who, missing, task=None):
    return DomainSplitError(
        f"{who} found no {missing} to score. Give it rows of both domains: "
        "sample_domain (source > 0, target < 0) with metadata routing, or the "
        f"target rows masked in y ({_MASKS}). " + _split_advice(task)
    )


def _ambiguous(who, task=None):
    return (
        f"{who} got a label on every row and no sample_domain, so it cannot tell "
        "which domain the rows come from: at fit a label marks a source row, at "
        "predict a row without a domain is a target row. "
        + _split_advice(task)
        + " Called directly, pass sample_domain=-1 for labelled target rows "
        "(sample_domain=1 for source rows), or mask the unlabelled target rows "
        f"in y ({_MASKS})."
    )


def _n_rows(X):
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape):
        return int(shape[0])
    if hasattr(X, "__len__"):
        return len(X)
    return np.asarray(X).shape[0]


def _take_rows(X, rows):
    """Rows ``rows`` (integer indices) of arrays, DataFrames, sparse or lists."""
    if hasattr(X, "iloc"):
        return X.iloc[rows]
    if isinstance(X, (list, tuple)):
        return [X[i] for i in rows]
    if sp.issparse(X):
        return X.tocsr()[rows]
    return np.asarray(X)[rows]


def _check_sample_domain(sample_domain, n_rows):
    """``sample_domain`` as an int array of length ``n_rows``, or None."""
    if sample_domain is None:
        return None
    if np.isscalar(sample_domain):
        sample_domain = np.full(n_rows, sample_domain)
    sample_domain = np.asarray(sample_domain)
    if sample_domain.ndim != 1:
        raise ValueError(
            f"sample_domain must be 1-d, one domain per row; got an array of "
            f"shape {sample_domain.shape}."
        )
    if len(sample_domain) != n_rows:
        raise ValueError(
            f"sample_domain has {len(sample_domain)} entries but X has {n_rows} "
            "rows; give one domain per row (source > 0, target < 0)."
        )
    if sample_domain.dtype.kind not in "iuf" or (
        sample_domain.dtype.kind == "f"
        and not np.all(np.isfinite(sample_domain) & (sample_domain % 1 == 0))
    ):
        raise ValueError(
            "sample_domain must hold integers (source > 0, target < 0); got "
            f"values such as {sample_domain[:3].tolist()!r}."
        )
    sample_domain = sample_domain.astype(np.int64)
    if np.any(sample_domain == 0):
        raise ValueError(
            "sample_domain holds 0, which is neither a source (> 0) nor a "
            "target (< 0) domain."
        )
    return sample_domain


def _check_task(task):
    if task is not None and task not in TASKS:
        raise ValueError(
            f"task must be None, 'classification' or 'regression'; got {task!r}."
        )


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _marks(y, task):
    """Element-wise mask markers of ``y``: (-1 entries, NaN entries)."""
    kind = y.dtype.kind
    none = np.zeros(y.shape, bool)
    if kind == "f":
        nan = np.isnan(y)
        if task == "regression" or (task is None and nan.any()):
            return none, nan
        return y == MASKED_CLASS, nan
    if kind in "iu":
        if task == "regression":
            return none, none
        return y == MASKED_CLASS, none
    if kind == "O":
        flat = y.ravel()
        nan = np.array([_is_number(v) and v != v for v in flat], bool)
        minus = np.array([_is_number(v) and v == MASKED_CLASS for v in flat], bool)
        if task == "regression" or (task is None and nan.any()):
            minus[:] = False
        return minus.reshape(y.shape), nan.reshape(y.shape)
    return none, none  # strings, booleans: nothing is a mask


def _rows(mask):
    return mask.all(axis=1) if mask.ndim == 2 else mask


def _is_missing(value):
    """None, NaN, pandas' NA or NaT: a value that stands for no value."""
    if value is None:
        return True
    if isinstance(value, (str, bytes)):
        return False
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return True  # pandas' NA: its truth value is ambiguous


def _refuse_odd_objects(y):
    """Missing values among names or objects: refused, naming the mask."""
    flat = y.ravel()
    names = any(isinstance(v, (str, bytes)) for v in flat)
    missing = sum(
        1 for v in flat
        if _is_missing(v) and (names or not isinstance(v, numbers.Number))
    )
    if missing:
        raise ValueError(
            f"y holds {missing} missing labels (None, NaN or pd.NA) among class "
            "names or other objects, and the mask of unlabelled target rows is "
            "the number -1 for classes (NaN for a float regression target). "
            "Encode the classes as integers (sklearn.preprocessing.LabelEncoder, "
            "fitted on the labelled rows) and mask the unlabelled rows with -1, "
            "as pack_domains does."
        )


def _holds_minus_one_string(y):
    if y.dtype.kind in "US":
        return bool(np.any(y == y.dtype.type("-1")))
    if y.dtype.kind == "O":
        return any(isinstance(v, (str, bytes)) and v in ("-1", b"-1")
                   for v in y.ravel())
    return False


def read_domains(y, sample_domain=None, *, task=None):
    """The one mask rule: the domains of the rows, and which rows have a label.

    Every reader of domains in this module -- :class:`DAPipeline`'s ``fit``
    and ``score``, :func:`make_da_scorer`, :class:`CircularValidation`,
    :class:`PredictionEntropyScorer`, the aligners' warning -- uses this rule,
    so the same ``y`` means the same thing everywhere:

    - ``-1`` marks an unlabelled row of a classification task: an integer
      ``-1`` in a list, an integer or float array, an object array or a
      pandas column;
    - ``NaN`` marks an unlabelled row of a regression task (``-1.0`` is then
      an ordinary value);
    - with ``task=None`` the kind comes from ``y``: NaN in it makes it a
      regression mask, otherwise ``-1`` is the mask;
    - strings and booleans are never masks.

    Without ``sample_domain``, the masked rows are the (unlabelled) target
    rows and every labelled row is a source row. With it, the domains are
    those given, target labels are left to the caller (a DA pipeline never
    trains on them) and a source row may not be masked.

    Labels the rule cannot read without doubt are refused, each with its fix:
    strings holding ``'-1'`` -- a string array, an object array, a pandas
    column of strings or categories -- without a number -1 beside them
    (``'-1'`` may be a real class, such as a folder name: encode the classes
    with ``LabelEncoder`` and mask with the number -1, or give
    ``sample_domain``); labels {-1, 1} or other negative classes beside -1 (a
    real class -1: relabel, e.g. with ``LabelEncoder``); integers holding -1
    for a regression task (mask with NaN in a float ``y``, or cast ``y`` to
    float if -1 is a value); NaN for a classification task (mask with -1:
    scikit-learn's cross-validation refuses a classifier's ``y`` holding NaN);
    missing values (None, pandas' NA, NaN among names: mask with -1); masked
    source rows.

    An object array of class names with the number -1 is read right, for
    ``fit``, ``predict`` and the scorers; scikit-learn's cross-validation
    cannot sort it (names do not sort with -1), so encode the classes as
    integers for a search (:func:`pack_domains` refuses to pack names).

    Parameters
    ----------
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Labels, unlabelled rows masked. A row of a 2-d ``y`` is masked when
        all its entries are.
    sample_domain : array-like of shape (n_samples,) or int, default=None
        Source rows > 0, target rows < 0. None: read from the mask.
    task : {'classification', 'regression'} or None, default=None
        What ``y`` holds (a DA pipeline takes it from its last step). None:
        from ``y`` itself, as above.

    Returns
    -------
    sample_domain : ndarray of shape (n_samples,) or None
        The domains given, or read from the mask (masked rows -2, the others
        1); None when neither gives any (no target rows).
    labelled : ndarray of shape (n_samples,) of bool
        Rows whose label is not masked.

    Examples
    --------
    >>> import numpy as np
    >>> from skxfer.adapt import read_domains
    >>> read_domains([0, 2, -1, 1, -1])
    (array([ 1,  1, -2,  1, -2]), array([ True,  True, False,  True, False]))
    >>> read_domains(np.array([0.5, np.nan, -1.0]), task="regression")[0]
    array([ 1, -2,  1])
    >>> read_domains(np.array(["cat", "dog", "-1"]))
    Traceback (most recent call last):
    ...
    ValueError: y holds the string '-1' ...
    """
    _check_task(task)
    y = np.asarray(y)
    if y.ndim == 0 or y.ndim > 2:
        raise ValueError(
            f"y must hold one label per row (1-d, or 2-d for several outputs); "
            f"got an array of shape {y.shape}."
        )
    n_rows = y.shape[0]
    given = _check_sample_domain(sample_domain, n_rows)
    if y.dtype.kind == "O":
        _refuse_odd_objects(y)
    minus, nan = _marks(y, task)
    if task == "classification" and nan.any():
        raise ValueError(
            f"y masks {int(_rows(nan).sum())} rows with NaN, but the last step is "
            "a classifier, whose unlabelled rows are masked with -1 "
            "(scikit-learn's cross-validation refuses a classifier's y holding "
            "NaN). Mask them with -1: y = np.where(np.isnan(y), -1, y)."
        )
    masked = _rows(minus | nan)
    if given is not None:
        source_masked = masked & (given > 0)
        if source_masked.any():
            marker = "-1" if _rows(minus)[source_masked].any() else "NaN"
            fix = (
                "If -1 is a class, relabel the classes (e.g. "
                "sklearn.preprocessing.LabelEncoder); "
                if marker == "-1"
                else ""
            )
            raise ValueError(
                f"y marks {int(source_masked.sum())} source rows (sample_domain "
                f"> 0) as unlabelled ({marker}): the mask is for unlabelled "
                f"target rows. {fix}drop source rows without a label."
            )
        return given, ~masked
    if not minus.any() and _holds_minus_one_string(y):
        raise ValueError(
            "y holds the string '-1' (class names given with -1 for the "
            "unlabelled rows become strings, as do labels read from a CSV file), "
            "and '-1' may be a real class, e.g. a folder name. Encode the classes "
            "as integers and mask the unlabelled rows with the number -1: encoder "
            "= sklearn.preprocessing.LabelEncoder().fit(y_source), then "
            "pack_domains(X_source, encoder.transform(y_source), X_target); "
            "encoder.inverse_transform reads predictions back. Or give "
            "sample_domain (source > 0, target < 0)."
        )
    if task == "regression" and y.dtype.kind in "iu" and np.any(y == MASKED_CLASS):
        raise ValueError(
            "y holds integers with -1 and the last step is a regressor, whose "
            "unlabelled rows are masked with NaN: is -1 a mask or a value? If it "
            "marks unlabelled target rows, mask them with NaN in a float y "
            "(pack_domains(..., task='regression') does); if it is a value, cast "
            "y to float."
        )
    if y.ndim == 1 and minus.any():
        values = set(y[~masked].tolist())
        negative = sorted(v for v in values if _is_number(v) and v < 0)
        if values == {1} or negative:
            found = "only the labels -1 and 1" if not negative else (
                f"negative labels besides the mask -1 ({negative[:3]})"
            )
            raise ValueError(
                f"y holds {found}: -1 marks unlabelled target rows, and cannot "
                "be told from a class -1 here. If -1 is a class, relabel the "
                "classes (e.g. sklearn.preprocessing.LabelEncoder) and mask "
                "unlabelled rows with -1, or give sample_domain (source > 0, "
                "target < 0)."
            )
    if not masked.any():
        return None, ~masked
    return np.where(masked, TARGET_DOMAIN, SOURCE_DOMAIN), ~masked


def _task_of(estimator):
    """'classification', 'regression' or None (what an estimator predicts)."""
    if estimator is None or isinstance(estimator, str):
        return None
    if is_regressor(estimator):
        return "regression"
    if is_classifier(estimator):
        return "classification"
    return None


def _masked_copy(y, rows, task):
    """``y`` with the labels of ``rows`` masked (NaN for regression, else -1)."""
    y = np.asarray(y)
    if task == "regression" or (task is None and y.dtype.kind == "f"
                                and np.isnan(y).any()):
        y = y.astype(np.float64 if y.dtype.kind != "f" else y.dtype, copy=True)
        y[rows] = np.nan
    else:
        y = y.astype(object) if y.dtype.kind not in "iuf" else y.copy()
        y[rows] = MASKED_CLASS
    return y


def _maskable(y_source):
    """``y_source`` in a dtype that holds the mask -1, or a refusal."""
    kind = y_source.dtype.kind
    if kind == "b":
        raise ValueError(
            "y_source holds booleans, which cannot hold the mask -1 of the "
            "unlabelled target rows: give the classes as integers, "
            "y_source.astype(int) (False 0, True 1)."
        )
    if kind == "u":  # uint8 (torchvision's MNIST targets) -> int16, ...
        wider = np.promote_types(y_source.dtype, np.int8)
        if wider.kind != "i":  # uint64
            if y_source.size and y_source.max() > np.iinfo(np.int64).max:
                raise ValueError(
                    "y_source holds integers beyond int64: encode the classes "
                    "(sklearn.preprocessing.LabelEncoder) before packing."
                )
            wider = np.dtype(np.int64)
        return y_source.astype(wider)
    if kind == "O" and len(y_source) and all(_is_number(v) for v in y_source):
        return np.array(y_source.tolist())  # numbers in an object array
    if kind in "USO" and any(isinstance(v, (str, bytes)) for v in y_source):
        raise ValueError(
            "y_source holds class names: packed with the number -1 for the "
            "unlabelled target rows they would make a y that scikit-learn's "
            "cross-validation cannot read (its splitters sort the labels, and "
            "names do not sort with -1). Encode the classes first: encoder = "
            "sklearn.preprocessing.LabelEncoder().fit(y_source); "
            "pack_domains(X_source, encoder.transform(y_source), X_target); "
            "encoder.inverse_transform(pipe.predict(X)) reads predictions back "
            "as names."
        )
    return y_source


def _packing_task(y_source, task):
    """The task of ``pack_domains``: given, or read from ``y_source`` when sure."""
    _check_task(task)
    if task is not None:
        return task
    if y_source.dtype.kind != "f":
        return "classification"
    finite = y_source[np.isfinite(y_source)]
    if np.any(finite % 1 != 0):
        return "regression"
    raise ValueError(
        "y_source holds whole numbers stored as floats: are they classes or "
        "regression targets? Say which: pack_domains(..., task='classification') "
        "masks the unlabelled target rows with -1, task='regression' with NaN."
    )


def pack_domains(X_source, y_source, X_target, y_target=None, *, task=None):
    """Stack a source and a target domain into ``(X, y, sample_domain)``.

    The per-sample layout that :class:`DAPipeline`, the aligners and
    cross-validation take: source rows first (domain 1), then target rows
    (domain -2), as skada's ``DomainAwareDataset.pack`` lays them out.

    Parameters
    ----------
    X_source : array-like of shape (n_source, ...)
        Source rows: features, or images for a
        :class:`~skxfer.PretrainedFeatureExtractor` first step.
    y_source : array-like of shape (n_source,)
        Source labels: integer classes or regression targets. Class names
        (strings) are refused unless ``y_target`` is given: encode them first
        with ``sklearn.preprocessing.LabelEncoder`` (scikit-learn's
        cross-validation sorts the labels, and names do not sort with the
        mask -1); booleans too (``y_source.astype(int)``). Unsigned integers
        are widened to a signed type that holds -1 (``uint8`` to ``int16``).
    X_target : array-like of shape (n_target, ...)
        Target rows, with the same shape per row as ``X_source``.
    y_target : array-like of shape (n_target,) or None, default=None
        None: the target rows are unlabelled and masked in ``y`` -- with -1
        for classes, NaN for regression. Labels given here are kept: a
        :class:`DAPipeline` never trains on target labels, but
        ``score(..., sample_domain=sample_domain)`` uses them.
    task : {'classification', 'regression'} or None, default=None
        What ``y_source`` holds, and so the mask: -1 for classes, NaN for
        regression. None: integers and class names are classes, floats with a
        fractional part regression targets; whole numbers stored as floats
        are refused (say which they are).

    Returns
    -------
    X : ndarray of shape (n_source + n_target, ...)
    y : ndarray of shape (n_source + n_target,)
        Signed integer labels keep their dtype (unsigned ones are widened),
        regression targets are floats.
    sample_domain : ndarray of shape (n_source + n_target,)
        1 for source rows, -2 for target rows.

    Examples
    --------
    >>> import numpy as np
    >>> from skxfer.adapt import pack_domains
    >>> X, y, sample_domain = pack_domains(
    ...     np.zeros((3, 2)), [0, 1, 1], np.ones((2, 2)))
    >>> y
    array([ 0,  1,  1, -1, -1])
    >>> sample_domain
    array([ 1,  1,  1, -2, -2])
    >>> pack_domains(np.zeros((2, 2)), [3.0, 4.0], np.ones((1, 2)),
    ...              task="regression")[1]
    array([ 3.,  4., nan])
    >>> from sklearn.preprocessing import LabelEncoder
    >>> encoder = LabelEncoder().fit(["cat", "dog"])       # class names
    >>> y = pack_domains(np.zeros((2, 2)), encoder.transform(["cat", "dog"]),
    ...                  np.ones((1, 2)))[1]
    >>> y
    array([ 0,  1, -1])
    >>> encoder.inverse_transform(y[:2])                   # names back
    array(['cat', 'dog'], dtype='<U3')
    """
    X_source, X_target = np.asarray(X_source), np.asarray(X_target)
    y_source = np.asarray(y_source)
    for name, X in (("X_source", X_source), ("X_target", X_target)):
        if X.ndim < 2:
            raise ValueError(
                f"{name} must have one row per sample (2-d features or images); "
                f"got an array of shape {X.shape}."
            )
        if X.shape[0] == 0:
            raise ValueError(
                f"{name} has no rows: domain adaptation needs at least one "
                f"{name.split('_')[1]} row."
            )
    if X_source.shape[1:] != X_target.shape[1:]:
        raise ValueError(
            f"X_source rows have shape {X_source.shape[1:]} but X_target rows "
            f"have shape {X_target.shape[1:]}: both domains need the same "
            "features."
        )
    if y_source.ndim != 1 or len(y_source) != len(X_source):
        raise ValueError(
            f"y_source must hold one label per source row: {len(X_source)} "
            f"rows, got y_source of shape {y_source.shape}."
        )
    if y_target is None:
        y_source = _maskable(y_source)
    task = _packing_task(y_source, task)
    if task == "regression":
        if y_source.dtype.kind not in "iuf":
            raise ValueError(
                "y_source must hold numbers for task='regression'; got values "
                f"such as {y_source[:3].tolist()!r}."
            )
        y_source = y_source.astype(np.float64)
    minus, nan = _marks(y_source, task)
    masked = _rows(minus | nan)
    if masked.any():
        marker = "the label -1" if minus.any() else "NaN"
        fix = (
            "drop or label those rows"
            if task == "regression"
            else "relabel the classes (e.g. sklearn.preprocessing.LabelEncoder)"
        )
        raise ValueError(
            f"y_source holds {marker} in {int(masked.sum())} rows, which marks "
            f"unlabelled target rows in domain adaptation: {fix} before packing."
        )
    if y_target is None:
        if task == "regression":
            fill = np.full(len(X_target), np.nan)
        else:
            fill = np.full(len(X_target), MASKED_CLASS, dtype=y_source.dtype)
        y = np.concatenate([y_source, fill])
    else:
        y_target = np.asarray(y_target)
        if y_target.ndim != 1 or len(y_target) != len(X_target):
            raise ValueError(
                f"y_target must hold one label per target row: {len(X_target)} "
                f"rows, got y_target of shape {y_target.shape}."
            )
        y = np.concatenate([y_source, y_target])
    sample_domain = np.concatenate(
        [
            np.full(len(X_source), SOURCE_DOMAIN, dtype=np.int64),
            np.full(len(X_target), TARGET_DOMAIN, dtype=np.int64),
        ]
    )
    return np.concatenate([X_source, X_target]), y, sample_domain
