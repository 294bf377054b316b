"""A network of the user's own is stored by default, keyed on everything that
decides its output: structure, weights, attributes, code, what the code reads
from its globals, hooks. A notebook that changes any of them misses."""

import json
import os
import subprocess
import sys
import textwrap
import threading
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from torch import nn

import skxfer
from skxfer import PretrainedFeatureExtractor, TransferMLPClassifier

# Rows through the counting network. A counter must sit where the store's key
# does not look: the key takes in every global the network's code reads (a
# list ROWS read by forward would be keyed by its contents, and every count
# would give the next fit a new key). So forward reaches it through sys, a
# library module, which is keyed by its name and version only -- exactly the
# kind of state the README lists as not seen.
ROWS = [0]


class CountingCNN(nn.Module):
    """A small CNN of the user's own that counts the rows it computes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.pool = nn.AdaptiveAvgPool2d(2)

    def forward(self, x):
        sys.modules[__name__].ROWS[0] += len(x)
        return torch.relu(self.pool(self.conv(x))).flatten(1)


@pytest.fixture(autouse=True)
def fresh_store():
    skxfer.clear_feature_store()
    ROWS[0] = 0
    yield
    skxfer.clear_feature_store()


@pytest.fixture(scope="module")
def images():
    X, y = load_digits(return_X_y=True)
    return (X[:60] / 16).reshape(-1, 8, 8).astype(np.float32), y[:60] % 2


def entries():
    return skxfer.feature_store_info()["entries"]


def features(net, X, **kw):
    return PretrainedFeatureExtractor(net, device="cpu", **kw).fit(X).transform(X)


def check_miss(net, X, before):
    """``net`` computes anew (new entries), and gives its own numbers."""
    got = features(net, X)
    expected = features(net, X, feature_store=False)
    np.testing.assert_allclose(got, expected, atol=1e-6,
                               err_msg="stale features from the store")
    assert entries() == before + len(X), "not stored"
    return got


def cell(source, namespace=None):
    """Run ``source`` as a notebook cell runs it (in ``namespace``)."""
    namespace = {"__name__": "__main__"} if namespace is None else namespace
    exec(compile(textwrap.dedent(source), "<cell>", "exec"), namespace)
    return namespace


NOTEBOOK = """
import torch
from torch import nn

def helper(x):
    return torch.tanh(x)

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.scale = 1.0

    def forward(self, x):
        return helper(self.conv(x)).mean((2, 3)) * self.scale
"""


def notebook_net(namespace=None, source=NOTEBOOK):
    namespace = cell(source, namespace)
    torch.manual_seed(0)
    return namespace["Net"](), namespace


# ---- one pass per image, with default parameters -------------------------------------


def test_a_pipeline_search_over_a_users_module_runs_it_once_per_image(images):
    X, y = images  # 60 images: 5 folds x 10 candidates + refit
    grid = GridSearchCV(
        make_pipeline(PretrainedFeatureExtractor(CountingCNN()), LogisticRegression()),
        {"logisticregression__C": list(np.logspace(-3, 2, 10))}, cv=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X, y)
    assert ROWS[0] / len(X) <= 1.05, ROWS[0] / len(X)
    assert entries() == len(X)


def test_a_frozen_transfer_search_over_a_users_module_runs_it_once_per_image(images):
    X, y = images  # 5 folds x 2 candidates + refit
    grid = GridSearchCV(
        TransferMLPClassifier(backbone=CountingCNN(), freeze=True, max_epochs=5,
                              random_state=0),
        {"hidden_layer_sizes": [(), (8,)]}, cv=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X, y)
    assert ROWS[0] / len(X) <= 1.05, ROWS[0] / len(X)
    assert grid.best_estimator_.predict(X).shape == (60,)


# ---- what a notebook changes misses ------------------------------------------------


def test_forward_redefined_in_a_new_cell_misses_and_the_same_cell_again_hits(images):
    X, _ = images
    net, _ = notebook_net()
    first = features(net, X)
    assert entries() == len(X)
    # the same cell run again: a new class, the same code and weights
    again, _ = notebook_net()
    np.testing.assert_array_equal(features(again, X), first)
    assert entries() == len(X)
    # the cell edited: same class name, same weights, another forward
    changed, _ = notebook_net(source=NOTEBOOK.replace(".mean((2, 3))",
                                                      ".amax((2, 3))"))
    changed.load_state_dict(net.state_dict())
    got = check_miss(changed, X, len(X))
    assert not np.allclose(got, first)


def test_forward_reassigned_on_the_class_misses(images):
    X, _ = images
    net, namespace = notebook_net()
    first = features(net, X)
    Net = namespace["Net"]
    old = Net.forward
    Net.forward = lambda self, x: self.conv(x).mean((2, 3))  # no tanh any more
    try:
        got = check_miss(net, X, len(X))
    finally:
        Net.forward = old
    assert not np.allclose(got, first)
    np.testing.assert_array_equal(features(net, X), first)  # back: a hit
    assert entries() == 2 * len(X)


def test_a_redefined_helper_misses(images):
    X, _ = images
    net, namespace = notebook_net()
    first = features(net, X)
    cell("def helper(x):\n    return torch.sigmoid(x)\n", namespace)
    got = check_miss(net, X, len(X))  # the very same module object
    assert not np.allclose(got, first)
    # a helper behind a library's wrapper that pickles by name (lru_cache)
    cell("import functools\n@functools.lru_cache\ndef factor():\n    return 2.0\n"
         "def helper(x):\n    return torch.sigmoid(x) * factor()\n", namespace)
    check_miss(net, X, 2 * len(X))
    cell("@functools.lru_cache\ndef factor():\n    return 3.0\n", namespace)
    check_miss(net, X, 3 * len(X))


def test_changed_attributes_and_globals_miss(images):
    X, _ = images
    net, namespace = notebook_net()
    features(net, X)
    n = len(X)
    net.scale = 2.0  # a plain attribute
    check_miss(net, X, n)
    # a tensor held as a plain attribute (not a buffer), changed in place
    cell(NOTEBOOK.replace("* self.scale", "* self.scale + self.offset"), namespace)
    net2 = namespace["Net"]()
    net2.load_state_dict(net.state_dict())
    net2.offset = torch.zeros(4)
    check_miss(net2, X, 2 * n)
    net2.offset[0] = 1.0
    check_miss(net2, X, 3 * n)
    # a global constant that forward reads
    cell("SHIFT = 0.5\ndef helper(x):\n    return torch.tanh(x) + SHIFT\n", namespace)
    check_miss(net2, X, 4 * n)
    namespace["SHIFT"] = 0.25
    check_miss(net2, X, 5 * n)
    # a global array, changed in place
    cell("import numpy as np\nW = np.ones(4, dtype=np.float32)\n"
         "def helper(x):\n"
         "    return torch.tanh(x) * torch.from_numpy(W)[:, None, None]\n",
         namespace)
    check_miss(net2, X, 6 * n)
    namespace["W"][1] = 3.0
    check_miss(net2, X, 7 * n)


def test_a_hook_added_misses_and_removed_hits_again(images):
    X, _ = images
    net, _ = notebook_net()
    first = features(net, X)
    handle = net.register_forward_hook(lambda module, args, out: out * 2)
    np.testing.assert_allclose(check_miss(net, X, len(X)), 2 * first, rtol=1e-6)
    handle.remove()
    np.testing.assert_array_equal(features(net, X), first)
    assert entries() == 2 * len(X)
    # a pre-forward hook on a submodule, and a hook redefined with other code
    handle = net.conv.register_forward_pre_hook(lambda module, args: args[0] * 3)
    check_miss(net, X, 2 * len(X))
    handle.remove()
    net.conv.register_forward_pre_hook(lambda module, args: args[0] * 4)
    check_miss(net, X, 3 * len(X))


def test_closures_defaults_and_decorators_are_keyed(images):
    X, _ = images
    factory = """
    import torch
    from torch import nn

    def make(scale):
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(1, 4, 3)

            def forward(self, x, power=1):
                return self.conv(x).mean((2, 3)) * scale ** power

        return Net
    """
    make = cell(factory)["make"]
    torch.manual_seed(0)
    net = make(1.0)()
    features(net, X)
    # the same source text, another value in the closure
    other = make(2.0)()
    other.load_state_dict(net.state_dict())
    check_miss(other, X, len(X))
    # another default argument
    other.forward.__func__.__defaults__ = (2,)
    check_miss(other, X, 2 * len(X))
    # a forward decorated by a library (torch.no_grad wraps it in torch's code)
    decorated = NOTEBOOK.replace("    def forward",
                                 "    @torch.no_grad()\n    def forward")
    net, _ = notebook_net(source=decorated)
    features(net, X)
    changed, _ = notebook_net(source=decorated.replace("helper(self", "(self"))
    changed.load_state_dict(net.state_dict())
    check_miss(changed, X, 4 * len(X))


def test_a_module_imported_inside_forward_is_keyed(images, tmp_path,
                                                  monkeypatch):
    import importlib

    X, _ = images
    (tmp_path / "lazy_helpers.py").write_text(
        "import torch\n\ndef squash(x):\n    return torch.tanh(x)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    net, _ = notebook_net(source=NOTEBOOK.replace(
        "        return helper(", "        import lazy_helpers\n"
        "        return lazy_helpers.squash("))
    features(net, X)  # imports it
    first = features(net, X)
    assert entries() == 2 * len(X)  # the first fit keyed it before the import
    (tmp_path / "lazy_helpers.py").write_text(
        "import torch\n\ndef squash(x):\n    return torch.sigmoid(x) * 2\n")
    importlib.reload(sys.modules["lazy_helpers"])
    try:
        got = check_miss(net, X, 2 * len(X))
    finally:
        del sys.modules["lazy_helpers"]
    assert not np.allclose(got, first)


# ---- the same network, in this process and another -------------------------------


MODULE = """
import sys

import torch
from torch import nn

ROWS = [0]


def helper(x):
    return torch.tanh(x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.names = {"a", "b", "c", "d"}  # a set: its order follows str hashes

    def forward(self, x):
        sys.modules[__name__].ROWS[0] += len(x)
        return helper(self.conv(x)).mean((2, 3))


def build():
    torch.manual_seed(0)
    return Net()
"""

CHILD = """
import json, sys
import numpy as np
import torch
import skxfer
from skxfer import PretrainedFeatureExtractor
import userkeys_net

X = np.load(sys.argv[1])
skxfer.set_config(feature_store_dir=sys.argv[2])
ext = PretrainedFeatureExtractor(userkeys_net.build(), device="cpu").fit(X)
out = ext.transform(X)
print(json.dumps({"key": ext._store_key, "rows": userkeys_net.ROWS[0],
                  "out": out.tolist()}))
"""


def test_the_same_module_rebuilt_hits_here_and_in_another_process(images, tmp_path,
                                                                   monkeypatch):
    X, _ = images
    (tmp_path / "userkeys_net.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import userkeys_net

    folder = tmp_path / "features"
    skxfer.set_config(feature_store_dir=folder)
    try:
        ext = PretrainedFeatureExtractor(userkeys_net.build(), device="cpu").fit(X)
        expected = ext.transform(X)
        assert userkeys_net.ROWS[0] == len(X)
        rebuilt = PretrainedFeatureExtractor(userkeys_net.build(), device="cpu").fit(X)
        np.testing.assert_array_equal(rebuilt.transform(X), expected)
        assert userkeys_net.ROWS[0] == len(X) and rebuilt._store_key == ext._store_key
    finally:
        skxfer.set_config(feature_store_dir=False)
    np.save(tmp_path / "X.npy", X)
    env = {**os.environ, "PYTHONHASHSEED": "12345",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd(),
                                          os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "X.npy"), str(folder)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    child = json.loads(result.stdout.splitlines()[-1])
    assert child["key"] == ext._store_key  # no address, no id(), no hash seed
    assert child["rows"] == 1  # the fit's probe; every row from the folder
    np.testing.assert_array_equal(np.asarray(child["out"], np.float32), expected)


# ---- what cannot be keyed ----------------------------------------------------------


class _Guard:
    """Holds a lock; a copy gets a lock of its own."""

    def __init__(self):
        self.lock = threading.Lock()

    def __deepcopy__(self, memo):
        return _Guard()


class _Locked(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.guard = _Guard()

    def forward(self, x):
        with self.guard.lock:
            return self.conv(x).mean((2, 3))


LOCK = threading.Lock()


class _ReadsALock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        with LOCK:
            return self.conv(x).mean((2, 3))


def test_a_module_that_cannot_be_keyed_is_not_stored_with_one_note(images, capsys):
    X, _ = images
    tail = (", which cannot be keyed by its content; feature_store=True stores the "
            "features anyway, keyed on the network's structure and weights only.\n")
    ext = PretrainedFeatureExtractor(_Locked(), device="cpu", verbose=1).fit(X)
    assert capsys.readouterr().out == (
        "[PretrainedFeatureExtractor] The feature store is off: model.guard.lock is "
        "a _thread.lock" + tail)
    ext.set_params(verbose=0).transform(X)
    assert entries() == 0
    PretrainedFeatureExtractor(_ReadsALock(), device="cpu", verbose=1).fit(X)
    assert capsys.readouterr().out == (
        "[PretrainedFeatureExtractor] The feature store is off: model -> "
        "_ReadsALock.forward -> global 'LOCK' is a _thread.lock" + tail)
    PretrainedFeatureExtractor(_Locked(), device="cpu").fit(X)
    assert capsys.readouterr().out == ""  # only at verbose
    # feature_store=True stores it, keyed on its structure and weights
    net = _Locked()
    features(net, X, feature_store=True)
    assert entries() == len(X)
    net.conv.bias.data += 1
    features(net, X, feature_store=True)
    assert entries() == 2 * len(X)


# ---- preprocessing ----------------------------------------------------------------


def test_torchvision_v2_transforms_are_stored_and_keyed_by_content(images, capsys):
    from torchvision.transforms import v2

    X, _ = images
    net, _ = notebook_net()

    def run(preprocessing, **kw):
        return PretrainedFeatureExtractor(
            net, device="cpu", preprocessing=preprocessing, **kw).fit(X).transform(X)

    eye = torch.eye(64)
    flip = eye.flip(0)  # reverses the pixels: the same repr, other numbers
    a = run(v2.Compose([v2.Normalize([0.5], [0.25]), v2.LinearTransformation(
        eye, torch.zeros(64))]))
    assert entries() == len(X)
    assert repr(v2.LinearTransformation(eye, torch.zeros(64))) == repr(
        v2.LinearTransformation(flip, torch.zeros(64)))
    b = run(v2.Compose([v2.Normalize([0.5], [0.25]), v2.LinearTransformation(
        flip, torch.zeros(64))]))
    assert entries() == 2 * len(X) and not np.allclose(a, b)
    run(v2.Compose([v2.Normalize([0.5], [0.5]), v2.LinearTransformation(
        eye, torch.zeros(64))]))
    assert entries() == 3 * len(X)
    # a random transform is not stored (its output is not a function of the
    # input); nor is a Lambda, which runs a callable of the user's
    run(v2.RandomHorizontalFlip(), verbose=1)
    assert entries() == 3 * len(X)
    assert capsys.readouterr().out.startswith(
        "[PretrainedFeatureExtractor] The feature store is off: "
        "preprocessing=RandomHorizontalFlip is a callable of your own or a random "
        "transform, and a callable need not show what it computes; "
        "feature_store=True stores the features anyway, keyed on its repr.")
    run(v2.Compose([v2.Lambda(lambda x: x * 2)]))
    assert entries() == 3 * len(X)


def test_a_fit_the_store_serves_builds_its_copy_of_a_users_module_at_first_use(images):
    X, _ = images
    net, _ = notebook_net()
    expected = features(net, X[:40])
    ext = PretrainedFeatureExtractor(net, device="cpu").fit(X[:40])
    assert "_backbone" not in ext.__dict__  # no build: every row is stored
    np.testing.assert_array_equal(ext.transform(X[:40]), expected)
    # the user's module changed after fit: the fitted extractor keeps what
    # fit copied (and stores the new rows under the key of that copy)
    with torch.no_grad():
        net.conv.weight.mul_(-1)
    fresh = PretrainedFeatureExtractor(net, device="cpu").fit(X[:1])
    got = ext.transform(X)
    assert "_recipe" not in ext.__dict__ and ext.backbone_ is not None
    np.testing.assert_allclose(got[:40], expected)
    np.testing.assert_allclose(got[40:], features(notebook_net()[0], X[40:],
                                                  feature_store=False), atol=1e-6)
    assert not np.allclose(fresh.transform(X[40:]), got[40:])


GLOBAL_COUNT = [0]


class _CountsInAGlobal(nn.Module):
    """Counts its rows in a global list that forward reads (and changes)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        GLOBAL_COUNT[0] += len(x)
        return self.conv(x).mean((2, 3))


def test_state_forward_changes_misses_by_default_and_true_stores_it(images):
    X, _ = images
    net = _CountsInAGlobal()
    GLOBAL_COUNT[0] = 0
    for _ in range(3):  # the count is part of the key: every fit a new key
        PretrainedFeatureExtractor(net, device="cpu").fit(X).transform(X)
    assert entries() == 3 * len(X) and GLOBAL_COUNT[0] == 3 * len(X)
    skxfer.clear_feature_store()
    GLOBAL_COUNT[0] = 0
    for _ in range(3):  # the user answers for the code: structure and weights
        PretrainedFeatureExtractor(net, device="cpu",
                                   feature_store=True).fit(X).transform(X)
    assert entries() == len(X) and GLOBAL_COUNT[0] == len(X)
