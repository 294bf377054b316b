"""Mixed-precision training on the CPU: accuracy and time per epoch, side by side.

Each workload is trained with ``mixed_precision=False`` (float32) and
``mixed_precision="bf16"`` (bfloat16 autocast), alternately, ``--threads``
torch threads:

(a) the digits transfer test: a small CNN pretrained on the ten classes of
    one half of ``load_digits``, then fine-tuned (LP-FT: head first, the whole
    network from epoch 50) to odd vs even on the other half with 10 labels
    per class; test accuracy on the rest, the mean over ``--seeds`` seeds,
    and the median seconds per epoch (skorch's ``history[:, 'dur']``) of the
    unfrozen phase, where the backbone trains;
(b) torchvision ``resnet18`` (weights=None) fine-tuned end to end
    (``freeze=False``) on ``--images`` random 64x64 images: median seconds
    per epoch.

Whether bfloat16 is faster on a CPU depends on its instructions (AVX512-BF16,
AMX); on CUDA, mixed precision is where it pays. Run::

    python benchmarks/bench_precision.py [--seeds 5] [--images 128] [--threads 2]
    python benchmarks/bench_precision.py --quick
"""

import argparse
import statistics
import time
import warnings
from collections import OrderedDict

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from torch import nn
from torchvision.models import resnet18
from torchvision.transforms import v2

from skxfer import PretrainedFeatureExtractor, TransferMLPClassifier

SETTINGS = (False, "bf16")


def cnn():
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(1, 16, 3, padding=1), relu=nn.ReLU(),
        conv2=nn.Conv2d(16, 32, 3, padding=1), relu2=nn.ReLU(),
        pool=nn.MaxPool2d(2), flatten=nn.Flatten()))


def few_labels(y, per_class, seed):
    rng = np.random.RandomState(seed)
    picked = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), per_class, replace=False)
         for c in np.unique(y)])
    return picked, np.setdiff1d(np.arange(len(y)), picked)


def digits_transfer(seeds):
    """{setting: (mean accuracy, median s/epoch unfrozen)} of (a)."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).reshape(-1, 8, 8).astype(np.float32)
    src_X, tgt_X, src_y, tgt_y = train_test_split(
        X, y, test_size=0.5, random_state=0, stratify=y)
    torch.manual_seed(0)
    pre = TransferMLPClassifier((64,), backbone=cnn(), freeze=False, lr=0.01,
                                max_epochs=30, batch_size=64, random_state=0,
                                device="cpu").fit(src_X, src_y)
    task = tgt_y % 2
    scores = {s: [] for s in SETTINGS}
    epochs = {s: [] for s in SETTINGS}
    for seed in range(seeds):
        labelled, rest = few_labels(task, 10, seed)
        for setting in SETTINGS:  # alternately, so that load hits both alike
            model = TransferMLPClassifier(
                (), backbone=pre, freeze=True, unfreeze_at=50,
                backbone_lr_factor=0.1, lr=0.01, max_epochs=100,
                random_state=seed, device="cpu", mixed_precision=setting,
            ).fit(tgt_X[labelled], task[labelled])
            scores[setting].append(model.score(tgt_X[rest], task[rest]))
            epochs[setting].extend(model.net_.history[50:, "dur"])
    return {s: (float(np.mean(scores[s])), statistics.median(epochs[s]))
            for s in SETTINGS}


def resnet_fine_tuning(n_images, max_epochs):
    """{setting: median s/epoch} of (b)."""
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (n_images, 64, 64, 3), dtype=np.uint8)
    y = np.arange(n_images) % 2
    prep = v2.Compose([v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    durations = {s: [] for s in SETTINGS}
    for setting in SETTINGS:
        ext = PretrainedFeatureExtractor(resnet18(weights=None), weights=None,
                                         preprocessing=prep, device="cpu")
        clf = TransferMLPClassifier((), backbone=ext, freeze=False,
                                    max_epochs=max_epochs, batch_size=32,
                                    random_state=0, device="cpu",
                                    mixed_precision=setting)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(images, y)
        durations[setting] = list(clf.net_.history[1:, "dur"])  # past warm-up
    return {s: statistics.median(d) for s, d in durations.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true",
                        help="2 seeds, 32 images, 3 epochs: checks it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.images, args.epochs = 2, 32, 3
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    digits = digits_transfer(args.seeds)
    resnet = resnet_fine_tuning(args.images, args.epochs)
    print(f"CPU, {args.threads} threads ({time.perf_counter() - start:.0f} s in all)")
    print(f"{'':56s} {'float32':>9s} {'bf16':>9s} {'ratio':>6s}")
    rows = [
        (f"(a) digits transfer, accuracy (mean of {args.seeds} seeds)",
         digits[False][0], digits["bf16"][0], "{:9.4f}"),
        ("(a) digits transfer, s/epoch unfrozen (median)",
         digits[False][1], digits["bf16"][1], "{:9.4f}"),
        (f"(b) resnet18 end to end, {args.images} images 64px, s/epoch",
         resnet[False], resnet["bf16"], "{:9.3f}"),
    ]
    for name, f32, bf16, fmt in rows:
        print(f"{name:56s} {fmt.format(f32)} {fmt.format(bf16)} {bf16 / f32:6.2f}")


if __name__ == "__main__":
    main()
