"""Training time of a frozen pretrained backbone + new head, side by side.

resnet18 (weights=None) on ``--images`` random 64x64 uint8 images, a linear
head, 10 epochs of Adam, ``--threads`` torch threads:

(a) a hand-written loop: features computed once under ``inference_mode``, then
    the head trained on them,
(b) ``TransferMLPClassifier(backbone=..., freeze=True)`` -- skxfer caches the
    frozen backbone's features the same way,
(c) the same network with every backbone parameter frozen by pattern
    (``freeze=["*"]``), which runs the backbone in every epoch, as skorch's
    ``Freezer`` alone would.

Run: ``python benchmarks/bench_transfer.py [--images 128] [--repeats 3]``.
"""

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from torch import nn
from torchvision.models import resnet18
from torchvision.transforms import v2

from skxfer import PretrainedFeatureExtractor, TransferMLPClassifier

EPOCHS, BATCH = 10, 32


def preprocessing():
    return v2.Compose([
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])


def hand_loop(images, y):
    torch.manual_seed(0)
    model = resnet18(weights=None)
    model.fc = nn.Identity()
    model.eval()
    prep = preprocessing()
    with torch.inference_mode():
        feats = torch.cat([
            model(prep(torch.from_numpy(images[i : i + BATCH]).permute(0, 3, 1, 2)))
            for i in range(0, len(images), BATCH)
        ])
    head = nn.Linear(feats.shape[1], 2)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    yt = torch.from_numpy(y)
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(feats)).split(BATCH):
            opt.zero_grad()
            nn.functional.cross_entropy(head(feats[idx]), yt[idx]).backward()
            opt.step()


def skxfer_fit(freeze):
    def fit(images, y):
        ext = PretrainedFeatureExtractor(
            resnet18(weights=None), weights=None, preprocessing=preprocessing(),
            batch_size=BATCH, device="cpu",
        )
        clf = TransferMLPClassifier(
            (), backbone=ext, freeze=freeze, max_epochs=EPOCHS, batch_size=BATCH,
            random_state=0, device="cpu",
        )
        with warnings.catch_warnings():  # a fixed 10 epochs, as for (a)
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(images, y)

    return fit


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (args.images, 64, 64, 3), dtype=np.uint8)
    y = np.arange(args.images) % 2
    contestants = [
        ("(a) hand-written: features once, then head", hand_loop),
        ("(b) skxfer freeze=True (features cached)", skxfer_fit(True)),
        ('(c) skxfer freeze=["*"] (backbone each epoch)', skxfer_fit(["*"])),
    ]
    times = {name: [] for name, _ in contestants}
    for _ in range(args.repeats):
        for name, fn in contestants:
            start = time.perf_counter()
            fn(images, y)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times[contestants[0][0]])
    print(f"resnet18, {args.images} images 64x64, linear head, {EPOCHS} epochs, "
          f"{args.threads} threads, median of {args.repeats}")
    print(f"{'':48s} {'seconds':>8s} {'vs (a)':>7s}")
    for name, _ in contestants:
        med = statistics.median(times[name])
        print(f"{name:48s} {med:8.2f} {med / base:7.2f}")


if __name__ == "__main__":
    main()
