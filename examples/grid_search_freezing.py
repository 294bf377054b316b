"""Let cross-validation choose how much of a pretrained network to train.

``GridSearchCV`` over ``freeze`` (all, the first block, nothing), the
unfreezing epoch (LP-FT), the backbone's learning-rate factor, and whether to
transfer at all (``backbone=None``). The source network stays fitted inside the
grid thanks to ``sklearn.frozen.FrozenEstimator``; every candidate starts from
its pretrained weights. Run: ``python examples/grid_search_freezing.py``.
"""

import argparse

import numpy as np
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV, train_test_split

from skxfer import TransferMLPClassifier


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args(argv)

    X, y = load_digits(return_X_y=True)
    src_X, tgt_X, src_y, tgt_y = train_test_split(
        X / 16.0, y, test_size=0.5, random_state=0, stratify=y
    )
    source = TransferMLPClassifier(
        (128, 64), max_epochs=60, lr=3e-3, batch_size=64, random_state=0
    ).fit(src_X, src_y)
    task = tgt_y % 2
    rng = np.random.RandomState(0)
    labelled = np.concatenate([
        rng.choice(np.flatnonzero(task == c), args.labels, replace=False)
        for c in (0, 1)
    ])
    rest = np.setdiff1d(np.arange(len(task)), labelled)
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
