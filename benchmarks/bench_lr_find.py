"""How good is ``lr_find``'s suggestion? Against the best of a grid, side by side.

On digits (a fixed stratified split per seed, 75 % to train), for each task:

- ``lr_find`` on the training part, with the estimator's settings, gives
  three readings: 'valley' (``suggested_lr``), 'steep' and 'minimum';
- the same estimator is fitted for ``--epochs`` epochs (no early stopping)
  at each rate of a 5-point grid, 1e-4 ... 1, and at each suggestion;

and the table shows the test accuracy, the mean over ``--seeds`` seeds, with
the time of one range test beside the time of one fit.

Tasks: an MLP (64,) on the pixels; a small CNN backbone on the 8x8 images,
trained end to end with ``backbone_lr_factor=0.5``.

Run: ``python benchmarks/bench_lr_find.py [--seeds 3] [--epochs 10]``.
"""

import argparse
import statistics
import time
import warnings
from collections import OrderedDict

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from torch import nn

from skxfer import TransferMLPClassifier, lr_find

GRID = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]


def small_cnn():
    """Two convolutions, BatchNorm, pooled to 4 x 16 features (seeded)."""
    with torch.random.fork_rng():
        torch.manual_seed(3)
        return nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(1, 8, 3, padding=1), bn1=nn.BatchNorm2d(8),
            relu1=nn.ReLU(), conv2=nn.Conv2d(8, 16, 3, padding=1),
            relu2=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(2), flatten=nn.Flatten()))


def tasks(epochs):
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    images = X.reshape(-1, 8, 8).astype(np.float32)
    common = dict(max_epochs=epochs, device="cpu")
    return {
        "MLP (64,)": (X, y, dict(hidden_layer_sizes=(64,), **common)),
        "CNN end to end": (images, y, dict(
            hidden_layer_sizes=(), backbone=small_cnn(), freeze=False,
            backbone_lr_factor=0.5, batch_size=64, **common)),
    }


def run(X, y, params, seed):
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, random_state=seed, stratify=y)
    clf = TransferMLPClassifier(**params, random_state=seed)
    start = time.perf_counter()
    found = lr_find(clf, X_train, y_train)
    find_s = time.perf_counter() - start
    scores, fit_s = {}, []
    for name, lr in [(f"{lr:g}", lr) for lr in GRID] + list(
            found.suggestions.items()):
        start = time.perf_counter()
        clf.set_params(lr=lr).fit(X_train, y_train)
        fit_s.append(time.perf_counter() - start)
        scores[name] = clf.score(X_test, y_test)
    return found.suggestions, scores, find_s, statistics.median(fit_s)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", ConvergenceWarning)
    results = {}
    for task, (X, y, params) in tasks(args.epochs).items():
        runs = [run(X, y, params, seed) for seed in range(args.seeds)]
        scores = {k: statistics.mean(r[1][k] for r in runs) for k in runs[0][1]}
        rates = {k: statistics.geometric_mean(r[0][k] for r in runs)
                 for k in runs[0][0]}
        best = max(scores[f"{lr:g}"] for lr in GRID)
        print(f"\n{task}, {args.epochs} epochs, mean of {args.seeds} seeds: "
              f"lr_find {statistics.mean(r[2] for r in runs):.2f} s, one fit "
              f"{statistics.mean(r[3] for r in runs):.2f} s")
        print(f"{'lr':>16} {'accuracy':>9} {'vs best of grid':>16}")
        for name, score in scores.items():
            label = f"{name} ({rates[name]:.2g})" if name in rates else name
            print(f"{label:>16} {score:9.3f} {score - best:+16.3f}")
        results[task] = scores
    return results


if __name__ == "__main__":
    main()
