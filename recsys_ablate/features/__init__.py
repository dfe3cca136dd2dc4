"""Feature registry: each feature is one small registered class.

Importing this package registers the built-in features; `FEATURES` maps a
feature name to its class.
"""

from recsys_ablate.features.base import (FEATURES, Feature, FeatureContext, check_feature_sets,
                                         check_tower_widths, feature_set_label, tower_widths)
from recsys_ablate.features import candidate, query  # noqa: F401  (registers the features)
from recsys_ablate.features.controls import register_controls, with_controls
from recsys_ablate.features.declared import register_declared


def register_features(declarations) -> None:
    """Registers an experiment's declared features, then every feature's shuffled control."""
    register_declared(declarations)
    register_controls()


__all__ = ["FEATURES", "Feature", "FeatureContext", "check_feature_sets", "check_tower_widths",
           "feature_set_label", "register_features", "tower_widths", "with_controls"]
