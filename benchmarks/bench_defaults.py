"""Defaults by measurement: skxfer's MLP against scikit-learn's, as a user first
compares them -- ``StandardScaler`` + the estimator with its defaults,
``random_state=0``, 5-fold cross-validation.

Datasets (all offline): digits, breast_cancer, wine, a 20,000 x 64
``make_classification`` task with 10 classes, and diabetes for the regressors
(R², targets standardised). For skxfer, candidate ``init`` values are compared
(the default is the one this table chose); other parameters are the defaults.
Prints accuracy (R² for diabetes) and total fit time for each. Run::

    python benchmarks/bench_defaults.py [--inits auto xavier_uniform default]
        [--threads 2] [--datasets digits breast_cancer wine synthetic diabetes]
"""

import argparse
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inits", nargs="+",
                        default=["auto", "xavier_uniform", "default"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--datasets", nargs="+",
                        default=["digits", "breast_cancer", "wine", "synthetic",
                                 "diabetes"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    columns = ["sklearn"] + [f"skxfer init={i}" for i in args.inits]
    totals = dict.fromkeys(columns, 0.0)
    print(f"5-fold CV, StandardScaler + defaults, random_state=0, "
          f"{args.threads} threads: score (seconds)")
    print(f"{'data':14s}" + "".join(f"{c:>28s}" for c in columns))
    with threadpool_limits(args.threads):
        for name, X, y in datasets(args.datasets):
            regression = name == "diabetes"
            ours = TransferMLPRegressor if regression else TransferMLPClassifier
            theirs = MLPRegressor if regression else MLPClassifier
            contestants = [theirs(random_state=0)] + [
                ours(init=init, random_state=0, device="cpu") for init in args.inits
            ]
            cells = []
            for column, est in zip(columns, contestants, strict=True):
                score, seconds = cv_score(est, X, y, regression)
                totals[column] += seconds
                cells.append(f"{score:.3f} ({seconds:5.1f})")
            print(f"{name:14s}" + "".join(f"{c:>28s}" for c in cells), flush=True)
    print(f"{'total seconds':14s}" + "".join(f"{totals[c]:28.1f}" for c in columns))


if __name__ == "__main__":
    main()
