"""Pickling fitted MLP estimators: the format, the 0.1 migration, one backbone.

A fitted estimator's pickle holds its parameters and fitted attributes in
the layout ``PICKLE_FORMAT`` names. An end-to-end network's backbone is
pickled once, inside ``net_``, and linked back into ``extractor_`` on
loading; the model's plan and the cached ``module_`` view are not pickled but
rebuilt from the rest. Plain MLPs pickled by skxfer 0.1.0.dev0 (format 1)
are migrated; anything else of another format is refused by name.
"""

from ._device import usable_device
from ._plan import TransferPlan, architecture
from ._validation import (
    PICKLE_FORMAT,
    check_pickle_format,
    shallow_copy,
    stamped,
)

# rebuilt on loading, never pickled
_DERIVED = ("_plan", "_module")
# parameters added since the pickle format began, at their defaults (an
# estimator pickled before them loads as it was)
_ADDED_PARAMS = {"adaptation": None, "adaptation_weight": 1.0,
                 "adaptation_layer": None, "mixed_precision": False}
# a plain MLP pickled by skxfer 0.1.0.dev0: what its state had that is gone
_V01_GONE = ("_features_cached", "_backbone_module", "_backbone_width", "_n_in")


def pickled_state(state):
    """What a fitted (or unfitted) estimator's ``__getstate__`` returns."""
    state = stamped(state)
    plan = state.get("_plan")
    for key in _DERIVED:
        state.pop(key, None)
    extractor = state.get("extractor_")
    if extractor is not None and plan is not None and plan.end_to_end:
        # trained end to end: the backbone is pickled once, inside net_
        extractor = shallow_copy(extractor)
        extractor.backbone_ = None
        state["extractor_"] = extractor
    return state


def _migrated(state):
    """The state of a plain MLP pickled by skxfer 0.1.0.dev0, in today's layout."""
    state = {k: v for k, v in state.items() if k not in _V01_GONE}
    state["_skxfer_pickle"] = PICKLE_FORMAT
    state.setdefault("_class_weights", None)
    state["_class_weight_used"] = state.get("class_weight")
    state["_split_seed"] = 0
    state["_run_start"] = 0
    return state


def loadable_state(estimator, state):
    """``state`` to load into ``estimator``: migrated, or refused by format."""
    fitted = "net_" in state
    if fitted and state.get("_skxfer_pickle") is None and state.get(
        "backbone"
    ) is None:
        state = _migrated(state)
    check_pickle_format(estimator, state, fitted=fitted)
    missing = {k: v for k, v in _ADDED_PARAMS.items() if k not in state}
    return {**state, **missing} if missing else state


def loaded_attributes(estimator):
    """The fitted attributes a loaded ``estimator`` rebuilds from the rest.

    Its extractor (pickled with the estimator: its own) gets back the backbone
    that ``net_`` holds and the device this machine has.
    """
    if not hasattr(estimator, "net_"):
        return {}
    name = type(estimator).__name__
    device = usable_device(estimator.device_, name)
    extractor = estimator.extractor_
    if extractor is not None and extractor.backbone_ is None:
        extractor.backbone_ = estimator.net_.module_.backbone
    if extractor is not None:
        extractor.device_ = device
    attributes = {
        "device_": device,
        "_plan": TransferPlan.of_fitted(extractor, estimator.net_.module_),
    }
    if "_architecture" not in vars(estimator):  # a 0.1 plain MLP: its parameters
        attributes["_architecture"] = architecture(estimator.get_params(deep=False))
    return attributes
