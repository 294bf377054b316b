"""The command line: demo, extract, cv; and the plots."""

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
