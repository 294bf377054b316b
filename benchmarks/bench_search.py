"""A grid search over a frozen backbone, with and without the feature store.

1,000 random 64x64 RGB images, resnet18 (``weights=None``, ``random_state=0``,
``preprocessing=None`` so images stay 64 px), and
``GridSearchCV(make_pipeline(PretrainedFeatureExtractor(...),
LogisticRegression()), {"logisticregression__C": 10 values}, cv=5)``:

(a) one backbone pass over the images (the floor),
(b) the search with the feature store (skxfer's default for torchvision models),
(c) the search without it (``feature_store=False``: every fold and candidate
    runs the backbone again, as any pipeline does).

Prints wall time, backbone passes per image (counted where the extractor
runs its network) and the store's size. ``--weights`` writes resnet18's
random weights to a state-dict file first and passes its path as
``weights=`` (the search fits 50 times from the file; the peak RSS is shown).

``--user-module`` runs the same over a network of the user's own: a
ResNet-18 written out as a user would (its classes and a helper function in
this file, ``random_state``-free: built under ``torch.manual_seed(0)``),
passed as an ``nn.Module`` with default parameters, and measures what keying
it costs (``skxfer._keys.module_key``: its code, attributes, hooks and 47 MB
of weights, done at every fit) against one pass over the images.

``--compare-ref REF`` runs (b) -- the search with the store -- in fresh
processes against skxfer as it is at git ref ``REF`` and as it is here,
alternately, ``--rounds`` times each, and prints the medians (time, passes,
peak RSS) and their ratio. Run::

    python benchmarks/bench_search.py [--images 1000] [--threads 2] [--skip-plain]
    python benchmarks/bench_search.py --user-module [--skip-plain]
    python benchmarks/bench_search.py --compare-ref main [--weights] [--rounds 3]
"""

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from torch import nn

import skxfer
from skxfer import PretrainedFeatureExtractor

ROWS = [0]


class CountingExtractor(PretrainedFeatureExtractor):
    """Counts the rows its network computes: every forward pass of the
    extractor goes through ``_outputs`` (a hook on ``backbone_`` would build a
    network that a fit from the store does not need)."""

    def _outputs(self, X, *args, **kwargs):
        for out in super()._outputs(X, *args, **kwargs):
            ROWS[0] += len(out)
            yield out


# ---- a network of the user's own: ResNet-18 as a notebook would write it ---------


def conv3x3(n_in, n_out, stride=1):
    return nn.Conv2d(n_in, n_out, 3, stride, 1, bias=False)


class Block(nn.Module):
    def __init__(self, n_in, n_out, stride):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(n_in, n_out, stride), nn.BatchNorm2d(n_out)
        self.conv2, self.bn2 = conv3x3(n_out, n_out), nn.BatchNorm2d(n_out)
        self.down = nn.Identity()
        if stride != 1 or n_in != n_out:
            self.down = nn.Sequential(nn.Conv2d(n_in, n_out, 1, stride, bias=False),
                                      nn.BatchNorm2d(n_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.down(x))


class UserResNet18(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False),
                                  nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, n_in = [], 64
        for n_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [Block(n_in, n_out, stride), Block(n_out, n_out, 1)]
            n_in = n_out
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1)


def user_module():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return UserResNet18().eval()


def extractor(args, weights, feature_store, cls=PretrainedFeatureExtractor):
    """The extractor of the search: resnet18 by name, or the user's module
    with every parameter at its default (but the device and the count)."""
    if args.user_module:
        return cls(user_module(), device="cpu", feature_store=feature_store)
    return cls("resnet18", weights=weights, preprocessing=None, random_state=0,
               device="cpu", feature_store=feature_store)


def keying(X, repeats=5):
    """What keying the user's module costs, against one pass over ``X``:
    ``(key seconds, key CPU seconds, pass seconds, pass CPU seconds)``,
    medians of ``repeats`` runs."""
    from skxfer._keys import module_key

    net = user_module()
    ext = PretrainedFeatureExtractor(net, device="cpu", feature_store=False).fit(X[:1])
    ext.transform(X[:64])  # warm up
    runs = {"key": [], "key_cpu": [], "pass": [], "pass_cpu": []}
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        module_key(net)
        runs["key"].append(time.perf_counter() - start)
        runs["key_cpu"].append(time.process_time() - cpu)
        start, cpu = time.perf_counter(), time.process_time()
        ext.transform(X)
        runs["pass"].append(time.perf_counter() - start)
        runs["pass_cpu"].append(time.process_time() - cpu)
    return tuple(statistics.median(runs[k]) for k in ("key", "key_cpu", "pass",
                                                      "pass_cpu"))


def search(X, y, feature_store, weights, args):
    ext = extractor(args, weights, feature_store, cls=CountingExtractor)
    grid = GridSearchCV(make_pipeline(ext, LogisticRegression(max_iter=200)),
                        {"logisticregression__C": list(np.logspace(-3, 2, 10))},
                        cv=5)
    ROWS[0] = 0
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X, y)
    search.cpu = time.process_time() - cpu  # all threads: steadier when shared
    return time.perf_counter() - start, ROWS[0] / len(X)


def data(n_images):
    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, (n_images, 64, 64, 3), dtype=np.uint8)
    return X, rng.randint(0, 2, n_images)


def weights_file(folder):
    """resnet18's random weights (seed 0) as a state-dict file."""
    import torchvision

    path = os.path.join(folder, "resnet18.pth")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(args):
    """(b) alone, in this process: one JSON line."""
    X, y = data(args.images)
    with tempfile.TemporaryDirectory() as folder:
        weights = weights_file(folder) if args.weights else None
        seconds, passes = search(X, y, "auto", weights, args)
    print(json.dumps({"seconds": seconds, "cpu": search.cpu, "passes": passes,
                      "rss": peak_rss()}))


def compare(args):
    from _compare import interleaved

    forwarded = ["--images", str(args.images), "--threads", str(args.threads)]
    if args.weights:
        forwarded.append("--weights")
    if args.user_module:
        forwarded.append("--user-module")
    results = interleaved(os.path.abspath(__file__), args.compare_ref, forwarded,
                          args.rounds)
    what = "weights from a state-dict file" if args.weights else "weights=None"
    if args.user_module:
        what = "a ResNet-18 module of the user's own"
    print(f"(b) search with the feature store, {args.images} images, {what}, "
          f"{args.threads} threads; median of {args.rounds} interleaved runs, "
          "each in a fresh process")
    print(f"{'':12s} {'seconds':>8s} {'runs':>24s} {'CPU s':>8s} "
          f"{'passes/img':>10s} {'peak RSS MiB':>12s}")
    medians, cpus = {}, {}
    for name, runs in results.items():
        seconds = [r["seconds"] for r in runs]
        medians[name] = statistics.median(seconds)
        cpus[name] = statistics.median(r["cpu"] for r in runs)
        rss = statistics.median(r["rss"] for r in runs) / 2**20
        print(f"{name:12s} {medians[name]:8.2f} "
              f"{' '.join(f'{s:.2f}' for s in seconds):>24s} {cpus[name]:8.2f} "
              f"{statistics.median(r['passes'] for r in runs):10.2f} {rss:12.0f}")
    ref = args.compare_ref
    print(f"this tree / {ref}: {medians['this tree'] / medians[ref]:.3f}x wall "
          f"time, {cpus['this tree'] / cpus[ref]:.3f}x CPU time")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-plain", action="store_true",
                        help="skip (c), which runs the backbone 51 times")
    parser.add_argument("--weights", action="store_true",
                        help="load resnet18's weights from a state-dict file")
    parser.add_argument("--user-module", action="store_true",
                        help="search over a ResNet-18 nn.Module of the user's "
                             "own (default parameters) and time keying it")
    parser.add_argument("--compare-ref", metavar="REF",
                        help="compare (b) with skxfer at git ref REF")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        return child(args)
    if args.compare_ref:
        return compare(args)
    X, y = data(args.images)
    folder = tempfile.TemporaryDirectory()
    weights = weights_file(folder.name) if args.weights else None

    skxfer.clear_feature_store()
    ext = extractor(args, weights, False).fit(X[:1])
    start = time.perf_counter()
    features = ext.transform(X)
    one_pass = time.perf_counter() - start
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        GridSearchCV(LogisticRegression(max_iter=200),
                     {"C": list(np.logspace(-3, 2, 10))}, cv=5).fit(features, y)
    heads = time.perf_counter() - start

    skxfer.clear_feature_store()
    stored_s, stored_passes = search(X, y, "auto", weights, args)
    info = skxfer.feature_store_info()
    rows = [("(a) one backbone pass", one_pass, 1.0),
            ("    + the same search on ready features", one_pass + heads, 1.0),
            ("(b) search, feature store", stored_s, stored_passes)]
    if not args.skip_plain:
        plain_s, plain_passes = search(X, y, False, weights, args)
        rows.append(("(c) search, no store", plain_s, plain_passes))
    model = "a ResNet-18 module of the user's own" if args.user_module else "resnet18"
    print(f"{args.images} images 64x64, {model}, 5 folds x 10 C values, "
          f"{args.threads} threads"
          + (", weights from a state-dict file" if args.weights else ""))
    print(f"{'':44s} {'seconds':>8s} {'passes/img':>10s}")
    for name, seconds, passes in rows:
        print(f"{name:44s} {seconds:8.1f} {passes:10.2f}")
    print(f"store: {info['entries']} images, {info['bytes'] / 2**20:.1f} MiB "
          f"(budget {info['max_bytes'] / 2**20:.0f} MiB); peak RSS "
          f"{peak_rss() / 2**20:.0f} MiB")
    print(f"(b) / (one pass + heads): {stored_s / (one_pass + heads):.2f}")
    if not args.skip_plain:
        print(f"(c) / (b): {plain_s / stored_s:.1f}x")
    if args.user_module:
        key_s, key_cpu, pass_s, pass_cpu = keying(X)
        print(f"keying the module (done at every fit): {key_s * 1e3:.1f} ms "
              f"({key_cpu * 1e3:.1f} ms CPU); one pass over the {len(X)} images: "
              f"{pass_s:.2f} s ({pass_cpu:.2f} s CPU); key / pass: "
              f"{key_s / pass_s:.1%} wall, {key_cpu / pass_cpu:.1%} CPU "
              "(medians of 5)")
    folder.cleanup()


if __name__ == "__main__":
    sys.exit(main())
