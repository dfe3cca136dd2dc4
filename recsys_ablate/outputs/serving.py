"""Exported top-K indexes: raw query features in, movie titles and scores out.

`export_indexes` writes two SavedModels for a trained retrieval model: a
TFRS `BruteForce` index (exact) and a `ScaNN` index (approximate, fast),
both wrapping a query model that takes the raw features a client has, the
user id string and the timestamp, so a serving process needs neither this
package nor the dataset. ScaNN's TensorFlow ops live in the `scann` package;
`load_index` loads them first and names the fix when they are missing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys_ablate.errors import UserInputError
from recsys_ablate.files import deferred_interrupts

SCANN_NAMESPACE = "Scann"


class RawQueryModel(tf.keras.Model):
    """Maps raw {"user_id": string, "timestamp": int64} to query embeddings.

    Unknown user ids map to the padding row every per-user table ends with,
    i.e. the out-of-vocabulary embeddings.

    Args:
      user_ids: The dataset's user ids, in user-row order.
      query_tower: The trained query tower.
    """

    def __init__(self, user_ids, query_tower, **kwargs):
        super().__init__(**kwargs)
        self.user_rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(np.asarray(user_ids, str)),
                                                tf.range(len(user_ids), dtype=tf.int32)),
            default_value=len(user_ids))
        self.query_tower = query_tower

    def call(self, inputs):
        return self.query_tower({"user": self.user_rows.lookup(inputs["user_id"]),
                                 "timestamp": tf.cast(inputs["timestamp"], tf.int64)})


def build_indexes(model, data, k: int = 10, scann_leaves: int | None = None) -> dict:
    """In-memory BruteForce and ScaNN indexes over the whole catalogue.

    Args:
      model: A trained `RetrievalModel`.
      data: Its encoded dataset.
      k: Results per query.
      scann_leaves: ScaNN partitions (default about sqrt(catalogue size)).

    Returns:
      {"brute_force": layer, "scann": layer}.
    """
    query_model = RawQueryModel(data.user_ids, model.query_tower)
    candidates = model.candidate_embeddings()
    titles = tf.constant(np.asarray(data.movie_titles, str))
    leaves = scann_leaves or max(2, int(np.sqrt(data.num_movies)))
    brute_force = tfrs.layers.factorized_top_k.BruteForce(query_model, k=k)
    brute_force.index(candidates, titles)
    scann = tfrs.layers.factorized_top_k.ScaNN(query_model, k=k, num_leaves=leaves,
                                               num_leaves_to_search=max(1, leaves // 4),
                                               num_reordering_candidates=max(100, 10 * k))
    scann.index(candidates, titles)
    example = {"user_id": tf.constant(data.user_ids[:1].astype(str)),
               "timestamp": tf.constant(data.timestamp[:1])}
    for index in (brute_force, scann):
        index(example)  # traces the call, so it can be saved
    return {"brute_force": brute_force, "scann": scann}


INDEX_KINDS = ("brute_force", "scann")
# What tf.saved_model.save writes into a SavedModel folder: an earlier export is replaced, anything else kept.
_SAVED_MODEL_ENTRIES = {"saved_model.pb", "fingerprint.pb", "variables", "assets", "keras_metadata.pb"}


def check_export_folder(folder: str, names) -> None:
    """Before training: every index folder export will write under `folder` is new, or an earlier export.

    Args:
      folder: The export FOLDER.
      names: The feature sets' folder names.

    Raises:
      UserInputError: naming a folder that holds files export did not write (it would be replaced).
    """
    for name in names:
        for kind in INDEX_KINDS:
            path = os.path.join(folder, name, kind)
            if not os.path.lexists(path):
                continue
            entries = set(os.listdir(path)) if os.path.isdir(path) else {os.path.basename(path)}
            foreign = sorted(entries - _SAVED_MODEL_ENTRIES)
            if foreign or "saved_model.pb" not in entries:
                raise UserInputError(
                    f"export FOLDER: {path} exists and holds what export did not write "
                    f"({(foreign or sorted(entries) or ['an empty folder'])[0]}); export would replace it: "
                    "choose another FOLDER or move it away")


def export_indexes(indexes: dict, folder: str) -> dict[str, str]:
    """Writes each index (from `build_indexes`) as a SavedModel under `folder`.

    ScaNN's ops are whitelisted by namespace, as TFRS's serving guide says.

    Returns:
      {"brute_force": path, "scann": path}.
    """
    paths = {}
    for name, index in indexes.items():
        path = os.path.join(folder, name)
        options = tf.saved_model.SaveOptions(namespace_whitelist=[SCANN_NAMESPACE])
        tmp = path + f".tmp{os.getpid()}"
        try:
            with deferred_interrupts(), _without_keras_config_warnings():
                tf.saved_model.save(index, tmp, options=options)
        except BaseException:  # Ctrl-C (after the write), a full disk: no half-written index left
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
        paths[name] = path
    return paths


class _KerasConfigWarning(logging.Filter):
    def filter(self, record) -> bool:
        return "non-serializable objects" not in record.getMessage()


@contextlib.contextmanager
def _without_keras_config_warnings():
    """Silences Keras's "Model's `__init__()` arguments contain non-serializable objects" during export.

    It is printed once per tower and feature layer (24 lines for one index) and
    does not apply: the index is served through its signatures, never rebuilt
    from a Keras config.
    """
    quiet = _KerasConfigWarning()
    logger = tf.get_logger()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def load_index(path: str):
    """Loads an exported index, ScaNN ops included.

    Raises:
      UserInputError: the index needs ScaNN's ops and they cannot be loaded,
        naming the package and version that provide them.
    """
    scann_error = None
    try:
        import scann  # noqa: F401  (registers the Scann* TensorFlow ops)
    except ImportError as err:
        scann_error = err
    try:
        return tf.saved_model.load(path)
    except (tf.errors.NotFoundError, KeyError, ValueError, TypeError, RuntimeError) as err:
        if SCANN_NAMESPACE.lower() in str(err).lower():
            reason = f"importing scann failed: {scann_error}" if scann_error else "its ops are not registered"
            raise UserInputError(
                f"{path} is a ScaNN index, but ScaNN's TensorFlow ops are missing ({reason}); install "
                "scann==1.4.2 (built for TensorFlow 2.20 exactly) and `import scann` before "
                "tf.saved_model.load, or load it with recsys_ablate.outputs.serving.load_index") from None
        raise
