"""torch's threads sized to the work: the rule, the user's setting, workers."""

import os
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from joblib import Parallel, delayed
from skorch.callbacks import Callback
from torch import nn

from skxfer import (
    PretrainedFeatureExtractor,
    TransferMLPClassifier,
    TransferMLPRegressor,
    _threads,
)
from skxfer._mlp import MLP, TransferNet
from skxfer._threads import largest_product, sized_threads, threads_for

FAST = dict(max_epochs=2, random_state=0, device="cpu")


class _Threads(Callback):
    """Records torch's thread count in every training batch."""

    def initialize(self):
        self.seen = []
        return self

    def on_batch_begin(self, net, **kwargs):
        self.seen.append(torch.get_num_threads())


def _seen(est):
    return set(dict(est.net_.callbacks_)["threads"].seen)


def _record_forward(module):
    """Thread counts seen by ``module``'s forward passes (a list to read)."""
    seen = []
    module.register_forward_pre_hook(
        lambda mod, args: seen.append(torch.get_num_threads()))
    return seen


@pytest.fixture
def default4(monkeypatch):
    """torch at what is its default here: 4 threads on 4 usable CPUs.

    (The suite runs on one thread, a count set by the user; it is put back.)
    """
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    monkeypatch.setattr(_threads, "DEFAULT", 4)
    monkeypatch.setattr(_threads, "usable_cpus", lambda: 4)
    yield 4
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(120, 8)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(int)


@pytest.fixture(scope="module")
def wide():
    """512 features into 1024 units at 256 rows: 134 million multiply-adds."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(256, 512)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(int)


# ---- the rule (pure) -----------------------------------------------------------


@pytest.mark.parametrize("module, rows, macs, threads", [
    # the digits MLP: 200 rows of 64 features, 64 hidden units
    (MLP(64, (64,), 10), 200, 200 * 64 * 64, 1),
    (MLP(64, (100,), 10), 200, 200 * 64 * 100, 1),
    (MLP(64, (256,), 10), 200, 200 * 64 * 256, 2),
    # one row block of a prediction
    (MLP(512, (1024,), 10), 16, 16 * 512 * 1024, 5),
    # bench_mlp's network at batch 128 and 32
    (MLP(64, (256, 256), 10), 128, 128 * 256 * 256, 5),
    (MLP(64, (256, 256), 10), 32, 32 * 256 * 256, 1),
    # a head on 512 image features
    (MLP(512, (100,), 10), 200, 200 * 512 * 100, 6),
    (MLP(512, (1024, 1024), 10, batch_norm=True, dropout=0.1), 512,
     512 * 1024 * 1024, 16),
    # a network transferred from a tabular source: its layers are counted too
    (TransferNet(MLP(64, (2048,), 3).hidden, MLP(2048, (16,), 10)), 200,
     200 * 64 * 2048, 16),
    # convolutions are not estimated: all the CPUs
    (nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten()), 200, None, 16),
    (TransferNet(nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1),
                               nn.Flatten()), MLP(8, (), 2)), 1, None, 16),
    (nn.MultiheadAttention(8, 2), 200, None, 16),
])
def test_the_rule_sizes_threads_to_the_largest_product(module, rows, macs, threads):
    assert largest_product(module, rows) == macs
    assert threads_for(macs, cpus=16) == threads
    assert threads_for(macs, cpus=1) == 1


def test_a_layer_of_the_users_own_is_not_sized():
    class Mine(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, x):  # whatever it computes, it is not counted
            return self.linear(x) @ torch.ones(4, 4)

    assert largest_product(Mine(), 10) is None
    assert largest_product(nn.Sequential(nn.Linear(4, 4), Mine()), 10) is None
    assert largest_product(nn.Sequential(nn.Linear(4, 4), nn.GELU()), 10) == 160


def test_threads_for_never_exceeds_the_cpus_nor_goes_below_one():
    for macs in (0, 1, 10**6, 10**9, 10**12, None):
        for cpus in (1, 2, 3, 64):
            assert 1 <= threads_for(macs, cpus) <= cpus


# ---- inside fit, partial_fit, predict, transform --------------------------------


def test_a_small_fit_runs_on_one_thread_and_gives_the_count_back(default4, small):
    X, y = small
    clf = TransferMLPClassifier((16,), callbacks=[("threads", _Threads())], **FAST)
    clf.fit(X, y)
    assert _seen(clf) == {1}
    assert torch.get_num_threads() == 4
    clf.partial_fit(X, y)
    assert torch.get_num_threads() == 4
    seen = _record_forward(clf.net_.module_)
    clf.predict(X)
    clf.predict_proba(X[:1])
    clf.predict_log_proba(X)
    assert set(seen) == {1}
    assert torch.get_num_threads() == 4
    reg = TransferMLPRegressor((16,), callbacks=[("threads", _Threads())], **FAST)
    reg.fit(X, X[:, 1])
    assert _seen(reg) == {1}
    assert torch.get_num_threads() == 4


def test_a_wide_fit_keeps_the_usable_cpus(default4, wide, monkeypatch):
    X, y = wide
    clf = TransferMLPClassifier((1024,), batch_size=256,
                                callbacks=[("threads", _Threads())], **FAST)
    assert _seen(clf.fit(X, y)) == {4}
    # a process allowed fewer CPUs (affinity, a container's quota) uses no more
    monkeypatch.setattr(_threads, "usable_cpus", lambda: 2)
    assert _seen(clf.fit(X, y)) == {2}
    assert torch.get_num_threads() == 4


def test_the_users_setting_is_used_as_it_is(default4, small, wide):
    torch.set_num_threads(3)  # the user's choice
    for X, y in (small, wide):
        clf = TransferMLPClassifier((16,), callbacks=[("threads", _Threads())],
                                    **FAST).fit(X, y)
        assert _seen(clf) == {3}
        seen = _record_forward(clf.net_.module_)
        clf.predict(X)
        assert set(seen) == {3}
        assert torch.get_num_threads() == 3


def test_a_count_set_before_import_is_the_users(monkeypatch):
    # torch's default here is one of these; another count found at import is
    # one the user set
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(os.cpu_count() + 3)
        assert _threads._torch_default() is None
        torch.set_num_threads(os.cpu_count())
        assert _threads._torch_default() == os.cpu_count()
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # joblib's workers get this
        torch.set_num_threads(3)
        assert _threads._torch_default() == 3
    finally:
        torch.set_num_threads(before)


class _Raise(Callback):
    def __init__(self, error):
        self.error = error

    def on_batch_begin(self, net, **kwargs):
        raise self.error


@pytest.mark.parametrize("error", [ValueError("boom"), KeyboardInterrupt()])
def test_the_count_comes_back_after_an_error_or_ctrl_c(default4, small, error):
    X, y = small
    clf = TransferMLPClassifier((16,), callbacks=[("raise", _Raise(error))], **FAST)
    with pytest.raises(type(error)):
        clf.fit(X, y)
    assert torch.get_num_threads() == 4
    with pytest.raises(type(error)):
        with sized_threads(0):
            assert torch.get_num_threads() == 1
            raise error
    assert torch.get_num_threads() == 4


def test_no_sizing_off_the_cpu(default4):
    with sized_threads(0, "cuda"):
        assert torch.get_num_threads() == 4
    with sized_threads(0, "cpu"):
        assert torch.get_num_threads() == 1
    with sized_threads(None, "cpu"):  # all usable CPUs: never more than found
        assert torch.get_num_threads() == 4


def test_fits_in_two_python_threads_leave_the_count_as_it_was(default4, small, wide):
    # both fits inside their loops at once; each thread gives back its own count
    # (each thread has used torch before either fit starts: torch gives a new
    # thread the count last set in the process)
    barrier, start = threading.Barrier(2, timeout=60), threading.Barrier(2, timeout=60)

    class Meet(Callback):
        def on_train_begin(self, net, **kwargs):
            barrier.wait()

    results, errors = {}, []

    def fit(name, data):
        try:
            torch.get_num_threads()
            start.wait()
            X, y = data
            clf = TransferMLPClassifier(
                (1024,) if name == "wide" else (16,), batch_size=256,
                callbacks=[("meet", Meet()), ("threads", _Threads())], **FAST)
            results[name] = (_seen(clf.fit(X, y)), torch.get_num_threads())
        except Exception as err:  # reported below
            errors.append(err)

    workers = [threading.Thread(target=fit, args=(name, data))
               for name, data in (("small", small), ("wide", wide))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors
    assert results["small"] == ({1}, 4)
    assert results["wide"][1] == 4
    assert torch.get_num_threads() == 4
    later = []
    t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert later == [4]  # threads started later get the count too


def test_transform_sizes_rows_and_keeps_the_cpus_for_images(default4, small):
    X, y = small
    source = TransferMLPClassifier((16,), **FAST).fit(X, y)
    rows = PretrainedFeatureExtractor(source, feature_store=False).fit(X)
    seen = _record_forward(rows.backbone_)
    rows.transform(X)
    assert set(seen) == {1}
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    images = np.random.RandomState(0).rand(6, 3, 16, 16).astype(np.float32)
    ext = PretrainedFeatureExtractor(conv, preprocessing=None,
                                     feature_store=False).fit(images)
    seen = _record_forward(ext.backbone_)
    ext.transform(images)
    assert set(seen) == {4}
    assert torch.get_num_threads() == 4


# ---- workers ---------------------------------------------------------------------


def _in_a_worker(X, y):
    clf = TransferMLPClassifier((1024,), batch_size=256,
                                callbacks=[("threads", _Threads())], **FAST)
    return (max(_seen(clf.fit(X, y))), torch.get_num_threads(), _threads.DEFAULT,
            threads_for(None, min(torch.get_num_threads(), _threads.usable_cpus())))


def test_loky_workers_stay_within_their_share_of_the_cores(wide):
    # joblib gives each of n_jobs workers cores // n_jobs threads; the sizing
    # treats that as torch's default there and never goes above it, even for
    # work that could use every core
    cores = max(os.cpu_count(), 2)
    out = Parallel(n_jobs=2)(delayed(_in_a_worker)(*wide) for _ in range(2))
    for in_fit, count, default, most in out:
        assert in_fit * 2 <= cores and most * 2 <= cores, out
        assert count == default  # recognised as the default: sized there too


# ---- the one-off import ----------------------------------------------------------


def test_prediction_and_transform_never_import_torch_dynamo(small, tmp_path):
    # torch's optimizers import torch._dynamo when first built (about a second
    # in a fresh process); a process that only predicts never pays it
    X, y = small
    clf = TransferMLPClassifier((16,), **FAST).fit(X, y)
    ext = PretrainedFeatureExtractor(clf, feature_store=False).fit(X)
    path = tmp_path / "models.pkl"
    path.write_bytes(pickle.dumps((clf, ext, X)))
    code = (
        "import pickle, sys\n"
        "import skxfer\n"
        "assert 'torch._dynamo' not in sys.modules, 'import skxfer'\n"
        f"clf, ext, X = pickle.load(open({str(path)!r}, 'rb'))\n"
        "clf.predict(X); clf.predict_proba(X); ext.transform(X)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ---- adversarial: nesting, lr_find, validation sets, errors, pickles -------------


@pytest.fixture
def forward_counts():
    """Thread counts seen by every module's forward pass while the test runs."""
    seen = []
    handle = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda mod, args: seen.append(torch.get_num_threads()))
    yield seen
    handle.remove()


def test_nested_blocks_leave_each_level_its_count(default4):
    with sized_threads(0):
        with sized_threads(None):  # finds 1, not the default: left alone
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
        with sized_threads(10**12):
            assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 4
    with sized_threads(None):
        with sized_threads(0):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 4
    assert torch.get_num_threads() == 4


def test_lr_find_runs_its_fits_sized_and_gives_the_count_back(
        default4, small, forward_counts):
    # the range test ends its fit with an exception of its own
    from skxfer import lr_find

    X, y = small
    result = lr_find(TransferMLPClassifier((16,), random_state=0), X, y,
                     num_steps=12)
    assert len(result.losses) > 0
    assert set(forward_counts) == {1}
    assert torch.get_num_threads() == 4


def test_a_given_validation_set_is_scored_on_the_sized_threads(
        default4, small, forward_counts):
    X, y = small
    clf = TransferMLPClassifier((16,), early_stopping=True, max_epochs=3,
                                random_state=0, device="cpu")
    clf.fit(X[:80], y[:80], X_val=X[80:], y_val=y[80:])
    assert len(clf.validation_scores_) == 3
    assert set(forward_counts) == {1}
    assert torch.get_num_threads() == 4


def test_a_prediction_that_raises_gives_the_count_back(default4, small):
    X, y = small
    clf = TransferMLPClassifier((16,), **FAST).fit(X, y)
    clf.net_.module_.register_forward_pre_hook(
        lambda mod, args: (_ for _ in ()).throw(RuntimeError("inside forward")))
    with pytest.raises(RuntimeError, match="inside forward"):
        clf.predict(X)
    assert torch.get_num_threads() == 4


def test_an_unpickled_model_is_sized_as_the_fitted_one(default4, small):
    X, y = small
    fitted = TransferMLPClassifier((16,), **FAST).fit(X, y)
    clf, ext = pickle.loads(pickle.dumps(
        (fitted, PretrainedFeatureExtractor(fitted, feature_store=False).fit(X))))
    seen = _record_forward(clf.net_.module_)
    clf.predict_proba(X)
    assert set(seen) == {1}
    seen = _record_forward(ext.backbone_)
    ext.transform(X)
    assert set(seen) == {1}
    assert torch.get_num_threads() == 4
