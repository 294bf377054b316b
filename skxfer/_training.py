"""Training: the run, the torch module, the skorch net, the loop, the record.

Functions of explicit inputs -- the estimator's parameters as a mapping
(``get_params(deep=False)``), the :class:`~skxfer._plan.TransferPlan`, the
:class:`Run` and what earlier steps built -- that return what they build.
None of them writes into the estimator: its ``_train`` assigns the results.
"""

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.utils import check_random_state
from skorch.helper import predefined_split

from ._adaptation import adaptation_terms
from ._callbacks import stopped_early, training_callbacks
from ._device import resolve_device
from ._freezing import (
    L2SP,
    backbone_param_groups,
    frozen_parameter_names,
    store_reference,
)
from ._mlp import MLP, TransferNet
from ._net import INFERENCE_BATCH_SIZE, SkxferNet, ValidSplit, supports_fused
from ._plan import architecture, hidden_sizes
from ._precision import training_precision
from ._threads import largest_product, sized_threads
from ._validation import shallow_copy

OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}
# optimizers that take a ``momentum`` argument
_WITH_MOMENTUM = (torch.optim.SGD, torch.optim.RMSprop)
# batch_size='auto' (see its docstring): rows of features per step grow from
# scikit-learn's 200 to 512 once an epoch has more than _AUTO_STEPS steps;
# images through a backbone that trains stay at 200 (memory)
_AUTO_BATCH_ROWS = (200, 512)
_AUTO_STEPS = 32
_AUTO_BATCH_IMAGES = 200


@dataclass(frozen=True)
class Run:
    """What one call asks of training.

    Parameters
    ----------
    continuing : bool
        Train the fitted network further (``warm_start``, a later
        ``partial_fit``) instead of building a new one.
    partial : bool
        A ``partial_fit`` call: one epoch, no plateau stop.
    epochs : int or None
        Epochs to run; None: ``max_epochs``.
    classes : array-like or None
        ``partial_fit``'s ``classes``.
    """

    continuing: bool = False
    partial: bool = False
    epochs: int | None = None
    classes: object = None

    @property
    def method(self):
        """The call, as messages name it."""
        return "partial_fit" if self.partial else "fit with warm_start=True"


@dataclass(frozen=True)
class Setup:
    """A run, settled: its device, random state and the seed drawn from it.

    ``split_seed`` seeds the validation split (the same in every
    continuation), ``architecture`` is what a warm start must keep, and
    ``run_start`` counts the epochs trained before this run.
    """

    device: str
    rng: np.random.RandomState
    seed: int
    split_seed: int
    architecture: dict
    run_start: int = 0


@dataclass(frozen=True)
class Targets:
    """The encoded targets and what the loss needs to know of them.

    ``fitted`` holds the estimator's attributes they set (``classes_``,
    class weights, ``n_outputs_``, ...).
    """

    y: np.ndarray
    n_outputs: int
    classifier: bool
    criterion: type
    class_weights: np.ndarray | None = None
    fitted: dict = field(default_factory=dict)


def _draw_seed(rng):
    return int(rng.randint(np.iinfo(np.int32).max))


def start_run(params, name):
    """Settle a new fit: the device, the RNG and one seed drawn from it."""
    device = resolve_device(params["device"], name)
    rng = check_random_state(params["random_state"])
    arch = architecture(params)
    check_optimizer(params, device)
    seed = _draw_seed(rng)
    return Setup(device, rng, seed, split_seed=seed, architecture=arch)


def continue_run(params, device, rng, split_seed, arch, run_start):
    """Settle a continuation of a fitted model, from its recorded settings.

    ``rng`` is copied: the fitted model keeps its own state until the new one
    is committed.
    """
    rng = copy.deepcopy(rng)
    check_optimizer(params, device)
    return Setup(device, rng, _draw_seed(rng), split_seed, arch, run_start)


def optimizer_config(params, device):
    """The optimizer class and its keyword arguments (fused where it runs)."""
    optimizer = params["optimizer"]
    cls = OPTIMIZERS[optimizer] if isinstance(optimizer, str) else optimizer
    kwargs = {"weight_decay": params["weight_decay"]}
    if cls in _WITH_MOMENTUM:
        kwargs["momentum"] = params["momentum"]
    if cls is torch.optim.SGD:
        kwargs["nesterov"] = params["nesterov"]
    if supports_fused(cls, device):
        kwargs["fused"] = True
    kwargs.update(params["optimizer_params"] or {})
    return cls, kwargs


def check_optimizer(params, device):
    """Build the optimizer once on a probe tensor: a bad setting is named."""
    cls, kwargs = optimizer_config(params, device)
    lr = params["lr"]
    try:
        cls([torch.zeros(1, device=device, requires_grad=True)], lr=lr, **kwargs)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{cls.__name__} does not accept the settings {kwargs} (lr={lr}): "
            f"{err}. Check optimizer_params (keyword arguments of "
            f"{cls.__module__}.{cls.__name__}), momentum, nesterov and "
            "weight_decay."
        ) from err


def build_module(params, plan, extractor, n_features, n_outputs):
    """The torch module a new fit trains: the MLP head, or backbone + head.

    The head maps ``n_features`` (the table's width, or the backbone's
    features) to ``n_outputs``. End to end, the extractor's backbone joins
    it, trainable, with its starting weights kept for L2-SP.
    """
    head = MLP(
        n_features,
        hidden_sizes(params),
        n_outputs,
        activation=params["activation"],
        batch_norm=params["batch_norm"],
        dropout=params["dropout"],
        init=params["init"],
    )
    if not plan.end_to_end:
        return head
    backbone = extractor.backbone_
    for p in backbone.parameters():
        p.requires_grad_(True)
    module = TransferNet(backbone, head, bn_mode=params["bn_mode"])
    if params["l2_sp"] > 0:
        store_reference(module)
    return module


def batch_size(params, plan, n_samples, split=True):
    """``batch_size`` with 'auto' resolved for ``n_samples`` training rows.

    ``split``: with ``early_stopping``, whether a validation split is taken
    from them (not when ``fit`` is given a validation set).
    """
    if params["batch_size"] != "auto":
        return params["batch_size"]
    if params["early_stopping"] and split:  # the rows left for training
        n_samples -= math.ceil(n_samples * params["validation_fraction"])
    if plan.trains_on_rows:
        low, high = _AUTO_BATCH_ROWS
        size = min(max(low, n_samples // _AUTO_STEPS), high)
    else:
        size = _AUTO_BATCH_IMAGES
    return max(1, min(size, n_samples))


def _loader_settings(plan, extractor, device):
    """DataLoader settings for images that stream through a backbone."""
    if plan.trains_on_rows:
        return {}
    workers = extractor._workers(n_images=None)
    pin = str(device).startswith("cuda")
    return {
        f"{prefix}__{key}": value
        for prefix in ("iterator_train", "iterator_valid")
        for key, value in (("num_workers", workers), ("pin_memory", pin))
    }


def _idle_callbacks(params, train_split):
    """skorch's default callbacks that would run every epoch for nothing.

    ``PrintLog`` formats a table each epoch even when ``verbose=0`` prints
    nothing (a third of an epoch's time on a small table), and the validation
    loss is looked up each epoch even without a validation set.
    """
    idle = {}
    if not params["verbose"]:
        idle["callbacks__print_log"] = None
    if train_split is None:
        idle["callbacks__valid_loss"] = None
    return idle


def net_settings(params, plan, run, setup, targets, extractor, n_samples,
                 valid=None):
    """The skorch net's keyword arguments for this run (all but the module).

    Optimizer and learning-rate groups, the validation split (or ``valid``,
    a validation set given to ``fit``, as the dataset early stopping reads),
    the callbacks (freezing, stopping, the user's), the loss and its extra
    terms, batching, the precision of the training steps.
    """
    opt_cls, opt_kwargs = optimizer_config(params, setup.device)
    train_split = None
    if valid is not None:
        train_split = predefined_split(valid)
    elif params["early_stopping"]:
        train_split = ValidSplit(
            params["validation_fraction"],
            stratified=targets.classifier,
            random_state=setup.split_seed,  # the same split in every continuation
        )
    frozen, terms = [], []
    if plan.end_to_end:
        backbone = extractor.backbone_
        opt_kwargs["param_groups"] = backbone_param_groups(
            backbone, params["lr"] * params["backbone_lr_factor"],
            params["backbone_lr_decay"],
        )
        frozen = [f"backbone.{name}"
                  for name in frozen_parameter_names(params["freeze"], backbone)]
        if params["l2_sp"] > 0:
            terms = [L2SP(params["l2_sp"])]
    criterion = {}
    if targets.class_weights is not None:
        criterion["criterion__weight"] = torch.as_tensor(
            targets.class_weights, dtype=torch.float32)
    return dict(
        batch_size=batch_size(params, plan, n_samples, split=valid is None),
        loss_terms=terms,
        precision=training_precision(params["mixed_precision"], setup.device),
        criterion=targets.criterion,
        optimizer=opt_cls,
        lr=params["lr"],
        max_epochs=params["max_epochs"],
        iterator_valid__batch_size=INFERENCE_BATCH_SIZE,
        # used when images stream from their source (skorch's DataLoader)
        iterator_train__shuffle=True,
        **_loader_settings(plan, extractor, setup.device),
        train_split=train_split,
        callbacks=training_callbacks(params, run, classifier=targets.classifier,
                                     frozen=frozen),
        device=setup.device,
        verbose=int(params["verbose"]),
        **_idle_callbacks(params, train_split),
        shuffle_rng=np.random.RandomState(setup.seed),
        **{f"optimizer__{k}": v for k, v in opt_kwargs.items()},
        **criterion,
    )


def running(extractor, backbone):
    """A copy of the fitted ``extractor`` that runs ``backbone`` (the network
    being trained); the fitted one is left as it is."""
    extractor = shallow_copy(extractor)
    extractor.backbone_ = backbone
    return extractor


def build_net(params, plan, run, setup, targets, extractor, data, fitted=None,
              valid=None):
    """The skorch net of this run, initialised; and the extractor it runs.

    A new fit builds a new module (:func:`build_module`). A continuation
    (``fitted``: the fitted net) trains a copy of the fitted network with the
    current hyper-parameters; its history and -- for the same optimizer
    class -- its optimizer's state carry over. ``fitted`` is only read, so a
    failed continuation changes nothing. ``valid``: a validation set given
    to ``fit`` (see :func:`net_settings`).
    """
    if fitted is None:
        n_features = (data.X.shape[1] if extractor is None
                      else extractor.n_features_out_)
        module = build_module(params, plan, extractor, n_features, targets.n_outputs)
    else:
        module = copy.deepcopy(fitted.module_)
        if plan.end_to_end:  # the extractor runs the network being trained
            module.bn_mode = params["bn_mode"]
            extractor = running(extractor, module.backbone)
    settings = net_settings(params, plan, run, setup, targets, extractor, len(data),
                            valid=valid)
    # domain adaptation: alignment terms where the training set holds target rows
    settings["loss_terms"] = [*settings["loss_terms"],
                              *adaptation_terms(params, plan, module, data)]
    net = SkxferNet(module=module, **settings).initialize()
    if fitted is not None:
        net.history = copy.deepcopy(fitted.history)
        carry_optimizer_state(fitted, net)
        if "scaler_state_" in fitted.__dict__:  # float16's loss scale
            net.__dict__["scaler_state_"] = dict(fitted.scaler_state_)
    return net, extractor


def carry_optimizer_state(old, new):
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


def train(net, data, epochs, name, batch_size_param):
    """skorch's training loop over ``data``; the net then rests in eval mode.

    Running out of GPU memory is reported with the batch sizes to lower.
    torch runs it on the threads its batches' products can keep busy
    (:mod:`skxfer._threads`).
    """
    work = largest_product(net.module_, net.batch_size)
    try:
        with sized_threads(work, net.device):
            net.partial_fit(data, None, epochs=epochs)
    except torch.cuda.OutOfMemoryError as err:
        raise torch.cuda.OutOfMemoryError(
            f"{name} ran out of GPU memory in training (batches of "
            f"{net.batch_size} samples; validation batches of "
            f"{INFERENCE_BATCH_SIZE}): {err} Lower batch_size (now "
            f"{batch_size_param!r}), or train fewer layers of the backbone "
            "(freeze)."
        ) from err
    # fitted networks rest in eval mode: the extractor, module_ and
    # predictions all see the trained BatchNorm statistics
    net.module_.eval()
    if net.train_split is not None and not isinstance(net.train_split, ValidSplit):
        net.train_split = None  # a validation set given to fit is not kept
    return net


def converged(net, run):
    """Whether training ended on its own: a stopping callback stopped it, or
    it was one ``partial_fit`` epoch (else it ran out of ``max_epochs``)."""
    return run.partial or stopped_early(net)


def history_attributes(history, early_stopping, run_start):
    """scikit-learn's fitted attributes from skorch's ``history``.

    ``run_start`` is the number of epochs before this run: the best
    validation loss and score are those of the latest run, whose weights
    are kept.
    """
    loss_curve = [float(row["train_loss"]) for row in history]
    fitted = {"loss_curve_": loss_curve, "loss_": loss_curve[-1],
              "n_iter_": len(history)}
    scores = [float(row.get("valid_score", np.nan)) for row in history]
    if early_stopping:
        # as scikit-learn: with early stopping the best loss is not tracked
        latest = scores[run_start:]
        fitted.update(
            best_loss_=None,
            validation_scores_=scores,
            best_validation_score_=(None if np.all(np.isnan(latest))
                                    else float(np.nanmax(latest))),
        )
    else:
        fitted.update(best_loss_=float(np.min(loss_curve)),
                      validation_scores_=None, best_validation_score_=None)
    valid = [float(row.get("valid_loss", np.nan)) for row in history]
    if np.all(np.isnan(valid)):
        fitted.update(validation_loss_curve_=None, best_validation_loss_=None)
    else:
        latest = valid[run_start:]
        fitted.update(
            validation_loss_curve_=valid,
            best_validation_loss_=(None if np.all(np.isnan(latest))
                                   else float(np.nanmin(latest))),
        )
    return fitted
