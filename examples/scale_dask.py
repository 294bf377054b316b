"""Beyond one machine with Dask: a search on a cluster, and images embedded there.

Starts a local cluster (2 worker processes x 1 thread, listening on 127.0.0.1
only) or uses yours (``--scheduler tcp://host:8786``). A grid search over a
frozen resnet18 + logistic regression and a cross-validation of a transfer
estimator run under joblib's Dask backend, each candidate and fold a task;
then ``--images`` PNG files are embedded on the workers with
``skxfer.distributed.embed_dask`` and written there, one ``.npy`` file per
partition. The network has random weights (``weights=None``) to stay offline;
``weights="DEFAULT"`` gives ImageNet's. Needs ``pip install "skxfer[dask]"``.
Run: ``python examples/scale_dask.py``.
"""

import argparse
import os
import tempfile
import time

import dask.array
import joblib
import numpy as np
from distributed import Client, LocalCluster
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline

from skxfer import PretrainedFeatureExtractor, TransferMLPClassifier
from skxfer.distributed import embed_dask, warm_up


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


def start_local_cluster():
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                           dashboard_address=None)
    client = Client(cluster)
    client.run(warm_up)  # workers import torch and torch._dynamo now, once
    return cluster, client


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
    parser.add_argument("--scheduler", default=None,
                        help="address of a running scheduler (default: a local "
                             "cluster of 2 workers)")
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

    if args.scheduler is None:
        cluster, client = start_local_cluster()
    else:
        cluster, client = None, Client(args.scheduler, timeout=60)
        client.run(warm_up)
    try:
        start = time.perf_counter()
        with joblib.parallel_backend("dask"):
            search.fit(X, y)
            scores = cross_val_score(clf, X, y, cv=3)
        searched = time.perf_counter() - start

        start = time.perf_counter()
        features = embed_dask(extractor, paths, chunk_size=256)
        dask.array.to_npy_stack(output, features)
        embedded = time.perf_counter() - start
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

    print(f"search and cross-validation on the cluster: {searched:.1f} s; best "
          f"{search.best_params_}, transfer estimator's accuracy {scores.mean():.3f}")
    print(f"{args.images} images embedded in {embedded:.1f} s "
          f"({args.images / embedded:.0f} images/s), written to {output}/")
    return {"search": search, "scores": scores,
            "features": dask.array.from_npy_stack(output).compute(
                scheduler="synchronous"),
            "extractor": extractor, "paths": paths}


if __name__ == "__main__":
    main()
