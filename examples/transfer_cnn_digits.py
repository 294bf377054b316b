"""An image backbone: pretrain a small CNN, then freeze it and fine-tune it.

The CNN (with a hidden layer on top) is pretrained on the ten digit classes of
one half of scikit-learn's 8x8 digit images; on the other, unseen half it is
transferred through ``TransferMLPClassifier(backbone=...)`` to odd vs even with
``--labels`` labelled images per class: frozen (feature extraction) and LP-FT
(frozen for two thirds of the epochs, then fine-tuned at a tenth of the
learning rate), against the same CNN trained from scratch.
Run: ``python examples/transfer_cnn_digits.py``.
"""

import argparse
import warnings
from collections import OrderedDict

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from skxfer import TransferMLPClassifier
from skxfer.datasets import load_digits_transfer, sample_per_class


def small_cnn():
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(1, 16, 3, padding=1),
        relu=nn.ReLU(),
        conv2=nn.Conv2d(16, 32, 3, padding=1),
        relu2=nn.ReLU(),
        pool=nn.MaxPool2d(2),
        flatten=nn.Flatten(),
    ))


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
    src_X, src_y, tgt_X, task = load_digits_transfer(images=True)
    pretrained = TransferMLPClassifier(
        (64,), backbone=small_cnn(), freeze=False, lr=0.01, max_epochs=30,
        batch_size=64, random_state=0,
    ).fit(src_X, src_y)
    results = {"scratch": [], "frozen": [], "LP-FT": []}
    for seed in range(args.seeds):
        labelled, rest = sample_per_class(task, args.labels, random_state=seed)
        common = dict(lr=0.01, max_epochs=args.epochs, random_state=seed)
        models = {
            "scratch": TransferMLPClassifier(
                (), backbone=small_cnn(), freeze=False, **common),
            "frozen": TransferMLPClassifier((), backbone=pretrained, **common),
            "LP-FT": TransferMLPClassifier(
                (), backbone=pretrained, unfreeze_at=args.epochs * 2 // 3,
                backbone_lr_factor=0.1, **common,
            ),
        }
        for name, model in models.items():
            model.fit(tgt_X[labelled], task[labelled])
            results[name].append(model.score(tgt_X[rest], task[rest]))
    print(f"odd vs even from 8x8 images, {args.labels} labels per class, "
          f"{args.seeds} seeds")
    for name, scores in results.items():
        print(f"{name:8s} {np.mean(scores):.3f} ± {np.std(scores):.3f}")
    return results


if __name__ == "__main__":
    main()
