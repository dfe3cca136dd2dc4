import json
import os
import re
import signal

import pytest

from recsys_ablate.cli import experiment_from_args, guarded, main, parse_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(argv):
    return experiment_from_args(parse_args(argv))


def test_feature_sets_repeat_and_baseline_is_added():
    config = _config(["--additional_feature_sets", "timestamp", "movie_genres",
                      "--additional_feature_sets", "movie_title_text"])
    assert config.feature_sets == ((), ("movie_genres", "timestamp"), ("movie_title_text",))
    assert _config(["--no_baseline", "--additional_feature_sets",
                   "timestamp"]).feature_sets == (("timestamp",),)


def test_flags_override_the_toml_config(tmp_path):
    toml = tmp_path / "x.toml"
    toml.write_text('[experiment]\nfeature_sets = [["None"], ["timestamp"]]\n'
                    '[train]\nnum_epochs = 300\neval_every = 5\n[model]\nlayer_sizes = [64, 32]\n')
    config = _config(["--config", str(toml), "--num_epochs", "7", "--layer_sizes", "16"])
    assert config.train.num_epochs == 7 and config.train.eval_every == 5
    assert config.model.layer_sizes == (16,)
    assert config.feature_sets == ((), ("timestamp",))


def test_every_experiment_file_reads_and_checks():
    import glob

    from recsys_ablate.ablation import check_experiment

    paths = sorted(glob.glob(os.path.join(ROOT, "experiments", "*.toml")))
    configs = {os.path.basename(p): check_experiment(_config(["--config", p])) for p in paths}
    assert len(configs) >= 11
    # The plateau variant of the deep dive: its epochs chosen on validation, judged on test.
    plateau = configs["deep_dive_plateau.toml"]
    assert (plateau.train.early_stopping, plateau.train.patience, plateau.train.min_delta) == ("top_100", 3,
                                                                                                0.001)
    assert plateau.data.split_fractions == (0.8, 0.1, 0.1) and len(plateau.feature_sets) == 6
    # The factorial: its 16 runs include the deep dive's six (the same models, reloaded).
    factorial = configs["factorial_recbole.toml"]
    assert len(factorial.feature_sets) == 16
    assert set(configs["deep_dive_recbole.toml"].feature_sets) <= set(factorial.feature_sets)


def test_deep_dive_config_has_the_six_runs():
    config = _config(["--config", os.path.join(ROOT, "experiments", "deep_dive.toml")])
    assert config.feature_sets == (
        (), ("timestamp",), ("movie_title_text",), ("movie_title_text", "timestamp"),
        ("movie_genres", "movie_title_text", "timestamp"),
        ("movie_genres", "movie_length", "movie_title_text", "timestamp"))
    assert config.train.num_epochs == 300 and config.train.eval_every == 5
    assert config.model.layer_sizes == (64, 32) and config.model.embedding_size == 32
    assert config.data.dataset == "movielens/1m"


@pytest.mark.parametrize("argv, message", [
    (["--additional_feature_sets", "genres"], "unknown feature 'genres'; valid names are None, movie_genres"),
    (["--additional_feature_sets", "None", "timestamp"], "'None' is the id-only baseline"),
    (["--num_epochs", "0"], "num_epochs 0: expected 1 or more"),
    (["--batch_size", "-5"], "batch_size -5: expected 2 or more"),
    (["--batch_size", "1"], "batch_size 1: expected 2 or more (the in-batch softmax's negatives are"),
    (["--layer_sizes", "64", "0"], "layer_sizes 64 0: every size must be 1 or more"),
    (["--layer_sizes", "64", "x"], "--layer_sizes 64 x: expected whole numbers, or none"),
    (["--embedding_size", "0"], "embedding_size 0: expected 1 or more"),
    (["--num_epochs", "ten"], "argument --num_epochs: invalid int value: 'ten'"),
    (["--dataset", "movielens/2m"], "--dataset movielens/2m: unknown"),
    (["--config", "missing.toml"], "--config missing.toml: no such file"),
    (["--data_dir", "/no/such/folder"], "--data_dir /no/such/folder: no such folder"),
    (["--dataset", "csv", "--interactions", "/no/such.csv"], "/no/such.csv: no such file"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path):
    code = main(argv + ["--datasets_dir", str(tmp_path / "d"), "--saved_models_dir", str(tmp_path / "s"),
                        "--reports_dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_bad_toml_key_is_named(tmp_path, capsys):
    toml = tmp_path / "x.toml"
    toml.write_text("[train]\nepochs = 3\n")
    assert main(["--config", str(toml)]) == 2
    assert "unknown key 'epochs' in [train]" in capsys.readouterr().err


def test_unknown_user_fails_before_training_without_traceback(tmp_path, capsys, demo_datasets):
    assert main(["--dataset", "demo", "--generate_recommendations_for_user", "99999", "--datasets_dir",
                 demo_datasets, "--saved_models_dir", str(tmp_path / "s"), "--reports_dir",
                 str(tmp_path / "r")]) == 2
    out = capsys.readouterr()
    assert out.err.strip() == ("error: user id '99999' is not in the dataset; valid ids are 1..1200 "
                               "(1200 users)")
    assert "epoch" not in out.out
    assert not os.path.exists(tmp_path / "s")


def test_csv_without_the_named_column_exits_2(tmp_path, capsys):
    csv = tmp_path / "events.csv"
    csv.write_text("user,item\n1,2\n")
    code = main(["--dataset", "csv", "--interactions", str(csv), "--datasets_dir", str(tmp_path / "d"),
                 "--reports_dir", str(tmp_path / "r")])  # (the default, ./reports, would be made here)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "events.csv: no column 'user_id', 'item_id' (columns found: user, item)" in err


def test_import_imdb_subcommand(tmp_path, capsys):
    from tests.imdb_files import write_imdb_files

    folder = write_imdb_files(tmp_path / "tsv",
                              [("tt0133093", "movie", "The Matrix", "The Matrix", 1999, 136)])
    database = tmp_path / "cache" / "imdb.sqlite"
    assert main(["import-imdb", folder, "--database", str(database)]) == 0
    out = capsys.readouterr().out
    assert "title.basics.tsv.gz: 1 rows" in out and database.is_file()
    assert main(["import-imdb", str(tmp_path / "empty")]) == 2
    assert "no title.basics.tsv.gz" in capsys.readouterr().err


def test_seeds_make_one_run_per_seed_with_a_fixed_split():
    config = _config(["--additional_feature_sets", "timestamp", "--seeds", "3", "--seed", "10",
                      "--early_stopping", "recall_10", "--exclude_seen", "--split", "time"])
    from recsys_ablate.settings import TrainingContent

    runs = config.retrieval_runs(TrainingContent("data-fingerprint"))
    assert [(r.features, r.train.seed) for r in runs] == [
        ((), 10), ((), 11), ((), 12), (("timestamp",), 10), (("timestamp",), 11), (("timestamp",), 12)]
    assert len({r.data.split_seed for r in runs}) == 1 and runs[0].data.split == "time"
    assert all(r.train.exclude_seen and r.train.early_stopping == "recall_10" for r in runs)
    assert len({r.identity() for r in runs}) == 6


def test_unknown_early_stopping_metric_lists_the_valid_ones(capsys):
    assert main(["--early_stopping", "auc"]) == 2
    assert "early stopping metric 'auc': expected one of top_1, top_5" in capsys.readouterr().err


def test_every_command_has_help_and_the_main_help_lists_them(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "recommend", "export", "import-imdb"):
        assert f"    {command}" in out
    for command, expected in (("run", "--additional_feature_sets"), ("recommend", "USER_ID"),
                              ("export", "FOLDER"), ("import-imdb", "TSV_DIR")):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert f"usage: python -m recsys_ablate {command}" in out and expected in out


def test_missing_command_arguments_are_one_line(capsys):
    assert main(["recommend"]) == 2
    expected = "error: the following arguments are required: USER_ID (see --help)"
    assert capsys.readouterr().err.strip() == expected
    assert main(["export", "--dataset", "demo"]) == 2
    assert "required: FOLDER" in capsys.readouterr().err


def test_recommend_enables_ranking_and_names_the_user():
    config = experiment_from_args(parse_args(["recommend", "7", "--dataset", "demo"]))
    assert config.ranking.enabled and config.recommend_user == "7"
    assert experiment_from_args(parse_args(["--dataset", "demo"])) == experiment_from_args(
        parse_args(["run", "--dataset", "demo"]))


def test_a_model_that_stopped_early_counts_as_trained(tmp_path, capsys, demo_datasets):
    argv = ["--dataset", "demo", "--max_ratings", "3000", "--num_epochs", "30", "--eval_every", "1",
            "--early_stopping", "top_10", "--patience", "1", "--layer_sizes", "8", "--embedding_size", "4",
            "--batch_size", "256", "--datasets_dir", demo_datasets, "--saved_models_dir", str(tmp_path / "s"),
            "--reports_dir", str(tmp_path / "r")]
    assert main(argv) == 0
    (history,) = (tmp_path / "s").glob("*/history.json")
    history = json.loads(history.read_text())
    assert history["stopped_early"] and len(history["epochs"]) < 30  # what the test is about
    capsys.readouterr()
    # Planned as done (it counted as 30 - epochs trained to go: `report` refused, --dry_run would train it).
    assert main(["report"] + argv) == 0
    assert "0 epochs to train (1 already trained)" in capsys.readouterr().out
    assert main(argv + ["--dry_run"]) == 0
    assert "would train" not in capsys.readouterr().out


def test_report_command_rebuilds_the_report_from_saved_models_alone(tmp_path, capsys, demo_datasets):
    argv = ["--dataset", "demo", "--max_ratings", "6000", "--num_epochs", "2", "--batch_size", "512",
            "--layer_sizes", "16", "--embedding_size", "8", "--additional_feature_sets", "timestamp",
            "--datasets_dir", demo_datasets, "--saved_models_dir", str(tmp_path / "s"),
            "--reports_dir", str(tmp_path / "r")]
    assert main(["report"] + argv) == 2
    assert "2 of 2 models of this ablation are not trained" in capsys.readouterr().err
    assert main(argv) == 0
    trained_out = capsys.readouterr().out
    (report,) = (tmp_path / "r").glob("*.html")
    first = report.read_text()
    report.unlink()
    assert main(["report"] + argv) == 0
    out = capsys.readouterr().out
    assert "0 epochs to train" in out and "] epoch " not in out  # no training
    assert "reloaded from" not in out  # no weights restored

    def table(text):
        return [line.split()[:-1] for line in text.splitlines()  # all but the source (trained/reloaded)
                if line.startswith(("baseline", "timestamp"))]

    # Both metrics rows, the one-seed comparison row (no verdict), its trade-off row and both cost rows (read
    # from the saved histories and checkpoints), as when trained.
    assert table(out) == table(trained_out) and len(table(out)) == 6
    assert "2 models: 2 trained, 0 reloaded." in trained_out and "2 models: 0 trained, 2 reloaded." in out
    json_files = list((tmp_path / "r").glob("*.json"))
    assert [p.stem for p in json_files] == [report.stem]
    rebuilt = report.read_text()
    # Same metrics and comparison in the rebuilt report's table.
    cells = re.compile(r"<td>[+-]?\d\.\d{4}[^<]*</td>")
    assert cells.findall(rebuilt) == cells.findall(first) and cells.findall(first)


def _import_interrupted_by(signum):
    """What an extension module's import does when a real signal's KeyboardInterrupt arrives in its
    initialisation (SciPy's pybind11 modules, while TensorFlow and SciPy load at a command's start):
    raises an error of its own instead. Seen in 2 of 38 Ctrl-Cs sent in a command's first seconds."""
    try:
        signal.raise_signal(signum)
    except KeyboardInterrupt:
        raise ImportError("initialization failed") from None


def _import_fails():
    raise ImportError("initialization failed")


@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated")])
def test_an_error_raised_as_a_signal_unwinds_is_the_signal_not_a_traceback(capsys, signum, code, word):
    assert guarded(lambda: _import_interrupted_by(signum), "interrupted: re-run the same command") == code
    assert capsys.readouterr().err == f"{word}: re-run the same command\n"
    # Without a signal the same error is a bug to see, not a Ctrl-C.
    with pytest.raises(ImportError, match="initialization failed"):
        guarded(_import_fails, "interrupted")
    # The command's handlers are undone: Python's own Ctrl-C handler is back.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
