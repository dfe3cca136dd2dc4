"""Evaluation protocols: named sets of settings that make the numbers comparable with a literature's.

A protocol fills in the settings it names (filtering, split, masking, the
metrics, the model-selection metric) where the TOML file and the flags do
not set them: `--protocol recbole --k_core 5` is RecBole's protocol on the
5-core. One registered class per protocol, like the features and the data
sources; each says where its rules come from.
"""

from __future__ import annotations

PROTOCOLS: dict[str, type["Protocol"]] = {}


class Protocol:
    """A named set of settings ({section: {key: value}}, as in a TOML file) and where they come from."""

    name: str
    source: str
    settings: dict


def register(cls: type[Protocol]) -> type[Protocol]:
    PROTOCOLS[cls.name] = cls
    return cls


@register
class Tfrs(Protocol):
    """The TFRS tutorials': a random 80/20 of ratings, one query per rating (its own timestamp), top-K
    accuracy over the whole catalogue with training items ranked. The harness's defaults."""

    name = "tfrs"
    source = "TensorFlow Recommenders' retrieval tutorials (FactorizedTopK)"
    settings: dict = {}


@register
class RecBole(Protocol):
    """RecBole's MovieLens-1M general-recommendation setting (asset/hyper_tune_configs/general/
    ml-1m_general.md and recbole/properties/overall.yaml): ratings of 3 or more kept, the 10-core of users
    and items (repeated until both hold), each user's ratings in random order with int(0.1 n) validation and
    int(0.1 n) test ratings (the rest training; `Dataset._calcu_split_ids`), full ranking over every item
    left, training items masked for validation, training and validation items masked for test, Recall,
    NDCG, Hit, MRR and Precision at 10 per user averaged over users, the epoch chosen on validation NDCG@10
    (`valid_metric: NDCG@10`)."""

    name = "recbole"
    source = "RecBole 1.2, ml-1m_general.yaml with overall.yaml (RS 0.8/0.1/0.1 grouped by user, full sort)"
    settings = {
        "data": {"min_rating": 3, "k_core": 10, "split": "user_random", "split_fractions": [0.8, 0.1, 0.1]},
        "train": {"exclude_seen": True, "queries": "per_user", "ks": [10], "early_stopping": "ndcg_10",
                  "user_metrics": ["recall", "ndcg", "hit", "mrr", "precision"]},
        "compare": {"verdict_metric": "ndcg_10"},
    }


@register
class LeaveOneOut(Protocol):
    """The sequential papers' chronological leave-one-out: each user's last rating is test and the one
    before it validation (RecBole's "LS" valid_and_test with time order), full ranking with the user's
    earlier items masked, Hit@10 and NDCG@10, the epoch chosen on validation NDCG@10. Sampled-negative
    evaluation (rank against 100 random items) is not offered: Krichene and Rendle (KDD 2020) showed
    sampled metrics can reverse the order full ranking gives."""

    name = "loo"
    source = "leave-one-out, full ranking (Krichene and Rendle, KDD 2020, on sampled metrics)"
    settings = {
        "data": {"split": "user_time", "leave_out": 1},
        "train": {"exclude_seen": True, "queries": "per_user", "ks": [10], "early_stopping": "ndcg_10",
                  "user_metrics": ["hit", "ndcg"]},
        "compare": {"verdict_metric": "ndcg_10"},
    }
