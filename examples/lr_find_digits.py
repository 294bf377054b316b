"""Find a learning rate with lr_find, then train at it: an MLP and a small CNN.

On scikit-learn's digits (75 % to train), for an MLP on the 64 pixels and
for a small CNN trained end to end on the 8x8 images (its convolutions at
half the head's rate, ``backbone_lr_factor=0.5``): the range test
(``skxfer.lr_find``) on the training part, then a fit of ``--epochs``
epochs at the suggested rate and at the default ``lr=1e-3``, scored on the
held-out part. ``--plot PATH`` draws both range tests side by side
(``skxfer.plotting.plot_lr_find``; the README's ``docs/lr_find.png``).
Run: ``python examples/lr_find_digits.py [--plot docs/lr_find.png]``.
"""

import argparse
import warnings
from collections import OrderedDict

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from torch import nn

from skxfer import TransferMLPClassifier, lr_find


def small_cnn():
    with torch.random.fork_rng():
        torch.manual_seed(3)
        return nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(1, 8, 3, padding=1), bn1=nn.BatchNorm2d(8),
            relu1=nn.ReLU(), conv2=nn.Conv2d(8, 16, 3, padding=1),
            relu2=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(2), flatten=nn.Flatten()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--plot", default=None, help="write the figure here")
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        # a fixed budget of epochs: reaching it is the plan here
        warnings.simplefilter("ignore", ConvergenceWarning)
        return run(args)


def run(args):
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    tasks = {
        "MLP (64,) on pixels": (X, TransferMLPClassifier(
            (64,), max_epochs=args.epochs, random_state=0)),
        "small CNN, end to end": (X.reshape(-1, 8, 8).astype(np.float32),
                                  TransferMLPClassifier(
            (), backbone=small_cnn(), freeze=False, backbone_lr_factor=0.5,
            batch_size=64, max_epochs=args.epochs, random_state=0)),
    }
    results = {}
    print(f"digits, {args.epochs} epochs: test accuracy")
    for name, (data, clf) in tasks.items():
        X_train, X_test, y_train, y_test = train_test_split(
            data, y, random_state=0, stratify=y)
        found = lr_find(clf, X_train, y_train)
        default = clf.set_params(lr=1e-3).fit(X_train, y_train).score(X_test, y_test)
        tuned = clf.set_params(lr=found.suggested_lr).fit(X_train, y_train).score(
            X_test, y_test)
        print(f"{name:22s} lr=1e-3: {default:.3f}   suggested "
              f"lr={found.suggested_lr:.2g}: {tuned:.3f}")
        results[name] = (found, default, tuned)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from skxfer.plotting import plot_lr_find

        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, (name, (found, _, _)) in zip(axes, results.items(), strict=True):
            plot_lr_find(found, ax=ax)
            ax.set_title(f"lr_find: {name}")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        plt.close(fig)
        print(f"wrote {args.plot}")
    return results


if __name__ == "__main__":
    main()
