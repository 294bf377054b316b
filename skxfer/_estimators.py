"""TransferMLPClassifier and TransferMLPRegressor: scikit-learn faces over skorch.

The estimators validate their parameters and data the scikit-learn way, build a
torch module and a configured skorch net in ``fit``, and let skorch train it.
"""

import copy
import math
import os
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
)
from skorch.callbacks import Callback, EarlyStopping, Freezer, ProgressBar, Unfreezer
from torch import nn
from torch.utils.data import Dataset

from ._backbones import (
    clone_keeping_fitted_source,
    is_checkpoint_path,
    is_fitted_source,
    is_unfitted_source,
    refuse_nested_source_params,
    unwrap_source,
)
from ._device import device_is_valid, resolve_device, usable_device
from ._extract import PretrainedFeatureExtractor, stop_storing
from ._freezing import (
    backbone_param_groups,
    frozen_parameter_names,
    store_reference,
)
from ._images import Labelled
from ._mlp import ACTIVATIONS, INITS, MLP, TransferNet
from ._net import (
    INFERENCE_BATCH_SIZE,
    SkxferNet,
    TensorData,
    TrainingInterrupted,
    ValidSplit,
    as_tensor_data,
    supports_fused,
)
from ._saving import load_network, save_network
from ._seeding import seeded
from ._store import capture_settings, carry_settings, module_digest
from ._validation import (
    PICKLE_FORMAT,
    any_of,
    check_magnitude,
    check_params,
    check_pickle_format,
    check_sample_weight,
    commit_fitted,
    fresh_copy,
    is_bool,
    is_int,
    is_none,
    is_real,
    one_of,
    shallow_copy,
    validate_table,
)

OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}
# preprocessed images up to this size are kept in memory for training;
# larger collections are decoded batch by batch in every epoch
_IN_MEMORY_BYTES = 1 << 30
# batch_size='auto' (see its docstring): rows of features per step grow from
# scikit-learn's 200 to 512 once an epoch has more than _AUTO_STEPS steps;
# images through a backbone that trains stay at 200 (memory)
_AUTO_BATCH_ROWS = (200, 512)
_AUTO_STEPS = 32
_AUTO_BATCH_IMAGES = 200
# rows per matrix product at prediction (see _BaseTransferMLP._infer_rows)
_ROW_BLOCK = 16
# feature rows up to this size move to the GPU at once for prediction
_DEVICE_ROWS_BYTES = 1 << 28
# private fitted state (the public fitted attributes end with "_")
_FITTED_PRIVATE = ("_rng", "_architecture", "_class_weights", "_class_weight_used",
                   "_y_1d", "_split_seed", "_run_start")
# optimizers that take a ``momentum`` argument
_WITH_MOMENTUM = (torch.optim.SGD, torch.optim.RMSprop)


def _is_hidden_sizes(value):
    if is_int(1)(value):
        return True
    return isinstance(value, (tuple, list)) and all(is_int(1)(v) for v in value)


def _is_optimizer(value):
    if isinstance(value, str):
        return value in OPTIMIZERS
    return isinstance(value, type) and issubclass(value, torch.optim.Optimizer)


def _is_callbacks(value):
    return value is None or (
        isinstance(value, (list, tuple))
        and all(
            isinstance(cb, Callback)
            or (
                isinstance(cb, tuple)
                and len(cb) == 2
                and isinstance(cb[0], str)
                and isinstance(cb[1], Callback)
            )
            for cb in value
        )
    )


def _is_class_weight(value):
    return value is None or value == "balanced" or isinstance(value, dict)


_COMMON_SPEC = {
    "hidden_layer_sizes": (
        _is_hidden_sizes,
        "an int >= 1 or a tuple of ints >= 1 (one per hidden layer)",
    ),
    "activation": (
        one_of(*ACTIVATIONS),
        "a str among " + ", ".join(repr(a) for a in ACTIVATIONS),
    ),
    "batch_norm": (is_bool, "a bool"),
    "dropout": (is_real(0, 1, high_open=True), "a float in the range [0, 1)"),
    "init": (one_of(*INITS), "a str among " + ", ".join(repr(i) for i in INITS)),
    "optimizer": (
        _is_optimizer,
        "a str among "
        + ", ".join(repr(o) for o in OPTIMIZERS)
        + " or a torch.optim.Optimizer subclass",
    ),
    "lr": (is_real(0, low_open=True), "a float > 0"),
    "momentum": (is_real(0, 1), "a float in the range [0, 1]"),
    "nesterov": (is_bool, "a bool"),
    "weight_decay": (is_real(0), "a float >= 0"),
    "optimizer_params": (
        any_of(is_none, lambda v: isinstance(v, dict)),
        "None or a dict of keyword arguments for the optimizer",
    ),
    "batch_size": (any_of(one_of("auto"), is_int(1)), "'auto' or an int >= 1"),
    "max_epochs": (is_int(1), "an int >= 1"),
    "early_stopping": (is_bool, "a bool"),
    "validation_fraction": (
        is_real(0, 1, low_open=True, high_open=True),
        "a float in the range (0, 1)",
    ),
    "n_iter_no_change": (is_int(1), "an int >= 1"),
    "tol": (is_real(0), "a float >= 0"),
    "warm_start": (is_bool, "a bool"),
    "callbacks": (
        _is_callbacks,
        "None or a list of skorch callbacks (or (name, callback) tuples)",
    ),
    "device": (
        device_is_valid,
        "'auto', 'cpu', 'cuda', 'cuda:<index>', 'mps' or a torch.device",
    ),
    "verbose": (is_int(0), "an int >= 0"),
    "backbone": (
        lambda v: v is None
        or isinstance(v, (str, nn.Module, PretrainedFeatureExtractor, os.PathLike))
        or is_fitted_source(v)
        or is_unfitted_source(v),
        "None, a torchvision model name, a PretrainedFeatureExtractor, a fitted "
        "TransferMLPClassifier/TransferMLPRegressor, a torch.nn.Module or the "
        "path of a network saved with save_network",
    ),
    "freeze": (
        lambda v: is_bool(v)
        or is_int(0)(v)
        or (isinstance(v, (list, tuple)) and all(isinstance(p, str) for p in v)),
        "a bool, an int >= 0 (the first blocks) or a list of parameter-name "
        "patterns",
    ),
    "unfreeze_at": (
        any_of(is_none, is_int(1)),
        "None or an int >= 1 (the epoch after which frozen layers train)",
    ),
    "backbone_lr_factor": (is_real(0, low_open=True), "a float > 0"),
    "backbone_lr_decay": (
        is_real(0, 1, low_open=True),
        "a float in the range (0, 1]",
    ),
    "l2_sp": (is_real(0), "a float >= 0"),
    "bn_mode": (one_of("train", "frozen"), "'train' or 'frozen'"),
}


def _token(value):
    """A comparable stand-in for a parameter value, stable across pickling."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return (type(value).__name__, value)
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_token(v) for v in value))
    if isinstance(value, os.PathLike):
        return ("path", os.fspath(value))
    if isinstance(value, nn.Module):
        return ("module", repr(value), module_digest(value))
    if is_fitted_source(value):
        source = unwrap_source(value)
        return ("source", type(source).__name__, module_digest(source.module_))
    if hasattr(value, "get_params"):
        params = value.get_params(deep=False)
        return (type(value).__name__,
                tuple(sorted((k, _token(v)) for k, v in params.items())))
    return ("repr", repr(value))


def _backbone_signature(backbone):
    """What identifies a ``backbone`` value for warm starts, by content.

    A name or path by its text, a module by its structure and weights, a
    fitted source by its network, an extractor spec by its parameters (so
    ``set_params(backbone__pooling=...)`` counts as a change). All survive
    pickling, so a loaded estimator continues training.
    """
    return _token(backbone)


class _TrainingPlateau(EarlyStopping):
    """scikit-learn's stopping rule without early stopping, on the training loss.

    Stop when the loss has not improved on the best by ``tol`` for
    ``n_iter_no_change`` epochs. Epochs carried over by a warm start count, as
    in scikit-learn; epochs before ``start`` (a frozen phase that ends at
    ``unfreeze_at``) do not.
    """

    def __init__(self, tol, n_iter_no_change, start=0, sink=print):
        super().__init__(monitor="train_loss", patience=n_iter_no_change,
                         threshold=tol, threshold_mode="abs", load_best=False,
                         sink=sink)
        self.start = start

    def on_train_begin(self, net, **kwargs):
        self.best_, self.misses_ = np.inf, 0
        for epoch, row in enumerate(net.history, start=1):
            self._update(epoch, row["train_loss"])

    def _update(self, epoch, loss):
        if epoch <= self.start + 1:  # a new phase starts from its first epoch
            self.best_, self.misses_ = loss, 0
            return
        self.misses_ = self.misses_ + 1 if loss > self.best_ - self.threshold else 0
        self.best_ = min(self.best_, loss)

    def on_epoch_end(self, net, **kwargs):
        epoch = len(net.history)
        self._update(epoch, net.history[-1, "train_loss"])
        if self.misses_ >= self.patience:
            if net.verbose:
                self.sink(f"Stopping: the training loss did not improve by "
                          f"{self.threshold} for {self.patience} epochs.")
            raise KeyboardInterrupt


class _WeightedEpochLoss(Callback):
    """With sample weights, each epoch's loss as the weighted mean over rows.

    skorch averages the batch losses by batch size; a batch's weighted mean
    must instead count by its total weight ``sum(w * c)``.
    """

    def on_epoch_begin(self, net, **kwargs):
        # per phase (training or not): [sum of loss * weight, sum of weights]
        self._sums = {}

    def on_batch_end(self, net, batch=None, training=None, loss=None, **kwargs):
        target = batch[1]
        if not isinstance(target, dict) or "sample_weight" not in target:
            return
        weight = target["sample_weight"].detach().double().cpu()
        class_weight = getattr(net.criterion_, "weight", None)
        if class_weight is not None:
            weight = weight * class_weight.detach().double().cpu()[
                target["y"].cpu()]
        total = float(weight.sum())
        sums = self._sums.setdefault(bool(training), [0.0, 0.0])
        sums[0] += float(loss.detach() if torch.is_tensor(loss) else loss) * total
        sums[1] += total

    def on_epoch_end(self, net, **kwargs):
        for training, name in ((True, "train_loss"), (False, "valid_loss")):
            if training in self._sums and name in net.history[-1]:
                loss_sum, weight_sum = self._sums[training]
                net.history.record(
                    name, loss_sum / weight_sum if weight_sum else np.nan)


def _carry_optimizer_state(old, new):
    """Copy the optimizer state of ``old``'s parameters to ``new``'s, by name.

    Only where the optimizer class and the parameter's group settings (all but
    the learning rate) are unchanged: the state of Adam with ``amsgrad`` or of
    another optimizer would not fit.
    """
    if type(old.optimizer_) is not type(new.optimizer_):
        return

    def by_name(net):
        groups = {
            id(p): {k: v for k, v in g.items() if k not in ("params", "lr",
                                                            "initial_lr")}
            for g in net.optimizer_.param_groups for p in g["params"]
        }
        return {
            name: (p, groups.get(id(p)))
            for name, p in net.module_.named_parameters()
        }

    before, after = by_name(old), by_name(new)
    for name, (p_old, settings_old) in before.items():
        if name not in after or p_old not in old.optimizer_.state:
            continue
        p_new, settings_new = after[name]
        if settings_new is not None and settings_new == settings_old and (
            p_new.shape == p_old.shape
        ):
            new.optimizer_.state[p_new] = copy.deepcopy(old.optimizer_.state[p_old])


class _ValidScore(Callback):
    """Record each epoch's validation score as ``valid_score``: accuracy for a
    classifier, R² for a regressor (weighted by ``sample_weight`` when given),
    as scikit-learn's MLP records ``validation_scores_``."""

    def __init__(self, classifier):
        self.classifier = classifier

    def on_epoch_begin(self, net, **kwargs):
        self._pred, self._true, self._weight = [], [], []

    def on_batch_end(self, net, batch=None, training=None, y_pred=None, **kwargs):
        if training or y_pred is None:
            return
        target = batch[1]
        if isinstance(target, dict):
            if "sample_weight" in target:
                self._weight.append(target["sample_weight"].detach().cpu())
            target = target["y"]
        self._pred.append(y_pred.detach().float().cpu())
        self._true.append(target.detach().cpu())

    def on_epoch_end(self, net, **kwargs):
        if not self._pred:
            return
        from sklearn.metrics import accuracy_score, r2_score

        pred = torch.cat(self._pred).numpy()
        true = torch.cat(self._true).numpy()
        weight = torch.cat(self._weight).numpy() if self._weight else None
        if weight is not None and not weight.any():
            score = np.nan  # every held-out row has weight 0: nothing to score
        elif self.classifier:
            score = accuracy_score(true, pred.argmax(axis=1), sample_weight=weight)
        elif len(true) < 2:
            score = np.nan
        else:
            score = r2_score(true, pred.reshape(true.shape), sample_weight=weight)
        net.history.record("valid_score", float(score))


class _StopOnNonFinite(Callback):
    """Stop training with a clear error as soon as the loss is NaN or inf."""

    def on_epoch_end(self, net, **kwargs):
        loss = net.history[-1, "train_loss"]
        if not np.isfinite(loss):
            raise ValueError(
                f"Training diverged: the training loss became {loss} at epoch "
                f"{len(net.history)}. Lower `lr`, or scale the inputs (for example "
                "with sklearn.preprocessing.StandardScaler in a Pipeline)."
            )


def _noop(*args, **kwargs):
    pass


class _BaseTransferMLP(BaseEstimator):
    """Shared parameters, validation and training of the MLP estimators."""

    _criterion = None  # set by subclasses
    _skxfer_network = True  # a source network other estimators can transfer from

    def __sklearn_clone__(self):
        # a fitted source network as ``backbone`` stays fitted under clone, so a
        # grid search starts every candidate from the pretrained weights
        return carry_settings(self, clone_keeping_fitted_source(self, "backbone"))

    def set_params(self, **params):
        return super().set_params(
            **refuse_nested_source_params(self, "backbone", params)
        )

    # ---- configuration --------------------------------------------------------

    def _check_params(self):
        check_params(self, self._param_spec())
        if (
            self.optimizer == "sgd"
            and self.nesterov
            and self.momentum == 0
        ):
            raise ValueError(
                f"nesterov=True needs momentum > 0 in {type(self).__name__}; "
                "got momentum=0. Set momentum (e.g. 0.9) or nesterov=False."
            )

    def _param_spec(self):
        return _COMMON_SPEC

    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        return (sizes,) if is_int(1)(sizes) else tuple(sizes)

    def _optimizer_config(self, device):
        cls = (
            OPTIMIZERS[self.optimizer]
            if isinstance(self.optimizer, str)
            else self.optimizer
        )
        kwargs = {"weight_decay": self.weight_decay}
        if cls in _WITH_MOMENTUM:
            kwargs["momentum"] = self.momentum
        if cls is torch.optim.SGD:
            kwargs["nesterov"] = self.nesterov
        if supports_fused(cls, device):
            kwargs["fused"] = True
        kwargs.update(self.optimizer_params or {})
        return cls, kwargs

    def _check_optimizer(self, device):
        """Build the optimizer once on a probe tensor: a bad setting is named."""
        cls, kwargs = self._optimizer_config(device)
        try:
            cls([torch.zeros(1, device=device, requires_grad=True)], lr=self.lr,
                **kwargs)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(
                f"{cls.__name__} does not accept the settings {kwargs} (lr="
                f"{self.lr}): {err}. Check optimizer_params (keyword arguments of "
                f"{cls.__module__}.{cls.__name__}), momentum, nesterov and "
                "weight_decay."
            ) from err

    def _features_first(self):
        """Whether the model is "the extractor's features, then the head".

        A wholly frozen backbone that is never released computes the same
        features every epoch: they are computed once and skorch trains the
        head on them (the same model, one backbone pass instead of one per
        epoch). Once fitted this is read from the net, before from the
        parameters.
        """
        if hasattr(self, "net_"):
            return self.extractor_ is not None and not isinstance(
                self.net_.module_, TransferNet
            )
        return self.backbone is not None and self.freeze is True and (
            self.unfreeze_at is None
        )

    def _end_to_end_backbone(self):
        """The backbone skorch trains with the head, or None."""
        if self.extractor_ is None or self._features_first():
            return None
        return self.extractor_.backbone_

    def _build_module(self, n_features, n_outputs):
        head = MLP(
            n_features,
            self._hidden_sizes(),
            n_outputs,
            activation=self.activation,
            batch_norm=self.batch_norm,
            dropout=self.dropout,
            init=self.init,
        )
        backbone = self._end_to_end_backbone()
        if backbone is None:
            return head
        # the backbone will train: its features must not come from the store
        stop_storing(self.extractor_)
        for p in backbone.parameters():
            p.requires_grad_(True)
        module = TransferNet(backbone, head, bn_mode=self.bn_mode)
        if self.l2_sp > 0:
            store_reference(module)
        return module

    def _freeze_callbacks(self):
        backbone = self._end_to_end_backbone()
        if backbone is None:
            return []
        names = frozen_parameter_names(self.freeze, backbone)
        if not names:
            return []
        patterns = [f"backbone.{n}" for n in names]
        callbacks = [("freezer", Freezer(patterns, at=1))]
        if self.unfreeze_at is not None:
            callbacks.append(
                ("unfreezer", Unfreezer(patterns, at=self.unfreeze_at + 1))
            )
        return callbacks

    def _build_callbacks(self, partial=False):
        quiet = not self.verbose
        callbacks = [("weighted_epoch_loss", _WeightedEpochLoss()),
                     ("stop_on_non_finite", _StopOnNonFinite())]
        callbacks += self._freeze_callbacks()
        if not self.early_stopping and not partial:
            # scikit-learn's rule: stop once the training loss has not improved
            # by tol for n_iter_no_change epochs (partial_fit runs one epoch);
            # a frozen phase before unfreeze_at is not judged by it
            callbacks.append((
                "training_plateau",
                _TrainingPlateau(self.tol, self.n_iter_no_change,
                                 start=self.unfreeze_at or 0,
                                 sink=_noop if quiet else print),
            ))
        if self.early_stopping:
            callbacks.append(
                ("valid_score", _ValidScore(isinstance(self, ClassifierMixin)))
            )
            callbacks.append(
                (
                    "early_stopping",
                    EarlyStopping(
                        monitor="valid_loss",
                        patience=self.n_iter_no_change,
                        threshold=self.tol,
                        threshold_mode="abs",
                        load_best=True,
                        sink=_noop if quiet else print,
                    ),
                )
            )
        if self.verbose >= 2:
            callbacks.append(("progress_bar", ProgressBar()))
        for i, cb in enumerate(self.callbacks or []):
            # copies: skorch keeps state on callbacks, and the parameter must not
            # change when the estimator is fitted (clone, grid search)
            name, cb = cb if isinstance(cb, tuple) else (f"callback_{i}", cb)
            callbacks.append((name, copy.deepcopy(cb)))
        return callbacks

    def _batch_size(self, n_samples):
        """``batch_size`` with 'auto' resolved for ``n_samples`` training rows."""
        if self.batch_size != "auto":
            return self.batch_size
        if self.early_stopping:  # the rows left for training (see ValidSplit)
            n_samples -= math.ceil(n_samples * self.validation_fraction)
        if self._trains_on_rows():
            low, high = _AUTO_BATCH_ROWS
            size = min(max(low, n_samples // _AUTO_STEPS), high)
        else:
            size = _AUTO_BATCH_IMAGES
        return max(1, min(size, n_samples))

    def _build_net(self, module, seed, device, n_samples, partial=False):
        opt_cls, opt_kwargs = self._optimizer_config(device)
        train_split = None
        if self.early_stopping:
            train_split = ValidSplit(
                self.validation_fraction,
                stratified=isinstance(self, ClassifierMixin),
                # the same split in every continuation (warm start)
                random_state=self._split_seed,
            )
        backbone = self._end_to_end_backbone()
        if backbone is not None:
            opt_kwargs["param_groups"] = backbone_param_groups(
                backbone,
                self.lr * self.backbone_lr_factor,
                self.backbone_lr_decay,
            )
        net = SkxferNet(
            module=module,
            batch_size=self._batch_size(n_samples),
            l2_sp=self.l2_sp if backbone is not None else 0.0,
            criterion=self._criterion,
            optimizer=opt_cls,
            lr=self.lr,
            max_epochs=self.max_epochs,
            iterator_valid__batch_size=INFERENCE_BATCH_SIZE,
            # used when images stream from their source (skorch's DataLoader)
            iterator_train__shuffle=True,
            **self._loader_params(device),
            train_split=train_split,
            callbacks=self._build_callbacks(partial),
            device=device,
            verbose=int(self.verbose),
            **self._idle_callbacks(train_split),
            shuffle_rng=np.random.RandomState(seed),
            **{f"optimizer__{k}": v for k, v in opt_kwargs.items()},
            **self._criterion_params(),
        )
        return net

    def _idle_callbacks(self, train_split):
        """skorch's default callbacks that would run every epoch for nothing.

        ``PrintLog`` formats a table each epoch even when ``verbose=0`` prints
        nothing (a third of an epoch's time on a small table), and the
        validation loss is looked up each epoch even without a validation set.
        """
        idle = {}
        if not self.verbose:
            idle["callbacks__print_log"] = None
        if train_split is None:
            idle["callbacks__valid_loss"] = None
        return idle

    def _criterion_params(self):
        return {}

    def _trains_on_rows(self):
        """Whether the net trains on in-memory rows of features, not on images
        that pass through a backbone (and stream through a DataLoader)."""
        extractor = self.extractor_
        return extractor is None or extractor._tabular or self._features_first()

    def _loader_params(self, device):
        if self._trains_on_rows():
            return {}
        extractor = self.extractor_
        workers = extractor._workers(n_images=None)
        pin = str(device).startswith("cuda")
        return {
            f"{prefix}__{key}": value
            for prefix in ("iterator_train", "iterator_valid")
            for key, value in (("num_workers", workers), ("pin_memory", pin))
        }

    # ---- fitting --------------------------------------------------------------

    def _validate_X_y(self, X, y, reset):
        try:
            X, y = validate_table(
                self,
                X,
                y,
                reset=reset,
                dtype=np.float32,
                multi_output=isinstance(self, RegressorMixin),
                y_numeric=isinstance(self, RegressorMixin),
            )
        except ValueError as err:
            if "Found array with dim" in str(err) and self.backbone is None:
                raise ValueError(
                    f"{err} For images, give the network an image backbone, e.g. "
                    "backbone=PretrainedFeatureExtractor('resnet18') or a CNN "
                    "module; or flatten them with X.reshape(len(X), -1)."
                ) from err
            raise
        check_magnitude(X)
        return X, y

    def _resolve_backbone(self, X, device):
        """The backbone as a new fitted :class:`PretrainedFeatureExtractor`.

        Whatever form ``backbone`` takes, it is only read: the extractor owns a
        new module, the one the fitted estimator trains or runs.
        """
        backbone = self.backbone
        if is_unfitted_source(backbone):
            raise ValueError(
                f"backbone is an unfitted {type(backbone).__name__}. Fit it on the "
                "source task first. (As backbone=source, a fitted one stays fitted "
                "under clone; as a value in a GridSearchCV grid it is cloned: "
                "pass sklearn.frozen.FrozenEstimator(source) there.)"
            )
        if isinstance(backbone, PretrainedFeatureExtractor):
            extractor = clone(backbone).set_params(device=device)
        elif is_checkpoint_path(backbone):
            module, _ = load_network(backbone)
            extractor = PretrainedFeatureExtractor(module, weights=None, device=device)
        else:  # a model name, a fitted source or a module of the user's
            extractor = PretrainedFeatureExtractor(
                backbone,
                weights="DEFAULT" if isinstance(backbone, str) else None,
                device=device,
            )
        # the feature-store settings this estimator came with (a worker's)
        return carry_settings(self, extractor).fit(X)  # runs one sample

    def _fit_inputs(self, X, y, reset, device):
        """Validated training inputs: an array, features, or image tensors."""
        if reset and self.backbone is not None:
            self.extractor_ = self._resolve_backbone(X, device)
        elif reset:
            self.extractor_ = None
        extractor = self.extractor_
        if extractor is None or extractor._tabular:  # feature vectors
            X, y = self._validate_X_y(X, y, reset=reset)
            if extractor is not None and self._features_first():
                X = extractor.transform(X)
            return X, y
        classifier = isinstance(self, ClassifierMixin)
        y = check_array(
            y, ensure_2d=False, dtype=None if classifier else "numeric",
            input_name="y",
        )
        if classifier:
            y = column_or_1d(y, warn=True)
        if self._features_first():  # stream the images once through the backbone
            X = extractor.transform(X)
            check_consistent_length(X, y)
            return X, y
        images = extractor.image_dataset(X)
        if len(images) != len(y):
            raise ValueError(
                "Found input variables with inconsistent numbers of samples: "
                f"[{len(images)}, {len(y)}]"
            )
        nbytes = len(images) * images[0].numel() * 4
        if nbytes <= _IN_MEMORY_BYTES:
            # preprocessed once, batched from memory (fast path)
            return TensorData(extractor.preprocess(X)), y
        return images, y  # decoded and preprocessed batch by batch, each epoch

    def _fit(self, X, y, *, incremental, epochs=None, classes=None, partial=False,
             sample_weight=None):
        self._check_params()
        if partial and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        if incremental:
            self._check_architecture(partial)
        # Everything is computed on a copy and handed over at the end, as
        # scikit-learn's fit does: a fit that fails (bad data, divergence,
        # Ctrl-C) leaves the earlier model intact, or the estimator unfitted.
        new = shallow_copy(self) if incremental else fresh_copy(self, self._fitted())
        try:
            converged = new._train(X, y, incremental=incremental, epochs=epochs,
                                   classes=classes, partial=partial,
                                   sample_weight=sample_weight)
        except TrainingInterrupted as err:
            raise err.__cause__ from None
        commit_fitted(self, new, self._fitted() + tuple(new._fitted()))
        if not converged:
            warnings.warn(
                f"{type(self).__name__}: max_epochs={self.max_epochs} reached and "
                f"the {'validation' if self.early_stopping else 'training'} loss "
                f"still improved by more than tol={self.tol} within the last "
                f"n_iter_no_change={self.n_iter_no_change} epochs. Raise "
                "max_epochs (or fit on with warm_start=True) if it should go on.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return self

    def _fitted(self):
        """Names of the fitted attributes (public ones end with '_')."""
        params = self.get_params(deep=False)
        public = tuple(
            k for k in self.__dict__
            if k.endswith("_") and not k.startswith("_") and k not in params
        )
        return public + _FITTED_PRIVATE

    def _check_architecture(self, partial):
        """Continuing needs the network that was fitted: refuse a changed one."""
        method = "partial_fit" if partial else "fit with warm_start=True"
        current = self._architecture_params()
        for name, old in self._architecture.items():
            if current[name] != old:
                shown = {"backbone": self.backbone, "l2_sp > 0": self.l2_sp}
                raise ValueError(
                    f"{method} continues training the fitted network, but "
                    f"{name.split()[0]} changed (now {shown.get(name, current[name])!r}"
                    "), which changes the network. Set it back, or fit anew "
                    "(warm_start=False, or a new estimator for partial_fit)."
                )

    def _architecture_params(self):
        """What decides the network's structure, in a comparable form."""
        freeze = self.freeze
        if freeze is True or freeze is False:
            freeze = "all" if freeze else "none"  # True == 1 in Python
        elif isinstance(freeze, (list, tuple)):
            freeze = tuple(freeze)
        else:
            freeze = ("blocks", int(freeze))
        return {
            "hidden_layer_sizes": tuple(int(s) for s in self._hidden_sizes()),
            "activation": self.activation,
            "batch_norm": bool(self.batch_norm),
            "dropout": float(self.dropout),
            "backbone": _backbone_signature(self.backbone),
            "freeze": freeze,
            "unfreeze_at": self.unfreeze_at,
            "l2_sp > 0": self.l2_sp > 0,
        }

    def _train(self, X, y, *, incremental, epochs, classes, partial,
               sample_weight=None):
        """Validate, build and train; sets the fitted attributes on ``self``.

        Runs on the copy that :meth:`_fit` makes, never on the user's object.
        Returns whether training converged (stopped before ``max_epochs``, or
        ran one ``partial_fit`` epoch).
        """
        name = type(self).__name__
        if incremental:
            device = self.device_
            rng = copy.deepcopy(self._rng)  # the earlier state keeps its own
        else:
            device = resolve_device(self.device, name)
            rng = check_random_state(self.random_state)
            self._architecture = self._architecture_params()
        self._check_optimizer(device)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        if not incremental:
            self._split_seed = seed
        with seeded(seed, device):
            X, y = self._fit_inputs(X, y, reset=not incremental, device=device)
            y_train, n_outputs = self._encode_targets(
                y, incremental, classes, partial
            )
            weight = check_sample_weight(sample_weight, len(y_train))
            extras = {} if weight is None else {
                "sample_weight": torch.from_numpy(weight)
            }
            y_train = torch.as_tensor(y_train)
            if isinstance(X, TensorData):  # preprocessed images
                X = as_tensor_data(X.X, y_train, device, extras)
            elif isinstance(X, Dataset):  # images streamed from their source
                X = Labelled(X, y_train, extras)
            else:  # feature vectors
                X = as_tensor_data(X, y_train, device, extras)
        # a seed of its own: the head starts the same whatever the backbone drew
        with seeded(seed, device):
            if incremental:
                self._run_start = len(self.net_.history)
                net = self._continued_net(seed, device, len(X), partial)
            else:
                n_features = (
                    self.extractor_.n_features_out_ if self.extractor_ is not None
                    else X.X.shape[1]
                )
                module = self._build_module(n_features, n_outputs)
                self._run_start = 0
                net = self._build_net(module, seed, device, len(X), partial)
                net.initialize()
            try:
                net.partial_fit(X, None, epochs=epochs)
            except torch.cuda.OutOfMemoryError as err:
                raise torch.cuda.OutOfMemoryError(
                    f"{name} ran out of GPU memory in training (batches of "
                    f"{net.batch_size} samples; validation batches of "
                    f"{INFERENCE_BATCH_SIZE}): {err} Lower batch_size (now "
                    f"{self.batch_size!r}), or train fewer layers of the backbone "
                    "(freeze)."
                ) from err
        # fitted networks rest in eval mode: the extractor, module_ and
        # predictions all see the trained BatchNorm statistics
        net.module_.eval()
        self.net_ = net
        self.device_ = device
        self._rng = rng
        self._record_history()
        stopped = any(
            isinstance(cb, EarlyStopping) and cb.misses_ >= cb.patience
            for _, cb in net.callbacks_
        )
        return partial or stopped or self.n_iter_ - self._run_start < (
            self.max_epochs
        )

    def _continued_net(self, seed, device, n_samples, partial):
        """A new skorch net over a copy of the fitted network.

        The current hyper-parameters take effect (learning rate, epochs,
        optimizer settings, callbacks); the weights, the history and -- for
        the same optimizer class -- the optimizer's state carry over. The
        fitted net is only read, so a failed continuation changes nothing.
        """
        old = self.net_
        module = copy.deepcopy(old.module_)
        if isinstance(module, TransferNet):
            module.bn_mode = self.bn_mode
            # the extractor runs the network being trained
            extractor = shallow_copy(self.extractor_)
            extractor.backbone_ = module.backbone
            self.extractor_ = extractor
        net = self._build_net(module, seed, device, n_samples, partial)
        net.initialize()
        net.history = copy.deepcopy(old.history)
        _carry_optimizer_state(old, net)
        return net

    def _record_history(self):
        history = self.net_.history
        self.loss_curve_ = [float(row["train_loss"]) for row in history]
        self.loss_ = self.loss_curve_[-1]
        scores = [float(row.get("valid_score", np.nan)) for row in history]
        if self.early_stopping:
            # as scikit-learn: with early stopping the best loss is not tracked
            self.best_loss_ = None
            self.validation_scores_ = scores
            latest = scores[self._run_start:]
            self.best_validation_score_ = (
                None if np.all(np.isnan(latest)) else float(np.nanmax(latest))
            )
        else:
            self.best_loss_ = float(np.min(self.loss_curve_))
            self.validation_scores_ = self.best_validation_score_ = None
        valid = [float(row.get("valid_loss", np.nan)) for row in history]
        if np.all(np.isnan(valid)):
            self.validation_loss_curve_ = None
            self.best_validation_loss_ = None
        else:
            self.validation_loss_curve_ = valid
            # the weights kept are the best of the latest run (warm starts
            # continue from them, and early stopping restores within a run)
            latest = valid[self._run_start:]
            self.best_validation_loss_ = (
                None if np.all(np.isnan(latest)) else float(np.nanmin(latest))
            )
        self.n_iter_ = len(history)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "net_")

    def __getstate__(self):
        # a copy: BaseEstimator.__getstate__ may return the live __dict__
        state = dict(super().__getstate__())
        state["_skxfer_pickle"] = PICKLE_FORMAT
        capture_settings(self, state)  # the feature-store settings travel
        extractor = state.get("extractor_")
        if extractor is not None and "net_" in state and not self._features_first():
            # trained end to end: the backbone is pickled once, inside net_
            extractor = shallow_copy(extractor)
            extractor.backbone_ = None
            state["extractor_"] = extractor
        return state

    def __setstate__(self, state):
        fitted = "net_" in state
        if fitted and state.get("_skxfer_pickle") is None and state.get(
            "backbone"
        ) is None:
            # a plain MLP pickled by skxfer 0.1.0.dev0: the same fitted state
            for key in ("_features_cached", "_backbone_module", "_backbone_width",
                        "_n_in"):
                state.pop(key, None)
            state["_skxfer_pickle"] = PICKLE_FORMAT
            state.setdefault("_class_weights", None)
            state["_class_weight_used"] = state.get("class_weight")
            state["_split_seed"] = 0
            state["_run_start"] = 0
        check_pickle_format(self, state, fitted=fitted)
        super().__setstate__(state)
        if not fitted:
            return
        if "_architecture" not in state:  # the old plain MLP: its parameters
            self._architecture = self._architecture_params()
        self.device_ = usable_device(self.device_, type(self).__name__)
        extractor = self.extractor_
        if extractor is not None and extractor.backbone_ is None:
            extractor.backbone_ = self.net_.module_.backbone
        if extractor is not None:
            extractor.device_ = self.device_

    # ---- inference ------------------------------------------------------------

    def _forward(self, X):
        check_is_fitted(self)
        extractor = self.extractor_
        if extractor is None or extractor._tabular:
            X = self._validate_rows(X)
            if extractor is not None and self._features_first():
                X = extractor.transform(X)
        elif self._features_first():
            X = extractor.transform(X)
        else:  # images streamed batch by batch through the whole network
            module = self.net_.module_.eval()
            with torch.inference_mode():
                return torch.cat([
                    module(batch.to(self.device_, non_blocking=True)).float().cpu()
                    for batch in extractor.iter_preprocessed(X)
                ])
        return self._infer_rows(X)

    def _validate_rows(self, X):
        """``validate_data`` for prediction, with a fast path for plain arrays.

        A float ndarray of the fitted width, all finite, fitted without
        feature names, is what ``validate_data`` would return (cast to
        float32) -- at a fraction of its cost for one row. Anything else goes
        through ``validate_data`` and gets scikit-learn's checks and messages.
        """
        if (
            type(X) is np.ndarray and X.ndim == 2 and X.dtype.kind == "f"
            and X.shape[1] == self.n_features_in_ and len(X)
            and not hasattr(self, "feature_names_in_")
            and np.isfinite(X).all()
        ):
            X = X.astype(np.float32, copy=False)
        else:
            X = validate_table(self, X, dtype=np.float32, reset=False)
        check_magnitude(X)
        return X

    def _infer_rows(self, X):
        """Outputs of the trained network for feature rows ``X``, on the CPU.

        Rows run in blocks of exactly ``_ROW_BLOCK`` (the last one padded with
        zeros): every row goes through matrix products of one shape, so its
        prediction is the same, bit for bit, alone or in any batch -- float32
        products of other shapes can differ in the last bits. The block is
        small, so one row costs little (``benchmarks/bench_predict.py``).
        """
        module = self.net_.module_
        if module.training:
            module.eval()
        device = torch.device(self.device_)
        rows = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        n, block = len(rows), _ROW_BLOCK
        outputs = []
        with torch.inference_mode():
            if device.type != "cpu" and rows.numel() * 4 <= _DEVICE_ROWS_BYTES:
                rows = rows.to(device)
            for start in range(0, n, block):
                chunk = rows[start : start + block].to(device, non_blocking=True)
                m = len(chunk)
                if m < block:
                    chunk = torch.cat([chunk, chunk.new_zeros((block - m,)
                                                              + chunk.shape[1:])])
                outputs.append(module(chunk)[:m].float())
        if not outputs:
            raise ValueError("Found array with 0 sample(s); pass at least one row.")
        return torch.cat(outputs).cpu()

    def save_network(self, path):
        """Save the trained network to ``path`` for later transfer.

        The file holds the layer sizes and weights (CPU tensors, loadable with
        ``torch.load(weights_only=True)``); pass its path as ``backbone`` to
        another estimator, on any machine. Networks with an image backbone are
        saved with joblib instead (``joblib.dump(estimator, path)``) and passed
        as the fitted estimator.

        Parameters
        ----------
        path : str or path-like
            Where to write the file (``.pt`` by convention).
        """
        check_is_fitted(self)
        if hasattr(self.module_, "backbone"):
            raise ValueError(
                "save_network saves plain MLP networks; this one has a backbone. "
                "Use joblib.dump(estimator, path) and pass the loaded estimator "
                "as backbone."
            )
        save_network(self, path)

    # ---- conveniences for power users ---------------------------------------

    @property
    def module_(self):
        """The trained torch module: backbone and head, or the MLP alone."""
        if not hasattr(self, "net_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; "
                "call 'fit' first."
            )
        if self._features_first():
            # skorch trained the head on the extractor's features: the network
            # is the two together (the same modules, not copies)
            return TransferNet(self.extractor_.backbone_, self.net_.module_).eval()
        return self.net_.module_

    @property
    def history_(self):
        """skorch's per-epoch (and per-batch) training history (``net_.history``)."""
        if not hasattr(self, "net_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; "
                "call 'fit' first."
            )
        return self.net_.history

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        tags.input_tags.allow_nan = False
        return tags


_DOC_COMMON_PARAMS = """
    hidden_layer_sizes : int or tuple of int, default=(100,)
        The width of each hidden layer, from input to output. An int means one
        hidden layer; ``()`` gives a linear model.
    activation : str, default='relu'
        The hidden layers' activation: 'relu', 'leaky_relu', 'elu', 'selu',
        'gelu', 'silu', 'tanh', 'sigmoid' (alias 'logistic') or 'identity'.
    batch_norm : bool, default=False
        Put a batch-normalisation layer after each hidden linear layer.
    dropout : float, default=0.0
        Dropout probability after each hidden activation (0 disables it).
    init : str, default='xavier_uniform'
        Weight initialisation of the linear layers: 'xavier_uniform' (Glorot;
        scikit-learn's MLP draws its ReLU and tanh weights from the same
        range), 'xavier_normal', 'kaiming_uniform', 'kaiming_normal' (He),
        'orthogonal', 'auto' (He/Kaiming for the ReLU family, Glorot for
        saturating activations, LeCun for SELU), or 'default' (PyTorch's own).
        Biases start at zero. Glorot is the default: in
        ``benchmarks/bench_defaults.py`` it matched He ('auto') within 0.001
        on four datasets and beat it on diabetes (R² 0.476 vs 0.468), and a
        (256, 256) ReLU network on the 20,000-row task reached 0.814 test
        accuracy after 5 epochs against He's 0.754.
    optimizer : str or torch.optim.Optimizer subclass, default='adam'
        'adam', 'adamw', 'nadam', 'radam', 'sgd', 'rmsprop', 'adagrad', or an
        optimizer class. Adam, AdamW, SGD and Adagrad use torch's fused kernels
        where the device supports them.
    lr : float, default=1e-3
        The learning rate.
    momentum : float, default=0.9
        Momentum for 'sgd' and 'rmsprop'; ignored by the others.
    nesterov : bool, default=False
        Nesterov momentum for 'sgd'.
    weight_decay : float, default=0.0
        L2 penalty (for 'adamw', decoupled weight decay).
    optimizer_params : dict, default=None
        More keyword arguments for the optimizer, e.g. ``{"betas": (0.9, 0.99)}``.
    batch_size : 'auto' or int, default='auto'
        Samples per gradient step (the last batch of an epoch may be smaller).
        'auto' is scikit-learn's ``min(200, n_samples)``, except that on rows
        of features (a table, or the features of a wholly frozen backbone)
        larger data gets larger batches: ``n_samples // 32`` rows per step,
        up to 512 (beyond 6,400 training rows; an epoch keeps at least 32
        steps). With ``early_stopping``, ``n_samples`` counts the rows left
        for training.
        A torch step costs about the same at 200 or 512 rows, so large tables
        train faster at the same accuracy (see
        ``benchmarks/bench_defaults.py``), while small ones take as many
        steps per epoch as in scikit-learn. Images that pass through a
        backbone that trains stay at ``min(200, n_samples)``: memory grows
        with the batch (lower it for a large backbone on a small GPU).
    max_epochs : int, default=200
        The most passes over the training data. Reaching it before the loss
        settles gives a ``ConvergenceWarning``, as scikit-learn's ``max_iter``.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data, stop when the
        validation loss has not improved by ``tol`` for ``n_iter_no_change``
        epochs, and keep the weights of the best epoch. Without it, training
        stops when the training loss has not improved by ``tol`` for
        ``n_iter_no_change`` epochs (scikit-learn's rule; not in
        ``partial_fit``, which runs one epoch).
    validation_fraction : float, default=0.1
        Share of the training data held out when ``early_stopping`` is on.
    n_iter_no_change : int, default=10
        Epochs without an improvement of at least ``tol`` (of the validation
        loss with ``early_stopping``, else of the training loss) after which
        training stops.
    tol : float, default=1e-4
        The least decrease of the loss that counts as improvement.
    warm_start : bool, default=False
        When True, ``fit`` on a fitted estimator continues training from its
        current weights for ``max_epochs`` more epochs instead of starting
        over. Changed training hyper-parameters (``lr``, optimizer settings,
        callbacks, ...) take effect; the optimizer's state carries over when
        its class is unchanged. A changed architecture (``hidden_layer_sizes``,
        ``activation``, ``batch_norm``, ``dropout``, ``backbone``, ``freeze``,
        ``unfreeze_at``, ``l2_sp`` on/off) raises a ``ValueError``.
    callbacks : list of skorch callbacks, default=None
        Extra skorch callbacks (or ``(name, callback)`` tuples), copied at fit,
        e.g. ``skorch.callbacks.LRScheduler``.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, dropout, shuffling and the validation
        split. An int gives identical models for identical data and device.
    device : str or torch.device, default='auto'
        'auto' (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:<index>'
        or 'mps'. Resolved at ``fit``.
    verbose : int, default=0
        0 is silent; 1 prints a table of the losses per epoch; 2 also shows a
        progress bar over the batches of each epoch (tqdm, notebook-aware).
    backbone : see below, default=None
        A pretrained network to put under the MLP (which becomes its new
        head), trained end to end. None: a plain MLP. A
        :class:`PretrainedFeatureExtractor` or a torchvision model name: ``X``
        is then images, as the extractor takes them. A fitted
        ``TransferMLPClassifier``/``TransferMLPRegressor`` (the source task):
        its hidden layers (and its own backbone) are reused, with a new output
        layer for this task; it stays fitted under ``clone``. A
        ``torch.nn.Module`` (copied at fit), or the path of a file written by
        :meth:`save_network`. Ignored options below apply only with a backbone.
    freeze : bool, int or list of str, default=True
        What of the backbone is not trained: True (all of it -- feature
        extraction; its BatchNorm layers keep their statistics), False
        (nothing: full fine-tuning), an int k (its first k blocks, in the
        order it computes them), or parameter-name patterns (fnmatch, names
        relative to the backbone, e.g. ``["layer1.*", "conv1.*"]``).
    unfreeze_at : int or None, default=None
        Release the frozen part after this many epochs. With ``freeze=True``
        this is LP-FT: fit the head on frozen features, then fine-tune all.
    backbone_lr_factor : float, default=1.0
        The backbone's learning rate as a fraction of ``lr`` (e.g. 0.1), so
        pretrained weights move less than the new head.
    backbone_lr_decay : float, default=1.0
        Discriminative fine-tuning (Howard & Ruder, 2018): each backbone block
        gets this fraction of the learning rate of the block above it (its
        top block gets ``lr * backbone_lr_factor``); e.g. 1/2.6. 1.0: one rate
        for the whole backbone.
    l2_sp : float, default=0.0
        L2-SP strength: adds ``l2_sp / 2 * ||w - w_pretrained||^2`` over the
        trainable backbone weights to the loss, pulling them toward their
        pretrained values (Li et al., 2018).
    bn_mode : {'train', 'frozen'}, default='train'
        BatchNorm layers in the trainable backbone: 'train' updates their
        statistics, 'frozen' keeps the pretrained ones (eval mode).
"""

_DOC_COMMON_ATTRIBUTES = """
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of str
        Column names of ``X`` when it was a DataFrame with string column names.
    loss_ : float
        The training loss of the last epoch.
    loss_curve_ : list of float
        Training loss of each epoch.
    best_loss_ : float or None
        The lowest training loss; None with ``early_stopping`` (as in
        scikit-learn).
    validation_scores_ : list of float or None
        With ``early_stopping``, the score of each epoch on the held-out part
        (accuracy, or R² for the regressor), as ``score`` computes it.
    best_validation_score_ : float or None
        The best of ``validation_scores_`` in the latest ``fit``.
    validation_loss_curve_ : list of float or None
        Validation loss of each epoch (``early_stopping=True``), else None.
    best_validation_loss_ : float or None
        The lowest validation loss of the latest ``fit`` (whose weights are
        kept), else None.
    n_iter_ : int
        Number of epochs run (across ``warm_start`` and ``partial_fit`` calls).
    device_ : str
        The device the network was trained on.
    net_ : skorch.NeuralNet
        The fitted skorch net, for power users (history, callbacks, ``save_params``).
    module_ : torch.nn.Module
        The trained network: the MLP, or ``backbone`` + ``head`` (a wholly
        frozen backbone is run once to cache its features, and skorch's
        ``net_`` then trains the head alone).
    history_ : skorch.History
        skorch's training history (``net_.history``).
    extractor_ : PretrainedFeatureExtractor or None
        With a backbone, the fitted extractor that owns it (a new module built
        at ``fit``; ``module_.backbone`` is the same object) and preprocesses
        ``X``: ``extractor_.transform(X)`` gives the features the head sees.
        None without a backbone.
"""


_DOC_NOTES = """
    Notes
    -----
    ``fit`` and ``partial_fit`` build and train on a copy and assign the
    fitted attributes at the end: an exception -- bad data, a diverged loss,
    a ``KeyboardInterrupt`` (Ctrl-C), which propagates -- leaves the earlier
    model intact, or the estimator unfitted.
"""


class TransferMLPClassifier(ClassifierMixin, _BaseTransferMLP):
    __doc__ = (
        """A backprop multilayer perceptron classifier, trained with PyTorch via skorch.

    A scikit-learn classifier: ``fit``, ``predict``, ``predict_proba`` and
    ``score`` work as for :class:`sklearn.neural_network.MLPClassifier`, in
    pipelines, grid searches and cross-validation. The network is a stack of
    ``Linear -> [BatchNorm] -> activation -> [Dropout]`` blocks and a linear
    output layer trained with the cross-entropy loss.

    Parameters
    ----------"""
        + _DOC_COMMON_PARAMS
        + """    class_weight : dict, 'balanced' or None, default=None
        Weights of the classes in the loss: ``{label: weight}``, or 'balanced'
        for weights inversely proportional to the class frequencies.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels."""
        + _DOC_COMMON_ATTRIBUTES
        + """
    See Also
    --------
    TransferMLPRegressor : The same network for regression.
    sklearn.neural_network.MLPClassifier : scikit-learn's numpy MLP.
"""
        + _DOC_NOTES
        + """
    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.model_selection import train_test_split
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skxfer import TransferMLPClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    >>> clf = make_pipeline(
    ...     StandardScaler(),
    ...     TransferMLPClassifier((64,), max_epochs=50, random_state=0),
    ... )
    >>> clf.fit(X_train, y_train).score(X_test, y_test) > 0.9
    True
    >>> clf.predict_proba(X_test[:2]).shape
    (2, 10)
    """
    )

    _criterion = nn.CrossEntropyLoss

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        *,
        activation="relu",
        batch_norm=False,
        dropout=0.0,
        init="xavier_uniform",
        optimizer="adam",
        lr=1e-3,
        momentum=0.9,
        nesterov=False,
        weight_decay=0.0,
        optimizer_params=None,
        batch_size="auto",
        max_epochs=200,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        warm_start=False,
        callbacks=None,
        random_state=None,
        device="auto",
        verbose=0,
        class_weight=None,
        backbone=None,
        freeze=True,
        unfreeze_at=None,
        backbone_lr_factor=1.0,
        backbone_lr_decay=1.0,
        l2_sp=0.0,
        bn_mode="train",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.batch_norm = batch_norm
        self.dropout = dropout
        self.init = init
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.optimizer_params = optimizer_params
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.callbacks = callbacks
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.class_weight = class_weight
        self.backbone = backbone
        self.freeze = freeze
        self.unfreeze_at = unfreeze_at
        self.backbone_lr_factor = backbone_lr_factor
        self.backbone_lr_decay = backbone_lr_decay
        self.l2_sp = l2_sp
        self.bn_mode = bn_mode

    def _param_spec(self):
        return {
            **_COMMON_SPEC,
            "class_weight": (
                _is_class_weight,
                "None, 'balanced' or a dict {class label: weight}",
            ),
        }

    def fit(self, X, y, sample_weight=None):
        """Fit the network to data ``X`` and class labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; cast to float32.
        y : array-like of shape (n_samples,)
            Class labels (ints, strings or bools; at least two classes).
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the samples in the loss, which is the weighted mean
            ``sum(w_i * c_i * l_i) / sum(w_i * c_i)`` over each batch (``c``:
            the class weights; the validation loss is weighted the same way).
            None: equal weights.

        Returns
        -------
        self : TransferMLPClassifier
            The fitted estimator.
        """
        incremental = self.warm_start and hasattr(self, "net_")
        return self._fit(X, y, incremental=incremental, sample_weight=sample_weight)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Train for one epoch on ``(X, y)``, continuing from the current weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A chunk of training data.
        y : array-like of shape (n_samples,)
            Its class labels.
        classes : array-like of shape (n_classes,), default=None
            Every class label that will ever be seen; needed on the first call,
            since one chunk may not contain them all.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the samples in the loss, which is the weighted mean
            ``sum(w_i * c_i * l_i) / sum(w_i * c_i)`` over each batch (``c``:
            the class weights; the validation loss is weighted the same way).
            None: equal weights.

        Returns
        -------
        self : TransferMLPClassifier
            The updated estimator.
        """
        incremental = hasattr(self, "net_")
        if not incremental and classes is None:
            raise ValueError(
                "classes must be passed on the first call to partial_fit, e.g. "
                "partial_fit(X, y, classes=np.unique(y_all))."
            )
        return self._fit(X, y, incremental=incremental, epochs=1, classes=classes,
                         partial=True, sample_weight=sample_weight)

    def _encode_targets(self, y, incremental, classes, partial):
        check_classification_targets(y)
        if partial and self.class_weight == "balanced":
            raise ValueError(
                "class_weight='balanced' is not supported for partial_fit: one "
                "chunk does not show the class frequencies. Compute weights with "
                "sklearn.utils.class_weight.compute_class_weight('balanced', "
                "classes=classes, y=y) on a large enough sample of the targets "
                "and pass them as class_weight={label: weight}."
            )
        name = type(self).__name__
        if incremental:
            if classes is not None and not np.array_equal(
                np.unique(classes), self.classes_
            ):
                raise ValueError(
                    f"classes={np.unique(classes)!r} differs from the classes of "
                    f"the first call, {self.classes_!r}."
                )
            known = self.classes_
        else:
            known = np.unique(y if classes is None else classes)
            if classes is not None and not np.isin(y, known).all():
                extra = np.setdiff1d(np.unique(y), known)
                raise ValueError(
                    f"y holds labels {extra!r} that are not in classes={known!r}."
                )
            if len(known) < 2:
                raise ValueError(
                    f"{name} needs samples of at least 2 classes in the data, but "
                    f"the data contains only one class: {known.tolist()[0]!r}."
                )
        unseen = ~np.isin(y, known)
        if unseen.any():
            raise ValueError(
                f"y holds labels {np.unique(y[unseen])!r} that the fitted "
                f"{name} has not seen (classes_={known!r}). Fit anew (warm_start="
                "False) to train on new classes."
            )
        y_encoded = np.searchsorted(known, y).astype(np.int64)
        self.classes_ = known
        # class weights come from the data of a whole fit; partial_fit keeps
        # those of its first call unless class_weight is changed
        if not (partial and incremental) or (
            self.class_weight != getattr(self, "_class_weight_used", None)
        ):
            self._class_weight_used = self.class_weight
            self._class_weights = (
                None if self.class_weight is None
                else self._class_weight_vector(y_encoded)
            )
        return y_encoded, len(known)

    def _criterion_params(self):
        if self._class_weights is None:
            return {}
        return {
            "criterion__weight": torch.as_tensor(
                self._class_weights, dtype=torch.float32
            )
        }

    def _class_weight_vector(self, y_encoded):
        """Loss weight of each class in ``classes_`` order (first fit only)."""
        if self.class_weight == "balanced":
            present = np.unique(y_encoded)
            weights = np.ones(len(self.classes_))
            weights[present] = compute_class_weight(
                "balanced", classes=present, y=y_encoded
            )
            return weights
        labels = self.classes_.tolist()
        unknown = [k for k in self.class_weight if k not in labels]
        if unknown:
            raise ValueError(
                f"class_weight names labels {unknown!r} that are not among the "
                f"classes of y, {labels!r}."
            )
        return np.array([self.class_weight.get(c, 1.0) for c in labels])

    def predict_proba(self, X):
        """Class probabilities of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The samples.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities in the order of ``classes_``; rows sum to 1.
        """
        logits = self._forward(X)
        return torch.softmax(logits.double(), dim=1).numpy()

    def predict_log_proba(self, X):
        """Logarithms of the class probabilities of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The samples.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            ``log(predict_proba(X))``, computed stably (log-softmax).
        """
        logits = self._forward(X)
        return torch.log_softmax(logits.double(), dim=1).numpy()

    def predict(self, X):
        """Predicted class labels of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The samples.

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        logits = self._forward(X)
        return self.classes_[logits.argmax(dim=1).numpy()]


class TransferMLPRegressor(RegressorMixin, _BaseTransferMLP):
    __doc__ = (
        """A backprop multilayer perceptron regressor, trained with PyTorch via skorch.

    A scikit-learn regressor: ``fit``, ``predict`` and ``score`` (R²) work as
    for :class:`sklearn.neural_network.MLPRegressor`, with one or several
    targets. The network is a stack of ``Linear -> [BatchNorm] -> activation
    -> [Dropout]`` blocks and a linear output trained with the squared error.
    Scale the targets (``TransformedTargetRegressor``) when they are large.

    Parameters
    ----------"""
        + _DOC_COMMON_PARAMS
        + """
    Attributes
    ----------
    n_outputs_ : int
        Number of targets."""
        + _DOC_COMMON_ATTRIBUTES
        + """
    See Also
    --------
    TransferMLPClassifier : The same network for classification.
    sklearn.neural_network.MLPRegressor : scikit-learn's numpy MLP.
"""
        + _DOC_NOTES
        + """
    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.compose import TransformedTargetRegressor
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skxfer import TransferMLPRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> reg = TransformedTargetRegressor(
    ...     make_pipeline(
    ...         StandardScaler(),
    ...         TransferMLPRegressor(
    ...             (16,), max_epochs=50, batch_size=32, random_state=0
    ...         ),
    ...     ),
    ...     transformer=StandardScaler(),
    ... )
    >>> reg.fit(X[:300], y[:300]).score(X[300:], y[300:]) > 0.4
    True
    """
    )

    _criterion = nn.MSELoss

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        *,
        activation="relu",
        batch_norm=False,
        dropout=0.0,
        init="xavier_uniform",
        optimizer="adam",
        lr=1e-3,
        momentum=0.9,
        nesterov=False,
        weight_decay=0.0,
        optimizer_params=None,
        batch_size="auto",
        max_epochs=200,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        warm_start=False,
        callbacks=None,
        random_state=None,
        device="auto",
        verbose=0,
        backbone=None,
        freeze=True,
        unfreeze_at=None,
        backbone_lr_factor=1.0,
        backbone_lr_decay=1.0,
        l2_sp=0.0,
        bn_mode="train",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.batch_norm = batch_norm
        self.dropout = dropout
        self.init = init
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.optimizer_params = optimizer_params
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.callbacks = callbacks
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.backbone = backbone
        self.freeze = freeze
        self.unfreeze_at = unfreeze_at
        self.backbone_lr_factor = backbone_lr_factor
        self.backbone_lr_decay = backbone_lr_decay
        self.l2_sp = l2_sp
        self.bn_mode = bn_mode

    def fit(self, X, y, sample_weight=None):
        """Fit the network to data ``X`` and targets ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; cast to float32.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the samples in the loss, which is the weighted mean
            ``sum(w_i * c_i * l_i) / sum(w_i * c_i)`` over each batch (``c``:
            the class weights; the validation loss is weighted the same way).
            None: equal weights.

        Returns
        -------
        self : TransferMLPRegressor
            The fitted estimator.
        """
        incremental = self.warm_start and hasattr(self, "net_")
        return self._fit(X, y, incremental=incremental, sample_weight=sample_weight)

    def partial_fit(self, X, y, sample_weight=None):
        """Train for one epoch on ``(X, y)``, continuing from the current weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A chunk of training data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Its targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the samples in the loss, which is the weighted mean
            ``sum(w_i * c_i * l_i) / sum(w_i * c_i)`` over each batch (``c``:
            the class weights; the validation loss is weighted the same way).
            None: equal weights.

        Returns
        -------
        self : TransferMLPRegressor
            The updated estimator.
        """
        return self._fit(X, y, incremental=hasattr(self, "net_"), epochs=1,
                         partial=True, sample_weight=sample_weight)

    def _encode_targets(self, y, incremental, classes, partial):
        y = np.asarray(y, dtype=np.float32)
        y2d = y.reshape(-1, 1) if y.ndim == 1 else y
        if incremental and y2d.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y has {y2d.shape[1]} target(s), but this {type(self).__name__} "
                f"was fitted with {self.n_outputs_}."
            )
        if not incremental:
            self.n_outputs_ = y2d.shape[1]
            self._y_1d = y.ndim == 1
        return y2d, y2d.shape[1]

    def predict(self, X):
        """Predicted targets of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The samples.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            1-d when the network was fitted on a 1-d ``y``.
        """
        out = self._forward(X).double().numpy()
        return out.ravel() if self._y_1d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

