"""skxfer: transfer learning for scikit-learn users, on PyTorch through skorch."""

from ._estimators import TransferMLPClassifier, TransferMLPRegressor
from ._extract import PretrainedFeatureExtractor
from ._lr_find import LRFindResult, lr_find
from ._store import (
    clear_feature_store,
    config_context,
    feature_store_info,
    get_config,
    prune_feature_store,
    set_config,
)

__version__ = "0.2.0.dev0"

__all__ = [
    "LRFindResult",
    "PretrainedFeatureExtractor",
    "TransferMLPClassifier",
    "TransferMLPRegressor",
    "__version__",
    "clear_feature_store",
    "config_context",
    "feature_store_info",
    "get_config",
    "lr_find",
    "prune_feature_store",
    "set_config",
]
