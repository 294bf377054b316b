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


def read_domains(y, sample_domain=None, *, task=None):
    """The one mask rule: the domains of the rows, and which rows have a label.

    Every reader of domains in this module -- :class:`DAPipeline`'s ``fit``
    and ``score``, :func:`make_da_scorer`, :class:`CircularValidation`,
    :class:`PredictionEntropyScorer`, the aligners' warning -- uses this rule,
    so the same ``y`` means the same thing everywhere:

    - ``-1`` marks an unlabelled row of a classification task: an integer
      ``-1`` in a list, an integer or float array, an object array or a
      pandas column (NaN is accepted too: it can never be a class);
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
    a string array holding ``'-1'`` (``'-1'`` may be a real class, such as a
    folder name: give an object array, ``np.array(labels, dtype=object)``, or
    ``sample_domain``); labels {-1, 1} or other negative classes beside -1 (a
    real class -1: relabel, e.g. with ``LabelEncoder``); integers holding -1
    for a regression task (mask with NaN in a float ``y``, or cast ``y`` to
    float if -1 is a value); masked source rows.

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
    ValueError: y is an array of strings holding '-1' ...
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
    minus, nan = _marks(y, task)
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
    if y.dtype.kind in "US" and np.any(y == "-1"):
        raise ValueError(
            "y is an array of strings holding '-1' (a list of class names with "
            "-1 for unlabelled rows becomes one), and '-1' may be a real class, "
            "e.g. a folder name. Give y as an object array, np.array(labels, "
            "dtype=object), so that -1 stays a number, or give sample_domain "
            "(source > 0, target < 0)."
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
        Source labels: numbers, or class names (strings).
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
        Integer labels keep their dtype, regression targets are floats, and
        class names come back as an object array whose mask is the number -1.
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
    >>> pack_domains(np.zeros((2, 2)), ["cat", "dog"], np.ones((1, 2)))[1]
    array(['cat', 'dog', -1], dtype=object)
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
        elif y_source.dtype.kind in "iuf":
            fill = np.full(len(X_target), MASKED_CLASS, dtype=y_source.dtype)
        else:
            y_source = y_source.astype(object)
            fill = np.full(len(X_target), MASKED_CLASS, dtype=object)
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
