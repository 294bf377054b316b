"""Deep domain adaptation: the rows of each domain, paired batches, alignment.

With ``adaptation`` set (or ``sample_domain`` given), a fit reads the domains
of its rows by :func:`skxfer.adapt.read_domains` -- unlabelled target rows
masked in ``y`` (-1 for classes, NaN for regression), or told by
``sample_domain`` (source > 0, target < 0) -- and trains in three parts:

- :func:`read_training_domains`: which rows the supervised loss sees (every
  labelled row) and which are the target domain's (every row of a target
  domain, labelled or not);
- :func:`split_rows` and :func:`paired`: the training set of labelled rows,
  holding the target rows; each training step draws a target batch of the
  same size as its labelled batch (:class:`PairedBatches`, seeded);
- :func:`adaptation_terms`: the alignment as loss terms of the net
  (:mod:`skxfer._losses`) on a named layer of the source and the target
  batch: ``"coral"`` (:func:`coral_loss`) or ``"mcc"`` (:func:`mcc_loss`).

``adaptation=None`` without ``sample_domain`` never comes here: -1 and NaN
are ordinary labels, as they always were.
"""

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ._images import Labelled
from ._losses import LossTerm
from ._net import TensorData, as_tensor_data
from ._validation import check_sample_weight

# the methods, and those that read class probabilities (classifiers only)
METHODS = ("source_only", "coral", "mcc")
CLASSIFIER_ONLY = ("mcc",)
# the target rows' shuffled order has a seed of its own, drawn from the run's
# seed: the labelled batches come in the same order with or without alignment
_TARGET_STREAM = 1


@dataclass(frozen=True)
class Domains:
    """The rows of a fit, by domain.

    ``labelled``: rows of the supervised loss (positions); ``target``: rows
    of the target domain that the alignment sees (positions; none when the
    method aligns nothing); ``y``: ``y`` with the masked rows given a label
    of another row, so that the usual checks of ``y`` pass (those rows never
    reach the loss).
    """

    labelled: np.ndarray
    target: np.ndarray
    y: np.ndarray


def aligns(params):
    """Whether ``params`` ask for an alignment term (not None, not source only)."""
    return params["adaptation"] not in (None, "source_only")


def read_training_domains(params, y, sample_domain, task, name):
    """The :class:`Domains` of a fit's rows, or None where -1/NaN are labels.

    None when ``adaptation`` is None and no ``sample_domain`` is given: then
    every row trains as it always did. Otherwise the mask rule of
    :func:`skxfer.adapt.read_domains` decides: masked rows do not train the
    supervised loss, and rows of a target domain (masked, or
    ``sample_domain < 0``) are what the alignment sees. A method that aligns
    warns once when there is no target row, and trains on the source alone.
    """
    if y is None or (params["adaptation"] is None and sample_domain is None):
        return None  # (no y: refused by the usual checks of y)
    from .adapt._domains import read_domains  # noqa: PLC0415 (import cost)

    y = np.asarray(y)
    domains, labelled = read_domains(y, sample_domain, task=task)
    mask = "NaN" if task == "regression" else "-1"
    if not labelled.any():
        raise ValueError(
            f"{name} found no labelled rows to train on: every row of y is "
            f"masked as an unlabelled target row ({mask}). Give it labelled "
            "source rows."
        )
    target = (np.flatnonzero(domains < 0) if domains is not None
              and aligns(params) else np.zeros(0, dtype=np.int64))
    if aligns(params) and not len(target):
        warnings.warn(
            f"{name}(adaptation={params['adaptation']!r}) found no target rows "
            f"(no row of y masked with {mask} as unlabelled, and no "
            "sample_domain < 0): it trains on the source rows alone, as "
            "adaptation='source_only'.",
            UserWarning,
            stacklevel=5,
        )
    filled = y.copy()
    masked = ~labelled
    if masked.any():
        if filled.dtype.kind in "iu" and task == "regression":
            filled = filled.astype(np.float64)
        filled[masked] = filled[np.flatnonzero(labelled)[0]]
    return Domains(np.flatnonzero(labelled), target, filled)


def check_classes(classes, domains):
    """``partial_fit``'s ``classes`` may not hold the mask (-1) of the rows."""
    if domains is None or classes is None:
        return
    values = np.asarray(classes)
    if values.dtype.kind in "iuf" and np.any(values == -1):
        raise ValueError(
            "classes holds -1, which marks unlabelled target rows when "
            "adaptation is set or sample_domain is given. Pass the classes of "
            "the labelled rows only; if -1 is a class, relabel the classes (e.g. "
            "sklearn.preprocessing.LabelEncoder)."
        )


def check_validation_labels(validation, domains, task):
    """A validation set given to ``fit`` holds labelled rows only.

    Its loss is the supervised loss, so a row masked as unlabelled (-1, or
    NaN for a regressor) has nothing to be scored on: refused with the fix.
    """
    if domains is None or validation is None:
        return
    y_val = np.asarray(validation.y)
    if task == "regression":
        masked = (np.isnan(y_val.astype(np.float64)) if y_val.dtype.kind in "iuf"
                  else np.zeros(y_val.shape, bool))
        mask = "NaN"
    else:
        masked = (y_val == -1) if y_val.dtype.kind in "iuf" else np.zeros(
            y_val.shape, bool)
        mask = "-1"
    if masked.any():
        n = int(masked.reshape(len(y_val), -1).any(1).sum())
        raise ValueError(
            f"y_val holds {n} row(s) masked as unlabelled target rows ({mask}). "
            "The validation loss is the supervised loss, so every row of X_val "
            "needs its label: leave the unlabelled rows out of X_val, y_val "
            "(they belong in X, y, where they train the adaptation)."
        )


def _take(X, rows):
    """Rows ``rows`` of an array, a tensor or a dataset of images."""
    if isinstance(X, Dataset):
        return Subset(X, rows.tolist())
    if torch.is_tensor(X):
        return X.index_select(0, torch.as_tensor(rows, dtype=torch.long))
    return X[rows]


def split_rows(X, y, sample_weight, domains):
    """``(X, y, sample_weight)`` of the labelled rows, and the target rows.

    ``X`` is what the net trains on (rows of features, preprocessed images, a
    dataset of images) for every row of the fit; ``sample_weight`` is checked
    against every row, then kept for the labelled rows (the target rows'
    weights are not used). Without ``domains``, everything as given and no
    target rows.
    """
    if domains is None:
        return X, y, sample_weight, None
    if sample_weight is not None:
        sample_weight = check_sample_weight(sample_weight, len(y))[domains.labelled]
    X_target = _take(X, domains.target) if len(domains.target) else None
    return (_take(X, domains.labelled), y[domains.labelled], sample_weight,
            X_target)


# ---- paired batches --------------------------------------------------------------


class TargetStream:
    """Positions of the target rows in a shuffled order, restarted (reshuffled)
    each time it runs out; ``draw(n)`` gives the next ``n``.

    The order goes on from one epoch to the next: a target domain larger
    than an epoch's rows is seen whole over the following epochs, a smaller
    one is cycled.
    """

    def __init__(self, n_rows, rng):
        self.n_rows = n_rows
        self.rng = rng
        self._order = np.zeros(0, dtype=np.int64)
        self._next = 0

    def draw(self, n):
        parts = []
        while n > 0:
            if self._next == len(self._order):
                self._order, self._next = self.rng.permutation(self.n_rows), 0
            part = self._order[self._next : self._next + n]
            self._next += len(part)
            n -= len(part)
            parts.append(part)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


class PairedBatches:
    """The labelled batches of an epoch, each with a target batch of its size.

    ``batches`` is the iterator skxfer's net would use without a target (the
    same batches, in the same order); each ``(X, y)`` becomes
    ``(SourceTarget(X, X_target), y)``. Only whole batches are paired: a last
    batch smaller than the batch size is left out (as the rows are reshuffled
    each epoch, other rows each time), unless it is the epoch's only batch --
    a covariance or a class confusion of a few rows would be noise.
    """

    def __init__(self, batches, target, n_rows):
        self.batches = batches
        self.target = target
        self.n_rows = n_rows

    def _sizes(self):
        size = self.batches.batch_size
        n_batches = max(self.n_rows // size, 1)
        return size, n_batches, min(n_batches * size, self.n_rows)

    def __len__(self):
        return self._sizes()[1]

    def __iter__(self):
        from ._losses import SourceTarget

        size, n_batches, n_rows = self._sizes()
        targets = self.target.batches(n_rows, size, self.batches)
        for _, (X, y), X_target in zip(range(n_batches), self.batches, targets,
                                       strict=False):
            yield SourceTarget(X, X_target[: len(X)]), y


class TargetRows:
    """The target rows of a fit, in memory (a tensor, on the device when small)
    or as a dataset of images that streams; each epoch draws its rows from a
    :class:`TargetStream`."""

    def __init__(self, X, seed, device):
        self.device = device
        if isinstance(X, Dataset):
            self.X = X
        else:
            self.X = as_tensor_data(X, None, device).X
        self.stream = TargetStream(len(X), np.random.RandomState(
            [seed, _TARGET_STREAM]))
        self.seed = seed

    def batches(self, n_rows, batch_size, like):
        """Target batches for an epoch of ``n_rows`` labelled rows."""
        rows = self.stream.draw(n_rows)
        if isinstance(self.X, Dataset):  # decoded as the labelled images are
            loader = DataLoader(
                Subset(self.X, rows.tolist()), batch_size=batch_size,
                num_workers=getattr(like, "num_workers", 0),
                pin_memory=getattr(like, "pin_memory", False),
                generator=torch.Generator().manual_seed(self.seed),
            )
            yield from loader
            return
        rows = torch.from_numpy(rows).to(self.X.device)
        for start in range(0, n_rows, batch_size):
            batch = self.X.index_select(0, rows[start : start + batch_size])
            yield batch.to(self.device, non_blocking=True)


class PairedRows(TensorData):
    """A :class:`TensorData` of labelled rows that holds the target rows."""

    def __init__(self, X, y, extras, target):
        super().__init__(X, y, extras)
        self.target_rows = target

    def subset(self, indices):
        part = super().subset(indices)
        return PairedRows(part.X, part.y, part.extras, self.target_rows)

    def to(self, device):
        part = super().to(device)
        return PairedRows(part.X, part.y, part.extras, self.target_rows)

    def paired_batches(self, batches):
        return PairedBatches(batches, self.target_rows, len(self))


class PairedImages(Labelled):
    """A :class:`Labelled` dataset of images that holds the target images."""

    def __init__(self, images, y, extras, target):
        super().__init__(images, y, extras)
        self.target_rows = target

    def subset(self, indices):
        part = super().subset(indices)
        return PairedImages(part.images, part.y, part.extras, self.target_rows)

    def paired_batches(self, batches):
        return PairedBatches(batches, self.target_rows, len(self))


def paired(data, X_target, seed, device):
    """The training set ``data`` holding the target rows, for paired batches.

    Without target rows (none, or a method that aligns nothing), ``data``.
    """
    if X_target is None:
        return data
    target = TargetRows(X_target, seed, device)
    if isinstance(data, TensorData):
        return PairedRows(data.X, data.y, data.extras, target)
    return PairedImages(data.images, data.y, data.extras, target)


# ---- the alignment losses ----------------------------------------------------------


def coral_loss(source, target):
    """Deep CORAL (Sun & Saenko, 2016): ``||C_s - C_t||_F^2 / (4 d^2)``.

    ``C_s``, ``C_t``: the covariance matrices of the ``d`` features of a
    source and a target batch (rows; at least two each), as skada's
    ``deepcoral_loss``.
    """
    d = source.shape[1]
    diff = torch.cov(source.T) - torch.cov(target.T)
    return diff.pow(2).sum() / (4 * d * d)


def mcc_loss(logits, temperature=1.0, eps=1e-7):
    """Minimum class confusion (Jin et al., 2020) of a target batch's logits.

    The class-correlation matrix of the predicted probabilities (rows
    weighted by their certainty, each class's row normalised); the loss is
    the mean over classes of its off-diagonal mass, as skada's ``mcc_loss``.
    """
    proba = torch.softmax(logits / temperature, dim=1)
    entropy = -(proba * torch.log(proba + eps)).sum(1)
    certainty = 1 + torch.exp(-entropy)
    weight = certainty / certainty.mean()
    confusion = proba.T @ (weight[:, None] * proba)
    confusion = confusion / confusion.sum(1, keepdim=True)
    return (confusion.sum(1) - confusion.diagonal()).mean()


class Coral(LossTerm):
    """``weight * coral_loss`` of a layer's outputs, source batch vs target batch.

    Recorded in the history as ``coral``. A step whose batches have fewer
    than two rows adds nothing (no covariance).
    """

    name = "coral"

    def __init__(self, weight, layer):
        self.weight = weight
        self.layers = (layer,)

    def __call__(self, module, activations):
        layer = self.layers[0]
        source, target = activations.source.get(layer), activations.target.get(layer)
        if source is None or target is None or min(len(source), len(target)) < 2:
            return None
        return coral_loss(source.flatten(1), target.flatten(1))


class MinimumClassConfusion(LossTerm):
    """``weight * mcc_loss`` of the target batch's logits (``output`` layer).

    Recorded in the history as ``mcc``.
    """

    name = "mcc"

    def __init__(self, weight, layer):
        self.weight = weight
        self.layers = (layer,)

    def __call__(self, module, activations):
        logits = activations.target.get(self.layers[0])
        if logits is None or not len(logits):
            return None
        return mcc_loss(logits)


def _head_prefix(plan):
    """Where the head's layers are in the net's module (``head.`` end to end)."""
    return "head." if plan.end_to_end else ""


def _alignment_layer(params, plan, module):
    """The name, in the net's module, of the layer CORAL aligns.

    ``adaptation_layer`` names a layer as ``module_`` does (the estimator's
    whole network: ``head.hidden.0``, ``backbone.layer3``; without a backbone
    ``hidden.0``); None: the head's last hidden layer, which is the
    backbone's output when the head has no hidden layer.
    """
    chosen = params["adaptation_layer"]
    if chosen is None:
        if not plan.end_to_end and not len(module.hidden):
            raise ValueError(
                "adaptation='coral' aligns the head's last hidden layer, and "
                "this network has none (hidden_layer_sizes=()) and no backbone "
                "that trains: nothing before the output layer could move the "
                "domains together. Add a hidden layer (e.g. hidden_layer_sizes="
                "(64,)), train the backbone (freeze=False or unfreeze_at), or "
                "use adaptation='mcc'."
            )
        return plan.representation
    if plan.features_first:
        if chosen == "backbone" or chosen.startswith("backbone."):
            raise ValueError(
                f"adaptation_layer={chosen!r} is in the backbone, which is "
                "wholly frozen here (freeze=True, no unfreeze_at): its outputs "
                "never change, so aligning them does nothing. Align a layer of "
                "the head (e.g. 'head.hidden'), or train the backbone."
            )
        name = chosen[len("head."):] if chosen.startswith("head.") else None
    else:
        name = chosen
    names = {n for n, _ in module.named_modules() if n}
    if name not in names:
        shown = sorted(_head_prefix(plan) + n if plan.features_first else n
                       for n in names)
        raise ValueError(
            f"adaptation_layer={chosen!r} is not a layer of the network; its "
            f"layers are named as in module_, like {shown[:8]}."
        )
    return name


def adaptation_terms(params, plan, module, data):
    """The alignment loss terms of a fit, for the net's ``module``.

    The layer is checked whenever ``adaptation='coral'``; the terms are
    returned only when ``data`` holds target rows (paired batches).
    """
    method = params["adaptation"]
    if method == "coral":
        layer = _alignment_layer(params, plan, module)
    if not aligns(params) or not hasattr(data, "paired_batches"):
        return []
    weight = float(params["adaptation_weight"])
    if method == "coral":
        return [Coral(weight, layer)]
    return [MinimumClassConfusion(weight, _head_prefix(plan) + "output")]
