"""Features that never go stale.

1. a fitted extractor owns what ``fit`` read (weights files may change, go or
   move afterwards); 2. the store trusts only content; 3. a store folder can
   neither lie nor break a fit; 4. the store's settings travel with the work.
"""

import os
import pickle
import shutil
import subprocess
import sys
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from torch import nn

import skxfer
from skxfer import PretrainedFeatureExtractor, TransferMLPClassifier

torchvision = pytest.importorskip("torchvision")

DATA = Path(__file__).parent / "data"
NAME = "squeezenet1_1"  # a small torchvision classifier: fast tests
KW = dict(preprocessing=None, device="cpu")


@pytest.fixture(autouse=True)
def fresh_store():
    skxfer.clear_feature_store()
    yield
    skxfer.clear_feature_store()
    skxfer.set_config(feature_store=True, feature_store_bytes=512 << 20,
                      feature_store_dir=False)


def _images(n=6, seed=0, size=32):
    rng = np.random.RandomState(seed)
    return rng.randint(0, 256, (n, size, size, 3), dtype=np.uint8)


def _state(seed, name=NAME, **kw):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return torchvision.models.get_model(name, weights=None, **kw).state_dict()


def _reference(state, X, name=NAME):
    """Features of ``X`` from a network built by hand from ``state``: what
    comes before squeezenet's classifier (its class-score convolution)."""
    model = torchvision.models.get_model(name, weights=None)
    model.load_state_dict(state)
    model.classifier[1] = nn.Identity()
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(X).permute(0, 3, 1, 2).float() / 255
                            ).numpy()


def _served_by_the_store(path, X):
    """An extractor whose fit the store served (the first one filled it)."""
    PretrainedFeatureExtractor(NAME, weights=str(path), **KW).fit(X).transform(X)
    return PretrainedFeatureExtractor(NAME, weights=str(path), **KW).fit(X)


# ---- 1. a fitted extractor owns what fit read --------------------------------------


def test_an_overwritten_weights_file_does_not_change_a_fitted_extractor(tmp_path):
    X, new = _images(), _images(seed=1)
    path = tmp_path / "w.pth"
    torch.save(_state(1), path)
    ext = _served_by_the_store(path, X)
    torch.save(_state(2), path)  # overwritten after fit
    expected = _reference(_state(1), new)
    np.testing.assert_allclose(ext.transform(new), expected, atol=1e-5)
    again = pickle.loads(pickle.dumps(ext))  # a pickle holds the fitted weights
    skxfer.clear_feature_store()
    np.testing.assert_allclose(again.transform(new), expected, atol=1e-5)
    # a new fit reads the new file, and the store does not serve it the old
    # network's features
    got = PretrainedFeatureExtractor(NAME, weights=str(path), **KW).fit(X)
    np.testing.assert_allclose(got.transform(new), _reference(_state(2), new),
                               atol=1e-5)


def _search(path, X, y):
    return GridSearchCV(
        make_pipeline(PretrainedFeatureExtractor(NAME, weights=str(path), **KW),
                      LogisticRegression(max_iter=500)),
        {"logisticregression__C": [0.1, 1.0]}, cv=2,
    ).fit(X, y)


def test_a_fitted_search_predicts_with_the_weights_it_was_fitted_with(tmp_path):
    X, y, new = _images(8), np.arange(8) % 2, _images(seed=1)
    path = tmp_path / "w.pth"
    torch.save(_state(1), path)
    best = _search(path, X, y).best_estimator_
    expected = best[-1].predict_proba(_reference(_state(1), new))
    torch.save(_state(2), path)
    np.testing.assert_allclose(best.predict_proba(new), expected, atol=1e-5)


def test_a_deleted_weights_file_leaves_a_fitted_search_working(tmp_path):
    X, y, new = _images(8), np.arange(8) % 2, _images(seed=1)
    path = tmp_path / "w.pth"
    torch.save(_state(1), path)
    search = _search(path, X, y)
    path.unlink()
    expected = search.best_estimator_[-1].predict_proba(_reference(_state(1), new))
    np.testing.assert_allclose(search.predict_proba(new), expected, atol=1e-5)
    loaded = pickle.loads(pickle.dumps(search))
    np.testing.assert_allclose(loaded.predict_proba(new), expected, atol=1e-5)


def test_a_relative_weights_path_is_read_in_fit_only(tmp_path, monkeypatch):
    X, new = _images(), _images(seed=1)
    for seed, folder in ((1, "a"), (2, "b")):
        (tmp_path / folder).mkdir()
        torch.save(_state(seed), tmp_path / folder / "w.pth")
    monkeypatch.chdir(tmp_path / "a")
    ext = _served_by_the_store("w.pth", X)
    monkeypatch.chdir(tmp_path / "b")  # another folder's w.pth
    np.testing.assert_allclose(ext.transform(new), _reference(_state(1), new),
                               atol=1e-5)


# ---- 2. a hit is trusted only on content ------------------------------------------


def _rewrite_keeping_times(path, write):
    """Rewrite ``path`` and restore its times, as cp -p, rsync -a or tar x do."""
    stat = os.stat(path)
    write()
    assert os.path.getsize(path) == stat.st_size  # the same size, too
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _bmp(path, seed):  # a fixed size for a fixed shape
    Image.fromarray(_images(1, seed=seed)[0]).save(path)


def test_an_image_rewritten_with_its_times_restored_misses(tmp_path):
    path = str(tmp_path / "img.bmp")
    _bmp(path, 1)
    ext = PretrainedFeatureExtractor(NAME, weights=None, **KW).fit(_images(1))
    first = ext.transform([path])
    np.testing.assert_array_equal(ext.transform([path]), first)  # a hit
    _rewrite_keeping_times(path, lambda: _bmp(path, 2))
    expected = ext.set_params(feature_store=False).transform(_images(1, seed=2))
    np.testing.assert_allclose(ext.set_params(feature_store="auto").transform(
        [path]), expected, atol=1e-5)


def test_a_folder_never_serves_a_rewritten_image_to_a_later_session(tmp_path):
    skxfer.set_config(feature_store_dir=tmp_path / "features")
    path = str(tmp_path / "img.bmp")
    _bmp(path, 1)
    ext = PretrainedFeatureExtractor(NAME, weights=None, **KW).fit(_images(1))
    ext.transform([path])
    _rewrite_keeping_times(path, lambda: _bmp(path, 2))
    skxfer.clear_feature_store()  # as a new session starts
    expected = _reference(_state_of(ext), _images(1, seed=2))
    np.testing.assert_allclose(ext.transform([path]), expected, atol=1e-5)


def _state_of(ext):
    """The state dict of the torchvision model behind a fitted extractor."""
    with torch.random.fork_rng():
        from skxfer._seeding import derive_seed

        torch.manual_seed(derive_seed(ext.random_state))
        return torchvision.models.get_model(NAME, weights=None).state_dict()


@pytest.mark.parametrize("clear", [False, True])
def test_a_weights_file_rewritten_with_its_times_restored_is_read_again(
        tmp_path, clear):
    X = _images()
    path = tmp_path / "w.pth"
    torch.save(_state(1), path)
    PretrainedFeatureExtractor(NAME, weights=str(path), **KW).fit(X).transform(X)
    _rewrite_keeping_times(path, lambda: torch.save(_state(2), path))
    if clear:  # clear_feature_store() forgets the networks too
        skxfer.clear_feature_store()
    got = PretrainedFeatureExtractor(NAME, weights=str(path), **KW).fit_transform(X)
    np.testing.assert_allclose(got, _reference(_state(2), X), atol=1e-5)


def test_clear_feature_store_forgets_the_networks(monkeypatch):
    from skxfer import _backbones

    PretrainedFeatureExtractor(NAME, weights=None, **KW).fit(_images(1))
    assert len(_backbones._CACHE) == 1
    skxfer.clear_feature_store()
    assert len(_backbones._CACHE) == 0


# ---- 3. a folder that can neither lie nor break a fit ------------------------------


def _entries(folder):
    return sorted(p for p in Path(folder).rglob("*") if p.is_file())


def _filled_folder(tmp_path, ext, X):
    folder = tmp_path / "features"
    skxfer.set_config(feature_store_dir=folder)
    expected = ext.fit(X).transform(X)
    assert len(_entries(folder)) == len(X)
    skxfer.clear_feature_store()  # the next read comes from the folder
    return folder, expected


def _damage_warnings(record, folder):
    return [w for w in record if str(folder) in str(w.message)]


@pytest.mark.parametrize("damage", ["flipped", "nan", "empty", "truncated",
                                    "another network", "renamed"])
def test_a_damaged_entry_is_recomputed_with_one_warning(tmp_path, damage):
    X = _images()
    ext = PretrainedFeatureExtractor(NAME, weights=None, **KW)
    folder, expected = _filled_folder(tmp_path, ext, X)
    entries = _entries(folder)
    if damage == "another network":  # entries of 64-wide first-layer features
        other = PretrainedFeatureExtractor(NAME, weights=None, layer="features.0",
                                           **KW)
        other.fit(X).transform(X)
        entries = [p for p in _entries(folder) if p not in entries]
        for path, good in zip(entries, _entries_of(folder, entries), strict=True):
            shutil.copyfile(path, good)
    for path in _entries(folder)[:3] if damage != "another network" else []:
        data = bytearray(path.read_bytes())
        if damage == "flipped":
            data[-5] ^= 0x10
        elif damage == "nan":
            data[-4:] = np.float32(np.nan).tobytes()
        elif damage == "empty":
            data = b""  # what a crash can leave
        elif damage == "truncated":
            data = data[: len(data) // 2]
        elif damage == "renamed":  # another image's entry under this name
            data = bytearray(_entries(folder)[-1].read_bytes())
        path.write_bytes(bytes(data))
    skxfer.clear_feature_store()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = ext.transform(X)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    damaged = _damage_warnings(record, folder)
    assert len(damaged) == 1, [str(w.message) for w in record]
    assert str(damaged[0].message).endswith(
        f"of the feature store folder {str(folder)!r} did not hold what was "
        "written for them (damaged, empty, or of another shape or format); "
        "their features are computed again and rewritten.")
    skxfer.clear_feature_store()  # the entries were rewritten: all good now
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        np.testing.assert_array_equal(ext.transform(X), got)
    assert _damage_warnings(record, folder) == []


def _entries_of(folder, others):
    """For each of ``others`` (entries of another network), the entry of the same
    image under the first network."""
    out = []
    for path in others:
        same = [p for p in _entries(folder) if p.name == path.name and p != path]
        assert len(same) == 1
        out.append(same[0])
    return out


def test_an_unwritable_folder_warns_at_each_call_and_work_goes_on(tmp_path):
    X = _images()
    folder = tmp_path / "features"
    skxfer.set_config(feature_store_dir=folder)
    shutil.rmtree(folder)
    folder.write_text("not a folder any more")  # unwritable, even for root
    ext = PretrainedFeatureExtractor(NAME, weights=None, **KW)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        first = ext.fit(X).transform(X)
        again = PretrainedFeatureExtractor(NAME, weights=None, **KW).fit(X)
        second = again.transform(_images(seed=3))
    messages = [str(w.message) for w in record]
    # one per call that computed features (fit's first image, transform, the
    # second transform; the second fit is served from memory): each call
    # tries the folder again
    assert len(messages) == 3, messages
    assert set(messages) == {
        f"The feature store folder {str(folder)!r} cannot be written (ENOTDIR: "
        "Not a directory); the features it could not take are kept in memory "
        "only. It is tried again at the next call."}
    assert first.shape == second.shape == (6, 512)
    np.testing.assert_array_equal(again.transform(X), first)  # from memory


@pytest.mark.parametrize("where", ["no store", "memory", "folder"])
def test_a_missing_image_is_named_whatever_the_store(tmp_path, where):
    missing = str(tmp_path / "missing.png")
    ext = PretrainedFeatureExtractor(NAME, weights=None, **KW).fit(_images(1))
    if where == "no store":
        ext.set_params(feature_store=False)
    if where == "folder":
        skxfer.set_config(feature_store_dir=tmp_path / "features")
    _bmp(tmp_path / "a.bmp", 0)
    expected = (f"Could not read image 1 ({missing!r}): [Errno 2] No such file "
                f"or directory: {missing!r}")
    with pytest.raises(ValueError) as info:
        ext.transform([str(tmp_path / "a.bmp"), missing])
    assert str(info.value) == expected


def test_a_file_that_is_not_an_image_is_named_whatever_the_store(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    ext = PretrainedFeatureExtractor(NAME, weights=None, **KW).fit(_images(1))
    messages = set()
    for store in (False, True):
        with pytest.raises(ValueError) as info:
            ext.set_params(feature_store=store).transform([str(text)])
        messages.add(str(info.value))
    assert messages == {f"Could not read image 0 ({str(text)!r}): cannot identify "
                        f"image file {str(text)!r}"}


def test_folders_of_the_earlier_layout_are_never_read(tmp_path):
    X = _images()
    ext = PretrainedFeatureExtractor(NAME, weights=None, **KW)
    folder, expected = _filled_folder(tmp_path, ext, X)
    entries = _entries(folder)
    assert all(p.relative_to(folder).parts[0] == "v2" for p in entries)
    # the same keys in the layout an earlier version wrote: bare .npy files
    for path in entries:
        net, key = path.parent.parent.name, path.name
        old = folder / net[:2] / net / (key + ".npy")
        old.parent.mkdir(parents=True, exist_ok=True)
        np.save(old, np.full(1000, 7.0, np.float32))
        path.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(ext.transform(X), expected, atol=1e-6)
    info = skxfer.prune_feature_store(10**9)  # old entries go whatever the size
    assert info["removed"] == len(X) and info["entries"] == len(X)
    assert sorted(p.relative_to(folder).parts[0] for p in _entries(folder)) == [
        "v2"] * len(X)


def test_prune_keeps_the_most_recently_used_entries(tmp_path):
    X = _images(4)
    ext = PretrainedFeatureExtractor(NAME, weights=None, **KW)
    folder, _ = _filled_folder(tmp_path, ext, X)
    entries = _entries(folder)
    for i, path in enumerate(entries):
        os.utime(path, ns=(10**18 + i, 10**18 + i))  # the last is the newest
    size = entries[0].stat().st_size
    info = skxfer.prune_feature_store(max_bytes=2 * size + 1)
    assert info == {"removed": 2, "freed_bytes": 2 * size, "entries": 2,
                    "bytes": 2 * size}
    assert _entries(folder) == entries[2:]
    with pytest.raises(ValueError, match="max_bytes must be an int >= 0"):
        skxfer.prune_feature_store(-1)
    skxfer.set_config(feature_store_dir=False)
    with pytest.raises(ValueError, match="prune_feature_store needs a folder"):
        skxfer.prune_feature_store()
    assert skxfer.prune_feature_store(0, folder=folder)["entries"] == 0
    assert os.listdir(folder) == []


# ---- 4. settings travel with the work --------------------------------------------


class _Rows:
    """Preprocessing that logs how many images it sees (in any process)."""

    def __init__(self, log):
        self.log = str(log)

    def __call__(self, x):
        with open(self.log, "a") as f:
            f.write(f"{x.shape[0] if x.ndim == 4 else 1}\n")
        return x.float() / 255

    def __repr__(self):  # keyed by its repr (feature_store=True)
        return "_Rows()"


def test_search_workers_share_the_parents_folder(tmp_path):
    X, y = _images(24), np.arange(24) % 2
    folder, log = tmp_path / "features", tmp_path / "rows.log"
    skxfer.set_config(feature_store_dir=folder)
    ext = PretrainedFeatureExtractor(NAME, weights=None, device="cpu",
                                     preprocessing=_Rows(log), feature_store=True)
    GridSearchCV(make_pipeline(ext, LogisticRegression(max_iter=200)),
                 {"logisticregression__C": [0.1, 1.0, 10.0]}, cv=3, n_jobs=2,
                 refit=False).fit(X, y)
    assert len(_entries(folder)) == len(X)  # written by the workers
    rows = sum(int(line) for line in log.read_text().split())
    assert rows / len(X) <= 2, rows  # each worker computes an image at most once


def test_transfer_estimators_carry_the_settings_to_workers(tmp_path, digits):
    X, y = digits
    X, y = X[:120].astype(np.float32), y[:120]
    source = TransferMLPClassifier((16,), max_epochs=3, random_state=0,
                                   device="cpu").fit(X[:60], y[:60])
    folder = tmp_path / "features"
    skxfer.set_config(feature_store_dir=folder)
    GridSearchCV(
        TransferMLPClassifier((), backbone=source, freeze=True, max_epochs=2,
                              random_state=0, device="cpu"),
        {"lr": [1e-3, 1e-2]}, cv=2, n_jobs=2, refit=False,
    ).fit(X[60:], y[60:] % 2)
    # the extractor built in each worker's fit wrote each distinct row
    assert len(_entries(folder)) == len(np.unique(X[60:], axis=0))


_LOADER = """
import pickle, sys, warnings, numpy as np, torch
torch.set_num_threads(1)
import skxfer
warnings.simplefilter("always")
images = np.random.RandomState(5).randint(0, 256, (3, 32, 32, 3), np.uint8)
carried, missing = (pickle.load(open(p, "rb")) for p in sys.argv[1:3])
with warnings.catch_warnings(record=True) as record:
    carried.transform(images)         # under the settings it was pickled with
    missing.transform(images)         # its folder does not exist here
    missing.transform(images[:1])
record = [str(w.message) for w in record if "feature store" in str(w.message)]
print(len(record), record[0] if record else "")
skxfer.set_config(feature_store_bytes=1 << 20)  # this process chooses its own
carried.transform(images[::-1] // 2)
print("done")
"""


def test_a_loaded_model_works_under_the_settings_it_was_saved_with(tmp_path):
    X = _images(2)
    folder, gone = tmp_path / "features", tmp_path / "gone"
    ext = PretrainedFeatureExtractor(NAME, weights=None, **KW).fit(X)
    with skxfer.config_context(feature_store_dir=folder):
        (tmp_path / "carried.pkl").write_bytes(pickle.dumps(ext))
    with skxfer.config_context(feature_store_dir=gone):
        (tmp_path / "missing.pkl").write_bytes(pickle.dumps(ext))
    shutil.rmtree(gone)
    assert _entries(folder) == []
    result = subprocess.run(
        [sys.executable, "-c", _LOADER, str(tmp_path / "carried.pkl"),
         str(tmp_path / "missing.pkl")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    count, message = result.stdout.splitlines()[0].split(" ", 1)
    assert count == "1", result.stdout
    assert message.startswith(f"The feature store folder {str(gone)!r}, set where "
                              "this object was pickled, does not exist here; it is "
                              "not created")
    assert not gone.exists()
    assert len(_entries(folder)) == 3  # the three images, not the last three


def test_set_config_checks_each_value_and_names_it(tmp_path):
    skxfer.set_config(feature_store_bytes=np.int64(1 << 20))
    assert skxfer.get_config()["feature_store_bytes"] == 1 << 20
    with pytest.raises(ValueError, match=r"^feature_store_bytes must be an int >= 0 "
                       r"\(bytes\); got True.$"):
        skxfer.set_config(feature_store_bytes=True)
    assert skxfer.get_config()["feature_store_bytes"] == 1 << 20
    path = tmp_path / "file"
    path.write_text("")
    for value, message in [
        ("", "feature_store_dir must be a folder path (a non-empty str or "
             "os.PathLike) or False (memory only); got ''."),
        (True, "feature_store_dir must be a folder path (a non-empty str or "
               "os.PathLike) or False (memory only); got True."),
        (str(path), f"feature_store_dir={str(path)!r} is a file, not a folder. "
                    "Pass a folder path (created when missing) or False."),
    ]:
        with pytest.raises(ValueError) as info:
            skxfer.set_config(feature_store_dir=value)
        assert str(info.value) == message
    with pytest.raises(ValueError, match="feature_store must be True or False"):
        skxfer.set_config(feature_store="yes")
    skxfer.set_config(feature_store=np.bool_(False))
    assert skxfer.get_config()["feature_store"] is False


def test_config_context_restores_the_settings(tmp_path):
    before = skxfer.get_config()
    with skxfer.config_context(feature_store_dir=tmp_path / "f",
                               feature_store_bytes=1000):
        assert skxfer.get_config()["feature_store_dir"] == str(tmp_path / "f")
        assert skxfer.feature_store_info()["max_bytes"] == 1000
    assert skxfer.get_config() == before
    with pytest.raises(ValueError, match="feature_store_bytes"):
        with skxfer.config_context(feature_store_bytes=-1):
            pass


# ---- checkpoints fine-tuned to other classes ----------------------------------------


def test_a_checkpoint_with_another_head_loads_for_extraction(tmp_path, capsys):
    X = _images(2)
    tuned = _state(3, name="resnet18", num_classes=10)  # fine-tuned to 10 classes
    path = tmp_path / "tuned.pth"
    torch.save(tuned, path)
    ext = PretrainedFeatureExtractor("resnet18", weights=str(path), verbose=1, **KW)
    got = ext.fit(X).transform(X)
    assert capsys.readouterr().out == (
        f"[PretrainedFeatureExtractor] weights={str(path)!r}: the classifier head "
        "'fc' (10 outputs) does not fit resnet18 and is dropped; the features "
        "come from the layers before it.\n")
    body = {k: v for k, v in tuned.items() if not k.startswith("fc.")}
    np.testing.assert_allclose(got, _reference_resnet(body, X), atol=1e-5)
    assert PretrainedFeatureExtractor("resnet18", weights=str(path), layer="layer4",
                                      **KW).fit(X).n_features_out_ == 512
    # without verbose: silent
    PretrainedFeatureExtractor("resnet18", weights=str(path), **KW).fit(X)
    assert capsys.readouterr().out == ""


def _reference_resnet(state, X):
    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Identity()
    model.load_state_dict(state)
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(X).permute(0, 3, 1, 2).float() / 255
                            ).numpy()


def test_other_checkpoint_mismatches_name_the_file_and_the_first_key(tmp_path):
    X = _images(1)
    state = _state(0)
    wide = OrderedDict(state)
    wide["features.0.weight"] = torch.zeros(8, 3, 3, 3)
    missing = OrderedDict((k, v) for k, v in state.items() if k != "features.0.bias")
    for name, bad, what in [
        ("wide", wide, "size mismatch for 'features.0.weight': shape (8, 3, 3, 3) "
                       "in the checkpoint, (64, 3, 3, 3) in the model."),
        ("missing", missing, "the model's 'features.0.bias' is missing from it."),
    ]:
        path = tmp_path / f"{name}.pth"
        torch.save(bad, path)
        with pytest.raises(ValueError) as info:
            PretrainedFeatureExtractor(NAME, weights=str(path), **KW).fit(X)
        assert str(info.value) == (
            f"The checkpoint {str(path)!r} does not fit the model: {what[:-1]}. "
            "Pass weights= a state dict of this architecture.")


# ---- pickles of earlier versions ----------------------------------------------------


def test_pickles_of_fits_the_store_served_still_load_and_predict():
    # made by the previous version from fits served by the store (their
    # networks built when pickled); the store keys they hold are not used
    X = _images(4)
    with open(DATA / "extractor_from_store_0.2.0.dev0.pkl", "rb") as f:
        ext = pickle.load(f)
    assert "_deferred" not in ext.__dict__ and ext._store_key is None
    expected = np.load(DATA / "extractor_from_store_0.2.0.dev0_features.npy")
    np.testing.assert_allclose(ext.transform(X), expected, atol=1e-6)
    # a state without its network (no version pickled one so) is refused: the
    # weights file is never read again
    state = {k: v for k, v in ext.__dict__.items() if k != "_backbone"}
    state["_deferred"] = {"params": ext.get_params(), "seed": 0, "pooled": True}
    with pytest.raises(ValueError, match="^This fitted PretrainedFeatureExtractor "
                       "was pickled without its network; fit it again.$"):
        PretrainedFeatureExtractor.__new__(PretrainedFeatureExtractor).__setstate__(
            state)
    X = _images(12)
    with open(DATA / "transfer_from_store_0.2.0.dev0.pkl", "rb") as f:
        clf = pickle.load(f)
    np.testing.assert_allclose(
        clf.predict_proba(X),
        np.load(DATA / "transfer_from_store_0.2.0.dev0_proba.npy"), atol=1e-6)
