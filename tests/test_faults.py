"""The fault catalogue: bad inputs and faults a user meets, and what they get.

Each case names the exception type and the fragment of its message that tells
the user what to do. All of them gave a raw, misleading or silent answer in
skxfer 0.1.0.dev0.
"""

import csv
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn

from skxfer import (
    PretrainedFeatureExtractor,
    TransferMLPClassifier,
    TransferMLPRegressor,
)
from skxfer.cli import main

KW = dict(random_state=0, device="cpu")
PACKAGE = Path(__file__).parents[1] / "skxfer"


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0)[:200], y[:200]


def identity_extractor(**kwargs):
    """Images in, their pixels out: what the loader made of them."""
    return PretrainedFeatureExtractor(nn.Flatten(), weights=None,
                                      preprocessing=None, device="cpu", **kwargs)


# ---- the catalogue: (case, call, exception, message fragment) -------------------


class _Files:
    """Data and bad files for the catalogue, written under ``tmp``."""

    def __init__(self, tmp):
        X, y = load_digits(return_X_y=True)
        self.X, self.y = (X / 16.0)[:60], y[:60]
        self.tmp = tmp
        self.text = str(tmp / "notes.pt")
        Path(self.text).write_bytes(b"these are not weights\n")
        self.objects = str(tmp / "objects.pt")
        torch.save({"model": nn.Linear(2, 2)}, self.objects)  # pickled objects
        self.shapes = str(tmp / "shapes.pt")
        torch.save(nn.Linear(3, 3).state_dict(), self.shapes)  # another net
        self.images = np.zeros((4, 8, 8, 3), np.uint8)


CASES = [
    ("optimizer_params: unknown key",
     lambda f: TransferMLPClassifier(optimizer_params={"betaz": (0.9, 0.99)},
                                     **KW).fit(f.X, f.y),
     ValueError, lambda f: "Check optimizer_params"),
    ("optimizer_params: bad value",
     lambda f: TransferMLPClassifier(optimizer_params={"betas": (2.0, 0.9)},
                                     **KW).fit(f.X, f.y),
     ValueError, lambda f: "Adam does not accept the settings"),
    ("backbone: a missing .pt file",
     lambda f: TransferMLPClassifier(backbone="missing.pt", **KW).fit(f.X, f.y),
     FileNotFoundError, lambda f: "backbone='missing.pt': no file there"),
    ("backbone: a missing Path",
     lambda f: TransferMLPClassifier(backbone=Path("missing.pt"), **KW).fit(f.X, f.y),
     FileNotFoundError, lambda f: "backbone='missing.pt': no file there"),
    ("backbone: a text file",
     lambda f: TransferMLPClassifier(backbone=Path(f.text), **KW).fit(f.X, f.y),
     ValueError, lambda f: "is not a network saved by skxfer's save_network"),
    ("weights: a text file",
     lambda f: PretrainedFeatureExtractor(nn.Linear(2, 2), weights=f.text).fit(f.X),
     ValueError, lambda f: f"weights={f.text!r} is not a state dict saved with "
                           "torch.save(model.state_dict(), path)"),
    ("weights: pickled objects",
     lambda f: PretrainedFeatureExtractor(nn.Linear(2, 2), weights=f.objects
                                          ).fit(f.X),
     ValueError, lambda f: "never pickled objects"),
    ("weights: other shapes",
     lambda f: PretrainedFeatureExtractor(nn.Linear(2, 2), weights=f.shapes
                                          ).fit(f.X),
     ValueError, lambda f: f"The checkpoint {f.shapes!r} does not fit the model: "
                           "size mismatch"),
    ("weights: a missing file",
     lambda f: PretrainedFeatureExtractor(nn.Linear(2, 2),
                                          weights=str(f.tmp / "no.pth")).fit(f.X),
     FileNotFoundError, lambda f: "no checkpoint file there"),
    ("images: a zero-size axis",
     lambda f: identity_extractor().fit(np.zeros((2, 0, 32, 3), np.uint8)),
     ValueError, lambda f: "images must have at least one pixel"),
    ("images: two channels",
     lambda f: identity_extractor().fit(np.zeros((2, 8, 8, 2), np.uint8)),
     ValueError, lambda f: "images need 1 (grayscale), 3 (RGB) or 4 (RGBA) channels"),
    ("images: two channels, in a list",
     lambda f: identity_extractor().fit([np.zeros((8, 8, 2), np.uint8)]),
     ValueError, lambda f: "images need 1, 3 or 4 channels"),
    ("images: an ambiguous layout",
     lambda f: identity_extractor().fit(np.zeros((2, 3, 3, 3), np.uint8)),
     ValueError, lambda f: "both (N, H, W, C) and (N, C, H, W) fit"),
    ("X: values that overflow float32 arithmetic",
     lambda f: TransferMLPClassifier(**KW).fit(f.X * 1e30, f.y),
     ValueError, lambda f: "beyond what float32 arithmetic can square"),
    ("batch_norm with one sample",
     lambda f: TransferMLPRegressor(batch_norm=True, **KW).fit(f.X[:1], f.y[:1]),
     ValueError, lambda f: "Batch normalisation needs at least 2 training samples"),
    ("images into a wrong backbone",
     lambda f: TransferMLPClassifier(backbone=nn.Linear(10, 4), **KW).fit(
         f.images, [0, 1, 0, 1]),
     ValueError, lambda f: "could not run on a batch of shape"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fault_catalogue(case, tmp_path):
    _, call, error, fragment = case
    files = _Files(tmp_path)
    with pytest.raises(error, match=re.escape(fragment(files))):
        call(files)


# ---- silent wrong answers -----------------------------------------------------------


def test_16_bit_pngs_are_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    pixels = identity_extractor().fit_transform([str(path)]).reshape(8, 8)
    np.testing.assert_allclose(pixels, ramp / 65535, atol=1e-6)


def test_jpeg_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(np.zeros((4, 8, 3), np.uint8))  # 4 high, 8 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees to view
    path = tmp_path / "phone.jpg"
    img.save(path, exif=exif.tobytes())
    ext = identity_extractor().fit([str(path)])
    assert tuple(ext.image_dataset([str(path)])[0].shape) == (3, 8, 4)


def test_small_nchw_rgb_batches_are_read_as_nchw():
    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, (2, 3, 4, 4), dtype=np.uint8)  # NCHW, 4x4 RGB
    out = identity_extractor().fit_transform(X)
    np.testing.assert_allclose(out, X.reshape(2, -1) / 255, atol=1e-6)
    nhwc = np.moveaxis(X, 1, -1)
    np.testing.assert_allclose(identity_extractor().fit_transform(nhwc), out)


def test_float_images_in_minus_one_to_one_warn():
    X = np.linspace(-1, 1, 2 * 8 * 8 * 3).reshape(2, 8, 8, 3).astype(np.float32)
    with pytest.warns(UserWarning, match=r"map \[-1, 1\] with \(X \+ 1\) / 2"):
        identity_extractor().fit(X)


class _Volume(nn.Module):
    """Outputs 5-d maps (N, C, D, H, W): C channels over a 2x2x2 volume."""

    def forward(self, x):
        n = x.shape[0]
        return torch.arange(7.0).view(1, 7, 1, 1, 1).expand(n, 7, 2, 2, 2)


def test_five_d_outputs_are_pooled_over_space():
    ext = PretrainedFeatureExtractor(_Volume(), weights=None, device="cpu")
    out = ext.fit_transform(np.zeros((2, 8, 8, 3), np.uint8))
    np.testing.assert_array_equal(out, np.tile(np.arange(7.0), (2, 1)))


def test_batch_norm_trains_when_a_batch_would_hold_one_row(digits):
    X, y = digits
    clf = TransferMLPClassifier((8,), batch_norm=True, batch_size=33, max_epochs=3,
                                **KW).fit(X[:67], y[:67])  # 67 = 2 * 33 + 1
    assert clf.n_iter_ == 3 and np.isfinite(clf.loss_curve_).all()


# ---- devices -----------------------------------------------------------------------


class _OutOfMemory(nn.Module):
    def forward(self, x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")


def test_out_of_memory_is_reported_as_such():
    with pytest.raises(torch.cuda.OutOfMemoryError, match="Lower batch_size"):
        PretrainedFeatureExtractor(_OutOfMemory(), weights=None, device="cpu").fit(
            np.zeros((2, 8, 8, 3), np.uint8))


def test_fused_kernels_are_probed_not_assumed():
    from skxfer._net import supports_fused

    class NoFused(torch.optim.SGD):
        def __init__(self, params, lr=0.1, fused=None, **kwargs):
            if fused:
                raise RuntimeError("`fused=True` is not supported here")
            super().__init__(params, lr=lr, **kwargs)

    assert supports_fused(torch.optim.Adam, "cpu")
    assert not supports_fused(NoFused, "cpu")
    assert not supports_fused(torch.optim.RMSprop, "cpu")
    if not torch.cuda.is_available():
        assert not supports_fused(torch.optim.Adam, "cuda")


def test_a_source_fitted_on_a_gpu_lends_no_device(digits):
    X, y = digits
    images = X.reshape(-1, 8, 8).astype(np.float32)
    body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten())
    source = TransferMLPClassifier((8,), backbone=body, freeze=False, max_epochs=1,
                                   **KW).fit(images, y)
    source.extractor_.device_ = "cuda"  # as if fitted on a GPU
    target = TransferMLPClassifier((), backbone=source, max_epochs=1, **KW).fit(
        images, y % 2)
    assert target.extractor_.device_ == "cpu"
    assert target.predict(images[:3]).shape == (3,)


# ---- the command line --------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    names = {"=cat": ["a,b.png", "=cmd.png", "c.png"], "dog": ["d.png", "e.png"]}
    for cls, files in names.items():
        (root / cls).mkdir()
        for i, name in enumerate(files):
            img = np.full((8, 8, 3), 40 * i, np.uint8)
            Image.fromarray(img).save(root / cls / name)
    return root


FAST = ["--model", "resnet18", "--weights", "none", "--quiet", "--batch-size", "4"]


def test_cli_refuses_unknown_formats_and_missing_folders(folder, tmp_path, capsys):
    assert main(["extract", str(folder), "-o", str(tmp_path / "f.xlsx"), *FAST]) == 2
    assert "unknown format '.xlsx'; use one of .npy, .parquet, .csv" in (
        capsys.readouterr().err)
    assert not (tmp_path / "f.xlsx").exists()
    missing = tmp_path / "nowhere" / "f.npy"
    assert main(["extract", str(folder), "-o", str(missing), *FAST]) == 2
    assert "does not exist; create it first" in capsys.readouterr().err
    assert main(["cv", str(folder), "--save", str(missing), *FAST]) == 2
    err = capsys.readouterr().err
    assert "--save" in err and "images" not in err  # refused before any work


def test_cli_writes_exactly_the_named_file_with_a_quoted_index(folder, tmp_path,
                                                               capsys):
    out = tmp_path / "feats.NPY"
    assert main(["extract", str(folder), "-o", str(out), *FAST]) == 0
    assert out.exists() and not (tmp_path / "feats.NPY.npy").exists()
    assert np.load(out).shape == (5, 512)
    with open(tmp_path / "feats.files.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert [Path(r[0]).name for r in rows[1:]] == [
        "=cmd.png", "a,b.png", "c.png", "d.png", "e.png"]
    # a label a spreadsheet would run as a formula is quoted
    assert [r[1] for r in rows[1:]] == ["'=cat"] * 3 + ["dog"] * 2


def test_cli_one_line_errors_for_bad_weights_and_cv(folder, tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_text("not weights")
    code = main(["extract", str(folder), "-o", str(tmp_path / "f.npy"),
                 "--weights", str(bad), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("skxfer extract: error: weights=")
    assert "is not a state dict saved with" in errors[0]
    for folds in ("0", "1", "x"):
        with pytest.raises(SystemExit):
            main(["cv", str(folder), "--cv", folds, *FAST])
        assert "argument --cv: must be an integer >= 2" in capsys.readouterr().err


def test_cli_says_when_it_lowers_cv_and_prints_plain_values(folder, capsys):
    assert main(["cv", str(folder), "--cv", "5", *FAST]) == 0
    captured = capsys.readouterr()
    assert "--cv lowered from 5 to 2: the smallest class has 2 images" in captured.err
    assert "{'=cat': 3, 'dog': 2}" in captured.err
    assert "np." not in captured.out + captured.err


# ---- public APIs only --------------------------------------------------------------


@pytest.mark.parametrize("private", [
    "mtrand._rand", "_set_training", "_sklearn_output_config",
    '__name__ == "FrozenEstimator"', "_validate_data", "_more_tags",
    "sklearn.utils._testing",
])
def test_no_private_apis_of_dependencies(private):
    hits = [str(p.relative_to(PACKAGE)) for p in PACKAGE.glob("*.py")
            if private in p.read_text()]
    assert hits == []


def test_pickled_faults_still_refused_after_loading(digits):
    X, y = digits
    clf = pickle.loads(pickle.dumps(TransferMLPClassifier(**KW)))
    with pytest.raises(ValueError, match="beyond what float32"):
        clf.fit(X * 1e30, y)
