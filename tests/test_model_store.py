"""Unit tests: the model store's integrity checks, the ETA arithmetic and run identity."""

import dataclasses
import json
import os

import numpy as np
import pytest

from recsys_ablate.settings import (ExperimentConfig, LengthConfig, ModelConfig, RunConfig, TrainConfig,
                                  TrainingContent)
from recsys_ablate.settings import DataConfig
from recsys_ablate.training.history import History
from recsys_ablate.training.model_store import ModelFolder
from recsys_ablate.training.callbacks import EarlyStopping, Progress, duration

RUN = RunConfig(DataConfig(dataset="demo"), ("timestamp",), ModelConfig(),
                TrainConfig(num_epochs=6, eval_every=2), LengthConfig(),
                content=TrainingContent("fingerprint-a"))


def _history(last_epoch: int) -> History:
    return History(epochs=[{"epoch": e, "loss": 10.0 - e, "seconds": 1.0}
                           for e in range(1, last_epoch + 1)],
                   evaluations=[{"epoch": e, "top_100": e / 10, "seconds": 0.5}
                                for e in range(2, last_epoch + 1, 2)])


def _saved_folder(tmp_path, epoch: int = 4) -> ModelFolder:
    """A folder as training leaves it after `epoch`: config, checkpoint files, history, manifest."""
    folder = ModelFolder(str(tmp_path / "saved_models"), RUN)
    folder.reset()
    os.makedirs(folder.file("checkpoints"))
    for suffix, content in ((".index", b"index bytes"), (".data-00000-of-00001", b"weights" * 100)):
        with open(folder.checkpoint_prefix(epoch) + suffix, "wb") as f:
            f.write(content + str(epoch).encode())
    history = _history(epoch)
    history.save(folder.file("history.json"))
    folder.write_manifest(history)
    return folder


def test_an_intact_folder_gives_its_history(tmp_path):
    folder = _saved_folder(tmp_path)
    assert folder.saved_history() == _history(4)


def test_a_flipped_byte_or_a_missing_file_is_named_and_distrusted(tmp_path):
    folder = _saved_folder(tmp_path)
    data = folder.checkpoint_prefix(4) + ".data-00000-of-00001"
    raw = bytearray(open(data, "rb").read())
    raw[10] ^= 1
    open(data, "wb").write(bytes(raw))
    lines = []
    assert folder.saved_history(lines.append) is None
    assert lines == [f"warning: saved model {folder.path} is incomplete or corrupted "
                     "(checkpoints/ckpt-4.data-00000-of-00001 does not match its checksum); training it "
                     "again"]
    os.remove(data)
    lines.clear()
    assert folder.saved_history(lines.append) is None and "ckpt-4.data-00000-of-00001 is missing" in lines[0]


def test_history_ahead_of_its_manifest_resumes_from_the_manifest(tmp_path):
    folder = _saved_folder(tmp_path, epoch=4)
    _history(6).save(folder.file("history.json"))  # killed before the epoch-6 manifest
    assert folder.saved_history() == History(_history(4).epochs, _history(4).evaluations, False)


def test_history_behind_its_manifest_or_another_identity_is_not_trusted(tmp_path):
    folder = _saved_folder(tmp_path, epoch=4)
    _history(2).save(folder.file("history.json"))
    lines = []
    assert folder.saved_history(lines.append) is None and "history and manifest disagree" in lines[0]
    other = dataclasses.replace(RUN, content=TrainingContent("fingerprint-b"))
    assert ModelFolder(str(tmp_path / "saved_models"), other).path != folder.path
    config = json.load(open(folder.file("config.json")))
    config["identity"] = other.identity()
    json.dump(config, open(folder.file("config.json"), "w"))
    assert folder.saved_history() is None


def test_eta_divides_the_remaining_epochs_by_the_measured_pace_and_the_workers():
    lines = []
    progress = Progress(total_epochs=10, log=lines.append)
    progress.epoch("m", 1, 10, 5.0, 3.0, None)
    progress.epoch("m", 2, 10, 4.0, 3.0, {"top_100": 0.25, "recall_10": 0.1})
    assert lines[0].endswith("ablation 1/10 epochs, ETA 0m27s")
    assert lines[1].endswith("ablation 2/10 epochs, ETA 0m24s  | val top_100=0.2500")
    two_workers = []
    progress = Progress(total_epochs=10, log=two_workers.append, workers=2)
    progress.epoch("m", 1, 10, 5.0, 3.0, None)
    assert two_workers[0].endswith("ETA 0m14s")  # 9 epochs x 3 s / 2 workers = 13.5 s
    assert duration(3725) == "1h02m" and duration(59.6) == "1m00s"


def test_identity_is_content_and_settings_not_paths():
    base = RUN
    moved = dataclasses.replace(base, data=DataConfig(dataset="grouplens", data_dir="/elsewhere/ml-1m",
                                                    datasets_dir="/tmp/x"))
    assert moved.identity() == base.identity()  # same fingerprint: same model
    assert dataclasses.replace(base, content=TrainingContent("fingerprint-b")).identity() != base.identity()
    assert dataclasses.replace(base, train=TrainConfig(num_epochs=6, eval_every=2, learning_rate=0.05)
                               ).identity() != base.identity()
    # Movie lengths count only for models that read them.
    unused_lengths = dataclasses.replace(base, content=TrainingContent("fingerprint-a", "lengths-1"))
    assert unused_lengths.identity() == base.identity()
    with_lengths = dataclasses.replace(base, features=("movie_length",))
    one, two = (dataclasses.replace(with_lengths, content=TrainingContent("fingerprint-a", lengths))
                for lengths in ("lengths-1", "lengths-2"))
    assert one.identity() != two.identity()


def test_runs_bind_content_and_drop_unused_lengths():
    config = ExperimentConfig(feature_sets=((), ("movie_length",)), data=DataConfig(dataset="demo"))
    runs = config.retrieval_runs(TrainingContent("f", "lengths"))
    assert [r.content for r in runs] == [TrainingContent("f", ""), TrainingContent("f", "lengths")]


def test_metric_registry_names_labels_and_directions():
    from recsys_ablate.evaluation.metrics import compute, metric, retrieval_metrics

    metrics = retrieval_metrics((1, 10))
    assert [m.name for m in metrics] == [
        "top_1", "top_10", "recall_10", "recall_100", "ndcg_10", "ndcg_100", "tail_10", "tail_100",
        "coverage_10", "coverage_100", "popularity_10", "popularity_100"]
    assert [m.label for m in metrics][:3] == ["top-1", "top-10", "Recall@10"]
    assert [m.label for m in metrics][6::2] == ["tail top-10", "Coverage@10", "Popularity@10"]
    assert metric("rmse").higher_is_better is False and metric("top_10", (10,)).higher_is_better
    # Popularity has no better direction (its verdicts say higher / lower); coverage and tail do.
    assert metric("popularity_100").higher_is_better is None and metric("coverage_10").higher_is_better
    # Two users: user 0's two ratings ranked 0 and 20, user 1's one rating ranked 5.
    values = compute(metrics, np.array([0, 20, 5]), np.array([0, 0, 1]))
    assert values["top_1"] == 1 / 3 and values["top_10"] == 2 / 3
    assert values["recall_10"] == (0.5 + 1.0) / 2
    assert values["ndcg_10"] == pytest.approx((1.0 / (1 + 1 / np.log2(3)) + 1 / np.log2(7)) / 2)


def test_early_stopping_follows_the_metric_direction():

    evaluations = [{"epoch": 1, "rmse": 1.2, "top_10": 0.1}, {"epoch": 2, "rmse": 1.0, "top_10": 0.3},
                   {"epoch": 3, "rmse": 1.1, "top_10": 0.2}]
    assert EarlyStopping("rmse", 1).best(evaluations)["epoch"] == 2
    assert EarlyStopping("top_10", 2, (10,)).update(evaluations) == (False, False)
    assert EarlyStopping("top_10", 1, (10,)).update(evaluations) == (False, True)
    assert EarlyStopping("top_10", 1, (10,)).update(evaluations[:2]) == (True, False)


def test_the_plateau_rule_stops_on_noise_but_keeps_the_best_weights():
    # A plateau: after epoch 20 each new best beats the last by 0.0004 or less.
    curve = [0.20, 0.30, 0.3400, 0.3403, 0.3398, 0.3407, 0.3409, 0.3405]
    evaluations = [{"epoch": 10 * (i + 1), "top_100": v} for i, v in enumerate(curve)]
    strict = EarlyStopping("top_100", 3, (100,))
    plateau = EarlyStopping("top_100", 3, (100,), min_delta=0.001)
    # Any gain counts: epoch 70 is a new best, so three evaluations without one have not passed.
    assert strict.update(evaluations) == (False, False)
    # More than 0.001 counts: the last improvement was epoch 30; 40, 50 and 60 make three without one
    # (epoch 60 is still the best so far, by 0.0004: its weights are kept).
    assert plateau.update(evaluations[:6]) == (True, True)
    assert [plateau.update(evaluations[:n])[1] for n in range(1, 6)] == [False] * 5
    # Whatever stopped it, the kept weights are the best evaluation's.
    assert plateau.best(evaluations[:6])["epoch"] == 60 and strict.best(evaluations)["epoch"] == 70
