"""Deep domain adaptation: digits from a camera that moved one pixel.

The *source* is a labelled half of ``load_digits``; the *target* is the other
half, shot by a camera that moved one pixel to the right and adds noise
(``--shift contrast``: its contrast squeezed instead), and its labels are
unknown. One small CNN with a hidden layer on top is trained end to end with
``TransferMLPClassifier`` on every labelled source image and the unlabelled
target images (masked with -1 in ``y``), and scored on held-out target
images over ``--seeds`` splits (mean +- std):

- source only: ``adaptation='source_only'`` (the masked rows are dropped);
- CORAL: the covariances of the hidden layer aligned across the domains;
- MCC: the class confusion of the target predictions lowered;
- chosen without target labels: ``GridSearchCV`` over ``adaptation`` and
  ``adaptation_weight``, scored by ``CircularValidation`` (keep
  'source_only' in the grid: adaptation can hurt).

Run: ``python examples/deep_domain_adaptation.py`` (a few minutes on two CPU
cores; ``--shift contrast``, ``--seeds``, ``--epochs``).
"""

import argparse
import warnings
from collections import OrderedDict

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from torch import nn

from skxfer import TransferMLPClassifier
from skxfer.adapt import CircularValidation, pack_domains

SHIFTS = {
    "pixel": lambda images, rng: np.pad(images, ((0, 0), (0, 0), (1, 0)))[:, :, :8]
    + rng.normal(0.0, 0.1, images.shape).astype(np.float32),
    "contrast": lambda images, rng: images * 0.3 + 0.35,
}
METHODS = ("source only", "CORAL", "MCC", "chosen by CircularValidation")
GRID = [
    {"adaptation": ["source_only"]},
    {"adaptation": ["coral"], "adaptation_weight": [10.0, 100.0]},
    {"adaptation": ["mcc"], "adaptation_weight": [0.3, 1.0]},
]


def cnn(seed):
    """The convolutional backbone, its starting weights drawn from ``seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(OrderedDict(
            conv=nn.Conv2d(1, 16, 3, padding=1), relu=nn.ReLU(),
            pool=nn.MaxPool2d(2), flatten=nn.Flatten()))


def network(seed, args, **params):
    """The CNN with a hidden layer of 32 on top, trained end to end."""
    return TransferMLPClassifier(
        (32,), backbone=cnn(seed), freeze=False, lr=3e-3, batch_size=64,
        max_epochs=args.epochs, random_state=seed, **params)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shift", choices=sorted(SHIFTS), default="pixel")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        # fixed budgets of epochs: reaching them is the plan here
        warnings.simplefilter("ignore", ConvergenceWarning)
        return run(args)


def run(args):
    X, y = load_digits(return_X_y=True)
    images = (X / 16.0).reshape(-1, 8, 8).astype(np.float32)
    results = {name: [] for name in METHODS}
    for seed in range(args.seeds):
        rng = np.random.RandomState(seed)
        X_source, X_target, y_source, y_target = train_test_split(
            images, y, test_size=0.5, random_state=seed)
        X_target = SHIFTS[args.shift](X_target, rng)
        X_adapt, X_test, _, y_test = train_test_split(
            X_target, y_target, test_size=0.5, random_state=seed)
        # the target rows' labels are unknown: masked with -1
        X_all, y_all, _ = pack_domains(X_source, y_source, X_adapt)
        models = {
            "source only": network(seed, args, adaptation="source_only"),
            "CORAL": network(seed, args, adaptation="coral", adaptation_weight=100.0),
            "MCC": network(seed, args, adaptation="mcc", adaptation_weight=1.0),
            "chosen by CircularValidation": GridSearchCV(
                network(seed, args), GRID, scoring=CircularValidation(), cv=3),
        }
        for name, model in models.items():
            model.fit(X_all, y_all)  # rows without a domain at predict: target
            results[name].append(np.mean(model.predict(X_test) == y_test))
    print(f"digits, target {args.shift} shift, {args.seeds} seeds: target accuracy")
    for name, scores in results.items():
        print(f"{name:30s} {np.mean(scores):.3f} ± {np.std(scores):.3f}")
    return results


if __name__ == "__main__":
    main()
