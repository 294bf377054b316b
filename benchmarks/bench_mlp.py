"""Training speed of the same MLP four ways, side by side.

20,000 x 64 float32 rows from ``make_classification`` (10 classes), hidden
(256, 256), ReLU, Adam with lr 1e-3, 10 epochs, no validation split, at batch
sizes 128 and 32:

(a) a hand-written PyTorch loop (random permutation, tensor indexing),
(b) skorch ``NeuralNetClassifier`` as a user would set it up,
(c) scikit-learn ``MLPClassifier``,
(d) ``skxfer.TransferMLPClassifier``.

Runs are interleaved (a, b, c, d, a, b, ...) so that load from other processes
hits every contestant alike; the table shows the median seconds, the ratio to
(a) and the training accuracy. Run::

    python benchmarks/bench_mlp.py [--repeats 5] [--threads 2]
        [--batch-sizes 128 32] [--contestants a b c d]
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
from skorch import NeuralNetClassifier
from threadpoolctl import threadpool_limits
from torch import nn

from skxfer import TransferMLPClassifier

N_SAMPLES, N_FEATURES, N_CLASSES = 20_000, 64, 10
HIDDEN, LR, EPOCHS = (256, 256), 1e-3, 10


def make_module():
    return nn.Sequential(
        nn.Linear(N_FEATURES, HIDDEN[0]),
        nn.ReLU(),
        nn.Linear(HIDDEN[0], HIDDEN[1]),
        nn.ReLU(),
        nn.Linear(HIDDEN[1], N_CLASSES),
    )


def hand_loop(X, y, batch_size):
    torch.manual_seed(0)
    model = make_module()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    model.train()
    for _ in range(EPOCHS):
        perm = torch.randperm(len(Xt))
        for start in range(0, len(Xt), batch_size):
            idx = perm[start : start + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    model.eval()
    with torch.inference_mode():
        pred = model(Xt).argmax(1).numpy()
    return (pred == y).mean()


def skorch_net(X, y, batch_size):
    torch.manual_seed(0)
    net = NeuralNetClassifier(
        make_module,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=LR,
        max_epochs=EPOCHS,
        batch_size=batch_size,
        train_split=None,
        iterator_train__shuffle=True,
        verbose=0,
    )
    net.fit(X, y)
    return (net.predict(X) == y).mean()


def sklearn_mlp(X, y, batch_size):
    clf = MLPClassifier(
        HIDDEN,
        solver="adam",
        learning_rate_init=LR,
        batch_size=batch_size,
        max_iter=EPOCHS,
        tol=0.0,
        n_iter_no_change=EPOCHS + 1,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    return clf.score(X, y)


def skxfer_mlp(X, y, batch_size):
    clf = TransferMLPClassifier(
        HIDDEN,
        activation="relu",
        optimizer="adam",
        lr=LR,
        batch_size=batch_size,
        max_epochs=EPOCHS,
        random_state=0,
        device="cpu",
    )
    with warnings.catch_warnings():  # a fixed 10 epochs, as for the others
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    return clf.score(X, y)


CONTESTANTS = [
    ("(a) hand-written PyTorch loop", hand_loop),
    ("(b) skorch NeuralNetClassifier", skorch_net),
    ("(c) sklearn MLPClassifier", sklearn_mlp),
    ("(d) skxfer TransferMLPClassifier", skxfer_mlp),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 32])
    parser.add_argument("--contestants", nargs="+", default=["a", "b", "c", "d"],
                        choices=["a", "b", "c", "d"],
                        help="which to run ((a) always: the ratios are to it)")
    args = parser.parse_args(argv)
    chosen = set(args.contestants) | {"a"}
    contestants = [c for c in CONTESTANTS if c[0][1] in chosen]

    torch.set_num_threads(args.threads)
    X, y = make_classification(
        N_SAMPLES,
        N_FEATURES,
        n_informative=32,
        n_classes=N_CLASSES,
        random_state=0,
    )
    X, y = X.astype(np.float32), y.astype(np.int64)
    # numpy's BLAS (scikit-learn's MLP) gets the same number of threads
    threadpool_limits(args.threads)

    print(
        f"{N_SAMPLES} x {N_FEATURES} float32, {N_CLASSES} classes, hidden {HIDDEN}, "
        f"Adam lr={LR}, {EPOCHS} epochs, {args.threads} threads, "
        f"median of {args.repeats}"
    )
    for batch_size in args.batch_sizes:
        times = {name: [] for name, _ in contestants}
        accs = {}
        for fn in (f for _, f in contestants):  # warm-up, untimed
            fn(X[:2000], y[:2000], batch_size)
        for _ in range(args.repeats):
            for name, fn in contestants:
                start = time.perf_counter()
                accs[name] = fn(X, y, batch_size)
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times[contestants[0][0]])
        print(f"\nbatch_size={batch_size}")
        print(f"{'':36s} {'median s':>9s} {'ratio to (a)':>13s} {'train acc':>10s}")
        for name, _ in contestants:
            med = statistics.median(times[name])
            print(f"{name:36s} {med:9.2f} {med / base:13.2f} {accs[name]:10.3f}")


if __name__ == "__main__":
    main()
