"""The learning-rate range test: ``skxfer.lr_find``.

Smith's range test (2017) as fastai's ``lr_find`` runs it: train a copy of
the estimator for at most ``num_steps`` batches while the learning rate grows
exponentially from ``start_lr`` to ``end_lr``, record the training loss of
each batch, and stop once the smoothed loss exceeds ``diverge_factor`` times
the best so far. The estimator's own ``fit`` does the training (its plan,
inputs, parameter groups, loss terms and seeds), with two skorch callbacks:
an ``LRScheduler`` that multiplies every parameter group's rate by the same
factor each batch (``torch.optim.lr_scheduler.LambdaLR``), and a recorder
that ends the run.
"""

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline
from skorch.callbacks import Callback, LRScheduler
from torch.optim.lr_scheduler import LambdaLR

from ._estimators import _BaseTransferMLP
from ._validation import is_int, is_real, one_of

_SPEC = {
    "start_lr": (is_real(0, low_open=True), "a float > 0"),
    "end_lr": (is_real(0, low_open=True), "a float > start_lr"),
    "num_steps": (is_int(10), "an int >= 10"),
    "smooth": (is_real(0, 1, low_open=True), "a float in the range (0, 1]"),
    "diverge_factor": (is_real(1, low_open=True), "a float > 1"),
    "phase": (one_of("start", "unfrozen"), "'start' or 'unfrozen'"),
}


@dataclass(frozen=True, eq=False)
class LRFindResult:
    """What :func:`lr_find` measured, and the learning rate it suggests.

    Attributes
    ----------
    lrs : ndarray of shape (n_steps,)
        The learning rate of each step: the rate ``lr`` sets (the head's;
        the backbone's groups kept their ratios to it).
    losses : ndarray of shape (n_steps,)
        The training loss of each step's batch.
    smoothed_losses : ndarray of shape (n_steps,)
        ``losses`` smoothed by an exponential moving average (weight
        ``smooth`` on the newest loss, bias-corrected as in fastai).
    suggested_lr : float or None
        ``suggestions["minimum"]``: a tenth of the rate at which the
        smoothed loss is lowest. None when the test stopped too soon to say
        (the loss diverged within a few steps of ``start_lr``).
    suggestions : dict
        Three readings of the smoothed curve, after fastai's:
        ``"minimum"``, a tenth of the rate of the lowest loss (fastai's
        first rule of thumb: an order of magnitude below the minimum);
        ``"valley"``, the rate halfway along the longest stretch over which
        the smoothed loss keeps falling (fastai's default today);
        ``"steep"``, the rate where it falls fastest per log-step of the
        rate. The first tenth of the steps and the last five are left out,
        as fastai does. ``"minimum"`` is the suggestion: on the tasks of
        ``benchmarks/bench_lr_find.py`` it came within 0.005 of the best of
        a 5-point grid where 'valley' (too low after a long flat start, as
        Adam's is from scratch) and 'steep' (too high for a CNN) did not.
    diverged : bool
        Whether the test stopped because the loss diverged (else it ran all
        ``num_steps``).
    phase : str
        The ``phase`` the test ran in.
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed_losses: np.ndarray
    suggested_lr: float | None
    suggestions: dict = field(default_factory=dict)
    diverged: bool = False
    phase: str = "start"

    def __repr__(self):
        lr = "None" if self.suggested_lr is None else f"{self.suggested_lr:.3g}"
        return (f"LRFindResult(suggested_lr={lr}, steps={len(self.lrs)}, "
                f"diverged={self.diverged})")


class _Exponential:
    """``LambdaLR``'s factor at step ``i``: ``first * ratio ** i``."""

    def __init__(self, first, ratio):
        self.first = first
        self.ratio = ratio

    def __call__(self, step):
        return self.first * self.ratio**step


class _RangeTestDone(Exception):
    """Ends the range test; carries what it recorded."""

    def __init__(self, losses, smoothed, diverged):
        super().__init__("the learning-rate range test ended")
        self.losses, self.smoothed, self.diverged = losses, smoothed, diverged


class _RangeTest(Callback):
    """Record each training batch's loss; end the run after ``num_steps``
    batches or once the smoothed loss diverges."""

    def __init__(self, num_steps, smooth, diverge_factor):
        self.num_steps = num_steps
        self.smooth = smooth
        self.diverge_factor = diverge_factor

    def on_train_begin(self, net, **kwargs):
        self.losses_, self.smoothed_ = [], []
        self.average_, self.best_ = 0.0, math.inf

    def on_batch_end(self, net, batch=None, training=None, loss=None, **kwargs):
        if not training:
            return
        self.losses_.append(float(loss.detach()) if torch.is_tensor(loss) else
                            float(loss))
        # the exponential moving average, bias-corrected (it starts at 0)
        self.average_ += self.smooth * (self.losses_[-1] - self.average_)
        smoothed = self.average_ / (1 - (1 - self.smooth) ** len(self.losses_))
        self.smoothed_.append(smoothed)
        self.best_ = min(self.best_, smoothed)
        if not math.isfinite(smoothed) or smoothed > self.diverge_factor * self.best_:
            raise _RangeTestDone(self.losses_, self.smoothed_, diverged=True)
        if len(self.losses_) >= self.num_steps:
            raise _RangeTestDone(self.losses_, self.smoothed_, diverged=False)

    def on_train_end(self, net, **kwargs):  # not reached with enough epochs
        raise _RangeTestDone(self.losses_, self.smoothed_, diverged=False)


def _valley(lrs, losses):
    """The rate halfway along the longest decreasing run of ``losses`` (the
    longest decreasing subsequence, as fastai's 'valley')."""
    n = len(losses)
    run = np.ones(n, dtype=int)  # the longest decreasing run ending at i
    for i in range(1, n):
        higher = losses[:i] > losses[i]
        if higher.any():
            run[i] = run[:i][higher].max() + 1
    end = int(np.argmax(run))  # the first longest
    start = end - run[end]
    sections = (end - start) / 3
    return float(lrs[start + int(sections) + int(sections / 2)])


def suggestions(lrs, smoothed, num_steps):
    """fastai's three readings of a range test (see :class:`LRFindResult`)."""
    finite = np.isfinite(smoothed)
    lrs, smoothed = lrs[finite], smoothed[finite]
    low, high = num_steps // 10, len(smoothed) - 5
    if high - low < 3:  # a short test: read all of it
        low, high = 0, len(smoothed)
    if high - low < 3:
        return {}
    lrs, losses = lrs[low:high], smoothed[low:high]
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    return {
        "minimum": float(lrs[np.argmin(losses)] / 10),
        "valley": _valley(lrs, losses),
        "steep": float(lrs[np.argmin(slopes)]),
    }


def _check(values):
    problems = [
        f"The {name!r} parameter of lr_find must be {description}. "
        f"Got {values[name]!r} instead."
        for name, (test, description) in _SPEC.items()
        if not test(values[name])
        or (name == "end_lr" and is_real(0)(values["start_lr"])
            and values[name] <= values["start_lr"])
    ]
    if problems:
        raise ValueError("\n".join(problems))


def _final_step(estimator, X, y):
    """The skxfer estimator to test, and ``X`` as it receives it: a
    ``Pipeline``'s steps before it are fitted (on clones) and applied."""
    if isinstance(estimator, Pipeline):
        head, estimator = estimator[:-1], estimator.steps[-1][1]
        if isinstance(estimator, _BaseTransferMLP):
            X = clone(head).fit_transform(X, y)
    if not isinstance(estimator, _BaseTransferMLP):
        raise TypeError(
            "lr_find needs a TransferMLPClassifier, a TransferMLPRegressor or a "
            f"Pipeline ending in one; got {type(estimator).__name__}."
        )
    return estimator, X


def lr_find(estimator, X, y, *, sample_weight=None, start_lr=1e-7, end_lr=10.0,
            num_steps=100, smooth=0.05, diverge_factor=4.0, phase="start"):
    """Find a learning rate: the range test (Smith, 2017; fastai's ``lr_find``).

    Trains an unfitted clone of ``estimator`` -- never the estimator itself --
    for at most ``num_steps`` batches while the learning rate grows
    exponentially from ``start_lr`` to ``end_lr``, recording the training
    loss of each batch, and stops once the smoothed loss exceeds
    ``diverge_factor`` times its best. Every parameter group's rate is
    multiplied by the same factor each step, so the backbone keeps its
    ``backbone_lr_factor`` and ``backbone_lr_decay`` ratios to ``lr``; the
    rates reported are those of ``lr``. The run is the estimator's own
    ``fit`` on all of ``X`` (no validation split: ``early_stopping`` is
    off), with its optimizer, batch size, loss terms and ``random_state``;
    its ``callbacks`` are left out.

    Parameters
    ----------
    estimator : TransferMLPClassifier, TransferMLPRegressor or Pipeline
        The estimator to find a rate for, fitted or not, left as it is. In a
        ``Pipeline`` the steps before it are fitted on ``X`` first (on
        clones) and the range test trains the last step.
    X : array-like or images
        Training data, as ``fit`` takes it.
    y : array-like
        Its targets.
    sample_weight : array-like of shape (n_samples,), default=None
        Weights of the samples in the loss, as in ``fit``.
    start_lr, end_lr : float, default=1e-7, 10.0
        The first and the last learning rate of the test.
    num_steps : int, default=100
        The most batches (optimizer steps) the test runs; a few hundred at
        most is plenty. The data is passed over as often as it takes.
    smooth : float, default=0.05
        The weight of the newest loss in the exponential moving average
        that smooths the curve (fastai's ``1 - beta``; 1: no smoothing).
    diverge_factor : float, default=4.0
        Stop once the smoothed loss exceeds this many times its best.
    phase : {'start', 'unfrozen'}, default='start'
        Which network the test trains when a backbone is partly or wholly
        frozen. 'start': the network as ``fit`` starts it, what ``freeze``
        freezes staying frozen throughout (``unfreeze_at`` is not reached;
        with ``freeze=True`` this is the head alone, on features computed
        once). 'unfrozen': the network as ``unfreeze_at`` releases it --
        the clone first trains its first ``unfreeze_at`` epochs as ``fit``
        does (at ``lr``, on all of ``X``), then the test runs with everything
        trainable; it needs ``unfreeze_at``. Its suggestion is for the
        fine-tuning phase.

    Returns
    -------
    result : LRFindResult
        The rates, the raw and the smoothed losses, and ``suggested_lr``
        (a tenth of the rate of the lowest loss); plot them with
        :func:`skxfer.plotting.plot_lr_find`.

    Notes
    -----
    With an int ``random_state`` the result is the same on every call, and
    the global numpy and torch random generators are left as they were.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skxfer import TransferMLPClassifier, lr_find
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = TransferMLPClassifier((64,), random_state=0)
    >>> result = lr_find(clf, X / 16, y)
    >>> 1e-4 < result.suggested_lr < 1e-1
    True
    >>> clf = clf.set_params(lr=result.suggested_lr)
    """
    _check({"start_lr": start_lr, "end_lr": end_lr, "num_steps": num_steps,
            "smooth": smooth, "diverge_factor": diverge_factor, "phase": phase})
    estimator, X = _final_step(estimator, X, y)
    test = clone(estimator)
    if phase == "unfrozen":
        if test.backbone is None or test.unfreeze_at is None:
            raise ValueError(
                "phase='unfrozen' runs the test on the network as unfreeze_at "
                "releases it, but this estimator has "
                + ("no backbone" if test.backbone is None else "unfreeze_at=None")
                + ": nothing is released. Use phase='start'."
            )
        with warnings.catch_warnings():  # the first phase, as fit trains it
            warnings.simplefilter("ignore", ConvergenceWarning)
            test.set_params(early_stopping=False, warm_start=False, callbacks=None,
                            max_epochs=test.unfreeze_at).fit(
                X, y, sample_weight=sample_weight)
        test.set_params(warm_start=True)
    else:
        test.set_params(unfreeze_at=None, warm_start=False)
    ratio = (end_lr / start_lr) ** (1 / (num_steps - 1))
    test.set_params(
        early_stopping=False,
        max_epochs=num_steps,  # epochs enough: the recorder ends the run
        n_iter_no_change=num_steps,  # no plateau stop within them
        callbacks=[
            ("lr_find_schedule", LRScheduler(
                LambdaLR, lr_lambda=_Exponential(start_lr / test.lr, ratio),
                step_every="batch", event_name=None, last_epoch=-1)),
            ("lr_find", _RangeTest(num_steps, smooth, diverge_factor)),
        ],
    )
    try:
        test.fit(X, y, sample_weight=sample_weight)
    except _RangeTestDone as done:
        record = done
    else:  # the recorder ends every run, at the latest in on_train_end
        raise RuntimeError("lr_find: the range test ended without its record.")
    losses = np.asarray(record.losses, dtype=float)
    smoothed = np.asarray(record.smoothed, dtype=float)
    lrs = start_lr * ratio ** np.arange(len(losses))
    found = suggestions(lrs, smoothed, num_steps)
    if not found:
        warnings.warn(
            f"lr_find: the loss diverged after {len(losses)} steps, too soon to "
            f"suggest a learning rate. Lower start_lr (now {start_lr}).",
            UserWarning, stacklevel=2,
        )
    return LRFindResult(lrs, losses, smoothed, found.get("minimum"), found,
                        record.diverged, phase)
