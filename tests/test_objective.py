"""The objective's options from the command line and TOML: trained, named, identified, reloaded."""

import glob
import json
import os

from recsys_ablate.cli import main
from recsys_ablate.config import ObjectiveConfig, TrainingContent, build_config


def _args(tmp_path, *extra):
    return ["--dataset", "demo", "--max_ratings", "4000", "--num_epochs", "2", "--eval_every", "1",
            "--layer_sizes", "8", "--embedding_size", "8", "--batch_size", "256",
            "--datasets_dir", str(tmp_path / "d"), "--saved_models_dir", str(tmp_path / "s"),
            "--reports_dir", str(tmp_path / "r"), *extra]


def test_objective_options_train_and_reload_under_their_own_identity(tmp_path, capsys):
    options = ["--temperature", "0.2", "--logq_correction", "--remove_accidental_hits",
               "--uniform_negatives", "32"]
    assert main(_args(tmp_path)) == 0
    assert main(_args(tmp_path, *options)) == 0
    folders = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "s" / "*")))
    assert len(folders) == 2 and any("_t0.2_logq_noacc_u32_" in f for f in folders)
    folder = next(f for f in folders if "_logq" in f)
    config = json.load(open(tmp_path / "s" / folder / "config.json"))["config"]
    assert config["objective"] == {"temperature": 0.2, "logq_correction": True,
                                   "remove_accidental_hits": True, "uniform_negatives": 32}
    history = json.load(open(tmp_path / "s" / folder / "history.json"))
    assert history["complete"] and all(e["loss"] > 0 for e in history["epochs"])
    summary = json.load(open(max(glob.glob(str(tmp_path / "r" / "*.json")), key=os.path.getmtime)))
    assert "temperature 0.2, logQ correction, accidental hits removed, 32 uniform negatives" in (
        summary["settings"]["loss"])
    capsys.readouterr()
    assert main(_args(tmp_path, *options)) == 0
    assert "1 models: 0 trained, 1 reloaded." in capsys.readouterr().out


def test_the_default_objective_leaves_identities_as_they_were():
    """Spelled out or left out, TFRS's defaults are one identity (models saved before stay valid:
    test_identity.py's fixture from older code reloads); any other value is another model."""
    config = build_config({"data": {"dataset": "demo"}})
    run = config.runs(TrainingContent("f"))[0]
    assert run.objective == ObjectiveConfig()
    changed = build_config({"data": {"dataset": "demo"}, "objective": {"temperature": 0.5}})
    assert changed.runs(TrainingContent("f"))[0].identity() != run.identity()
    toml_too = build_config({"data": {"dataset": "demo"}, "objective": {"temperature": 1.0}})
    assert toml_too.runs(TrainingContent("f"))[0].identity() == run.identity()
