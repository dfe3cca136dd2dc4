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

from recsys_ablate.files import write_json_atomic, write_text_atomic
from recsys_ablate.models.ranking import predict_ratings


def file_safe(text: str) -> str:
    """`text` for a file name: letters, digits, '.', '-' kept, every other character as _ and its hex code
    ("team/alice" -> "team_2falice"), so a user id reaches no other folder and needs no quoting in a link."""
    return "".join(c if c.isascii() and (c.isalnum() or c in ".-") else f"_{ord(c):x}" for c in str(text))


def user_query(data, user_row: int) -> dict[str, np.ndarray]:
    """The query inputs for a user: those of their latest rating (its time and interaction columns).

    Raises:
      UserInputError: the user has no ratings.
    """
    return data.query_inputs(np.array([data.latest_rating(user_row)]))


def _retrieval_scores(model, data, user_row: int, exclude_rated: bool):
    query_inputs = user_query(data, user_row)
    query = model.query_tower(query_inputs).numpy()[0]
    scores = model.candidate_embeddings().numpy() @ query
    rated = np.unique(data.movie[data.user == user_row])
    if exclude_rated:
        scores[rated] = -np.inf
    return scores, set(rated.tolist()), query_inputs


def _entry(data, rank: int, movie: int, rated: set) -> dict:
    return {"rank": rank, "movie_id": str(data.movie_ids[movie]), "title": str(data.movie_titles[movie]),
            "already_rated": bool(movie in rated)}


def top_movies(model, data, user_row: int, k: int = 10, exclude_rated: bool = False) -> list[dict]:
    """The `k` highest-scoring catalogue movies for a user.

    Returns:
      [{"rank", "movie_id", "title", "score", "already_rated"}], best first.
    """
    scores, rated, _ = _retrieval_scores(model, data, user_row, exclude_rated)
    best = np.argsort(-scores, kind="stable")[:k]
    return [{**_entry(data, r + 1, m, rated), "score": float(scores[m])} for r, m in enumerate(best)]


def two_stage_movies(retrieval_model, ranking_model, data, user_row: int, candidates: int = 100,
                     k: int = 10, exclude_rated: bool = False) -> list[dict]:
    """Retrieve `candidates` movies, re-rank them by predicted rating, keep `k`.

    Returns:
      [{"rank", "movie_id", "title", "retrieval_score", "predicted_rating",
        "already_rated"}], highest predicted rating first.
    """
    scores, rated, query_inputs = _retrieval_scores(retrieval_model, data, user_row, exclude_rated)
    retrieved = np.argsort(-scores, kind="stable")[:candidates]
    retrieved = retrieved[np.isfinite(scores[retrieved])]
    repeated = {k: np.repeat(v, len(retrieved)) for k, v in query_inputs.items()}
    predicted = predict_ratings(ranking_model, repeated, retrieved.astype(np.int32))
    order = np.argsort(-predicted, kind="stable")[:k]
    return [{**_entry(data, r + 1, int(retrieved[i]), rated), "retrieval_score": float(scores[retrieved[i]]),
             "predicted_rating": float(predicted[i])} for r, i in enumerate(order)]


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
                         log=print, ranking_models=(), candidates: int = 100,
                         exclude_rated: bool = False, labels=None) -> tuple[str, str]:
    """Prints and writes (JSON and CSV) the top-10 of every model for a user.

    Args:
      trained_models: Retrieval `TrainedModel`s, one per feature set.
      data: The encoded dataset.
      user_id: The source's user id.
      reports_dir: Output folder.
      stem: File name stem shared with the report.
      log: Where the printed lists go.
      ranking_models: Ranking `TrainedModel`s; a feature set that has one
        also gets a two-stage list (retrieve `candidates`, re-rank).
      candidates: Movies retrieved for re-ranking.
      exclude_rated: Leave the user's rated movies out.
      labels: Names of the models (default: their feature sets).

    Returns:
      (json path, csv path).

    Raises:
      UserInputError: unknown user id (the valid range is named) or a user
        without ratings.
    """
    row = data.user_row(user_id)
    dump = {"user_id": str(user_id), "models": [], "rated": rated_movies(data, row)}
    rankers = {m.run.features: m for m in reversed(list(ranking_models))}
    dump["exclude_rated"] = exclude_rated
    for trained, label in zip(trained_models, labels or [t.label for t in trained_models]):
        entry = {"feature_set": label, "folder": trained.folder,
                 "top": top_movies(trained.model, data, row, exclude_rated=exclude_rated)}
        ranker = rankers.get(trained.run.features)
        if ranker is not None:
            entry["ranking_folder"] = ranker.folder
            entry["two_stage"] = two_stage_movies(trained.model, ranker.model, data, row, candidates,
                                                  exclude_rated=exclude_rated)
        dump["models"].append(entry)
    os.makedirs(reports_dir, exist_ok=True)
    json_path = os.path.join(reports_dir, f"{stem}_recommendations_user{file_safe(user_id)}.json")
    csv_path = json_path[:-len(".json")] + ".csv"
    write_json_atomic(json_path, dump)
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["feature_set", "rank", "movie_id", "title", "score", "already_rated"])
    for entry in dump["models"]:
        for item in entry["top"]:
            writer.writerow([entry["feature_set"], item["rank"], item["movie_id"], item["title"],
                             f"{item['score']:.6f}", item["already_rated"]])
    if any("two_stage" in entry for entry in dump["models"]):
        writer.writerow([])
        writer.writerow(["feature_set", "two_stage_rank", "movie_id", "title", "retrieval_score",
                         "predicted_rating", "already_rated"])
        for entry in dump["models"]:
            for item in entry.get("two_stage", []):
                writer.writerow([entry["feature_set"], item["rank"], item["movie_id"], item["title"],
                                 f"{item['retrieval_score']:.6f}", f"{item['predicted_rating']:.4f}",
                                 item["already_rated"]])
    write_text_atomic(csv_path, table.getvalue())

    log(f"\nRecommendations for user {user_id} ({len(dump['rated'])} ratings):")
    for entry in dump["models"]:
        log(f"  {entry['feature_set']}:")
        for item in entry["top"]:
            seen = "  (rated)" if item["already_rated"] else ""
            log(f"    {item['rank']:2d}. {item['title']}  [{item['score']:.3f}]{seen}")
        if "two_stage" in entry:
            log(f"  {entry['feature_set']}, retrieve {candidates} then re-rank by predicted rating:")
            for item in entry["two_stage"]:
                seen = "  (rated)" if item["already_rated"] else ""
                log(f"    {item['rank']:2d}. {item['title']}  [rating {item['predicted_rating']:.2f}, "
                    f"retrieval {item['retrieval_score']:.3f}]{seen}")
    log("  movies the user rated (best first):")
    for item in dump["rated"][:10]:
        log(f"    {item['rating']}  {item['title']}")
    if len(dump["rated"]) > 10:
        log(f"    ... {len(dump['rated']) - 10} more in {json_path}")
    return json_path, csv_path
