"""A grid search over a frozen backbone, with and without the feature store.

1,000 random 64x64 RGB images, resnet18 (``weights=None``, ``random_state=0``,
``preprocessing=None`` so images stay 64 px), and
``GridSearchCV(make_pipeline(PretrainedFeatureExtractor(...),
LogisticRegression()), {"logisticregression__C": 10 values}, cv=5)``:

(a) one backbone pass over the images (the floor),
(b) the search with the feature store (skxfer's default for torchvision models),
(c) the search without it (``feature_store=False``: every fold and candidate
    runs the backbone again, as any pipeline does).

Prints wall time, backbone passes per image (counted by a forward hook on
the extractor's own network) and the store's size. Run::

    python benchmarks/bench_search.py [--images 1000] [--threads 2] [--skip-plain]
"""

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

import skxfer
from skxfer import PretrainedFeatureExtractor

ROWS = [0]


class CountingExtractor(PretrainedFeatureExtractor):
    """Counts the rows its network computes (every forward goes through
    ``_outputs``; a hook on ``backbone_`` would build a network that a fit from
    the store does not need)."""

    def _outputs(self, X):
        for out in super()._outputs(X):
            ROWS[0] += len(out)
            yield out


def search(X, y, feature_store):
    ext = CountingExtractor("resnet18", weights=None, preprocessing=None,
                            random_state=0, device="cpu",
                            feature_store=feature_store)
    grid = GridSearchCV(make_pipeline(ext, LogisticRegression(max_iter=200)),
                        {"logisticregression__C": list(np.logspace(-3, 2, 10))},
                        cv=5)
    ROWS[0] = 0
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X, y)
    return time.perf_counter() - start, ROWS[0] / len(X)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-plain", action="store_true",
                        help="skip (c), which runs the backbone 51 times")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, (args.images, 64, 64, 3), dtype=np.uint8)
    y = rng.randint(0, 2, args.images)

    skxfer.clear_feature_store()
    ext = PretrainedFeatureExtractor("resnet18", weights=None, preprocessing=None,
                                     random_state=0, device="cpu",
                                     feature_store=False).fit(X[:1])
    start = time.perf_counter()
    features = ext.transform(X)
    one_pass = time.perf_counter() - start
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        GridSearchCV(LogisticRegression(max_iter=200),
                     {"C": list(np.logspace(-3, 2, 10))}, cv=5).fit(features, y)
    heads = time.perf_counter() - start

    stored_s, stored_passes = search(X, y, "auto")
    info = skxfer.feature_store_info()
    rows = [("(a) one backbone pass", one_pass, 1.0),
            ("    + the same search on ready features", one_pass + heads, 1.0),
            ("(b) search, feature store", stored_s, stored_passes)]
    if not args.skip_plain:
        plain_s, plain_passes = search(X, y, False)
        rows.append(("(c) search, no store", plain_s, plain_passes))
    print(f"{args.images} images 64x64, resnet18, 5 folds x 10 C values, "
          f"{args.threads} threads")
    print(f"{'':44s} {'seconds':>8s} {'passes/img':>10s}")
    for name, seconds, passes in rows:
        print(f"{name:44s} {seconds:8.1f} {passes:10.2f}")
    print(f"store: {info['entries']} images, {info['bytes'] / 2**20:.1f} MiB "
          f"(budget {info['max_bytes'] / 2**20:.0f} MiB)")
    print(f"(b) / (one pass + heads): {stored_s / (one_pass + heads):.2f}")
    if not args.skip_plain:
        print(f"(c) / (b): {plain_s / stored_s:.1f}x")


if __name__ == "__main__":
    main()
