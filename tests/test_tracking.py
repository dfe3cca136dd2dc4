"""Tracking: MLflow against a real `mlflow server` (SQLite store, local artifacts), TensorBoard HParams.

The server tests start `python -m mlflow server` on 127.0.0.1 (a free port, a SQLite backend store and an
artifact folder in a temp folder), run the harness's command line against it and read everything back
with `MlflowClient`.
"""

import glob
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from recsys_ablate.cli import main
from recsys_ablate.outputs.tracking import IDENTITY_TAG, flatten, key
from tests.helpers import wait_for

try:
    import mlflow  # noqa: F401
except ImportError:  # the default install has no MLflow; CI installs the extra and must run these
    assert os.environ.get("CI") != "true", 'CI installs the MLflow extra (.ci/run: ".[mlflow]")'
    mlflow = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--dataset", "demo", "--max_ratings", "4000", "--num_epochs", "2", "--eval_every", "1",
         "--batch_size", "256", "--layer_sizes", "16", "--embedding_size", "8", "--seeds", "2",
         "--additional_feature_sets", "movie_genres"]
needs_mlflow = pytest.mark.skipif(mlflow is None,
                                  reason='MLflow is not installed (pip install -e ".[mlflow]")')


def _outputs(tmp_path, datasets):
    return ["--datasets_dir", datasets, "--saved_models_dir", str(tmp_path / "s"),
            "--reports_dir", str(tmp_path / "r")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real `mlflow server` on 127.0.0.1 with its store in `folder`; `stop` ends it as a crash would."""

    def __init__(self, folder, port=None):
        self.folder, self.port = folder, port or _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{folder}/mlflow.db", "--artifacts-destination",
             str(folder / "artifacts"), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            # Without MLflow's job runner (three huey consumers for its GenAI scoring jobs, which the
            # tracking API never calls): 9 CPU-s less per server start, measured (BENCHMARKS.md).
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        assert wait_for(self._answers, 120), "mlflow server did not start"

    def _answers(self) -> bool:
        assert self.process.poll() is None, "mlflow server exited"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
            import urllib.request
            return urllib.request.urlopen(f"{self.uri}/health", timeout=2).status == 200
        except OSError:
            return False

    def stop(self):
        os.killpg(self.process.pid, 9)
        self.process.wait()


def _runs(client, experiment="recsys-ablate"):
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], max_results=1000)
    models = [r for r in runs if IDENTITY_TAG in r.data.tags]
    parents = [r for r in runs if IDENTITY_TAG not in r.data.tags]
    return models, parents


@needs_mlflow
@pytest.mark.slow
def test_an_ablation_logged_to_a_real_server_reads_back_and_is_not_logged_twice(tmp_path, demo_datasets):
    server = Server(tmp_path)
    try:
        argv = SMALL + ["--mlflow", server.uri] + _outputs(tmp_path, demo_datasets)
        assert main(argv) == 0
        client = mlflow.MlflowClient(tracking_uri=server.uri)
        models, parents = _runs(client)
        assert len(models) == 4 and len(parents) == 1
        (summary_path,) = glob.glob(str(tmp_path / "r" / "*.json"))
        summary = json.load(open(summary_path))
        for run in models:
            folder = tmp_path / "s" / run.data.tags["folder"]
            history = json.load(open(folder / "history.json"))
            config = json.load(open(folder / "config.json"))["config"]
            assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
            assert run.data.params["train.seed"] == str(config["train"]["seed"])
            assert run.data.params["model.layer_sizes"] == "[16]"
            assert run.data.tags["feature_set"] in ("baseline", "movie_genres")
            losses = client.get_metric_history(run.info.run_id, "loss")
            assert [(m.step, m.value) for m in losses] == [(e["epoch"], pytest.approx(e["loss"]))
                                                            for e in history["epochs"]]
            top = client.get_metric_history(run.info.run_id, "validation/top_100")
            assert [(m.step, m.value) for m in top] == [(e["epoch"], pytest.approx(e["top_100"]))
                                                         for e in history["evaluations"]]
            assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["history.json"]
        parent = parents[0]
        for comparison in summary["comparisons"]:
            name = key(f"{comparison['feature_set']}/{comparison['metric']}")
            # A verdict word on the verdict metric only: the others are exploratory, not claims.
            assert parent.data.tags.get(f"verdict/{name}") == (comparison["verdict"] if comparison[
                "verdict_metric"] else None)
            assert parent.data.metrics[f"{name}/difference"] == pytest.approx(comparison["difference"])
        assert parent.data.tags["verdict_metric"] == summary["verdict_metric"] == "top_100"
        artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
        assert artifacts == {"model_runs.json", os.path.basename(summary_path),
                             os.path.basename(summary_path)[:-len(".json")] + ".html"}

        # Re-run: the models are reloaded, not logged again; one more parent lists the same model runs.
        assert main(argv) == 0
        again, parents = _runs(client)
        assert sorted(r.info.run_id for r in again) == sorted(r.info.run_id for r in models)
        assert len(parents) == 2
        newest = max(parents, key=lambda r: r.info.start_time)
        listing = client.download_artifacts(newest.info.run_id, "model_runs.json", str(tmp_path))
        listing = json.load(open(listing))
        assert sorted(listing.values()) == sorted(r.info.run_id for r in models)
    finally:
        server.stop()


@needs_mlflow
@pytest.mark.slow
def test_a_server_stopped_mid_run_costs_one_warning_and_report_logs_the_rest_later(tmp_path, demo_datasets):
    server = Server(tmp_path)
    argv = ["--dataset", "demo", "--num_epochs", "12", "--eval_every", "2", "--batch_size", "512",
            "--layer_sizes", "16", "--embedding_size", "8", "--mlflow", server.uri,
            *_outputs(tmp_path, demo_datasets)]
    run = subprocess.Popen([sys.executable, "-m", "recsys_ablate", *argv], cwd=ROOT, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Training has begun (a model's first checkpoint is written): the server goes away, for real.
        assert wait_for(lambda: glob.glob(str(tmp_path / "s" / "*" / "manifest.json")), 240)
        server.stop()
        out, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err[-2000:]
    warnings = [line for line in (out + err).splitlines() if "mlflow" in line.lower()]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: MLflow at {server.uri} did not answer")
    assert "Traceback" not in err
    assert len(glob.glob(str(tmp_path / "s" / "*" / "history.json"))) == 1  # the model is saved

    # The server back on the same store: `report` completes the model's run (begun live, before the server
    # went away) with the epochs it lacks, without training.
    server = Server(tmp_path, server.port)
    try:
        assert main(["report", *argv]) == 0
        client = mlflow.MlflowClient(tracking_uri=server.uri)
        models, parents = _runs(client)
        assert len(models) == 1 and len(parents) == 2  # the interrupted invocation's parent stays
        assert models[0].info.status == "FINISHED" and models[0].data.metrics["final/top_100"] > 0
        (history,) = glob.glob(str(tmp_path / "s" / "*" / "history.json"))
        history = json.load(open(history))
        losses = client.get_metric_history(models[0].info.run_id, "loss")
        assert sorted((m.step, m.value) for m in losses) == [(e["epoch"], pytest.approx(e["loss"]))
                                                             for e in history["epochs"]]
    finally:
        server.stop()


@needs_mlflow
@pytest.mark.slow
def test_epochs_are_logged_as_they_train_and_a_resumed_model_continues_its_run(tmp_path, demo_datasets):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    argv = ["--dataset", "demo", "--num_epochs", "40", "--eval_every", "2", "--batch_size", "512",
            "--layer_sizes", "16", "--embedding_size", "8", "--seeds", "2", "--workers", "2", "--mlflow", uri,
            *_outputs(tmp_path, demo_datasets)]
    # The driver's lines as it prints them (unbuffered, into a file: a pipe nobody reads while this waits
    # could fill). It handles each worker's messages in order, a model's epoch line and then that epoch's
    # logging, so once both models' "epoch 3/40" lines are out, both runs exist and both have logged
    # epoch 2's evaluation. Watching MLflow itself instead raced: the driver imports mlflow at the first
    # epoch (seconds) while the workers train on, and in a clean clone's suite the whole run once ended
    # before the Ctrl-C (most likely the SQLite polls saw both runs only as the driver caught up; session 23).
    console = tmp_path / "console"
    with open(console, "w") as out, open(tmp_path / "err", "w") as err:
        run = subprocess.Popen([sys.executable, "-m", "recsys_ablate", *argv], cwd=ROOT, text=True,
                               stdout=out, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        # From the worker processes, through the driver, before the ablation is over: live.
        assert wait_for(lambda: console.read_text().count("epoch 3/40") == 2 or run.poll() is not None, 240)
        run.send_signal(signal.SIGINT)
        run.wait(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, (tmp_path / "err").read_text()[-2000:]
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = _runs(client)[0]
    interrupted = {r.data.tags["folder"]: r.info.run_id for r in runs}
    assert len(interrupted) == 2 and {r.info.status for r in runs} == {"RUNNING"}  # begun, not finished
    assert all(client.get_metric_history(r.info.run_id, "validation/top_100") for r in runs)
    assert main(argv) == 0  # resumes each model from its checkpoint
    models, parents = _runs(client)
    assert len(models) == 2 and len(parents) == 2
    for model in models:
        assert interrupted[model.data.tags["folder"]] == model.info.run_id  # the same run, continued
        history = json.load(open(tmp_path / "s" / model.data.tags["folder"] / "history.json"))
        losses = client.get_metric_history(model.info.run_id, "loss")
        assert sorted((m.step, m.value) for m in losses) == [(e["epoch"], pytest.approx(e["loss"]))
                                                             for e in history["epochs"]]  # each epoch once
        top = client.get_metric_history(model.info.run_id, "validation/top_100")
        assert sorted((m.step, m.value) for m in top) == [(e["epoch"], pytest.approx(e["top_100"]))
                                                          for e in history["evaluations"]]
        assert model.info.status == "FINISHED"


@needs_mlflow
def test_a_sqlite_store_keeps_its_artifacts_beside_the_database(tmp_path, demo_datasets):
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    os.makedirs(tmp_path / "store")
    assert main(SMALL[:-4] + ["--mlflow", uri, "--reference_models", "popularity"]
                + _outputs(tmp_path, demo_datasets)) == 0
    client = mlflow.MlflowClient(tracking_uri=uri)
    models, parents = _runs(client)
    assert sorted(r.data.tags["task"] for r in models) == ["reference", "retrieval"]
    reference = next(r for r in models if r.data.tags["task"] == "reference")
    assert reference.data.params["reference"] == "popularity" and "fit_seconds" in reference.data.metrics
    assert os.path.isdir(tmp_path / "store" / "mlartifacts")
    assert not os.path.exists(os.path.join(ROOT, "mlruns"))


@needs_mlflow
@pytest.mark.slow
def test_a_designs_effects_and_a_controls_verdict_are_on_the_parent_run(tmp_path, demo_datasets):
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    os.makedirs(tmp_path / "store")
    design = ["--design", "factorial", "--factors", "movie_genres", "user_age", "--shuffled_controls"]
    assert main(SMALL[:-2] + design + ["--mlflow", uri] + _outputs(tmp_path, demo_datasets)) == 0
    (summary_path,) = glob.glob(str(tmp_path / "r" / "*.json"))
    summary = json.load(open(summary_path))
    _, (parent,) = _runs(mlflow.MlflowClient(tracking_uri=uri))
    for effect in summary["design"]["effects"]:
        name = key(f"effect/{effect['effect']}")
        assert parent.data.tags[name] == effect["verdict"]
        assert parent.data.metrics[f"{name}/difference"] == pytest.approx(effect["difference"])
    controls = summary["controls"]
    assert [c["feature_set"] for c in controls] == ["movie_genres", "user_age"]
    for control in controls:
        assert parent.data.tags[key(f"control/{control['feature_set']}")] == control["verdict"]


def test_a_wrong_tracking_uri_or_missing_package_is_one_line_before_training(tmp_path, capsys, monkeypatch,
                                                                            demo_datasets):
    outputs = _outputs(tmp_path, demo_datasets)
    assert main(SMALL + ["--mlflow", "ftp://127.0.0.1/x", "--dry_run"] + outputs) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: mlflow ftp://127.0.0.1/x: expected a tracking URI starting with http:")
    assert "\n" not in err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    assert main(SMALL + ["--mlflow", "http://127.0.0.1:9", "--dry_run"] + outputs) == 2
    assert capsys.readouterr().err.strip() == ('error: --mlflow http://127.0.0.1:9 needs the mlflow package: '
                                               'pip install -e ".[mlflow]"')
    assert not os.path.exists(tmp_path / "s")


def test_settings_become_mlflow_params_and_labels_become_keys():
    assert flatten({"train": {"seed": 42, "ks": (10, 100)}, "objective": {"logq_correction": False}}) == {
        "train.seed": "42", "train.ks": "[10, 100]", "objective.logq_correction": "False"}
    assert key("movie_genres + timestamp [layers 64 32]/top_100") == \
        "movie_genres-timestamp _layers 64 32_/top_100"


def test_each_model_s_tensorboard_folder_carries_its_hparams_and_final_metrics(tmp_path, demo_datasets):
    import tensorflow
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    assert main(SMALL[:-4] + _outputs(tmp_path, demo_datasets)) == 0
    (folder,) = glob.glob(str(tmp_path / "s" / "*"))
    history = json.load(open(os.path.join(folder, "history.json")))
    events = event_accumulator.EventAccumulator(os.path.join(folder, "tensorboard"),
                                                size_guidance={event_accumulator.TENSORS: 0})
    events.Reload()
    (content,) = events.PluginTagToContent("hparams").values()
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    hparams = {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
               for name, value in start.hparams.items()}
    assert hparams["feature_set"] == "baseline" and hparams["seed"] == 42 and hparams["layer_sizes"] == "16"
    assert hparams["objective.logq_correction"] is False and hparams["embedding_size"] == 8
    assert start.group_name == os.path.basename(folder)
    final = events.Tensors("final/top_100")
    assert len(final) == 1 and final[0].step == 2
    value = float(tensorflow.make_ndarray(final[0].tensor_proto))
    assert value == pytest.approx(history["evaluations"][-1]["top_100"])
