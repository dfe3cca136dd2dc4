"""Trains the ablation's models as Ray tasks, on a local Ray or on a cluster (`--backend ray`).

Why Ray core tasks and not Ray Tune: the harness's model folders (manifest,
checksums, train-or-reload by identity) already are the trial bookkeeping;
Tune would keep a second copy of it (trial state, its own checkpoints and
storage syncing) that could disagree with the first. What the cluster case
needs is one task per model with declared resources, a way to start a trial
again where its node died, and a way to move model folders without a shared
filesystem; Ray core has all three.

Data reaches the nodes through Ray's object store (the encoded arrays, put
once), so no node needs the dataset files. Without shared storage each trial
trains in a temporary folder on its node, starting from the driver's copy of
its model folder, and after every checkpoint sends the whole folder (a tar)
to a small actor on the driver's node, which writes it atomically into the
saved-models folder. A trial whose node died is submitted again with that
copy and resumes from its last checkpoint; a driver started again after being
killed finds the copies and reloads or resumes them like a local run. With
`--storage PATH` (mounted at PATH on every node) trials write there directly.

A trial never waits on Ray (no `ray.get` in a task): a task blocked in
`ray.get` hands its CPU back to Ray, which starts another trial in another
worker process meanwhile, and each new worker imports TensorFlow again
(BENCHMARKS.md, session 19). So the folder a trial starts from is a task
argument (Ray fetches it before the trial holds a CPU), the folders it sends
are not waited for (a synchronous actor runs one caller's calls in the order
they were made, so no checkpoint overtakes an earlier one), and the driver
waits for the last one when the trial returns. That is also why the driver,
not Ray, starts a failed trial again: Ray's own retry would hand it the
folder as it was at the first submission.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import tensorflow as tf

from recsys_ablate.errors import UserInputError
from recsys_ablate.features import FeatureContext
from recsys_ablate.ray_cluster import import_ray
from recsys_ablate.training.callbacks import Progress
from recsys_ablate.training.folder_store import FolderStore, pack, unpack
from recsys_ablate.training.model_store import ModelFolder
from recsys_ablate.training.trainer import train_or_reload
from recsys_ablate.training.workers import prepare_training_process

# How often a failed trial is started again (a node lost, a worker killed), from its last checkpoint.
TRIAL_RETRIES = 3
# A Ray started here runs its worker processes at nice 0, as `--workers` does. At Ray's default of 15 a
# trial gets a small share of a core beside any ordinary process: on a busy machine the run all but
# stops, and Ray starts more workers, each importing TensorFlow again (BENCHMARKS.md, session 18). Ray's
# `_system_config` is how `ray.init` takes a setting for the Ray it starts (`ray start` reads
# RAY_worker_niceness); a cluster joined with --ray_address keeps its own (README, Ray).
LOCAL_RAY_SYSTEM_CONFIG = {"worker_niceness": 0}


class _TrialProgress(Progress):
    """In a trial: epochs and log lines go to the driver as events; checkpoints go home as folders."""

    def __init__(self, store, index: int, send_folders: bool):
        super().__init__(1, log=lambda line: store.event.remote("log", index, line))
        self.store, self.index, self.send_folders = store, index, send_folders
        self.last_sent = None  # the store's answer to the latest folder sent: the driver waits for it

    def epoch(self, label, epoch, num_epochs, loss, seconds, metrics) -> None:
        self.store.event.remote("epoch", self.index, label, epoch, num_epochs, loss, seconds, metrics)

    def observe(self, run, epoch, loss, metrics) -> None:
        self.store.event.remote("observe", self.index, run, epoch, loss, metrics)

    def saved(self, folder: str) -> None:
        if self.send_folders:  # not waited for here (see the module docstring)
            self.last_sent = self.store.store.remote(os.path.basename(folder), pack(folder))


def _trial(index: int, run, data, movie_lengths, store, shared_root: str | None, retrain_token, threads: int,
           name: str, payload: bytes | None):
    """One model, in a Ray worker process: unpack the driver's copy of its folder (`payload`, None where
    there is none yet or storage is shared) as `name`, train or resume, send the folder home; Keras's
    state is cleared for the process's next trial.

    Returns:
      (History, reloaded, the store's answer to the last folder sent or None).
    """
    prepare_training_process(threads)
    store.event.remote("start", index)
    root = shared_root or tempfile.mkdtemp(prefix="recsys-ablate-trial-")
    try:
        if payload is not None:
            unpack(payload, root, name)
        progress = _TrialProgress(store, index, send_folders=shared_root is None)
        context = FeatureContext(data, run.model.embedding_size, lambda: movie_lengths)
        trained = train_or_reload(run, data, context, root, retrain_token, progress, progress.log)
        return trained.history, trained.reloaded, progress.last_sent
    finally:
        tf.keras.backend.clear_session()
        if shared_root is None:
            shutil.rmtree(root, ignore_errors=True)


def train_on_ray(plan, indices: list[int], log, observer=None, more=None) -> dict:
    """Trains `plan`'s runs at `indices` (most work first) as Ray tasks; returns index -> (History, reloaded).

    `more`, as in `workers.run_in_workers`: called here as each trial finishes, with (its index, its
    result); the run indices it returns are submitted at once, so Ray's slots stay busy across the rounds
    of `--seeds auto`. None: every trial is known up front.

    Raises:
      UserInputError: no cluster at the address, or a trial that failed every retry.
      The error a trial raised (a bad input found on a node).
    """
    ray = import_ray()
    config = plan.config
    runner = config.runner
    started_here = not ray.is_initialized()
    if started_here:
        try:
            # "local": a new Ray of our own, even where `ray start` left one running on this machine
            # (Ray's default would join that one).
            ray.init(address=runner.ray_address or "local", include_dashboard=False, log_to_driver=False,
                     configure_logging=False,
                     **({} if runner.ray_address else {"_system_config": LOCAL_RAY_SYSTEM_CONFIG}))
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UserInputError(f"--ray_address {runner.ray_address}: cannot join a Ray cluster ("
                                 f"{str(err).strip().splitlines()[0]})") from None
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    every = plan.runs + plan.ranking_runs
    refs = {}
    try:
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        store = ray.remote(FolderStore).options(num_cpus=0, scheduling_strategy=here).remote(
            os.path.abspath(config.saved_models_dir))
        data = ray.put(plan.data)
        lengths = plan.movie_lengths() if plan.uses_lengths() else None
        # Ray reuses a worker process for the next trial (TensorFlow's start is paid once per process, not
        # per model); every trial of a run sets the same thread count, which TensorFlow accepts again.
        # Retried here, not by Ray (see the module docstring).
        trial = ray.remote(_trial).options(
            num_cpus=runner.cpus_per_trial, num_gpus=runner.gpus_per_trial, max_retries=0)
        shared = os.path.abspath(runner.storage) if runner.storage else None

        def submit(i: int):
            """Trial i, starting from the store's copy of its folder as it is now (a resubmitted trial
            resumes from its last checkpoint)."""
            name = os.path.basename(ModelFolder(config.saved_models_dir, every[i]).path)
            return trial.remote(i, every[i], data, lengths, store, shared, plan.retrain_token,
                                runner.cpus_per_trial, name, None if shared else store.fetch.remote(name))

        refs = {submit(i): i for i in indices}
        log(f"training {len(refs)} models as Ray tasks ({runner.cpus_per_trial} CPU"
            f"{', %g GPU' % runner.gpus_per_trial if runner.gpus_per_trial else ''} each"
            f"{', more as the rounds ask for them' if more else ''}) on {_describe(ray)}; model folders "
            f"{'in ' + shared if shared else 'sent back to this machine'}")
        return _collect(ray, refs, store, plan.epochs_left, log, observer, more, submit)
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()


def _describe(ray) -> str:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = sum(n.get("Resources", {}).get("CPU", 0) for n in nodes)
    return f"{len(nodes)} node{'s' * (len(nodes) != 1)} ({cpus:g} CPUs)"


def _collect(ray, refs: dict, store, epochs_left: list[int], log, observer=None, more=None,
             submit=None) -> dict:
    """Waits for every trial (and those `more` adds, started by `submit`), printing one progress display;
    returns index -> (History, reloaded)."""
    queued, running, results = set(refs.values()), set(), {}
    status = [0, 0, len(queued)]
    progress = Progress(sum(epochs_left[i] for i in queued), log, trials=status)

    def show(events) -> None:
        for kind, index, *rest in events:
            if kind == "start":  # (a start can arrive after its result: events are drained late)
                queued.discard(index)
                if index not in results:
                    running.add(index)
            elif kind == "log":
                log(rest[0])
            elif kind == "observe":
                if observer is not None:
                    observer(*rest)
            else:
                status[:] = [len(results), len(running), len(queued)]
                progress.workers = max(1, len(running))
                progress.epoch(*rest)

    failures = {}
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0.5, fetch_local=True)
        show(ray.get(store.drain.remote()))
        for ref in ready:
            index = refs.pop(ref)
            try:
                history, reloaded, last_sent = ray.get(ref)
                if last_sent is not None:  # the last folder the trial sent is written (see the docstring)
                    ray.get(last_sent)
            except ray.exceptions.RayTaskError as err:
                raise (err.cause if err.cause is not None else err) from None
            except ray.exceptions.RayError as err:  # its node or worker lost: from its last checkpoint
                failures[index] = failures.get(index, 0) + 1
                if failures[index] > TRIAL_RETRIES:
                    raise UserInputError(
                        f"a Ray trial failed {TRIAL_RETRIES + 1} times ({type(err).__name__}: nodes lost?); "
                        "re-run the same command to resume from the saved checkpoints") from None
                log(f"a Ray trial was lost ({type(err).__name__}): starting it again from its checkpoint")
                refs[submit(index)] = index
                continue
            results[index] = (history, reloaded)
            running.discard(index)
            queued.discard(index)
            for added in (more(index, results[index]) if more is not None else ()):
                refs[submit(added)] = added
                queued.add(added)
                progress.total_epochs += epochs_left[added]
    show(ray.get(store.drain.remote()))
    return results
