"""Per-user recommendation dumps: top-10 titles per model and the user's ratings.

Catalogue rows are mapped back to the source's movie ids and titles through
the encoded dataset's movie table, the same table the candidate tower was
built from (the deep-dive script looked titles up in a different order from
the one it scored in, and printed the wrong movies).
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np

from recsys_ablate.errors import UserInputError
from recsys_ablate.files import write_json_atomic, write_text_atomic


def user_query(data, user_row: int) -> tuple[np.ndarray, np.ndarray]:
    """The query inputs for a user: their row and latest rating time.

    Raises:
      UserInputError: the user has no ratings.
    """
    rated = np.flatnonzero(data.user == user_row)
    if len(rated) == 0:
        raise UserInputError(
            f"user {data.user_ids[user_row]} has no ratings, so there is nothing to recommend from; "
            "pick a user who rated movies")
    return np.array([user_row], np.int32), np.array([data.timestamp[rated].max()], np.int64)


def top_movies(model, data, user_row: int, k: int = 10) -> list[dict]:
    """The `k` highest-scoring catalogue movies for a user.

    Returns:
      [{"rank", "movie_id", "title", "score", "already_rated"}], best first.
    """
    users, timestamps = user_query(data, user_row)
    query = model.query_tower({"user": users, "timestamp": timestamps}).numpy()[0]
    scores = model.candidate_embeddings().numpy() @ query
    best = np.argsort(-scores, kind="stable")[:k]
    rated = set(data.movie[data.user == user_row].tolist())
    return [{"rank": r + 1, "movie_id": str(data.movie_ids[m]), "title": str(data.movie_titles[m]),
             "score": float(scores[m]), "already_rated": bool(m in rated)}
            for r, m in enumerate(best)]


def rated_movies(data, user_row: int) -> list[dict]:
    """The user's ratings, best first: title, rating, time and split."""
    rows = np.flatnonzero(data.user == user_row)
    in_train = np.isin(rows, data.train)
    order = np.lexsort((-data.timestamp[rows], -np.nan_to_num(data.rating[rows], nan=-1)))
    return [{"movie_id": str(data.movie_ids[data.movie[rows[i]]]),
             "title": str(data.movie_titles[data.movie[rows[i]]]),
             "rating": None if np.isnan(data.rating[rows[i]]) else float(data.rating[rows[i]]),
             "timestamp": int(data.timestamp[rows[i]]),
             "split": "train" if in_train[i] else "validation"} for i in order]


def dump_recommendations(trained_models, data, user_id: str, reports_dir: str, stem: str,
                         log=print) -> tuple[str, str]:
    """Prints and writes (JSON and CSV) the top-10 of every model for a user.

    Args:
      trained_models: `TrainedModel`s of the ablation.
      data: The encoded dataset.
      user_id: The source's user id.
      reports_dir: Output folder.
      stem: File name stem shared with the report.

    Returns:
      (json path, csv path).

    Raises:
      UserInputError: unknown user id (the valid range is named) or a user
        without ratings.
    """
    row = data.user_row(user_id)
    dump = {"user_id": str(user_id), "models": [], "rated": rated_movies(data, row)}
    for trained in trained_models:
        dump["models"].append({"feature_set": trained.label, "folder": trained.folder,
                               "top": top_movies(trained.model, data, row)})
    os.makedirs(reports_dir, exist_ok=True)
    json_path = os.path.join(reports_dir, f"{stem}_recommendations_user{user_id}.json")
    csv_path = json_path[:-len(".json")] + ".csv"
    write_json_atomic(json_path, dump)
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["feature_set", "rank", "movie_id", "title", "score", "already_rated"])
    for entry in dump["models"]:
        for item in entry["top"]:
            writer.writerow([entry["feature_set"], item["rank"], item["movie_id"], item["title"],
                             f"{item['score']:.6f}", item["already_rated"]])
    write_text_atomic(csv_path, table.getvalue())

    log(f"\nRecommendations for user {user_id} ({len(dump['rated'])} ratings):")
    for entry in dump["models"]:
        log(f"  {entry['feature_set']}:")
        for item in entry["top"]:
            seen = "  (rated)" if item["already_rated"] else ""
            log(f"    {item['rank']:2d}. {item['title']}  [{item['score']:.3f}]{seen}")
    log("  movies the user rated (best first):")
    for item in dump["rated"][:10]:
        log(f"    {item['rating']}  {item['title']}")
    if len(dump["rated"]) > 10:
        log(f"    ... {len(dump['rated']) - 10} more in {json_path}")
    return json_path, csv_path
