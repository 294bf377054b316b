"""The ``skxfer`` command line (also ``python -m skxfer``)."""

import argparse
import sys


def _demo(args):
    """Pretrain on ten digits, transfer to odd vs even; table and PNG."""
    import os

    from ._demo import format_table, plot_demo, run_demo

    results = run_demo(
        labels=tuple(args.labels), seeds=args.seeds, device=args.device,
        epochs=args.epochs,
    )
    if not args.no_plot:
        try:
            import matplotlib
        except ImportError:
            print('(no picture: matplotlib is missing; pip install "skxfer[plot]")')
            return 0
        matplotlib.use("Agg")
        os.makedirs(args.output, exist_ok=True)
        fig = plot_demo(results)
        path = os.path.join(args.output, "transfer_demo.png")
        fig.savefig(path, dpi=120)
        with open(os.path.join(args.output, "transfer_demo.txt"), "w") as f:
            f.write(format_table(results) + "\n")
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


def _safe_cell(value):
    """A CSV cell that a spreadsheet will not run as a formula."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _check_output(path, option, suffixes=None):
    """Refuse an output path before any work: a missing folder, a bad suffix."""
    import os

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"{option} {path}: the folder {folder!r} does not exist; create it "
            "first."
        )
    if suffixes is not None:
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in suffixes:
            raise ValueError(
                f"{option} {path}: unknown format {suffix or '(no suffix)'!r}; "
                f"use one of {', '.join(suffixes)}."
            )


def _extract(args):
    """Features of every image of a folder, written with file names (and labels)."""
    import csv
    import os

    import numpy as np

    from .datasets import load_image_folder

    out = args.output
    _check_output(out, "--output", _TABLE_SUFFIXES)
    suffix = os.path.splitext(out)[1].lower()
    if suffix != ".npy":
        _require_pandas(suffix)
    paths, labels = load_image_folder(args.folder)
    print(f"{len(paths)} images in {args.folder}"
          + (f", {len(set(labels))} classes" if labels else ""), file=sys.stderr)
    _, feats = _features(args, paths)
    if suffix == ".npy":
        with open(out, "wb") as f:  # np.save(name) would append '.npy'
            np.save(f, feats)
        index = os.path.splitext(out)[0] + ".files.csv"
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


def _require_pandas(suffix):
    try:
        import pandas  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"Writing {suffix} needs pandas (and pyarrow for .parquet): "
            'pip install "skxfer[pandas]"; or write .npy.'
        ) from err


def _cv(args):
    """Cross-validate a frozen backbone + logistic regression on a class folder."""
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import classification_report, confusion_matrix
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .datasets import load_image_folder

    if args.save:
        _check_output(args.save, "--save")
    paths, labels = load_image_folder(args.folder)
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
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser():
    parser = argparse.ArgumentParser(
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
    demo.add_argument("--labels", type=int, nargs="+", default=[5, 10, 20, 50],
                      help="labelled images per class (default: 5 10 20 50)")
    demo.add_argument("--seeds", type=int, default=5,
                      help="random draws of the labelled images (default: 5)")
    demo.add_argument("--epochs", type=int, default=150)
    demo.add_argument("--device", default="auto")
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
    cv.add_argument("--C", type=float, default=1.0,
                    help="inverse regularisation of the logistic regression")
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
        print(f"skxfer {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
