"""`--backend ray`: same models as local, faults on Ray's own multi-node test cluster, clear errors.

The cluster tests start `ray.cluster_utils.Cluster` (a head without CPUs and two one-CPU worker nodes,
each a real raylet on this machine) and run the harness's command line against it in a subprocess.
"""

import importlib.util
import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from recsys_ablate.cli import main
from recsys_ablate.training.ray_backend import LOCAL_RAY_SYSTEM_CONFIG

try:
    import ray  # noqa: F401
except ImportError:  # the default install has no Ray; CI installs the extra and must run these
    assert os.environ.get("CI") != "true", 'CI installs the Ray extra (.ci/run: pip install -e ".[test,ray]")'
    pytest.skip('Ray is not installed (pip install -e ".[ray]")', allow_module_level=True)

# One worker of `pytest -n` runs every Ray test: each starts a Ray of its own (a local one or a test
# cluster of raylets), and two at once on a 2-core machine starve each other's raylets.
pytestmark = pytest.mark.xdist_group("ray")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--dataset", "demo", "--max_ratings", "6000", "--num_epochs", "4", "--eval_every", "2",
         "--batch_size", "512", "--layer_sizes", "16", "--embedding_size", "8"]
# Long enough (about 0.12 s an epoch on one thread, 7 s in all) to be caught mid-training at epoch 4.
LONG = ["--dataset", "demo", "--num_epochs", "60", "--eval_every", "2", "--batch_size", "512",
        "--layer_sizes", "16", "--embedding_size", "8"]


# The command line as `python -m recsys_ablate` runs it, saying afterwards whether TensorFlow was loaded.
_MAIN_THEN_TENSORFLOW = ("import sys, recsys_ablate; from recsys_ablate.cli import main; "
                         "code = main(sys.argv[1:]); "
                         "print('tensorflow' in sys.modules); raise SystemExit(code)")


def _cli(*args):
    return [sys.executable, "-m", "recsys_ablate", *args]


def _outputs(tmp_path, saved="s"):
    return ["--datasets_dir", str(tmp_path / "d"), "--saved_models_dir", str(tmp_path / saved),
            "--reports_dir", str(tmp_path / "r")]


def _histories(folder):
    """Folder name -> (per-epoch losses, evaluations without timings) of every saved model."""
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name, "history.json")
        if os.path.exists(path):
            history = json.load(open(path))
            out[name] = ([(e["epoch"], e["loss"]) for e in history["epochs"]],
                         [{k: v for k, v in e.items() if k != "seconds"} for e in history["evaluations"]])
    return out


def _manifest_epoch(folder):
    for path in folder.glob("*/manifest.json"):
        try:
            return json.load(open(path))["epoch"]
        except (OSError, ValueError):
            return 0
    return 0


@pytest.mark.slow
def test_ray_trains_the_same_models_as_local_workers_into_shared_storage(tmp_path, capsys):
    """A Ray the driver starts, its trials writing to shared storage (`--storage`): the same models as local
    workers give, at normal priority, in the storage folder, reloaded by the next run without Ray. (One
    Ray start for both: each costs seconds of CPU.)"""
    # One TensorFlow thread per model on both sides: --workers 2 on 2 cores, --cpus_per_trial 1.
    common = [*SMALL, "--seeds", "2", "--additional_feature_sets", "timestamp", "--ranking",
              "--ranking_epochs", "1"]
    assert main([*common, "--workers", "2", *_outputs(tmp_path, "local")]) == 0  # here (Ray runs in its own)
    local_out = capsys.readouterr().out
    # Tracked too: the trials hand their epochs to the driver, which logs them (where MLflow is installed).
    tracked = importlib.util.find_spec("mlflow") is not None
    store = f"sqlite:///{tmp_path}/mlflow.db"
    shared = tmp_path / "shared"
    args = _cli(*common, "--backend", "ray", "--storage", str(shared), *_outputs(tmp_path, "ray"))
    on_ray, trials = _run_watched([*args, *(["--mlflow", store] if tracked else [])], tmp_path)
    assert on_ray.returncode == 0, on_ray.stderr[-2000:]
    assert "training 8 models as Ray tasks (1 CPU each)" in on_ray.stdout  # 4 retrieval, 4 ranking
    # One worker process per CPU trains all 8: a trial waiting in ray.get would hand its CPU back and Ray
    # would start the next trial in a new worker, which imports TensorFlow again.
    assert len(trials) == 2, trials
    # The Ray the driver starts runs its trials at normal priority (at Ray's default, nice 15, any busy
    # process starves them).
    assert set(trials.values()) == {0}
    assert f"model folders in {shared}" in on_ray.stdout
    local_histories, ray_histories = _histories(tmp_path / "local"), _histories(shared)
    assert not (tmp_path / "ray").exists()  # written directly to the storage, no copy beside it
    assert len(ray_histories) == 8 and any(name.startswith("ranking_") for name in ray_histories)
    assert ray_histories == local_histories  # every loss and metric, exactly
    if tracked:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=store)
        runs = client.search_runs([client.get_experiment_by_name("recsys-ablate").experiment_id])
        models = {r.data.tags["folder"]: r for r in runs if "folder" in r.data.tags}
        assert sorted(models) == sorted(ray_histories)
        for folder, (epochs, _) in ray_histories.items():
            losses = client.get_metric_history(models[folder].info.run_id, "loss")
            assert sorted((m.step, m.value) for m in losses) == [(e, pytest.approx(v)) for e, v in epochs]
    # The same summary and verdict table (the source column aside; not the cost table: timings differ).
    def table(out):
        return [line.split()[:-1] for line in out.split("\nCost beside effect")[0].splitlines()
                if line.startswith(("baseline", "timestamp"))]

    # metrics x 2, the verdict row, its note, the trade-off row
    assert table(on_ray.stdout) == table(local_out) and len(table(local_out)) == 5
    # The storage is the saved-models folder: a second run reloads every model without starting Ray.
    again = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert "0 epochs to train (8 already trained)" in again.stdout and "Ray tasks" not in again.stdout


@pytest.mark.slow
def test_adaptive_seeds_on_ray_give_the_rounds_of_local_workers(cluster, tmp_path):
    """--seeds auto with --backend ray: the rounds share Ray's slots as they share the local workers (the
    next round's models are submitted while this round's still train) and end where the local queue ends
    (the same models, so the same replayed rounds). On the test cluster's two one-CPU nodes, as two local
    workers (a Ray of its own is started above)."""
    common = [*SMALL, "--additional_feature_sets", "movie_genres", "--additional_feature_sets", "timestamp",
              "--seeds", "auto", "--max_seeds", "3"]
    assert main([*common, "--workers", "2", *_outputs(tmp_path, "local")]) == 0  # here (Ray runs in its own)
    (path,) = (tmp_path / "r").glob("*.json")
    by_local = json.load(open(path))["adaptive_seeds"]
    on_ray = subprocess.run(_cli(*common, "--backend", "ray", "--ray_address", cluster[0].address,
                                 *_outputs(tmp_path, "ray")), capture_output=True, text=True, cwd=ROOT)
    assert on_ray.returncode == 0, on_ray.stderr[-2000:]
    assert "round 1 of 2: every arm to 2 seeds" in on_ray.stdout
    assert "as Ray tasks (1 CPU each, more as the rounds ask for them)" in on_ray.stdout
    # Round 1 cannot decide a comparison at its alpha (1 degree of freedom): movie_genres's and the
    # baseline's third seeds are submitted as soon as both have two, while timestamp's still train.
    assert "round 2: 2 models queued early" in on_ray.stdout, on_ray.stdout
    assert json.load(open(path))["adaptive_seeds"] == by_local
    assert _histories(tmp_path / "ray") == _histories(tmp_path / "local")


@pytest.mark.slow
def test_missing_ray_is_one_line_naming_the_extra(tmp_path):
    # Ray made unimportable for real in that process (None in sys.modules makes `import ray` fail).
    code = "import sys; sys.modules['ray'] = None; " + _MAIN_THEN_TENSORFLOW
    result = subprocess.run([sys.executable, "-c", code, *SMALL, "--backend", "ray", *_outputs(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ['error: --backend ray needs Ray, which is not installed here: pip install -e ".[ray]"']
    assert result.stdout.split() == ["False"]  # before TensorFlow loads
    assert not (tmp_path / "d").exists()  # checked before the data is read


@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:1", "--ray_address 127.0.0.1:1: no Ray cluster answers there (Connection refused)"),
    ("nonsense", "ray_address nonsense: expected auto or HOST:PORT"),
])
@pytest.mark.slow
def test_unreachable_ray_address_is_one_line_before_tensorflow_loads(tmp_path, address, message):
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", _MAIN_THEN_TENSORFLOW, *SMALL, "--backend", "ray",
                             "--ray_address", address, *_outputs(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert time.monotonic() - start < 30  # the connection's timeout is 10 s
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines
    assert result.stdout.split() == ["False"]  # answered without the seconds a TensorFlow import takes
    assert not (tmp_path / "d").exists()  # checked before the data is read


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # Trials at nice 0, as README's Ray section advises for a cluster (`RAY_worker_niceness=0 ray start`) and
    # as a Ray the harness starts has them: at Ray's default of 15 the other test process starves them.
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 0, "_system_config": LOCAL_RAY_SYSTEM_CONFIG})
    workers = [cluster.add_node(num_cpus=1), cluster.add_node(num_cpus=1)]
    cluster.wait_for_nodes()
    yield cluster, workers
    cluster.shutdown()


@pytest.fixture(scope="module")
def reference(cluster, tmp_path_factory):
    """The long model trained on the cluster without interruption."""
    tmp = tmp_path_factory.mktemp("reference")
    args = _cli(*LONG, "--backend", "ray", "--ray_address", cluster[0].address, *_outputs(tmp))
    result = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    return _histories(tmp / "s")


def _start_and_wait(args, saved, epoch=4):
    driver = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 240
    while time.time() < deadline and _manifest_epoch(saved) < epoch:  # a checkpoint reached the driver
        assert driver.poll() is None, driver.communicate()
        time.sleep(0.05)
    assert _manifest_epoch(saved) >= epoch
    return driver


@pytest.mark.slow
def test_a_node_removed_mid_trial_is_retried_from_its_checkpoint(cluster, reference, tmp_path):
    head, workers = cluster
    args = _cli(*LONG, "--backend", "ray", "--ray_address", head.address, *_outputs(tmp_path))
    driver = _start_and_wait(args, tmp_path / "s")
    # The worker node whose raylet runs the trial (Ray titles the process "ray::_trial").
    busy = [node for node in workers if any(
        "_trial" in " ".join(child.cmdline()) for child in
        psutil.Process(node.all_processes["raylet"][0].process.pid).children(recursive=True))]
    assert len(busy) == 1
    head.remove_node(busy[0])
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-2000:]
    # The driver submitted the lost trial again, with its folder as the last checkpoint left it.
    assert "a Ray trial was lost (" in out and "starting it again from its checkpoint" in out, out[-3000:]
    resumed = [line for line in out.splitlines() if "resuming" in line]
    assert resumed and "after epoch" in resumed[0] and "after epoch 0" not in resumed[0], out[-3000:]
    assert _histories(tmp_path / "s") == reference  # the same results as without the failure
    head.add_node(num_cpus=1)  # back to two worker nodes for the next test
    head.wait_for_nodes()


@pytest.mark.slow
def test_a_killed_driver_resumes_when_run_again(cluster, reference, tmp_path):
    head, _ = cluster
    args = _cli(*LONG, "--backend", "ray", "--ray_address", head.address, *_outputs(tmp_path))
    driver = _start_and_wait(args, tmp_path / "s")
    driver.kill()
    driver.wait()
    saved_epoch = _manifest_epoch(tmp_path / "s")
    again = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    # The copy the driver holds is at least what it had when killed (a checkpoint may have landed since).
    resumed = [int(line.rsplit(" ", 1)[1]) for line in again.stdout.splitlines() if "] resuming " in line]
    assert resumed and resumed[0] >= saved_epoch, again.stdout[-3000:]
    assert "epoch 1/60" not in again.stdout  # resumed, not started over
    assert _histories(tmp_path / "s") == reference


def _run_watched(args, tmp_path):
    """Runs the driver, polling its process tree: (the CompletedProcess, {pid: niceness} of every process
    that ran a trial, "ray::_trial" in Ray's title). Output goes to files: a pipe nobody reads while
    this polls could fill."""
    trials = {}
    with open(tmp_path / "out", "w+") as out, open(tmp_path / "err", "w+") as err:
        driver = subprocess.Popen(args, stdout=out, stderr=err, text=True, cwd=ROOT)
        while driver.poll() is None:
            try:
                processes = psutil.Process(driver.pid).children(recursive=True)
            except psutil.Error:  # the driver ended meanwhile
                processes = []
            for process in processes:
                try:
                    if "ray::_trial" in " ".join(process.cmdline()):
                        trials[process.pid] = process.nice()
                except psutil.Error:  # this one ended meanwhile
                    pass
            time.sleep(0.2)  # a trial runs for seconds
    return subprocess.CompletedProcess(args, driver.returncode, (tmp_path / "out").read_text(),
                                       (tmp_path / "err").read_text()), trials
