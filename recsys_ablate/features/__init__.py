"""Feature registry: each feature is one small registered class.

Importing this package registers the built-in features; `FEATURES` maps a
feature name to its class.
"""

from recsys_ablate.features.base import (FEATURES, Feature, FeatureContext, feature_set_label,
                                         parse_feature_set)
from recsys_ablate.features import candidate, query  # noqa: F401  (registers the features)

__all__ = ["FEATURES", "Feature", "FeatureContext", "feature_set_label", "parse_feature_set"]
