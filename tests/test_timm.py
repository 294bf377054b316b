"""timm models ("timm:<name>"): offline weights, timm's preprocessing, blocks.

Nothing here downloads: the Hugging Face hub is offline (HF_HUB_OFFLINE=1,
an empty cache) and torch's URL downloads raise.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported

import json  # noqa: E402
import pickle  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

import skxfer  # noqa: E402
from skxfer import PretrainedFeatureExtractor, TransferMLPClassifier  # noqa: E402
from skxfer._seeding import derive_seed, seeded  # noqa: E402

timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")
from timm.data import create_transform, resolve_data_config  # noqa: E402

KW = dict(device="cpu")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    """No download can happen: the hub is offline with an empty cache, and
    torch's URL downloads raise."""
    from huggingface_hub import constants

    cache = tmp_path_factory.mktemp("hf-cache")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))

    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    skxfer.clear_feature_store()
    yield str(cache)
    skxfer.clear_feature_store()


@pytest.fixture(scope="module")
def images():
    rng = np.random.RandomState(0)
    return rng.randint(0, 256, (5, 40, 48, 3), dtype=np.uint8)


def hand_features(model, images, config=None):
    """What a hand-written timm loop gives: timm's eval transform on each PIL
    image, the model in eval mode, one image at a time."""
    model = model.eval()
    transform = create_transform(**(config or resolve_data_config(model=model)))
    with torch.inference_mode():
        return np.stack([model(transform(Image.fromarray(img))[None])[0].numpy()
                         for img in images])


def random_model(name, random_state=0, **kwargs):
    """timm's model with the random weights weights=None draws from random_state."""
    with seeded(derive_seed(random_state)):
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)


def assert_same_alone_and_in_any_batch(ext, images, expected):
    np.testing.assert_allclose(ext.transform(images), expected, rtol=1e-5,
                               atol=1e-5)
    for i in range(len(images)):  # alone
        np.testing.assert_allclose(ext.transform(images[i:i + 1]), expected[i:i + 1],
                                   rtol=1e-5, atol=1e-5)
    odd = clone(ext).set_params(batch_size=2, feature_store=False).fit(images)
    np.testing.assert_allclose(odd.transform(images[::-1]), expected[::-1],
                               rtol=1e-5, atol=1e-5)


# ---- the same features as timm's own loop ---------------------------------------


@pytest.mark.parametrize("name", ["test_resnet", "test_vit"])
def test_random_weights_give_a_hand_loops_features(name, images, tmp_path):
    before = torch.get_rng_state()
    ext = PretrainedFeatureExtractor(f"timm:{name}", weights=None, random_state=3,
                                     **KW).fit(images)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG untouched
    expected = hand_features(random_model(name, 3), images)
    assert ext.n_features_out_ == expected.shape[1]
    assert_same_alone_and_in_any_batch(ext, images, expected)
    # the same images as PIL images and as PNG files
    paths = []
    for i, img in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(img).save(paths[-1])
    for other in ([Image.fromarray(img) for img in images], paths):
        np.testing.assert_allclose(ext.transform(other), expected, rtol=1e-5,
                                   atol=1e-5)
    # the network runs in eval mode, without its classifier
    assert not ext.backbone_.training
    assert isinstance(ext.backbone_.get_classifier(), torch.nn.Identity)


def test_random_weights_are_drawn_apart_from_other_threads(images, monkeypatch):
    # timm's initialisers draw from torch's global generator; another thread
    # that reseeds it in the middle of a build changes nothing
    expected = hand_features(random_model("test_resnet"), images)
    real = torch.nn.init.kaiming_normal_

    def interfering(*args, **kwargs):
        other = threading.Thread(target=lambda: (torch.manual_seed(99),
                                                 torch.rand(10)))
        other.start()
        other.join()
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.init, "kaiming_normal_", interfering)
    ext = PretrainedFeatureExtractor("timm:test_resnet", weights=None,
                                     feature_store=False, **KW).fit(images)
    np.testing.assert_allclose(ext.transform(images), expected, rtol=1e-5,
                               atol=1e-5)


def write_weights(kind, folder, name="test_resnet", seed=1):
    """A timm model fine-tuned to 10 classes, saved as a user would: returns
    ``(weights= value, timm's own offline spelling of it)``."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=10)
    state = model.state_dict()
    if kind == "pth":
        path = folder / "model.pth"
        torch.save(state, path)
    elif kind == "safetensors":
        path = folder / "model.safetensors"
        safetensors_torch.save_file(state, str(path))
    elif kind == "training checkpoint":  # EMA weights first, as timm reads them
        path = folder / "checkpoint.pth.tar"
        wrapped = {f"module.{k}": v for k, v in state.items()}
        torch.save({"state_dict": {k: torch.zeros_like(v) for k, v in state.items()},
                    "state_dict_ema": wrapped, "epoch": 3}, path)
    else:  # a folder with config.json, preprocessing of its own
        path = folder / "exported"
        timm.models.save_for_hf(model, str(path), safe_serialization=True)
        config = json.loads((path / "config.json").read_text())
        config["pretrained_cfg"].update(mean=[0.3, 0.4, 0.5], std=[0.2, 0.2, 0.3])
        (path / "config.json").write_text(json.dumps(config))
        return f"local-dir:{path}", f"local-dir:{path}"
    return str(path), str(path)


@pytest.mark.parametrize("kind", ["pth", "safetensors", "training checkpoint",
                                  "local-dir"])
def test_a_local_weights_file_gives_timms_own_features(kind, images, tmp_path):
    weights, source = write_weights(kind, tmp_path)
    ext = PretrainedFeatureExtractor("timm:test_resnet", weights=weights,
                                     **KW).fit(images)
    # timm's own offline loading of the same file or folder
    if kind == "local-dir":
        model = timm.create_model(source, pretrained=True, num_classes=0)
        assert tuple(ext.preprocessing_.config["mean"]) == (0.3, 0.4, 0.5)
    else:
        model = timm.create_model("test_resnet", pretrained=True, num_classes=0,
                                  pretrained_cfg_overlay=dict(file=source))
    expected = hand_features(model, images)
    assert np.abs(expected).max() > 0.01  # not a degenerate network
    assert ext.preprocessing_.config == resolve_data_config(model=model)
    assert_same_alone_and_in_any_batch(ext, images, expected)
    # the random weights of weights=None are another network
    rand = PretrainedFeatureExtractor("timm:test_resnet", weights=None, **KW)
    assert not np.allclose(rand.fit_transform(images), expected, atol=1e-3)


def test_a_fitted_extractor_never_reads_the_weights_again(images, tmp_path):
    path, _ = write_weights("safetensors", tmp_path)
    ext = PretrainedFeatureExtractor("timm:test_resnet", weights=path,
                                     feature_store=False, **KW).fit(images)
    before = ext.transform(images)
    write_weights("safetensors", tmp_path, seed=2)  # overwritten
    np.testing.assert_array_equal(ext.transform(images), before)
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(ext)).transform(images), before)
    refit = clone(ext).fit(images)  # a new fit reads the new content
    assert not np.allclose(refit.transform(images), before, atol=1e-3)
    os.remove(path)
    np.testing.assert_array_equal(ext.transform(images), before)


def test_preprocessing_is_timms_data_config(images):
    ext = PretrainedFeatureExtractor("timm:test_vit", weights=None, **KW).fit(images)
    model = random_model("test_vit")
    assert ext.preprocessing_.config == resolve_data_config(model=model)
    assert repr(ext.preprocessing_).startswith("timm.data.create_transform(**{")
    # a pretrained tag brings its own data config (no download for weights=None)
    tagged = PretrainedFeatureExtractor("timm:resnet18.tv_in1k", weights=None,
                                        **KW).fit(images[:1])
    assert tagged.preprocessing_.config["interpolation"] == "bilinear"
    assert PretrainedFeatureExtractor("timm:resnet18", weights=None, **KW).fit(
        images[:1]).preprocessing_.config["interpolation"] == "bicubic"
    # float images in [0, 1] go through the same transforms, as tensors
    floats = ext.transform(images.astype(np.float32) / 255)
    np.testing.assert_allclose(floats, ext.transform(images), atol=0.05)
    # preprocessing= replaces it
    from torchvision.transforms import v2

    own = v2.Compose([v2.Resize((32, 32)), v2.ToDtype(torch.float32, scale=True)])
    mine = PretrainedFeatureExtractor("timm:test_resnet", weights=None,
                                      preprocessing=own, **KW).fit(images)
    assert mine.preprocessing_ is own and mine.transform(images).shape == (5, 96)


def test_layer_gives_timms_features_only_stage(images):
    ext = PretrainedFeatureExtractor("timm:test_resnet", weights=None,
                                     layer="layer3", **KW).fit(images)
    stages = random_model("test_resnet", features_only=True, out_indices=(3,))
    stages.eval()
    transform = ext.preprocessing_
    with torch.inference_mode():
        maps = np.stack([stages(transform(torch.from_numpy(img).permute(2, 0, 1))
                                [None])[0][0].numpy() for img in images])
    np.testing.assert_allclose(ext.transform(images), maps.mean(axis=(2, 3)),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="layer='layer9' names no module of the "
                       "model. Did you mean 'layer4'"):
        clone(ext).set_params(layer="layer9").fit(images)


@pytest.mark.parametrize("name", ["test_efficientnet", "test_convnext",
                                  "test_byobnet"])
def test_every_features_only_stage_of_a_cnn_is_a_layer(name, images):
    # each module that timm's features_only reads (feature_info) is a layer=
    # that gives the same map, pooled
    full = random_model(name)
    stages = timm.create_model(name, pretrained=False, features_only=True)
    source, own = full.state_dict(), stages.state_dict()
    # features_only nets rename 'stages.0' to 'stages_0'
    renamed = {k: next(source[c] for c in (k, k.replace("_", ".", 1),
                                           k.replace("_", ".", 2)) if c in source)
               for k in own}
    stages.load_state_dict(renamed)
    stages.eval()
    transform = PretrainedFeatureExtractor(f"timm:{name}", weights=None,
                                           **KW).fit(images).preprocessing_
    with torch.inference_mode():
        maps = stages(transform(torch.from_numpy(images).permute(0, 3, 1, 2)))
    names = stages.feature_info.module_name()
    assert len(names) == len(maps) >= 4
    for module, expected in zip(names, maps, strict=True):
        ext = PretrainedFeatureExtractor(f"timm:{name}", weights=None, layer=module,
                                         **KW).fit(images)
        np.testing.assert_allclose(ext.transform(images),
                                   expected.mean(dim=(2, 3)).numpy(),
                                   rtol=1e-5, atol=1e-6, err_msg=module)


@pytest.mark.parametrize("precision", ["bf16", "fp16", True])
def test_a_timm_model_extracts_in_mixed_precision_on_the_cpu(precision, images):
    # on the CPU, fp16 runs too (autocast); outputs are float32, close to the
    # float32 features, and stored apart from them
    exact = PretrainedFeatureExtractor("timm:test_resnet", weights=None, **KW)
    half = clone(exact).set_params(mixed_precision=precision)
    expected = exact.fit_transform(images)
    got = half.fit_transform(images)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=0.02 * np.abs(expected).max())
    assert not np.array_equal(got, expected)
    assert half._store_key != exact._store_key


# ---- the feature store ------------------------------------------------------


def test_a_search_with_the_feature_store_runs_timm_once_per_image(monkeypatch):
    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    y = np.arange(24) % 2
    rows = []
    forward = timm.models.resnet.ResNet.forward_features

    def counting(self, x):
        rows.append(len(x))
        return forward(self, x)

    monkeypatch.setattr(timm.models.resnet.ResNet, "forward_features", counting)
    grid = GridSearchCV(
        make_pipeline(PretrainedFeatureExtractor("timm:test_resnet", weights=None,
                                                 **KW),
                      LogisticRegression(max_iter=500)),
        {"logisticregression__C": [0.1, 1.0, 10.0]}, cv=3,
    ).fit(X, y)
    assert sum(rows) / len(X) <= 1.05, sum(rows)
    # the same numbers as without the store
    plain = PretrainedFeatureExtractor("timm:test_resnet", weights=None,
                                       feature_store=False, **KW).fit(X)
    np.testing.assert_allclose(grid.best_estimator_[0].transform(X),
                               plain.transform(X), atol=1e-6)


def test_store_keys_hold_timms_version_the_name_and_the_weights(images, tmp_path,
                                                                monkeypatch):
    def key(model="timm:test_resnet", weights=None):
        return PretrainedFeatureExtractor(model, weights=weights, **KW).fit(
            images[:1])._store_key

    base = key()
    assert base is not None and key() == base
    # the name: a tag names other weights, even with the same random ones
    assert key("timm:test_resnet.r160_in1k") != base
    # the weights' content, not the file's path
    first, _ = write_weights("pth", tmp_path)
    copy = tmp_path / "copy" / "model.pth"
    copy.parent.mkdir()
    copy.write_bytes(open(first, "rb").read())
    assert key(weights=first) == key(weights=str(copy)) != base
    write_weights("pth", tmp_path, seed=2)
    assert key(weights=first) != key(weights=str(copy))
    # timm's version
    monkeypatch.setattr(timm, "__version__", "0.0.1")
    assert key() != base


# ---- freezing and learning rates on timm's blocks ---------------------------


def small_images():
    rng = np.random.RandomState(0)
    return rng.randint(0, 256, (16, 32, 32, 3), dtype=np.uint8), np.arange(16) % 2


def test_freezing_k_blocks_of_a_timm_backbone_trains_only_the_rest():
    X, y = small_images()
    ext = PretrainedFeatureExtractor("timm:test_resnet", weights=None)
    clf = TransferMLPClassifier((), backbone=ext, freeze=2, max_epochs=2, lr=0.01,
                                random_state=0, **KW)
    before = {k: v.clone() for k, v in random_model("test_resnet").state_dict()
              .items()}
    clf.fit(X, y)
    body = clf.module_.backbone
    changed = {k.split(".")[0] for k, v in body.state_dict().items()
               if k.endswith("weight") and not torch.equal(before[k], v)}
    # timm's blocks: the stem (conv1, bn1), then layer1..layer4
    assert changed == {"layer2", "layer3", "layer4"}, changed
    trains = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
    assert trains == {"layer2", "layer3", "layer4"}
    with pytest.raises(ValueError, match=r"freeze=6 asks for more blocks than the "
                       r"backbone has \(5: \['conv1\+bn1', 'layer1', 'layer2', "
                       r"'layer3', 'layer4'\]\)"):
        clf.set_params(freeze=6).fit(X, y)


def test_a_vision_transformers_blocks_are_its_blocks():
    X, y = small_images()
    ext = PretrainedFeatureExtractor("timm:test_vit", weights=None)
    clf = TransferMLPClassifier((), backbone=ext, freeze=3, max_epochs=1,
                                random_state=0, **KW).fit(X, y)
    trains = {".".join(n.split(".")[:2]) for n, p
              in clf.module_.backbone.named_parameters() if p.requires_grad}
    assert trains == {"blocks.2", "blocks.3", "blocks.4", "blocks.5", "norm.weight",
                      "norm.bias"}
    with pytest.raises(ValueError, match=r"\(7: \['cls_token\+pos_embed\+"
                       r"patch_embed', 'blocks.0', .*'blocks.5\+norm'\]\)"):
        clf.set_params(freeze=8).fit(X, y)
    # behind a layer tap, only the blocks that run count
    tapped = clone(ext).set_params(layer="blocks.1")
    with pytest.raises(ValueError, match=r"\(3: \['cls_token\+pos_embed\+"
                       r"patch_embed', 'blocks.0', 'blocks.1'\]\)"):
        clf.set_params(backbone=tapped, freeze=4).fit(X, y)
    clf.set_params(freeze=2).fit(X, y)
    assert {n for n, p in clf.module_.backbone.named_parameters()
            if p.requires_grad} >= {"0.model.blocks.1.attn.qkv.weight"}


def test_layerwise_rates_follow_timms_blocks():
    X, y = small_images()
    clf = TransferMLPClassifier(
        (), backbone=PretrainedFeatureExtractor("timm:test_resnet", weights=None),
        freeze=False, backbone_lr_factor=0.1, backbone_lr_decay=0.5, lr=0.01,
        max_epochs=1, random_state=0, **KW).fit(X, y)
    rates = {}
    names = {id(p): n for n, p in clf.net_.module_.named_parameters()}
    for group in clf.net_.optimizer_.param_groups:
        for p in group["params"]:
            rates[names[id(p)]] = group["lr"]
    block_rate = {"conv1": 0.001 * 0.5 ** 4, "bn1": 0.001 * 0.5 ** 4,
                  "layer1": 0.001 * 0.5 ** 3, "layer2": 0.001 * 0.5 ** 2,
                  "layer3": 0.001 * 0.5, "layer4": 0.001}
    for name, rate in rates.items():
        if name.startswith("backbone."):
            assert rate == pytest.approx(block_rate[name.split(".")[1]]), name
        else:
            assert rate == pytest.approx(0.01), name


def test_a_timm_backbone_fine_tunes_and_pickles(tmp_path):
    X, y = small_images()
    path, _ = write_weights("safetensors", tmp_path)
    clf = TransferMLPClassifier(
        (8,), backbone=PretrainedFeatureExtractor("timm:test_resnet", weights=path),
        freeze=1, max_epochs=2, random_state=0, **KW).fit(X, y)
    proba = clf.predict_proba(X)
    loaded = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(loaded.predict_proba(X), proba)
    again = clone(clf).fit(X, y)  # the same random_state: the same model
    np.testing.assert_array_equal(again.predict_proba(X), proba)


# ---- offline, and clear errors ----------------------------------------------


def test_timms_pretrained_weights_offline_say_where_timm_looks(offline, images):
    with pytest.raises(OSError) as err:
        PretrainedFeatureExtractor("timm:test_resnet", **KW).fit(images[:1])
    msg = str(err.value)
    assert "Could not load timm's pretrained weights for 'test_resnet'" in msg
    assert offline in msg and "HF_HUB_CACHE" in msg
    assert "weights='local-dir:/path/to/folder'" in msg and "weights=None" in msg
    # the estimators' spelling reaches timm the same way
    with pytest.raises(OSError, match="timm's pretrained weights for 'test_resnet'"):
        TransferMLPClassifier(backbone="timm:test_resnet", **KW).fit(
            images[:2], [0, 1])


def test_bad_names_and_weights_are_named(images, tmp_path):
    def fit(model="timm:test_resnet", weights=None):
        return PretrainedFeatureExtractor(model, weights=weights, **KW).fit(images)

    with pytest.raises(ValueError, match="Unknown timm model 'resnet1888'. Did you "
                       "mean 'resnet18'"):
        fit("timm:resnet1888")
    with pytest.raises(ValueError, match=r"Unknown pretrained tag 'nope' for timm "
                       r"model 'resnet18'. Its tags: \['a1_in1k'"):
        fit("timm:resnet18.nope")
    with pytest.raises(ValueError, match="after 'timm:' comes a name of "
                       "timm.list_models().*weights='local-dir:/path/to/folder'"):
        fit(f"timm:local-dir:{tmp_path}")
    with pytest.raises(ValueError, match="after 'timm:' comes a name"):
        TransferMLPClassifier(backbone=f"timm:local-dir:{tmp_path}", **KW).fit(
            images[:2], [0, 1])
    with pytest.raises(ValueError, match="Unknown weights 'IMAGENET1K_V1' for timm "
                       "model 'timm:test_resnet'. Use None"):
        fit(weights="IMAGENET1K_V1")
    with pytest.raises(FileNotFoundError, match="no checkpoint file there"):
        fit(weights=str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match=r"is a folder, not a checkpoint "
                       r"file. For a folder with config.json and the weights, "
                       rf"pass weights='local-dir:{tmp_path}'"):
        fit(weights=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no config.json in"):
        fit(weights=f"local-dir:{tmp_path}")
    other, _ = write_weights("local-dir", tmp_path, name="test_vit")
    with pytest.raises(ValueError, match=r"holds a 'test_vit' \(its config.json's "
                       r"architecture\), not 'test_resnet': pass "
                       r"model='timm:test_vit'"):
        fit(weights=other)
    vit, _ = write_weights("pth", tmp_path, name="test_vit")
    with pytest.raises(ValueError, match=r"The checkpoint '.*model.pth' does not fit "
                       r"the model: the model's 'conv1.0.weight' is missing from it"):
        fit(weights=vit)
    text = tmp_path / "notes.pth"
    text.write_text("not tensors")
    with pytest.raises(ValueError, match="is not a state dict of the timm model"):
        fit(weights=str(text))


def test_a_missing_timm_says_how_to_install_it(monkeypatch, images):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ImportError, match=r"model='timm:resnet18' is a timm model, "
                       r"and timm is not installed. Install it with: pip install "
                       r'"skxfer\[timm\]"'):
        PretrainedFeatureExtractor("timm:resnet18", weights=None, **KW).fit(images)
