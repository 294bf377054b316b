"""Deep domain adaptation on shifted digits: skxfer and skada, side by side.

The protocol: ``load_digits`` split at random in two halves per seed. The
source is one half, 898 labelled images; the target is the other half, shifted
-- ``pixel``: one pixel to the right plus N(0, 0.1) noise; ``contrast``:
x * 0.3 + 0.35 -- of which 449 images, unlabelled, train the adaptation and
450 score it. One network for every method: conv3x3x16 -> ReLU -> maxpool ->
Linear(256, 32) -> ReLU -> Linear(32, 10), its convolution's starting weights
drawn from the seed, Adam at 3e-3, batches of 64 rows per domain, 30 epochs.
The alignment reads the 32 ReLU units.

Rows of the table, target test accuracy, mean ± std over seeds:

- source only (skxfer, ``adaptation='source_only'``);
- skxfer's shallow route: the source network's features (its 32 ReLU units,
  ``PretrainedFeatureExtractor``) -> StandardScaler -> CORAL -> logistic
  regression (``make_da_pipeline``);
- skxfer's CORAL and MCC, each at the weight ``GridSearchCV(scoring=
  CircularValidation(), cv=3)`` picks among ``--coral-weights`` /
  ``--mcc-weights`` on the masked ``y`` (no target label), beside the best
  weight by target labels; and skxfer's label-free choice among all of them,
  source only included;
- with skada installed: skada's DeepCoral, DAN and MCC on the same network,
  chosen the same way by skada's own ``CircularValidation`` (under skada's
  metadata routing, in a process of their own: ``import skada`` switches it
  on for the whole process), beside their best by target labels, and skada's
  label-free choice among them.

Speed: the median time per 1,000 rows (source + target) of a fit, each
library counting the rows its epochs see (skxfer: the labelled rows in whole
batches, paired with as many target rows; skada: its sampler's), at 64 rows
per domain per step, one torch thread each.

Run: ``python benchmarks/bench_deep_da.py [--quick] [--seeds 5]
[--shifts pixel contrast]`` (the full run, skada's part included, took 9
minutes on a shared 2-core machine; ``--quick``: one seed, the pixel shift,
two weights per method, under a minute).
"""

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from collections import OrderedDict

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from torch import nn

EPOCHS, BATCH, LR = 30, 64, 3e-3
N_SOURCE, N_ADAPT = 898, 449
GRIDS = {
    "coral": (1.0, 10.0, 100.0),
    "mcc": (0.3, 1.0, 3.0),
    "DeepCoral": (1.0, 10.0, 100.0),
    "DAN": (0.1, 1.0, 10.0),
    "MCC": (0.3, 1.0, 3.0),
}
QUICK_GRIDS = {"coral": (10.0, 100.0), "mcc": (0.3, 1.0), "DeepCoral": (10.0, 100.0),
               "DAN": (0.1, 1.0), "MCC": (0.3, 1.0)}


def shifted_digits(seed, shift):
    """(X_source, y_source, X_adapt, X_test, y_test): images (N, 8, 8) in [0, 1]."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).reshape(-1, 8, 8).astype(np.float32)
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(X))
    source, target = order[:N_SOURCE], order[N_SOURCE:]
    X_target = X[target].copy()
    if shift == "pixel":
        X_target = np.roll(X_target, 1, axis=2)
        X_target[:, :, 0] = 0.0
        X_target += rng.normal(0.0, 0.1, X_target.shape).astype(np.float32)
    elif shift == "contrast":
        X_target = X_target * 0.3 + 0.35
    else:
        raise ValueError(f"unknown shift {shift!r}")
    return (X[source], y[source], X_target[:N_ADAPT], X_target[N_ADAPT:],
            y[target][N_ADAPT:])


def packed(seed, shift):
    """Source and adaptation rows with the target masked (-1); the test rows."""
    X_s, y_s, X_a, X_test, y_test = shifted_digits(seed, shift)
    return (np.concatenate([X_s, X_a]), np.r_[y_s, np.full(len(X_a), -1)],
            X_test, y_test)


def convolution(seed):
    """The network's convolutional part, its weights drawn from ``seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(OrderedDict(
            conv=nn.Conv2d(1, 16, 3, padding=1), relu=nn.ReLU(),
            pool=nn.MaxPool2d(2), flatten=nn.Flatten()))


def summary(values):
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


# ---- skxfer ----------------------------------------------------------------------


def skxfer_estimator(seed, **params):
    from skxfer import TransferMLPClassifier

    return TransferMLPClassifier(
        (32,), backbone=convolution(seed), freeze=False, lr=LR, batch_size=BATCH,
        max_epochs=EPOCHS, n_iter_no_change=EPOCHS, random_state=seed,
        device="cpu", **params)


def skxfer_rows_seen(n_labelled):
    """Rows (source + target) one skxfer epoch trains on: whole batches."""
    return 2 * max(n_labelled // BATCH, 1) * BATCH


def skada_rows_seen(n_source, n_target):
    """Rows one skada epoch trains on: its ``DomainBalancedSampler`` pairs
    whole batches of each domain, as many as the larger domain has."""
    return 2 * max(n_source - n_source % BATCH, n_target - n_target % BATCH)


def run_skxfer(seed, shift, grids):
    """Target accuracies of skxfer's rows of the table, and fit times."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.preprocessing import StandardScaler

    from skxfer import PretrainedFeatureExtractor
    from skxfer.adapt import CORAL, CircularValidation, make_da_pipeline

    X, y, X_test, y_test = packed(seed, shift)
    candidates = [("source_only", 0.0)] + [
        (method, weight) for method in ("coral", "mcc") for weight in grids[method]]
    accuracy, seconds, models = {}, {}, {}
    for method, weight in candidates:
        estimator = skxfer_estimator(seed, adaptation=method,
                                     adaptation_weight=weight or 1.0)
        start = time.perf_counter()
        models[method, weight] = estimator.fit(X, y)
        seconds[method, weight] = time.perf_counter() - start
        accuracy[method, weight] = estimator.score(X_test, y_test)
    search = GridSearchCV(
        skxfer_estimator(seed),
        [{"adaptation": [m], "adaptation_weight": [w or 1.0]} for m, w in candidates],
        scoring=CircularValidation(), cv=3, refit=False,
    ).fit(X, y)
    cv_score = dict(zip(candidates, search.cv_results_["mean_test_score"],
                        strict=True))
    shallow = make_da_pipeline(
        PretrainedFeatureExtractor(models["source_only", 0.0], device="cpu"),
        StandardScaler(), CORAL(), LogisticRegression(max_iter=2000),
    ).fit(X, y)
    rows = {"source only": accuracy["source_only", 0.0],
            # rows without a domain are target rows
            "shallow: features -> CORAL -> LR": np.mean(
                shallow.predict(X_test) == y_test)}
    for method, name in (("coral", "CORAL"), ("mcc", "MCC")):
        mine = [c for c in candidates if c[0] == method]
        chosen = max(mine, key=cv_score.get)
        best = max(mine, key=accuracy.get)
        rows[name] = (accuracy[chosen], chosen[1], accuracy[best], best[1])
    chosen = max(candidates, key=cv_score.get)
    rows["label-free choice"] = (accuracy[chosen], f"{chosen[0]} {chosen[1]:g}")
    per_1000 = {
        name: [1000 * seconds[c] / (EPOCHS * skxfer_rows_seen(N_SOURCE))
               for c in candidates if c[0] == method]
        for method, name in (("coral", "CORAL"), ("mcc", "MCC"))}
    return rows, per_1000


# ---- skada, in a process of its own -----------------------------------------------


def skada_network(seed):
    """The same network for skada: its module takes ``sample_weight``."""

    class Network(nn.Sequential):
        def forward(self, X, sample_weight=None):
            return super().forward(X)

    layers = OrderedDict(convolution(seed).named_children())
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        hidden, output = nn.Linear(256, 32), nn.Linear(32, 10)
        for linear in (hidden, output):  # skxfer's head starts the same way
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)
    layers.update(hidden=hidden, hidden_relu=nn.ReLU(), output=output)
    return Network(layers)


def skada_worker(seeds, shifts, grids):
    """skada's rows of the table, as JSON on the last line of stdout."""
    import skada  # noqa: F401  (switches metadata routing on)
    from skada.deep import DAN, MCC, DeepCoral
    from skada.metrics import CircularValidation
    from sklearn.model_selection import GridSearchCV

    methods = {"DeepCoral": DeepCoral, "DAN": DAN, "MCC": MCC}
    out = []
    for shift in shifts:
        for seed in seeds:
            X, y, X_test, y_test = packed(seed, shift)
            X, X_test = X[:, None], X_test[:, None]
            domain = np.where(y == -1, -2, 1)
            accuracy, cv_score, per_1000 = {}, {}, {}

            def net(method, weight, seed=seed):
                return methods[method](
                    skada_network(seed), layer_name="hidden_relu", reg=weight,
                    batch_size=BATCH, max_epochs=EPOCHS, lr=LR,
                    optimizer=torch.optim.Adam, train_split=None, device="cpu",
                    verbose=0)

            for method in methods:
                for weight in grids[method]:
                    model = net(method, weight)
                    torch.manual_seed(seed)
                    start = time.perf_counter()
                    model.fit(X, y, sample_domain=domain)
                    elapsed = time.perf_counter() - start
                    rows = skada_rows_seen(N_SOURCE, N_ADAPT)
                    per_1000.setdefault(method, []).append(
                        1000 * elapsed / (EPOCHS * rows))
                    predicted = model.predict(
                        X_test, sample_domain=np.full(len(X_test), -2))
                    accuracy[method, weight] = float(np.mean(predicted == y_test))
                torch.manual_seed(seed)
                search = GridSearchCV(
                    net(method, grids[method][0]), {"criterion__reg": grids[method]},
                    scoring=CircularValidation(), cv=3, refit=False,
                ).fit(X, y, sample_domain=domain)
                for weight, score in zip(grids[method],
                                         search.cv_results_["mean_test_score"],
                                         strict=True):
                    cv_score[method, weight] = float(score)
            out.append({"shift": shift, "seed": seed, "per_1000": per_1000,
                        "accuracy": [[m, w, a] for (m, w), a in accuracy.items()],
                        "cv": [[m, w, s] for (m, w), s in cv_score.items()]})
    print(json.dumps(out))


def run_skada(seeds, shifts, grids, threads):
    """skada's results from a subprocess, or None without skada."""
    import importlib.util

    if importlib.util.find_spec("skada") is None:
        return None
    command = [sys.executable, __file__, "--skada-worker", "--threads",
               str(threads), "--seeds", str(len(seeds)), "--shifts", *shifts,
               "--grids", json.dumps(grids)]
    done = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode:
        raise RuntimeError(f"the skada worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def skada_rows(result):
    accuracy = {(m, w): a for m, w, a in result["accuracy"]}
    cv_score = {(m, w): s for m, w, s in result["cv"]}
    rows = {}
    for method in ("DeepCoral", "DAN", "MCC"):
        mine = [c for c in accuracy if c[0] == method]
        chosen = max(mine, key=cv_score.get)
        best = max(mine, key=accuracy.get)
        rows[method] = (accuracy[chosen], chosen[1], accuracy[best], best[1])
    chosen = max(accuracy, key=cv_score.get)
    rows["label-free choice"] = (accuracy[chosen], f"{chosen[0]} {chosen[1]:g}")
    return rows


# ---- the table ----------------------------------------------------------------------


def print_table(shift, table):
    print(f"\n{shift} shift: target accuracy, mean ± std over seeds "
          "(label-free: chosen by CircularValidation, no target label)")
    print(f"{'method':44s} {'label-free':>16s}  {'weights chosen':20s} "
          f"{'best by target labels':>22s}")
    for name, runs in table.items():
        if isinstance(runs[0], float):
            print(f"{name:44s} {summary(runs):>16s}")
            continue
        label_free = summary([r[0] for r in runs])
        chosen = ", ".join(f"{r[1]:g}" if isinstance(r[1], float) else str(r[1])
                           for r in runs)
        best = ""
        if len(runs[0]) > 2:
            weights = ", ".join(f"{r[3]:g}" for r in runs)
            best = f"{summary([r[2] for r in runs])} (w {weights})"
        print(f"{name:44s} {label_free:>16s}  {chosen:20s} {best:>22s}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--shifts", nargs="+", default=["pixel", "contrast"])
    parser.add_argument("--quick", action="store_true",
                        help="one seed, the pixel shift, two weights per method")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-skada", action="store_true")
    parser.add_argument("--skada-worker", action="store_true",
                        help=argparse.SUPPRESS)
    parser.add_argument("--grids", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    grids = json.loads(args.grids) if args.grids else (
        QUICK_GRIDS if args.quick else GRIDS)
    if args.quick:
        args.seeds, args.shifts = 1, ["pixel"]
    seeds = list(range(args.seeds))
    if args.skada_worker:
        warnings.simplefilter("ignore")
        return skada_worker(seeds, args.shifts, grids)
    print(f"load_digits: {N_SOURCE} labelled source images, {N_ADAPT} unlabelled "
          f"target images to adapt, the rest of the target to score; {args.seeds} "
          f"seed(s), {EPOCHS} epochs, batches of {BATCH} rows per domain, "
          f"{args.threads} torch thread(s)")
    skada = None if args.no_skada else run_skada(seeds, args.shifts, grids,
                                                 args.threads)
    speed = {}
    for shift in args.shifts:
        table = {}
        for seed in seeds:
            with warnings.catch_warnings():  # fixed budgets of epochs
                warnings.simplefilter("ignore", ConvergenceWarning)
                rows, per_1000 = run_skxfer(seed, shift, grids)
            for name, value in rows.items():
                table.setdefault(f"skxfer {name}", []).append(value)
            for name, values in per_1000.items():
                speed.setdefault(f"skxfer {name}", []).extend(values)
        for result in skada or []:
            if result["shift"] != shift:
                continue
            for name, value in skada_rows(result).items():
                table.setdefault(f"skada {name}", []).append(value)
            for name, values in result["per_1000"].items():
                speed.setdefault(f"skada {name}", []).extend(values)
        print_table(shift, table)
    if skada is None and not args.no_skada:
        print("\n(skada is not installed: pip install skada, to compare)")
    print("\nseconds per 1,000 rows (source + target) in training, median of the "
          "fits:")
    for name, values in speed.items():
        print(f"{name:24s} {np.median(values):.4f}")


if __name__ == "__main__":
    main()
