"""Dask and Ray on one 2-core machine: what the engines cost, side by side.

Three comparisons, each on the same work:

(a) embedding ``--images`` PNG files (64 x 64, resnet18 with ``weights=None``
    and ``preprocessing=None``): ``extractor.transform`` in one process with
    2 torch threads, against the streaming route on 2 workers x 1 thread --
    ``embed_dask`` written with ``dask.array.to_npy_stack`` (cold: the first
    run on new workers; warm: the next one) and ``embed_ray`` read back with
    ``iter_batches`` (every run starts its actors);
(b) the search of ``examples/scale_*.py`` (``GridSearchCV`` over a frozen
    resnet18 + logistic regression, 2 candidates x 3 folds, and a 3-fold
    ``cross_val_score`` of a transfer estimator on 240 digit images): in one
    process (2 threads), with loky ``n_jobs=2``, and under joblib's Dask
    (first and second search on the same workers) and Ray backends;
(c) what a worker's first fit costs: a small ``TransferMLPClassifier`` fit
    submitted to a new Dask worker, to the same worker again, and to a new
    worker warmed first with ``client.run(skxfer.distributed.warm_up)``.

Clusters are local, listen on 127.0.0.1 only, and are started before the
clocks run; this process is warmed up first (a transform and a fit), so its
figures hold no start-up costs. Heavy modules are imported inside functions:
Dask's spawned workers re-import this script as their main module, and would
otherwise start with torch already imported (a notebook's workers do not).
On 2 cores the engines cannot beat one process: the figures are their
overhead, not a speed-up. Run::

    python benchmarks/bench_scale.py [--images 2000] [--quick]
"""

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np


def digit_images(n):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X[:n] * 255 / 16).astype(np.uint8).reshape(-1, 8, 8)
    X = X.repeat(4, axis=1).repeat(4, axis=2)
    return np.stack([X] * 3, axis=-1), y[:n]


def search_and_transfer():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    from skxfer import PretrainedFeatureExtractor, TransferMLPClassifier

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


def run_search(X, y, n_jobs=None):
    from sklearn.model_selection import cross_val_score

    search, clf = search_and_transfer()
    start = time.perf_counter()
    search.set_params(n_jobs=n_jobs).fit(X, y)
    cross_val_score(clf, X, y, cv=3, n_jobs=n_jobs)
    return time.perf_counter() - start


def first_fit():
    """A small fit, as a worker's first candidate would run it."""
    from sklearn.datasets import load_digits

    from skxfer import TransferMLPClassifier

    X, y = load_digits(return_X_y=True)
    TransferMLPClassifier((64,), max_epochs=10, random_state=0).fit(X / 16, y)


def timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--quick", action="store_true",
                        help="400 images (a check that it runs, not figures)")
    args = parser.parse_args()
    n = 400 if args.quick else args.images
    import torch
    from PIL import Image
    from sklearn.exceptions import ConvergenceWarning

    import skxfer
    from skxfer import PretrainedFeatureExtractor

    warnings.simplefilter("ignore", ConvergenceWarning)
    torch.set_num_threads(2)
    folder = tempfile.mkdtemp()
    rng = np.random.RandomState(0)
    paths = []
    for i in range(n):
        paths.append(os.path.join(folder, f"{i:06d}.png"))
        Image.fromarray(rng.randint(0, 256, (64, 64, 3), dtype=np.uint8)).save(
            paths[-1])
    extractor = PretrainedFeatureExtractor(
        "resnet18", weights=None, preprocessing=None, device="cpu",
        feature_store=False).fit(paths[:1])
    X, y = digit_images(240)
    embed, search, fit = {}, {}, {}

    extractor.transform(paths[:64])  # warm this process up
    first_fit()
    embed["one process, 2 threads: transform"] = timed(extractor.transform, paths)
    local = extractor.set_params(num_workers=0)
    embed["... with num_workers=0 (no loader process)"] = timed(local.transform,
                                                                 paths)
    extractor.set_params(num_workers=None)
    skxfer.clear_feature_store()
    search["one process, 2 threads"] = run_search(X, y)
    skxfer.clear_feature_store()
    torch.set_num_threads(1)
    search["loky, n_jobs=2 (1 thread each)"] = run_search(X, y, n_jobs=2)
    code = ("import time; t = time.perf_counter(); import skxfer; "
            "from bench_scale import first_fit; first_fit(); "
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=600,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
    fit["a new process: import skxfer, then fit"] = float(out.stdout.split()[-1])
    fit["this process (warm)"] = timed(first_fit)

    import dask.array
    import joblib
    from distributed import Client, LocalCluster

    from skxfer.distributed import embed_dask, embed_ray, warm_up

    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=300)
        for label in ("cold", "warm"):
            out_dir = os.path.join(tempfile.mkdtemp(), "features")
            embed[f"Dask 2 x 1: embed_dask, {label}"] = timed(
                lambda d=out_dir: dask.array.to_npy_stack(
                    d, embed_dask(extractor, paths, chunk_size=256)))
        client.restart(timeout=600)
        with joblib.parallel_backend("dask"):
            search["Dask 2 x 1, first search"] = run_search(X, y)
            search["Dask 2 x 1, second search"] = run_search(X, y)
        client.restart(timeout=600)
        worker = [next(iter(client.scheduler_info()["workers"]))]
        fit["a new Dask worker"] = timed(
            lambda: client.submit(first_fit, workers=worker).result())
        fit["the same Dask worker again"] = timed(
            lambda: client.submit(first_fit, workers=worker, pure=False).result())
        client.restart(timeout=600)
        worker = [next(iter(client.scheduler_info()["workers"]))]
        client.run(warm_up)
        fit["a new Dask worker after client.run(warm_up)"] = timed(
            lambda: client.submit(first_fit, workers=worker).result())

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    import ray
    from ray.util.joblib import register_ray

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             _temp_dir=tempfile.mkdtemp(), log_to_driver=False)
    try:
        register_ray()
        for label in ("first", "second"):
            dataset = embed_ray(extractor, paths, batch_size=256, concurrency=2)
            embed[f"Ray Data 2 x 1: embed_ray, {label} run"] = timed(
                lambda ds=dataset: sum(1 for _ in ds.iter_batches(batch_size=256)))
        with joblib.parallel_backend("ray", n_jobs=2):
            search["Ray 2 x 1, first search"] = run_search(X, y)
            search["Ray 2 x 1, second search"] = run_search(X, y)
    finally:
        ray.shutdown()

    print(f"\n(a) embedding {n} PNG files (64 px, resnet18)")
    print(f"{'':48s} {'seconds':>8s} {'images/s':>9s}")
    for name, seconds in embed.items():
        print(f"{name:48s} {seconds:8.1f} {n / seconds:9.0f}")
    print("\n(b) the examples' search: 2 candidates x 3 folds + a transfer "
          "estimator's 3 folds, 240 images")
    for name, seconds in search.items():
        print(f"{name:48s} {seconds:8.1f}")
    print("\n(c) a first fit (TransferMLPClassifier on digits, 10 epochs), as "
          "seen by the caller")
    for name, seconds in fit.items():
        print(f"{name:48s} {seconds:8.1f}")


if __name__ == "__main__":
    main()
