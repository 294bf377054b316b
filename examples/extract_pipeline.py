"""Image features from a pretrained network, in a scikit-learn pipeline.

``PretrainedFeatureExtractor`` turns images into the representation before the
network's classifier; a logistic regression learns the new task on top. Here
the network is a small CNN pretrained (with skxfer) on the ten digit classes of
one half of ``load_digits``; the pipeline learns odd vs even on the other half
from ``--labels`` images per class and is compared with logistic regression on
raw pixels. With a torchvision model the pipeline reads the same:
``PretrainedFeatureExtractor("resnet18")`` (ImageNet weights, downloaded once).
Run: ``python examples/extract_pipeline.py``.
"""

import argparse
from collections import OrderedDict

from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from torch import nn

from skxfer import PretrainedFeatureExtractor, TransferMLPClassifier
from skxfer.datasets import load_digits_transfer, sample_per_class


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)

    src_X, src_y, tgt_X, task = load_digits_transfer(images=True)
    cnn = nn.Sequential(OrderedDict(
        conv=nn.Conv2d(1, 16, 3, padding=1), relu=nn.ReLU(),
        conv2=nn.Conv2d(16, 32, 3, padding=1), relu2=nn.ReLU(),
        pool=nn.MaxPool2d(2), flatten=nn.Flatten(),
    ))
    pretrained = TransferMLPClassifier(
        (64,), backbone=cnn, freeze=False, lr=0.01, max_epochs=args.epochs,
        batch_size=64, random_state=0,
    ).fit(src_X, src_y)

    labelled, rest = sample_per_class(task, args.labels, random_state=0)
    pipe = make_pipeline(
        PretrainedFeatureExtractor(pretrained, weights=None),
        LogisticRegression(max_iter=2000),
    ).fit(tgt_X[labelled], task[labelled])
    raw = LogisticRegression(max_iter=2000).fit(
        tgt_X[labelled].reshape(len(labelled), -1), task[labelled]
    )
    scores = {
        "pretrained features + LR": pipe.score(tgt_X[rest], task[rest]),
        "raw pixels + LR": raw.score(tgt_X[rest].reshape(len(rest), -1), task[rest]),
    }
    for name, score in scores.items():
        print(f"{name:26s} {score:.3f}")
    return scores


if __name__ == "__main__":
    main()
