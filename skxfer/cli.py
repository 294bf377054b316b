"""The ``skxfer`` command line (also ``python -m skxfer``).

Every option and every output location is checked before a folder is listed
or an image read; an error is one line on stderr (naming the option) and exit
code 2.
"""

import argparse
import math
import os
import re
import sys
import tempfile


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (the usage is behind ``--help``)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _demo(args):
    """Pretrain on ten digits, transfer to odd vs even; table and PNG."""
    import numpy as np

    from . import _demo
    from .datasets import load_digits_transfer

    smallest = int(np.bincount(load_digits_transfer()[3]).min())
    for n in args.labels:
        if n > smallest:
            raise ValueError(
                f"--labels {n}: the smallest class of the target task has "
                f"{smallest} images; use at most {smallest}."
            )
    plot = not args.no_plot
    if plot:
        _check_output_folder(args.output, f"--output {args.output}")
        try:
            import matplotlib
        except ImportError:
            print('(no picture: matplotlib is missing; pip install "skxfer[plot]")')
            plot = False
    results = _demo.run_demo(
        labels=tuple(args.labels), seeds=args.seeds, device=args.device,
        epochs=args.epochs,
    )
    if plot:
        matplotlib.use("Agg")
        os.makedirs(args.output, exist_ok=True)
        fig = _demo.plot_demo(results)
        path = os.path.join(args.output, "transfer_demo.png")
        fig.savefig(path, dpi=120)
        with open(os.path.join(args.output, "transfer_demo.txt"), "w") as f:
            f.write(_demo.format_table(results) + "\n")
        print(f"wrote {path}")
    return 0


def _extractor(args):
    from ._extract import PretrainedFeatureExtractor

    weights = None if args.weights.lower() == "none" else args.weights
    return PretrainedFeatureExtractor(
        args.model, weights=weights, layer=args.layer, batch_size=args.batch_size,
        num_workers=args.workers, device=args.device, verbose=int(not args.quiet),
    )


def _features(args, paths):
    ext = _extractor(args)
    ext.fit(paths[:1])
    return ext, ext.transform(paths)


_TABLE_SUFFIXES = (".npy", ".parquet", ".csv")

# a whole cell that a spreadsheet reads as a number: -1, +1, -0.5, +2.5e-3
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _safe_cell(value):
    """A CSV cell that a spreadsheet shows and does not run as a formula.

    OWASP's rule for CSV injection: a cell that starts with ``=``, ``@``, a
    tab or a carriage return, or with ``+`` or ``-`` and is not a plain
    number, gets a leading apostrophe. Everything else is written unchanged.
    """
    text = str(value)
    first = text[:1]
    if first in ("=", "@", "\t", "\r") or (
            first in ("+", "-") and not _NUMBER.fullmatch(text)):
        return "'" + text
    return text


def _check_folder(folder, prefix):
    """A folder files can be written in: it exists and takes a new file.

    Writing is tried (a temporary file, gone when closed): permission bits do
    not bind root, and a read-only or virtual file system (``/proc``) keeps
    its bits.
    """
    if os.path.isdir(folder):
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as err:
            raise PermissionError(
                f"{prefix}: cannot write in the folder {folder!r}."
            ) from err
        return
    existing = folder
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(f"{prefix}: {existing!r} is a file, not a folder.")
    raise FileNotFoundError(
        f"{prefix}: the folder {folder!r} does not exist; create it first."
    )


def _check_file(path, prefix, subject=""):
    """A file that can be written: not a folder, in a writable folder."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{prefix}: {subject}is a folder, not a file.")
    _check_folder(os.path.dirname(os.path.abspath(path)), prefix)
    if os.path.isfile(path):
        try:  # opened for appending and closed: the file is not changed
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        except OSError as err:
            raise PermissionError(
                f"{prefix}: {subject}exists and cannot be overwritten."
            ) from err


def _check_output_folder(folder, prefix):
    """A folder that will be made (with its parents) and written in."""
    folder = os.path.abspath(folder)
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(f"{prefix}: is a file, not a folder.")
    existing = folder
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    _check_folder(existing, prefix)


def _check_table_output(path):
    """``-o``: a known format, writable (with its index for .npy), a writer."""
    prefix = f"--output {path}"
    suffix = os.path.splitext(path)[1].lower()
    _check_file(path, prefix)
    if suffix not in _TABLE_SUFFIXES:
        raise ValueError(
            f"{prefix}: unknown format {suffix or '(no suffix)'!r}; "
            f"use one of {', '.join(_TABLE_SUFFIXES)}."
        )
    if suffix == ".npy":
        index = _index_path(path)
        _check_file(index, prefix, f"its index {index} ")
        return suffix
    try:
        import pandas  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f'--output {suffix} needs pandas: pip install "skxfer[pandas]"; or '
            "write .npy."
        ) from err
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            try:
                import fastparquet  # noqa: F401
            except ImportError as err:
                raise ImportError(
                    "--output .parquet needs pyarrow (or fastparquet): pip install "
                    '"skxfer[pandas]"; or write .npy or .csv.'
                ) from err
    return suffix


def _index_path(path):
    return os.path.splitext(path)[0] + ".files.csv"


def _check_model(args):
    """``--model``, ``--layer`` and ``--weights`` (a name or a file), without a
    download."""
    from ._backbones import (
        classification_models,
        did_you_mean,
        is_checkpoint_path,
        resolve_weights,
    )

    names = classification_models()
    if args.model not in names:
        raise ValueError(
            f"--model {args.model}: no such torchvision model."
            f"{did_you_mean(args.model, names)} Any name of "
            "torchvision.models.list_models() works."
        )
    if args.layer is not None:
        _check_layer(args.model, args.layer)
    weights = args.weights
    if weights.lower() == "none":
        return
    if is_checkpoint_path(weights):
        if not os.path.isfile(weights):
            raise FileNotFoundError(
                f"--weights {weights}: no file there; pass DEFAULT, a weights "
                "name, a local .pth file or none."
            )
        return
    try:
        resolve_weights(args.model, weights)
    except ValueError as err:
        from torchvision.models import get_model_weights

        known = ", ".join(get_model_weights(args.model).__members__)
        raise ValueError(
            f"--weights {weights}: not a weights name of {args.model} (those are "
            f"{known}); or pass a local .pth file or none."
        ) from err


def _check_layer(model, layer):
    """``--layer`` among the model's module names (built without memory)."""
    import torch
    from torchvision.models import get_model

    from ._backbones import did_you_mean

    try:
        with torch.device("meta"):  # the architecture only: no weights, no memory
            names = [n for n, _ in get_model(model, weights=None).named_modules()
                     if n]
    except Exception:  # a model that cannot be built this way: fit checks it
        return
    if layer not in names:
        raise ValueError(
            f"--layer {layer}: {model} has no module of that name."
            f"{did_you_mean(layer, names, cutoff=0.5)} The names are those of "
            f"model.named_modules(), e.g. {', '.join(names[:6])}."
        )


def _extract(args):
    """Features of every image of a folder, written with file names (and labels)."""
    import csv

    import numpy as np

    from . import datasets

    out = args.output
    suffix = _check_table_output(out)
    _check_model(args)
    paths, labels = datasets.load_image_folder(args.folder)
    print(f"{len(paths)} images in {args.folder}"
          + (f", {len(set(labels))} classes" if labels else ""), file=sys.stderr)
    _, feats = _features(args, paths)
    if suffix == ".npy":
        with open(out, "wb") as f:  # np.save(name) would append '.npy'
            np.save(f, feats)
        index = _index_path(out)
        with open(index, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "label"] if labels else ["file"])
            for i, path in enumerate(paths):
                row = [path, labels[i]] if labels else [path]
                writer.writerow([_safe_cell(v) for v in row])
        print(f"wrote {out} {feats.shape} and {index}")
        return 0
    import pandas as pd

    df = pd.DataFrame(feats, columns=[f"f{i}" for i in range(feats.shape[1])])
    df.insert(0, "file", paths)
    if labels:
        df.insert(1, "label", labels)
    if suffix == ".parquet":
        df.to_parquet(out, index=False)
    else:
        for column in ("file", "label"):
            if column in df:
                df[column] = df[column].map(_safe_cell)
        df.to_csv(out, index=False)
    print(f"wrote {out} {feats.shape}")
    return 0


def _cv(args):
    """Cross-validate a frozen backbone + logistic regression on a class folder."""
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import classification_report, confusion_matrix
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from . import datasets

    if args.save:
        _check_file(args.save, f"--save {args.save}")
    _check_model(args)
    paths, labels = datasets.load_image_folder(args.folder)
    if labels is None or len(set(labels)) < 2:
        raise ValueError(
            f"cv needs one sub-folder per class (at least two) in {args.folder!r}; "
            "found " + ("a flat folder of images." if labels is None else
                        f"only the class {labels[0]!r}.")
        )
    labels = np.array(labels)
    counts = {str(c): int((labels == c).sum()) for c in np.unique(labels)}
    n_splits = min(args.cv, min(counts.values()))
    if n_splits < 2:
        raise ValueError(
            f"cv needs at least 2 images per class; the counts are {counts}."
        )
    if n_splits < args.cv:
        print(f"--cv lowered from {args.cv} to {n_splits}: the smallest class has "
              f"{n_splits} images.", file=sys.stderr)
    print(f"{len(paths)} images, classes {counts}; {n_splits}-fold "
          "cross-validation", file=sys.stderr)
    # the backbone is frozen: its features do not depend on the fold, so they
    # are computed once and only the classifier is cross-validated
    ext, feats = _features(args, paths)
    head = make_pipeline(StandardScaler(), LogisticRegression(C=args.C,
                                                              max_iter=5000))
    cv = StratifiedKFold(n_splits, shuffle=True, random_state=0)
    pred = cross_val_predict(head, feats, labels, cv=cv)
    classes = list(counts)
    print(classification_report(labels, pred, digits=3, zero_division=0))
    print("confusion matrix (rows: true, columns: predicted)")
    width = max(len(c) for c in classes) + 2
    print(" " * width + "".join(f"{c:>{width}s}" for c in classes))
    for c, row in zip(classes, confusion_matrix(labels, pred, labels=classes),
                      strict=True):
        print(f"{c:>{width}s}" + "".join(f"{v:>{width}d}" for v in row))
    print(f"accuracy {np.mean(pred == labels):.3f}")
    if args.save:
        head.fit(feats, labels)
        model = make_pipeline(ext.set_params(verbose=0), *[s for _, s in head.steps])
        joblib.dump(model, args.save)
        print(f"saved the fitted pipeline to {args.save} (joblib.load it; "
              "model.predict(list_of_image_paths))")
    return 0


def _at_least(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {low}; got {text!r}")
        return value

    return parse


def _positive(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"must be a finite number > 0; got {text!r}")
    return value


def _device(text):
    if text == "auto":
        return text
    import torch

    from ._device import resolve_device

    try:
        kind = torch.device(text).type
    except RuntimeError:
        kind = None
    if kind not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(
            f"must be auto, cpu, cuda, cuda:N or mps; got {text!r}")
    try:
        resolve_device(text)
    except ValueError as err:
        if kind == "mps":
            why = "MPS is not available on this machine; use auto or cpu"
        elif not torch.cuda.is_available():
            why = "CUDA is not available on this machine; use auto or cpu"
        else:
            last = torch.cuda.device_count() - 1
            why = f"this machine has CUDA devices cuda:0 .. cuda:{last}"
        raise argparse.ArgumentTypeError(f"{why}; got {text!r}") from err
    return text


def _add_model_options(parser):
    parser.add_argument("folder", help="images: one sub-folder per class, or flat")
    parser.add_argument("--model", default="resnet18",
                        help="a torchvision model name (default: resnet18)")
    parser.add_argument("--weights", default="DEFAULT",
                        help="DEFAULT, a weights name, a local .pth file or none")
    parser.add_argument("--layer", default=None,
                        help="read this module's output (default: before the head)")
    parser.add_argument("--batch-size", type=_at_least(1), default=32)
    parser.add_argument("--workers", type=_at_least(0), default=None)
    parser.add_argument("--device", type=_device, default="auto",
                        help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser():
    parser = _Parser(
        prog="skxfer",
        description="Transfer learning for scikit-learn users.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="transfer learning vs training from scratch, offline, on digits",
        description="Pretrain on the ten digits of one half of load_digits, then "
        "learn odd vs even on the unseen half from few labels: scratch vs "
        "transferred (frozen, LP-FT), MLP and CNN routes. Prints a table and "
        "writes OUTPUT/transfer_demo.png.",
    )
    demo.add_argument("--labels", type=_at_least(1), nargs="+",
                      default=[5, 10, 20, 50],
                      help="labelled images per class (default: 5 10 20 50)")
    demo.add_argument("--seeds", type=_at_least(1), default=5,
                      help="random draws of the labelled images (default: 5)")
    demo.add_argument("--epochs", type=_at_least(1), default=150)
    demo.add_argument("--device", type=_device, default="auto",
                      help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    demo.add_argument("--output", default="skxfer-demo",
                      help="folder for the PNG and the table (default: skxfer-demo)")
    demo.add_argument("--no-plot", action="store_true",
                      help="print the table only (no matplotlib needed)")
    demo.set_defaults(func=_demo)

    extract = sub.add_parser(
        "extract", help="features of a folder of images, to .npy/.parquet/.csv")
    _add_model_options(extract)
    extract.add_argument("--output", "-o", default="features.npy",
                         help="features.npy (+ features.files.csv), .parquet or "
                         ".csv (default: features.npy)")
    extract.set_defaults(func=_extract)

    cv = sub.add_parser(
        "cv", help="cross-validate a frozen backbone + logistic regression on a "
        "folder of class sub-folders")
    _add_model_options(cv)
    cv.add_argument("--cv", type=_at_least(2), default=5,
                    help="folds, at least 2 (default: 5)")
    cv.add_argument("--C", type=_positive, default=1.0,
                    help="inverse regularisation of the logistic regression, > 0 "
                    "(default: 1.0)")
    cv.add_argument("--save", default=None,
                    help="save the fitted pipeline here with joblib")
    cv.set_defaults(func=_cv)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, ImportError, RuntimeError) as err:
        # what a user can fix (a folder, a file, a name, the network): one line
        message = re.sub(r"\s*\n\s*", " ", str(err).strip())
        print(f"skxfer {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
