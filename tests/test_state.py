"""Fitted state a user can trust: pickling, failed refits, Ctrl-C, warm starts,
models loaded but never shared, seeds, cut heads and clones.

Each test names the fault it guards against; all of them were reproduced on
skxfer 0.1.0.dev0.
"""

import io
import pickle
import subprocess
import sys
import threading
from collections import OrderedDict
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from sklearn import config_context
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted
from skorch.callbacks import Callback
from torch import nn

from skxfer import (
    PretrainedFeatureExtractor,
    TransferMLPClassifier,
    TransferMLPRegressor,
)

KW = dict(random_state=0, device="cpu")
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def digits_small():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0)[:300], y[:300]


@pytest.fixture(scope="module")
def images(digits_small):
    X, y = digits_small
    return X.reshape(-1, 8, 8).astype(np.float32), y


def cnn():
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(1, 8, 3, padding=1),
        bn=nn.BatchNorm2d(8),
        relu=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(2),
        flatten=nn.Flatten(),
    ))


@pytest.fixture(scope="module")
def source(digits_small):
    X, y = digits_small
    return TransferMLPClassifier((32, 16), max_epochs=20, lr=0.01, **KW).fit(X, y)


@pytest.fixture(scope="module")
def other_source(digits_small):
    X, y = digits_small
    return TransferMLPClassifier((32, 16), max_epochs=5, lr=0.01,
                                 random_state=1, device="cpu").fit(X, y)


class _RaiseAt(Callback):
    """Raise ``error`` at the end of epoch ``epoch``."""

    def __init__(self, epoch, error):
        self.epoch = epoch
        self.error = error

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.epoch:
            raise self.error


# ---- 1. pickling never changes the live object ------------------------------------


@pytest.mark.parametrize("freeze", [True, False])
def test_pickling_leaves_the_live_estimator_working(images, freeze):
    X, y = images
    clf = TransferMLPClassifier((8,), backbone=cnn(), freeze=freeze, max_epochs=2,
                                **KW).fit(X[:60], y[:60] % 2)
    features = clf.extractor_.transform(X[:5])
    proba = clf.predict_proba(X[:5])
    backbone = clf.extractor_.backbone_
    joblib.dump(clf, io.BytesIO())
    pickle.dumps(clf)
    assert clf.extractor_.backbone_ is backbone is clf.module_.backbone
    np.testing.assert_array_equal(clf.extractor_.transform(X[:5]), features)
    np.testing.assert_array_equal(clf.predict_proba(X[:5]), proba)
    again = pickle.loads(pickle.dumps(clf))
    assert again.extractor_.backbone_ is again.module_.backbone
    np.testing.assert_allclose(again.predict_proba(X[:5]), proba, atol=1e-6)


def test_pickling_an_extractor_leaves_its_backbone(images):
    X, _ = images
    ext = PretrainedFeatureExtractor(cnn(), weights=None, device="cpu").fit(X[:2])
    backbone = ext.backbone_
    state = ext.__getstate__()
    assert state is not ext.__dict__
    pickle.dumps(ext)
    assert ext.backbone_ is backbone
    assert state["_skxfer_pickle"] == 2  # pickles carry their format


# ---- 2. a failed fit leaves the earlier model, or none --------------------------


def test_failed_refit_with_another_source_keeps_the_earlier_model(
    source, other_source, digits_small
):
    X, y = digits_small
    clf = TransferMLPClassifier((8,), backbone=source, max_epochs=3, **KW).fit(X, y)
    proba = clf.predict_proba(X[:20])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.set_params(backbone=other_source).fit(bad, y)
    np.testing.assert_array_equal(clf.predict_proba(X[:20]), proba)


def test_diverged_refit_keeps_classes_and_outputs_consistent(digits_small):
    X, y = digits_small
    clf = TransferMLPClassifier((8,), max_epochs=2, **KW).fit(X, y % 3)
    proba = clf.predict_proba(X[:10])
    with pytest.raises(ValueError, match="Training diverged"):
        clf.set_params(lr=1e30).fit(X * 1e10, y % 2)
    assert clf.classes_.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(clf.predict_proba(X[:10]), proba)
    with pytest.raises(RuntimeError, match="boom"):
        clf.set_params(lr=1e-3, callbacks=[_RaiseAt(1, RuntimeError("boom"))]).fit(
            X, y % 2)
    assert clf.predict_proba(X[:10]).shape == (10, 3)
    assert clf.n_iter_ == 2 and len(clf.loss_curve_) == 2


def test_failed_fit_on_images_keeps_the_image_model(images, tmp_path):
    X, y = images
    clf = TransferMLPClassifier((8,), backbone=cnn(), max_epochs=2, **KW).fit(
        X[:60], y[:60] % 2)
    proba = clf.predict_proba(X[:5])
    with pytest.raises(ValueError, match="missing.png"):
        clf.fit([str(tmp_path / "missing.png")] * 4, [0, 1, 0, 1])
    np.testing.assert_array_equal(clf.predict_proba(X[:5]), proba)


def test_failed_first_fit_leaves_the_estimators_unfitted(images, tmp_path):
    X, y = images
    missing = [str(tmp_path / "missing.png")]
    ext = PretrainedFeatureExtractor(cnn(), weights=None, device="cpu")
    with pytest.raises(ValueError, match="missing.png"):
        ext.fit(missing)
    assert not hasattr(ext, "backbone_")
    with pytest.raises(NotFittedError):
        check_is_fitted(ext)
    with pytest.raises(NotFittedError):
        ext.get_feature_names_out()
    ext.fit(X[:2])
    with pytest.raises(ValueError, match="missing.png"):
        ext.fit(missing)
    assert ext.transform(X[:3]).shape == (3, 32)  # the earlier fit, intact

    clf = TransferMLPClassifier((8,), backbone=cnn(), max_epochs=2, **KW)
    with pytest.raises(ValueError, match="missing.png"):
        clf.fit(missing * 2, [0, 1])
    assert clf.__dict__.keys() == clone(clf).__dict__.keys()  # nothing fitted


# ---- 3. Ctrl-C propagates and changes nothing -----------------------------------


class _InterruptingBody(nn.Module):
    """Raises KeyboardInterrupt (as Ctrl-C would) in its ``n``-th training call."""

    def __init__(self, n):
        super().__init__()
        self.linear = nn.Linear(64, 8)
        self.n = n
        self.calls = 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.n:
                raise KeyboardInterrupt
        return self.linear(x)


def test_ctrl_c_propagates_and_leaves_the_earlier_state(digits_small):
    X, y = digits_small
    clf = TransferMLPClassifier((8,), max_epochs=5, **KW)
    with pytest.raises(KeyboardInterrupt):
        clf.set_params(callbacks=[_RaiseAt(2, KeyboardInterrupt())]).fit(X, y)
    assert not hasattr(clf, "net_") and not hasattr(clf, "n_iter_")
    clf.set_params(callbacks=None).fit(X, y)
    proba = clf.predict_proba(X[:5])
    with pytest.raises(KeyboardInterrupt):
        clf.set_params(max_epochs=9, callbacks=[_RaiseAt(2, KeyboardInterrupt())]
                       ).fit(X, y)
    assert clf.n_iter_ == 5 and len(clf.loss_curve_) == 5
    np.testing.assert_array_equal(clf.predict_proba(X[:5]), proba)

    # raised inside a module's forward, while a batch trains
    body = _InterruptingBody(n=3)
    reg = TransferMLPRegressor((4,), backbone=body, freeze=False, max_epochs=3,
                               batch_size=100, **KW)
    with pytest.raises(KeyboardInterrupt):
        reg.fit(X, y.astype(float))
    assert not hasattr(reg, "net_")


def test_early_stopping_still_ends_training_quietly(digits_small):
    X, y = digits_small
    clf = TransferMLPClassifier((8,), max_epochs=200, early_stopping=True,
                                n_iter_no_change=2, tol=1.0, **KW).fit(X, y)
    assert clf.n_iter_ == 3


# ---- 4. warm_start and partial_fit as in scikit-learn ------------------------------


def test_warm_start_applies_changed_hyper_parameters(digits_small):
    X, y = digits_small
    clf = TransferMLPClassifier((16,), max_epochs=3, warm_start=True, **KW).fit(X, y)
    first = clf.module_.output.weight.detach().clone()
    clf.set_params(max_epochs=2, lr=0.05).fit(X, y)
    assert clf.n_iter_ == 5 and len(clf.loss_curve_) == 5
    assert [g["lr"] for g in clf.net_.optimizer_.param_groups] == [0.05]
    assert not torch.equal(first, clf.module_.output.weight)
    for name, value in [("hidden_layer_sizes", (8,)), ("dropout", 0.5),
                        ("batch_norm", True), ("activation", "tanh")]:
        before = clf.predict_proba(X[:5])
        with pytest.raises(ValueError, match=f"but {name} changed \\(now"):
            clone(clf).set_params(**{name: value})  # a clone may change it
            clf.set_params(**{name: value}).fit(X, y)
        clf.set_params(**{name: clf._architecture[name]})
        np.testing.assert_array_equal(clf.predict_proba(X[:5]), before)
    # partial_fit continues too, and a changed lr takes effect there as well
    clf.set_params(lr=0.002).partial_fit(X, y)
    assert clf.n_iter_ == 6
    assert clf.net_.optimizer_.param_groups[0]["lr"] == 0.002


def test_partial_fit_refuses_early_stopping(digits_small):
    X, y = digits_small
    clf = TransferMLPClassifier(early_stopping=True, **KW)
    with pytest.raises(ValueError,
                       match="partial_fit does not support early_stopping=True"):
        clf.partial_fit(X, y, classes=np.unique(y))
    assert not hasattr(clf, "net_")


def test_warm_start_with_a_fine_tuned_backbone_keeps_one_backbone(images):
    X, y = images
    clf = TransferMLPClassifier((8,), backbone=cnn(), freeze=False, max_epochs=2,
                                warm_start=True, **KW).fit(X[:60], y[:60] % 2)
    old_backbone = clf.module_.backbone
    old_weight = old_backbone.conv.weight.detach().clone()
    clf.fit(X[:60], y[:60] % 2)
    assert clf.n_iter_ == 4
    assert clf.extractor_.backbone_ is clf.module_.backbone
    assert not torch.equal(clf.module_.backbone.conv.weight, old_weight)
    assert torch.equal(old_backbone.conv.weight, old_weight)  # copied, not moved


# ---- 5. models loaded, never shared; keys that can't go stale ---------------------


def _resnet_images(n=2, size=32):
    rng = np.random.RandomState(0)
    return rng.randint(0, 256, (n, size, size, 3), dtype=np.uint8)


def _resnet_state(seed):
    import torchvision

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return torchvision.models.resnet18(weights=None).state_dict()


def test_an_overwritten_checkpoint_is_read_again(tmp_path):
    X = _resnet_images()
    path = tmp_path / "weights.pth"
    kw = dict(weights=str(path), preprocessing=None, device="cpu")
    torch.save(_resnet_state(1), path)
    first = PretrainedFeatureExtractor("resnet18", **kw).fit_transform(X)
    torch.save(_resnet_state(2), path)
    second = PretrainedFeatureExtractor("resnet18", **kw).fit_transform(X)
    assert not np.allclose(first, second)
    model = _resnet_model(_resnet_state(2))
    with torch.inference_mode():
        expected = model(torch.from_numpy(X).permute(0, 3, 1, 2).float() / 255)
    np.testing.assert_allclose(second, expected.numpy(), rtol=1e-4, atol=1e-5)


def _resnet_model(state):
    import torchvision

    model = torchvision.models.resnet18(weights=None)
    model.load_state_dict(state)
    model.fc = nn.Identity()
    return model.eval()


def test_the_same_relative_path_in_two_folders(tmp_path, monkeypatch):
    X = _resnet_images()
    for i, name in enumerate(("a", "b")):
        (tmp_path / name).mkdir()
        torch.save(_resnet_state(10 + i), tmp_path / name / "w.pth")
    out = []
    for name in ("a", "b"):
        monkeypatch.chdir(tmp_path / name)
        out.append(PretrainedFeatureExtractor(
            "resnet18", weights="w.pth", preprocessing=None, device="cpu"
        ).fit_transform(X))
    assert not np.allclose(out[0], out[1])


def test_extractors_own_their_networks():
    X = _resnet_images()
    a = PretrainedFeatureExtractor("resnet18", weights=None, preprocessing=None,
                                   device="cpu").fit(X)
    b = clone(a).fit(X)
    assert a.backbone_ is not b.backbone_
    expected = b.transform(X)
    with torch.no_grad():  # "fine-tune" one of them in place
        for p in a.backbone_.parameters():
            p.add_(1.0)
    np.testing.assert_array_equal(b.transform(X), expected)
    c = clone(b).fit(X)  # a later extractor gets the pristine network
    np.testing.assert_array_equal(c.transform(X), expected)


class _Branching(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.conv(x)
        if x.sum() > 0:
            x = x * 2
        return self.head(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("model, layer", [("resnet18", "layer2"),
                                          (_Branching(), "conv")])
def test_transform_is_thread_safe(model, layer):
    X = _resnet_images(4)
    ext = PretrainedFeatureExtractor(model, weights=None, layer=layer,
                                     preprocessing=None, device="cpu").fit(X)
    expected = ext.transform(X)
    errors, results = [], []

    def work():
        try:
            for _ in range(8):
                results.append(ext.transform(X))
        except Exception as err:  # pragma: no cover - the failure being tested
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 32
    for out in results:
        np.testing.assert_allclose(out, expected, atol=1e-5)


# ---- 6. seeds: random weights from random_state, the user's RNG untouched -----------


def test_random_weights_are_the_same_in_every_process():
    code = (
        "import numpy as np, torch; torch.set_num_threads(1); "
        "from skxfer import PretrainedFeatureExtractor as P; "
        "x = np.full((1, 32, 32, 3), 128, np.uint8); "
        "print(P('resnet18', weights=None, preprocessing=None, device='cpu')"
        ".fit_transform(x)[0, :4].tolist())"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True).stdout
        for _ in range(2)
    ]
    assert runs[0] == runs[1] and runs[0].startswith("[")
    X = np.full((1, 32, 32, 3), 128, np.uint8)
    kw = dict(weights=None, preprocessing=None, device="cpu")
    a = PretrainedFeatureExtractor("resnet18", random_state=1, **kw).fit_transform(X)
    b = PretrainedFeatureExtractor("resnet18", random_state=2, **kw).fit_transform(X)
    assert not np.allclose(a, b)


def test_fitting_leaves_the_users_torch_rng(source, digits_small, tmp_path):
    X, y = digits_small
    path = tmp_path / "source.pt"
    source.save_network(path)

    def draws(fn):
        torch.manual_seed(123)
        fn()
        return torch.rand(3)

    expected = draws(lambda: None)
    fits = [
        lambda: TransferMLPClassifier((), backbone=str(path), max_epochs=1,
                                      **KW).fit(X[:50], y[:50]),
        lambda: PretrainedFeatureExtractor(
            "resnet18", weights=None, random_state=7, device="cpu"
        ).fit(_resnet_images(1)),
    ]
    for fit in fits:
        assert torch.equal(draws(fit), expected)


# ---- 7. the classifier head is cut off, not carried ---------------------------------


def test_torchvision_backbone_has_no_classifier_head():
    from torchvision.transforms import v2

    X = _resnet_images(8)
    y = np.arange(8) % 2
    ext = PretrainedFeatureExtractor(
        "resnet18", weights=None,
        preprocessing=v2.Compose([v2.ToDtype(torch.float32, scale=True)]))
    assert sum(p.numel() for p in ext.fit(X).backbone_.parameters()) == 11_176_512
    clf = TransferMLPClassifier((), backbone=ext, freeze=False, lr=0.01,
                                backbone_lr_decay=0.5, l2_sp=0.1, max_epochs=1,
                                **KW).fit(X, y)
    names = [n for n, _ in clf.module_.backbone.named_parameters()]
    assert not any(n.startswith("fc.") for n in names)
    assert not any(n.startswith("fc__") for n, _ in
                   clf.module_.sp_reference.named_buffers())
    # layer4 is the top block and takes the backbone's top rate
    groups = clf.net_.optimizer_.param_groups
    top = next(g for g in groups
               if any(p is clf.module_.backbone.layer4[0].conv1.weight
                      for p in g["params"]))
    assert top["lr"] == pytest.approx(0.01)
    n_opt = sum(p.numel() for g in groups for p in g["params"])
    assert n_opt == 11_176_512 + sum(p.numel() for p in clf.module_.head.parameters())
    clf.set_params(freeze=6, l2_sp=0.0, backbone_lr_decay=1.0).fit(X, y)
    assert not any(p.requires_grad for p in clf.module_.backbone.parameters())


def test_freeze_one_block_of_a_one_layer_source(digits_small):
    X, y = digits_small
    one = TransferMLPClassifier((16,), batch_norm=True, max_epochs=3, **KW).fit(X, y)
    clf = TransferMLPClassifier((8,), backbone=one, freeze=1, max_epochs=1,
                                **KW).fit(X, y % 2)
    assert not any(p.requires_grad for p in clf.module_.backbone.parameters())
    with pytest.raises(ValueError, match=r"\(1: \['0'\]\)"):
        clf.set_params(freeze=2).fit(X, y % 2)


# ---- 8. clone keeps scikit-learn's semantics ---------------------------------------


def test_a_clone_cannot_change_the_users_source(source, digits_small):
    est = TransferMLPClassifier(backbone=source, **KW)
    copy = clone(est)
    assert copy.backbone is source
    with pytest.raises(ValueError, match="backbone is a fitted source network"):
        copy.set_params(backbone__lr=5)
    assert source.lr == 0.01
    ext = PretrainedFeatureExtractor(source, weights=None)
    with pytest.raises(ValueError, match="model is a fitted source network"):
        clone(ext).set_params(model__lr=5)
    assert source.lr == 0.01
    # an unfitted estimator as a value is an ordinary nested parameter
    spec = PretrainedFeatureExtractor(cnn(), weights=None)
    est = TransferMLPClassifier(backbone=spec).set_params(backbone__pooling="max")
    assert est.backbone.pooling == "max"


@pytest.mark.parametrize("with_source", [False, True])
def test_clone_keeps_metadata_requests_and_output_config(
    source, digits_small, with_source
):
    pd = pytest.importorskip("pandas")
    with config_context(enable_metadata_routing=True):
        est = TransferMLPClassifier(backbone=source if with_source else None)
        est.set_score_request(sample_weight=True)
        copy = clone(est)
        assert str(copy.get_metadata_routing()) == str(est.get_metadata_routing())
        assert "sample_weight" in str(copy.get_metadata_routing())
    X, _ = digits_small
    ext = PretrainedFeatureExtractor(source if with_source else nn.Tanh(),
                                     weights=None, device="cpu")
    out = clone(ext.set_output(transform="pandas")).fit_transform(X[:5])
    assert isinstance(out, pd.DataFrame)


# ---- old pickles ---------------------------------------------------------------


def test_old_pickles_load_or_fail_clearly(digits_small):
    X, _ = digits_small
    with open(DATA / "mlp_skxfer_0.1.0.dev0.pkl", "rb") as f:
        plain = pickle.load(f)
    np.testing.assert_allclose(
        plain.predict_proba(X[:20]),
        np.load(DATA / "mlp_skxfer_0.1.0.dev0_proba.npy"), atol=1e-6)
    with open(DATA / "transfer_skxfer_0.1.0.dev0.pkl", "rb") as f:
        with pytest.raises(ValueError, match=r"pickled by another skxfer version "
                           r"\(pickle format 1; skxfer 0.1.0.dev0 wrote format 1\)"
                           r".*Fit it again"):
            pickle.load(f)



# ---- continuing: state matched by name, changes seen through --------------------


def test_warm_start_with_regrouped_or_new_optimizer_settings(images):
    X, y = images
    X, y = X[:60], y[:60] % 2
    clf = TransferMLPClassifier((8,), backbone=cnn(), freeze=False, max_epochs=1,
                                warm_start=True, **KW).fit(X, y)
    old = {n: clf.net_.optimizer_.state[p]["exp_avg"].clone()
           for n, p in clf.net_.module_.named_parameters()}
    # new learning-rate groups reorder the parameters: state follows the names
    clf.set_params(backbone_lr_decay=0.5).fit(X, y)
    assert clf.n_iter_ == 2
    for name, p in clf.net_.module_.named_parameters():
        assert clf.net_.optimizer_.state[p]["exp_avg"].shape == old[name].shape
    # settings that change the state's layout start it afresh
    clf.set_params(optimizer_params={"amsgrad": True}).fit(X, y)
    assert clf.n_iter_ == 3
    clf.set_params(optimizer="rmsprop", optimizer_params=None).fit(X, y)
    assert clf.n_iter_ == 4


def test_warm_start_sees_changes_that_compare_equal(images):
    X, y = images
    X, y = X[:60], y[:60] % 2
    clf = TransferMLPClassifier((8,), backbone=cnn(), freeze=1, max_epochs=1,
                                warm_start=True, **KW).fit(X, y)
    with pytest.raises(ValueError, match="freeze changed"):
        clf.set_params(freeze=True).fit(X, y)  # True == 1, yet another network
    spec = PretrainedFeatureExtractor(cnn(), weights=None)
    clf = TransferMLPClassifier((8,), backbone=spec, freeze=False, max_epochs=1,
                                warm_start=True, **KW).fit(X, y)
    with pytest.raises(ValueError, match="backbone changed"):
        clf.set_params(backbone__pooling="flatten").fit(X, y)
    # backbones compare by content: an equal spec (a name that is another str
    # object, in another extractor object) is no change, and survives pickling
    name = "".join(["resnet", "18"])
    rgb = np.repeat(X[:8, :, :, None], 3, axis=3)
    net = TransferMLPClassifier((), backbone=PretrainedFeatureExtractor(
        name, weights=None, preprocessing=None), max_epochs=1, warm_start=True,
        **KW).fit(rgb, y[:8])
    net.set_params(backbone=PretrainedFeatureExtractor(
        "".join(["resnet", "18"]), weights=None, preprocessing=None))
    net.fit(rgb, y[:8])
    assert net.n_iter_ == 2
    loaded = pickle.loads(pickle.dumps(net))
    loaded.partial_fit(rgb, y[:8])
    assert loaded.n_iter_ == 3
    with pytest.raises(ValueError, match="backbone changed"):
        net.set_params(backbone=PretrainedFeatureExtractor(
            name, weights=None, preprocessing=None, layer="layer4")).fit(rgb, y[:8])


def test_an_old_plain_pickle_continues_training(digits_small):
    X, y = digits_small
    with open(DATA / "mlp_skxfer_0.1.0.dev0.pkl", "rb") as f:
        plain = pickle.load(f)
    plain.set_params(warm_start=True, max_epochs=1).fit(X[:200], y[:200])
    assert plain.n_iter_ == 4
    plain.partial_fit(X[:200], y[:200])
    assert plain.n_iter_ == 5


class _FunctionalDropout(nn.Module):
    """A forward that branches on ``self.training`` (functional dropout)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 32)
        self.b = nn.Linear(32, 16)
        self.c = nn.Linear(16, 4)

    def forward(self, x):
        h = torch.nn.functional.dropout(self.a(x), 0.5, self.training)
        return self.c(self.b(h))


def test_a_training_dependent_layer_tap_survives_pickling(digits_small):
    X, y = digits_small
    spec = PretrainedFeatureExtractor(_FunctionalDropout(), weights=None, layer="b")
    clf = TransferMLPClassifier((4,), backbone=spec, freeze=False, max_epochs=1,
                                **KW).fit(X, y)
    loaded = pickle.loads(pickle.dumps(clf))
    backbone = loaded.net_.module_.backbone.train()
    x = torch.as_tensor(X[:4], dtype=torch.float32)
    torch.manual_seed(0)
    assert not torch.equal(backbone(x), backbone(x))  # dropout still active
    backbone.eval()
    np.testing.assert_allclose(loaded.predict_proba(X[:4]),
                               clf.predict_proba(X[:4]), atol=1e-6)


def test_layer_tap_blocks_end_at_the_tapped_layer(digits_small):
    X, y = digits_small
    spec = PretrainedFeatureExtractor(_FunctionalDropout(), weights=None, layer="b")
    with pytest.raises(ValueError, match=r"\(2: \['a', 'b'\]\)"):
        TransferMLPClassifier(backbone=spec, freeze=3, **KW).fit(X, y)
    clf = TransferMLPClassifier((4,), backbone=spec, freeze=False, lr=0.01,
                                backbone_lr_decay=0.5, max_epochs=1, **KW).fit(X, y)
    backbone = clf.module_.backbone
    lr_of = {id(p): g["lr"] for g in clf.net_.optimizer_.param_groups
             for p in g["params"]}
    assert lr_of[id(backbone.model.b.weight)] == pytest.approx(0.01)
    assert lr_of[id(backbone.model.a.weight)] == pytest.approx(0.005)


def test_best_validation_loss_is_that_of_the_weights_kept(digits_small):
    X, y = digits_small
    clf = TransferMLPClassifier((16,), early_stopping=True, n_iter_no_change=2,
                                max_epochs=30, lr=0.01, warm_start=True, **KW)
    clf.fit(X, y)
    first_run = clf.n_iter_
    clf.set_params(lr=0.5, max_epochs=3).fit(X, y)
    latest = clf.validation_loss_curve_[first_run:]
    assert clf.best_validation_loss_ == pytest.approx(min(latest))


def test_set_params_of_get_params_with_a_fitted_source(source, digits_small):
    from sklearn.pipeline import make_pipeline

    est = TransferMLPClassifier(backbone=source, **KW)
    est.set_params(**est.get_params())
    pipe = make_pipeline(PretrainedFeatureExtractor(source, weights=None))
    pipe.set_params(**pipe.get_params())
    assert est.backbone is source and source.lr == 0.01


def test_balanced_class_weight_with_partial_fit_is_refused(digits_small):
    X, y = digits_small
    clf = TransferMLPClassifier(class_weight="balanced", **KW)
    with pytest.raises(ValueError, match="class_weight='balanced' is not supported "
                       "for partial_fit"):
        clf.partial_fit(X, y, classes=np.unique(y))


def test_features_first_module_view_cannot_leave_train_mode(images):
    X, y = images
    clf = TransferMLPClassifier((8,), backbone=cnn(), max_epochs=2, **KW).fit(
        X[:60], y[:60] % 2)
    proba = clf.predict_proba(X[:10])
    clf.module_.train()  # a view over the fitted modules
    np.testing.assert_array_equal(clf.predict_proba(X[:10]), proba)
