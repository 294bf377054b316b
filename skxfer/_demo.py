"""The transfer-learning demo behind ``python -m skxfer demo``.

Source task: the ten digit classes on one half of scikit-learn's ``load_digits``
(offline). Target task: odd vs even on the other, unseen half, with only a few
labelled images per class. Transfer helps here: the digit identity learned on
the source makes parity easy. (Pretraining on digits 0-4 and transferring to
5-9 would hurt instead: see tests/test_transfer.py.)

Every method is scored on the unlabelled rest of the target half, over several
random draws of the labelled images (repeated random sub-sampling
validation), for each number of labels per class.
"""

import time
import warnings
from collections import OrderedDict

import numpy as np

# method name -> (route, how it is built)
TABULAR = "tabular"
IMAGES = "images"


def _cnn(seed=0):
    """A small CNN for 8x8 images; ``seed`` fixes its initial weights."""
    import torch
    from torch import nn

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(1, 16, 3, padding=1),
                relu=nn.ReLU(),
                conv2=nn.Conv2d(16, 32, 3, padding=1),
                relu2=nn.ReLU(),
                pool=nn.MaxPool2d(2),
                flatten=nn.Flatten(),
            )
        )


def pretrain(src_X, src_y, device="auto", epochs=60):
    """The two source networks: an MLP on pixels and a CNN on images."""
    from sklearn.exceptions import ConvergenceWarning

    from ._estimators import TransferMLPClassifier

    with warnings.catch_warnings():
        # a fixed budget of epochs, not a fit to convergence
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = TransferMLPClassifier(
            (128, 64), max_epochs=epochs, lr=3e-3, batch_size=64, random_state=0,
            device=device,
        ).fit(src_X.reshape(len(src_X), -1), src_y)
        cnn = TransferMLPClassifier(
            (64,), backbone=_cnn(), freeze=False, max_epochs=max(epochs // 2, 1),
            lr=0.01, batch_size=64, random_state=0, device=device,
        ).fit(src_X, src_y)
    return mlp, cnn


def methods(mlp, cnn, device="auto", epochs=150, seed=0):
    """``{name: (route, estimator)}``: the contestants, unfitted."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline

    from ._estimators import TransferMLPClassifier
    from ._extract import PretrainedFeatureExtractor

    # weight decay 0.1 regularises like LogisticRegression's default C=1 does
    # on 10-100 samples; the same for scratch and transferred networks
    common = dict(lr=0.01, max_epochs=epochs, weight_decay=0.1, random_state=seed,
                  device=device)
    lpft = dict(unfreeze_at=epochs * 2 // 3, backbone_lr_factor=0.1)
    return OrderedDict(
        [
            ("logistic regression, pixels",
             (TABULAR, LogisticRegression(max_iter=2000))),
            ("sklearn MLPClassifier, scratch",
             (TABULAR, MLPClassifier((128, 64), max_iter=epochs,
                                     learning_rate_init=0.01, random_state=seed))),
            ("skxfer MLP, scratch",
             (TABULAR, TransferMLPClassifier((128, 64), **common))),
            ("MLP features + logistic regression",
             (TABULAR, make_pipeline(
                 PretrainedFeatureExtractor(mlp, weights=None, device=device),
                 LogisticRegression(max_iter=2000)))),
            ("skxfer MLP, pretrained LP-FT",
             (TABULAR, TransferMLPClassifier((), backbone=mlp, **common, **lpft))),
            ("skxfer CNN, scratch",
             (IMAGES, TransferMLPClassifier((), backbone=_cnn(seed), freeze=False,
                                            **common))),
            ("CNN features + logistic regression",
             (IMAGES, make_pipeline(
                 PretrainedFeatureExtractor(cnn, weights=None, device=device),
                 LogisticRegression(max_iter=2000)))),
            ("skxfer CNN, pretrained LP-FT",
             (IMAGES, TransferMLPClassifier((), backbone=cnn, **common, **lpft))),
        ]
    )


def run_demo(labels=(5, 10, 20, 50), seeds=5, device="auto", epochs=150,
             verbose=True):
    """Run the comparison; return ``{method: {labels: [scores per seed]}}``."""
    from .datasets import load_digits_transfer, sample_per_class

    start = time.perf_counter()
    src_X, src_y, tgt_X, tgt_y = load_digits_transfer(images=True)
    if verbose:
        print(f"source: {len(src_X)} digit images, 10 classes; target: odd vs "
              f"even on {len(tgt_X)} unseen images, labels per class "
              f"{list(labels)}, {seeds} draws each")
    mlp, cnn = pretrain(src_X, src_y, device=device)
    flat = tgt_X.reshape(len(tgt_X), -1)
    results = OrderedDict()
    for n in labels:
        for seed in range(seeds):
            labelled, rest = sample_per_class(tgt_y, n, random_state=seed)
            for name, (route, est) in methods(mlp, cnn, device, epochs,
                                              seed).items():
                X = flat if route == TABULAR else tgt_X
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # sklearn's ConvergenceWarning
                    est.fit(X[labelled], tgt_y[labelled])
                score = est.score(X[rest], tgt_y[rest])
                results.setdefault(name, OrderedDict()).setdefault(n, []).append(
                    score
                )
    if verbose:
        print(format_table(results))
        print(f"({time.perf_counter() - start:.0f} s)")
    return results


def format_table(results):
    """A text table: one row per method, mean ± std accuracy per label count."""
    label_counts = list(next(iter(results.values())))
    head = f"{'method':38s}" + "".join(
        f"{f'{n} labels/class':>17s}" for n in label_counts
    )
    lines = [head, "-" * len(head)]
    for name, by_n in results.items():
        cells = "".join(
            f"{np.mean(by_n[n]):>10.3f} ± {np.std(by_n[n]):.3f}" for n in label_counts
        )
        lines.append(f"{name:38s}{cells}")
    return "\n".join(lines)


def plot_demo(results, ax=None):
    """Accuracy against labels per class, one line per method (matplotlib)."""
    from .plotting import _pyplot

    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 5))
    for name, by_n in results.items():
        ns = list(by_n)
        means = np.array([np.mean(by_n[n]) for n in ns])
        stds = np.array([np.std(by_n[n]) for n in ns])
        style = "-" if ("pretrained" in name or "features" in name) else "--"
        (line,) = ax.plot(ns, means, style, marker="o", label=name)
        ax.fill_between(ns, means - stds, means + stds, alpha=0.05,
                        color=line.get_color())
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    ax.set_xlabel("labelled images per class (target task)")
    ax.set_ylabel("accuracy on the unlabelled rest")
    ax.set_title("Transfer from ten digits to odd vs even (dashed: from scratch)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.figure.tight_layout()
    return ax.figure
