"""Reads MovieLens through tensorflow-datasets (`movielens/1m-*`, `movielens/100k-*`).

With internet, tfds downloads and prepares the data into `data_dir` once.
Offline, a user who has the original `ml-1m.zip` / `ml-100k.zip` puts it in
the manual folder (`<data_dir>/downloads/manual/` by default); tfds finds it
there by file name and registered checksum and prepares without network.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from recsys_ablate.data import grouplens
from recsys_ablate.data.schema import MOVIELENS_GENRES, RawDataset
from recsys_ablate.data.sources import DataSource, register
from recsys_ablate.errors import UserInputError

TFDS_DATASETS = ("movielens/1m", "movielens/100k")
_ARCHIVES = {"movielens/1m": "ml-1m.zip", "movielens/100k": "ml-100k.zip"}
# Batch size for pulling tfds records into numpy: large batches keep the
# per-record Python cost out of a million-rating conversion.
_CONVERT_BATCH = 65536


def default_manual_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "downloads", "manual")


def _load(name: str, data_dir: str, manual_dir: str):
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download import downloader

    tfds.disable_progress_bar()  # the run prints its own lines; a failure is one line
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    # tfds retries a failed download 10 times with back-off (3.5 minutes
    # offline, measured) and has no setting for it, only this module
    # constant, read per request: one try, then our one-line error.
    retries, downloader.MAX_RETRIES = downloader.MAX_RETRIES, 0
    try:
        return tfds.load(name, split="train", data_dir=data_dir, shuffle_files=False, with_info=True,
                         download_and_prepare_kwargs={"download_config": download_config})
    finally:
        downloader.MAX_RETRIES = retries


def remove_partial_downloads(data_dir: str) -> list[str]:
    """Removes what an interrupted or failed tfds download left (`*.tmp.*`, `*.incomplete*`).

    Returns:
      The removed paths.
    """
    import glob
    import shutil

    patterns = [os.path.join(data_dir, "downloads", "**", "*.tmp.*"),
                os.path.join(data_dir, "movielens", "**", "*.incomplete*")]
    removed = sorted({p for pattern in patterns for p in glob.glob(pattern, recursive=True)})
    for path in removed:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)
    return removed


def records_to_raw(ratings_ds, movies_ds, occupation_names, source: str) -> RawDataset:
    """Converts tfds movielens ratings and movies datasets to the common schema.

    Args:
      ratings_ds: `movielens/*-ratings` as a tf.data.Dataset of feature dicts.
      movies_ds: `movielens/*-movies` likewise.
      occupation_names: The `user_occupation_label` ClassLabel names.
      source: Description recorded in the result.

    Returns:
      The dataset, ratings in tfds's order.
    """
    columns = {k: [] for k in ("user_id", "movie_id", "movie_title", "timestamp", "user_rating",
                               "user_age", "user_gender", "user_occupation", "movie_genres")}
    # `movie_genres` is a variable-length sequence per record: ragged batches
    # keep the conversion vectorised.
    for batch in ratings_ds.ragged_batch(_CONVERT_BATCH).as_numpy_iterator():
        columns["user_id"].append(_decode(batch["user_id"]))
        columns["movie_id"].append(_decode(batch["movie_id"]))
        columns["movie_title"].append(_decode(batch["movie_title"]))
        columns["timestamp"].append(batch["timestamp"].astype(np.int64))
        columns["user_rating"].append(batch["user_rating"].astype(np.float32))
        columns["user_age"].append(batch["bucketized_user_age"].astype(np.float32))
        columns["user_gender"].append(batch["user_gender"].astype(np.int8))
        columns["user_occupation"].append(
            np.array(occupation_names, object)[batch["user_occupation_label"]])
        columns["movie_genres"].append(_ragged_multi_hot(batch["movie_genres"]))
    merged = {k: np.concatenate(v) for k, v in columns.items()}

    movies = {"movie_id": [], "movie_title": [], "movie_genres": []}
    for batch in movies_ds.ragged_batch(_CONVERT_BATCH).as_numpy_iterator():
        movies["movie_id"].append(_decode(batch["movie_id"]))
        movies["movie_title"].append(_decode(batch["movie_title"]))
        movies["movie_genres"].append(_ragged_multi_hot(batch["movie_genres"]))
    movies = {k: np.concatenate(v) for k, v in movies.items()}
    return RawDataset(source=source, ratings=merged, movies=movies, genre_names=MOVIELENS_GENRES)


def _decode(byte_strings: np.ndarray) -> np.ndarray:
    return np.array([b.decode("utf-8") for b in byte_strings], object)


def _ragged_multi_hot(genres) -> np.ndarray:
    """[n, len(MOVIELENS_GENRES)] multi-hot from a batch of genre label lists.

    `as_numpy_iterator` yields a ragged batch as an object array of label
    arrays, or as a plain 2-D array when every row has the same length.
    """
    if genres.dtype == object:
        lengths = np.fromiter((len(g) for g in genres), np.int64, count=len(genres))
        labels = np.concatenate(list(genres)).astype(np.int64) if len(genres) else np.zeros(0, np.int64)
    else:
        genres = np.asarray(genres, np.int64).reshape(len(genres), -1)
        lengths, labels = np.full(len(genres), genres.shape[1]), genres.ravel()
    out = np.zeros((len(lengths), len(MOVIELENS_GENRES)), np.uint8)
    out[np.repeat(np.arange(len(lengths)), lengths), labels] = 1
    return out


def read_tfds(name: str, data_dir: str, manual_dir: str | None = None) -> RawDataset:
    """Loads `name` ("movielens/1m" or "movielens/100k") through tfds.

    Raises:
      UserInputError: unknown name, or tfds could neither download nor find
        the archive in the manual folder.
    """
    if name not in TFDS_DATASETS:
        raise UserInputError(f"--dataset {name}: unknown; expected one of {', '.join(TFDS_DATASETS)}")
    manual_dir = manual_dir or default_manual_dir(data_dir)
    remove_partial_downloads(data_dir)  # a killed earlier run's leftovers
    try:
        ratings, info = _load(f"{name}-ratings", data_dir, manual_dir)
        movies, _ = _load(f"{name}-movies", data_dir, manual_dir)
    except BaseException as err:  # tfds raises many types for "no network" / bad archive
        remove_partial_downloads(data_dir)
        if not isinstance(err, Exception):
            raise  # Ctrl-C, SIGTERM: nothing half-written is left
        archive = os.path.join(manual_dir, _ARCHIVES[name])
        if os.path.isfile(archive):
            raise UserInputError(
                f"--dataset {name}: {archive} is not the original archive ({type(err).__name__}); "
                f"replace it with the original {_ARCHIVES[name]} from grouplens.org") from None
        raise UserInputError(
            f"--dataset {name}: tensorflow-datasets could not prepare it ({type(err).__name__}); "
            f"with no internet, put the original {_ARCHIVES[name]} into {manual_dir}, or pass "
            f"--data_dir with the extracted folder") from None
    occupations = info.features["user_occupation_label"].names
    return records_to_raw(ratings, movies, occupations, source=f"tfds {name} in {os.path.abspath(data_dir)}")


@register
class TfdsSource(DataSource):
    """`--dataset movielens/1m` or `movielens/100k` through tensorflow-datasets.

    With `--data_dir`, the extracted GroupLens folder stands in for the
    download (never the network); its layout must be the named dataset's.
    """

    names = TFDS_DATASETS
    reads_data_dir = True  # the extracted GroupLens folder stands in for the download

    def resolve(self, spec):
        if spec.data_dir is None:
            return spec
        expected = "ml-" + spec.dataset.split("/")[1]
        layout = grouplens.detect_layout(spec.data_dir)
        if layout != expected:
            raise UserInputError(
                f"--data_dir {spec.data_dir} holds {layout} files but --dataset is {spec.dataset}; "
                f"pass the extracted {expected} folder, or --dataset grouplens to use this one")
        return dataclasses.replace(spec, dataset="grouplens")

    def identity(self, spec) -> str | None:
        import tensorflow_datasets as tfds

        return f"tfds {spec.dataset} {tfds.__version__}"

    def read(self, spec) -> RawDataset:
        return read_tfds(spec.dataset, spec.datasets_dir, spec.manual_dir)
