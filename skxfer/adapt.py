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
  regression. A :class:`DAPipeline` reads the domains from that mask when no
  ``sample_domain`` is given; nothing else does, so ``-1`` stays an ordinary
  label outside a DA pipeline (a DA pipeline cannot have a class ``-1``:
  encode the classes with ``LabelEncoder``).
- Rows that arrive without ``sample_domain`` at ``transform``/``predict``
  time are target rows.
- An aligner fitted without target rows (plain ``fit(X, y)``) is the identity.

Cross-validation and grid search work both ways:

- Without metadata routing (scikit-learn's default): give ``y`` with the
  target rows masked and no ``sample_domain``; each fold's ``fit`` reads the
  domains from the mask. A classifier's default ``StratifiedKFold`` counts
  -1 as one more class, so every fold keeps target rows. The default score
  of a held-out fold is the accuracy on its labelled rows -- source rows,
  mapped into the target frame -- a weak guide under a strong shift; choose
  adaptations with ``scoring=CircularValidation()``, which needs no target
  labels. (``sample_domain`` passed as a fit parameter reaches ``fit``, but
  not the scorer.)
- With ``sklearn.set_config(enable_metadata_routing=True)`` (or inside
  ``sklearn.config_context``): pass ``params={"sample_domain": ...}`` to
  ``cross_validate`` or ``sample_domain=...`` to ``GridSearchCV.fit``; it
  reaches ``fit``, ``score`` and this module's scorers, which request it.
  ``y`` may then even hold the target labels (the last step never trains on
  them); pick folds that keep both domains (e.g. ``StratifiedKFold`` splits
  of the masked ``y``, or skada's domain-aware splitters).

Unlike ``import skada``, importing this module leaves scikit-learn's global
configuration alone (``enable_metadata_routing`` included).
"""

import inspect
import numbers
from copy import deepcopy

import numpy as np
import scipy.sparse as sp
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    OneToOneFeatureMixin,
    TransformerMixin,
    clone,
    is_regressor,
)
from sklearn.covariance import empirical_covariance, ledoit_wolf, shrunk_covariance
from sklearn.exceptions import NotFittedError
from sklearn.utils import Bunch, get_tags
from sklearn.utils.metadata_routing import MetadataRequest
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target
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
    "PredictionEntropyScorer",
    "SubspaceAlignment",
    "make_da_pipeline",
    "pack_domains",
]

# skada's defaults: source rows 1, target rows -2 when packed, and -1 for rows
# that reach transform/predict without a domain
SOURCE_DOMAIN = 1
TARGET_DOMAIN = -2
UNKNOWN_TARGET_DOMAIN = -1
MASKED_CLASS = -1


# ---- the convention ----------------------------------------------------------------


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


def _unlabelled(y, regression):
    """Rows of ``y`` masked as unlabelled: NaN for regression, -1 for classes."""
    y = np.asarray(y)
    if regression:
        mask = np.isnan(y) if y.dtype.kind in "fc" else np.zeros(y.shape, bool)
    elif y.dtype.kind in "iuf":
        mask = y == MASKED_CLASS
    elif y.dtype.kind == "O":
        mask = np.array(
            [
                isinstance(v, numbers.Real)
                and not isinstance(v, (bool, np.bool_))
                and v == MASKED_CLASS
                for v in y.ravel()
            ],
            dtype=bool,
        ).reshape(y.shape)
    else:
        mask = np.zeros(y.shape, bool)
    if mask.ndim == 2:
        mask = mask.all(axis=1)
    return mask


def _masked_copy(y, rows, regression):
    """``y`` with the labels of ``rows`` masked."""
    y = np.asarray(y)
    if regression:
        y = y.astype(np.float64 if y.dtype.kind != "f" else y.dtype, copy=True)
        y[rows] = np.nan
    else:
        y = y.astype(object) if y.dtype.kind not in "iuf" else y.copy()
        y[rows] = MASKED_CLASS
    return y


def pack_domains(X_source, y_source, X_target, y_target=None):
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
        Source labels (numbers).
    X_target : array-like of shape (n_target, ...)
        Target rows, with the same shape per row as ``X_source``.
    y_target : array-like of shape (n_target,) or None, default=None
        None: the target rows are unlabelled and masked in ``y`` -- with -1
        when ``y_source`` holds classes, NaN when it is continuous (cast
        integer-valued regression targets to float, or they count as classes).
        Labels given here are kept: a :class:`DAPipeline` never trains on
        target labels, but ``score(..., sample_domain=sample_domain)`` uses
        them.

    Returns
    -------
    X : ndarray of shape (n_source + n_target, ...)
    y : ndarray of shape (n_source + n_target,)
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
    if y_source.dtype.kind not in "iuf":
        raise ValueError(
            "y_source must hold numbers, so that unlabelled target rows can be "
            "masked with -1; encode class names with "
            "sklearn.preprocessing.LabelEncoder."
        )
    if y_target is None:
        if type_of_target(y_source) == "continuous":
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


# ---- aligners ----------------------------------------------------------------------


class _Aligner(TransformerMixin, BaseEstimator):
    """Shared face of the aligners: domains in, source rows mapped out."""

    # like skada's adapters: a metadata-routing caller passes sample_domain
    # without an explicit set_fit_request / set_transform_request
    __metadata_request__fit = {"sample_domain": True}
    __metadata_request__transform = {"sample_domain": True}

    _spec = {}

    def _fit_domains(self, X, sample_domain):
        """Validate; return X and its source and target rows (or None, None)."""
        check_params(self, self._spec)
        X = validate_table(
            self, X, dtype=[np.float64, np.float32], ensure_min_samples=1
        )
        sample_domain = _check_sample_domain(sample_domain, X.shape[0])
        if sample_domain is None:
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
            Ignored.
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


def _covariance(X, reg):
    if reg == "auto":
        # Ledoit-Wolf on standardised features, scaled back (as skada does)
        scale = X.std(axis=0)
        scale[scale == 0] = 1.0
        cov = ledoit_wolf(X / scale)[0]
        return scale[:, None] * cov * scale[None, :]
    return shrunk_covariance(empirical_covariance(X), shrinkage=reg)


def _matrix_power(cov, power):
    """``cov ** power`` for a symmetric PSD matrix; tiny eigenvalues floored."""
    w, V = np.linalg.eigh(cov)
    top = max(float(w.max()), np.finfo(np.float64).tiny)
    w = np.clip(w, top * 1e-10, None)
    return (V * w**power) @ V.T


class CORAL(_Aligner):
    """Correlation alignment: give the source rows the target's covariance.

    CORAL (Sun, Feng and Saenko, 2016) whitens the source features with their
    regularised covariance and re-colours them with the target's:
    ``(x - mean_source) @ C_s^(-1/2) @ C_t^(1/2) + mean_target``. The mapped
    source rows have the target's mean and (regularised) covariance; target
    rows pass through unchanged. Put it before a classifier in
    :func:`make_da_pipeline`, on raw features or after a
    :class:`~skxfer.PretrainedFeatureExtractor`.

    Fitted without target rows (``fit(X)``, ``fit(X, y)``, or a
    ``sample_domain`` with no negative entry) it is the identity.

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
    >>> X, _, sample_domain = pack_domains(X_source, np.zeros(200), X_target)
    >>> X_new = CORAL(reg=0).fit_transform(X, sample_domain=sample_domain)
    >>> np.allclose(np.cov(X_new[:200].T, bias=True), np.cov(X_target.T, bias=True))
    True
    >>> np.array_equal(X_new[200:], X_target)     # target rows unchanged
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
            Ignored.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            Source rows > 0, target rows < 0. None: no target rows, and
            :meth:`transform` is the identity.

        Returns
        -------
        self : CORAL
        """
        X, source, target = self._fit_domains(X, sample_domain)
        if source is not None:
            for name, rows in (("source", source), ("target", target)):
                if len(rows) < 2:
                    raise ValueError(
                        f"CORAL needs at least 2 rows of each domain to estimate "
                        f"a covariance; got {len(rows)} {name} row."
                    )
            source = source.astype(np.float64)
            target = target.astype(np.float64)
            mean_source, mean_target = source.mean(axis=0), target.mean(axis=0)
            inv_sqrt = _matrix_power(_covariance(source, self.reg), -0.5)
            sqrt = _matrix_power(_covariance(target, self.reg), 0.5)
        else:
            mean_source = mean_target = inv_sqrt = sqrt = None
        self.mean_source_, self.mean_target_ = mean_source, mean_target
        self.cov_source_inv_sqrt_, self.cov_target_sqrt_ = inv_sqrt, sqrt
        return self

    def transform(self, X, sample_domain=None):
        """Map source rows into the target's frame; target rows pass through.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to map.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            Source rows > 0 are mapped, target rows < 0 are not. None: all
            rows are target rows.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_features)
            Same dtype as ``X`` (float32 stays float32).
        """
        X, source = self._transform_domains(X, sample_domain)
        X_new = X.copy()
        if self.mean_source_ is not None and source.any():
            mapped = (X[source] - self.mean_source_) @ self.cov_source_inv_sqrt_
            X_new[source] = mapped @ self.cov_target_sqrt_ + self.mean_target_
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


class SubspaceAlignment(_Aligner):
    """Subspace alignment: map the source principal subspace onto the target's.

    Subspace alignment (Fernando et al., 2013) takes the ``n_components``
    leading principal directions of each domain, ``P_s`` and ``P_t``
    (``n_features x n_components``), and the alignment ``M = P_s' P_t``.
    Source rows become ``(x - mean_source) @ P_s @ M``; target rows are
    expressed in their own principal subspace, ``(x - mean_target) @ P_t``.
    Both end up in the target's coordinates, ``n_components`` wide.

    Fitted without target rows (``fit(X)``, ``fit(X, y)``, or a
    ``sample_domain`` with no negative entry) it is the identity and keeps
    every feature.

    Parameters
    ----------
    n_components : int or None, default=None
        Number of principal directions. None: as many as the smallest of the
        number of features, source rows and target rows allows.

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
    >>> X, _, sample_domain = pack_domains(X_source, np.zeros(100), X_target)
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
            Ignored.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            Source rows > 0, target rows < 0. None: no target rows, and
            :meth:`transform` is the identity.

        Returns
        -------
        self : SubspaceAlignment
        """
        X, source, target = self._fit_domains(X, sample_domain)
        if source is None:
            self.n_components_ = None
            self.mean_source_ = self.mean_target_ = None
            self.components_source_ = self.components_target_ = None
            self.alignment_ = None
            return self
        largest = min(X.shape[1], len(source), len(target))
        n_components = largest if self.n_components is None else self.n_components
        if n_components > largest:
            raise ValueError(
                f"n_components={n_components} is too large: SubspaceAlignment "
                f"can keep at most min(n_features, source rows, target rows) = "
                f"min({X.shape[1]}, {len(source)}, {len(target)}) = {largest}."
            )
        bases, means = [], []
        for rows in (source, target):
            rows = rows.astype(np.float64)
            mean = rows.mean(axis=0)
            # right singular vectors of the centred rows: principal directions
            _, _, Vt = np.linalg.svd(rows - mean, full_matrices=False)
            bases.append(Vt[:n_components].T)
            means.append(mean)
        self.n_components_ = n_components
        self.mean_source_, self.mean_target_ = means
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


def _takes_domain(step, method):
    """Whether ``step.method`` accepts ``sample_domain`` (a DA-aware step)."""
    try:
        params = inspect.signature(getattr(step, method)).parameters
    except (AttributeError, TypeError, ValueError):
        return False
    return "sample_domain" in params


def _final_has(attr):
    def check(self):
        final = self.steps_[-1][1] if hasattr(self, "steps_") else self.steps[-1][1]
        return not _skipped(final) and hasattr(final, attr)

    return check


class DAPipeline(BaseEstimator):
    """A pipeline for domain adaptation: aligners see all rows, the last step
    trains on the labelled source rows.

    A scikit-learn ``Pipeline`` cannot drop rows, so it would train its
    classifier on the target rows too (with the mask -1 as a class). Here the
    intermediate steps (scalers, feature extractors, aligners) are fitted on
    every row -- source and target -- and the last step only on the source
    rows that have a label (unless it takes ``sample_domain`` itself, as an
    aligner does: then it sees every row too, and the pipeline is a
    transformer). Build one with :func:`make_da_pipeline`.

    Domains reach ``fit`` as ``sample_domain`` (source rows > 0, target rows
    < 0), or, without it, from the mask in ``y``: rows labelled -1 (classes)
    or NaN (regressors) are unlabelled target rows, the others source rows.
    Target labels never train the last step. Steps whose ``fit_transform``
    and ``transform`` take ``sample_domain`` (the aligners of this module,
    skada's adapters) get it; the others get the rows alone. Without target
    rows, the aligners are the identity and the pipeline is an ordinary one.

    At prediction time rows without ``sample_domain`` are target rows
    (``predict(X, sample_domain=1)`` maps them as source rows). ``score``
    evaluates the labelled rows of ``y``, each in its own domain: without
    ``sample_domain`` those are source rows (the rule of ``fit``: a label
    marks a source row), which is what cross-validation and
    ``GridSearchCV`` measure on a held-out fold when the domains come from
    the mask -- accuracy on held-out source rows mapped into the target
    frame. To score *target* rows with known labels, say so:
    ``score(X_target, y_target, sample_domain=-1)``.

    With ``sklearn.set_config(enable_metadata_routing=True)``,
    ``sample_domain`` passed to ``cross_validate`` (``params=``) or
    ``GridSearchCV.fit`` reaches ``fit`` and ``score`` (and the scorers of
    this module): it is requested by default, and ``set_fit_request`` /
    ``set_score_request`` change that. Without routing, it reaches ``fit``
    only. See the module's docstring for both ways.

    Parameters
    ----------
    steps : list of (str, estimator) tuples
        Transformers (or 'passthrough'), then a final estimator, as in
        ``sklearn.pipeline.Pipeline``. Steps are cloned at ``fit``; the
        fitted ones are in ``steps_``.

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
    __metadata_request__score = {"sample_domain": True}
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

    def _is_regression(self, final):
        return not _skipped(final) and is_regressor(final)

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
            (regressors). Target rows' labels are never used for training.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            Source rows > 0, target rows < 0. None: read from the mask of
            ``y`` (masked rows are target rows, the others source rows).

        Returns
        -------
        self : DAPipeline
        """
        steps = self._validated_steps()
        final_name, final = steps[-1]
        regression = self._is_regression(final)
        n_rows = _n_rows(X)
        sample_domain = _check_sample_domain(sample_domain, n_rows)
        y_arr = None if y is None else np.asarray(y)
        if y_arr is not None and len(y_arr) != n_rows:
            raise ValueError(
                f"y has {len(y_arr)} entries but X has {n_rows} rows."
            )
        masked = None if y_arr is None else _unlabelled(y_arr, regression)
        if sample_domain is None and masked is not None and masked.any():
            sample_domain = np.where(masked, TARGET_DOMAIN, SOURCE_DOMAIN)
        y_steps = y
        if sample_domain is not None and y_arr is not None:
            hidden = (sample_domain < 0) & ~masked
            if hidden.any():  # target labels never train anything
                y_steps = _masked_copy(y_arr, hidden, regression)
                masked = masked | hidden
        # a DA-aware last step (an aligner) sees every row, like the others
        final_takes_domain = not _skipped(final) and _takes_domain(final, "fit")
        train = np.ones(n_rows, bool) if sample_domain is None else sample_domain > 0
        if masked is not None and not final_takes_domain:
            train &= ~masked
            if not train.any():
                kind = "NaN" if regression else "-1"
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
            if _takes_domain(step, "fit_transform"):
                Xt = step.fit_transform(Xt, y_steps, sample_domain=sample_domain)
            else:
                Xt = step.fit_transform(Xt, y_steps)
            fitted.append((name, step))
        if final_takes_domain:
            final = clone(final).fit(Xt, y_steps, sample_domain=sample_domain)
        elif not _skipped(final):
            final = clone(final)
            rows = np.flatnonzero(train)
            if y_arr is not None and len(rows) < n_rows:
                final.fit(_take_rows(Xt, rows), y_arr[rows])
            elif len(rows) < n_rows:
                final.fit(_take_rows(Xt, rows))
            else:
                final.fit(Xt, y)
        fitted.append((final_name, final))
        self.steps_ = fitted
        self.named_steps_ = Bunch(**dict(fitted))
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
            if _takes_domain(step, "transform"):
                Xt = step.transform(Xt, sample_domain=sample_domain)
            else:
                Xt = step.transform(Xt)
        return Xt

    @property
    def _final(self):
        return self.steps_[-1][1]

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
        Xt = self._transform_steps(X, sample_domain)
        return self._final.predict(Xt)

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
        Xt = self._transform_steps(X, sample_domain)
        return self._final.predict_proba(Xt)

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
        Xt = self._transform_steps(X, sample_domain)
        return self._final.predict_log_proba(Xt)

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
        Xt = self._transform_steps(X, sample_domain)
        return self._final.decision_function(Xt)

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
        if _skipped(self._final):
            return Xt
        if _takes_domain(self._final, "transform"):
            return self._final.transform(Xt, sample_domain=sample_domain)
        return self._final.transform(Xt)

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
            final = self.steps_[-1][1]
            masked = _unlabelled(y, self._is_regression(final))
            if masked.any():
                sample_domain = np.where(masked, TARGET_DOMAIN, SOURCE_DOMAIN)
        return self.transform(X, sample_domain=sample_domain)

    @available_if(_final_has("score"))
    def score(self, X, y, sample_domain=None):
        """The last step's score on the labelled rows, each in its domain.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Rows to score.
        y : array-like of shape (n_samples,)
            True labels; rows masked with -1 (classes) or NaN (regressors)
            are skipped.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            Domain of each row. None: the rule of ``fit`` -- labelled rows
            are source rows. Pass ``-1`` to score labelled *target* rows.

        Returns
        -------
        score : float
            Accuracy for classifiers, R^2 for regressors (the last step's
            ``score``).
        """
        check_is_fitted(self)
        n_rows = _n_rows(X)
        sample_domain = _check_sample_domain(sample_domain, n_rows)
        y_arr = np.asarray(y)
        if len(y_arr) != n_rows:
            raise ValueError(f"y has {len(y_arr)} entries but X has {n_rows} rows.")
        labelled = ~_unlabelled(y_arr, self._is_regression(self._final))
        if not labelled.any():
            raise ValueError(
                "y has no labelled rows to score: every row is masked as "
                "unlabelled. Score with an unsupervised scorer such as "
                "PredictionEntropyScorer instead."
            )
        if sample_domain is None:
            sample_domain = np.full(n_rows, SOURCE_DOMAIN)
        rows = np.flatnonzero(labelled)
        if len(rows) < n_rows:
            X, y_arr = _take_rows(X, rows), y_arr[rows]
        Xt = self._transform_steps(X, sample_domain[rows])
        return self._final.score(Xt, y_arr)

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


# ---- unsupervised model selection --------------------------------------------------


class PredictionEntropyScorer:
    """Score without target labels: the (negative) entropy of the predictions.

    Mean Shannon entropy (in nats) of the predicted class probabilities on the
    target rows, negated so that higher is better, as ``GridSearchCV`` and
    ``cross_val_score`` expect (0 is the best possible score). Skada's
    ``PredictionEntropyScorer`` (after Morerio et al., 2018) computes the same
    quantity.

    Use it as ``scoring=PredictionEntropyScorer()``. The target rows are
    those with ``sample_domain < 0`` when it is given (metadata routing),
    otherwise those masked in ``y`` (-1), otherwise every row.

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
            ``-mean(sum_k p_k log p_k)`` over target rows; <= 0.
        """
        if not hasattr(estimator, "predict_proba"):
            raise ValueError(
                "PredictionEntropyScorer needs an estimator with predict_proba; "
                f"{type(estimator).__name__} has none."
            )
        n_rows = _n_rows(X)
        sample_domain = _check_sample_domain(sample_domain, n_rows)
        if sample_domain is not None:
            target = sample_domain < 0
        elif y is not None:
            target = _unlabelled(y, regression=False)
        else:
            target = np.ones(n_rows, bool)
        if not target.any():
            raise ValueError(
                "PredictionEntropyScorer found no target rows to score: give "
                "sample_domain (< 0 for target rows) or mask them in y with -1."
            )
        rows = np.flatnonzero(target)
        X_target = X if len(rows) == n_rows else _take_rows(X, rows)
        if sample_domain is not None and _takes_domain(estimator, "predict_proba"):
            proba = estimator.predict_proba(
                X_target, sample_domain=sample_domain[rows]
            )
        else:
            proba = estimator.predict_proba(X_target)
        proba = np.clip(np.asarray(proba, dtype=np.float64), 0.0, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            plogp = np.where(proba > 0, proba * np.log(proba), 0.0)
        return float(np.mean(plogp.sum(axis=1)))

    def get_metadata_routing(self):
        """Request ``sample_domain`` when metadata routing is enabled.

        Returns
        -------
        routing : MetadataRequest
        """
        request = MetadataRequest(owner=self)
        request.score.add_request(param="sample_domain", alias=True)
        return request

    def __repr__(self):
        return "PredictionEntropyScorer()"


def _find_domains(X, y, sample_domain, regression, scorer):
    """Source and target rows for a scorer: sample_domain, else the y mask."""
    n_rows = _n_rows(X)
    sample_domain = _check_sample_domain(sample_domain, n_rows)
    if y is None:
        raise ValueError(
            f"{scorer} needs y: the labels of the source rows, with the target "
            "rows masked (-1 for classes, NaN for regression)."
        )
    y = np.asarray(y)
    if len(y) != n_rows:
        raise ValueError(f"y has {len(y)} entries but X has {n_rows} rows.")
    masked = _unlabelled(y, regression)
    if sample_domain is None:
        source, target = ~masked, masked
    else:
        source, target = (sample_domain > 0) & ~masked, sample_domain < 0
    if not target.any() or not source.any():
        missing = "target rows" if not target.any() else "labelled source rows"
        raise ValueError(
            f"{scorer} found no {missing} to score: give sample_domain (source "
            "> 0, target < 0) or mask the target rows in y (-1 for classes, NaN "
            "for regression), and keep both domains in every fold."
        )
    return y, sample_domain, np.flatnonzero(source), np.flatnonzero(target)


class CircularValidation:
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
    ``cross_validate``. On a held-out fold the source rows are those with a
    label and ``sample_domain > 0`` (or, without ``sample_domain``, every
    labelled row) and the target rows those with ``sample_domain < 0`` (or
    masked in ``y``); each fold needs both. A classifier's default
    ``StratifiedKFold`` spreads the masked rows (-1 is one more class to it)
    over the folds.

    Limits: every score fits the estimator once more (on the held-out
    fold), doubling the cost of a search. It assumes the method works as
    well from target to source as from source to target, and a fold's
    backward fit sees only that fold's rows. It ranks adaptations; it is not
    an estimate of target accuracy.

    Parameters
    ----------
    source_scorer : callable or None, default=None
        ``source_scorer(y_true, y_pred)``, higher is better. None:
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
            Its ``fit`` must take ``sample_domain`` (a :class:`DAPipeline`).
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
        from sklearn.metrics import balanced_accuracy_score, r2_score

        if not _takes_domain(estimator, "fit"):
            raise ValueError(
                "CircularValidation refits the estimator with swapped domains, "
                "so its fit must take sample_domain, as a DAPipeline's does "
                f"(make_da_pipeline); {type(estimator).__name__}.fit does not."
            )
        regression = is_regressor(estimator)
        y, _, source, target = _find_domains(
            X, y, sample_domain, regression, "CircularValidation"
        )
        metric = self.source_scorer
        if metric is None:
            metric = r2_score if regression else balanced_accuracy_score
        X_source, X_target = _take_rows(X, source), _take_rows(X, target)
        y_source = y[source]
        predicted = np.asarray(estimator.predict(X_target, sample_domain=-1))
        if not regression and len(np.unique(predicted)) == 1:
            # one class cannot train a classifier; it would predict it everywhere
            return float(metric(y_source, np.full(len(source), predicted[0])))
        # backward: the target rows, with their predicted labels, become the
        # source; the source rows become the (unlabelled) target
        rows = np.concatenate([target, source])
        y_back = _masked_copy(
            np.concatenate([predicted, y_source]),
            np.arange(len(target), len(rows)),
            regression,
        )
        domains = np.r_[
            np.full(len(target), SOURCE_DOMAIN), np.full(len(source), TARGET_DOMAIN)
        ]
        backward = clone(estimator).fit(
            _take_rows(X, rows), y_back, sample_domain=domains
        )
        return float(metric(y_source, backward.predict(X_source, sample_domain=-1)))

    def get_metadata_routing(self):
        """Request ``sample_domain`` when metadata routing is enabled.

        Returns
        -------
        routing : MetadataRequest
        """
        request = MetadataRequest(owner=self)
        request.score.add_request(param="sample_domain", alias=True)
        return request

    def __repr__(self):
        if self.source_scorer is None:
            return "CircularValidation()"
        return f"CircularValidation(source_scorer={self.source_scorer!r})"
