"""skxfer.lr_find: the learning-rate range test, and plot_lr_find."""

import statistics
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import Callback
from torch import nn

from skxfer import LRFindResult, TransferMLPClassifier, TransferMLPRegressor, lr_find
from skxfer._lr_find import suggestions

KW = dict(random_state=0, device="cpu")


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def small_cnn():
    with torch.random.fork_rng():
        torch.manual_seed(3)
        return nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(1, 8, 3, padding=1), bn1=nn.BatchNorm2d(8),
            relu1=nn.ReLU(), conv2=nn.Conv2d(8, 16, 3, padding=1),
            relu2=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(2), flatten=nn.Flatten()))


class Recording(torch.optim.SGD):
    """SGD that records, at each step, each group's rate and whether each of
    its parameters has a gradient."""

    steps = []

    def step(self, closure=None):
        loss = None if closure is None else closure()  # skorch's: the backward
        Recording.steps.append([
            (g["lr"], [p.grad is not None for p in g["params"]])
            for g in self.param_groups
        ])
        super().step()
        return loss


@pytest.fixture
def recording():
    Recording.steps = []
    yield Recording.steps
    Recording.steps = []


# ---- the test itself -------------------------------------------------------------


def test_the_rate_grows_exponentially_until_the_loss_diverges(digits):
    X, y = digits
    result = lr_find(TransferMLPClassifier((64,), **KW), X, y)
    assert isinstance(result, LRFindResult)
    n = len(result.lrs)
    assert len(result.losses) == len(result.smoothed_losses) == n
    assert result.lrs[0] == pytest.approx(1e-7)
    np.testing.assert_allclose(result.lrs[1:] / result.lrs[:-1],
                               (10 / 1e-7) ** (1 / 99))
    # it stopped at the first step whose smoothed loss passed 4x the best
    assert result.diverged and n < 100
    smoothed = result.smoothed_losses
    best = np.minimum.accumulate(smoothed)
    assert smoothed[-1] > 4 * best[-1]
    assert np.all(smoothed[:-1] <= 4 * best[:-1])
    # smoothing: the moving average with weight 0.05, bias-corrected
    average, expected = 0.0, []
    for i, loss in enumerate(result.losses, start=1):
        average = 0.95 * average + 0.05 * loss
        expected.append(average / (1 - 0.95**i))
    np.testing.assert_allclose(smoothed, expected, rtol=1e-9)
    # the suggestion: a tenth of the rate of the lowest smoothed loss, the
    # first tenth and last five steps left out
    kept = slice(10, n - 5)
    low = result.lrs[kept][np.argmin(smoothed[kept])]
    assert result.suggested_lr == result.suggestions["minimum"] == low / 10
    assert set(result.suggestions) == {"minimum", "valley", "steep"}
    assert repr(result) == (f"LRFindResult(suggested_lr={low / 10:.3g}, "
                            f"steps={n}, diverged=True)")


def test_a_test_that_does_not_diverge_runs_num_steps_over_several_epochs(digits):
    X, y = digits
    clf = TransferMLPClassifier((8,), batch_size=64, **KW)
    result = lr_find(clf, X[:300], y[:300], start_lr=1e-4, end_lr=1e-2,
                     num_steps=30)  # 5 batches per epoch
    assert len(result.lrs) == 30 and not result.diverged
    assert result.lrs[-1] == pytest.approx(1e-2)
    assert result.smoothed_losses[-1] < result.smoothed_losses[0]


def test_the_same_random_state_gives_the_same_test(digits):
    X, y = digits
    a = lr_find(TransferMLPClassifier((16,), dropout=0.2, **KW), X, y)
    b = lr_find(TransferMLPClassifier((16,), dropout=0.2, **KW), X, y)
    np.testing.assert_array_equal(a.losses, b.losses)
    assert a.suggestions == b.suggestions
    c = lr_find(TransferMLPClassifier((16,), dropout=0.2, random_state=1,
                                      device="cpu"), X, y)
    assert not np.array_equal(a.losses[:20], c.losses[:20])


def test_the_estimator_and_the_global_rngs_are_left_as_they_were(digits):
    X, y = digits
    unfitted = TransferMLPClassifier((16,), callbacks=[], **KW)
    params = unfitted.get_params()
    lr_find(unfitted, X, y, num_steps=20)
    assert unfitted.get_params() == params and not hasattr(unfitted, "net_")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = TransferMLPClassifier((16,), max_epochs=3, warm_start=True,
                                       **KW).fit(X, y)
    params, net, proba = fitted.get_params(), fitted.net_, fitted.predict_proba(X)
    state = {k: v.clone() for k, v in fitted.module_.state_dict().items()}
    np_state, torch_state = np.random.get_state(), torch.get_rng_state()
    lr_find(fitted, X, y, num_steps=20)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist()
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert fitted.get_params() == params
    assert fitted.net_ is net and fitted.n_iter_ == 3
    for k, v in fitted.module_.state_dict().items():
        assert torch.equal(v, state[k]), k
    np.testing.assert_array_equal(fitted.predict_proba(X), proba)


def test_the_estimators_callbacks_are_left_out(digits):
    X, y = digits

    class Refuse(Callback):
        def on_train_begin(self, net, **kwargs):
            raise AssertionError("the estimator's callbacks ran")

    result = lr_find(TransferMLPClassifier((16,), callbacks=[Refuse()], **KW),
                     X, y, num_steps=20)
    assert len(result.lrs) == 20


def test_weights_reach_the_loss(digits):
    X, y = digits
    clf = TransferMLPClassifier((16,), **KW)
    plain = lr_find(clf, X, y, num_steps=20)
    doubled = lr_find(clf, X, y, sample_weight=np.full(len(y), 2.0), num_steps=20)
    np.testing.assert_allclose(plain.losses, doubled.losses, rtol=1e-5)
    uneven = lr_find(clf, X, y, sample_weight=1.0 + (y == 0), num_steps=20)
    assert not np.allclose(plain.losses, uneven.losses)
    balanced = lr_find(clf.set_params(class_weight="balanced"), X, y, num_steps=20)
    assert len(balanced.losses) == 20


def test_a_pipeline_tests_its_last_step_on_what_it_receives(digits):
    X, y = digits
    X = X * 16 + 5
    clf = TransferMLPClassifier((16,), **KW)
    pipe = make_pipeline(StandardScaler(), clf)
    through = lr_find(pipe, X, y, num_steps=30)
    direct = lr_find(clf, StandardScaler().fit_transform(X), y, num_steps=30)
    np.testing.assert_array_equal(through.losses, direct.losses)
    assert not hasattr(pipe[0], "mean_")  # the pipeline is left unfitted


def test_the_regressor(digits):
    X, y = digits
    y = (y - y.mean()) / y.std()  # scaled targets, as fit wants them
    result = lr_find(TransferMLPRegressor((16,), **KW), X, y)
    assert 1e-3 < result.suggested_lr < 1e-1


# ---- parameter groups and frozen phases ------------------------------------------


def test_every_parameter_group_scales_together(digits, recording):
    X, y = digits
    images = X.reshape(-1, 8, 8).astype(np.float32)
    clf = TransferMLPClassifier(
        (), backbone=small_cnn(), freeze=False, optimizer=Recording, lr=0.01,
        momentum=0.0, backbone_lr_factor=0.1, backbone_lr_decay=0.5,
        batch_size=64, **KW)
    result = lr_find(clf, images[:640], y[:640], num_steps=40)
    assert len(recording) == len(result.lrs) == 40
    # the head's group (skorch's default group, the last) follows result.lrs;
    # the backbone's blocks (conv1, bn1, conv2) keep their rates' ratios to it
    rates = np.array([[lr for lr, _ in step] for step in recording])
    np.testing.assert_allclose(rates[:, -1], result.lrs, rtol=1e-9)
    np.testing.assert_allclose(rates / rates[:, -1:],
                               np.tile([0.025, 0.05, 0.1, 1.0], (40, 1)))


def test_phase_start_trains_what_fit_starts_with(digits, recording):
    X, y = digits
    images = X.reshape(-1, 8, 8).astype(np.float32)[:640]
    clf = TransferMLPClassifier(
        (), backbone=small_cnn(), freeze=["conv1.*", "bn1.*"], unfreeze_at=2,
        optimizer=Recording, momentum=0.0, batch_size=64, **KW)
    result = lr_find(clf, images, y[:640], num_steps=30)
    assert result.phase == "start" and len(recording) == 30
    # the first block frozen throughout; conv2 and the head train
    trains = [[has for _, grads in step for has in grads] for step in recording]
    assert all(t == trains[0] for t in trains)
    assert trains[0].count(False) == 4  # conv1 and bn1: weights and biases
    # wholly frozen: only the head trains, on features computed once
    recording.clear()
    lr_find(clf.set_params(freeze=True), images, y[:640], num_steps=30)
    assert all(len(step) == 1 for step in recording)  # the head's parameters


def test_phase_unfrozen_trains_the_first_phase_then_tests_all(digits, recording):
    X, y = digits
    images = X.reshape(-1, 8, 8).astype(np.float32)[:640]
    clf = TransferMLPClassifier(
        (), backbone=small_cnn(), freeze=True, unfreeze_at=2, optimizer=Recording,
        momentum=0.0, lr=0.05, batch_size=64, **KW)
    result = lr_find(clf, images, y[:640], num_steps=30, phase="unfrozen")
    assert result.phase == "unfrozen"
    first, test = recording[:20], recording[20:]  # 2 epochs of 10 batches
    assert len(test) == len(result.lrs) == 30
    assert all(step[-1][0] == 0.05 for step in first)
    assert all(not any(step[0][1]) for step in first)  # the backbone frozen
    np.testing.assert_allclose([step[-1][0] for step in test], result.lrs)
    assert all(all(has for _, grads in step for has in grads) for step in test)


@pytest.mark.parametrize("params, why", [
    ({}, "no backbone"),
    ({"backbone": "cnn", "freeze": True}, "unfreeze_at=None"),
])
def test_phase_unfrozen_needs_a_release(params, why, digits):
    X, y = digits
    if "backbone" in params:
        params = {**params, "backbone": small_cnn()}
    with pytest.raises(ValueError) as err:
        lr_find(TransferMLPClassifier(**params, **KW), X, y, phase="unfrozen")
    assert str(err.value) == (
        "phase='unfrozen' runs the test on the network as unfreeze_at releases "
        f"it, but this estimator has {why}: nothing is released. Use "
        "phase='start'."
    )


# ---- bad input -------------------------------------------------------------------


def test_bad_settings_are_listed_in_one_error(digits):
    X, y = digits
    with pytest.raises(ValueError) as err:
        lr_find(TransferMLPClassifier(), X, y, start_lr=1e-2, end_lr=1e-3,
                num_steps=5, smooth=0.0, diverge_factor=1, phase="head")
    assert str(err.value).splitlines() == [
        "The 'end_lr' parameter of lr_find must be a float > start_lr. Got 0.001 "
        "instead.",
        "The 'num_steps' parameter of lr_find must be an int >= 10. Got 5 instead.",
        "The 'smooth' parameter of lr_find must be a float in the range (0, 1]. "
        "Got 0.0 instead.",
        "The 'diverge_factor' parameter of lr_find must be a float > 1. Got 1 "
        "instead.",
        "The 'phase' parameter of lr_find must be 'start' or 'unfrozen'. Got "
        "'head' instead.",
    ]


@pytest.mark.parametrize("estimator", [LogisticRegression(),
                                       make_pipeline(LogisticRegression())])
def test_only_skxfer_networks_are_tested(estimator, digits):
    X, y = digits
    with pytest.raises(TypeError) as err:
        lr_find(estimator, X, y)
    assert str(err.value) == (
        "lr_find needs a TransferMLPClassifier, a TransferMLPRegressor or a "
        "Pipeline ending in one; got LogisticRegression."
    )


def test_a_loss_that_diverges_at_once_gives_no_suggestion(digits):
    X, y = digits
    with pytest.warns(UserWarning, match="too soon to suggest a learning rate. "
                                         r"Lower start_lr \(now 100.0\)"):
        result = lr_find(TransferMLPClassifier((16,), optimizer="sgd", **KW), X, y,
                         start_lr=100.0, end_lr=1e6)
    assert result.suggested_lr is None and result.suggestions == {}
    assert result.diverged


def test_suggestions_read_only_finite_losses():
    lrs = np.logspace(-5, 0, 40)
    losses = np.r_[np.linspace(2, 1, 30), np.linspace(1, 3, 9), np.inf]
    found = suggestions(lrs, losses, 40)
    assert found["minimum"] == pytest.approx(lrs[29] / 10)
    assert lrs[4] <= found["valley"] <= lrs[29]


# ---- does the suggestion train well? ---------------------------------------------


GRID = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]


@pytest.mark.parametrize("task", ["MLP", "CNN"])
def test_the_suggestion_fits_as_well_as_the_best_of_a_grid(task, digits):
    # as benchmarks/bench_lr_find.py, small: test accuracy after 10 epochs,
    # the mean over 3 seeds (a seed alone varies by about 0.01)
    X, y = digits
    params = dict(hidden_layer_sizes=(64,), max_epochs=10, device="cpu")
    if task == "CNN":
        X = X.reshape(-1, 8, 8).astype(np.float32)
        params = dict(hidden_layer_sizes=(), backbone=small_cnn(), freeze=False,
                      backbone_lr_factor=0.5, batch_size=64, max_epochs=10,
                      device="cpu")
    scores = {lr: [] for lr in GRID + ["suggested"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for seed in range(3):
            X_train, X_test, y_train, y_test = train_test_split(
                X, y, random_state=seed, stratify=y)
            clf = TransferMLPClassifier(**params, random_state=seed)
            suggested = lr_find(clf, X_train, y_train).suggested_lr
            for lr in scores:
                clf.set_params(lr=suggested if lr == "suggested" else lr)
                scores[lr].append(clf.fit(X_train, y_train).score(X_test, y_test))
    mean = {lr: statistics.mean(s) for lr, s in scores.items()}
    best = max(mean[lr] for lr in GRID)
    assert mean["suggested"] >= best - 0.01, mean


# ---- the plot --------------------------------------------------------------------


def test_plot_lr_find_marks_the_suggestion(digits):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from skxfer.plotting import plot_lr_find

    X, y = digits
    result = lr_find(TransferMLPClassifier((16,), **KW), X, y)
    ax = plot_lr_find(result)
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_array_equal(lines["smoothed loss"].get_ydata(),
                                  result.smoothed_losses)
    np.testing.assert_array_equal(lines["loss"].get_xdata(), result.lrs)
    assert ax.get_xscale() == "log"
    (dot,) = ax.collections
    (x, _), = dot.get_offsets()
    assert x == result.suggested_lr
    assert dot.get_label() == f"suggested lr = {result.suggested_lr:.2g}"
    with pytest.raises(TypeError, match="needs the result of skxfer.lr_find"):
        plot_lr_find(TransferMLPClassifier())
    matplotlib.pyplot.close("all")
