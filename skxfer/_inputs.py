"""What a fit trains on: the backbone's extractor, the inputs, the training set.

Three steps of ``fit``, each a function of explicit inputs:
:func:`backbone_for_fit` resolves ``backbone`` into a fitted extractor and
settles the model's shape (:class:`~skxfer._plan.TransferPlan`);
:func:`training_inputs` turns ``X`` into what the net trains on, by the plan;
:func:`training_set` joins it with the encoded targets and sample weights.
A validation set given to ``fit`` (:func:`given_validation`) takes the same
path (:func:`validation_inputs`).
"""

from typing import NamedTuple

import numpy as np
import torch
from sklearn.base import ClassifierMixin, RegressorMixin, clone
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    column_or_1d,
)
from torch.utils.data import Dataset

from ._backbones import is_checkpoint_path
from ._extract import PretrainedFeatureExtractor, stop_storing
from ._images import Labelled
from ._net import as_tensor_data
from ._plan import TransferPlan
from ._saving import load_network
from ._source import is_unfitted_source
from ._store import carry_settings
from ._timm import is_timm_name
from ._validation import check_magnitude, check_sample_weight, validate_table


def resolve_backbone(backbone, X, device, maker=None):
    """``backbone`` as a new fitted :class:`PretrainedFeatureExtractor`.

    Whatever form ``backbone`` takes, it is only read: the extractor owns a
    new module, the one the fitted estimator trains or runs. Fitting it runs
    one sample of ``X``, which gives the width of the features. The extractor
    works under the feature-store settings that ``maker`` (the estimator)
    carries, if any (a worker's).
    """
    if is_unfitted_source(backbone):
        raise ValueError(
            f"backbone is an unfitted {type(backbone).__name__}. Fit it on the "
            "source task first. (As backbone=source, a fitted one stays fitted "
            "under clone; as a value in a GridSearchCV grid it is cloned: "
            "pass sklearn.frozen.FrozenEstimator(source) there.)"
        )
    if isinstance(backbone, PretrainedFeatureExtractor):
        extractor = clone(backbone).set_params(device=device)
    elif is_checkpoint_path(backbone) and not is_timm_name(backbone):
        module, _ = load_network(backbone)
        extractor = PretrainedFeatureExtractor(module, weights=None, device=device)
    else:  # a model name (timm's too), a fitted source or a module of the user's
        extractor = PretrainedFeatureExtractor(
            backbone,
            weights="DEFAULT" if isinstance(backbone, str) else None,
            device=device,
        )
    if maker is not None:
        carry_settings(maker, extractor)
    return extractor.fit(X)


def backbone_for_fit(params, X, device, maker=None):
    """The fitted extractor of ``params["backbone"]`` (or None) and the plan.

    After this step nothing asks which shape the model has. A backbone that
    will train is taken off the feature store: its outputs change with every
    step. ``maker``: see :func:`resolve_backbone`.
    """
    backbone = params["backbone"]
    extractor = None if backbone is None else resolve_backbone(backbone, X, device,
                                                               maker)
    plan = TransferPlan.for_fit(params, extractor)
    if plan.end_to_end:
        stop_storing(extractor)
    return extractor, plan


def _validated_table(estimator, X, y, reset):
    """``validate_data`` for training rows: float32, the targets checked."""
    regressor = isinstance(estimator, RegressorMixin)
    try:
        X, y = validate_table(estimator, X, y, reset=reset, dtype=np.float32,
                              multi_output=regressor, y_numeric=regressor)
    except ValueError as err:
        if "Found array with dim" in str(err) and estimator.backbone is None:
            raise ValueError(
                f"{err} For images, give the network an image backbone, e.g. "
                "backbone=PretrainedFeatureExtractor('resnet18') or a CNN "
                "module; or flatten them with X.reshape(len(X), -1)."
            ) from err
        raise
    check_magnitude(X)
    return X, y


def _image_targets(estimator, y):
    classifier = isinstance(estimator, ClassifierMixin)
    y = check_array(y, ensure_2d=False, dtype=None if classifier else "numeric",
                    input_name="y")
    return column_or_1d(y, warn=True) if classifier else y


def training_inputs(estimator, plan, extractor, X, y, *, reset, in_memory_bytes):
    """``(X, y)`` validated, with ``X`` as the net trains on it.

    Rows of features (an array: the table itself, or the backbone's features
    when the plan is features then head), preprocessed images in memory (a
    tensor) when they take at most ``in_memory_bytes``, or else a ``Dataset``
    that decodes and preprocesses them batch by batch in every epoch.
    ``estimator`` is the working copy that :func:`validate_table` records the
    input's width and feature names on (``reset``: a new fit).
    """
    if plan.rows:
        X, y = _validated_table(estimator, X, y, reset)
        return (extractor.transform(X) if plan.features_first else X), y
    y = _image_targets(estimator, y)
    if plan.features_first:  # stream the images once through the backbone
        X = extractor.transform(X)
        check_consistent_length(X, y)
        return X, y
    images = extractor.image_dataset(X)
    if len(images) != len(y):
        raise ValueError(
            "Found input variables with inconsistent numbers of samples: "
            f"[{len(images)}, {len(y)}]"
        )
    if len(images) * images[0].numel() * 4 <= in_memory_bytes:
        return extractor.preprocess(X), y  # preprocessed once, batched from memory
    return images, y


def training_set(X, y, sample_weight, device, weight_name="sample_weight"):
    """The net's training set: inputs, encoded targets and sample weights.

    A ``TensorData`` (moved to ``device`` when it fits) for data in memory, a
    ``Labelled`` dataset for images that stream from their source.
    ``weight_name`` names the weights in messages.
    """
    weight = check_sample_weight(sample_weight, len(y), name=weight_name)
    extras = {} if weight is None else {"sample_weight": torch.from_numpy(weight)}
    y = torch.as_tensor(y)
    if isinstance(X, Dataset):
        return Labelled(X, y, extras)
    return as_tensor_data(X, y, device, extras)


class Validation(NamedTuple):
    """A validation set given to ``fit``: ``X_val``, ``y_val``, their weights."""

    X: object
    y: object
    sample_weight: object = None


def given_validation(X_val, y_val, sample_weight_val, early_stopping):
    """``fit``'s validation set as a :class:`Validation`, or None.

    As in scikit-learn's ``HistGradientBoosting*``: ``X_val`` and ``y_val``
    come together, and only with ``early_stopping=True``, which stops on
    them instead of on a split of the training data. ``sample_weight_val``
    needs them (scikit-learn ignores it alone; here that is an error).
    """
    if X_val is None and y_val is None:
        if sample_weight_val is not None:
            raise ValueError(
                "sample_weight_val is provided, but X_val and y_val were not "
                "provided."
            )
        return None
    if y_val is None:
        raise ValueError("X_val is provided, but y_val was not provided.")
    if X_val is None:
        raise ValueError("y_val is provided, but X_val was not provided.")
    if not early_stopping:
        raise ValueError(
            "X_val and y_val are passed to fit while early_stopping is False. "
            "The validation set serves early stopping: set early_stopping=True "
            "to stop on it, or leave X_val and y_val out."
        )
    return Validation(X_val, y_val, sample_weight_val)


def validation_inputs(estimator, plan, extractor, X_val, y_val, *, in_memory_bytes):
    """``(X_val, y_val)`` as :func:`training_inputs` makes the training data.

    Checked against the training data (the number of features and their
    names), and passed through the same backbone: on the features-then-head
    path the feature store serves the validation images too. A problem is
    reported as the validation set's.
    """
    try:
        return training_inputs(estimator, plan, extractor, X_val, y_val,
                               reset=False, in_memory_bytes=in_memory_bytes)
    except ValueError as err:
        raise type(err)(f"In X_val, y_val: {err}") from err
