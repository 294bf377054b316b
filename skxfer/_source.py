"""A fitted skxfer estimator used as a parameter: the source of a transfer.

``TransferMLPClassifier(backbone=source)`` and
``PretrainedFeatureExtractor(source)`` take a fitted estimator as a parameter.
scikit-learn's ``clone`` would reset it (and with it the pretraining), and
``set_params(backbone__lr=...)`` would change the user's source through the
estimator that shares it. This module holds the rules for such a parameter:
recognising a source (duck-typed, so that lower modules never import the
estimators), cloning around it, refusing nested changes, and reading its
pretrained layers as a new module.
"""

import copy
from collections import OrderedDict

from torch import nn


def unwrap_source(obj):
    """The estimator inside ``sklearn.frozen.FrozenEstimator``; else ``obj``.

    A value in a ``GridSearchCV`` grid is cloned, which would reset a fitted
    source network; ``FrozenEstimator(source)`` survives that.
    """
    from sklearn.frozen import FrozenEstimator

    if isinstance(obj, FrozenEstimator):
        return obj.estimator
    return obj


def is_fitted_source(obj):
    """A fitted skxfer MLP estimator (duck-typed: lower modules never import it)."""
    obj = unwrap_source(obj)
    return bool(getattr(obj, "_skxfer_network", False)) and hasattr(obj, "net_")


def is_unfitted_source(obj):
    obj = unwrap_source(obj)
    return bool(getattr(obj, "_skxfer_network", False)) and not hasattr(obj, "net_")


def source_backbone(source):
    """The pretrained part of a fitted skxfer MLP estimator, as a new module.

    Returns ``(module, n_features_in, preprocessing)``: the hidden layers (after
    the source's own backbone, if it had one) mapping the source's input to its
    last hidden representation; the width of tabular input (None for images);
    and the preprocessing of the source's images (None for tables). The source
    is only read.
    """
    source = unwrap_source(source)
    module = source.module_
    extractor = getattr(source, "extractor_", None)
    images = extractor is not None and not extractor._tabular
    preprocessing = extractor.preprocessing_ if images else None
    n_in = None if images else source.n_features_in_
    if hasattr(module, "backbone"):  # backbone + MLP head
        body = nn.Sequential(
            OrderedDict(backbone=module.backbone, hidden=module.head.hidden)
        )
        return copy.deepcopy(body).cpu(), n_in, preprocessing
    return copy.deepcopy(module.hidden).cpu(), n_in, preprocessing


def clone_keeping_fitted_source(estimator, param):
    """scikit-learn's ``clone``, except that a fitted source network in ``param``
    is passed through as it is.

    ``GridSearchCV`` and ``cross_val_score`` clone every parameter; a fitted
    source network would come back unfitted, its pretraining lost. It is never
    trained in place (``fit`` copies its weights), and its parameters cannot
    be set through the clone (see :func:`refuse_nested_source_params`), so
    sharing it is safe. Everything else -- other parameters, metadata
    requests, ``set_output`` -- is cloned by scikit-learn's own code.
    """
    from sklearn.base import BaseEstimator

    value = getattr(estimator, param)
    if not is_fitted_source(value):
        return BaseEstimator.__sklearn_clone__(estimator)
    donor = estimator.__class__.__new__(estimator.__class__)
    donor.__dict__.update(estimator.__dict__)
    setattr(donor, param, None)
    new = BaseEstimator.__sklearn_clone__(donor)
    setattr(new, param, value)
    return new


def refuse_nested_source_params(estimator, param, params):
    """``params`` for ``set_params``, refusing changes to a fitted source network.

    The source is shared with its owner (and with every clone); setting its
    parameters through this estimator would change the user's source. Values
    equal to the source's own (``set_params(**get_params())``) are dropped.
    """
    source = params.get(param, getattr(estimator, param))
    if not is_fitted_source(source):
        return params
    current = source.get_params(deep=True)
    prefix = param + "__"
    changed = sorted(
        k for k, v in params.items()
        if k.startswith(prefix) and not _same(current.get(k[len(prefix):]), v)
    )
    if changed:
        raise ValueError(
            f"{param} is a fitted source network, shared with the object you "
            f"passed; its parameters cannot be set through "
            f"{type(estimator).__name__} (got {changed}). Fit a new source with "
            "those parameters and pass it instead."
        )
    return {k: v for k, v in params.items() if not k.startswith(prefix)}


def _same(a, b):
    if a is b:
        return True
    try:
        return bool(type(a) is type(b) and a == b)
    except Exception:  # arrays and other values without a plain ==
        return False


class SourceParamMixin:
    """``clone`` and ``set_params`` for an estimator whose parameter
    ``_source_param`` may be a fitted source network.

    A fitted source stays fitted (and shared) under ``clone``, and its own
    parameters cannot be set through the estimator; see
    :func:`clone_keeping_fitted_source` and
    :func:`refuse_nested_source_params`.
    """

    _source_param = None  # the parameter's name, set by each estimator

    def __sklearn_clone__(self):
        return clone_keeping_fitted_source(self, self._source_param)

    def set_params(self, **params):
        return super().set_params(
            **refuse_nested_source_params(self, self._source_param, params)
        )
