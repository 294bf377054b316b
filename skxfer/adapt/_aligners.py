"""Aligners: map the source rows into the target's frame.

:class:`CORAL` (second-order statistics) and :class:`SubspaceAlignment`
(principal subspaces), with the face they share: domains in, source rows
mapped out; the identity without target rows.
"""

import inspect
import os
import warnings

import joblib
import numpy as np
import sklearn
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    OneToOneFeatureMixin,
    TransformerMixin,
    clone,
)
from sklearn.covariance import empirical_covariance, ledoit_wolf, shrunk_covariance
from sklearn.exceptions import DataDimensionalityWarning
from sklearn.utils.validation import check_is_fitted

from .._validation import (
    any_of,
    check_params,
    is_int,
    is_none,
    is_real,
    one_of,
    validate_table,
)
from ._domains import UNKNOWN_TARGET_DOMAIN, _check_sample_domain, read_domains

_LIBRARIES = tuple(
    os.path.dirname(module.__file__) + os.sep
    for module in (sklearn, joblib, __import__("skxfer"))
)


def _callers_stacklevel():
    """The ``stacklevel`` of the first frame outside skxfer, scikit-learn and
    joblib: the user's line that led here (through a ``Pipeline`` or not)."""
    frame, level = inspect.currentframe().f_back, 1
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARIES):
        frame, level = frame.f_back, level + 1
    return level


def _warn_if_masked(aligner, y):
    """Warn that an aligner fitted on a masked ``y`` without domains is the identity.

    Only where the mask is plausible: NaN, or the number -1 in integer or
    object labels. A float ``y`` without NaN is left alone: -1.0 is as likely
    a regression value there as a class.
    """
    if y is None:
        return
    y = np.asarray(y)
    try:
        _, labelled = read_domains(y, task="regression" if y.dtype.kind == "f"
                                   else None)
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
        stacklevel=_callers_stacklevel(),
    )


class _Aligner(TransformerMixin, BaseEstimator):
    """Shared face of the aligners: domains in, source rows mapped out."""

    # like skada's adapters: a metadata-routing caller passes sample_domain
    # without an explicit set_fit_request / set_transform_request
    __metadata_request__fit = {"sample_domain": True}
    __metadata_request__transform = {"sample_domain": True}

    _spec = {}

    def _fit_domains(self, X, y, sample_domain):
        """Validate; return X, its source and target rows (or None, None) and
        the checked face.

        The input checks record ``n_features_in_`` (and the feature names) on
        a fresh clone, the checked face: :meth:`_commit` copies them over once
        the fit has succeeded, so a refused refit leaves the aligner as it was.
        """
        check_params(self, self._spec)
        checked = clone(self)
        X = validate_table(
            checked, X, dtype=[np.float64, np.float32], ensure_min_samples=1
        )
        sample_domain = _check_sample_domain(sample_domain, X.shape[0])
        if sample_domain is None:
            _warn_if_masked(self, y)
            return X, None, None, checked
        source, target = X[sample_domain > 0], X[sample_domain < 0]
        if len(target) == 0:
            # nothing to align to (a plain fit, or a fold without target rows)
            return X, None, None, checked
        if len(source) == 0:
            raise ValueError(
                f"sample_domain has no source rows (> 0): {type(self).__name__} "
                "maps source rows onto the target, and needs both."
            )
        return X, source, target, checked

    def _commit(self, checked, **fitted):
        """Set the fitted attributes, those of the input checks included."""
        for name in ("n_features_in_", "feature_names_in_"):
            if hasattr(checked, name):
                setattr(self, name, getattr(checked, name))
            elif name in self.__dict__:
                delattr(self, name)
        for name, value in fitted.items():
            setattr(self, name, value)
        return self

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
    """Mean, centred rows, variance and scale of one domain; near-constant
    features 0.

    A feature whose variance is within the rounding error of a two-pass
    variance (scikit-learn's ``StandardScaler`` rule: ``var <= n eps var +
    (n eps mean)^2``) is constant: a target pixel fixed at 0.3 has a standard
    deviation of 1e-15 from rounding alone, and must not be divided by it.

    The rows are divided first by ``scale``, the power of two at or below
    their largest magnitude, so that squares neither overflow (values near
    1e160) nor vanish (near 1e-160); dividing by a power of two rounds
    nothing. The mean is in the rows' units, the centred rows and the
    variance in the scaled frame.
    """
    rows = rows.astype(np.float64)
    top = float(np.max(np.abs(rows))) if rows.size else 0.0
    scale = float(2.0 ** np.floor(np.log2(top))) if top > 0 else 1.0
    rows = rows / scale
    n, eps = rows.shape[0], np.finfo(np.float64).eps
    mean = rows.mean(axis=0)
    centred = rows - mean
    var = np.mean(centred**2, axis=0)
    constant = var <= n * eps * var + (n * eps * mean) ** 2
    centred[:, constant] = 0.0
    var[constant] = 0.0
    return mean * scale, centred, var, scale


def _covariance(centred, var, reg, unit=1.0):
    """Regularised covariance of centred rows; ``unit``: what 1 in the rows'
    units is in the frame of ``centred`` (see :func:`_centred`)."""
    if reg == "auto":
        # Ledoit-Wolf on standardised features, scaled back (as skada does:
        # a constant feature keeps a scale of 1, in the rows' units)
        scale = np.sqrt(var)
        scale[var == 0] = unit
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
    tells them) are treated as constant: never divided by their noise. A
    domain whose rows are all the same (fewer than 2 distinct rows) has no
    covariance to estimate, and is refused. Each domain's statistics are
    computed on its rows divided by a power of two near their largest
    magnitude, so values near 1e160 or 1e-160 neither overflow nor vanish
    (the output scales with the input, exactly).

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
        X, source, target, checked = self._fit_domains(X, y, sample_domain)
        mean_source = mean_target = inv_sqrt = sqrt = None
        if source is not None:
            stats = {}
            for name, rows in (("source", source), ("target", target)):
                if len(rows) < 2:
                    raise ValueError(
                        f"CORAL needs at least 2 rows of each domain to estimate "
                        f"a covariance; got {len(rows)} {name} row."
                    )
                mean, centred, var, scale = _centred(rows)
                if not var.any():
                    raise ValueError(
                        "CORAL needs at least 2 distinct rows of each domain to "
                        f"estimate a covariance; the {len(rows)} {name} rows are "
                        "all the same."
                    )
                cov = _covariance(centred, var, self.reg, unit=1.0 / scale)
                stats[name] = mean, cov, scale
            # each covariance in its domain's scaled frame: scale ** 2 * cov
            mean_source, cov, scale = stats["source"]
            inv_sqrt = _matrix_power(cov, -0.5) / scale
            mean_target, cov, scale = stats["target"]
            sqrt = _matrix_power(cov, 0.5) * scale
        return self._commit(
            checked, mean_source_=mean_source, mean_target_=mean_target,
            cov_source_inv_sqrt_=inv_sqrt, cov_target_sqrt_=sqrt,
            # absent from CORALs pickled before the centred frame
            _centred=True,
        )

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
    refused. The principal directions are computed on each domain's rows
    divided by a power of two near their largest magnitude, as
    :class:`CORAL` does, so huge or tiny values neither overflow nor vanish.

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
        X, source, target, checked = self._fit_domains(X, y, sample_domain)
        if source is None:
            return self._commit(
                checked, n_components_=None, mean_source_=None, mean_target_=None,
                components_source_=None, components_target_=None, alignment_=None,
            )
        n_features = X.shape[1]
        if self.n_components is not None and self.n_components > n_features:
            raise ValueError(
                f"n_components={self.n_components} is too large: "
                f"SubspaceAlignment keeps at most n_features = {n_features} "
                "directions."
            )
        domains = [_centred(rows) for rows in (source, target)]
        ranks = [_rank(centred) for _, centred, _, _ in domains]
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
        for _, centred, _, _ in domains:
            # right singular vectors of the centred rows: principal directions
            # (of the scaled rows: the same directions)
            _, _, Vt = np.linalg.svd(centred, full_matrices=False)
            bases.append(Vt[:n_components].T)
        return self._commit(
            checked, n_components_=n_components, mean_source_=domains[0][0],
            mean_target_=domains[1][0], components_source_=bases[0],
            components_target_=bases[1], alignment_=bases[0].T @ bases[1],
        )

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
