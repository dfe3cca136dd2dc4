"""Command line: `python -m recsys_ablate [flags]`.

Flags override `--config FILE` (TOML), which overrides the defaults. Bad
input ends with one line naming the problem and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from recsys_ablate.errors import UserInputError


def format_error(err: Exception) -> str:
    """The one line printed for a user error (line breaks in echoed input escaped)."""
    return "error: " + "".join(repr(c)[1:-1] if len((c + "x").splitlines()) > 1 else c for c in str(err))


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and exit code 2."""

    def error(self, message):
        raise UserInputError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m recsys_ablate",
                description="Train or reload one TFRS two-tower retrieval model per feature set, "
                            "compare validation top-K curves in an HTML report. "
                            "Subcommand: import-imdb TSV_DIR (IMDb files for movie_length).")
    p.add_argument("--config", help="experiment TOML file (see experiments/); flags override it")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="movielens/1m (default), movielens/100k (tfds), demo (embedded), "
                                     "grouplens (with --data_dir) or csv (with --interactions)")
    g.add_argument("--data_dir", help="GroupLens folder as extracted from ml-1m.zip or ml-100k.zip")
    g.add_argument("--interactions", help="CSV of interactions (user, item, optional timestamp, rating)")
    g.add_argument("--items", help="CSV of items (item id, title, optional |-separated genres)")
    for column in ("user", "item", "timestamp", "rating", "title", "genres"):
        g.add_argument(f"--{column}_column", help=f"name of the {column} column in the CSV files")
    g.add_argument("--datasets_dir", help="run-time data folder (default datasets/)")
    g.add_argument("--manual_dir", help="tfds manual folder holding ml-1m.zip / ml-100k.zip")
    g.add_argument("--max_ratings", type=int, help="use a seeded random subset of N ratings (quick runs)")
    g.add_argument("--split", choices=("random", "time"), help="random 80/20 (default) or time cut")
    g.add_argument("--split_seed", type=int, help="seed of the random split (default 42)")
    g = p.add_argument_group("ablation")
    g.add_argument("--additional_feature_sets", action="append", nargs="+", metavar="FEATURE",
                   help="features of one model, repeatable (one model per occurrence); None is the "
                        "id-only baseline, which is always added unless --no_baseline")
    g.add_argument("--no_baseline", action="store_true", help="do not add the id-only baseline")
    g.add_argument("--num_epochs", type=int)
    g.add_argument("--eval_every", type=int, help="evaluate every N epochs (default 5) and at the end")
    g.add_argument("--embedding_size", type=int, nargs="+",
                   help="embedding width (default 32); several values make a grid")
    g.add_argument("--layer_sizes", action="append", nargs="+", metavar="SIZE",
                   help="dense sizes of each tower (default 64 32; 'none' for no dense layer); repeat "
                        "for a grid of tower shapes")
    g.add_argument("--batch_size", type=int)
    g.add_argument("--learning_rate", type=float, nargs="+",
                   help="Adagrad learning rate (default 0.1); several values make a grid")
    g.add_argument("--seed", type=int, help="seed of initialisation and shuffling")
    g.add_argument("--seeds", type=int, help="train each feature set with N seeds (seed, seed+1, ...) and "
                                              "report means with 95%% intervals; the split stays fixed")
    g.add_argument("--exclude_seen", action="store_true", default=None,
                   help="leave each user's training movies out of the ranking when evaluating")
    g.add_argument("--early_stopping", metavar="METRIC",
                   help="stop when this validation metric (top_100, recall_10, ndcg_100, ...) has not "
                        "improved for --patience evaluations; the best weights are kept")
    g.add_argument("--patience", type=int, help="evaluations without improvement before stopping (default 3)")
    g.add_argument("--workers", type=int,
                   help="train this many models at once, each in its own process (default 1; 2 on a "
                        "2-core machine trains an ablation ~1.3x faster)")
    g.add_argument("--retrain", action="store_true", default=None,
                   help="train even if a model with the same configuration is saved")
    g.add_argument("--movie_lengths_csv", help="movie_id,runtime_min CSV for the movie_length feature")
    g.add_argument("--default_movie_length", type=float, help="minutes for unknown lengths (default 90)")
    g.add_argument("--imdb_database", help="Cinemagoer SQLite database of IMDb files for movie_length "
                                           "(default cache/imdb.sqlite; make it with the import-imdb command)")
    g = p.add_argument_group("ranking stage and two-stage recommendations")
    g.add_argument("--ranking", action="store_true", default=None,
                   help="also train a rating-prediction model (MLP 256-64-1) per feature set; "
                        "its validation RMSE goes into the report")
    g.add_argument("--ranking_epochs", type=int, help="epochs of the ranking model (default 3)")
    g.add_argument("--candidates", type=int,
                   help="two-stage recommendations re-rank this many retrieved movies (default 100)")
    g.add_argument("--exclude_rated", action="store_true", default=None,
                   help="leave the user's rated movies out of recommendations")
    g = p.add_argument_group("outputs")
    g.add_argument("--generate_recommendations_for_user", metavar="USER_ID",
                   help="dump each model's top-10 for this user id")
    g.add_argument("--saved_models_dir")
    g.add_argument("--reports_dir")
    g.add_argument("--dry_run", action="store_true",
                   help="check every input, load the data and list the models to train or reload, "
                        "then stop before training")
    return p


# flag -> (section, key) in the config sections.
_FLAG_KEYS = {
    "dataset": ("data", "dataset"), "data_dir": ("data", "data_dir"),
    "interactions": ("data", "interactions"), "items": ("data", "items"),
    "datasets_dir": ("data", "datasets_dir"), "manual_dir": ("data", "manual_dir"),
    "max_ratings": ("data", "max_ratings"), "split": ("data", "split"),
    "split_seed": ("data", "split_seed"),
    "user_column": ("csv_columns", "user"), "item_column": ("csv_columns", "item"),
    "timestamp_column": ("csv_columns", "timestamp"), "rating_column": ("csv_columns", "rating"),
    "title_column": ("csv_columns", "item_title"), "genres_column": ("csv_columns", "item_genres"),
    "num_epochs": ("train", "num_epochs"), "eval_every": ("train", "eval_every"),
    "batch_size": ("train", "batch_size"),
    "seed": ("train", "seed"), "seeds": ("train", "seeds"), "exclude_seen": ("train", "exclude_seen"),
    "early_stopping": ("train", "early_stopping"), "patience": ("train", "patience"),

    "movie_lengths_csv": ("lengths", "csv"), "imdb_database": ("lengths", "imdb_database"), "default_movie_length": ("lengths", "default_minutes"),
    "retrain": ("experiment", "retrain"), "workers": ("experiment", "workers"),
    "ranking": ("ranking", "enabled"), "ranking_epochs": ("ranking", "num_epochs"),
    "candidates": ("ranking", "candidates"), "exclude_rated": ("ranking", "exclude_rated"),
    "generate_recommendations_for_user": ("experiment", "recommend_user"),
    "saved_models_dir": ("experiment", "saved_models_dir"), "reports_dir": ("experiment", "reports_dir"),
}


def config_from_args(args: argparse.Namespace):
    """Merges defaults, the TOML file and the flags into an ExperimentConfig."""
    from recsys_ablate.config import build_config, load_toml

    sections = load_toml(args.config) if args.config else {}
    sections = {name: dict(values) for name, values in sections.items()}
    for flag, (section, key) in _FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            sections.setdefault(section, {})[key] = value
    _grid_flag(sections, args.layer_sizes and [_layer_sizes(v) for v in args.layer_sizes],
               ("model", "layer_sizes"), "layer_sizes")
    _grid_flag(sections, args.embedding_size, ("model", "embedding_size"), "embedding_sizes")
    _grid_flag(sections, args.learning_rate, ("train", "learning_rate"), "learning_rates")
    experiment = sections.setdefault("experiment", {})
    if args.additional_feature_sets:
        experiment["feature_sets"] = [list(s) for s in args.additional_feature_sets]
    if args.no_baseline:
        experiment["baseline"] = False
    return build_config(sections)


def _layer_sizes(values: list[str]) -> list[int]:
    if [v.lower() for v in values] == ["none"]:
        return []
    try:
        return [int(v) for v in values]
    except ValueError:
        raise UserInputError(f"--layer_sizes {' '.join(values)}: expected whole numbers, or none for "
                             "towers without dense layers") from None


def _grid_flag(sections: dict, values, single: tuple[str, str], grid_key: str) -> None:
    """One value sets [model]/[train]; several make a [grid] dimension."""
    if not values:
        return
    if len(values) == 1:
        sections.setdefault(single[0], {})[single[1]] = values[0]
    else:
        sections.setdefault("grid", {})[grid_key] = list(values)


def import_imdb_main(argv) -> int:
    """`python -m recsys_ablate import-imdb TSV_DIR [--database FILE]`."""
    parser = _Parser(prog="python -m recsys_ablate import-imdb",
                     description="Import IMDb's non-commercial dataset files (*.tsv.gz, from "
                                 "https://datasets.imdbws.com/) into a Cinemagoer SQLite database "
                                 "with Cinemagoer's own importer, for the movie_length feature.")
    parser.add_argument("tsv_dir", help="folder holding title.basics.tsv.gz, title.akas.tsv.gz, ...")
    parser.add_argument("--database", default="cache/imdb.sqlite", help="SQLite file to write")

    def run() -> int:
        args = parser.parse_args(argv)
        from recsys_ablate.imdb_lengths import import_imdb_files

        counts = import_imdb_files(args.tsv_dir, args.database)
        for name, count in counts.items():
            print(f"{name}: {count:,} rows")
        print(f"database: {args.database}")
        return 0

    return guarded(run, "interrupted: nothing was written; re-run the same command to import again")


def export_main(argv) -> int:
    """`export FOLDER [flags]`: BruteForce and ScaNN SavedModels of each feature set's model."""
    if not argv or argv[0].startswith("-"):
        print("error: usage: python -m recsys_ablate export FOLDER [flags] (see --help)", file=sys.stderr)
        return 2
    folder, rest = argv[0], argv[1:]

    def run() -> int:
        config = config_from_args(build_parser().parse_args(rest))
        from recsys_ablate.ablation import run_ablation
        from recsys_ablate.data.encoded import load_dataset
        from recsys_ablate.files import check_writable
        from recsys_ablate.serving import build_indexes, export_indexes

        check_writable(folder, "export FOLDER")
        result = run_ablation(config)
        data = load_dataset(config.data, log=lambda *_: None)
        seen = set()
        for trained in result.trained:
            if trained.run.features in seen:
                continue
            seen.add(trained.run.features)
            name = "+".join(trained.run.features) or "baseline"
            for kind, path in export_indexes(build_indexes(trained.model, data),
                                             os.path.join(folder, name)).items():
                print(f"exported {kind}: {path}")
        return 0

    return guarded(run, "interrupted: re-run the same command to export again (trained models are kept)")


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, docker stop), raised in the main thread so that
    worker processes are stopped and locks released as on Ctrl-C."""


def _raise_terminated(signum, frame):
    raise Terminated()


def guarded(action, interrupted_message) -> int:
    """Runs a command's `action()` and turns every expected failure into one line and an exit code.

    Bad input: "error: ...", exit 2. Ctrl-C: `interrupted_message` (a
    string, or a function that returns one), exit
    130; SIGTERM: the same message, exit 143. A full disk or a permission
    problem: one line, exit 2 (every artifact is written atomically, so
    what was saved before is intact).
    """
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return action()
    except UserInputError as err:
        print(format_error(err), file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        if callable(interrupted_message):
            interrupted_message = interrupted_message()
        print(interrupted_message.replace("interrupted", "terminated", 1) if isinstance(err, Terminated)
              else interrupted_message, file=sys.stderr)
        return 143 if isinstance(err, Terminated) else 130
    except OSError as err:
        where = f" {err.filename}" if err.filename else ""
        print(f"error: could not write{where}: {err.strerror or err}; free space or fix permissions and "
              "re-run the same command (finished models are kept, training resumes from its last "
              "checkpoint)", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)


def _resume_message(retrain: bool) -> str:
    """What re-running an interrupted ablation does, exactly."""
    if retrain:
        return ("interrupted: re-run the same command to resume this --retrain run: the models it already "
                "retrained are kept, the one in training resumes from its last checkpoint, the rest are "
                "retrained")
    return ("interrupted: re-run the same command to resume: finished models are reloaded, the one in "
            "training resumes from its last checkpoint")


def main(argv=None) -> int:
    """Runs the CLI; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "import-imdb":
        return import_imdb_main(argv[1:])
    if argv and argv[0] == "recommend":
        # `recommend USER_ID [flags]`: the ablation's models (trained or
        # reloaded), retrieval then ranking, top 10 for one user.
        if len(argv) < 2 or argv[1].startswith("-"):
            print("error: usage: python -m recsys_ablate recommend USER_ID [flags] (see --help)", file=sys.stderr)
            return 2
        argv = argv[2:] + ["--ranking", "--generate_recommendations_for_user", argv[1]]
    if argv and argv[0] == "export":
        return export_main(argv[1:])

    config = None

    def run() -> int:
        nonlocal config
        args = build_parser().parse_args(argv)
        config = config_from_args(args)
        from recsys_ablate.ablation import run_ablation

        result = run_ablation(config, dry_run=args.dry_run)
        if result is None:
            return 0
        print(f"\nreport: {result.report}")
        for path in result.recommendations:
            print(f"recommendations: {path}")
        return 0

    return guarded(run, lambda: _resume_message(retrain=getattr(config, "retrain", False)))
