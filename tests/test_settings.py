"""Every setting is declared once (settings.py); the flags and the TOML reader are made from it."""

import dataclasses
import json
import os

import pytest

from recsys_ablate import settings
from recsys_ablate.cli import build_parser, experiment_from_args, main, parse_args
from recsys_ablate.errors import UserInputError
from recsys_ablate.settings import ExperimentConfig, build, declared_settings, setting


def _config(argv):
    return experiment_from_args(parse_args(argv))


def test_a_field_added_to_a_section_is_a_flag_a_toml_key_and_a_value(monkeypatch, tmp_path, capsys):
    """One declaration, no other edit: the flag is in `run --help`, the key is read from TOML, the value
    reaches the config, and the field's own check runs."""

    @dataclasses.dataclass(frozen=True)
    class Train(settings.TrainConfig):
        warmup_epochs: int = setting(0, "epochs of learning-rate warm-up", check=lambda n: None if n >= 0 else
                                     "expected 0 or more")

    monkeypatch.setitem(settings.SECTIONS, "train", Train)
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--warmup_epochs WARMUP_EPOCHS" in capsys.readouterr().out
    toml = tmp_path / "x.toml"
    toml.write_text("[train]\nwarmup_epochs = 3\n")
    assert _config(["--config", str(toml)]).train.warmup_epochs == 3
    assert _config(["--config", str(toml), "--warmup_epochs", "4"]).train.warmup_epochs == 4
    assert _config([]).train.warmup_epochs == 0
    with pytest.raises(UserInputError, match="^warmup_epochs -1: expected 0 or more$"):
        _config(["--warmup_epochs", "-1"])
    with pytest.raises(UserInputError, match=r"warmup_epochs = 'x': expected int"):
        build({"train": {"warmup_epochs": "x"}})


def test_every_setting_has_one_flag_and_its_toml_key_reads_its_default():
    flags = [field.metadata["flag"] or field.name for _, _, field in declared_settings()
             if field.metadata["flag"] is not False]
    assert len(flags) == len(set(flags)), "two settings would share a flag"
    parser_flags = {option for action in build_parser()._subparsers._group_actions[0].choices["run"]._actions
                    for option in action.option_strings}
    assert {f"--{flag}" for flag in flags} <= parser_flags
    for section, cls, field in declared_settings():
        assert field.metadata["help"], (section, field.name)
        if section == "experiment" and field.name == "feature_sets":
            continue
        value = field.default
        built = build({section: {field.name: list(value) if isinstance(value, tuple) else value}})
        holder = built if cls is ExperimentConfig else (
            built.data.csv_columns if section == "csv_columns" else getattr(built, section))
        assert getattr(holder, field.name) == value, (section, field.name)
    assert build({}) == build({"experiment": {"feature_sets": [["None"]]}})


def test_older_names_are_read_as_todays():
    old = build({"run": {"cpus_per_trial": 2}, "grid": {"learning_rates": [0.1, 0.05]},
                 "compare": {"metric": "recall_10"}})
    new = build({"runner": {"cpus_per_trial": 2}, "train": {"learning_rate": [0.1, 0.05]},
                 "compare": {"verdict_metric": "recall_10"}})
    assert old == new and new.runner.cpus_per_trial == 2 and new.compare.verdict_metric == "recall_10"
    assert [cell.train.learning_rate for cell in new.cells()] == [0.1, 0.05]
    with pytest.raises(UserInputError, match=r"unknown key 'rates' in \[grid\]; expected one of "
                                             "embedding_sizes, layer_sizes, learning_rates"):
        build({"grid": {"rates": [0.1]}})
    with pytest.raises(UserInputError, match=r"unknown key .epochs. in \[train\]; expected one of batch_"):
        build({"train": {"epochs": 3}})


def test_grid_values_nest_in_declaration_order_and_label_what_varies():
    config = build({"model": {"layer_sizes": [[32], []], "embedding_size": [8, 16]},
                    "train": {"learning_rate": [0.1, 0.2]}, "objective": {"temperature": [1.0, 0.5]}})
    cells = [(c.model.layer_sizes, c.model.embedding_size, c.train.learning_rate, c.objective.temperature)
             for c in config.cells()]
    assert cells[:3] == [((32,), 8, 0.1, 1.0), ((32,), 8, 0.1, 0.5), ((32,), 8, 0.2, 1.0)]
    assert len(cells) == 16 and cells[-1] == ((), 16, 0.2, 0.5)
    label = settings.cell_labeller([(c.model, c.train, c.objective) for c in config.cells()])
    last = config.cells()[-1]
    assert label((last.model, last.train, last.objective)) == ["layers none", "embedding 16", "lr 0.2",
                                                                "temperature 0.5"]
    single = build({"model": {"layer_sizes": [[64, 32]]}})  # one value in a list is that value
    assert single.grid == () and single.model.layer_sizes == (64, 32)


def test_identities_are_those_the_code_before_settings_py_gave():
    """Model identities (which saved models reload) computed by commit c8411f6, before this module existed:
    settings added since must leave them unchanged (`later` fields, left out at their defaults)."""
    with open(os.path.join(os.path.dirname(__file__), "fixtures", "identities_c8411f6.json")) as f:
        expected = json.load(f)
    content = settings.TrainingContent("fingerprint-of-the-data", "lengths-digest")
    configs = {
        "defaults": build({"experiment": {"feature_sets": [["timestamp"],
                                                           ["movie_length", "movie_genres"]]}}),
        "grid_objective": build({
            "experiment": {"feature_sets": [["movie_title_text"]]},
            "model": {"embedding_size": 16, "layer_sizes": [[32], []]},
            "train": {"num_epochs": 7, "eval_every": 1, "seeds": 2, "early_stopping": "top_10", "patience": 2,
                      "eval_users": 50, "ks": [10, 50], "learning_rate": [0.1, 0.05]},
            "objective": {"temperature": [1.0, 0.2], "logq_correction": [False, True],
                          "remove_accidental_hits": [False, True], "uniform_negatives": [0, 64]}}),
        "ranking": build({"experiment": {"feature_sets": [["user_age"]]},
                          "ranking": {"enabled": True, "num_epochs": 2}}),
        "declared": build({"experiment": {"feature_sets": [["cuisine"]]},
                           "data": {"dataset": "csv", "interactions": "x.csv"},
                           "features": {"cuisine": {"file": "items", "column": "cuisine",
                                                    "kind": "categorical"}}}),
    }
    # The old grid_objective had two objectives (defaults; every option on): the full grid holds both.
    got = {name: [r.identity() for r in c.retrieval_runs(content) + c.ranking_runs(content)]
           for name, c in configs.items()}
    for name, identities in expected.items():
        assert set(identities) <= set(got[name]), name
    assert got["defaults"] == expected["defaults"] and got["ranking"] == expected["ranking"]
