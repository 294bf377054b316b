"""Let cross-validation choose how much of a pretrained network to train.

``GridSearchCV`` over ``freeze`` (all, the first block, nothing), the
unfreezing epoch (LP-FT), the backbone's learning-rate factor, and whether to
transfer at all (``backbone=None``). The source network stays fitted inside the
grid thanks to ``sklearn.frozen.FrozenEstimator``; every candidate starts from
its pretrained weights. Run: ``python examples/grid_search_freezing.py``.
"""

import argparse
import warnings

from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV

from skxfer import TransferMLPClassifier
from skxfer.datasets import load_digits_transfer, sample_per_class


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        # fixed budgets of epochs: reaching them is the plan here
        warnings.simplefilter("ignore", ConvergenceWarning)
        return run(args)


def run(args):
    src_X, src_y, tgt_X, task = load_digits_transfer(images=False)
    source = TransferMLPClassifier(
        (128, 64), max_epochs=60, lr=3e-3, batch_size=64, random_state=0
    ).fit(src_X, src_y)
    labelled, rest = sample_per_class(task, args.labels, random_state=0)
    grid = GridSearchCV(
        TransferMLPClassifier((), lr=0.01, max_epochs=args.epochs, weight_decay=0.1,
                              random_state=0),
        [
            {"backbone": [FrozenEstimator(source)], "freeze": [True, 1, False],
             "unfreeze_at": [None, args.epochs // 2],
             "backbone_lr_factor": [0.1, 1.0]},
            {"backbone": [None], "hidden_layer_sizes": [(128, 64)]},
        ],
        cv=3,
    ).fit(tgt_X[labelled], task[labelled])
    best = {k: (v if k != "backbone" else ("pretrained" if v is not None else None))
            for k, v in grid.best_params_.items()}
    print(f"best: {best}  cv accuracy {grid.best_score_:.3f}")
    print(f"held-out accuracy {grid.score(tgt_X[rest], task[rest]):.3f}")
    return grid


if __name__ == "__main__":
    main()
