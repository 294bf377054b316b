"""Defaults by measurement: skxfer's MLP against scikit-learn's, as a user first
compares them -- ``StandardScaler`` + the estimator with its defaults,
``random_state=0``, 5-fold cross-validation.

Datasets (all offline): digits, breast_cancer, wine, a 20,000 x 64
``make_classification`` task with 10 classes, and diabetes for the regressors
(R², targets standardised). For skxfer, candidate settings are compared, each
given as ``name=value,name=value`` (an empty string is skxfer's defaults);
the defaults are the candidate this table chose. Prints accuracy (R² for
diabetes) and total fit time for each.

Each estimator is fitted once on a few rows before timing: the first torch
optimizer of a process imports ``torch._dynamo`` (1 to 3 s here), a one-off
cost like an import, which the table leaves out for both libraries. Run::

    python benchmarks/bench_defaults.py [--candidates "" "init=auto" ...]
        [--threads 2] [--datasets digits breast_cancer wine synthetic diabetes]
        [--skip-sklearn]
"""

import argparse
import ast
import time
import warnings

import numpy as np
import torch
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_wine,
    make_classification,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from skxfer import TransferMLPClassifier, TransferMLPRegressor


def datasets(names):
    loaders = {
        "digits": lambda: load_digits(return_X_y=True),
        "breast_cancer": lambda: load_breast_cancer(return_X_y=True),
        "wine": lambda: load_wine(return_X_y=True),
        "synthetic": lambda: make_classification(
            20_000, 64, n_informative=32, n_classes=10, random_state=0),
        "diabetes": lambda: load_diabetes(return_X_y=True),
    }
    for name in names:
        X, y = loaders[name]()
        yield name, X.astype(np.float32), y


def cv_score(estimator, X, y, regression):
    if regression:
        estimator = TransformedTargetRegressor(estimator, transformer=StandardScaler())
        cv = KFold(5, shuffle=True, random_state=0)
    else:
        cv = StratifiedKFold(5, shuffle=True, random_state=0)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(make_pipeline(StandardScaler(), estimator), X, y,
                                 cv=cv)
    return scores.mean(), time.perf_counter() - start


def parse_candidate(text):
    """``"init=auto,lr=0.002"`` -> ``{"init": "auto", "lr": 0.002}``."""
    params = {}
    for item in filter(None, text.split(",")):
        name, value = item.split("=", 1)
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass  # a string, e.g. init=auto
        params[name.strip()] = value
    return params


def warm_up():
    X, y = load_wine(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for est in (MLPClassifier(max_iter=2), TransferMLPClassifier(max_epochs=2),
                    MLPRegressor(max_iter=2), TransferMLPRegressor(max_epochs=2)):
            est.fit(X[::3].astype(np.float32), y[::3])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", nargs="+",
                        default=["", "init=auto", "batch_size=200", "batch_size=512"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--datasets", nargs="+",
                        default=["digits", "breast_cancer", "wine", "synthetic",
                                 "diabetes"])
    parser.add_argument("--skip-sklearn", action="store_true",
                        help="time skxfer's candidates only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    candidates = [parse_candidate(c) for c in args.candidates]
    columns = ([] if args.skip_sklearn else ["sklearn"]) + [
        "skxfer " + (",".join(f"{k}={v}" for k, v in c.items()) or "defaults")
        for c in candidates
    ]
    warm_up()
    totals = dict.fromkeys(columns, 0.0)
    print(f"5-fold CV, StandardScaler + defaults, random_state=0, "
          f"{args.threads} threads: score (seconds)")
    widths = [max(len(c), 14) + 2 for c in columns]

    def row(label, cells):
        return f"{label:14s}" + "".join(
            f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))

    print(row("data", columns))
    with threadpool_limits(args.threads):
        for name, X, y in datasets(args.datasets):
            regression = name == "diabetes"
            ours = TransferMLPRegressor if regression else TransferMLPClassifier
            theirs = MLPRegressor if regression else MLPClassifier
            contestants = ([] if args.skip_sklearn else [theirs(random_state=0)]) + [
                ours(random_state=0, device="cpu", **c) for c in candidates
            ]
            cells = []
            for column, est in zip(columns, contestants, strict=True):
                score, seconds = cv_score(est, X, y, regression)
                totals[column] += seconds
                cells.append(f"{score:.3f} ({seconds:5.1f})")
            print(row(name, cells), flush=True)
    print(row("total seconds", [f"{totals[c]:.1f}" for c in columns]))


if __name__ == "__main__":
    main()
