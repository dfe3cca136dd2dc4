"""Two-tower retrieval model: feature layers -> towers -> in-batch softmax (TFRS Retrieval's loss)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys_ablate.data.encoded import train_movie_counts
from recsys_ablate.features import FEATURES, FeatureContext, check_tower_widths, register_features
from recsys_ablate.features.base import TOWER_INPUTS
from recsys_ablate.models.retrieval_loss import DeduplicatedRetrieval
from recsys_ablate.settings import ModelConfig, ObjectiveConfig


class Tower(tf.keras.Model):
    """Concatenates feature outputs, then a Dense stack.

    Args:
      feature_layers: Layers mapping the tower inputs to [batch, width].
      layer_sizes: Dense sizes; ReLU on all but the last. Empty: the
        concatenation itself is the tower's output.
      seed: Seed of the Dense initialisers.
      input_keys: The tower input keys its features read.
    """

    def __init__(self, feature_layers, layer_sizes, seed: int, input_keys=(), **kwargs):
        super().__init__(**kwargs)
        self.feature_layers = list(feature_layers)
        self.input_keys = tuple(input_keys)
        self.dense_layers = [
            tf.keras.layers.Dense(size, activation="relu" if i < len(layer_sizes) - 1 else None,
                                  kernel_initializer=tf.keras.initializers.GlorotUniform(seed + i))
            for i, size in enumerate(layer_sizes)]

    def call(self, inputs):
        outputs = [layer(inputs) for layer in self.feature_layers]
        x = outputs[0] if len(outputs) == 1 else tf.concat(outputs, axis=1)
        for layer in self.dense_layers:
            x = layer(x)
        return x


DEFAULT_OBJECTIVE = ObjectiveConfig()
QUERY_KEYS = TOWER_INPUTS["query"]
CANDIDATE_KEYS = TOWER_INPUTS["candidate"]


def _distinct_embeddings(tower: Tower, features, values_out: list | None = None
                         ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Runs a tower once per distinct input of a batch.

    A tower whose features read one input key (every candidate tower; a query
    tower without per-rating features such as the timestamp) is a function of
    that key alone, so it runs on the key's distinct values only.

    Returns:
      (embeddings of the distinct rows, each example's row, examples per row).
    """
    if len(tower.input_keys) == 1:
        key = tower.input_keys[0]
        values, index, counts = tf.unique_with_counts(features[key])
        if values_out is not None:  # the distinct rows themselves (the objective's ids and log q)
            values_out.append(values)
        return tower({key: values}), index, counts
    embeddings = tower({k: features[k] for k in tower.input_keys})
    size = tf.shape(embeddings)[0]
    return embeddings, tf.range(size), tf.ones([size], tf.int32)


class RetrievalModel(tfrs.Model):
    """Query and candidate towers trained with TFRS's in-batch softmax.

    The loss is `tfrs.tasks.Retrieval`'s, computed over the distinct users
    and movies of each batch (`retrieval_loss.DeduplicatedRetrieval`): same
    value and gradients, a smaller softmax. No metrics during training:
    validation top-K comes from `evaluation.evaluate`, over the full catalogue.

    Args:
      query_tower: Maps {"user", "timestamp"} to query embeddings.
      candidate_tower: Maps {"movie"} to candidate embeddings.
      objective: The loss's options (`config.ObjectiveConfig`).
      log_q: [movies] log sampling probability of each movie in a batch (its
        training frequency, clipped to [1e-6, 1]), for the logQ correction.
      seed: Seed of the uniformly sampled negatives.
    """

    def __init__(self, query_tower: Tower, candidate_tower: Tower, objective=DEFAULT_OBJECTIVE, log_q=None,
                 seed: int = 0):
        super().__init__()
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        self.objective = objective
        self.task = DeduplicatedRetrieval(objective.temperature, objective.remove_accidental_hits)
        self.log_q = None if log_q is None else tf.constant(log_q, tf.float32)
        self.seed = seed

    def compute_loss(self, features, training=False):
        queries = _distinct_embeddings(self.query_tower, features)
        if self.objective.is_default:  # TFRS's plain loss: the path measured in BENCHMARKS.md
            return self.task(*queries, *_distinct_embeddings(self.candidate_tower, features))
        movies = []
        candidates = _distinct_embeddings(self.candidate_tower, features, movies)
        options = {"candidate_ids": movies[0]}
        if self.objective.logq_correction:
            options["candidate_log_q"] = tf.gather(self.log_q, movies[0])
        count = self.objective.uniform_negatives
        if count:
            # Stateless, seeded by (seed, step): a resumed run draws the same negatives.
            step = tf.cast(self.optimizer.iterations, tf.int32)
            rows = tf.random.stateless_uniform([count], tf.stack([tf.constant(self.seed, tf.int32), step]),
                                               minval=0, maxval=self.num_movies, dtype=tf.int32)
            options.update(negatives=self.candidate_tower({"movie": rows}), negative_ids=rows)
            if self.objective.logq_correction:
                batch = tf.cast(tf.shape(features["movie"])[0], tf.float32)
                options["negative_log_q"] = tf.fill(
                    [count], tf.math.log(count / (batch * self.num_movies)))
        return self.task(*queries, *candidates, **options)

    @property
    def input_keys(self) -> tuple[str, ...]:
        """Every tower input the model's features read (what a batch must carry)."""
        return tuple(sorted(set(self.query_tower.input_keys) | set(self.candidate_tower.input_keys)))

    def candidate_embeddings(self) -> tf.Tensor:
        """[num_movies, d] embeddings of the whole catalogue, in row order."""
        rows = tf.range(self.num_movies, dtype=tf.int32)
        return self.candidate_tower({"movie": rows})


def build_towers(features, context: FeatureContext, layer_sizes, seed: int) -> tuple[Tower, Tower]:
    """The query and candidate towers of a feature set.

    Args:
      features: Names of the optional features (the id features are always in).
      context: Data and settings the features fit on.
      layer_sizes: Dense sizes of both towers.
      seed: Seed of all initialisers.

    Returns:
      (query tower, candidate tower).
    """
    register_features(context.data.declarations)
    tf.keras.utils.set_random_seed(seed)
    names = sorted(n for n, cls in FEATURES.items() if cls.always) + sorted(features)
    layers, inputs = {"query": [], "candidate": []}, {"query": set(), "candidate": set()}
    for name in names:
        feature = FEATURES[name](context)
        layers[feature.tower].append(feature.layer())
        inputs[feature.tower].update(feature.inputs)
    return (Tower(layers["query"], layer_sizes, seed, sorted(inputs["query"]), name="query_tower"),
            Tower(layers["candidate"], layer_sizes, seed + 100, sorted(inputs["candidate"]),
                  name="candidate_tower"))


def build_model(features, context: FeatureContext, layer_sizes, seed: int,
                objective=DEFAULT_OBJECTIVE) -> RetrievalModel:
    """Builds the retrieval model for a feature set (arguments as `build_towers`, and its loss's options).

    Returns:
      The model, built (variables created) and ready to compile.

    Raises:
      UserInputError: towers without dense layers that end at different widths (before anything is built).
    """
    check_tower_widths([features], [ModelConfig(tuple(layer_sizes), context.embedding_size)])
    log_q = None
    if objective.logq_correction:
        frequency = train_movie_counts(context.data) / len(context.data.train)
        log_q = np.log(np.clip(frequency, 1e-6, 1.0))  # TFRS's clip of sampling probabilities
    model = RetrievalModel(*build_towers(features, context, layer_sizes, seed), objective, log_q, seed)
    model.num_movies = context.data.num_movies
    # One call creates every variable, so weights can be restored right away.
    model.query_tower(context.data.query_inputs(slice(0, 1)))
    model.candidate_tower({"movie": np.zeros(1, np.int32)})
    return model
