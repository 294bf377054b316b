"""The training core's seams: the plan, fit's steps without training, the loss
terms, how a stop is read, the cached ``module_``, the shared docs, the layout."""

import ast
import io
import pickle
import re
import tokenize
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from skorch.callbacks import Callback, EarlyStopping
from torch import nn

from skxfer import (
    PretrainedFeatureExtractor,
    TransferMLPClassifier,
    TransferMLPRegressor,
)
from skxfer._callbacks import stopped_early
from skxfer._freezing import L2SP
from skxfer._losses import LossTerm, SourceTarget
from skxfer._mlp import MLP, TransferNet
from skxfer._net import SkxferNet, as_tensor_data
from skxfer._plan import TransferPlan, architecture
from skxfer._training import (
    Run,
    Setup,
    Targets,
    build_module,
    history_attributes,
    net_settings,
)

KW = dict(random_state=0, device="cpu")
PACKAGE = Path(__file__).resolve().parents[1] / "skxfer"


@pytest.fixture(scope="module")
def digits_small():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0)[:300], y[:300]


@pytest.fixture(scope="module")
def source(digits_small):
    X, y = digits_small
    return TransferMLPClassifier((16, 8), max_epochs=3, **KW).fit(X, y)


def cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


# ---- the model's shape, settled once --------------------------------------------


class _Extractor:
    """What a plan reads of a fitted extractor."""

    def __init__(self, tabular):
        self._tabular = tabular


@pytest.mark.parametrize("backbone, freeze, unfreeze_at, rows, mode", [
    (None, True, None, True, "mlp"),
    ("table", True, None, True, "features_then_head"),
    ("table", 1, None, True, "end_to_end"),
    ("images", True, 3, False, "end_to_end"),
    ("images", True, None, False, "features_then_head"),
    ("images", False, None, False, "end_to_end"),
])
def test_plan_for_a_fit_from_parameters_and_backbone(backbone, freeze, unfreeze_at,
                                                     rows, mode):
    extractor = None if backbone is None else _Extractor(backbone == "table")
    params = {"freeze": freeze, "unfreeze_at": unfreeze_at}
    plan = TransferPlan.for_fit(params, extractor)
    assert (plan.mode, plan.rows) == (mode, rows)
    assert plan.trains_on_rows == (rows or mode != "end_to_end")


def test_plan_of_a_fitted_model_is_the_plan_it_was_fitted_with(digits_small,
                                                               source):
    X, y = digits_small
    images = X.reshape(-1, 8, 8).astype(np.float32)
    fits = [
        (TransferMLPClassifier((4,), max_epochs=1, **KW), X),
        (TransferMLPClassifier((4,), backbone=source, max_epochs=1, **KW), X),
        (TransferMLPClassifier((4,), backbone=cnn(), max_epochs=1, **KW), images),
        (TransferMLPClassifier((4,), backbone=cnn(), freeze=False, max_epochs=1,
                               **KW), images),
    ]
    modes = []
    for clf, data in fits:
        clf.fit(data[:60], y[:60])
        fitted = TransferPlan.of_fitted(clf.extractor_, clf.net_.module_)
        assert clf._plan == fitted
        # where a loss term finds the head's last hidden representation
        hidden = clf.net_.module_.get_submodule(fitted.representation)
        assert hidden is clf.module_.get_submodule(
            "head.hidden" if clf.extractor_ is not None else "hidden")
        assert pickle.loads(pickle.dumps(clf))._plan == fitted
        modes.append((fitted.mode, fitted.rows))
    assert modes == [("mlp", True), ("features_then_head", True),
                     ("features_then_head", False), ("end_to_end", False)]


# ---- fit's steps, without training ------------------------------------------------


def test_fit_steps_are_functions_of_explicit_inputs(source):
    params = TransferMLPClassifier(
        (8,), backbone=source, freeze=1, unfreeze_at=2, l2_sp=0.5,
        backbone_lr_factor=0.1, early_stopping=True, device="cpu",
    ).get_params(deep=False)
    extractor = PretrainedFeatureExtractor(source, weights=None, device="cpu")
    extractor.fit(np.zeros((2, 64)))
    plan = TransferPlan.for_fit(params, extractor)
    assert plan == TransferPlan("end_to_end", True)
    module = build_module(params, plan, extractor, 8, 3)
    assert isinstance(module, TransferNet) and module.head.output.out_features == 3
    assert module.backbone is extractor.backbone_
    assert hasattr(module, "sp_reference")  # L2-SP's starting weights
    setup = Setup("cpu", np.random.RandomState(0), seed=1, split_seed=2,
                  architecture=architecture(params))
    targets = Targets(np.zeros(50, dtype=np.int64), 3, classifier=True,
                      criterion=nn.CrossEntropyLoss,
                      class_weights=np.array([1.0, 2.0, 3.0]))
    settings = net_settings(params, plan, Run(), setup, targets, extractor, 50)
    callbacks = dict(settings["callbacks"])
    assert callbacks["freezer"].patterns == ["backbone.0.linear.weight",
                                             "backbone.0.linear.bias"]
    assert callbacks["unfreezer"].at == 3
    assert "early_stopping" in callbacks and "training_plateau" not in callbacks
    assert settings["train_split"].random_state == 2
    assert settings["optimizer__param_groups"] == [("backbone.*", {"lr": 1e-4})]
    [term] = settings["loss_terms"]
    assert isinstance(term, L2SP) and term.weight == 0.25
    assert settings["criterion__weight"].tolist() == [1.0, 2.0, 3.0]
    assert settings["batch_size"] == 45  # 'auto': the rows left for training
    # partial_fit never stops on a plateau
    no_es = {**params, "early_stopping": False}
    assert "training_plateau" in dict(net_settings(
        no_es, plan, Run(), setup, targets, extractor, 50)["callbacks"])
    assert "training_plateau" not in dict(net_settings(
        no_es, plan, Run(continuing=True, partial=True, epochs=1), setup, targets,
        extractor, 50)["callbacks"])


def test_history_becomes_scikit_learn_attributes():
    history = [{"train_loss": 3.0, "valid_loss": 2.0, "valid_score": 0.5},
               {"train_loss": 2.0, "valid_loss": 1.0, "valid_score": 0.7},
               {"train_loss": 1.0, "valid_loss": 1.5, "valid_score": 0.6}]
    fitted = history_attributes(history, early_stopping=True, run_start=2)
    assert fitted["loss_curve_"] == [3.0, 2.0, 1.0] and fitted["n_iter_"] == 3
    assert fitted["best_loss_"] is None
    # the latest run's best: the weights kept are that run's
    assert fitted["best_validation_loss_"] == 1.5
    assert fitted["best_validation_score_"] == 0.6
    plain = history_attributes([{"train_loss": 2.0}, {"train_loss": 1.0}],
                               early_stopping=False, run_start=0)
    assert plain["best_loss_"] == 1.0 and plain["validation_loss_curve_"] is None


def test_a_changed_architecture_is_named():
    params = TransferMLPClassifier(freeze=1).get_params(deep=False)
    from skxfer._plan import check_architecture

    with pytest.raises(ValueError, match=r"partial_fit continues training the "
                       r"fitted network, but freeze changed \(now 'all'\)"):
        check_architecture(architecture(params), {**params, "freeze": True},
                           Run(partial=True).method)


# ---- one seam for extra loss terms ------------------------------------------------


class _Seen(LossTerm):
    """Records what it is given; adds ``weight * mean output`` of its layer."""

    name = "seen"
    weight = 0.5
    layers = ("hidden.0",)

    def __init__(self):
        self.calls = []

    def __call__(self, module, activations):
        self.calls.append((dict(activations.source), dict(activations.target)))
        return activations.source["hidden.0"].mean()


def _net(terms):
    torch.manual_seed(0)
    return SkxferNet(module=MLP(4, (3,), 2), criterion=nn.CrossEntropyLoss,
                     loss_terms=terms, train_split=None, batch_size=5,
                     max_epochs=2, verbose=0, device="cpu").initialize()


def test_a_loss_term_reads_named_layers_of_source_and_target_batches():
    term = _Seen()
    net = _net([term])
    source, target = torch.randn(5, 4), torch.randn(7, 4)
    net.module_.train()
    y_pred = net.infer(SourceTarget(source, target))
    assert y_pred.shape == (5, 2)  # the source's predictions only
    y = torch.tensor([0, 1, 0, 1, 1])
    loss = net.get_loss(y_pred, y, training=True)
    [(seen_source, seen_target)] = term.calls
    hidden = net.module_.hidden[0]
    torch.testing.assert_close(seen_source["hidden.0"], hidden(source))
    torch.testing.assert_close(seen_target["hidden.0"], hidden(target))
    supervised = nn.functional.cross_entropy(y_pred, y)
    torch.testing.assert_close(loss, supervised + 0.5 * hidden(source).mean())
    # validation adds no term and captures nothing
    net.module_.eval()
    net.get_loss(net.infer(source), y, training=False)
    assert len(term.calls) == 1


def test_each_terms_value_is_recorded_per_epoch():
    term = _Seen()
    net = _net([term])
    X = torch.randn(20, 4)
    net.partial_fit(as_tensor_data(X, torch.arange(20) % 2, "cpu"), None)
    assert len(term.calls) == 8  # 4 batches in each of 2 epochs
    values = net.history[:, "seen"]
    assert len(values) == 2 and all(v != 0 for v in values)
    assert all(target == {} for _, target in term.calls)  # no target batch
    with pytest.raises(ValueError, match=r"reads layers \['nowhere'\]"):
        _net([type("Bad", (_Seen,), {"layers": ("nowhere",)})()])
    with pytest.raises(ValueError, match="names of their own"):
        _net([_Seen(), _Seen()])


def test_l2_sp_is_a_loss_term_recorded_in_the_history(digits_small, source):
    X, y = digits_small
    clf = TransferMLPClassifier((4,), backbone=source, freeze=True, unfreeze_at=1,
                                l2_sp=1.0, max_epochs=3, **KW).fit(X, y % 2)
    values = clf.history_[:, "l2_sp"]
    assert values[0] == 0.0  # frozen: nothing to pull back
    assert values[1] > 0 and values[2] > values[1]
    plain = TransferMLPClassifier((4,), backbone=source, freeze=False, max_epochs=1,
                                  **KW).fit(X, y % 2)
    assert "l2_sp" not in plain.history_[-1]


# ---- stopping, read from the callbacks in one place --------------------------------


class _Net:
    def __init__(self, *callbacks):
        self.callbacks_ = [(f"cb{i}", cb) for i, cb in enumerate(callbacks)]


def test_stopped_early_reads_the_callbacks_public_state():
    stopping = EarlyStopping(patience=2)
    assert not stopped_early(_Net(stopping, Callback()))
    stopping.misses_ = 2
    assert stopped_early(_Net(Callback(), stopping))
    never = EarlyStopping(patience=0)  # patience 0 never stops
    assert not stopped_early(_Net(never))
    assert not stopped_early(object())


class _InterruptAtBatch(Callback):
    def on_batch_begin(self, net, **kwargs):
        raise KeyboardInterrupt


def test_ctrl_c_after_a_carried_plateau_still_propagates(digits_small):
    X, y = digits_small
    clf = TransferMLPClassifier((8,), tol=10.0, n_iter_no_change=2, max_epochs=50,
                                warm_start=True, **KW).fit(X, y)
    assert clf.n_iter_ == 3  # stopped on the plateau
    proba = clf.predict_proba(X[:5])
    # the history already shows the plateau: only an epoch's end may stop now
    with pytest.raises(KeyboardInterrupt):
        clf.set_params(callbacks=[_InterruptAtBatch()]).fit(X, y)
    assert clf.n_iter_ == 3
    np.testing.assert_array_equal(clf.predict_proba(X[:5]), proba)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf.set_params(callbacks=None).fit(X, y)  # stops again: converged
    assert clf.n_iter_ == 4


def test_a_users_early_stopping_ends_training_quietly(digits_small):
    X, y = digits_small
    stop = EarlyStopping(monitor="train_loss", patience=1, threshold=100.0,
                         threshold_mode="abs")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = TransferMLPClassifier((8,), max_epochs=50, callbacks=[stop],
                                    **KW).fit(X, y)
    assert clf.n_iter_ == 2


# ---- module_ built once -------------------------------------------------------------


@pytest.mark.parametrize("freeze", [True, False])
def test_module_is_built_once_and_follows_warm_starts(digits_small, freeze):
    X, y = digits_small
    images = X.reshape(-1, 8, 8).astype(np.float32)[:60]
    clf = TransferMLPClassifier((4,), backbone=cnn(), freeze=freeze, max_epochs=1,
                                warm_start=True, **KW).fit(images, y[:60])
    module = clf.module_
    assert clf.module_ is module
    assert module.backbone is clf.extractor_.backbone_
    head = module.head if freeze else module
    assert (head is clf.net_.module_) if freeze else (module is clf.net_.module_)
    clf.fit(images, y[:60])  # a warm start trains a copy: a new module_
    assert clf.module_ is not module and clf.module_ is clf.module_
    if freeze:
        assert clf.module_.head is clf.net_.module_
    else:
        assert clf.module_ is clf.net_.module_
    assert clf.module_.backbone is clf.extractor_.backbone_


def test_module_view_is_pickled_once(digits_small):
    X, y = digits_small
    images = X.reshape(-1, 8, 8).astype(np.float32)[:60]
    clf = TransferMLPClassifier((4,), backbone=cnn(), max_epochs=1, **KW).fit(
        images, y[:60])
    size = len(pickle.dumps(clf))
    view = clf.module_
    assert len(pickle.dumps(clf)) == size and "_module" not in clf.__getstate__()
    loaded = pickle.loads(pickle.dumps(clf))
    assert loaded.module_ is loaded.module_ is not view
    assert loaded.module_.backbone is loaded.extractor_.backbone_
    with pytest.raises(ValueError, match="failed"):  # a failed refit keeps it
        clf.set_params(callbacks=[_Fail()]).fit(images, y[:60])
    assert clf.module_ is view


class _Fail(Callback):
    def on_epoch_end(self, net, **kwargs):
        raise ValueError("failed")


# ---- docs that static tools read -----------------------------------------------------


def _sections(doc):
    """numpydoc sections of ``doc``: ``{section: {name: text}}``."""
    lines = doc.expandtabs().splitlines()
    sections, current, name = {}, None, None
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and re.fullmatch(r"\s*-{3,}", lines[i + 1]):
            current, name = line.strip(), None
            sections[current] = {}
            continue
        if current is None or re.fullmatch(r"\s*-{3,}", line):
            continue
        match = re.fullmatch(r" {4}(\w+) : .*", line)
        if match:
            name = match.group(1)
            sections[current][name] = line
        elif name is not None:
            sections[current][name] += "\n" + line
    return sections


def test_shared_parameter_docs_of_classifier_and_regressor_agree():
    clf = _sections(TransferMLPClassifier.__doc__)
    reg = _sections(TransferMLPRegressor.__doc__)
    for section in ("Parameters", "Attributes"):
        shared = set(clf[section]) & set(reg[section])
        assert len(shared) > 10
        for name in shared:
            assert clf[section][name].strip() == reg[section][name].strip(), name
    assert set(clf["Parameters"]) - set(reg["Parameters"]) == {"class_weight"}
    params = TransferMLPRegressor().get_params()
    assert list(reg["Parameters"]) == list(params) or set(
        reg["Parameters"]) == set(params)
    for method in (TransferMLPRegressor.fit, TransferMLPRegressor.partial_fit):
        assert "class" not in method.__doc__
    assert "bench_" not in TransferMLPClassifier.__doc__


def test_class_docstrings_are_literal():
    # static tools (IDEs, pydoc, sphinx autodoc without imports) read them
    tree = ast.parse((PACKAGE / "_estimators.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.startswith("Transfer"):
            assert ast.get_docstring(node), node.name


# ---- pickle paths -------------------------------------------------------------------

PICKLED_NAMES = {
    "skxfer._estimators": ["TransferMLPClassifier", "TransferMLPRegressor",
                           "_TrainingPlateau", "_WeightedEpochLoss", "_ValidScore",
                           "_StopOnNonFinite", "_noop"],
    "skxfer._net": ["SkxferNet", "ValidSplit", "TensorData", "BatchIterator",
                    "PaddedBatch"],
    "skxfer._mlp": ["MLP", "Hidden", "TransferNet"],
    "skxfer._backbones": ["LayerTap", "_Output"],
    "skxfer._extract": ["PretrainedFeatureExtractor", "_Pool"],
}


@pytest.mark.parametrize("module", sorted(PICKLED_NAMES))
def test_names_in_pickles_stay_importable(module):
    import importlib

    loaded = importlib.import_module(module)
    for name in PICKLED_NAMES[module]:
        assert hasattr(loaded, name), f"{module}.{name}"


# ---- layout -------------------------------------------------------------------------

CORE = ["_estimators.py", "_plan.py", "_inputs.py", "_training.py", "_callbacks.py",
        "_losses.py", "_inference.py", "_persistence.py", "_source.py", "_net.py",
        "_mlp.py", "_freezing.py", "_validation.py", "_saving.py", "_device.py",
        "plotting.py", "_adaptation.py"]


def _code_lines(source):
    """Line numbers holding code: not blank, a comment or a docstring."""
    tree = ast.parse(source)
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                             ast.AsyncFunctionDef)) and ast.get_docstring(node):
            first = node.body[0]
            docs.update(range(first.lineno, first.end_lineno + 1))
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE,
                            tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines - docs, tree


@pytest.mark.parametrize("name", CORE)
def test_core_modules_stay_small_and_inspect_no_frames(name):
    source = (PACKAGE / name).read_text()
    lines, tree = _code_lines(source)
    assert len(lines) <= 900, f"{name}: {len(lines)} lines of code"
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            inside = [n for n in lines if node.lineno <= n <= node.end_lineno]
            assert len(inside) <= 400, f"{name}: class {node.name}"
    for word in ("inspect", "traceback", "tb_frame", "f_locals", "_getframe"):
        assert not re.search(rf"\b{word}\b", source), (name, word)
