"""The ``skxfer`` command line (also ``python -m skxfer``)."""

import argparse
import sys
import time


def _demo(args):
    """Train on load_digits and compare with scikit-learn, printing a table."""
    import warnings

    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from . import TransferMLPClassifier

    X, y = load_digits(return_X_y=True)
    methods = {
        "logistic regression": LogisticRegression(max_iter=1000),
        "sklearn MLPClassifier (64,)": MLPClassifier(
            (64,), max_iter=args.epochs, random_state=0
        ),
        "skxfer TransferMLPClassifier (64,)": TransferMLPClassifier(
            (64,), max_epochs=args.epochs, random_state=0, device=args.device
        ),
        "  + batch norm + dropout 0.2": TransferMLPClassifier(
            (64,),
            batch_norm=True,
            dropout=0.2,
            max_epochs=args.epochs,
            random_state=0,
            device=args.device,
        ),
    }
    print(
        f"load_digits: {len(X)} images of 8x8 pixels, 10 classes; "
        f"{args.cv}-fold cross-validated accuracy, {args.epochs} epochs"
    )
    print(f"{'method':38s} {'accuracy':>17s} {'seconds':>8s}")
    for name, est in methods.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            scores = cross_val_score(make_pipeline(StandardScaler(), est), X, y,
                                     cv=args.cv)
        seconds = time.perf_counter() - start
        print(f"{name:38s} {np.mean(scores):8.3f} ± {np.std(scores):.3f} "
              f"{seconds:8.1f}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="skxfer",
        description="Transfer learning for scikit-learn users.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="compare skxfer with scikit-learn on digits")
    demo.add_argument("--epochs", type=int, default=50)
    demo.add_argument("--cv", type=int, default=5)
    demo.add_argument("--device", default="auto")
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
