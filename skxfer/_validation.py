"""Parameter checks shared by skxfer estimators.

Each estimator describes its parameters as ``name -> (test, description)``;
:func:`check_params` runs every test and raises one ``ValueError`` that lists
everything wrong, in scikit-learn's wording, so a user fixes all of it at once.
"""

from numbers import Integral, Real

import numpy as np


def is_int(low=None, high=None):
    def test(value):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral):
            return False
        return (low is None or value >= low) and (high is None or value <= high)

    return test


def is_real(low=None, high=None, low_open=False, high_open=False):
    def test(value):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
            return False
        if not np.isfinite(value):
            return False
        if low is not None and (value <= low if low_open else value < low):
            return False
        if high is not None and (value >= high if high_open else value > high):
            return False
        return True

    return test


def is_bool(value):
    return isinstance(value, (bool, np.bool_))


def one_of(*options):
    def test(value):
        return isinstance(value, str) and value in options

    return test


def any_of(*tests):
    def test(value):
        return any(t(value) for t in tests)

    return test


def is_none(value):
    return value is None


def check_params(estimator, spec):
    """Check ``estimator``'s parameters against ``spec``; raise one error for all.

    Parameters
    ----------
    estimator : object
        The estimator whose ``get_params(deep=False)`` are checked.
    spec : dict
        ``{name: (test, description)}``: ``test(value)`` returns True when the
        value is fine; ``description`` completes "must be ...".
    """
    params = estimator.get_params(deep=False)
    name = type(estimator).__name__
    problems = []
    for param, (test, description) in spec.items():
        value = params[param]
        try:
            ok = test(value)
        except Exception:  # a test that cannot even look at the value fails it
            ok = False
        if not ok:
            problems.append(
                f"The {param!r} parameter of {name} must be {description}. "
                f"Got {value!r} instead."
            )
    if problems:
        raise ValueError("\n".join(problems))


class SparseInputError(ValueError, TypeError):
    """Sparse input where dense data is needed.

    A ``ValueError`` like every other data problem, and a ``TypeError`` as
    scikit-learn raises for sparse input, so either ``except`` catches it.
    """


def validate_table(estimator, *args, **kwargs):
    """``validate_data``; a sparse refusal becomes a SparseInputError."""
    from sklearn.utils.validation import validate_data

    try:
        return validate_data(estimator, *args, **kwargs)
    except TypeError as err:
        if "Sparse data was passed" in str(err):
            raise SparseInputError(str(err)) from err
        raise


# the largest magnitude whose square float32 still holds (about 1.8e19)
_MAX_MAGNITUDE = float(np.sqrt(np.finfo(np.float32).max))


def check_magnitude(X):
    """Refuse features so large that float32 arithmetic overflows on them."""
    if X.size and X.dtype.kind == "f":
        top = float(np.max(np.abs(X)))
        if top > _MAX_MAGNITUDE:
            raise ValueError(
                f"X holds values up to {top:.3g} in magnitude, beyond what float32 "
                f"arithmetic can square ({_MAX_MAGNITUDE:.2g}): training would "
                "overflow. Scale the features, e.g. with "
                "sklearn.preprocessing.StandardScaler in a Pipeline."
            )


def check_sample_weight(sample_weight, n_samples, name="sample_weight"):
    """``sample_weight`` as a new float32 array of ``n_samples``, or None.

    A number gives every sample that weight; weights must be finite and >= 0.
    The caller's array is never written to. ``name`` is the argument's name
    in messages (``sample_weight_val`` for a validation set's weights).
    """
    from numbers import Number

    from sklearn.utils.validation import check_array

    if sample_weight is None:
        return None
    if isinstance(sample_weight, Number):
        sample_weight = np.full(n_samples, sample_weight, dtype=np.float64)
    w = check_array(sample_weight, ensure_2d=False, dtype=np.float64,
                    input_name=name, copy=True)
    if w.ndim != 1:
        raise ValueError(
            f"Sample weights must be 1D array or scalar; got shape {w.shape}."
        )
    if w.shape[0] != n_samples:
        raise ValueError(
            f"{name}.shape == {w.shape}, expected {(n_samples,)}: one "
            "weight per sample."
        )
    if (w < 0).any():
        raise ValueError(f"Negative values in data passed to {name}.")
    if not w.any():
        raise ValueError(
            "Sample weights are all zero: at least one weight must be non-zero"
            + ("." if name == "sample_weight" else f" ({name}).")
        )
    return w.astype(np.float32)


# ---- fitted state ------------------------------------------------------------------


def shallow_copy(obj):
    """A new object sharing ``obj``'s attributes (no pickling, no deep copy)."""
    new = obj.__class__.__new__(obj.__class__)
    new.__dict__.update(obj.__dict__)
    return new


def fresh_copy(estimator, fitted):
    """A shallow copy of ``estimator`` without the fitted attributes ``fitted``.

    ``fit`` builds its state on this copy and hands it over with
    :func:`commit_fitted` once nothing can fail any more.
    """
    new = shallow_copy(estimator)
    for name in fitted:
        new.__dict__.pop(name, None)
    return new


def commit_fitted(estimator, new, fitted):
    """Give ``estimator`` the fitted attributes ``fitted`` of ``new``, all at once.

    Attributes the new fit did not set (``feature_names_in_`` after a fit on a
    plain array, say) are removed, so no trace of an earlier fit remains.
    """
    for name in fitted:
        if name in new.__dict__:
            estimator.__dict__[name] = new.__dict__[name]
        else:
            estimator.__dict__.pop(name, None)


# the layout of fitted skxfer objects in a pickle; version 1 (skxfer
# 0.1.0.dev0) kept image backbones in several linked places
PICKLE_FORMAT = 2


def stamped(state):
    """A copy of a pickled ``state`` (never the live ``__dict__``, which
    ``BaseEstimator.__getstate__`` may return), marked with the format."""
    state = dict(state)
    state["_skxfer_pickle"] = PICKLE_FORMAT
    return state


def check_pickle_format(obj, state, fitted):
    """Refuse a fitted object pickled in another layout, naming the versions."""
    found = state.get("_skxfer_pickle", 1)
    if fitted and found != PICKLE_FORMAT:
        from . import __version__

        raise ValueError(
            f"This fitted {type(obj).__name__} was pickled by another skxfer "
            f"version (pickle format {found}; skxfer 0.1.0.dev0 wrote format 1), "
            f"which skxfer {__version__} (format {PICKLE_FORMAT}) cannot load. "
            "Fit it again with this version, or load it with the version that "
            "wrote it."
        )
