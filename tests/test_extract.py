"""PretrainedFeatureExtractor: inputs, models, layers, persistence, real transfer."""

import pickle
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from skorch import NeuralNetClassifier
from torch import nn

from skxfer import PretrainedFeatureExtractor

torchvision = pytest.importorskip("torchvision")


def small_cnn(in_channels=3, n_classes=10):
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(in_channels, 16, 3, padding=1),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(16, 32, 3, padding=1),
            relu2=nn.ReLU(),
            pool=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.LazyLinear(64),
            relu_fc=nn.ReLU(),
            fc2=nn.Linear(64, n_classes),
        )
    )


def initialised(module, shape):
    module(torch.zeros(shape))  # materialise lazy layers
    return module.eval()


@pytest.fixture(scope="module")
def images():
    rng = np.random.RandomState(0)
    return rng.randint(0, 256, (6, 40, 48, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def resnet_ext(images):
    return PretrainedFeatureExtractor("resnet18", weights=None, device="cpu").fit(
        images
    )


# ---- input kinds ---------------------------------------------------------------


def test_same_features_for_array_pil_png_and_nchw(images, resnet_ext, tmp_path):
    ref = resnet_ext.transform(images)
    assert ref.shape == (6, 512) and ref.dtype == np.float32
    paths = []
    for i, img in enumerate(images):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(img).save(path)
        paths.append(str(path))
    pils = [Image.fromarray(img) for img in images]
    nchw = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    for other in (pils, paths, np.array(paths), nchw, list(images)):
        np.testing.assert_allclose(resnet_ext.transform(other), ref, atol=1e-5)
    pd = pytest.importorskip("pandas")
    np.testing.assert_allclose(
        resnet_ext.transform(pd.Series(paths)), ref, atol=1e-5
    )


def test_grayscale_rgba_float_and_mixed_sizes(images, resnet_ext):
    gray = images[..., 0]
    rgb_from_gray = np.repeat(gray[..., None], 3, axis=-1)
    np.testing.assert_allclose(
        resnet_ext.transform(gray), resnet_ext.transform(rgb_from_gray), atol=1e-5
    )
    rgba = np.concatenate([images, np.full(images.shape[:3] + (1,), 7, np.uint8)], -1)
    np.testing.assert_allclose(
        resnet_ext.transform(rgba), resnet_ext.transform(images), atol=1e-5
    )
    as_float = images.astype(np.float32) / 255
    # resizing uint8 rounds to integers; float images differ by that rounding
    np.testing.assert_allclose(
        resnet_ext.transform(as_float), resnet_ext.transform(images), atol=0.02
    )
    with pytest.warns(UserWarning, match="Float images are expected in \\[0, 1\\]"):
        resnet_ext.transform(images.astype(np.float32))
    mixed = [images[0], images[1, :30, :20], Image.fromarray(images[2]).resize((9, 7))]
    assert resnet_ext.transform(mixed).shape == (3, 512)


def test_bad_inputs_are_named(images, resnet_ext, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(images[0]).save(good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"Could not read image 1 \('.*broken.png'\)"):
        resnet_ext.transform([str(good), str(broken)])
    with pytest.raises(ValueError, match=r"Could not read image 0 \('.*missing.png'\)"):
        resnet_ext.transform([str(tmp_path / "missing.png")])
    with pytest.raises(ValueError, match="Found an empty collection of images"):
        resnet_ext.transform([])
    with pytest.raises(ValueError, match="Cannot tell the channel axis"):
        resnet_ext.transform(np.zeros((2, 5, 6, 7), np.uint8))
    with pytest.raises(ValueError, match="Found an image array with dim 2"):
        resnet_ext.transform(np.zeros((2, 5), np.uint8))
    with pytest.raises(ValueError, match="contain NaN"):
        resnet_ext.transform(np.full((1, 8, 8, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="Wrap it in a list"):
        resnet_ext.transform(str(good))
    with pytest.raises(ValueError, match="Image 1 is a int"):
        resnet_ext.transform([str(good), 3])
    bare = PretrainedFeatureExtractor(
        initialised(small_cnn(), (1, 3, 8, 8)), weights=None, device="cpu"
    ).fit(images[:, :8, :8])
    with pytest.raises(ValueError, match="Images of different sizes.*Resize"):
        bare.transform([images[0, :8, :8], images[1, :20]])
    with pytest.raises(ValueError, match=r"could not run on a batch of shape "
                       r"\(6, 3, 40, 48\).*preprocessing= that resizes"):
        bare.transform(images)


def test_unknown_model_layer_and_weights():
    X = np.zeros((1, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="Unknown model 'resnet181'. Did you mean"):
        PretrainedFeatureExtractor("resnet181", weights=None).fit(X)
    with pytest.raises(ValueError, match="layer='layer5' names no module.*'layer"):
        PretrainedFeatureExtractor("resnet18", weights=None, layer="layer5").fit(X)
    with pytest.raises(ValueError, match="Unknown weights 'IMAGENET9K'.*IMAGENET1K_V1"):
        PretrainedFeatureExtractor("resnet18", weights="IMAGENET9K").fit(X)
    with pytest.raises(ValueError, match="'pooling' parameter.*'avg'"):
        PretrainedFeatureExtractor("resnet18", weights=None, pooling="mean").fit(X)
    with pytest.raises(NotFittedError):
        PretrainedFeatureExtractor().transform(X)


def test_offline_download_error_says_where_weights_are_looked_up(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(OSError) as err:
        PretrainedFeatureExtractor("resnet18", weights="IMAGENET1K_V1").fit(
            np.zeros((1, 32, 32, 3), np.uint8)
        )
    msg = str(err.value)
    assert str(tmp_path) in msg and "resnet18-f37072fd.pth" in msg
    assert "TORCH_HOME" in msg and "weights='/path/to/checkpoint.pth'" in msg


# ---- models, weights, layers, preprocessing ----------------------------------------


def test_preprocessing_is_the_weights_transforms(resnet_ext):
    expected = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    assert repr(resnet_ext.preprocessing_) == repr(expected)
    ext = PretrainedFeatureExtractor(
        "resnet18", weights="IMAGENET1K_V1", device="cpu"
    )
    assert ext.weights == "IMAGENET1K_V1"  # __init__ stores, loads nothing


def test_local_checkpoint_roundtrip(images, tmp_path):
    torch.manual_seed(1)
    model = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), path)
    ext = PretrainedFeatureExtractor("resnet18", weights=str(path), device="cpu")
    feats = ext.fit_transform(images)
    prep = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    model.fc = nn.Identity()
    with torch.inference_mode():
        expected = model(prep(torch.from_numpy(images).permute(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(feats, expected, atol=1e-4)
    # the same file loaded into a user module
    user = torchvision.models.resnet18(weights=None)
    user.fc = nn.Identity()
    ext_user = PretrainedFeatureExtractor(
        user, weights=str(path), preprocessing=prep, device="cpu"
    )
    with pytest.raises(ValueError, match=(
            r"resnet18.pth' does not fit the model: it has 'fc.weight', which the "
            r"model does not \(1 more key differs\)")):
        ext_user.fit(images)  # fc.* are unexpected keys for an Identity head
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(Exception, match="size mismatch|does not fit"):
        PretrainedFeatureExtractor("resnet18", weights=str(bad)).fit(images)


def test_layer_and_pooling(images):
    ext = PretrainedFeatureExtractor(
        "resnet18", weights=None, layer="layer2", device="cpu"
    )
    assert ext.fit_transform(images).shape == (6, 128)
    flat = ext.set_params(pooling="flatten").fit_transform(images)
    assert flat.shape == (6, 128 * 28 * 28)
    mx = ext.set_params(pooling="max").fit_transform(images)
    assert mx.shape == (6, 128) and (mx >= 0).all()


def test_other_architectures_give_their_penultimate_width(images):
    for name, width in [("mobilenet_v3_small", 1024), ("vit_b_16", 768)]:
        ext = PretrainedFeatureExtractor(name, weights=None, device="cpu")
        assert ext.fit_transform(images[:1]).shape == (1, width), name


def test_user_module_is_copied_not_changed(images):
    cnn = initialised(small_cnn(), (1, 3, 8, 8)).train()
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    ext = PretrainedFeatureExtractor(cnn, weights=None, layer="relu_fc", device="cpu")
    assert ext.fit_transform(images[:, :8, :8]).shape == (6, 64)
    assert cnn.training  # the user's module is left as it was
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())
    assert ext.backbone_ is not cnn
    assert not any(m._forward_hooks for m in cnn.modules())  # no hook left on it


def test_clone_and_set_params_switch_the_model(images, resnet_ext):
    other = clone(resnet_ext).set_params(model="mobilenet_v3_small")
    assert other.fit_transform(images[:2]).shape == (2, 1024)
    assert resnet_ext.transform(images[:2]).shape == (2, 512)


def test_pandas_output_and_feature_names(images, resnet_ext):
    pd = pytest.importorskip("pandas")
    ext = clone(resnet_ext).set_output(transform="pandas")
    df = ext.fit_transform(images)
    assert isinstance(df, pd.DataFrame) and df.shape == (6, 512)
    assert list(df.columns[:2]) == [
        "pretrainedfeatureextractor0", "pretrainedfeatureextractor1"]


def test_pickle_in_a_fresh_process(images, resnet_ext, tmp_path):
    path = tmp_path / "ext.pkl"
    path.write_bytes(pickle.dumps(resnet_ext))
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "expected.npy", resnet_ext.transform(images))
    code = (
        "import pickle, numpy as np, torch; torch.set_num_threads(1); "
        f"ext = pickle.loads(open({str(path)!r}, 'rb').read()); "
        f"out = ext.transform(np.load({str(tmp_path / 'images.npy')!r})); "
        f"np.testing.assert_allclose(out, np.load({str(tmp_path / 'expected.npy')!r}),"
        " atol=1e-5); print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True)
    assert result.stdout.strip() == "ok", result.stderr


def test_verbose_progress_bar(images, resnet_ext, capsys):
    ext = clone(resnet_ext).set_params(verbose=1, batch_size=2,
                                       feature_store=False).fit(images)
    ext.transform(images)
    assert "extracting features" in capsys.readouterr().err


def test_workers_decode_files_in_parallel(images, resnet_ext, tmp_path):
    paths = []
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    ext = clone(resnet_ext).set_params(num_workers=1, batch_size=2).fit(images)
    np.testing.assert_allclose(
        ext.transform(paths), resnet_ext.transform(images), atol=1e-5
    )


# ---- real transfer ------------------------------------------------------------------


def test_pretrained_cnn_features_beat_raw_pixels_on_a_new_task():
    # Measured here, mean of 5 seeds, 10 labelled images per class of the new
    # task (odd vs even) on the unseen half of load_digits:
    #   logistic regression on raw pixels: 0.796
    #   PretrainedFeatureExtractor(CNN pretrained on the first half) + LR: 0.871
    X, y = load_digits(return_X_y=True)
    images = (X / 16.0).reshape(-1, 1, 8, 8).astype(np.float32)
    src_X, tgt_X, src_y, tgt_y = train_test_split(
        images, y, test_size=0.5, random_state=0, stratify=y
    )
    torch.manual_seed(0)
    cnn = initialised(small_cnn(in_channels=1), (1, 1, 8, 8))
    NeuralNetClassifier(
        cnn, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=3e-3,
        max_epochs=15, batch_size=64, train_split=None, verbose=0,
    ).fit(src_X, src_y)

    tgt_task = tgt_y % 2
    raw, transfer = [], []
    for seed in range(5):
        rng = np.random.RandomState(seed)
        labelled = np.concatenate(
            [rng.choice(np.flatnonzero(tgt_task == c), 10, replace=False)
             for c in (0, 1)]
        )
        rest = np.setdiff1d(np.arange(len(tgt_X)), labelled)
        lr_raw = LogisticRegression(max_iter=2000).fit(
            tgt_X[labelled].reshape(20, -1), tgt_task[labelled]
        )
        raw.append(lr_raw.score(tgt_X[rest].reshape(len(rest), -1), tgt_task[rest]))
        pipe = make_pipeline(
            PretrainedFeatureExtractor(cnn, weights=None, layer="relu_fc",
                                       device="cpu"),
            LogisticRegression(max_iter=2000),
        ).fit(tgt_X[labelled], tgt_task[labelled])
        transfer.append(pipe.score(tgt_X[rest], tgt_task[rest]))
    assert np.mean(raw) < 0.83
    assert np.mean(transfer) > 0.85
    assert np.mean(transfer) - np.mean(raw) > 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_mixed_precision(images, resnet_ext):
    ext = clone(resnet_ext).set_params(device="cuda", mixed_precision=True)
    feats = ext.fit_transform(images)
    assert ext.device_ == "cuda" and feats.dtype == np.float32
    np.testing.assert_allclose(feats, resnet_ext.transform(images), rtol=0.05,
                               atol=0.05)


def test_weights_load_once_per_process(images, monkeypatch):
    from skxfer import _backbones

    _backbones._CACHE.clear()
    calls = []
    get_model = torchvision.models.get_model

    def counting(*args, **kwargs):
        calls.append(args)
        return get_model(*args, **kwargs)

    monkeypatch.setattr(torchvision.models, "get_model", counting)
    # the model registry alone (the feature store would skip the build)
    ext = PretrainedFeatureExtractor("resnet18", weights=None, device="cpu",
                                     feature_store=False)
    for _ in range(3):
        clone(ext).fit(images[:1])
    assert len(calls) == 1
    clone(ext).set_params(model="mobilenet_v3_small").fit(images[:1])
    assert len(calls) == 2
