"""TransferMLPClassifier and TransferMLPRegressor: scikit-learn faces over skorch.

The estimators validate their parameters and data the scikit-learn way, build a
torch module and a configured skorch net in ``fit``, and let skorch train it.
"""

import copy
import os

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.exceptions import NotFittedError
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
    clone_keeping_fitted_sources,
    is_fitted_source,
    is_unfitted_source,
    source_backbone,
)
from ._device import cpu_module, device_is_valid, resolve_device, usable_device
from ._extract import PretrainedFeatureExtractor
from ._freezing import (
    backbone_param_groups,
    frozen_parameter_names,
    store_reference,
)
from ._images import Labelled
from ._mlp import ACTIVATIONS, INITS, MLP, TransferNet
from ._net import (
    INFERENCE_BATCH_SIZE,
    BatchIterator,
    SkxferNet,
    TensorData,
    ValidSplit,
    seeded,
    supports_fused,
)
from ._saving import is_saved_network, load_network, save_network
from ._validation import (
    any_of,
    check_params,
    is_bool,
    is_int,
    is_none,
    is_real,
    one_of,
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
    "batch_size": (is_int(1), "an int >= 1"),
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


def _shallow_copy(obj):
    """A new object sharing ``obj``'s attributes (no pickling, no deep copy)."""
    new = obj.__class__.__new__(obj.__class__)
    new.__dict__.update(obj.__dict__)
    return new


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
        return clone_keeping_fitted_sources(self, ("backbone",))

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

    def _build_module(self, n_features, n_outputs):
        # with cached features skorch trains the head alone
        backbone = None if self._features_cached else self._backbone_module
        head = MLP(
            n_features,
            self._hidden_sizes(),
            n_outputs,
            activation=self.activation,
            batch_norm=self.batch_norm,
            dropout=self.dropout,
            init=self.init,
        )
        if backbone is None:
            return head
        for p in backbone.parameters():
            p.requires_grad_(True)
        module = TransferNet(backbone, head)
        if self.l2_sp > 0:
            store_reference(module)
        return module

    def _freeze_callbacks(self):
        if self._backbone_module is None or self._features_cached:
            return []
        names = frozen_parameter_names(self.freeze, self._backbone_module)
        if not names:
            return []
        patterns = [f"backbone.{n}" for n in names]
        callbacks = [("freezer", Freezer(patterns, at=1))]
        if self.unfreeze_at is not None:
            callbacks.append(
                ("unfreezer", Unfreezer(patterns, at=self.unfreeze_at + 1))
            )
        return callbacks

    def _build_callbacks(self):
        quiet = not self.verbose
        callbacks = [("stop_on_non_finite", _StopOnNonFinite())]
        callbacks += self._freeze_callbacks()
        if self.early_stopping:
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

    def _build_net(self, n_features, n_outputs, seed, device):
        opt_cls, opt_kwargs = self._optimizer_config(device)
        train_split = None
        if self.early_stopping:
            train_split = ValidSplit(
                self.validation_fraction,
                stratified=isinstance(self, ClassifierMixin),
                random_state=seed,
            )
        if self.backbone is not None and not self._features_cached:
            opt_kwargs["param_groups"] = backbone_param_groups(
                self._backbone_module,
                self.lr * self.backbone_lr_factor,
                self.backbone_lr_decay,
            )
        net = SkxferNet(
            module=self._build_module(n_features, n_outputs),
            bn_mode=self.bn_mode,
            l2_sp=self.l2_sp if self.backbone is not None else 0.0,
            criterion=self._criterion,
            optimizer=opt_cls,
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            iterator_valid__batch_size=INFERENCE_BATCH_SIZE,
            # used when images stream from their source (skorch's DataLoader)
            iterator_train__shuffle=True,
            **self._loader_params(device),
            train_split=train_split,
            callbacks=self._build_callbacks(),
            device=device,
            verbose=int(self.verbose),
            shuffle_rng=np.random.RandomState(seed),
            **{f"optimizer__{k}": v for k, v in opt_kwargs.items()},
            **self._criterion_params(),
        )
        return net

    def _criterion_params(self):
        return {}

    def _loader_params(self, device):
        extractor = self.extractor_
        if extractor is None:
            return {}
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
            return validate_table(
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

    def _resolve_backbone(self, X, device):
        """The backbone as ``(module, width, extractor, n_features_in)``."""
        backbone, name = self.backbone, type(self).__name__
        if is_unfitted_source(backbone):
            raise ValueError(
                f"backbone is an unfitted {type(backbone).__name__}. Fit it on the "
                "source task first. (As backbone=source, a fitted one stays fitted "
                "under clone; as a value in a GridSearchCV grid it is cloned: "
                "pass sklearn.frozen.FrozenEstimator(source) there.)"
            )
        width = None  # known without a probe when an extractor was just fitted
        if is_saved_network(backbone):
            module, n_in = load_network(backbone)
            extractor = None
        elif is_fitted_source(backbone):
            module, n_in, extractor = source_backbone(backbone)
            if extractor is not None:
                extractor = _shallow_copy(extractor)  # never change the source
        else:
            if isinstance(backbone, PretrainedFeatureExtractor):
                extractor = clone(backbone).set_params(device=device)
            else:  # a model name or a module of the user's
                extractor = PretrainedFeatureExtractor(
                    backbone,
                    weights="DEFAULT" if isinstance(backbone, str) else None,
                    device=device,
                )
            extractor.fit(X)  # runs one sample: the pooled output's width
            module = copy.deepcopy(extractor.backbone_)
            n_in = extractor.n_features_in_ if extractor._tabular else None
            width = extractor.n_features_out_
        if extractor is not None and extractor._tabular:
            extractor = None  # feature vectors go in as they are
        if extractor is not None:
            # one network in memory: the extractor's becomes the one trained
            extractor.backbone_ = module
        if width is None:
            sample = (
                extractor.preprocess(X.iloc[:1] if hasattr(X, "iloc") else X[:1])
                if extractor is not None
                else torch.zeros(1, n_in)
            )
            with torch.inference_mode():
                out = module.to(device).eval()(sample.to(device))
            if out.ndim != 2:
                raise ValueError(
                    f"The backbone of {name} returns outputs of shape "
                    f"{tuple(out.shape)}; the head needs one vector per sample "
                    "(n_samples, n_features). Wrap it in a "
                    "PretrainedFeatureExtractor with a pooling, or end it with "
                    "torch.nn.Flatten()."
                )
            width = out.shape[1]
        return module.cpu(), width, extractor, n_in

    def _fit_inputs(self, X, y, reset, device):
        """Validated training inputs (an array, or preprocessed image tensors)."""
        if reset:
            # A wholly frozen backbone that is never released computes the same
            # features every epoch: compute them once and train the head on
            # them (same model, one backbone pass instead of one per epoch).
            self._features_cached = (
                self.backbone is not None
                and self.freeze is True
                and self.unfreeze_at is None
            )
            # a fresh fit forgets the backbone of an earlier one
            self._backbone_module = self.extractor_ = None
        if self.backbone is None:
            return self._validate_X_y(X, y, reset=reset)
        if reset:
            (
                self._backbone_module,
                self._backbone_width,
                self.extractor_,
                n_in,
            ) = self._resolve_backbone(X, device)
            self._n_in = n_in
        if self.extractor_ is None:  # feature vectors
            X, y = self._validate_X_y(X, y, reset=reset)
            if self._n_in is not None and X.shape[1] != self._n_in:
                raise ValueError(
                    f"X has {X.shape[1]} features, but the backbone was trained on "
                    f"{self._n_in}. Transfer needs the same input features."
                )
            if self._features_cached:
                X = self._embed(TensorData(torch.as_tensor(X)), device)
            return X, y
        classifier = isinstance(self, ClassifierMixin)
        y = check_array(
            y, ensure_2d=False, dtype=None if classifier else "numeric",
            input_name="y",
        )
        if classifier:
            y = column_or_1d(y, warn=True)
        if self._features_cached:  # stream the images once through the backbone
            X = self._embed(self.extractor_.iter_preprocessed(X), device)
            check_consistent_length(X, y)
            return X, y
        images = self.extractor_.image_dataset(X)
        if len(images) != len(y):
            raise ValueError(
                "Found input variables with inconsistent numbers of samples: "
                f"[{len(images)}, {len(y)}]"
            )
        nbytes = len(images) * images[0].numel() * 4
        if nbytes <= _IN_MEMORY_BYTES:
            # preprocessed once, batched from memory (fast path)
            return TensorData(self.extractor_.preprocess(X)), y
        return images, y  # decoded and preprocessed batch by batch, each epoch

    def _fit(self, X, y, *, incremental, epochs=None, classes=None):
        self._check_params()
        name = type(self).__name__
        if incremental:
            net, device, rng = self.net_, self.device_, self._rng
        else:
            device = resolve_device(self.device, name)
            rng = check_random_state(self.random_state)
            net = None
        X, y = self._fit_inputs(X, y, reset=not incremental, device=device)
        y_train, n_outputs = self._encode_targets(y, incremental, classes)
        if isinstance(X, TensorData):
            X = TensorData(X.X, torch.as_tensor(y_train))
            if str(device) != "cpu":
                X = X.to(device)
            y_train = None
        elif isinstance(X, Dataset):  # images streamed from their source
            X = Labelled(X, torch.as_tensor(y_train))
            y_train = None
        seed = int(rng.randint(np.iinfo(np.int32).max))
        with seeded(seed, device):
            if net is None:
                n_features = (
                    self._backbone_width if self.backbone is not None
                    else X.shape[1]
                )
                net = self._build_net(n_features, n_outputs, seed, device)
                net.initialize()
            else:
                net.shuffle_rng = np.random.RandomState(seed)
            net.partial_fit(X, y_train, epochs=epochs)
        self.net_ = net
        self.device_ = device
        self._rng = rng
        self._record_history()
        return self

    def _record_history(self):
        history = self.net_.history
        self.loss_curve_ = [float(row["train_loss"]) for row in history]
        valid = [float(row.get("valid_loss", np.nan)) for row in history]
        if np.all(np.isnan(valid)):
            self.validation_loss_curve_ = None
            self.best_validation_loss_ = None
        else:
            self.validation_loss_curve_ = valid
            self.best_validation_loss_ = float(np.nanmin(valid))
        self.n_iter_ = len(history)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "net_")

    def __getstate__(self):
        state = super().__getstate__()
        # the backbone lives once in the pickle: in net_ (skorch pickles it,
        # CPU-loadable) or, when its features were cached, here on the CPU
        extractor = state.get("extractor_")
        if extractor is not None:
            extractor = _shallow_copy(extractor)
            extractor.backbone_ = None
            state["extractor_"] = extractor
        if state.get("_features_cached"):
            state["_backbone_module"] = cpu_module(state["_backbone_module"])
        else:
            state.pop("_backbone_module", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if not hasattr(self, "net_"):
            return
        self.device_ = usable_device(self.device_, type(self).__name__)
        if self.backbone is None:
            self._backbone_module = None
        elif not self._features_cached:
            self._backbone_module = self.net_.module_.backbone
        extractor = getattr(self, "extractor_", None)
        if extractor is not None:
            extractor.backbone_ = self._backbone_module
            extractor.device_ = self.device_

    # ---- inference ------------------------------------------------------------

    def _embed(self, batches, device, module=None):
        """Run ``module`` (default: the frozen backbone) over ``batches``.

        ``batches`` is a TensorData (batched here, padded so that results do
        not depend on batch composition) or an iterable of input batches.
        Returns a float32 array for the backbone, a CPU tensor for a module.
        """
        backbone = module if module is not None else self._backbone_module
        backbone = backbone.to(device).eval()
        padded = isinstance(batches, TensorData)
        if padded:
            batches = BatchIterator(batches, INFERENCE_BATCH_SIZE, device=device)
        outputs = []
        with torch.inference_mode():
            for batch in batches:
                if padded:
                    out = backbone(batch[0])[: batch.n]
                else:
                    out = backbone(batch.to(device, non_blocking=True))
                outputs.append(out.float().cpu())
        out = torch.cat(outputs)
        return out if module is not None else out.numpy()

    def _forward(self, X):
        check_is_fitted(self)
        if self.extractor_ is not None:
            # images: streamed batch by batch through the whole network
            return self._embed(
                self.extractor_.iter_preprocessed(X), self.device_, self.module_
            )
        X = validate_table(self, X, dtype=np.float32, reset=False)
        if self._features_cached:
            X = self._embed(TensorData(torch.as_tensor(X)), self.device_)
        with torch.inference_mode():
            return self.net_.forward(X)

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
        if self._features_cached:
            # skorch trained the head on cached features; put them back together
            return TransferNet(self._backbone_module, self.net_.module_).eval()
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
    init : str, default='auto'
        Weight initialisation of the linear layers: 'auto' (He/Kaiming for the
        ReLU family, Glorot/Xavier for saturating activations, LeCun for SELU),
        'xavier_uniform', 'xavier_normal', 'kaiming_uniform', 'kaiming_normal',
        'orthogonal', or 'default' (PyTorch's own). Biases start at zero.
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
    batch_size : int, default=200
        Samples per gradient step (the last batch of an epoch may be smaller).
    max_epochs : int, default=200
        Passes over the training data (the most, with ``early_stopping``).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data, stop when the
        validation loss has not improved by ``tol`` for ``n_iter_no_change``
        epochs, and keep the weights of the best epoch.
    validation_fraction : float, default=0.1
        Share of the training data held out when ``early_stopping`` is on.
    n_iter_no_change : int, default=10
        Patience of early stopping, in epochs.
    tol : float, default=1e-4
        The least decrease of the validation loss that counts as improvement.
    warm_start : bool, default=False
        When True, ``fit`` on a fitted estimator continues training from its
        current weights (for ``max_epochs`` more epochs) instead of starting over.
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
    loss_curve_ : list of float
        Training loss at the end of each epoch.
    validation_loss_curve_ : list of float or None
        Validation loss of each epoch (``early_stopping=True``), else None.
    best_validation_loss_ : float or None
        The lowest validation loss (whose weights are kept), else None.
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
        With an image backbone, the fitted extractor that preprocesses ``X``;
        its network is the trained backbone, so ``extractor_.transform(X)``
        gives the features the head sees.
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
        init="auto",
        optimizer="adam",
        lr=1e-3,
        momentum=0.9,
        nesterov=False,
        weight_decay=0.0,
        optimizer_params=None,
        batch_size=200,
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

    def fit(self, X, y):
        """Fit the network to data ``X`` and class labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; cast to float32.
        y : array-like of shape (n_samples,)
            Class labels (ints, strings or bools; at least two classes).

        Returns
        -------
        self : TransferMLPClassifier
            The fitted estimator.
        """
        incremental = self.warm_start and hasattr(self, "net_")
        return self._fit(X, y, incremental=incremental)

    def partial_fit(self, X, y, classes=None):
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
        return self._fit(X, y, incremental=incremental, epochs=1, classes=classes)

    def _encode_targets(self, y, incremental, classes):
        check_classification_targets(y)
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
        if not incremental:
            self.classes_ = known
            if self.class_weight is not None:
                self._class_weights = self._class_weight_vector(y_encoded)
        return y_encoded, len(known)

    def _criterion_params(self):
        if self.class_weight is None:
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
        init="auto",
        optimizer="adam",
        lr=1e-3,
        momentum=0.9,
        nesterov=False,
        weight_decay=0.0,
        optimizer_params=None,
        batch_size=200,
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

    def fit(self, X, y):
        """Fit the network to data ``X`` and targets ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; cast to float32.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Target values.

        Returns
        -------
        self : TransferMLPRegressor
            The fitted estimator.
        """
        incremental = self.warm_start and hasattr(self, "net_")
        return self._fit(X, y, incremental=incremental)

    def partial_fit(self, X, y):
        """Train for one epoch on ``(X, y)``, continuing from the current weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A chunk of training data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Its targets.

        Returns
        -------
        self : TransferMLPRegressor
            The updated estimator.
        """
        return self._fit(X, y, incremental=hasattr(self, "net_"), epochs=1)

    def _encode_targets(self, y, incremental, classes):
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

