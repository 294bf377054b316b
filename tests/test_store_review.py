"""The feature store tried as an adversary would: what it must never do.

Prune only what is provably an entry; the same random network in every
thread; preprocessing keyed by what it computes; checkpoints loaded as torch
loads them; folder faults that cost an entry, not a session; files checked
before they are read whole; settings that reach the workers of a search and
stay inside their block; messages that name the problem; one read per file;
memory that is counted; headers checked whole; squeezenet's representation.
"""

import builtins
import copy
import errno
import gc
import os
import pickle
import struct
import threading
import tracemalloc
import warnings
import weakref
from collections import OrderedDict
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils.parallel import Parallel, delayed

import skxfer
from skxfer import PretrainedFeatureExtractor, _store

torchvision = pytest.importorskip("torchvision")

NAME = "squeezenet1_1"
KW = dict(preprocessing=None, device="cpu", num_workers=0)


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


def _pngs(folder, n=6, seed=0):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(_images(n, seed)):
        path = folder / f"img{i}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    return paths


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*")
                  if p.is_file() or p.is_symlink())


def _entries(folder):
    return [p for p in Path(folder).rglob("*")
            if p.is_file() and not p.name.startswith(".")]


def _ext(**kw):
    return PretrainedFeatureExtractor(NAME, **{"weights": None, **KW, **kw})


def _state(seed, name=NAME, **kw):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return torchvision.models.get_model(name, weights=None, **kw).state_dict()


def _squeezenet_features(state, X, num_classes=1000):
    """What comes before squeezenet's classifier (its last convolution),
    pooled as the classifier pools: built by hand."""
    model = torchvision.models.squeezenet1_1(weights=None, num_classes=num_classes)
    model.load_state_dict(state)
    model.eval()
    x = torch.from_numpy(X).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        return model.features(x).mean((2, 3)).numpy()


# ---- 1. prune removes provable store entries only -----------------------------------


def _user_data(root):
    """A data folder whose names look like a store's."""
    data = Path(root)
    _pngs(data / "v2" / "train" / "cats", 3)
    _pngs(data / "v2" / "val" / "dogs", 2)
    (data / "v2" / "empty" / "dir").mkdir(parents=True)
    (data / "ab" / "cafe").mkdir(parents=True)
    np.save(data / "ab" / "cafe" / "beef.npy", np.zeros(3, np.float32))
    net, key = "ab" + "0" * 38, "cd" + "1" * 38
    (data / "ab" / net).mkdir(parents=True)
    np.save(data / "ab" / net / "beef.npy", np.zeros(3, np.float32))
    # a user's file with exactly an entry's name and place, not an entry
    lookalike = data / "v2" / net / "cd" / key
    lookalike.parent.mkdir(parents=True)
    lookalike.write_bytes(b"my own bytes, not features" * 10)
    (data / "README.txt").write_text("my data")
    return data


def test_prune_removes_nothing_but_store_entries(tmp_path):
    data = _user_data(tmp_path / "dataset")
    # a real store elsewhere, and a link to one of its entries in the data
    store = tmp_path / "store"
    skxfer.set_config(feature_store_dir=store)
    _ext().fit(_images(2)).transform(_images(3, seed=1))
    entry = _entries(store)[0]
    link = data / "v2" / entry.parent.parent.name / entry.parent.name / entry.name
    link.parent.mkdir(parents=True)
    link.symlink_to(entry)
    before = _files(data)
    assert skxfer.prune_feature_store(10**9, folder=data)["removed"] == 0
    assert skxfer.prune_feature_store(0, folder=data)["removed"] == 0
    assert _files(data) == before and (data / "v2" / "empty" / "dir").is_dir()
    assert entry.exists()  # a link is never followed
    assert skxfer.prune_feature_store(0, folder=store)["entries"] == 0
    assert _entries(store) == []
    # the same through the folder in force: a store set to a project folder
    project = tmp_path / "project"
    pictures = _pngs(project / "v2" / "imgs" / "a", 2)
    skxfer.set_config(feature_store_dir=project)
    skxfer.clear_feature_store()
    _ext().fit(_images(2)).transform(_images(3, seed=1))
    info = skxfer.prune_feature_store(0)
    assert info["removed"] == 4 and info["entries"] == 0  # the probe's, and 3
    assert sorted(str(p) for p in (project / "v2" / "imgs" / "a").iterdir()) == \
        pictures


def test_prune_removes_entries_of_the_earlier_layout_by_their_exact_names(tmp_path):
    net, key = "ab" + "2" * 38, "cd" + "3" * 38
    old = tmp_path / "ab" / net / (key + ".npy")
    old.parent.mkdir(parents=True)
    np.save(old, np.ones(8, np.float32))
    not_old = tmp_path / "ab" / net / (key[:-1] + ".npy")  # a name too short
    np.save(not_old, np.ones(8, np.float32))
    pickled = tmp_path / "ab" / net / ("ef" + "4" * 38 + ".npy")  # not features
    np.save(pickled, np.array(["text"], dtype=object), allow_pickle=True)
    info = skxfer.prune_feature_store(10**9, folder=tmp_path)
    assert info["removed"] == 1 and not old.exists()
    assert not_old.exists() and pickled.exists()


# ---- 2. random weights: the same network in every thread --------------------------


def test_fits_in_threads_get_the_same_random_network():
    X = _images(3, seed=1)
    expected = _ext(feature_store=False).fit(X).transform(X)
    for _ in range(2):
        skxfer.clear_feature_store()
        outs, barrier = [None] * 4, threading.Barrier(4)

        def work(i, barrier=barrier, outs=outs):
            barrier.wait()
            outs[i] = _ext(feature_store=False).fit(X).transform(X)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        torch.manual_seed(123)
        state = torch.random.get_rng_state()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # the caller's global RNG is as it was
        assert torch.equal(torch.random.get_rng_state(), state)
        for out in outs:
            np.testing.assert_array_equal(out, expected)
        # and the network the registry kept is the right one
        np.testing.assert_array_equal(
            _ext(feature_store=False).fit(X).transform(X), expected)


def test_random_weights_are_drawn_apart_from_other_threads(monkeypatch):
    from torch.nn import init

    X = _images(2, seed=1)
    expected = _ext(feature_store=False).fit(X).transform(X)
    skxfer.clear_feature_store()
    real = init.kaiming_uniform_

    def interfering(*args, **kwargs):
        # another thread reseeds and draws from torch's global generator
        # in the middle of the build
        other = threading.Thread(target=lambda: (torch.manual_seed(99),
                                                 torch.rand(10)))
        other.start()
        other.join()
        return real(*args, **kwargs)

    monkeypatch.setattr(init, "kaiming_uniform_", interfering)
    got = _ext(feature_store=False).fit(X).transform(X)
    np.testing.assert_array_equal(got, expected)


def test_a_threaded_search_equals_the_serial_one():
    X, y, new = _images(16, seed=3), np.arange(16) % 2, _images(4, seed=4)

    def search(n_jobs):
        return GridSearchCV(
            make_pipeline(_ext(feature_store=False),
                          LogisticRegression(max_iter=500)),
            {"logisticregression__C": [0.01, 1.0, 100.0]}, cv=2, n_jobs=n_jobs,
        ).fit(X, y)

    serial = search(1)
    skxfer.clear_feature_store()
    with joblib.parallel_backend("threading"):
        threaded = search(2)
    np.testing.assert_array_equal(serial.cv_results_["mean_test_score"],
                                  threaded.cv_results_["mean_test_score"])
    np.testing.assert_array_equal(serial.best_estimator_[0].transform(new),
                                  threaded.best_estimator_[0].transform(new))


# ---- 3. preprocessing whose repr does not say what it computes --------------------


def test_feature_store_true_keys_a_lambda_by_its_function():
    from torchvision import transforms

    X = _images(3, seed=7).transpose(0, 3, 1, 2)
    first = transforms.Compose([transforms.Lambda(lambda x: x.float() / 255)])
    second = transforms.Compose([transforms.Lambda(lambda x: 1 - x.float() / 255)])
    assert repr(first) == repr(second)
    a = _ext(preprocessing=first, feature_store=True).fit(X).transform(X)
    b = _ext(preprocessing=second, feature_store=True).fit(X).transform(X)
    truth = _ext(preprocessing=second, feature_store=False).fit(X).transform(X)
    np.testing.assert_allclose(b, truth, atol=1e-6)
    assert not np.allclose(a, b)
    assert skxfer.feature_store_info()["entries"] == 2 * len(X)
    # the same function again: a hit
    again = transforms.Compose([transforms.Lambda(lambda x: x.float() / 255)])
    _ext(preprocessing=again, feature_store=True).fit(X).transform(X)
    assert skxfer.feature_store_info()["entries"] == 2 * len(X)


def test_feature_store_true_refuses_a_preprocessing_it_cannot_tell_apart(capsys):
    from torchvision import transforms

    X = _images(2, seed=7).transpose(0, 3, 1, 2)
    lock = threading.Lock()

    def scale(x):
        with lock:
            return x.float() / 255

    _ext(preprocessing=transforms.Compose([transforms.Lambda(scale)]),
         feature_store=True, verbose=1).fit(X).transform(X)
    assert skxfer.feature_store_info()["entries"] == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "[PretrainedFeatureExtractor] The feature store is off: "
        "preprocessing.transforms[0].lambd -> test_feature_store_true_refuses_a_"
        "preprocessing_it_cannot_tell_apart.<locals>.scale -> closure variable "
        "'lock' is a _thread.lock, which cannot be keyed by its content, and its "
        "repr 'Compose(\\n    Lambda()\\n)' does not show what it computes.\n"), out
    assert out.count("The feature store is off") == 1


# ---- 4. checkpoints as torch loads them ------------------------------------------


def test_a_checkpoint_without_num_batches_tracked_loads_as_torch_loads_it(tmp_path):
    X = _images(2)
    state = _state(0, name="resnet18")
    path = tmp_path / "old.pth"
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, path)  # a plain dict: saved before BatchNorm counted batches
    model = torchvision.models.resnet18()
    model.load_state_dict(torch.load(path, weights_only=True))  # torch: fine
    model.fc = torch.nn.Identity()
    with torch.inference_mode():
        expected = model.eval()(torch.from_numpy(X).permute(0, 3, 1, 2).float()
                                / 255).numpy()
    got = PretrainedFeatureExtractor("resnet18", weights=str(path), **KW).fit(X)
    np.testing.assert_allclose(got.transform(X), expected, atol=1e-5)
    # a state dict that says it has them (its metadata's version) and lacks
    # one is refused, as torch refuses it
    del state["bn1.num_batches_tracked"]
    torch.save(state, path)
    with pytest.raises(RuntimeError, match="num_batches_tracked"):
        torchvision.models.resnet18().load_state_dict(torch.load(path,
                                                                 weights_only=True))
    with pytest.raises(ValueError, match="the model's 'bn1.num_batches_tracked' "
                                         "is missing from it"):
        PretrainedFeatureExtractor("resnet18", weights=str(path), **KW).fit(X)


# ---- 5. folder faults cost an entry, not the session --------------------------------


def _unwritable_warnings(record, folder):
    return [str(w.message) for w in record
            if f"feature store folder {str(folder)!r} cannot be written"
            in str(w.message)]


def test_a_bad_entry_costs_that_entry_only(tmp_path, monkeypatch):
    folder = tmp_path / "features"
    skxfer.set_config(feature_store_dir=folder)
    ext = _ext().fit(_images(1, seed=9))
    X = _images(4, seed=1)
    bad = _store.entry_path(str(folder), ext._store_key, ext._item_keys(X[1:2])[0])
    real = os.replace

    def replace(src, dst):
        if dst == bad:
            raise IsADirectoryError(errno.EISDIR, "Is a directory", dst)
        return real(src, dst)

    monkeypatch.setattr(_store.os, "replace", replace)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ext.transform(X)
    messages = _unwritable_warnings(record, folder)
    assert len(messages) == 1, [str(w.message) for w in record]
    assert messages[0].startswith(f"The feature store folder {str(folder)!r} "
                                  "cannot be written (EISDIR: Is a directory)")
    assert len(_entries(folder)) == 1 + 3  # the fit's probe, and all but one
    monkeypatch.setattr(_store.os, "replace", real)
    skxfer.clear_feature_store()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ext.transform(X)  # the next call writes it: nothing was remembered
        ext.transform(_images(2, seed=2))
    assert _unwritable_warnings(record, folder) == []
    assert len(_entries(folder)) == 1 + 4 + 2


def test_a_folder_removed_by_a_concurrent_prune_is_made_again(tmp_path, monkeypatch):
    folder = tmp_path / "features"
    skxfer.set_config(feature_store_dir=folder)
    ext = _ext().fit(_images(1, seed=9))
    real = os.makedirs
    pruned = []

    def makedirs_then_prune(path, *args, **kwargs):
        real(path, *args, **kwargs)
        if not pruned:  # another process prunes between makedirs and mkstemp
            pruned.append(path)
            os.rmdir(path)

    monkeypatch.setattr(_store.os, "makedirs", makedirs_then_prune)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ext.transform(_images(3, seed=5))
    assert pruned and _unwritable_warnings(record, folder) == []
    assert len(_entries(folder)) == 1 + 3


def test_each_call_tries_the_folder_again(tmp_path, monkeypatch):
    folder = tmp_path / "features"
    skxfer.set_config(feature_store_dir=folder)
    ext = _ext().fit(_images(1, seed=9))

    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", dst)

    real = os.replace
    monkeypatch.setattr(_store.os, "replace", refuse)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ext.transform(_images(3, seed=1))
        ext.transform(_images(3, seed=2))
    messages = _unwritable_warnings(record, folder)
    assert len(messages) == 2  # once per call, whatever the entries
    assert "EACCES" in messages[0] and "kept in memory only" in messages[0]
    monkeypatch.setattr(_store.os, "replace", real)
    ext.transform(_images(3, seed=3))
    assert len(_entries(folder)) == 1 + 3


# ---- 6. files checked before they are read whole --------------------------------


def _peak(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_huge_file_that_is_not_an_image_is_refused_unread(tmp_path):
    big = tmp_path / "huge.png"
    with open(big, "wb") as f:
        f.truncate(256 << 20)  # sparse: no disk used
    ext = _ext().fit(_images(1))
    messages = set()
    for store in (False, True):
        ext.set_params(feature_store=store)

        def run():
            with pytest.raises(ValueError) as info:
                ext.transform([str(big)])
            messages.add(str(info.value))

        assert _peak(run) < 32 << 20
    assert messages == {f"Could not read image 0 ({str(big)!r}): cannot identify "
                        f"image file {str(big)!r}"}


def test_a_memory_error_is_named(tmp_path, monkeypatch):
    from skxfer import _extract

    path = _pngs(tmp_path, 1)[0]
    ext = _ext().fit(_images(1))

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(_extract, "read_file", no_memory)
    with pytest.raises(ValueError) as info:
        ext.transform([path])
    assert str(info.value) == (
        f"Could not read image 0 ({path!r}): MemoryError (not enough memory "
        "to read the file)")


def test_a_huge_folder_entry_is_not_read_whole(tmp_path):
    folder = tmp_path / "features"
    skxfer.set_config(feature_store_dir=folder)
    X = _images(1, seed=3)
    ext = _ext().fit(_images(1))
    expected = ext.transform(X)
    (entry,) = [p for p in _entries(folder) if p.name == ext._item_keys(X)[0]]
    with open(entry, "r+b") as f:
        f.truncate(256 << 20)  # the header says 512 floats; the file is huge
    skxfer.clear_feature_store()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        peak = _peak(lambda: np.testing.assert_allclose(ext.transform(X),
                                                        expected, atol=1e-6))
    assert peak < 32 << 20
    assert any("did not hold what was written" in str(w.message) for w in record)
    assert entry.stat().st_size < 4096  # rewritten


# ---- 7. config_context reaches the workers of a search ----------------------------


def test_config_context_reaches_threading_workers(tmp_path):
    X, y = _images(8, seed=21), np.arange(8) % 2
    folder = tmp_path / "features"
    with skxfer.config_context(feature_store=False), \
            joblib.parallel_backend("threading"):
        seen = Parallel(n_jobs=2)(
            delayed(lambda: skxfer.get_config()["feature_store"])()
            for _ in range(6))
        GridSearchCV(make_pipeline(_ext(), LogisticRegression()),
                     {"logisticregression__C": [0.1, 1, 10]}, cv=2,
                     n_jobs=2).fit(X, y)
    assert seen == [False] * 6
    assert skxfer.feature_store_info()["entries"] == 0
    with skxfer.config_context(feature_store_dir=folder), \
            joblib.parallel_backend("threading"):
        GridSearchCV(make_pipeline(_ext(), LogisticRegression()),
                     {"logisticregression__C": [0.1, 1, 10]}, cv=2,
                     n_jobs=2, refit=False).fit(X, y)
    assert len(_entries(folder)) == len(X)
    assert skxfer.get_config()["feature_store_dir"] is None


def test_config_context_reaches_process_workers(tmp_path):
    # more tasks than joblib dispatches from the calling thread
    X, y = _images(9, seed=22), np.arange(9) % 2
    folder = tmp_path / "features"
    with skxfer.config_context(feature_store_dir=folder):
        GridSearchCV(make_pipeline(_ext(), LogisticRegression()),
                     {"logisticregression__C": [0.1, 1, 10]}, cv=3, n_jobs=2,
                     refit=False).fit(X, y)
    assert len(_entries(folder)) == len(X)


def test_a_block_is_seen_by_threads_that_have_none_of_their_own():
    seen = {}
    entered, checked, other = threading.Event(), threading.Event(), threading.Event()

    def block(name, value, wait):
        with skxfer.config_context(feature_store_bytes=value):
            entered.set()
            wait.wait()
            seen[name] = skxfer.get_config()["feature_store_bytes"]

    def bare(name):
        seen[name] = skxfer.get_config()["feature_store_bytes"]

    a = threading.Thread(target=block, args=("a", 111, checked))
    a.start()
    entered.wait()
    t = threading.Thread(target=bare, args=("bare, one block",))
    t.start()
    t.join()
    entered.clear()
    b = threading.Thread(target=block, args=("b", 222, other))
    b.start()
    entered.wait()
    t = threading.Thread(target=bare, args=("bare, two blocks",))
    t.start()
    t.join()
    checked.set()
    other.set()
    a.join()
    b.join()
    assert seen == {"bare, one block": 111, "bare, two blocks": 512 << 20,
                    "a": 111, "b": 222}
    assert skxfer.get_config()["feature_store_bytes"] == 512 << 20


# ---- 8. a block's settings stay in the block --------------------------------------


def test_copies_made_in_a_block_do_not_carry_it_out(tmp_path, monkeypatch):
    # a process that never called set_config: carried settings would apply
    monkeypatch.setattr(_store, "_explicit", [False])
    folder = tmp_path / "features"
    ext = _ext().fit(_images(2))
    skxfer.clear_feature_store()
    with skxfer.config_context(feature_store=False, feature_store_dir=folder):
        copied = copy.deepcopy(ext)
        pickled = pickle.loads(pickle.dumps(ext))
        cloned = clone(copied)
        copied.transform(_images(2, seed=4))  # inside: the block's settings
        assert skxfer.feature_store_info()["entries"] == 0
    for i, other in enumerate((copied, pickled, cloned.fit(_images(2)))):
        skxfer.clear_feature_store()
        other.transform(_images(3, seed=i))
        assert skxfer.feature_store_info()["entries"] == 3  # the process's
    assert _entries(folder) == []


def test_a_block_of_another_process_with_the_same_id_applies_there(monkeypatch):
    # a worker on another machine or in another container may have the
    # driver's process id: what it carries from the driver's block applies
    ext = _ext().fit(_images(2))
    with skxfer.config_context(feature_store=False):
        pickled = pickle.dumps(ext)
    # loaded in a worker that never called set_config, with the same id
    monkeypatch.setattr(_store, "_explicit", [False])
    monkeypatch.setattr(_store, "_TOKEN", "another process", raising=False)
    skxfer.clear_feature_store()
    pickle.loads(pickled).transform(_images(3, seed=5))
    assert skxfer.feature_store_info()["entries"] == 0  # the driver's block


# ---- 9. messages ------------------------------------------------------------------


def test_messages_name_the_setting_and_the_fix(tmp_path):
    with pytest.raises(ValueError) as info:
        skxfer.set_config(feature_store_dir=str(tmp_path / "a\0b"))
    assert str(info.value) == (
        "feature_store_dir must be a folder path (a non-empty str or os.PathLike) "
        f"or False (memory only); got {str(tmp_path / 'a') + chr(0) + 'b'!r}, "
        "which holds a null byte.")
    with pytest.raises(ValueError) as info:
        skxfer.prune_feature_store(0, folder="")
    assert str(info.value) == (
        "folder must be a folder path (a non-empty str or os.PathLike) or None "
        "(the feature_store_dir in force); got ''.")


def test_a_dataparallel_checkpoint_loads_without_its_prefix(tmp_path):
    X = _images(2)
    state = _state(4)
    path = tmp_path / "dp.pth"
    torch.save(OrderedDict(("module." + k, v) for k, v in state.items()), path)
    got = PretrainedFeatureExtractor(NAME, weights=str(path), **KW).fit(X)
    np.testing.assert_allclose(got.transform(X), _squeezenet_features(state, X),
                               atol=1e-5)


def test_an_unknown_wrapper_lists_its_keys(tmp_path):
    path = tmp_path / "wrapped.pth"
    torch.save({"net": _state(0), "epoch": 3}, path)
    with pytest.raises(ValueError) as info:
        PretrainedFeatureExtractor(NAME, weights=str(path), **KW).fit(_images(1))
    assert str(info.value) == (
        f"weights={str(path)!r} does not hold a state dict saved with "
        "torch.save(model.state_dict(), path) (got a dict with keys 'net', "
        "'epoch'). If the state dict is one of its values, save that one: "
        "torch.save(checkpoint['net'], path).")


# ---- 10. a cold transform reads each file once ------------------------------------


@pytest.mark.parametrize("folder", [False, True])
def test_a_cold_transform_reads_each_file_once(tmp_path, monkeypatch, folder):
    paths = _pngs(tmp_path / "images", 6, seed=70)
    if folder:
        skxfer.set_config(feature_store_dir=tmp_path / "features")
    ext = _ext().fit(_images(2))
    opened = []
    real = builtins.open

    def counting(file, *args, **kwargs):
        if str(file) in paths:
            opened.append(str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting)
    cold = ext.transform(paths)
    assert sorted(opened) == sorted(paths)
    if folder:  # a later session: every feature from the folder, one read each
        skxfer.clear_feature_store()
        opened.clear()
        np.testing.assert_array_equal(ext.transform(paths), cold)
        assert sorted(opened) == sorted(paths)


def test_a_file_keyed_in_a_worker_is_served_from_memory(tmp_path):
    # a file this process cannot vouch for (never hashed here) is read and
    # hashed where it is decoded; stored features are not computed again
    paths = _pngs(tmp_path / "images", 4, seed=71)
    ext = _ext().fit(_images(2))
    expected = ext.transform(paths)
    rows = []
    body = ext.backbone_
    ext.backbone_ = _Counting(body, rows)
    from skxfer import _keys

    _keys.FILES.clear()  # forgotten which file holds what
    np.testing.assert_array_equal(ext.transform(paths), expected)
    assert rows == []


class _Counting(torch.nn.Module):
    def __init__(self, body, rows):
        super().__init__()
        self.body, self.rows = body, rows

    def forward(self, x):
        self.rows.append(len(x))
        return self.body(x)


# ---- 11. memory that is counted ---------------------------------------------------


def test_feature_store_info_counts_the_file_keys_and_the_networks(tmp_path):
    paths = _pngs(tmp_path, 6)
    _ext().fit(_images(1)).transform(paths)
    info = skxfer.feature_store_info()
    assert info["files"] == 6
    assert 0 < info["files_bytes"] <= 6 * 400
    assert info["models"] == 1
    squeezenet = sum(t.numel() * t.element_size()
                     for t in _state(0).values())
    assert info["models_bytes"] == squeezenet
    skxfer.clear_feature_store()
    assert skxfer.feature_store_info()["files"] == 0
    assert skxfer.feature_store_info()["models"] == 0


def test_the_registry_lets_go_of_networks_beyond_its_budget(monkeypatch):
    from skxfer import _backbones
    from skxfer._seeding import derive_seed

    monkeypatch.setattr(_backbones, "_REGISTRY_BYTES", 1)
    X = _images(1)
    held = _ext().fit(X)
    held.transform(X)
    served = _ext().fit(X)  # served by the store: holds the prototype, unbuilt
    prototype = weakref.ref(served.__dict__["_recipe"].prototype)
    PretrainedFeatureExtractor("resnet18", weights=None, **KW).fit(X)
    gc.collect()
    info = skxfer.feature_store_info()
    assert info["models"] == 1  # the most recent one, whatever its size
    # still held by an extractor: found again, not built again
    assert _backbones.named_prototype(NAME, None, seed=derive_seed(0)) is \
        prototype()
    del served
    PretrainedFeatureExtractor("resnet18", weights=None, **KW).fit(X)
    gc.collect()
    assert prototype() is None  # nobody holds it: released


# ---- 12. headers checked whole; squeezenet's representation -----------------------


def test_a_reserved_header_byte_that_is_not_zero_is_damage(tmp_path):
    folder = tmp_path / "features"
    skxfer.set_config(feature_store_dir=folder)
    X = _images(1, seed=3)
    ext = _ext().fit(_images(1))
    expected = ext.transform(X)
    (entry,) = [p for p in _entries(folder) if p.name == ext._item_keys(X)[0]]
    data = bytearray(entry.read_bytes())
    assert struct.unpack_from("<H", data, 6) == (0,)
    data[6] = 1
    entry.write_bytes(bytes(data))
    skxfer.clear_feature_store()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        np.testing.assert_allclose(ext.transform(X), expected, atol=1e-6)
    assert any("did not hold what was written" in str(w.message) for w in record)
    assert entry.read_bytes()[6] == 0  # rewritten


def test_squeezenet_gives_the_representation_before_its_classifier(tmp_path, capsys):
    X = _images(2)
    state = _state(0)
    ext = _ext(random_state=None)
    torch.save(state, tmp_path / "w.pth")
    got = _ext(weights=str(tmp_path / "w.pth")).fit(X)
    assert got.n_features_out_ == 512
    np.testing.assert_allclose(got.transform(X), _squeezenet_features(state, X),
                               atol=1e-5)
    assert ext.fit(X).n_features_out_ == 512
    # fine-tuned to 10 classes: its classifier is dropped, as a Linear head is
    tuned = _state(1, num_classes=10)
    path = tmp_path / "tuned.pth"
    torch.save(tuned, path)
    got = _ext(weights=str(path), verbose=1).fit(X)
    assert capsys.readouterr().out == (
        f"[PretrainedFeatureExtractor] weights={str(path)!r}: the classifier head "
        "'classifier.1' (10 outputs) does not fit squeezenet1_1 and is dropped; "
        "the features come from the layers before it.\n")
    np.testing.assert_allclose(got.transform(X),
                               _squeezenet_features(tuned, X, num_classes=10),
                               atol=1e-5)
