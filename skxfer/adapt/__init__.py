"""Domain adaptation: align source features with a target domain's.

A labelled *source* domain and an unlabelled (or barely labelled) *target*
domain -- a new camera, hospital or season -- share the task but not the
feature distribution. The aligners here map source features into the
target's frame, so a classifier or regressor trained on the mapped source
rows reads the target rows correctly.

The domain convention is skada's (https://github.com/scikit-adaptation/skada),
per sample, so it survives row slicing by cross-validation:

- ``sample_domain``: one integer per row, source rows positive, target rows
  negative (0 is refused). Several positive (or negative) values are pooled:
  one source, one target.
- Unlabelled target rows are masked in ``y``: ``-1`` for classes, ``NaN`` for
  regression. :class:`DAPipeline` and the scorers read the domains from that
  mask when no ``sample_domain`` is given, by one rule (:func:`read_domains`):
  in a DA pipeline ``-1`` cannot be a class (encode the classes with
  ``LabelEncoder``; class names too, so that cross-validation can sort the
  labels); labels the rule cannot read without doubt (strings holding
  ``'-1'``, labels {-1, 1}, an integer regression target holding -1, NaN for
  a classifier, missing values) are refused with the fix. Outside a DA
  pipeline ``-1`` stays an ordinary label.
- Rows that arrive without ``sample_domain`` at ``transform``/``predict``
  time are target rows.
- An aligner fitted without target rows (plain ``fit(X, y)``) is the identity;
  it warns when ``y`` is masked, since a scikit-learn ``Pipeline`` does not
  tell it the domains.
- Steps receive ``sample_domain`` when their declared metadata requests say
  so (``get_routing_for_object``), with or without metadata routing enabled:
  a ``Pipeline`` or ``ColumnTransformer`` holding an aligner, inside a DA
  pipeline, adapts like the aligner itself; a ``Pipeline`` as the last step
  is opened up (its own last step trains on the labelled source rows).

Cross-validation and grid search work both ways:

- Without metadata routing (scikit-learn's default): give ``y`` with the
  target rows masked and no ``sample_domain``; each fold's ``fit`` reads the
  domains from the mask. A classifier's default ``StratifiedKFold`` counts
  -1 as one more class, so every fold keeps target rows.
- With ``sklearn.set_config(enable_metadata_routing=True)`` (or inside
  ``sklearn.config_context``): pass ``params={"sample_domain": ...}`` to
  ``cross_validate`` or ``sample_domain=...`` to ``GridSearchCV.fit``; it
  reaches ``fit``, ``score`` and this module's scorers, which request it.
  ``y`` may then even hold the target labels (the last step never trains on
  them); pick folds that keep both domains (e.g. ``StratifiedKFold`` splits
  of the masked ``y``, or skada's domain-aware splitters).

Scoring: a named scorer (``scoring="accuracy"``, ``"f1"``, ...) is wrong on a
DA pipeline -- scikit-learn calls ``predict(X)`` without domains, so held-out
source rows are predicted as target rows and masked target rows count as
errors. Wrap it: ``scoring=make_da_scorer("f1_macro")`` scores the labelled
rows, each in its own domain's frame. Without target labels, choose
adaptations with ``scoring=CircularValidation()``.

Unlike ``import skada``, importing this module leaves scikit-learn's global
configuration alone (``enable_metadata_routing`` included).

The package keeps one module per concern: ``_domains`` (the convention, the
mask rule, packing), ``_aligners``, ``_pipeline`` (routing by declared
requests) and ``_scoring``; the public names are imported here.
"""

from ._aligners import CORAL, SubspaceAlignment
from ._domains import DomainSplitError, pack_domains, read_domains
from ._pipeline import DAPipeline, make_da_pipeline
from ._scoring import CircularValidation, PredictionEntropyScorer, make_da_scorer

# pickle path, do not remove: the scorer of a search pickled with
# make_da_scorer when skxfer.adapt was one module
from ._scoring import _DAScorer as _DAScorer

__all__ = [
    "CORAL",
    "CircularValidation",
    "DAPipeline",
    "DomainSplitError",
    "PredictionEntropyScorer",
    "SubspaceAlignment",
    "make_da_pipeline",
    "make_da_scorer",
    "pack_domains",
    "read_domains",
]
