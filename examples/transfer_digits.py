"""Pretrain an MLP on one task, transfer it to a new task with few labels.

Source: all ten digit classes on one half of scikit-learn's digits. Target:
odd vs even on the other, unseen half, with ``--labels`` labelled images per
class. Compared: the same network from scratch, the frozen pretrained network
with a new head, and LP-FT (head first, then everything, backbone at a tenth
of the learning rate). Run: ``python examples/transfer_digits.py``.
"""

import argparse
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from skxfer import TransferMLPClassifier
from skxfer.datasets import load_digits_transfer, sample_per_class


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=150)
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
    results = {"scratch": [], "frozen": [], "LP-FT": []}
    for seed in range(args.seeds):
        labelled, rest = sample_per_class(task, args.labels, random_state=seed)
        common = dict(lr=0.01, max_epochs=args.epochs, random_state=seed)
        models = {
            "scratch": TransferMLPClassifier((128, 64), **common),
            "frozen": TransferMLPClassifier((), backbone=source, **common),
            "LP-FT": TransferMLPClassifier(
                (), backbone=source, unfreeze_at=args.epochs * 2 // 3,
                backbone_lr_factor=0.1, **common,
            ),
        }
        for name, model in models.items():
            model.fit(tgt_X[labelled], task[labelled])
            results[name].append(model.score(tgt_X[rest], task[rest]))
    print(f"odd vs even, {args.labels} labels per class, {args.seeds} seeds")
    for name, scores in results.items():
        print(f"{name:8s} {np.mean(scores):.3f} ± {np.std(scores):.3f}")
    return results


if __name__ == "__main__":
    main()
