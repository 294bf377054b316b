"""Domain adaptation: align source features with a target domain's.

A labelled *source* domain and an unlabelled (or barely labelled) *target*
domain -- a new camera, hospital or season -- share the task but not the
feature distribution. The aligners here map source features into the
target's frame, so a classifier or regressor trained on the mapped source
rows reads the target rows correctly.

The domain convention is skada's (https://github.com/scikit-adaptation/skada),
per sample, so it survives row slicing by cross-validation:

- ``sample_domain``: one integer per row, source rows positive, target rows
  negative (0 is refused). Several positive (or negative) values are pooled:
  one source, one target.
- Unlabelled target rows are masked in ``y``: ``-1`` for classes, ``NaN`` for
  regression. :class:`DAPipeline` and the scorers read the domains from that
  mask when no ``sample_domain`` is given, by one rule (:func:`read_domains`):
  in a DA pipeline ``-1`` cannot be a class (encode the classes with
  ``LabelEncoder``); labels the rule cannot read without doubt (strings
  holding ``'-1'``, labels {-1, 1}, an integer regression target holding -1)
  are refused with the fix. Outside a DA pipeline ``-1`` stays an ordinary
  label.
- Rows that arrive without ``sample_domain`` at ``transform``/``predict``
  time are target rows.
- An aligner fitted without target rows (plain ``fit(X, y)``) is the identity;
  it warns when ``y`` is masked, since a scikit-learn ``Pipeline`` does not
  tell it the domains.
- Steps receive ``sample_domain`` when their declared metadata requests say
  so (``get_routing_for_object``), with or without metadata routing enabled:
  a ``Pipeline`` or ``ColumnTransformer`` holding an aligner, inside a DA
  pipeline, adapts like the aligner itself.

Cross-validation and grid search work both ways:

- Without metadata routing (scikit-learn's default): give ``y`` with the
  target rows masked and no ``sample_domain``; each fold's ``fit`` reads the
  domains from the mask. A classifier's default ``StratifiedKFold`` counts
  -1 as one more class, so every fold keeps target rows.
- With ``sklearn.set_config(enable_metadata_routing=True)`` (or inside
  ``sklearn.config_context``): pass ``params={"sample_domain": ...}`` to
  ``cross_validate`` or ``sample_domain=...`` to ``GridSearchCV.fit``; it
  reaches ``fit``, ``score`` and this module's scorers, which request it.
  ``y`` may then even hold the target labels (the last step never trains on
  them); pick folds that keep both domains (e.g. ``StratifiedKFold`` splits
  of the masked ``y``, or skada's domain-aware splitters).

Scoring: a named scorer (``scoring="accuracy"``, ``"f1"``, ...) is wrong on a
DA pipeline -- scikit-learn calls ``predict(X)`` without domains, so held-out
source rows are predicted as target rows and masked target rows count as
errors. Wrap it: ``scoring=make_da_scorer("f1_macro")`` scores the labelled
rows, each in its own domain's frame. Without target labels, choose
adaptations with ``scoring=CircularValidation()``.

Unlike ``import skada``, importing this module leaves scikit-learn's global
configuration alone (``enable_metadata_routing`` included).
"""

import numbers
import warnings
from copy import deepcopy

import numpy as np
import scipy.sparse as sp
from sklearn import config_context
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    ClassNamePrefixFeaturesOutMixin,
    OneToOneFeatureMixin,
    TransformerMixin,
    clone,
    is_classifier,
    is_regressor,
)
from sklearn.covariance import empirical_covariance, ledoit_wolf, shrunk_covariance
from sklearn.exceptions import DataDimensionalityWarning, NotFittedError
from sklearn.metrics import balanced_accuracy_score, get_scorer, r2_score
from sklearn.utils import Bunch, get_tags
from sklearn.utils.metadata_routing import (
    MetadataRequest,
    MetadataRouter,
    get_routing_for_object,
)
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from ._validation import (
    any_of,
    check_params,
    is_int,
    is_none,
    is_real,
    one_of,
    validate_table,
)

__all__ = [
    "CORAL",
    "CircularValidation",
    "DAPipeline",
    "DomainSplitError",
    "PredictionEntropyScorer",
    "SubspaceAlignment",
    "make_da_pipeline",
    "make_da_scorer",
    "pack_domains",
    "read_domains",
]

# skada's defaults: source rows 1, target rows -2 when packed, and -1 for rows
# that reach transform/predict without a domain
SOURCE_DOMAIN = 1
TARGET_DOMAIN = -2
UNKNOWN_TARGET_DOMAIN = -1
MASKED_CLASS = -1
TASKS = ("classification", "regression")


# ---- the convention: domains, the mask rule, packing ------------------------------


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


# ---- aligners ----------------------------------------------------------------------


def _warn_if_masked(aligner, y):
    """Warn that an aligner fitted on a masked ``y`` without domains is the identity."""
    if y is None:
        return
    try:
        _, labelled = read_domains(y)
    except ValueError:
        return  # labels the mask rule cannot read: -1 is most likely a class here
    if labelled.all():
        return
    name = type(aligner).__name__
    warnings.warn(
        f"{name}.fit got y with {int((~labelled).sum())} rows masked as "
        "unlabelled target rows (-1 or NaN) but no sample_domain, so it sees no "
        f"target rows and is fitted as the identity. A scikit-learn Pipeline "
        "does not tell its steps the domains: build the pipeline with "
        "skxfer.adapt.make_da_pipeline, which reads them from the mask, or pass "
        "sample_domain with metadata routing enabled. (If -1 is an ordinary "
        "class here, this warning does not apply.)",
        UserWarning,
        stacklevel=3,
    )


class _Aligner(TransformerMixin, BaseEstimator):
    """Shared face of the aligners: domains in, source rows mapped out."""

    # like skada's adapters: a metadata-routing caller passes sample_domain
    # without an explicit set_fit_request / set_transform_request
    __metadata_request__fit = {"sample_domain": True}
    __metadata_request__transform = {"sample_domain": True}

    _spec = {}

    def _fit_domains(self, X, y, sample_domain):
        """Validate; return X and its source and target rows (or None, None)."""
        check_params(self, self._spec)
        X = validate_table(
            self, X, dtype=[np.float64, np.float32], ensure_min_samples=1
        )
        sample_domain = _check_sample_domain(sample_domain, X.shape[0])
        if sample_domain is None:
            _warn_if_masked(self, y)
            return X, None, None
        source, target = X[sample_domain > 0], X[sample_domain < 0]
        if len(target) == 0:
            # nothing to align to (a plain fit, or a fold without target rows)
            return X, None, None
        if len(source) == 0:
            raise ValueError(
                f"sample_domain has no source rows (> 0): {type(self).__name__} "
                "maps source rows onto the target, and needs both."
            )
        return X, source, target

    def _transform_domains(self, X, sample_domain):
        check_is_fitted(self)
        X = validate_table(self, X, dtype=[np.float64, np.float32], reset=False)
        sample_domain = _check_sample_domain(sample_domain, X.shape[0])
        if sample_domain is None:
            sample_domain = np.full(X.shape[0], UNKNOWN_TARGET_DOMAIN)
        return X, sample_domain > 0

    def fit_transform(self, X, y=None, sample_domain=None):
        """Fit on all rows, then map them: ``fit(...).transform(...)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Source and target rows.
        y : array-like of shape (n_samples,), default=None
            Ignored (a masked ``y`` without ``sample_domain`` warns).
        sample_domain : array-like of shape (n_samples,), default=None
            Source rows > 0, target rows < 0. None: no target rows (the
            identity).

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_features_out)
        """
        return self.fit(X, y, sample_domain=sample_domain).transform(
            X, sample_domain=sample_domain
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _centred(rows):
    """Mean, centred rows and variance of one domain; near-constant features 0.

    A feature whose variance is within the rounding error of a two-pass
    variance (scikit-learn's ``StandardScaler`` rule: ``var <= n eps var +
    (n eps mean)^2``) is constant: a target pixel fixed at 0.3 has a standard
    deviation of 1e-15 from rounding alone, and must not be divided by it.
    """
    rows = rows.astype(np.float64)
    n, eps = rows.shape[0], np.finfo(np.float64).eps
    mean = rows.mean(axis=0)
    centred = rows - mean
    var = np.mean(centred**2, axis=0)
    constant = var <= n * eps * var + (n * eps * mean) ** 2
    centred[:, constant] = 0.0
    var[constant] = 0.0
    return mean, centred, var


def _covariance(centred, var, reg):
    if reg == "auto":
        # Ledoit-Wolf on standardised features, scaled back (as skada does)
        scale = np.sqrt(var)
        scale[var == 0] = 1.0
        cov = ledoit_wolf(centred / scale, assume_centered=True)[0]
        return scale[:, None] * cov * scale[None, :]
    empirical = empirical_covariance(centred, assume_centered=True)
    return shrunk_covariance(empirical, shrinkage=reg)


def _matrix_power(cov, power):
    """``cov ** power`` for a symmetric PSD matrix; tiny eigenvalues floored."""
    w, V = np.linalg.eigh(cov)
    top = max(float(w.max()), np.finfo(np.float64).tiny)
    w = np.clip(w, top * 1e-10, None)
    return (V * w**power) @ V.T




class CORAL(_Aligner):
    """Correlation alignment: give the source rows the target's covariance.

    CORAL (Sun, Feng and Saenko, 2016) whitens the source features with their
    regularised covariance and re-colours them with the target's, in the
    target's centred frame, as skada's ``CORALAdapter`` does: source rows
    become ``(x - mean_source) @ C_s^(-1/2) @ C_t^(1/2)``, target rows
    ``x - mean_target``. Both domains then share a zero mean and (regularised)
    covariance; a model after it starts from centred features. Put it before
    a classifier in :func:`make_da_pipeline`, on raw features or after a
    :class:`~skxfer.PretrainedFeatureExtractor`.

    Features constant within a domain (up to rounding, as ``StandardScaler``
    tells them) are treated as constant: never divided by their noise.

    Fitted without target rows (``fit(X)``, ``fit(X, y)``, or a
    ``sample_domain`` with no negative entry) it is the identity; inside a
    scikit-learn ``Pipeline`` on a masked ``y`` it says so with a warning.

    Scoring a DA pipeline with a named scorer (``scoring="accuracy"``, ``"f1"``)
    is wrong: scikit-learn predicts held-out rows without their domains, so
    source rows are not mapped and masked target rows count as errors. Use
    ``scoring=make_da_scorer("f1_macro")`` (labelled rows, each in its own
    domain) or, without target labels, ``scoring=CircularValidation()``.

    Parameters
    ----------
    reg : 'auto' or float in [0, 1], default='auto'
        Regularisation of both covariances, as in skada's ``CORALAdapter``:
        'auto' shrinks them by the Ledoit-Wolf rule (on standardised
        features); a float is the shrinkage towards a scaled identity (0: the
        empirical covariance, 1: a multiple of the identity, which leaves only
        the mean shift and a per-domain scale).

    Attributes
    ----------
    mean_source_, mean_target_ : ndarray of shape (n_features,) or None
        Mean of each domain's rows; None after a fit without target rows.
    cov_source_inv_sqrt_ : ndarray of shape (n_features, n_features) or None
        Inverse square root of the regularised source covariance.
    cov_target_sqrt_ : ndarray of shape (n_features, n_features) or None
        Square root of the regularised target covariance.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, when ``X`` had string column names.

    See Also
    --------
    SubspaceAlignment : align the principal subspaces instead.
    make_da_pipeline : aligners followed by an estimator trained on source rows.

    References
    ----------
    B. Sun, J. Feng and K. Saenko. Return of frustratingly easy domain
    adaptation. AAAI 2016.

    Examples
    --------
    >>> import numpy as np
    >>> from skxfer.adapt import CORAL, pack_domains
    >>> rng = np.random.RandomState(0)
    >>> X_source = rng.normal(size=(200, 2))
    >>> X_target = rng.normal(size=(150, 2)) * [3.0, 0.5] + 1.0
    >>> X, _, sample_domain = pack_domains(X_source, np.zeros(200, int), X_target)
    >>> X_new = CORAL(reg=0).fit_transform(X, sample_domain=sample_domain)
    >>> np.allclose(np.cov(X_new[:200].T, bias=True), np.cov(X_target.T, bias=True))
    True
    >>> np.allclose(X_new[200:], X_target - X_target.mean(axis=0))  # centred
    True
    >>> np.array_equal(CORAL().fit(X_source).transform(X_source), X_source)
    True
    """

    _spec = {
        "reg": (
            any_of(one_of("auto"), is_real(0, 1)),
            "'auto' or a float in the range [0.0, 1.0]",
        ),
    }

    def __init__(self, reg="auto"):
        self.reg = reg

    def fit(self, X, y=None, sample_domain=None):
        """Learn the mean and covariance of each domain.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Source and target rows.
        y : array-like of shape (n_samples,), default=None
            Ignored (a masked ``y`` without ``sample_domain`` warns).
        sample_domain : array-like of shape (n_samples,) or int, default=None
            Source rows > 0, target rows < 0. None: no target rows, and
            :meth:`transform` is the identity.

        Returns
        -------
        self : CORAL
        """
        X, source, target = self._fit_domains(X, y, sample_domain)
        if source is not None:
            for name, rows in (("source", source), ("target", target)):
                if len(rows) < 2:
                    raise ValueError(
                        f"CORAL needs at least 2 rows of each domain to estimate "
                        f"a covariance; got {len(rows)} {name} row."
                    )
            mean_source, centred, var = _centred(source)
            inv_sqrt = _matrix_power(_covariance(centred, var, self.reg), -0.5)
            mean_target, centred, var = _centred(target)
            sqrt = _matrix_power(_covariance(centred, var, self.reg), 0.5)
        else:
            mean_source = mean_target = inv_sqrt = sqrt = None
        self.mean_source_, self.mean_target_ = mean_source, mean_target
        self.cov_source_inv_sqrt_, self.cov_target_sqrt_ = inv_sqrt, sqrt
        self._centred = True  # absent from CORALs pickled before the centred frame
        return self

    def transform(self, X, sample_domain=None):
        """Map rows into the target's centred frame.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to map.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            Source rows > 0 are whitened and re-coloured, target rows < 0
            centred. None: all rows are target rows.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_features)
            Same dtype as ``X`` (float32 stays float32); ``X`` itself after a
            fit without target rows.
        """
        X, source = self._transform_domains(X, sample_domain)
        X_new = X.copy()
        if self.mean_source_ is None:
            return X_new
        # a CORAL pickled by skxfer before the centred frame keeps the frame
        # its pipeline's later steps were fitted on: the target's own
        shift = 0.0 if getattr(self, "_centred", False) else self.mean_target_
        X_new[~source] = X[~source] - self.mean_target_ + shift
        if source.any():
            mapped = (X[source] - self.mean_source_) @ self.cov_source_inv_sqrt_
            X_new[source] = mapped @ self.cov_target_sqrt_ + shift
        return X_new

    def get_feature_names_out(self, input_features=None):
        """The input feature names: CORAL keeps the features.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Input feature names; None: those seen in ``fit``, or x0, x1, ...

        Returns
        -------
        feature_names_out : ndarray of str
        """
        check_is_fitted(self)
        return OneToOneFeatureMixin.get_feature_names_out(self, input_features)


def _rank(centred):
    """Numerical rank of centred rows (numpy's ``matrix_rank`` tolerance)."""
    s = np.linalg.svd(centred, compute_uv=False)
    if not len(s) or s[0] == 0:
        return 0
    return int(np.sum(s > s[0] * max(centred.shape) * np.finfo(np.float64).eps))


class SubspaceAlignment(_Aligner):
    """Subspace alignment: map the source principal subspace onto the target's.

    Subspace alignment (Fernando et al., 2013) takes the ``n_components``
    leading principal directions of each domain, ``P_s`` and ``P_t``
    (``n_features x n_components``), and the alignment ``M = P_s' P_t``.
    Source rows become ``(x - mean_source) @ P_s @ M``; target rows are
    expressed in their own principal subspace, ``(x - mean_target) @ P_t``.
    Both end up in the target's coordinates, ``n_components`` wide.

    A domain supports as many directions as its centred rows have rank
    (at most one fewer than its rows): a larger ``n_components`` is clipped
    to that, with a ``DataDimensionalityWarning`` (a fold of a search may hold
    fewer rows than the whole data), and a domain whose rows do not vary is
    refused.

    Fitted without target rows (``fit(X)``, ``fit(X, y)``, or a
    ``sample_domain`` with no negative entry) it is the identity and keeps
    every feature; inside a scikit-learn ``Pipeline`` on a masked ``y`` it
    says so with a warning.

    Scoring a DA pipeline with a named scorer (``scoring="accuracy"``, ``"f1"``)
    is wrong: scikit-learn predicts held-out rows without their domains, so
    source rows are not mapped and masked target rows count as errors. Use
    ``scoring=make_da_scorer("f1_macro")`` (labelled rows, each in its own
    domain) or, without target labels, ``scoring=CircularValidation()``.

    Parameters
    ----------
    n_components : int or None, default=None
        Number of principal directions. None: as many as both domains
        support. At most the number of features.

    Attributes
    ----------
    n_components_ : int or None
        Directions kept; None after a fit without target rows (the identity).
    components_source_, components_target_ : ndarray of shape \
            (n_features, n_components_) or None
        Orthonormal principal directions of each domain.
    alignment_ : ndarray of shape (n_components_, n_components_) or None
        ``components_source_.T @ components_target_``.
    mean_source_, mean_target_ : ndarray of shape (n_features,) or None
        Mean of each domain's rows.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, when ``X`` had string column names.

    See Also
    --------
    CORAL : align second-order statistics, keeping every feature.

    References
    ----------
    B. Fernando, A. Habrard, M. Sebban and T. Tuytelaars. Unsupervised visual
    domain adaptation using subspace alignment. ICCV 2013.

    Examples
    --------
    >>> import numpy as np
    >>> from skxfer.adapt import SubspaceAlignment, pack_domains
    >>> rng = np.random.RandomState(0)
    >>> X_source = rng.normal(size=(100, 5))
    >>> X_target = rng.normal(size=(80, 5)) * [3.0, 2.0, 1.0, 0.5, 0.1]
    >>> X, _, sample_domain = pack_domains(X_source, np.zeros(100, int), X_target)
    >>> sa = SubspaceAlignment(n_components=2)
    >>> sa.fit_transform(X, sample_domain=sample_domain).shape
    (180, 2)
    >>> sa.transform(X_target).shape     # rows without a domain are target rows
    (80, 2)
    >>> SubspaceAlignment().fit(X_source).transform(X_source).shape  # identity
    (100, 5)
    """

    _spec = {
        "n_components": (
            any_of(is_none, is_int(1)),
            "None or an int >= 1",
        ),
    }

    def __init__(self, n_components=None):
        self.n_components = n_components

    def fit(self, X, y=None, sample_domain=None):
        """Learn each domain's principal subspace and the alignment.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Source and target rows.
        y : array-like of shape (n_samples,), default=None
            Ignored (a masked ``y`` without ``sample_domain`` warns).
        sample_domain : array-like of shape (n_samples,) or int, default=None
            Source rows > 0, target rows < 0. None: no target rows, and
            :meth:`transform` is the identity.

        Returns
        -------
        self : SubspaceAlignment
        """
        X, source, target = self._fit_domains(X, y, sample_domain)
        if source is None:
            self.n_components_ = None
            self.mean_source_ = self.mean_target_ = None
            self.components_source_ = self.components_target_ = None
            self.alignment_ = None
            return self
        n_features = X.shape[1]
        if self.n_components is not None and self.n_components > n_features:
            raise ValueError(
                f"n_components={self.n_components} is too large: "
                f"SubspaceAlignment keeps at most n_features = {n_features} "
                "directions."
            )
        domains = [_centred(rows) for rows in (source, target)]
        ranks = [_rank(centred) for _, centred, _ in domains]
        named = zip(("source", "target"), (source, target), ranks, strict=True)
        for name, rows, rank in named:
            if rank == 0:
                raise ValueError(
                    f"SubspaceAlignment needs {name} rows that vary to find a "
                    f"principal direction; the {len(rows)} {name} row(s) do not "
                    "(give at least 2 distinct rows of each domain)."
                )
        supported = min(ranks)
        n_components = supported if self.n_components is None else self.n_components
        if n_components > supported:
            warnings.warn(
                f"n_components={n_components} is more than the data supports: "
                f"the centred rows have rank {ranks[0]} (source, {len(source)} "
                f"rows) and {ranks[1]} (target, {len(target)} rows); "
                f"SubspaceAlignment keeps {supported} directions.",
                DataDimensionalityWarning,
                stacklevel=2,
            )
            n_components = supported
        bases = []
        for _, centred, _ in domains:
            # right singular vectors of the centred rows: principal directions
            _, _, Vt = np.linalg.svd(centred, full_matrices=False)
            bases.append(Vt[:n_components].T)
        self.n_components_ = n_components
        self.mean_source_, self.mean_target_ = domains[0][0], domains[1][0]
        self.components_source_, self.components_target_ = bases
        self.alignment_ = bases[0].T @ bases[1]
        return self

    def transform(self, X, sample_domain=None):
        """Project rows into the target's subspace coordinates.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to project.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            Source rows > 0 go through the aligned source subspace, target
            rows < 0 through the target's. None: all rows are target rows.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_components_)
            (n_samples, n_features) -- X itself -- after a fit without target
            rows. Same dtype as ``X``.
        """
        X, source = self._transform_domains(X, sample_domain)
        if self.n_components_ is None:
            return X.copy()
        X_new = np.empty((X.shape[0], self.n_components_), dtype=X.dtype)
        X_new[~source] = (X[~source] - self.mean_target_) @ self.components_target_
        if source.any():
            projected = (X[source] - self.mean_source_) @ self.components_source_
            X_new[source] = projected @ self.alignment_
        return X_new

    def get_feature_names_out(self, input_features=None):
        """Output feature names.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Input feature names (checked against those seen in ``fit``).

        Returns
        -------
        feature_names_out : ndarray of str
            ``subspacealignment0``, ... after an adapting fit; the input names
            after a fit without target rows.
        """
        check_is_fitted(self)
        if self.n_components_ is None:
            return OneToOneFeatureMixin.get_feature_names_out(self, input_features)
        return ClassNamePrefixFeaturesOutMixin.get_feature_names_out(
            self, input_features
        )

    @property
    def _n_features_out(self):
        return self.n_components_


# ---- the DA pipeline ---------------------------------------------------------------


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


def _call(step, method, *args, sample_domain=None, domain=True):
    """``step.method(*args)``, with ``sample_domain`` when ``domain`` is true.

    A router (a scikit-learn ``Pipeline``, ``ColumnTransformer``, ...) passes
    metadata to its steps only with metadata routing enabled: it is called
    inside ``config_context(enable_metadata_routing=True)``, whatever the
    global setting, so a nested aligner gets its domains either way. A method
    that requests skada's ``allow_source`` gets ``allow_source=True``: the
    domains given are to be used as they are.
    """
    if not domain or sample_domain is None:
        return getattr(step, method)(*args)
    routing = get_routing_for_object(step)
    params = {"sample_domain": sample_domain}
    if routing.consumes(method, ["allow_source"]):
        params["allow_source"] = True  # skada's estimators refuse source rows else
    if isinstance(routing, MetadataRouter):
        with config_context(enable_metadata_routing=True):
            return getattr(step, method)(*args, **params)
    return getattr(step, method)(*args, **params)


def _ambiguous(who):
    return (
        f"{who} got a label on every row and no sample_domain, so it cannot tell "
        "which domain the rows come from: at fit a label marks a source row, at "
        "predict a row without a domain is a target row. Pass sample_domain=-1 "
        "for labelled target rows (sample_domain=1 for source rows), or mask "
        "the unlabelled target rows in y (-1 for classes, NaN for regression)."
    )


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
    rows that have a label (unless it requests ``sample_domain`` itself, as an
    aligner does: then it sees every row too, and the pipeline is a
    transformer). Build one with :func:`make_da_pipeline`.

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
    was fitted without target rows, where the domains change nothing.

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
    docstring for both ways.

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

    def fit(self, X, y=None, sample_domain=None):
        """Fit the steps: intermediate ones on all rows, the last on labelled
        source rows.

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

        Returns
        -------
        self : DAPipeline
        """
        steps = self._validated_steps()
        final_name, final = steps[-1]
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
        # a last step that requests domains (an aligner) sees every row
        final_domain = not _skipped(final) and _requests_domain(final, "fit")
        train = np.ones(n_rows, bool) if sample_domain is None else sample_domain > 0
        if labelled is not None and not final_domain:
            train &= labelled
            if not train.any():
                kind = "NaN" if task == "regression" else "-1"
                raise ValueError(
                    f"y has no labelled source rows to train the last step "
                    f"{final_name!r} on: all {n_rows} rows are target rows or "
                    f"masked as unlabelled ({kind})."
                )

        fitted, Xt = [], X
        for name, step in steps[:-1]:
            if _skipped(step):
                fitted.append((name, step))
                continue
            step = clone(step)
            if hasattr(step, "fit_transform"):
                Xt = _call(step, "fit_transform", Xt, y_steps,
                           sample_domain=sample_domain,
                           domain=_requests_domain(step, "fit_transform"))
            else:
                _call(step, "fit", Xt, y_steps, sample_domain=sample_domain,
                      domain=_requests_domain(step, "fit"))
                Xt = _call(step, "transform", Xt, sample_domain=sample_domain,
                           domain=_requests_domain(step, "transform"))
            fitted.append((name, step))
        if final_domain:
            final = clone(final)
            _call(final, "fit", Xt, y_steps, sample_domain=sample_domain)
        elif not _skipped(final):
            final = clone(final)
            rows = np.flatnonzero(train)
            if y is not None and len(rows) < n_rows:
                final.fit(_take_rows(Xt, rows), y_arr[rows])
            elif len(rows) < n_rows:
                final.fit(_take_rows(Xt, rows))
            else:
                final.fit(Xt, y)
        fitted.append((final_name, final))
        self.steps_ = fitted
        self.named_steps_ = Bunch(**dict(fitted))
        self._adapted = sample_domain is not None and bool(np.any(sample_domain < 0))
        return self

    def __sklearn_is_fitted__(self):
        return hasattr(self, "steps_")

    # -- prediction

    def _transform_steps(self, X, sample_domain):
        check_is_fitted(self)
        sample_domain = _check_sample_domain(sample_domain, _n_rows(X))
        Xt = X
        for _, step in self.steps_[:-1]:
            if _skipped(step):
                continue
            Xt = _call(step, "transform", Xt, sample_domain=sample_domain,
                       domain=_requests_domain(step, "transform"))
        return Xt

    @property
    def _final(self):
        return self.steps_[-1][1]

    def _predict(self, method, X, sample_domain):
        Xt = self._transform_steps(X, sample_domain)  # checks that it is fitted
        return getattr(self._final, method)(Xt)

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
        Xt = self._transform_steps(X, sample_domain)
        final = self._final
        if _skipped(final):
            return Xt
        return _call(final, "transform", Xt, sample_domain=sample_domain,
                     domain=_requests_domain(final, "transform"))

    @available_if(_final_has("transform"))
    def fit_transform(self, X, y=None, sample_domain=None):
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

        Returns
        -------
        X_new : array-like of shape (n_samples, n_features_out)
        """
        self.fit(X, y, sample_domain=sample_domain)
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
        labelled target rows.

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
        sample_domain, labelled, ambiguous = _domains_to_score(
            y_arr, sample_domain, _task_of(self._final),
            getattr(self, "_adapted", True),
        )
        if ambiguous:
            raise ValueError(_ambiguous("DAPipeline.score"))
        if not labelled.any():
            raise ValueError(
                "y has no labelled rows to score: every row is masked as "
                "unlabelled. Score with an unsupervised scorer such as "
                "CircularValidation instead."
            )
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
        Xt = self._transform_steps(X, domains)
        if sample_weight is None:
            return self._final.score(Xt, y_arr)
        sample_weight = np.asarray(sample_weight)
        if len(sample_weight) != n_rows:
            raise ValueError(
                f"sample_weight has {len(sample_weight)} entries but X has "
                f"{n_rows} rows."
            )
        return self._final.score(Xt, y_arr, sample_weight=sample_weight[rows])

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


# ---- scoring: named metrics made right, unsupervised model selection -------------


class DomainSplitError(BaseException):
    """Rows without the domains a DA scorer needs: a fold without target rows.

    Raised by :func:`make_da_scorer`'s scorers, :class:`CircularValidation`
    and :class:`PredictionEntropyScorer` when the rows they get cannot be
    scored: no target rows, no labelled rows, or no way to tell the domains
    apart. In a search this is the splitter's doing (``KFold`` on packed data
    puts all source rows in one fold), so it is a mistake of the whole
    search, not of one candidate.

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


_SPLIT_ADVICE = (
    "In a search, split so that every fold keeps both domains: a classifier's "
    "default StratifiedKFold on the masked y does (-1 is one more class to it), "
    "or StratifiedKFold(shuffle=True), or skada's StratifiedDomainShuffleSplit; "
    "KFold on packed data does not."
)


def _split_error(who, missing):
    return DomainSplitError(
        f"{who} found no {missing} to score. Give it rows of both domains: "
        "sample_domain (source > 0, target < 0) with metadata routing, or the "
        "target rows masked in y (-1 for classes, NaN for regression). "
        + _SPLIT_ADVICE
    )


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
    domain on to an estimator whose routing consumes ``sample_domain``.
    """

    def __init__(self, estimator, sample_domain):
        self.estimator = estimator
        self.sample_domain = sample_domain

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
        sample_domain, labelled, ambiguous = _domains_to_score(
            y, sample_domain, _task_of(estimator), _domains_matter(estimator)
        )
        if ambiguous:
            raise DomainSplitError(_ambiguous(who) + " " + _SPLIT_ADVICE)
        if not labelled.any():
            raise _split_error(who, "labelled rows")
        rows = np.flatnonzero(labelled)
        domains = None if sample_domain is None else sample_domain[rows]
        kwargs = {}
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

    Parameters
    ----------
    scoring : str or callable
        A scorer name, as ``scoring=`` takes (``'accuracy'``, ``'f1_macro'``,
        ``'roc_auc'``, ``'neg_mean_absolute_error'``...), or a callable
        ``scorer(estimator, X, y)``.

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
            raise _split_error(who, "target rows")
    if sample_domain is None:
        return None, np.arange(n_rows)
    target = np.flatnonzero(sample_domain < 0)
    if not len(target):
        raise _split_error(who, "target rows")
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
                f"{type(estimator).__name__} has none."
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
        ``'neg_mean_absolute_error'``...), or a metric
        ``source_scorer(y_true, y_pred)``. None:
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
            raise _split_error("CircularValidation", "target rows")
        source = np.flatnonzero((domains > 0) & labelled)
        target = np.flatnonzero(domains < 0)
        if not len(source):
            raise _split_error("CircularValidation", "labelled source rows")
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
        scorer = self.source_scorer
        if isinstance(scorer, str) or (scorer is not None and not callable(scorer)):
            scorer = _as_scorer(scorer, "The 'source_scorer' of CircularValidation")
            return float(scorer(_InDomain(backward, backward_target), X_source,
                                y_source))
        metric = scorer
        if metric is None:
            metric = r2_score if regression else balanced_accuracy_score
        y_pred = _InDomain(backward, backward_target).predict(X_source)
        return float(metric(y_source, y_pred))

    def __repr__(self):
        if self.source_scorer is None:
            return "CircularValidation()"
        return f"CircularValidation(source_scorer={self.source_scorer!r})"
