"""Prediction speed: one-row latency and batch throughput, side by side.

The same network -- 64 inputs, hidden (256, 256), 10 classes -- as
scikit-learn's ``MLPClassifier`` and as ``skxfer.TransferMLPClassifier`` (both
trained briefly on 4,000 rows of ``make_classification``; the weights do not
change the speed), and a hand-written PyTorch forward of the same layers:

- one-row ``predict_proba`` latency, median over many calls;
- ``predict_proba`` throughput on 100,000 rows.

skxfer predicts each row the same alone or in any batch, bit for bit (rows are
run in blocks of a fixed size). Run::

    python benchmarks/bench_predict.py [--threads 1] [--calls 500]
"""

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from skxfer import TransferMLPClassifier


def latency(fn, calls):
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    X, y = make_classification(4000, 64, n_informative=32, n_classes=10,
                               random_state=0)
    X = X.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = MLPClassifier((256, 256), max_iter=2, random_state=0).fit(X, y)
        sx = TransferMLPClassifier((256, 256), max_epochs=2, random_state=0,
                                   device="cpu").fit(X, y)
    module = sx.module_.eval()

    def hand(rows):
        with torch.inference_mode():
            return torch.softmax(module(torch.from_numpy(rows)), 1).numpy()

    one = X[:1]
    big = np.repeat(X, -(-args.rows // len(X)), axis=0)[: args.rows]
    contestants = [
        ("sklearn MLPClassifier", sk.predict_proba),
        ("hand-written torch forward", hand),
        ("skxfer TransferMLPClassifier", sx.predict_proba),
    ]
    rows = []
    with threadpool_limits(args.threads):
        for name, fn in contestants:
            fn(one)
            fn(big[:1000])  # warm-up
            lat = latency(lambda fn=fn: fn(one), args.calls)
            start = time.perf_counter()
            fn(big)
            rate = len(big) / (time.perf_counter() - start)
            rows.append((name, lat, rate))
    base = rows[0][1]
    print(f"hidden (256, 256), 64 features, 10 classes, {args.threads} thread(s)")
    print(f"{'':32s} {'1-row us':>9s} {'vs sklearn':>10s} {'rows/s':>11s}")
    for name, lat, rate in rows:
        print(f"{name:32s} {lat * 1e6:9.0f} {lat / base:10.2f} {rate:11,.0f}")
    alone = np.vstack([sx.predict_proba(X[i : i + 1]) for i in range(50)])
    together = sx.predict_proba(X[:50])
    print("skxfer rows alone == in a batch, bit for bit:",
          bool(np.array_equal(alone, together)))


if __name__ == "__main__":
    main()
