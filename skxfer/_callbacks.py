"""skorch callbacks of skxfer's training, and how a run's stop is read.

``skxfer._estimators`` keeps the classes' old import paths (fitted nets in
pickles name them there).
"""

import copy

import numpy as np
import torch
from skorch.callbacks import Callback, EarlyStopping, Freezer, ProgressBar, Unfreezer

from ._losses import row_weights


def stopped_early(net):
    """Whether a stopping callback ended (or is ending) ``net``'s training.

    Read from the callbacks' public state, in the way skorch's
    ``EarlyStopping`` keeps it: it raises ``KeyboardInterrupt`` to stop when
    its count of epochs without improvement, ``misses_``, reaches
    ``patience``, and the count is below ``patience`` at any other time of a
    run. Any ``EarlyStopping`` counts, the user's own included. The training
    loop uses this to tell a stop from Ctrl-C, and the estimator to tell
    convergence from reaching ``max_epochs``.
    """
    return any(
        isinstance(cb, EarlyStopping) and 0 < cb.patience <= cb.misses_
        for _, cb in getattr(net, "callbacks_", ())
    )


class _TrainingPlateau(EarlyStopping):
    """scikit-learn's stopping rule without early stopping, on the training loss.

    Stop when the loss has not improved on the best by ``tol`` for
    ``n_iter_no_change`` epochs. Epochs carried over by a warm start count, as
    in scikit-learn; epochs before ``start`` (a frozen phase that ends at
    ``unfreeze_at``) do not. As for skorch's ``EarlyStopping``, ``misses_``
    reaches ``patience`` only when it stops (see :func:`stopped_early`).
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
        # a plateau carried over stops at the first epoch that does not improve
        self.misses_ = min(self.misses_, self.patience - 1)

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
        class_weight = getattr(net.criterion_, "weight", None)
        total = float(row_weights(target, class_weight, torch.float64, "cpu").sum())
        sums = self._sums.setdefault(bool(training), [0.0, 0.0])
        sums[0] += float(loss.detach() if torch.is_tensor(loss) else loss) * total
        sums[1] += total

    def on_epoch_end(self, net, **kwargs):
        for training, name in ((True, "train_loss"), (False, "valid_loss")):
            if training in self._sums and name in net.history[-1]:
                loss_sum, weight_sum = self._sums[training]
                net.history.record(
                    name, loss_sum / weight_sum if weight_sum else np.nan)


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
        # not kept: the fitted net (and its pickle) would hold them, and the
        # batches' targets are views of the whole validation set
        self._pred, self._true, self._weight = [], [], []
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


def training_callbacks(params, run, *, classifier, frozen):
    """The callbacks of one run: ``[(name, callback)]``, in skorch's order.

    Parameters
    ----------
    params : dict
        The estimator's parameters (``get_params(deep=False)``).
    run : Run
        What this call trains (``partial_fit`` has no plateau stop).
    classifier : bool
        Whether the validation score is accuracy (else R²).
    frozen : list of str
        Names of the parameters frozen at the start (``backbone.<name>``).
    """
    sink = print if params["verbose"] else _noop
    callbacks = [("weighted_epoch_loss", _WeightedEpochLoss()),
                 ("stop_on_non_finite", _StopOnNonFinite())]
    if frozen:
        callbacks.append(("freezer", Freezer(frozen, at=1)))
        if params["unfreeze_at"] is not None:
            callbacks.append(
                ("unfreezer", Unfreezer(frozen, at=params["unfreeze_at"] + 1)))
    if params["early_stopping"]:
        callbacks += [
            ("valid_score", _ValidScore(classifier)),
            ("early_stopping", EarlyStopping(
                monitor="valid_loss", patience=params["n_iter_no_change"],
                threshold=params["tol"], threshold_mode="abs", load_best=True,
                sink=sink)),
        ]
    elif not run.partial:
        # scikit-learn's rule: stop once the training loss has not improved by
        # tol for n_iter_no_change epochs (partial_fit runs one epoch); a
        # frozen phase before unfreeze_at is not judged by it
        callbacks.append(("training_plateau", _TrainingPlateau(
            params["tol"], params["n_iter_no_change"],
            start=params["unfreeze_at"] or 0, sink=sink)))
    if params["verbose"] >= 2:
        callbacks.append(("progress_bar", ProgressBar()))
    for i, cb in enumerate(params["callbacks"] or []):
        # copies: skorch keeps state on callbacks, and the parameter must not
        # change when the estimator is fitted (clone, grid search)
        name, cb = cb if isinstance(cb, tuple) else (f"callback_{i}", cb)
        callbacks.append((name, copy.deepcopy(cb)))
    return callbacks
