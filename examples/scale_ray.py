"""Beyond one machine with Ray: a search on a cluster, and images embedded there.

Starts a local Ray (2 CPUs, listening on 127.0.0.1 only, no dashboard) or
joins yours (``--address ray://host:10001`` or ``auto``); inside a running
Ray session it uses that. A grid search over a frozen resnet18 + logistic
regression and a cross-validation of a transfer estimator run under Ray's
joblib backend; then ``--images`` PNG files are embedded by an actor pool with
``skxfer.distributed.embed_ray`` (Ray Data) and written as Parquet from the
workers. The network has random weights (``weights=None``) to stay offline;
``weights="DEFAULT"`` gives ImageNet's. Needs ``pip install "skxfer[ray]"``.
Run: ``python examples/scale_ray.py``.
"""

import argparse
import os
import secrets
import sys
import tempfile
import time

import joblib
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline

from skxfer import PretrainedFeatureExtractor, TransferMLPClassifier
from skxfer.distributed import embed_ray


def digit_images(n):
    """The first ``n`` digits of load_digits as 32 x 32 RGB uint8 images."""
    X, y = load_digits(return_X_y=True)
    X = (X[:n] * 255 / 16).astype(np.uint8).reshape(-1, 8, 8)
    X = X.repeat(4, axis=1).repeat(4, axis=2)
    return np.stack([X] * 3, axis=-1), y[:n]


def write_pngs(images, folder):
    paths = []
    for i, image in enumerate(images):
        paths.append(os.path.join(folder, f"{i:06d}.png"))
        Image.fromarray(image).save(paths[-1])
    return paths


def start_local_ray():
    # before `import ray`: Ray 2.60 moves a node started for 127.0.0.1 onto
    # the machine's network address unless this is 0
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # a token for this session (else Ray writes one to ~/.ray/auth_token)
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    import ray

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    return ray


def connect(address):
    """Ray, and whether this call started it: the running session, the
    cluster at ``address``, or a new local one."""
    if address is None and "ray" not in sys.modules:
        return start_local_ray(), True
    import ray

    if ray.is_initialized():
        return ray, False
    if address is None:
        return start_local_ray(), True
    ray.init(address=address)
    return ray, True


def search_and_transfer():
    """A grid search over a frozen resnet18 + logistic regression, and a
    transfer estimator (an MLP head on the same frozen network)."""
    search = GridSearchCV(
        make_pipeline(
            PretrainedFeatureExtractor("resnet18", weights=None, preprocessing=None),
            LogisticRegression(max_iter=300)),
        {"logisticregression__C": [0.01, 1.0]}, cv=3)
    clf = TransferMLPClassifier(
        (32,), backbone=PretrainedFeatureExtractor(
            "resnet18", weights=None, preprocessing=None),
        freeze=True, batch_norm=True, lr=0.01, max_epochs=30, random_state=0)
    return search, clf


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=None,
                        help="a Ray cluster to join (default: the running "
                             "session, or a new local one)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--output", default=None,
                        help="folder for the features (default: a new temporary "
                             "folder)")
    args = parser.parse_args(argv)

    X, y = digit_images(240)
    search, clf = search_and_transfer()
    images = np.random.RandomState(0).randint(0, 256, (args.images, 32, 32, 3),
                                              dtype=np.uint8)
    paths = write_pngs(images, tempfile.mkdtemp())
    extractor = PretrainedFeatureExtractor(
        "resnet18", weights=None, preprocessing=None).fit(paths[:1])
    output = args.output or os.path.join(tempfile.mkdtemp(), "features")

    ray, started = connect(args.address)
    try:
        from ray.util.joblib import register_ray

        register_ray()
        start = time.perf_counter()
        with joblib.parallel_backend("ray"):
            search.fit(X, y)
            scores = cross_val_score(clf, X, y, cv=3)
        searched = time.perf_counter() - start

        start = time.perf_counter()
        features = embed_ray(extractor, paths, batch_size=256, concurrency=2)
        features.write_parquet(output)
        embedded = time.perf_counter() - start

        rows = {row["path"]: row["features"]
                for row in ray.data.read_parquet(output).take_all()}
    finally:
        if started:
            ray.shutdown()

    print(f"search and cross-validation on Ray: {searched:.1f} s; best "
          f"{search.best_params_}, transfer estimator's accuracy {scores.mean():.3f}")
    print(f"{args.images} images embedded in {embedded:.1f} s "
          f"({args.images / embedded:.0f} images/s), written to {output}/")
    return {"search": search, "scores": scores,
            "features": np.stack([rows[path] for path in paths]),
            "extractor": extractor, "paths": paths}


if __name__ == "__main__":
    main()
