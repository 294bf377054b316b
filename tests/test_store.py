"""The feature store: a frozen backbone runs once per image across a search."""

import os
import pickle
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from torch import nn

import skxfer
from skxfer import PretrainedFeatureExtractor, TransferMLPClassifier

ROWS = [0]  # rows through the counting network (a global: copies share it)


class Counting(nn.Module):
    """A small CNN that counts the rows it computes."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(1, 8, 3), relu=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(2),
            flatten=nn.Flatten()))

    def forward(self, x):
        # counted where the store's key does not look: through sys, a library
        # module keyed by its name and version. Read as a global of this code,
        # ROWS would be part of the key (feature_store='auto'), which would
        # change with every count.
        sys.modules[__name__].ROWS[0] += len(x)
        return self.body(x)


@pytest.fixture(autouse=True)
def fresh_store():
    skxfer.clear_feature_store()
    ROWS[0] = 0
    yield
    skxfer.clear_feature_store()
    skxfer.set_config(feature_store=True, feature_store_bytes=512 << 20,
                      feature_store_dir=False)


@pytest.fixture(scope="module")
def images():
    X, y = load_digits(return_X_y=True)
    return (X[:60] / 16).reshape(-1, 8, 8).astype(np.float32), y[:60] % 2


def stored(model=None, **kw):
    kw = {"weights": None, "device": "cpu", "feature_store": True, **kw}
    return PretrainedFeatureExtractor(
        model if model is not None else Counting(), **kw)


def test_a_pipeline_search_runs_each_image_once(images):
    X, y = images  # 60 images, 5 folds x 10 candidates + refit
    grid = GridSearchCV(
        make_pipeline(stored(), LogisticRegression(max_iter=500)),
        {"logisticregression__C": list(np.logspace(-2, 2, 10))}, cv=5,
    ).fit(X, y)
    assert ROWS[0] / len(X) <= 1.05, ROWS[0]
    # the same numbers as without the store
    skxfer.clear_feature_store()
    plain = stored(feature_store=False).fit(X)
    np.testing.assert_allclose(grid.best_estimator_[0].transform(X),
                               plain.transform(X), atol=1e-5)


def test_a_transfer_estimator_search_runs_each_image_once(images):
    X, y = images  # 60 images, 3 folds x 4 head settings + refit
    grid = GridSearchCV(
        TransferMLPClassifier(backbone=stored(), freeze=True, max_epochs=5,
                              random_state=0, device="cpu"),
        {"hidden_layer_sizes": [(), (8,)], "lr": [1e-3, 1e-2]}, cv=3,
    ).fit(X, y)
    assert ROWS[0] / len(X) <= 1.05, ROWS[0]
    assert grid.best_estimator_.predict(X).shape == (60,)


def test_user_modules_are_stored_by_default_and_not_with_feature_store_false(images):
    X, _ = images
    ext = PretrainedFeatureExtractor(Counting(), weights=None, device="cpu").fit(X)
    ext.transform(X)
    ext.transform(X)
    assert ROWS[0] == len(X)  # the fit's probe stores the first image
    assert skxfer.feature_store_info()["entries"] == len(X)
    skxfer.clear_feature_store()
    ROWS[0] = 0
    ext = PretrainedFeatureExtractor(Counting(), weights=None, device="cpu",
                                     feature_store=False).fit(X)
    ext.transform(X)
    ext.transform(X)
    assert ROWS[0] == 1 + 2 * len(X)
    assert skxfer.feature_store_info()["entries"] == 0


def test_changed_inputs_and_networks_miss(images, tmp_path):
    X, _ = images
    ext = stored().fit(X)
    first = ext.transform(X)
    ROWS[0] = 0
    ext.transform(X)
    assert ROWS[0] == 0  # all from the store
    # an array changed in place misses, and gives a fresh extractor's numbers
    changed = X.copy()
    ext.transform(changed)
    changed[3] = 1 - changed[3]
    out = ext.transform(changed)
    assert ROWS[0] == 1
    fresh = stored(feature_store=False).fit(X)
    np.testing.assert_allclose(out, fresh.transform(changed), atol=1e-5)
    # a rewritten image at the same path
    path = tmp_path / "img.png"
    Image.fromarray((X[0] * 255).astype(np.uint8)).save(path)
    a = ext.transform([str(path)])
    os.utime(path, ns=(1, 1))  # another time stamp, as a later write gives
    Image.fromarray((X[1] * 255).astype(np.uint8)).save(path)
    b = ext.transform([str(path)])
    assert not np.allclose(a, b)
    np.testing.assert_allclose(b, fresh.transform([str(path)]), atol=1e-5)
    # changed layer, pooling, preprocessing and weights miss
    for other in (stored(layer="body.relu"), stored(layer="body.relu", pooling="max"),
                  stored(preprocessing=lambda x: x * 2), stored(Counting(seed=1))):
        ROWS[0] = 0
        got = other.fit(X).transform(X)
        assert ROWS[0] >= len(X)
        expected = clone(other).set_params(feature_store=False).fit(X).transform(X)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert got.shape != first.shape or not np.allclose(got, first)


def test_an_overwritten_weights_file_misses(images, tmp_path):
    X, _ = images
    path = tmp_path / "w.pth"
    torch.save(Counting(seed=0).state_dict(), path)
    a = stored().set_params(weights=str(path)).fit(X).transform(X)
    torch.save(Counting(seed=5).state_dict(), path)
    b = stored().set_params(weights=str(path)).fit(X).transform(X)
    assert not np.allclose(a, b)


def test_budget_clear_and_info(images):
    X, _ = images
    skxfer.set_config(feature_store_bytes=20 * 32 * 4)  # 20 rows of 32 floats
    stored().fit(X).transform(X)
    info = skxfer.feature_store_info()
    assert info["bytes"] <= 20 * 32 * 4 and info["entries"] == 20
    skxfer.clear_feature_store()
    assert skxfer.feature_store_info()["entries"] == 0
    skxfer.set_config(feature_store=False)  # off for 'auto' extractors
    ext = PretrainedFeatureExtractor("resnet18", weights=None, preprocessing=None,
                                     device="cpu")
    ext.fit_transform(np.zeros((2, 16, 16, 3), np.uint8))
    assert skxfer.feature_store_info()["entries"] == 0
    with pytest.raises(ValueError, match="feature_store_bytes must be an int >= 0"):
        skxfer.set_config(feature_store_bytes=-1)


def test_a_folder_store_is_read_by_a_later_session(images, tmp_path):
    X, _ = images
    skxfer.set_config(feature_store_dir=tmp_path / "features")
    expected = stored().fit(X).transform(X)
    skxfer.clear_feature_store()  # as a new process would start
    ROWS[0] = 0
    got = stored().fit(X).transform(X)
    assert ROWS[0] == 1  # only the fit's probe; every feature from the folder
    np.testing.assert_array_equal(got, expected)


def test_the_store_is_not_pickled(images):
    X, _ = images
    ext = stored().fit(X)
    ext.transform(X)
    assert len(pickle.dumps(ext)) < 20_000
    assert pickle.loads(pickle.dumps(ext)).transform(X).shape == (60, 32)


# ---- keys that tell apart what differs ---------------------------------------------


def test_preprocessing_of_ones_own_is_not_stored_by_default():
    from torchvision.transforms import v2

    X = np.random.RandomState(0).randint(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    kw = dict(weights=None, device="cpu")
    a = PretrainedFeatureExtractor("resnet18", preprocessing=v2.Lambda(
        lambda x: x.float() / 255), **kw).fit(X)
    b = PretrainedFeatureExtractor("resnet18", preprocessing=v2.Lambda(
        lambda x: -5 * x.float() / 255), **kw).fit(X)
    assert not np.allclose(a.transform(X), b.transform(X))
    assert skxfer.feature_store_info()["entries"] == 0


def test_the_width_follows_the_input_size():
    kw = dict(weights=None, layer="layer1", pooling="flatten", preprocessing=None,
              device="cpu")
    small = np.zeros((2, 16, 16, 3), np.uint8)
    large = np.zeros((2, 32, 32, 3), np.uint8)
    assert PretrainedFeatureExtractor("resnet18", **kw).fit(small).n_features_out_ == (
        64 * 4 * 4)
    ext = PretrainedFeatureExtractor("resnet18", **kw).fit(large)
    assert ext.n_features_out_ == 64 * 8 * 8 == ext.transform(large).shape[1]


def test_palette_images_with_other_palettes_differ():
    from skxfer._store import item_key

    a = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4), mode="P")
    b = a.copy()
    a.putpalette([0, 0, 0] * 256)
    b.putpalette([255, 255, 255] * 256)
    assert item_key(a) != item_key(b)


def test_opted_in_modules_are_keyed_on_their_structure(images):
    X, _ = images
    linear = nn.Linear(64, 4)
    relu = stored(nn.Sequential(nn.Flatten(), linear, nn.ReLU()))
    tanh = stored(nn.Sequential(nn.Flatten(), linear, nn.Tanh()))
    a, b = relu.fit(X).transform(X), tanh.fit(X).transform(X)
    assert a.min() >= 0 and b.min() < 0


def test_a_fit_the_store_serves_holds_the_prototype_and_copies_at_first_use(
        monkeypatch):
    import torchvision

    from skxfer import _backbones

    X = np.random.RandomState(0).randint(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    new = np.random.RandomState(1).randint(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    kw = dict(weights=None, preprocessing=None, device="cpu")
    first = PretrainedFeatureExtractor("resnet18", **kw).fit(X)
    expected = first.transform(X)
    ext = PretrainedFeatureExtractor("resnet18", **kw).fit(X)
    # no network of its own yet: a reference to the registry's prototype
    (prototype,) = _backbones._CACHE.values()
    assert "_backbone" not in ext.__dict__ and ext._recipe.prototype is prototype
    np.testing.assert_array_equal(ext.transform(X), expected)  # all hits
    assert "_backbone" not in ext.__dict__ and ext.n_features_out_ == 512
    # the registry forgets it and nothing can be read or built any more: the
    # network is built from the prototype the fit holds
    skxfer.clear_feature_store()
    monkeypatch.setattr(torchvision.models, "get_model", None)
    monkeypatch.setattr(_backbones, "read_file", None)
    np.testing.assert_allclose(ext.transform(new), first.transform(new), atol=1e-6)
    assert "_recipe" not in ext.__dict__  # built: the prototype may go
    assert ext.backbone_ is not first.backbone_
    assert sum(p.numel() for p in ext.backbone_.parameters()) == 11_176_512
    assert all(not p.requires_grad for p in ext.backbone_.parameters())
    assert prototype.module.fc.out_features == 1000  # never cut in place


def test_pickling_a_fit_the_store_served_builds_its_network(images):
    X = np.random.RandomState(0).randint(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    kw = dict(weights=None, preprocessing=None, device="cpu")
    expected = PretrainedFeatureExtractor("resnet18", **kw).fit(X).transform(X)
    ext = PretrainedFeatureExtractor("resnet18", **kw).fit(X)
    assert "_recipe" in ext.__dict__
    loaded = pickle.loads(pickle.dumps(ext))  # a pickle holds the network
    assert "_recipe" not in loaded.__dict__
    skxfer.clear_feature_store()
    np.testing.assert_allclose(loaded.transform(X), expected, atol=1e-5)
