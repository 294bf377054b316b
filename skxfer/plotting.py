"""Plots of fitted skxfer estimators and of :func:`skxfer.lr_find`.

Needs matplotlib: ``pip install "skxfer[plot]"``.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> from sklearn.datasets import load_digits
>>> from skxfer import TransferMLPClassifier
>>> from skxfer.plotting import plot_history
>>> X, y = load_digits(return_X_y=True)
>>> clf = TransferMLPClassifier((32,), max_epochs=20, early_stopping=True,
...                             random_state=0).fit(X / 16, y)
>>> ax = plot_history(clf)
>>> [line.get_label() for line in ax.get_lines()]
['training loss', 'validation loss']
"""


# the history keys of the domain-adaptation terms (see ``adaptation``)
_ALIGNMENT_TERMS = ("coral", "mcc")


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            'Plotting needs matplotlib: pip install "skxfer[plot]"'
        ) from err
    return plt


def plot_history(estimator, ax=None):
    """Training (and validation) loss per epoch of a fitted MLP estimator.

    A dotted vertical line marks the epoch after which frozen backbone layers
    were released (``unfreeze_at``), and a dot the best validation epoch whose
    weights early stopping kept. With domain adaptation (``adaptation``), a
    dashed line shows the alignment term's part of the training loss.

    Parameters
    ----------
    estimator : TransferMLPClassifier or TransferMLPRegressor
        A fitted estimator (or a pipeline ending in one).
    ax : matplotlib Axes, default=None
        Where to draw; a new figure when None.

    Returns
    -------
    ax : matplotlib Axes
        The axes drawn on.
    """
    from sklearn.utils.validation import check_is_fitted

    if hasattr(estimator, "steps"):  # a Pipeline: its final estimator
        estimator = estimator.steps[-1][1]
    check_is_fitted(estimator)
    if not hasattr(estimator, "loss_curve_"):
        raise TypeError(
            f"plot_history needs a fitted TransferMLPClassifier or "
            f"TransferMLPRegressor; got {type(estimator).__name__}."
        )
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    epochs = range(1, len(estimator.loss_curve_) + 1)
    ax.plot(epochs, estimator.loss_curve_, label="training loss")
    for name in _ALIGNMENT_TERMS:  # domain adaptation: the term's part
        part = [row.get(name) for row in estimator.history_]
        if any(value is not None for value in part):
            ax.plot(epochs, [float("nan") if v is None else v for v in part],
                    linestyle="--", label=f"{name} term (in the training loss)")
    valid = estimator.validation_loss_curve_
    if valid is not None:
        ax.plot(epochs, valid, label="validation loss")
        best = min(range(len(valid)), key=lambda i: valid[i])
        ax.scatter([best + 1], [valid[best]], color="black", zorder=3,
                   label="best validation epoch")
    unfreeze = getattr(estimator, "unfreeze_at", None)
    if getattr(estimator, "backbone", None) is not None and unfreeze is not None:
        ax.axvline(unfreeze + 0.5, linestyle=":", color="gray",
                   label=f"backbone unfrozen after epoch {unfreeze}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(f"{type(estimator).__name__} training history")
    ax.legend()
    return ax


def plot_lr_find(result, ax=None):
    """The learning-rate range test of :func:`skxfer.lr_find`, suggestion marked.

    The training loss of each step (faint) and its smoothed curve against
    the learning rate (log scale), with a dot at the suggested rate.

    Parameters
    ----------
    result : LRFindResult
        What :func:`skxfer.lr_find` returned.
    ax : matplotlib Axes, default=None
        Where to draw; a new figure when None.

    Returns
    -------
    ax : matplotlib Axes
        The axes drawn on.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.datasets import load_digits
    >>> from skxfer import TransferMLPClassifier, lr_find
    >>> from skxfer.plotting import plot_lr_find
    >>> X, y = load_digits(return_X_y=True)
    >>> result = lr_find(TransferMLPClassifier((32,), random_state=0), X / 16, y)
    >>> ax = plot_lr_find(result)
    >>> [line.get_label() for line in ax.get_lines()]
    ['loss', 'smoothed loss']
    """
    import numpy as np

    if not all(hasattr(result, k) for k in ("lrs", "smoothed_losses",
                                            "suggested_lr")):
        raise TypeError(
            f"plot_lr_find needs the result of skxfer.lr_find; got "
            f"{type(result).__name__}."
        )
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    lrs, smoothed = result.lrs, result.smoothed_losses
    ax.plot(lrs, result.losses, color="C0", alpha=0.3, linewidth=1, label="loss")
    ax.plot(lrs, smoothed, color="C0", label="smoothed loss")
    suggested = result.suggested_lr
    if suggested is not None:
        at = np.interp(np.log(suggested), np.log(lrs), smoothed)
        ax.scatter([suggested], [at], color="C3", zorder=3,
                   label=f"suggested lr = {suggested:.2g}")
    finite = smoothed[np.isfinite(smoothed)]
    if len(finite):  # the raw losses of the last steps may be far off
        raw = result.losses[np.isfinite(result.losses)]
        low, high = min(finite.min(), raw.min(initial=np.inf)), finite.max()
        margin = 0.05 * (high - low) or 0.05 * abs(high) or 1.0
        ax.set_ylim(low - margin, high + margin)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"Learning-rate range test ({len(lrs)} steps)")
    ax.legend()
    return ax
