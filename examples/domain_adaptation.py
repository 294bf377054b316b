"""Domain adaptation: digits from a camera with another contrast.

A small CNN is pretrained (with skxfer) on the labelled *source* half of
``load_digits``; the *target* half is shot by a "new camera" -- other images
of the ten digits, their contrast squeezed (``--shift contrast``), dimmed,
noisy or inverted -- and its labels are unknown. ``PretrainedFeatureExtractor`` turns
every image into the network's features, an aligner maps the source features
into the target's frame, and a logistic regression learns on the labelled
source rows only (``make_da_pipeline``). Methods are scored on held-out target
images, over ``--seeds`` splits (mean +- std):

- source only: the same pipeline with the aligner set to 'passthrough';
- CORAL and subspace alignment;
- chosen without target labels: ``GridSearchCV`` over the aligner, scored by
  ``CircularValidation``;
- target only: trained on the labels of the target training images, which
  domain adaptation does not see (an upper bound).

Run: ``python examples/domain_adaptation.py`` (about a minute on 2 CPU cores;
``--shift dim|noise|invert``, ``--seeds``, ``--epochs``).
"""

import argparse
import warnings
from collections import OrderedDict

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from skxfer import PretrainedFeatureExtractor, TransferMLPClassifier
from skxfer.adapt import (
    CORAL,
    CircularValidation,
    SubspaceAlignment,
    make_da_pipeline,
    pack_domains,
)

SHIFTS = {
    "contrast": lambda images, rng: 0.3 + 0.4 * images,
    "dim": lambda images, rng: 0.5 * images,
    "noise": lambda images, rng: np.clip(
        images + rng.normal(0.0, 0.3, images.shape), 0.0, 1.0
    ),
    "invert": lambda images, rng: 1.0 - images,
}
METHODS = (
    "source only",
    "CORAL",
    "subspace alignment",
    "chosen by CircularValidation",
    "target only (oracle)",
)


def domains(shift, seed):
    """Source images and labels; target training and test images and labels."""
    X, y = load_digits(return_X_y=True)
    images = (X / 16.0).reshape(-1, 8, 8).astype(np.float32)
    source, target = train_test_split(
        np.arange(len(y)), test_size=0.5, stratify=y, random_state=seed
    )
    fit, test = train_test_split(
        target, test_size=0.5, stratify=y[target], random_state=seed
    )
    shifted = SHIFTS[shift](images, np.random.RandomState(seed)).astype(np.float32)
    return images[source], y[source], shifted[fit], y[fit], shifted[test], y[test]


def pretrained_extractor(X_source, y_source, epochs, seed):
    """A CNN pretrained on the source images, as a feature extractor."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        cnn = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(1, 16, 3, padding=1), relu=nn.ReLU(),
            pool=nn.MaxPool2d(2), flatten=nn.Flatten(),
        ))
    network = TransferMLPClassifier(
        (32,), backbone=cnn, freeze=False, lr=0.01, max_epochs=epochs,
        batch_size=64, random_state=seed,
    )
    with warnings.catch_warnings():  # a short pretraining, on purpose
        warnings.simplefilter("ignore", ConvergenceWarning)
        network.fit(X_source, y_source)
    return PretrainedFeatureExtractor(network, weights=None)


def run_seed(shift, epochs, seed):
    X_s, y_s, X_t, y_t, X_test, y_test = domains(shift, seed)
    extractor = pretrained_extractor(X_s, y_s, epochs, seed)
    X, y, sample_domain = pack_domains(X_s, y_s, X_t)   # target labels: -1

    def da(aligner):
        return make_da_pipeline(
            ("features", extractor), StandardScaler(), ("align", aligner),
            LogisticRegression(max_iter=1000),
        )

    # SubspaceAlignment(): every direction both domains' features span (the
    # CNN's ReLU features span fewer than their 32 columns)
    search = GridSearchCV(
        da(CORAL()),
        {"align": ["passthrough", CORAL(), SubspaceAlignment(8),
                   SubspaceAlignment()]},
        scoring=CircularValidation(), cv=3,
    )
    models = {
        "source only": da("passthrough"),
        "CORAL": da(CORAL()),
        "subspace alignment": da(SubspaceAlignment()),
        "chosen by CircularValidation": search,
    }
    scores = {}
    for name, model in models.items():
        model.fit(X, y, sample_domain=sample_domain)
        # test rows come without sample_domain: they are target rows
        scores[name] = float(np.mean(model.predict(X_test) == y_test))
    oracle = make_pipeline(extractor, StandardScaler(),
                           LogisticRegression(max_iter=1000)).fit(X_t, y_t)
    scores["target only (oracle)"] = oracle.score(X_test, y_test)
    chosen = search.best_params_["align"]
    return scores, chosen


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shift", choices=sorted(SHIFTS), default="contrast")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny images: one thread is as fast, and repeatable

    results = {name: [] for name in METHODS}
    for seed in range(args.seeds):
        scores, chosen = run_seed(args.shift, args.epochs, seed)
        for name in METHODS:
            results[name].append(scores[name])
        print(f"seed {seed}: " + ", ".join(
            f"{name} {scores[name]:.3f}" for name in METHODS
        ) + f"; CircularValidation chose {chosen}")
    print(f"\ndigits, target shift {args.shift!r}: accuracy on held-out target "
          f"images over {args.seeds} seed(s)")
    for name in METHODS:
        values = np.asarray(results[name])
        print(f"{name:30s} {values.mean():.3f} +- {values.std():.3f}")
    return results


if __name__ == "__main__":
    main()
