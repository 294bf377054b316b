"""One fitted model of each shape, for pickle fixtures and exact comparisons.

The shapes a fitted estimator can have: a plain MLP (here with early
stopping, class and sample weights); features, then the head (a frozen image
backbone run once); end to end through a ``layer=`` tap (partly frozen, then
released, with L2-SP); a warm-started transfer from a fitted source (rows
through a backbone); ``partial_fit``; a regressor. ``FIXTURES`` are pickled
into ``tests/data`` with their outputs (``tests/test_pickles.py`` loads them);
``EXTRA`` adds shapes that are only compared between two source trees.

Run from the repository root::

    python tests/model_shapes.py --write-fixtures     # tests/data/core_*.pkl
    python tests/model_shapes.py --dump out.npz       # every output, exactly
    python tests/model_shapes.py --compare ../other   # fit here and with the
                                                      # skxfer of ../other; the
                                                      # outputs must be equal

``--compare`` fits every shape in two processes, one importing this tree's
``skxfer`` and one importing the other tree's, and says which output differs
in any bit.
"""

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
KW = dict(random_state=0, device="cpu")


def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def images():
    X, y = digits()
    return X.reshape(-1, 8, 8).astype(np.float32), y


def cnn():
    with torch.random.fork_rng():
        torch.manual_seed(3)
        return nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(1, 8, 3, padding=1),
            bn1=nn.BatchNorm2d(8),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(8, 8, 3, padding=1),
            relu2=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(2),
            flatten=nn.Flatten(),
            fc=nn.Linear(32, 10),
        ))


# ---- the shapes: name -> (fit() -> (estimator, X for predictions)) -------------


def mlp_early_stopping():
    from skxfer import TransferMLPClassifier

    X, y = digits()
    w = np.where(np.arange(400) % 3 == 0, 2.0, 1.0)
    clf = TransferMLPClassifier((16,), early_stopping=True, n_iter_no_change=3,
                                max_epochs=15, class_weight="balanced", lr=0.01,
                                **KW)
    return clf.fit(X[:400], y[:400], sample_weight=w), X[400:460]


def features_then_head():
    from skxfer import TransferMLPClassifier

    X, y = images()
    clf = TransferMLPClassifier((8,), backbone=cnn(), freeze=True, max_epochs=6,
                                lr=0.01, **KW)
    return clf.fit(X[:200], y[:200]), X[200:260]


def end_to_end_layer():
    from skxfer import PretrainedFeatureExtractor, TransferMLPClassifier

    X, y = images()
    spec = PretrainedFeatureExtractor(cnn(), weights=None, layer="conv2")
    clf = TransferMLPClassifier((8,), backbone=spec, freeze=1, unfreeze_at=2,
                                l2_sp=0.01, backbone_lr_decay=0.5, max_epochs=4,
                                batch_size=32, lr=0.01, **KW)
    return clf.fit(X[:200], y[:200] % 2), X[200:260]


def warm_start():
    from skxfer import TransferMLPClassifier

    X, y = digits()
    source = TransferMLPClassifier((32, 16), max_epochs=5, **KW).fit(X[:300], y[:300])
    clf = TransferMLPClassifier((8,), backbone=source, freeze=False, l2_sp=0.1,
                                warm_start=True, max_epochs=3, **KW)
    clf.fit(X[300:500], y[300:500] % 2)
    clf.set_params(lr=0.01, max_epochs=2).fit(X[300:500], y[300:500] % 2)
    return clf, X[500:560]


def partial_fit():
    from skxfer import TransferMLPClassifier

    X, y = digits()
    clf = TransferMLPClassifier((16,), batch_norm=True, dropout=0.1, **KW)
    clf.partial_fit(X[:200], y[:200], classes=np.arange(10))
    clf.partial_fit(X[200:400], y[200:400])
    return clf, X[400:460]


def regressor():
    from skxfer import TransferMLPRegressor

    X, y = digits()
    reg = TransferMLPRegressor((16,), tol=1e-3, n_iter_no_change=2, max_epochs=30,
                               batch_size=32, **KW)
    return reg.fit(X[:300], y[:300] / 9.0), X[300:360]


# compared between trees only (not pickled)


def lpft_images():
    from skxfer import TransferMLPClassifier

    X, y = images()
    clf = TransferMLPClassifier((8,), backbone=cnn(), freeze=True, unfreeze_at=2,
                                backbone_lr_factor=0.1, max_epochs=4,
                                early_stopping=True, lr=0.01, **KW)
    return clf.fit(X[:200], y[:200]), X[200:260]


def frozen_source_rows():
    from skxfer import TransferMLPRegressor

    X, y = digits()
    source = TransferMLPRegressor((16,), max_epochs=3, **KW).fit(X[:200], y[:200])
    reg = TransferMLPRegressor((4,), backbone=source, max_epochs=4, **KW)
    Y = np.c_[y[200:400], y[200:400] % 3]
    w = np.linspace(0.5, 1.5, 200)
    reg.fit(X[200:400], Y, sample_weight=w)
    reg.set_params(warm_start=True).partial_fit(X[200:300], Y[:100])
    return reg, X[400:460]


def saved_network_file():
    from skxfer import TransferMLPClassifier

    X, y = digits()
    source = TransferMLPClassifier((16,), max_epochs=3, **KW).fit(X[:200], y[:200])
    path = Path(tempfile.mkdtemp()) / "net.pt"
    source.save_network(path)
    clf = TransferMLPClassifier((), backbone=str(path), freeze=False,
                                early_stopping=True, max_epochs=4, **KW)
    return clf.fit(X[200:400], y[200:400] % 3), X[400:460]


def plateau_then_warm_start():
    from skxfer import TransferMLPClassifier

    X, y = digits()
    clf = TransferMLPClassifier((8,), tol=0.5, n_iter_no_change=2, max_epochs=50,
                                warm_start=True, **KW)
    clf.fit(X[:300], y[:300])
    clf.fit(X[:300], y[:300])
    return clf, X[300:360]


def torchvision_named():
    from skxfer import PretrainedFeatureExtractor, TransferMLPClassifier

    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    spec = PretrainedFeatureExtractor("resnet18", weights=None, preprocessing=None)
    clf = TransferMLPClassifier((), backbone=spec, freeze=5, l2_sp=0.1,
                                backbone_lr_decay=0.5, max_epochs=1, **KW)
    return clf.fit(X, np.arange(8) % 2), X[:4]


FIXTURES = OrderedDict(
    mlp_early_stopping=mlp_early_stopping,
    features_then_head=features_then_head,
    end_to_end_layer=end_to_end_layer,
    warm_start=warm_start,
    partial_fit=partial_fit,
    regressor=regressor,
)
EXTRA = OrderedDict(
    lpft_images=lpft_images,
    frozen_source_rows=frozen_source_rows,
    saved_network_file=saved_network_file,
    plateau_then_warm_start=plateau_then_warm_start,
    torchvision_named=torchvision_named,
)


def predictions(est, X):
    """What a fitted model answers: ``predict`` and, for classifiers, probabilities."""
    out = {"predict": np.asarray(est.predict(X))}
    if hasattr(est, "predict_proba"):
        out["predict_proba"] = est.predict_proba(X)
    return out


def fit(name):
    """Fit shape ``name``; ``(estimator, X, whether a ConvergenceWarning came)``."""
    from sklearn.exceptions import ConvergenceWarning

    shapes = {**FIXTURES, **EXTRA}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est, X = shapes[name]()
    warned = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return est, X, warned


def outputs(name):
    """Every output of shape ``name`` to compare exactly, as arrays."""
    est, X, warned = fit(name)
    out = {f"{name}/{k}": v for k, v in predictions(est, X).items()}
    out[f"{name}/convergence_warning"] = np.array(warned)
    for attr in ("loss_curve_", "validation_loss_curve_", "validation_scores_",
                 "best_loss_", "best_validation_loss_", "best_validation_score_",
                 "n_iter_"):
        value = getattr(est, attr)
        out[f"{name}/{attr}"] = np.array(np.nan if value is None else value,
                                         dtype=float)
    for key, tensor in est.module_.state_dict().items():
        out[f"{name}/module.{key}"] = tensor.detach().cpu().numpy()
    loaded = pickle.loads(pickle.dumps(est))
    for k, v in predictions(loaded, X).items():
        out[f"{name}/pickled.{k}"] = v
    return out


def write_fixtures():
    for name in FIXTURES:
        est, X, _ = fit(name)
        with open(DATA / f"core_{name}.pkl", "wb") as f:
            pickle.dump(est, f)
        np.savez(DATA / f"core_{name}_outputs.npz", X=X, **predictions(est, X))
        print("wrote", DATA / f"core_{name}.pkl")


def dump(path):
    result = {}
    for name in {**FIXTURES, **EXTRA}:
        result.update(outputs(name))
    np.savez(path, **result)


def compare(other):
    """Fit every shape with this tree and with ``other``; report any difference."""
    here = HERE.parent
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, tree in enumerate((here, Path(other).resolve())):
            out = Path(tmp) / f"{i}.npz"
            env = dict(os.environ, PYTHONPATH=str(tree))
            subprocess.run([sys.executable, __file__, "--dump", str(out)], env=env,
                           check=True)
            results.append(dict(np.load(out)))
    mine, theirs = results
    differ = sorted(set(mine) ^ set(theirs))
    for key in sorted(set(mine) & set(theirs)):
        a, b = mine[key], theirs[key]
        if a.shape != b.shape or a.dtype != b.dtype or not np.array_equal(
            a, b, equal_nan=a.dtype.kind == "f"
        ):
            differ.append(key)
    print(f"{len(mine)} outputs compared: "
          + ("all equal, bit for bit" if not differ else f"{len(differ)} differ"))
    for key in differ:
        print("  differs:", key)
    return 1 if differ else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-fixtures", action="store_true")
    parser.add_argument("--dump")
    parser.add_argument("--compare")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.write_fixtures:
        write_fixtures()
    if args.dump:
        dump(args.dump)
    if args.compare:
        sys.exit(compare(args.compare))


if __name__ == "__main__":
    main()
