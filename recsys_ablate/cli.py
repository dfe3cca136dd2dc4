"""Command line: `python -m recsys_ablate [COMMAND] [flags]`.

Commands: `run` (the default), `recommend`, `export`, `report`, `import-imdb`; each
has `--help`. Flags override `--config FILE` (TOML), which overrides the
defaults. Every command runs inside one error wrapper (`guarded`): bad input
ends with one line naming the problem and exit code 2, Ctrl-C with 130.
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


class _OnOff(argparse.Action):
    """`--flag` alone is on; `--flag off on` lists values (a grid dimension of the objective)."""

    def __call__(self, parser, namespace, values, option_string=None):
        words = {"on": True, "off": False, "true": True, "false": False}
        bad = next((v for v in values if v.lower() not in words), None)
        if bad is not None:
            raise UserInputError(f"{option_string} {bad}: expected on or off (or nothing, for on)")
        setattr(namespace, self.dest, [words[v.lower()] for v in values] or [True])


# flag -> (section, key) in the config sections; filled by `_flag`, beside each flag's declaration.
_FLAG_KEYS: dict[str, tuple[str, str]] = {}


def _flag(group, name: str, key: tuple[str, str] | None = None, **kwargs) -> None:
    """Declares `--name` once, with the config (section, key) it sets (None: handled by hand)."""
    group.add_argument(f"--{name}", dest=name, **kwargs)
    if key is not None:
        _FLAG_KEYS[name] = key


def _add_ablation_flags(p: argparse.ArgumentParser) -> None:
    """The flags of every command that trains or reloads an ablation (run, recommend, export)."""
    _flag(p, "config", help="experiment TOML file (see experiments/); flags override it")
    g = p.add_argument_group("data")
    _flag(g, "dataset", ("data", "dataset"),
          help="movielens/1m (default), movielens/100k (tfds), demo (embedded), grouplens (with --data_dir) "
               "or csv (with --interactions)")
    _flag(g, "data_dir", ("data", "data_dir"),
          help="GroupLens folder as extracted from ml-1m.zip or ml-100k.zip (never downloads)")
    _flag(g, "interactions", ("data", "interactions"),
          help="CSV of interactions (user, item, optional timestamp, rating)")
    _flag(g, "items", ("data", "items"),
          help="CSV of items (item id, optional title, |-separated genres, declared [features] columns)")
    _flag(g, "users", ("data", "users"), help="CSV of users (user id, declared [features] columns)")
    for column, key in (("user", "user"), ("item", "item"), ("timestamp", "timestamp"), ("rating", "rating"),
                        ("title", "item_title"), ("genres", "item_genres")):
        _flag(g, f"{column}_column", ("csv_columns", key),
              help=f"name of the {column} column in the CSV files")
    _flag(g, "datasets_dir", ("data", "datasets_dir"), help="run-time data folder (default datasets/)")
    _flag(g, "manual_dir", ("data", "manual_dir"), help="tfds manual folder holding ml-1m.zip / ml-100k.zip")
    _flag(g, "max_ratings", ("data", "max_ratings"), type=int,
          help="use a seeded random subset of N ratings (quick runs)")
    _flag(g, "split", ("data", "split"), choices=("random", "time"),
          help="random 80/20 (default) or time cut")
    _flag(g, "split_seed", ("data", "split_seed"), type=int, help="seed of the random split (default 42)")
    g = p.add_argument_group("ablation")
    _flag(g, "additional_feature_sets", action="append", nargs="+", metavar="FEATURE",
          help="features of one model, repeatable (one model per occurrence); None is the id-only baseline, "
               "which is always added unless --no_baseline")
    _flag(g, "no_baseline", action="store_true", help="do not add the id-only baseline")
    _flag(g, "num_epochs", ("train", "num_epochs"), type=int)
    _flag(g, "eval_every", ("train", "eval_every"), type=int,
          help="evaluate every N epochs (default 5) and at the end")
    _flag(g, "embedding_size", type=int, nargs="+",
          help="embedding width (default 32); several values make a grid")
    _flag(g, "layer_sizes", action="append", nargs="+", metavar="SIZE",
          help="dense sizes of each tower (default 64 32; 'none' for no dense layer); repeat for a grid of "
               "tower shapes")
    _flag(g, "batch_size", ("train", "batch_size"), type=int)
    _flag(g, "learning_rate", type=float, nargs="+",
          help="Adagrad learning rate (default 0.1); several values make a grid")
    _flag(g, "seed", ("train", "seed"), type=int, help="seed of initialisation and shuffling")
    _flag(g, "seeds", ("train", "seeds"), type=int,
          help="train each feature set with N seeds (seed, seed+1, ...); verdicts need 2 or more (3+, "
               "5 recommended); the split stays fixed")
    _flag(g, "exclude_seen", ("train", "exclude_seen"), action="store_true", default=None,
          help="leave each user's training movies out of the ranking when evaluating")
    _flag(g, "early_stopping", ("train", "early_stopping"), metavar="METRIC",
          help="stop when this validation metric (top_100, recall_10, ndcg_100, ...) has not improved for "
               "--patience evaluations; the best weights are kept")
    _flag(g, "patience", ("train", "patience"), type=int,
          help="evaluations without improvement before stopping (default 3)")
    _flag(g, "eval_users", ("train", "eval_users"), type=int, metavar="N",
          help="evaluate during training on a fixed sample of N validation users (large data); the final "
               "evaluation uses all of them")
    _flag(g, "workers", ("experiment", "workers"), type=int,
          help="train this many models at once, each in its own process (default 1; 2 helps on a 2-core "
               "machine, see BENCHMARKS.md)")
    _flag(g, "backend", ("run", "backend"), choices=("local", "ray"),
          help="local (default: this machine, --workers processes) or ray (one Ray task per model; "
               'pip install -e ".[ray]"; README: Running on a Ray cluster)')
    _flag(g, "ray_address", ("run", "ray_address"), metavar="auto|HOST:PORT",
          help="join a running Ray cluster (default: start a local Ray)")
    _flag(g, "cpus_per_trial", ("run", "cpus_per_trial"), type=int,
          help="CPUs (and TensorFlow threads) each model's Ray task declares (default 1)")
    _flag(g, "gpus_per_trial", ("run", "gpus_per_trial"), type=float,
          help="GPUs each model's Ray task declares (default 0)")
    _flag(g, "storage", ("run", "storage"), metavar="PATH",
          help="with --backend ray: a folder every node mounts at PATH; trials write their models there "
               "(it is the saved-models folder). Default: trials send their folders to this machine")
    _flag(g, "retrain", ("experiment", "retrain"), action="store_true", default=None,
          help="train even if a model with the same configuration and data is saved (an interrupted "
               "--retrain run resumes when re-run)")
    _flag(g, "movie_lengths_csv", ("lengths", "csv"),
          help="movie_id,runtime_min CSV for the movie_length feature")
    _flag(g, "default_movie_length", ("lengths", "default_minutes"), type=float,
          help="minutes for unknown lengths (default 90)")
    _flag(g, "imdb_database", ("lengths", "imdb_database"),
          help="Cinemagoer SQLite database of IMDb files for movie_length (default cache/imdb.sqlite; "
               "make it with the import-imdb command)")
    g = p.add_argument_group("ranking stage and two-stage recommendations")
    _flag(g, "ranking", ("ranking", "enabled"), action="store_true", default=None,
          help="also train a rating-prediction model (MLP 256-64-1) per feature set; its validation "
               "RMSE goes into the report")
    _flag(g, "ranking_epochs", ("ranking", "num_epochs"),
          type=int, help="epochs of the ranking model (default 3)")
    _flag(g, "candidates", ("ranking", "candidates"), type=int,
          help="two-stage recommendations re-rank this many retrieved movies (default 100)")
    _flag(g, "exclude_rated", ("ranking", "exclude_rated"), action="store_true", default=None,
          help="leave the user's rated movies out of recommendations")
    g = p.add_argument_group("verdicts (each feature set against its baseline; see README, How verdicts "
                                 "are made)")
    _flag(g, "alpha", ("compare", "alpha"), type=float,
          help="family-wise level of the verdicts, Holm-adjusted (default 0.05); intervals are 1 - alpha")
    _flag(g, "verdict_metric", ("compare", "metric"), metavar="METRIC",
          help="metric the verdicts judge (default top-K at the largest K; top_10, recall_10, ...)")
    g = p.add_argument_group("objective (the retrieval loss; TFRS tasks.Retrieval's options)")
    _flag(g, "temperature", ("objective", "temperature"), type=float, nargs="+",
          help="divide scores by it (default 1); several values make a grid")
    _flag(g, "logq_correction", ("objective", "logq_correction"), action=_OnOff, nargs="*",
          metavar="off|on", help="subtract each candidate's log sampling probability (its training "
                                 "frequency) from its logits; `off on` makes a grid of both")
    _flag(g, "remove_accidental_hits", ("objective", "remove_accidental_hits"), action=_OnOff, nargs="*",
          metavar="off|on", help="an example's own candidate appearing elsewhere in the batch is not its "
                                 "negative; `off on` makes a grid of both")
    _flag(g, "uniform_negatives", ("objective", "uniform_negatives"), type=int, nargs="+", metavar="N",
          help="add N items drawn uniformly from the catalogue per batch as negatives (default 0); several "
               "values make a grid")
    g = p.add_argument_group("outputs")
    _flag(g, "generate_recommendations_for_user", ("experiment", "recommend_user"), metavar="USER_ID",
          help="dump each model's top-10 for this user id")
    _flag(g, "saved_models_dir", ("experiment", "saved_models_dir"))
    _flag(g, "reports_dir", ("experiment", "reports_dir"))
    _flag(g, "dry_run", action="store_true",
          help="check every input, load the data and list the models to train or reload, then stop before "
               "training")


COMMANDS = ("run", "recommend", "export", "report", "import-imdb", "generate")


def build_parser() -> argparse.ArgumentParser:
    """The command line: `run` (the default command) and the other subcommands, each with --help."""
    p = _Parser(prog="python -m recsys_ablate",
                description="Train or reload one TFRS two-tower retrieval model per feature set, compare "
                            "validation top-K curves in an HTML report. Without a command, runs `run`: "
                            "`python -m recsys_ablate --additional_feature_sets timestamp` is "
                            "`python -m recsys_ablate run --additional_feature_sets timestamp`.")
    commands = p.add_subparsers(dest="command", metavar="COMMAND", title="commands",
                                description="`python -m recsys_ablate COMMAND --help` lists a "
                                            "command's flags")
    _add_ablation_flags(commands.add_parser(
        "run", help="train or reload every model of the ablation, write the report (the default command)",
        description="Train or reload every model of the ablation, write the HTML report and the dumps."))
    recommend = commands.add_parser(
        "recommend", help="two-stage top 10 for one user: retrieval, then re-ranking by predicted rating",
        description="Trains or reloads the retrieval and ranking models, retrieves --candidates movies for "
                    "the user, re-ranks them by predicted rating, prints and writes the top 10.")
    recommend.add_argument("user_id", metavar="USER_ID", help="the source's user id")
    _add_ablation_flags(recommend)
    export = commands.add_parser(
        "export", help="BruteForce and ScaNN SavedModels of each feature set's model",
        description="Trains or reloads the ablation's models, then writes for each feature set a "
                    "brute_force/ and a scann/ SavedModel that take raw query features.")
    export.add_argument("folder", metavar="FOLDER", help="where the SavedModels go")
    _add_ablation_flags(export)
    _add_ablation_flags(commands.add_parser(
        "report", help="rebuild the summary and HTML report from saved models (no training)",
        description="Rebuilds the console summary and the HTML report of an ablation from its saved "
                    "models (histories and per-example ranks): no training, no weights loaded. Give the "
                    "flags the ablation ran with."))
    imdb = commands.add_parser(
        "import-imdb", help="import IMDb's dataset files into a Cinemagoer database (for movie_length)",
        description="Import IMDb's non-commercial dataset files (*.tsv.gz, from "
                    "https://datasets.imdbws.com/) "
                    "into a Cinemagoer SQLite database with Cinemagoer's own importer, for movie_length.")
    imdb.add_argument("tsv_dir", metavar="TSV_DIR",
                      help="folder holding title.basics.tsv.gz, title.akas.tsv.gz, ...")
    imdb.add_argument("--database", default="cache/imdb.sqlite", help="SQLite file to write")
    generate = commands.add_parser(
        "generate", help="write a generated dataset: the recipes example or MovieLens-25M-shaped ratings",
        description="Write a generated dataset, deterministically: `recipes FOLDER` (the recipe-site export "
                    "of experiments/recipes.toml, with planted-signal and no-signal columns) or "
                    "`movielens-shape FILE --ratings N` (ratings of MovieLens-25M's shape, for "
                    "bench/scale.py).")
    generate.add_argument("kind", choices=("recipes", "movielens-shape"))
    generate.add_argument("path", metavar="PATH", help="folder (recipes) or ratings CSV (movielens-shape)")
    generate.add_argument("--ratings", type=int, default=25_000_000, help="ratings of movielens-shape")
    return p


def parse_args(argv) -> argparse.Namespace:
    """Parses a command line; without a command (flags only) the command is `run`."""
    argv = list(argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["run"] + argv
    return build_parser().parse_args(argv)


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
    if args.command == "recommend":
        # Two stages for one user: the ranking models are part of it.
        sections.setdefault("ranking", {})["enabled"] = True
        experiment["recommend_user"] = args.user_id
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
    state = {}

    def command() -> int:
        args = parse_args(argv)
        state["args"] = args
        if args.command == "import-imdb":
            return _import_imdb(args)
        if args.command == "generate":
            return _generate(args)
        state["config"] = config_from_args(args)
        if args.command == "export":
            return _export(state["config"], args.folder)
        if args.command == "report":
            return _report(state["config"])
        return _run(state["config"], args.dry_run)

    def interrupted() -> str:
        command = getattr(state.get("args"), "command", "run")
        if command == "export":
            return "interrupted: re-run the same command to export again (trained models are kept)"
        if command == "import-imdb":
            return "interrupted: nothing was written; re-run the same command to import again"
        return _resume_message(retrain=bool(state.get("config") and state["config"].retrain))

    return guarded(command, interrupted)


def _run(config, dry_run: bool) -> int:
    """`run` and `recommend`: the ablation (recommend also trains rankers and dumps one user's lists)."""
    from recsys_ablate.ablation import run_ablation

    result = run_ablation(config, dry_run=dry_run)
    if result is not None:
        print(f"\nreport: {result.report}")
        for path in result.recommendations:
            print(f"recommendations: {path}")
    return 0


def _export(config, folder: str) -> int:
    """`export FOLDER`: BruteForce and ScaNN SavedModels of each feature set's model."""
    from recsys_ablate.ablation import run_ablation
    from recsys_ablate.features import feature_set_label
    from recsys_ablate.files import check_writable
    from recsys_ablate.outputs.serving import build_indexes, export_indexes

    check_writable(folder, "export FOLDER")
    per_interaction = {f.name for f in config.data.features if f.file == "interactions"}
    used = sorted(per_interaction & {name for names in config.feature_sets for name in names})
    if used:
        raise UserInputError(
            f"export: {', '.join(used)} read a column of each interaction, but the exported query model "
            "takes only user_id and timestamp; export feature sets without them")
    result = run_ablation(config)
    seen = set()
    for trained in result.trained:
        if trained.run.features in seen:
            continue
        seen.add(trained.run.features)
        name = feature_set_label(trained.run.features, for_paths=True)
        model = result.plan.with_weights(trained).model
        for kind, path in export_indexes(build_indexes(model, result.plan.data),
                                         os.path.join(folder, name)).items():
            print(f"exported {kind}: {path}")
    return 0


def _report(config) -> int:
    """`report`: the summary and HTML report rebuilt from saved models (no training, no weights)."""
    from recsys_ablate.ablation import rebuild_outputs

    print(f"\nreport: {rebuild_outputs(config).report}")
    return 0


def _generate(args) -> int:
    """`generate recipes FOLDER` / `generate movielens-shape FILE --ratings N`."""
    from recsys_ablate.data import generate

    if args.ratings < 1000:
        raise UserInputError(f"--ratings {args.ratings}: expected 1000 or more")
    paths = (generate.write_recipes(args.path) if args.kind == "recipes"
             else generate.write_movielens_shape(args.path, args.ratings))
    for role, path in paths.items():
        print(f"{role}: {path}")
    return 0


def _import_imdb(args) -> int:
    """`import-imdb TSV_DIR [--database FILE]`."""
    from recsys_ablate.data.imdb_lengths import import_imdb_files

    counts = import_imdb_files(args.tsv_dir, args.database)
    for name, count in counts.items():
        print(f"{name}: {count:,} rows")
    print(f"database: {args.database}")
    return 0
