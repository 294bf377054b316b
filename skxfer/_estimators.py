"""TransferMLPClassifier and TransferMLPRegressor: scikit-learn faces over skorch.

The estimators check their parameters and data the scikit-learn way and fit
in named steps (see ``_BaseTransferMLP._train``), each a function of explicit
inputs in a module of its own: the run is settled (``_training``), the
backbone resolved and the model's shape settled once (``_inputs``,
``_plan``), the inputs and targets prepared (``_inputs``), the skorch net
built and trained (``_training``, ``_net``, ``_callbacks``, ``_losses``),
and the fitted state recorded on the working copy that ``fit`` commits at
the end. Predictions go through ``_inference``, pickles through
``_persistence``.
"""

import os
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted
from skorch.callbacks import Callback
from torch import nn

from ._adaptation import (
    CLASSIFIER_ONLY,
    METHODS,
    check_classes,
    check_validation_labels,
    paired,
    read_training_domains,
    split_rows,
)

# the private callbacks live in _callbacks; fitted nets in older pickles name
# them here (pickle path, do not remove)
from ._callbacks import (  # noqa: F401
    _noop,
    _StopOnNonFinite,
    _TrainingPlateau,
    _ValidScore,
    _WeightedEpochLoss,
)
from ._device import device_is_valid
from ._extract import PretrainedFeatureExtractor
from ._inference import infer_rows, network_of, stream_images, validate_rows
from ._inputs import (
    backbone_for_fit,
    given_validation,
    training_inputs,
    training_set,
    validation_inputs,
)
from ._mlp import ACTIVATIONS, INITS
from ._net import TrainingInterrupted
from ._persistence import loadable_state, loaded_attributes, pickled_state
from ._plan import check_architecture
from ._precision import SETTINGS, is_precision
from ._saving import save_network
from ._seeding import seeded
from ._source import SourceParamMixin, is_fitted_source, is_unfitted_source
from ._store import capture_settings, carry_settings
from ._training import (
    OPTIMIZERS,
    Run,
    Targets,
    build_net,
    continue_run,
    converged,
    history_attributes,
    start_run,
    train,
)
from ._validation import (
    any_of,
    check_params,
    commit_fitted,
    fresh_copy,
    is_bool,
    is_int,
    is_none,
    is_real,
    one_of,
    shallow_copy,
)

# preprocessed images up to this size are kept in memory for training;
# larger collections are decoded batch by batch in every epoch
_IN_MEMORY_BYTES = 1 << 30
# private fitted state (the public fitted attributes end with "_"); the plan
# and the cached module_ are derived (not pickled, rebuilt on loading)
_FITTED_PRIVATE = ("_rng", "_architecture", "_class_weights", "_class_weight_used",
                   "_y_1d", "_split_seed", "_run_start", "_plan", "_module",
                   "_validation_given")


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
        "None, a torchvision model name, 'timm:<name>' (a timm model), a "
        "PretrainedFeatureExtractor, a fitted "
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
    "adaptation": (
        any_of(is_none, one_of(*METHODS)),
        "None or a str among " + ", ".join(repr(m) for m in METHODS),
    ),
    "adaptation_weight": (is_real(0), "a float >= 0"),
    "adaptation_layer": (
        any_of(is_none, lambda v: isinstance(v, str)),
        "None or the name of a layer of module_ (e.g. 'head.hidden.0')",
    ),
    "mixed_precision": (is_precision, SETTINGS),
}


class _BaseTransferMLP(SourceParamMixin, BaseEstimator):
    """Shared parameters, fitting, pickling and inference of the MLP estimators."""

    _criterion = None  # set by subclasses
    _task = None  # what y holds, for the mask of unlabelled target rows
    # fit reads the rows' domains: sample_domain reaches it by its declared
    # request (DA pipelines, CircularValidation, metadata routing)
    __metadata_request__fit = {"sample_domain": True}
    __metadata_request__partial_fit = {"sample_domain": True}
    _skxfer_network = True  # a source network other estimators can transfer from
    _source_param = "backbone"  # a fitted source there stays fitted under clone

    def __sklearn_clone__(self):
        # the feature-store settings this estimator carries (a worker's) go
        # with its clones
        return carry_settings(self, super().__sklearn_clone__())

    # ---- parameters -----------------------------------------------------------

    def _param_spec(self):
        return _COMMON_SPEC

    def _check_params(self):
        check_params(self, self._param_spec())
        if self.optimizer == "sgd" and self.nesterov and self.momentum == 0:
            raise ValueError(
                f"nesterov=True needs momentum > 0 in {type(self).__name__}; "
                "got momentum=0. Set momentum (e.g. 0.9) or nesterov=False."
            )

    # ---- fitting --------------------------------------------------------------

    def _fit(self, X, y, run, sample_weight=None, validation=None,
             sample_domain=None):
        """Check, then train a working copy and commit it whole (see Notes).

        ``validation``: ``fit``'s ``(X_val, y_val, sample_weight_val)``;
        ``sample_domain``: the rows' domains (domain adaptation).
        """
        self._check_params()
        if run.partial and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        validation = given_validation(*(validation or (None,) * 3),
                                      self.early_stopping)
        if run.continuing:
            check_architecture(self._architecture, self.get_params(deep=False),
                               run.method)
            self._check_validation_kept(validation)
        # Everything is computed on a copy and handed over at the end (stricter
        # than scikit-learn's MLP, which sets fitted attributes as it goes): a
        # fit that fails (bad data, divergence, Ctrl-C) leaves the earlier
        # model intact, or the estimator unfitted.
        new = shallow_copy(self) if run.continuing else fresh_copy(self,
                                                                   self._fitted())
        new.__dict__.pop("_module", None)  # a view of the earlier network
        # once given a validation set, a model keeps needing one
        # (_check_validation_kept)
        new._validation_given = validation is not None or getattr(
            new, "_validation_given", False)
        try:
            done = new._train(X, y, run, sample_weight, validation,
                              sample_domain)
        except TrainingInterrupted as err:
            raise err.__cause__ from None
        commit_fitted(self, new, self._fitted() + tuple(new._fitted()))
        if not done:
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

    def _check_validation_kept(self, validation):
        """A model fitted on a validation set of its own goes on validating on
        one: every row of its ``X`` has trained it, so a split of them would
        validate on training data."""
        if (validation is None and self.early_stopping
                and getattr(self, "_validation_given", False)):
            raise ValueError(
                f"This {type(self).__name__} was fitted with a validation set "
                "of its own (X_val, y_val), so all of its training data has "
                "trained the network: a validation split of X would score it on "
                "rows it has learned. Pass X_val and y_val again to continue "
                "with early_stopping=True, or fit anew (warm_start=False)."
            )

    def _fitted(self):
        """Names of the fitted attributes (public ones end with '_')."""
        params = self.get_params(deep=False)
        public = tuple(
            k for k in self.__dict__
            if k.endswith("_") and not k.startswith("_") and k not in params
        )
        return public + _FITTED_PRIVATE

    def _train(self, X, y, run, sample_weight, validation=None,
               sample_domain=None):
        """The steps of one fit, on the working copy that :meth:`_fit` made.

        Each step is a function of explicit inputs that returns what it
        builds; this method only assigns the results. Returns whether
        training converged.
        """
        params = self.get_params(deep=False)
        # 1. the rows' domains (None: -1 and NaN are labels, every row trains)
        domains = read_training_domains(params, y, sample_domain, self._task,
                                        type(self).__name__)
        check_classes(run.classes, domains)
        check_validation_labels(validation, domains, self._task)
        # 2. settle the run: device, random state, the run's one seed
        setup = (
            continue_run(params, self.device_, self._rng, self._split_seed,
                         self._architecture, len(self.net_.history))
            if run.continuing else start_run(params, type(self).__name__)
        )
        with seeded(setup.seed, setup.device):
            # 3. the backbone's fitted extractor and the model's shape
            extractor, plan = (
                (self.extractor_, self._plan) if run.continuing
                else backbone_for_fit(params, X, setup.device, maker=self)
            )
            # 4. the inputs, as the plan says the net takes them
            X, y = training_inputs(self, plan, extractor, X,
                                   y if domains is None else domains.y,
                                   reset=not run.continuing,
                                   in_memory_bytes=_IN_MEMORY_BYTES)
            X, y, sample_weight, X_target = split_rows(X, y, sample_weight, domains)
            # 5. targets and weights: the training set (with the target rows),
            # a given validation set
            targets = self._encode_targets(y, run)
            data = paired(training_set(X, targets.y, sample_weight, setup.device),
                          X_target, setup.seed, setup.device)
            valid = None if validation is None else self._validation_set(
                validation, plan, extractor, targets, setup)
        # a seed of its own: the head starts the same whatever the backbone drew
        with seeded(setup.seed, setup.device):
            # 6. the net: a new module, or a copy of the fitted one
            net, extractor = build_net(
                params, plan, run, setup, targets, extractor, data,
                fitted=self.net_ if run.continuing else None, valid=valid,
            )
            # 7. skorch's loop
            train(net, data, run.epochs, type(self).__name__, params["batch_size"])
        # 8. the fitted state, on this working copy
        self.__dict__.update(
            net_=net, extractor_=extractor, device_=setup.device, _rng=setup.rng,
            _plan=plan, _architecture=setup.architecture,
            _split_seed=setup.split_seed, _run_start=setup.run_start,
            **targets.fitted,
            **history_attributes(net.history, params["early_stopping"],
                                 setup.run_start),
        )
        return converged(net, run)

    def _encode_targets(self, y, run):
        """``y`` for the loss, as a :class:`~skxfer._training.Targets`."""
        raise NotImplementedError

    def _encode_y_val(self, y_val, targets):
        """``y_val`` encoded as ``targets`` encodes ``y``."""
        raise NotImplementedError

    def _validation_set(self, validation, plan, extractor, targets, setup):
        """The net's validation set from a :class:`~skxfer._inputs.Validation`."""
        X_val, y_val = validation_inputs(self, plan, extractor, validation.X,
                                         validation.y,
                                         in_memory_bytes=_IN_MEMORY_BYTES)
        return training_set(X_val, self._encode_y_val(y_val, targets),
                            validation.sample_weight, setup.device,
                            weight_name="sample_weight_val")

    # ---- fitted state -------------------------------------------------------

    def __sklearn_is_fitted__(self):
        return hasattr(self, "net_")

    def __getstate__(self):
        # the feature-store settings travel with the pickle
        return capture_settings(self, pickled_state(super().__getstate__()))

    def __setstate__(self, state):
        super().__setstate__(loadable_state(self, state))
        self.__dict__.update(loaded_attributes(self))

    @property
    def module_(self):
        """The trained torch module: backbone and head, or the MLP alone.

        Built once per fit and kept: ``clf.module_ is clf.module_``.
        """
        module = self.__dict__.get("_module")
        if module is not None:
            return module
        if not hasattr(self, "net_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; "
                "call 'fit' first."
            )
        module = network_of(self._plan, self.extractor_, self.net_.module_)
        return self.__dict__.setdefault("_module", module)

    @property
    def history_(self):
        """skorch's per-epoch (and per-batch) training history (``net_.history``)."""
        if not hasattr(self, "net_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; "
                "call 'fit' first."
            )
        return self.net_.history

    # ---- inference ------------------------------------------------------------

    def _forward(self, X):
        """The network's outputs for ``X``, on the CPU, by the model's plan."""
        check_is_fitted(self)
        plan, module = self._plan, self.net_.module_
        if not plan.rows and plan.end_to_end:  # images through the whole network
            return stream_images(module, self.extractor_, X, self.device_)
        if plan.rows:
            X = validate_rows(self, X)
        if plan.features_first:
            X = self.extractor_.transform(X)
        return infer_rows(module, X, self.device_)

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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        tags.input_tags.allow_nan = False
        return tags


def _class_weight_vector(class_weight, classes, y_encoded):
    """Loss weight of each class in ``classes`` order, from a whole fit's data."""
    if class_weight == "balanced":
        present = np.unique(y_encoded)
        weights = np.ones(len(classes))
        weights[present] = compute_class_weight(
            "balanced", classes=present, y=y_encoded
        )
        return weights
    labels = classes.tolist()
    unknown = [k for k in class_weight if k not in labels]
    if unknown:
        raise ValueError(
            f"class_weight names labels {unknown!r} that are not among the "
            f"classes of y, {labels!r}."
        )
    return np.array([class_weight.get(c, 1.0) for c in labels])


class TransferMLPClassifier(ClassifierMixin, _BaseTransferMLP):
    """A backprop multilayer perceptron classifier, trained with PyTorch via skorch.

    A scikit-learn classifier: ``fit``, ``predict``, ``predict_proba`` and
    ``score`` work as for :class:`sklearn.neural_network.MLPClassifier`, in
    pipelines, grid searches and cross-validation. The network is a stack of
    ``Linear -> [BatchNorm] -> activation -> [Dropout]`` blocks and a linear
    output layer trained with the cross-entropy loss.

    Parameters
    ----------
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
        Biases start at zero.
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
        for training. Small tables thus take as many steps per epoch as in
        scikit-learn. Images that pass through a backbone that trains stay at
        ``min(200, n_samples)``: memory grows with the batch (lower it for a
        large backbone on a small GPU).
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
        :class:`PretrainedFeatureExtractor`, a torchvision model name or a
        timm one (``"timm:<name>"``, with timm's pretrained weights): ``X``
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
    adaptation : {None, 'source_only', 'coral', 'mcc'}, default=None
        Deep domain adaptation: train on the labelled rows while aligning the
        network with the rows of a *target* domain -- unlabelled rows masked
        in ``y`` (-1 for a classifier, NaN for a regressor) or told apart by
        ``fit``'s ``sample_domain``. 'coral' aligns the covariances of a
        layer's outputs on source and target rows (Deep CORAL, Sun & Saenko,
        2016; the layer is ``adaptation_layer``); 'mcc' (classifiers only)
        lowers the class confusion of the target rows' predictions (minimum
        class confusion, Jin et al., 2020); 'source_only' drops the masked
        rows and aligns nothing -- the baseline to keep in every grid. None:
        -1 and NaN in ``y`` are ordinary labels unless ``sample_domain`` is
        given. See Notes.
    adaptation_weight : float, default=1.0
        Weight of the alignment term in the training loss. The terms are
        skada's: CORAL's ``||C_s - C_t||_F^2 / (4 d^2)`` over ``d`` features
        is small (useful weights are about 1 to 100); MCC's lies in [0, 1]
        (about 0.1 to 3). Choose it without target labels:
        ``GridSearchCV(..., scoring=skxfer.adapt.CircularValidation())``.
    adaptation_layer : str or None, default=None
        The layer 'coral' aligns, named as in ``module_.named_modules()``
        (``'head.hidden.0'``, ``'backbone.layer4'``; ``'hidden.0'`` without a
        backbone). None: the head's last hidden layer, or the backbone's
        output when the head has no hidden layer. 'mcc' reads the logits.
    mixed_precision : bool, 'bf16' or 'fp16', default=False
        Train in mixed precision: each training step's forward pass and loss
        run under ``torch.autocast``, True meaning float16 on CUDA (with
        gradient scaling) and bfloat16 elsewhere, 'bf16' and 'fp16' choosing
        (as ``PretrainedFeatureExtractor(mixed_precision=...)``). The weights
        stay float32, and the validation score and predictions are computed
        in float32. A wholly frozen backbone computes its features once, as
        its extractor's ``mixed_precision`` says (float32 unless given as a
        ``PretrainedFeatureExtractor``).
    class_weight : dict, 'balanced' or None, default=None
        Weights of the classes in the loss: ``{label: weight}``, or 'balanced'
        for weights inversely proportional to the class frequencies.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels.
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
        ``net_`` then trains the head alone). The same object on every read.
    history_ : skorch.History
        skorch's training history (``net_.history``).
    extractor_ : PretrainedFeatureExtractor or None
        With a backbone, the fitted extractor that owns it (a new module built
        at ``fit``; ``module_.backbone`` is the same object) and preprocesses
        ``X``: ``extractor_.transform(X)`` gives the features the head sees.
        None without a backbone.

    See Also
    --------
    TransferMLPRegressor : The same network for regression.
    sklearn.neural_network.MLPClassifier : scikit-learn's numpy MLP.

    Notes
    -----
    ``fit`` and ``partial_fit`` build and train on a copy and assign the
    fitted attributes at the end: an exception -- bad data, a diverged loss,
    a ``KeyboardInterrupt`` (Ctrl-C), which propagates -- leaves the earlier
    model intact, or the estimator unfitted.

    Domain adaptation (``adaptation``): the rows' domains are read by
    :func:`skxfer.adapt.read_domains`, the rule of :mod:`skxfer.adapt`.
    Every training step pairs a batch of labelled rows with a batch of target
    rows of the same size; the target rows come in a shuffled order seeded by
    ``random_state`` and reshuffled whenever they run out (a smaller target
    domain is cycled, a larger one seen over the following epochs). An epoch
    is one pass over the labelled rows in whole batches of ``batch_size``: a
    shorter last batch is left out (other rows each epoch, as they are
    reshuffled), unless it is the only one -- a covariance or a class
    confusion of a few rows is noise. ``max_epochs``, ``n_iter_no_change``
    and a ``partial_fit`` call count these epochs. The alignment term's part
    of each epoch's training loss is in ``loss_curve_`` and, under the
    method's name (``'coral'``, ``'mcc'``), in ``history_`` and the
    ``verbose`` table.
    ``early_stopping`` holds out labelled rows (or stops on ``X_val``,
    ``y_val``, which hold labelled rows only); the validation loss is the
    supervised loss alone. ``sample_weight`` weighs the labelled rows. A
    wholly frozen backbone runs once and the head aligns on its features;
    otherwise the whole network is aligned. Predictions take any rows,
    without domains. A fit with 'coral' or 'mcc' and no target rows warns
    and trains on the source rows alone.

    How the defaults were chosen (``init``, ``batch_size='auto'``), and what
    skxfer's training and prediction cost beside scikit-learn's MLP, is
    measured by the scripts in ``benchmarks/``; the README shows the figures.

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

    _criterion = nn.CrossEntropyLoss
    _task = "classification"

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
        adaptation=None,
        adaptation_weight=1.0,
        adaptation_layer=None,
        mixed_precision=False,
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
        self.adaptation = adaptation
        self.adaptation_weight = adaptation_weight
        self.adaptation_layer = adaptation_layer
        self.mixed_precision = mixed_precision

    def _param_spec(self):
        return {
            **_COMMON_SPEC,
            "class_weight": (
                _is_class_weight,
                "None, 'balanced' or a dict {class label: weight}",
            ),
        }

    def fit(self, X, y, sample_weight=None, *, X_val=None, y_val=None,
            sample_weight_val=None, sample_domain=None):
        """Fit the network to data ``X`` and class labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; cast to float32.
        y : array-like of shape (n_samples,)
            Class labels (ints, strings or bools; at least two classes). With
            ``adaptation`` set or ``sample_domain`` given, -1 marks the
            unlabelled target rows.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the samples in the loss, which is the weighted mean
            ``sum(w_i * c_i * l_i) / sum(w_i * c_i)`` over each batch (``c``:
            the class weights; the validation loss is weighted the same way).
            None: equal weights.
        X_val : array-like of shape (n_val, n_features), default=None
            A validation set of your own for early stopping (needs
            ``early_stopping=True``), in the form of ``X``: training then
            uses all of ``X`` and stops on this set instead of a split of
            ``X``, and ``validation_scores_`` and the validation loss are
            its. In a ``Pipeline``, ``transform_input=["X_val"]`` (with
            metadata routing) transforms it as ``X``. A model fitted with one
            continues (``warm_start``) with early stopping only on one.
        y_val : array-like of shape (n_val,), default=None
            Its class labels, among those of ``y``.
        sample_weight_val : array-like of shape (n_val,), default=None
            Weights of the validation samples in the validation loss and
            score. None: equal weights.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            The domain of each row: source rows > 0, target rows < 0 (skada's
            convention). With it, -1 in ``y`` marks unlabelled target rows
            even when ``adaptation`` is None, and labelled target rows join
            the supervised loss. None: with ``adaptation`` set, the rows
            masked with -1 are the target rows and every labelled row is a
            source row.

        Returns
        -------
        self : TransferMLPClassifier
            The fitted estimator.
        """
        run = Run(continuing=self.warm_start and hasattr(self, "net_"))
        return self._fit(X, y, run, sample_weight,
                         (X_val, y_val, sample_weight_val), sample_domain)

    def partial_fit(self, X, y, classes=None, sample_weight=None, *,
                    sample_domain=None):
        """Train for one epoch on ``(X, y)``, continuing from the current weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A chunk of training data.
        y : array-like of shape (n_samples,)
            Its class labels (-1: unlabelled target rows, as in ``fit``).
        classes : array-like of shape (n_classes,), default=None
            Every class label that will ever be seen; needed on the first call,
            since one chunk may not contain them all.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the samples in the loss, which is the weighted mean
            ``sum(w_i * c_i * l_i) / sum(w_i * c_i)`` over each batch (``c``:
            the class weights; the validation loss is weighted the same way).
            None: equal weights.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            The domain of each row: source rows > 0, target rows < 0 (skada's
            convention). With it, -1 in ``y`` marks unlabelled target rows
            even when ``adaptation`` is None, and labelled target rows join
            the supervised loss. None: with ``adaptation`` set, the rows
            masked with -1 are the target rows and every labelled row is a
            source row.

        Returns
        -------
        self : TransferMLPClassifier
            The updated estimator.
        """
        continuing = hasattr(self, "net_")
        if not continuing and classes is None:
            raise ValueError(
                "classes must be passed on the first call to partial_fit, e.g. "
                "partial_fit(X, y, classes=np.unique(y_all))."
            )
        run = Run(continuing=continuing, partial=True, epochs=1, classes=classes)
        return self._fit(X, y, run, sample_weight, sample_domain=sample_domain)

    def _encode_targets(self, y, run):
        check_classification_targets(y)
        if run.partial and self.class_weight == "balanced":
            raise ValueError(
                "class_weight='balanced' is not supported for partial_fit: one "
                "chunk does not show the class frequencies. Compute weights with "
                "sklearn.utils.class_weight.compute_class_weight('balanced', "
                "classes=classes, y=y) on a large enough sample of the targets "
                "and pass them as class_weight={label: weight}."
            )
        name, classes = type(self).__name__, run.classes
        if run.continuing:
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
        fitted = {"classes_": known}
        # class weights come from the data of a whole fit; partial_fit keeps
        # those of its first call unless class_weight is changed
        weights = getattr(self, "_class_weights", None)
        if not (run.partial and run.continuing) or (
            self.class_weight != getattr(self, "_class_weight_used", None)
        ):
            weights = None if self.class_weight is None else _class_weight_vector(
                self.class_weight, known, y_encoded)
            fitted.update(_class_weight_used=self.class_weight,
                          _class_weights=weights)
        return Targets(y_encoded, len(known), classifier=True,
                       criterion=self._criterion, class_weights=weights,
                       fitted=fitted)

    def _encode_y_val(self, y_val, targets):
        try:
            check_classification_targets(y_val)
        except ValueError as err:
            raise ValueError(f"In y_val: {err}") from err
        known = targets.fitted["classes_"]
        unseen = ~np.isin(y_val, known)
        if unseen.any():
            raise ValueError(
                f"y_val holds labels {np.unique(y_val[unseen])!r} that are not "
                f"among the classes of y, {known!r}."
            )
        return np.searchsorted(known, y_val).astype(np.int64)

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
    """A backprop multilayer perceptron regressor, trained with PyTorch via skorch.

    A scikit-learn regressor: ``fit``, ``predict`` and ``score`` (R²) work as
    for :class:`sklearn.neural_network.MLPRegressor`, with one or several
    targets. The network is a stack of ``Linear -> [BatchNorm] -> activation
    -> [Dropout]`` blocks and a linear output trained with the squared error.
    Scale the targets (``TransformedTargetRegressor``) when they are large.

    Parameters
    ----------
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
        Biases start at zero.
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
        for training. Small tables thus take as many steps per epoch as in
        scikit-learn. Images that pass through a backbone that trains stay at
        ``min(200, n_samples)``: memory grows with the batch (lower it for a
        large backbone on a small GPU).
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
        :class:`PretrainedFeatureExtractor`, a torchvision model name or a
        timm one (``"timm:<name>"``, with timm's pretrained weights): ``X``
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
    adaptation : {None, 'source_only', 'coral', 'mcc'}, default=None
        Deep domain adaptation: train on the labelled rows while aligning the
        network with the rows of a *target* domain -- unlabelled rows masked
        in ``y`` (-1 for a classifier, NaN for a regressor) or told apart by
        ``fit``'s ``sample_domain``. 'coral' aligns the covariances of a
        layer's outputs on source and target rows (Deep CORAL, Sun & Saenko,
        2016; the layer is ``adaptation_layer``); 'mcc' (classifiers only)
        lowers the class confusion of the target rows' predictions (minimum
        class confusion, Jin et al., 2020); 'source_only' drops the masked
        rows and aligns nothing -- the baseline to keep in every grid. None:
        -1 and NaN in ``y`` are ordinary labels unless ``sample_domain`` is
        given. See Notes.
    adaptation_weight : float, default=1.0
        Weight of the alignment term in the training loss. The terms are
        skada's: CORAL's ``||C_s - C_t||_F^2 / (4 d^2)`` over ``d`` features
        is small (useful weights are about 1 to 100); MCC's lies in [0, 1]
        (about 0.1 to 3). Choose it without target labels:
        ``GridSearchCV(..., scoring=skxfer.adapt.CircularValidation())``.
    adaptation_layer : str or None, default=None
        The layer 'coral' aligns, named as in ``module_.named_modules()``
        (``'head.hidden.0'``, ``'backbone.layer4'``; ``'hidden.0'`` without a
        backbone). None: the head's last hidden layer, or the backbone's
        output when the head has no hidden layer. 'mcc' reads the logits.
    mixed_precision : bool, 'bf16' or 'fp16', default=False
        Train in mixed precision: each training step's forward pass and loss
        run under ``torch.autocast``, True meaning float16 on CUDA (with
        gradient scaling) and bfloat16 elsewhere, 'bf16' and 'fp16' choosing
        (as ``PretrainedFeatureExtractor(mixed_precision=...)``). The weights
        stay float32, and the validation score and predictions are computed
        in float32. A wholly frozen backbone computes its features once, as
        its extractor's ``mixed_precision`` says (float32 unless given as a
        ``PretrainedFeatureExtractor``).

    Attributes
    ----------
    n_outputs_ : int
        Number of targets.
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
        ``net_`` then trains the head alone). The same object on every read.
    history_ : skorch.History
        skorch's training history (``net_.history``).
    extractor_ : PretrainedFeatureExtractor or None
        With a backbone, the fitted extractor that owns it (a new module built
        at ``fit``; ``module_.backbone`` is the same object) and preprocesses
        ``X``: ``extractor_.transform(X)`` gives the features the head sees.
        None without a backbone.

    See Also
    --------
    TransferMLPClassifier : The same network for classification.
    sklearn.neural_network.MLPRegressor : scikit-learn's numpy MLP.

    Notes
    -----
    ``fit`` and ``partial_fit`` build and train on a copy and assign the
    fitted attributes at the end: an exception -- bad data, a diverged loss,
    a ``KeyboardInterrupt`` (Ctrl-C), which propagates -- leaves the earlier
    model intact, or the estimator unfitted.

    Domain adaptation (``adaptation``): the rows' domains are read by
    :func:`skxfer.adapt.read_domains`, the rule of :mod:`skxfer.adapt`.
    Every training step pairs a batch of labelled rows with a batch of target
    rows of the same size; the target rows come in a shuffled order seeded by
    ``random_state`` and reshuffled whenever they run out (a smaller target
    domain is cycled, a larger one seen over the following epochs). An epoch
    is one pass over the labelled rows in whole batches of ``batch_size``: a
    shorter last batch is left out (other rows each epoch, as they are
    reshuffled), unless it is the only one -- a covariance or a class
    confusion of a few rows is noise. ``max_epochs``, ``n_iter_no_change``
    and a ``partial_fit`` call count these epochs. The alignment term's part
    of each epoch's training loss is in ``loss_curve_`` and, under the
    method's name (``'coral'``, ``'mcc'``), in ``history_`` and the
    ``verbose`` table.
    ``early_stopping`` holds out labelled rows (or stops on ``X_val``,
    ``y_val``, which hold labelled rows only); the validation loss is the
    supervised loss alone. ``sample_weight`` weighs the labelled rows. A
    wholly frozen backbone runs once and the head aligns on its features;
    otherwise the whole network is aligned. Predictions take any rows,
    without domains. A fit with 'coral' or 'mcc' and no target rows warns
    and trains on the source rows alone.

    How the defaults were chosen (``init``, ``batch_size='auto'``), and what
    skxfer's training and prediction cost beside scikit-learn's MLP, is
    measured by the scripts in ``benchmarks/``; the README shows the figures.

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

    _criterion = nn.MSELoss
    _task = "regression"

    def _param_spec(self):
        methods = [m for m in METHODS if m not in CLASSIFIER_ONLY]
        return {
            **_COMMON_SPEC,
            "adaptation": (
                any_of(is_none, one_of(*methods)),
                "None or a str among " + ", ".join(repr(m) for m in methods)
                + " (" + ", ".join(repr(m) for m in CLASSIFIER_ONLY)
                + " reads class probabilities: a classifier's method)",
            ),
        }

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
        adaptation=None,
        adaptation_weight=1.0,
        adaptation_layer=None,
        mixed_precision=False,
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
        self.adaptation = adaptation
        self.adaptation_weight = adaptation_weight
        self.adaptation_layer = adaptation_layer
        self.mixed_precision = mixed_precision

    def fit(self, X, y, sample_weight=None, *, X_val=None, y_val=None,
            sample_weight_val=None, sample_domain=None):
        """Fit the network to data ``X`` and targets ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; cast to float32.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Target values. With ``adaptation`` set or ``sample_domain`` given,
            NaN marks the unlabelled target rows (a row of a 2-d ``y`` when
            all its values are NaN).
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the samples in the loss, which is the weighted mean
            ``sum(w_i * l_i) / sum(w_i)`` over each batch (``l_i``: the squared
            error averaged over the targets; the validation loss is weighted
            the same way). None: equal weights.
        X_val : array-like of shape (n_val, n_features), default=None
            A validation set of your own for early stopping (needs
            ``early_stopping=True``), in the form of ``X``: training then
            uses all of ``X`` and stops on this set instead of a split of
            ``X``, and ``validation_scores_`` and the validation loss are
            its. In a ``Pipeline``, ``transform_input=["X_val"]`` (with
            metadata routing) transforms it as ``X``. A model fitted with one
            continues (``warm_start``) with early stopping only on one.
        y_val : array-like of shape (n_val,) or (n_val, n_outputs), default=None
            Its target values, as many per sample as in ``y``.
        sample_weight_val : array-like of shape (n_val,), default=None
            Weights of the validation samples in the validation loss and
            score. None: equal weights.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            The domain of each row: source rows > 0, target rows < 0 (skada's
            convention). With it, NaN in ``y`` marks unlabelled target rows
            even when ``adaptation`` is None, and labelled target rows join
            the supervised loss. None: with ``adaptation`` set, the rows
            masked with NaN are the target rows and every labelled row is a
            source row.

        Returns
        -------
        self : TransferMLPRegressor
            The fitted estimator.
        """
        run = Run(continuing=self.warm_start and hasattr(self, "net_"))
        return self._fit(X, y, run, sample_weight,
                         (X_val, y_val, sample_weight_val), sample_domain)

    def partial_fit(self, X, y, sample_weight=None, *, sample_domain=None):
        """Train for one epoch on ``(X, y)``, continuing from the current weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A chunk of training data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Its targets (NaN: unlabelled target rows, as in ``fit``).
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the samples in the loss, which is the weighted mean
            ``sum(w_i * l_i) / sum(w_i)`` over each batch (``l_i``: the squared
            error averaged over the targets; the validation loss is weighted
            the same way). None: equal weights.
        sample_domain : array-like of shape (n_samples,) or int, default=None
            The domain of each row: source rows > 0, target rows < 0 (skada's
            convention). With it, NaN in ``y`` marks unlabelled target rows
            even when ``adaptation`` is None, and labelled target rows join
            the supervised loss. None: with ``adaptation`` set, the rows
            masked with NaN are the target rows and every labelled row is a
            source row.

        Returns
        -------
        self : TransferMLPRegressor
            The updated estimator.
        """
        run = Run(continuing=hasattr(self, "net_"), partial=True, epochs=1)
        return self._fit(X, y, run, sample_weight, sample_domain=sample_domain)

    def _encode_targets(self, y, run):
        y = np.asarray(y, dtype=np.float32)
        y2d = y.reshape(-1, 1) if y.ndim == 1 else y
        if run.continuing and y2d.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y has {y2d.shape[1]} target(s), but this {type(self).__name__} "
                f"was fitted with {self.n_outputs_}."
            )
        fitted = {} if run.continuing else {"n_outputs_": y2d.shape[1],
                                            "_y_1d": y.ndim == 1}
        return Targets(y2d, y2d.shape[1], classifier=False,
                       criterion=self._criterion, fitted=fitted)

    def _encode_y_val(self, y_val, targets):
        y_val = np.asarray(y_val, dtype=np.float32)
        y2d = y_val.reshape(-1, 1) if y_val.ndim == 1 else y_val
        if y2d.shape[1] != targets.n_outputs:
            raise ValueError(
                f"y_val has {y2d.shape[1]} target(s), but y has "
                f"{targets.n_outputs}."
            )
        return y2d

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
