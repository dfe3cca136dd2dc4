"""Command line: `python -m recsys_ablate [COMMAND] [flags]`.

The commands import the layers they need (ablation, outputs) when they run:
`--help`, and the errors found in the flags alone, answer without loading
TensorFlow (a few seconds).

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
import types
import typing

from recsys_ablate import heap, ray_cluster
from recsys_ablate.errors import UserInputError
from recsys_ablate.settings import SHUFFLED, build, declared_settings, field_types, load_toml


def format_error(err: Exception) -> str:
    """The one line printed for a user error (line breaks in echoed input escaped)."""
    return "error: " + "".join(repr(c)[1:-1] if len((c + "x").splitlines()) > 1 else c for c in str(err))


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and exit code 2."""

    def error(self, message):
        raise UserInputError(f"{message} (see --help)")


class _OnOff(argparse.Action):
    """`--flag` alone is on; `--flag off` / `--flag on` says which; `--flag off on` lists values (a grid)."""

    def __call__(self, parser, namespace, values, option_string=None):
        words = {"on": True, "off": False, "true": True, "false": False}
        bad = next((v for v in values if v.lower() not in words), None)
        if bad is not None:
            raise UserInputError(f"{option_string} {bad}: expected on or off (or nothing, for on)")
        setattr(namespace, self.dest, [words[v.lower()] for v in values] or [True])


def _flag_name(field) -> str:
    return field.metadata["flag"] or field.name


def _flag_options(field, hint) -> dict:
    """argparse options of a setting's flag, from its type and declaration (the help adds the default)."""
    default, grid = field.default, field.metadata["grid"]
    nested = isinstance(default, tuple) and bool(default) and isinstance(default[0], tuple)
    shown = default not in (None, False, ()) and not nested
    options = {"help": field.metadata["help"] + (f" (default {_shown(default)})" if shown else ""),
               "metavar": field.metadata["metavar"] or field.name.upper()}
    if field.metadata["choices"]:
        options.update(choices=field.metadata["choices"], metavar=None)
    if _flag_name(field).startswith("no_"):  # the flag turns a setting that is on by default off
        return {"help": field.metadata["help"], "action": "store_const", "const": False}
    if hint is bool:
        return {**options, "action": _OnOff, "nargs": "*", "metavar": "off|on"}
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = [kind for kind in (typing.get_args(hint) if union else (hint,))
             if kind is not type(None)]  # an optional setting: its own type
    if typing.get_origin(kinds[0]) is tuple:
        item = typing.get_args(kinds[0])[0]
        if typing.get_origin(item) is tuple:  # feature sets: one occurrence per set
            return {**options, "action": "append", "nargs": "+"}
        # A list of values; a grid of lists repeats the flag (layer sizes: "none" for no layer).
        return {**options, "nargs": "+", **({"action": "append"} if grid else {"type": item})}
    kind = (_int_or_word if {int, str} <= set(kinds) else int if int in kinds else float if float in kinds
            else str)
    return {**options, "type": kind, **({"nargs": "+"} if grid else {})}


def _int_or_word(value: str) -> int | str:
    """A flag that takes a number or a word (`--seeds 5`, `--seeds auto`); the field's check says which."""
    return int(value) if value.lstrip("-").isdigit() else value


def _shown(value) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _add_ablation_flags(p: argparse.ArgumentParser) -> None:
    """The flags of every command that trains or reloads an ablation (run, recommend, export, report): one
    per declared setting (`settings.py`), grouped by section, plus --config and --dry_run."""
    p.add_argument("--config", help="experiment TOML file (see experiments/); flags override it")
    groups = {}
    for section, cls, field in declared_settings():
        if field.metadata["flag"] is False:
            continue
        if section not in groups:
            groups[section] = p.add_argument_group(f"[{section}]", (cls.__doc__ or "").split("\n")[0])
        hint = field_types(cls)[field.name]
        groups[section].add_argument(f"--{_flag_name(field)}", dest=f"{section}.{field.name}",
                                     **_flag_options(field, hint))
    p.add_argument("--dry_run", action="store_true",
                   help="check every input, load the data and list the models to train or reload, then stop "
                        "before training")


def _flag_value(field, value):
    """A parsed flag as the value of its TOML key: one value, or a list of values (a grid)."""
    if field.name == "layer_sizes":
        value = [_layer_sizes(v) for v in value]
    if isinstance(value, list) and field.metadata["grid"] and len(value) == 1:
        return value[0]
    if isinstance(value, list) and not field.metadata["grid"] and isinstance(field.default, bool):
        if len(value) > 1:
            words = " ".join("on" if v else "off" for v in value)
            raise UserInputError(f"--{_flag_name(field)} {words}: give one value (on or off)")
        return value[0]
    return value


def experiment_from_args(args: argparse.Namespace):
    """The ExperimentConfig of a command line: the TOML file's sections (`--config`), the flags' values over
    them, read like a TOML file (`settings.build`)."""
    sections = load_toml(args.config) if args.config else {}
    sections = {name: dict(values) for name, values in sections.items()}
    for section, _, field in declared_settings():
        value = getattr(args, f"{section}.{field.name}", None)
        if value is not None:
            sections.setdefault(section, {})[field.name] = _flag_value(field, value)
    if args.command == "recommend":
        # Two stages for one user: the ranking models are part of it.
        sections.setdefault("ranking", {})["enabled"] = True
        sections.setdefault("experiment", {})["recommend_user"] = args.user_id
    return build(sections)


def _layer_sizes(values: list[str]) -> list[int]:
    if [v.lower() for v in values] == ["none"]:
        return []
    try:
        return [int(v) for v in values]
    except ValueError:
        raise UserInputError(f"--layer_sizes {' '.join(values)}: expected whole numbers, or none for "
                             "towers without dense layers") from None


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


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, docker stop), raised in the main thread so that
    worker processes are stopped and locks released as on Ctrl-C."""


def guarded(action, interrupted_message) -> int:
    """Runs a command's `action()` and turns every expected failure into one line and an exit code.

    Bad input: "error: ...", exit 2. Ctrl-C: `interrupted_message` (a
    string, or a function that returns one), exit
    130; SIGTERM: the same message, exit 143. A full disk or a permission
    problem: one line, exit 2 (every artifact is written atomically, so
    what was saved before is intact).

    Whatever a command raises after a Ctrl-C or SIGTERM arrived is that
    signal: an extension module whose import or callback the
    KeyboardInterrupt interrupts raises its own error instead (SciPy's
    "ImportError: initialization failed" while TensorFlow and SciPy load at
    a command's start, a pybind11 RuntimeError), which would otherwise end
    the command with a traceback.
    """
    received = []

    def interrupt(signum, frame):
        received.append(signum)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, interrupt)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where Ctrl-C is ignored
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, interrupt)
    try:
        return action()
    except (Exception, KeyboardInterrupt) as err:
        if received or isinstance(err, KeyboardInterrupt):
            terminated = isinstance(err, Terminated) or received[-1:] == [signal.SIGTERM]
            message = interrupted_message() if callable(interrupted_message) else interrupted_message
            print(message.replace("interrupted", "terminated", 1) if terminated else message,
                  file=sys.stderr)
            return 143 if terminated else 130
        if isinstance(err, UserInputError):
            print(format_error(err), file=sys.stderr)
            return 2
        if isinstance(err, OSError):
            where = f" {err.filename}" if err.filename else ""
            print(f"error: could not write{where}: {err.strerror or err}; free space or fix permissions and "
                  "re-run the same command (finished models are kept, training resumes from its last "
                  "checkpoint)", file=sys.stderr)
            return 2
        raise
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


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
        state["config"] = experiment_from_args(args)
        ray_cluster.check(state["config"].runner)  # before TensorFlow loads: an answer in a second, not five
        with heap.importing():  # the layers below, TensorFlow among them, then frozen out of the collector
            import recsys_ablate.ablation  # noqa: F401
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
    from recsys_ablate.outputs.serving import build_indexes, check_export_folder, export_indexes

    check_writable(folder, "export FOLDER")
    check_export_folder(folder, [feature_set_label(names, for_paths=True) for names in config.feature_sets])
    per_interaction = {f.name for f in config.data.features if f.file == "interactions"}
    used = sorted(per_interaction & {name for names in config.feature_sets for name in names})
    if used:
        raise UserInputError(
            f"export: {', '.join(used)} read a column of each interaction, but the exported query model "
            "takes only user_id and timestamp; export feature sets without them")
    if config.shuffled_controls or any(name.endswith(SHUFFLED) for names in config.feature_sets
                                       for name in names):
        raise UserInputError("export: shuffled controls (--shuffled_controls, NAME~shuffled) are for judging "
                             "a feature, not for serving; export the feature sets without them")
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
