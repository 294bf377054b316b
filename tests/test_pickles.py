"""Pickles of every model shape keep loading and predicting the same.

``tests/data/core_*.pkl`` were written by ``tests/model_shapes.py`` with the
code of skxfer 0.2.0.dev0 before the training core was reorganised, together
with their outputs on held-out rows. A loaded pickle must predict those
outputs, and so must a fresh fit with the same ``random_state``: the
reorganisation changed no number.
"""

import pickle

import model_shapes
import numpy as np
import pytest

SHAPES = list(model_shapes.FIXTURES)


def _saved(name):
    with open(model_shapes.DATA / f"core_{name}.pkl", "rb") as f:
        est = pickle.load(f)
    return est, dict(np.load(model_shapes.DATA / f"core_{name}_outputs.npz"))


def _assert_same(outputs, expected):
    np.testing.assert_array_equal(outputs["predict"].shape,
                                  expected["predict"].shape)
    if "predict_proba" in expected:
        np.testing.assert_array_equal(outputs["predict"], expected["predict"])
        np.testing.assert_allclose(outputs["predict_proba"],
                                   expected["predict_proba"], rtol=0, atol=1e-6)
    else:
        np.testing.assert_allclose(outputs["predict"], expected["predict"],
                                   rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", SHAPES)
def test_saved_pickles_load_and_predict_the_same(name):
    est, expected = _saved(name)
    _assert_same(model_shapes.predictions(est, expected["X"]), expected)
    again = pickle.loads(pickle.dumps(est))  # and pickle again
    _assert_same(model_shapes.predictions(again, expected["X"]), expected)


@pytest.mark.parametrize("name", SHAPES)
def test_fresh_fits_predict_as_the_saved_models(name):
    _, expected = _saved(name)
    est, X, _ = model_shapes.fit(name)
    np.testing.assert_array_equal(X, expected["X"])
    _assert_same(model_shapes.predictions(est, X), expected)


def test_saved_pickles_continue_training():
    est, expected = _saved("warm_start")
    X, y = model_shapes.digits()
    n_iter = est.n_iter_
    est.set_params(max_epochs=1).fit(X[300:500], y[300:500] % 2)
    assert est.n_iter_ == n_iter + 1
    assert est.predict_proba(expected["X"]).shape == (60, 2)
    est, _ = _saved("partial_fit")
    est.partial_fit(X[:100], y[:100])
    assert est.n_iter_ == 3
