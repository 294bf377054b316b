"""The command line: demo, extract, cv; and the plots."""

from pathlib import Path

import joblib
import matplotlib
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from skxfer import TransferMLPClassifier
from skxfer._demo import plot_demo, run_demo
from skxfer.cli import main
from skxfer.plotting import plot_history

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """24 digit images (zeros and ones) as 16x16 RGB PNGs in class sub-folders."""
    root = tmp_path_factory.mktemp("digits")
    X, y = load_digits(n_class=2, return_X_y=True)
    for cls in (0, 1):
        (root / f"digit{cls}").mkdir()
        for i in np.flatnonzero(y == cls)[:12]:
            img = (X[i].reshape(8, 8) * 16).clip(0, 255).astype(np.uint8)
            Image.fromarray(img).resize((16, 16)).convert("RGB").save(
                root / f"digit{cls}" / f"{i}.png"
            )
    return root


FAST_MODEL = ["--model", "resnet18", "--weights", "none", "--quiet",
              "--batch-size", "8"]


def test_extract_to_npy_and_csv(image_folder, tmp_path, capsys):
    out = tmp_path / "feats.npy"
    assert main(["extract", str(image_folder), "-o", str(out), *FAST_MODEL]) == 0
    feats = np.load(out)
    assert feats.shape == (24, 512)
    index = (tmp_path / "feats.files.csv").read_text().splitlines()
    assert index[0] == "file,label" and len(index) == 25
    assert index[1].endswith(",digit0") and "digit0" in index[1].split(",")[0]
    pd = pytest.importorskip("pandas")
    csv = tmp_path / "feats.csv"
    assert main(["extract", str(image_folder / "digit1"), "-o", str(csv),
                 *FAST_MODEL]) == 0
    df = pd.read_csv(csv)
    assert df.shape == (12, 1 + 512) and list(df.columns[:2]) == ["file", "f0"]
    np.testing.assert_allclose(df.iloc[:, 1:].to_numpy(), feats[12:], atol=1e-4)


def test_cv_prints_scores_and_saves_a_loadable_model(image_folder, tmp_path,
                                                     capsys):
    model_path = tmp_path / "model.joblib"
    code = main(["cv", str(image_folder), "--cv", "3", "--save", str(model_path),
                 *FAST_MODEL])
    out = capsys.readouterr().out
    assert code == 0
    assert "precision" in out and "digit0" in out and "digit1" in out
    assert "confusion matrix" in out
    accuracy = float(out.split("accuracy ")[-1].split()[0])
    assert accuracy > 0.8  # random resnet18 features still separate 0 from 1
    model = joblib.load(model_path)
    files = sorted(str(p) for p in (image_folder / "digit1").glob("*.png"))
    assert (model.predict(files) == "digit1").mean() > 0.8


def test_cli_errors_are_one_line_and_non_zero(image_folder, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["extract", str(empty), *FAST_MODEL]) == 2
    assert "error: No images found in" in capsys.readouterr().err
    assert main(["extract", str(tmp_path / "nowhere"), *FAST_MODEL]) == 2
    assert "error: No folder at" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    Image.new("RGB", (8, 8)).save(broken / "a.png")
    (broken / "b.png").write_bytes(b"not an image")
    assert main(["extract", str(broken), *FAST_MODEL]) == 2
    err = capsys.readouterr().err
    assert "error: Could not read image 1" in err and "b.png" in err
    assert main(["extract", str(image_folder), "--model", "resnet181",
                 "--weights", "none", "--quiet"]) == 2
    assert "Did you mean 'resnet18'" in capsys.readouterr().err
    assert main(["cv", str(image_folder / "digit0"), *FAST_MODEL]) == 2
    assert "cv needs one sub-folder per class" in capsys.readouterr().err


def test_offline_weights_error_in_the_cli(image_folder, monkeypatch, tmp_path,
                                          capsys):
    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    assert main(["extract", str(image_folder), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "TORCH_HOME" in err and str(tmp_path) in err


def test_demo_small_writes_table_and_png(tmp_path, capsys):
    code = main(["demo", "--labels", "5", "10", "--seeds", "1", "--epochs", "20",
                 "--output", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "5 labels/class" in out and "skxfer CNN, pretrained LP-FT" in out
    assert (tmp_path / "transfer_demo.png").stat().st_size > 10_000
    assert "MLP features + logistic regression" in (
        tmp_path / "transfer_demo.txt").read_text()


def test_demo_plot_has_the_expected_axes_and_series():
    results = {
        "skxfer MLP, scratch": {5: [0.7, 0.72], 10: [0.8, 0.82]},
        "CNN features + logistic regression": {5: [0.8, 0.81], 10: [0.9, 0.9]},
    }
    fig = plot_demo(results)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "labelled images per class (target task)"
    assert ax.get_ylabel() == "accuracy on the unlabelled rest"
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == list(results)
    np.testing.assert_allclose(lines[1].get_ydata(), [0.805, 0.9])
    assert lines[0].get_linestyle() == "--" and lines[1].get_linestyle() == "-"


def test_demo_transfer_beats_scratch_at_few_labels():
    # the demo's own claim, at its smallest label count (5 per class), 2 draws
    results = run_demo(labels=(5,), seeds=2, epochs=60, verbose=False)
    best_scratch = max(np.mean(results[m][5]) for m in results if "scratch" in m
                       or m == "logistic regression, pixels")
    assert np.mean(results["CNN features + logistic regression"][5]) > best_scratch
    assert np.mean(results["MLP features + logistic regression"][5]) > best_scratch


def test_plot_history_marks_unfreezing():
    X, y = load_digits(return_X_y=True)
    source = TransferMLPClassifier((16,), max_epochs=5, random_state=0).fit(X, y)
    clf = TransferMLPClassifier(
        (), backbone=source, unfreeze_at=3, max_epochs=6, early_stopping=True,
        random_state=0,
    ).fit(X, y % 2)
    ax = plot_history(clf)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["training loss", "validation loss",
                      "backbone unfrozen after epoch 3"]
    assert list(ax.get_lines()[0].get_xdata()) == [1, 2, 3, 4, 5, 6]
    with pytest.raises(TypeError, match="plot_history needs a fitted"):
        from sklearn.linear_model import LogisticRegression

        plot_history(LogisticRegression(max_iter=5000).fit(X / 16, y))


# ---- a folder is taken whole, or refused ------------------------------------------


def save_pngs(folder, n, shade=0):
    """``n`` 8x8 RGB PNGs named 0.png, 1.png, ... in ``folder`` (made if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.full((8, 8, 3), (shade + 37 * i) % 256, np.uint8)
        Image.fromarray(img).save(folder / f"{i}.png")
    return folder


def index_rows(npy):
    """The rows of the index written beside ``npy`` (without the header)."""
    import csv

    with open(npy.with_name(npy.stem + ".files.csv"), newline="") as f:
        return list(csv.reader(f))


def one_error_line(err, command="extract"):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"skxfer {command}: error: "), err
    return lines[0]


def test_a_mixed_layout_is_refused_in_one_line(tmp_path, capsys):
    photos = save_pngs(tmp_path / "photos", 6)
    save_pngs(photos / "thumbs", 2)
    out = tmp_path / "f.npy"
    assert main(["extract", str(photos), "-o", str(out), *FAST_MODEL]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert (f"{str(photos)!r} mixes layouts: 6 images at its top level and 2 in 1 "
            "sub-folder (thumbs/: 2)") in line
    assert "not both" in line
    assert not out.exists()
    assert main(["cv", str(photos), *FAST_MODEL]) == 2
    assert "mixes layouts" in one_error_line(capsys.readouterr().err, "cv")


def test_images_in_nested_folders_of_a_class_are_taken(tmp_path, capsys):
    root = tmp_path / "photos"
    save_pngs(root / "cat", 2)
    save_pngs(root / "cat" / "kittens", 3)
    save_pngs(root / "dog", 1)
    save_pngs(root / ".cache", 4)  # hidden folders are not classes
    out = tmp_path / "f.npy"
    assert main(["extract", str(root), "-o", str(out), *FAST_MODEL]) == 0
    rows = index_rows(out)[1:]
    assert [r[1] for r in rows] == ["cat"] * 5 + ["dog"]
    assert [r[0] for r in rows][:5] == [
        str(root / "cat" / n) for n in
        ("0.png", "1.png", "kittens/0.png", "kittens/1.png", "kittens/2.png")]
    assert np.load(out).shape == (6, 512)
    assert "6 images in" in capsys.readouterr().err


def test_a_symlink_loop_is_not_followed(tmp_path, capsys):
    flat = save_pngs(tmp_path / "flat", 4)
    (flat / "loop").symlink_to(".", target_is_directory=True)
    (flat / "up").symlink_to("..", target_is_directory=True)
    out = tmp_path / "flat.npy"
    assert main(["extract", str(flat), "-o", str(out), *FAST_MODEL]) == 0
    rows = index_rows(out)
    assert rows[0] == ["file"]  # no label column: a flat folder
    assert [r[0] for r in rows[1:]] == [str(flat / f"{i}.png") for i in range(4)]
    # a loop inside a class, and a class that is a link to a folder elsewhere
    classes = tmp_path / "classes"
    save_pngs(classes / "cat", 2)
    (classes / "cat" / "again").symlink_to("..", target_is_directory=True)
    save_pngs(tmp_path / "elsewhere" / "dogs", 3)
    (classes / "dog").symlink_to(tmp_path / "elsewhere" / "dogs",
                                 target_is_directory=True)
    out = tmp_path / "classes.npy"
    assert main(["extract", str(classes), "-o", str(out), *FAST_MODEL]) == 0
    rows = index_rows(out)[1:]
    assert [r[1] for r in rows] == ["cat"] * 2 + ["dog"] * 3
    assert [r[0] for r in rows] == (
        [str(classes / "cat" / f"{i}.png") for i in range(2)]
        + [str(classes / "dog" / f"{i}.png") for i in range(3)])


def test_a_broken_link_named_like_an_image_is_refused(tmp_path, capsys):
    flat = save_pngs(tmp_path / "flat", 2)
    (flat / "gone.png").symlink_to(tmp_path / "nowhere.png")
    assert main(["extract", str(flat), "-o", str(tmp_path / "f.npy"),
                 *FAST_MODEL]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{str(flat / 'gone.png')!r} is a broken link" in line


# ---- labels are the folder names, unchanged ---------------------------------------


@pytest.fixture(scope="module")
def signs(tmp_path_factory):
    """Classes named like numbers (-1, +1) and like a formula (=cat)."""
    root = tmp_path_factory.mktemp("signs")
    for shade, cls in ((0, "-1"), (100, "+1"), (200, "=cat")):
        save_pngs(root / cls, 3, shade)
    return root


def test_labels_are_the_folder_names_in_every_output(signs, tmp_path, capsys):
    import csv

    out = tmp_path / "f.npy"
    assert main(["extract", str(signs), "-o", str(out), *FAST_MODEL]) == 0
    # a spreadsheet reads -1 and +1 as numbers: only the formula is quoted
    assert [r[1] for r in index_rows(out)[1:]] == (
        ["+1"] * 3 + ["-1"] * 3 + ["'=cat"] * 3)
    table = tmp_path / "f.csv"
    assert main(["extract", str(signs), "-o", str(table), *FAST_MODEL]) == 0
    with open(table, newline="") as f:
        assert [r[1] for r in list(csv.reader(f))[1:]] == (
            ["+1"] * 3 + ["-1"] * 3 + ["'=cat"] * 3)
    model = tmp_path / "model.joblib"
    capsys.readouterr()
    assert main(["cv", str(signs), "--cv", "3", "--save", str(model),
                 *FAST_MODEL]) == 0
    captured = capsys.readouterr()
    assert "'+1" not in captured.out and "'-1" not in captured.out
    assert "{'+1': 3, '-1': 3, '=cat': 3}" in captured.err
    report = [line.split()[0] for line in captured.out.splitlines()
              if line.split()[:1] in (["+1"], ["-1"], ["=cat"])]
    assert report[:3] == ["+1", "-1", "=cat"]  # the classification report
    assert list(joblib.load(model).classes_) == ["+1", "-1", "=cat"]


def test_labels_are_the_folder_names_in_parquet(signs, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    out = tmp_path / "f.parquet"
    assert main(["extract", str(signs), "-o", str(out), *FAST_MODEL]) == 0
    assert list(pd.read_parquet(out)["label"]) == ["+1"] * 3 + ["-1"] * 3 + [
        "=cat"] * 3


@pytest.mark.parametrize("cell, written", [
    ("cat", "cat"), ("", ""), ("1+1", "1+1"), ("a=b", "a=b"),
    ("-1", "-1"), ("+1", "+1"), ("-0.5", "-0.5"), ("+2.5e-3", "+2.5e-3"),
    ("-.5", "-.5"),
    ("=1+2", "'=1+2"), ("@SUM(A1)", "'@SUM(A1)"), ("\t=1", "'\t=1"),
    ("\r=1", "'\r=1"), ("-1+2", "'-1+2"), ("+cmd", "'+cmd"), ("-", "'-"),
    ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"), ("-1e", "'-1e"),
])
def test_the_formula_guard_quotes_only_what_a_spreadsheet_would_run(cell, written):
    from skxfer.cli import _safe_cell

    assert _safe_cell(cell) == written


# ---- every option and output checked before any work ------------------------------


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the folder is listed or a network built."""
    import skxfer._demo
    import skxfer.datasets

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the options were checked")

    monkeypatch.setattr(skxfer.datasets, "load_image_folder", refuse)
    monkeypatch.setattr(skxfer._demo, "run_demo", refuse)


@pytest.mark.parametrize("option, value, message", [
    ("--C", "-1", "argument --C: must be a finite number > 0; got '-1'"),
    ("--C", "0", "argument --C: must be a finite number > 0; got '0'"),
    ("--C", "nan", "argument --C: must be a finite number > 0; got 'nan'"),
    ("--C", "inf", "argument --C: must be a finite number > 0; got 'inf'"),
    ("--cv", "1", "argument --cv: must be an integer >= 2; got '1'"),
    ("--batch-size", "0", "argument --batch-size: must be an integer >= 1; got '0'"),
    ("--device", "gpu",
     "argument --device: must be auto, cpu, cuda, cuda:N or mps; got 'gpu'"),
])
def test_bad_options_are_refused_in_one_line_naming_the_option(
        signs, no_work, option, value, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["cv", str(signs), *FAST_MODEL, option, value])
    assert exit_.value.code == 2
    line = one_error_line(capsys.readouterr().err, "cv")
    assert line == f"skxfer cv: error: {message} (see skxfer cv --help)"


def test_a_device_this_machine_lacks_is_refused_naming_the_option(signs, no_work,
                                                                 capsys):
    import torch

    with pytest.raises(SystemExit) as exit_:
        main(["extract", str(signs), *FAST_MODEL, "--device", "cuda:99"])
    assert exit_.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "argument --device: " in line and "PretrainedFeatureExtractor" not in line
    if not torch.cuda.is_available():
        assert "CUDA is not available on this machine; use auto or cpu" in line


@pytest.mark.parametrize("args, message", [
    (["--model", "resnet181", "--weights", "none"],
     "--model resnet181: no such torchvision model. Did you mean 'resnet18'"),
    (["--weights", "IMAGENET1K_V9"], "--weights IMAGENET1K_V9: not a weights name "
     "of resnet18 (those are IMAGENET1K_V1, DEFAULT); or pass a local .pth file or "
     "none."),
    (["--weights", "missing.pth"], "--weights missing.pth: no file there"),
    (["--weights", "none", "--layer", "layer9"],
     "--layer layer9: resnet18 has no module of that name. Did you mean 'layer4'"),
])
def test_model_options_are_checked_before_the_folder_is_listed(signs, no_work,
                                                               args, message,
                                                               capsys):
    assert main(["extract", str(signs), "--quiet", *args]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"skxfer extract: error: {message}")


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0"], "argument --seeds: must be an integer >= 1; got '0'"),
    (["--epochs", "0"], "argument --epochs: must be an integer >= 1; got '0'"),
    (["--labels", "5", "0"], "argument --labels: must be an integer >= 1; got '0'"),
])
def test_bad_demo_options_are_refused_before_the_demo_runs(args, message, no_work,
                                                          capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--no-plot", *args])
    assert exit_.value.code == 2
    assert one_error_line(capsys.readouterr().err, "demo") == (
        f"skxfer demo: error: {message} (see skxfer demo --help)")


def test_demo_checks_labels_and_its_output_folder_before_it_runs(tmp_path, no_work,
                                                                capsys):
    assert main(["demo", "--no-plot", "--labels", "5", "1000"]) == 2
    line = one_error_line(capsys.readouterr().err, "demo")
    assert "--labels 1000: the smallest class of the target task has 446 images" in line
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert main(["demo", "--output", str(a_file / "out")]) == 2
    line = one_error_line(capsys.readouterr().err, "demo")
    assert f"--output {a_file / 'out'}: {str(a_file)!r} is a file" in line
    assert main(["demo", "--output", str(a_file)]) == 2
    assert f"--output {a_file}: is a file, not a folder." in one_error_line(
        capsys.readouterr().err, "demo")
    if Path("/proc").is_dir():  # not writable, even for root
        assert main(["demo", "--output", "/proc/skxfer-demo"]) == 2
        assert "cannot write in the folder '/proc'" in one_error_line(
            capsys.readouterr().err, "demo")


@pytest.mark.parametrize("command", ["extract", "cv"])
def test_outputs_are_checked_writable_before_any_work(command, signs, tmp_path,
                                                      no_work, capsys):
    option = "-o" if command == "extract" else "--save"
    name = "--output" if command == "extract" else "--save"
    a_folder = tmp_path / "a_folder.npy"
    a_folder.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cases = [
        (a_folder, "is a folder, not a file"),
        (a_file / "f.npy", f"{str(a_file)!r} is a file, not a folder"),
        (tmp_path / "nowhere" / "f.npy",
         f"the folder {str(tmp_path / 'nowhere')!r} does not exist; create it first"),
    ]
    if Path("/proc").is_dir():  # not writable, even for root
        cases.append((Path("/proc/f.npy"), "cannot write in the folder '/proc'"))
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    read_only = tmp_path / "read_only.npy"
    read_only.write_text("")
    read_only.chmod(0o444)
    try:  # permission bits do not bind root (with its usual capabilities)
        (locked / "probe").touch()
    except PermissionError:
        cases.append((locked / "f.npy", f"cannot write in the folder {str(locked)!r}"))
        cases.append((read_only, "exists and cannot be overwritten"))
    for path, message in cases:
        assert main([command, str(signs), option, str(path), *FAST_MODEL]) == 2
        line = one_error_line(capsys.readouterr().err, command)
        assert line == f"skxfer {command}: error: {name} {path}: {message}."


def test_the_index_beside_an_npy_is_checked_too(signs, tmp_path, no_work, capsys):
    (tmp_path / "f.files.csv").mkdir()
    assert main(["extract", str(signs), "-o", str(tmp_path / "f.npy"),
                 *FAST_MODEL]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"--output {tmp_path / 'f.npy'}: its index {tmp_path / 'f.files.csv'}" in (
        line)


def test_parquet_needs_an_engine_before_any_work(signs, tmp_path, no_work,
                                                 monkeypatch, capsys):
    import sys

    pytest.importorskip("pandas")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "fastparquet", None)
    assert main(["extract", str(signs), "-o", str(tmp_path / "f.parquet"),
                 *FAST_MODEL]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--output .parquet needs pyarrow" in line
    assert 'pip install "skxfer[pandas]"' in line
