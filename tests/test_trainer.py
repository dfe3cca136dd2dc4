import dataclasses
import json
import os

import numpy as np
import pytest

from recsys_ablate.evaluation import catalogue
from recsys_ablate.evaluation.metrics import retrieval_metrics
from recsys_ablate.ablation import run_ablation
from recsys_ablate.settings import ExperimentConfig, ModelConfig, TrainConfig
from recsys_ablate.settings import DataConfig


def _config(tmp_path, out="out", datasets=None, **train):
    train = {"num_epochs": 4, "eval_every": 2, "batch_size": 512, **train}
    return ExperimentConfig(
        feature_sets=((), ("movie_genres",)),
        data=DataConfig(dataset="demo", datasets_dir=datasets or str(tmp_path / "datasets"),
                        max_ratings=8000),
        model=ModelConfig(embedding_size=16, layer_sizes=(32, 16)),
        train=TrainConfig(**train),
        saved_models_dir=str(tmp_path / out / "saved_models"), reports_dir=str(tmp_path / out / "reports"))


def test_trains_saves_then_reloads_without_training(tmp_path, demo_datasets):
    lines = []
    first = run_ablation(_config(tmp_path, datasets=demo_datasets), log=lines.append)
    assert not any(t.reloaded for t in first.trained)
    folder = first.trained[1].folder
    assert os.path.basename(folder).startswith("demo_random_e4_emb16_l32-16_b512_lr0.1_s42_movie_genres_")
    for name in ("config.json", "history.json", "ranks.npz", "tensorboard", "checkpoints"):
        assert os.path.exists(os.path.join(folder, name)), name
    history = json.load(open(os.path.join(folder, "history.json")))
    assert [e["epoch"] for e in history["evaluations"]] == [2, 4] and history["complete"]
    assert len(history["epochs"]) == 4 and all(e["seconds"] > 0 for e in history["epochs"])
    assert any("ETA" in line for line in lines)

    lines = []
    second = run_ablation(_config(tmp_path, datasets=demo_datasets), log=lines.append)
    assert all(t.reloaded for t in second.trained)
    assert not any("epoch 1/4" in line for line in lines)
    for a, b in zip(first.trained, second.trained):
        assert a.history == b.history
    # The reloaded weights are the trained ones: evaluating them gives the saved metrics.
    data_spec = _config(tmp_path, datasets=demo_datasets).data
    from recsys_ablate.data.encoded import load_dataset
    data = load_dataset(data_spec, log=lambda *_: None)
    validation = catalogue.EvaluationSet(data.validation, data.validation)
    metrics, _ = catalogue.evaluate(second.trained[1].model, data, validation,
                                    retrieval_metrics((1, 5, 10, 50, 100)))
    saved = second.trained[1].history.final_metrics
    for k, v in metrics.items():
        assert v == pytest.approx(saved[k], abs=1e-9)


@pytest.mark.slow
def test_retrain_and_changed_config_train_again(tmp_path):
    run_ablation(_config(tmp_path))
    again = run_ablation(dataclasses.replace(_config(tmp_path), retrain=True), log=lambda *_: None)
    assert not any(t.reloaded for t in again.trained)
    other = run_ablation(_config(tmp_path, learning_rate=0.05), log=lambda *_: None)
    assert not any(t.reloaded for t in other.trained)
    assert other.trained[0].folder != again.trained[0].folder


class _Stop(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_history(tmp_path, demo_datasets):
    uninterrupted = run_ablation(_config(tmp_path, out="a", datasets=demo_datasets), log=lambda *_: None)

    def stop_after_epoch_3(line):
        if "epoch 3/4" in line:
            raise _Stop()

    with pytest.raises(_Stop):
        run_ablation(_config(tmp_path, out="b", datasets=demo_datasets), log=stop_after_epoch_3)
    lines = []
    resumed = run_ablation(_config(tmp_path, out="b", datasets=demo_datasets), log=lines.append)
    assert any("resuming" in line and "after epoch 2" in line for line in lines)
    for a, b in zip(uninterrupted.trained, resumed.trained):
        assert [e["epoch"] for e in a.history.evaluations] == [e["epoch"] for e in b.history.evaluations]
        for ea, eb in zip(a.history.evaluations, b.history.evaluations):
            for k in ("top_1", "top_5", "top_10", "top_50", "top_100"):
                assert eb[k] == pytest.approx(ea[k], abs=1e-6)
        np.testing.assert_allclose([e["loss"] for e in b.history.epochs],
                                   [e["loss"] for e in a.history.epochs], rtol=1e-5)


@pytest.mark.parametrize("task", ["retrieval", "ranking"])
def test_the_steps_per_call_change_no_loss(tmp_path, demo_datasets, monkeypatch, task):
    """An epoch's steps run in the graph, STEPS_PER_CALL per call (Ctrl-C is seen between calls): the same
    steps in the same order, so the same losses, whatever the number per call (13 steps an epoch here)."""
    from recsys_ablate.ablation import plan_ablation
    from recsys_ablate.training import trainer

    plan = plan_ablation(_config(tmp_path, datasets=demo_datasets), log=lambda *_: None)
    run = dataclasses.replace(plan.runs[1], task=task)

    def losses(steps_per_call):
        monkeypatch.setattr(trainer, "STEPS_PER_CALL", steps_per_call)
        model, _ = trainer._compiled(run, plan.context(run))
        train = trainer.EpochTrainer(model, plan.data, 512, 42, trainer.TASKS[task].rows(plan.data),
                                     with_rating=trainer.TASKS[task].with_rating)
        return [train(epoch) for epoch in (1, 2, 3)]

    one_each = losses(1)
    assert losses(5) == one_each and losses(64) == one_each  # exactly


@pytest.mark.parametrize("task", ["retrieval", "ranking"])
def test_the_train_step_is_traced_once_per_model(tmp_path, demo_datasets, task):
    """Variables made on a tf.function's first call make it trace twice; the optimizer's slots are made with
    the model, so each model's step is traced once (a third of a small model's time went to the second)."""
    from recsys_ablate.ablation import plan_ablation
    from recsys_ablate.training.trainer import TASKS, EpochTrainer, _compiled

    plan = plan_ablation(_config(tmp_path, datasets=demo_datasets), log=lambda *_: None)
    run = dataclasses.replace(plan.runs[1], task=task)
    model, _ = _compiled(run, plan.context(run))
    train = EpochTrainer(model, plan.data, 512, 42, TASKS[task].rows(plan.data),
                         with_rating=TASKS[task].with_rating)
    losses = [train(epoch) for epoch in (1, 2)]  # the last batch of each is shorter
    assert train.train_steps.experimental_get_tracing_count() == 1
    assert np.isfinite(losses).all() and losses[1] < losses[0]
