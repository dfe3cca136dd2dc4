"""`heap.py`: TensorFlow's objects frozen out of the garbage collector, once, and garbage made later still
collected."""

import gc
import weakref

from recsys_ablate import heap
from recsys_ablate.cli import main


class _Node:
    """An object in a reference cycle: only the collector frees it."""


def _cycle():
    node = _Node()
    node.itself = node
    return weakref.ref(node)


def test_garbage_made_after_the_freeze_is_collected_and_a_second_freeze_keeps_none_of_it():
    heap.freeze_imports()  # this test process's first (tests/conftest.py) or this one: once either way
    frozen = gc.get_freeze_count()
    dead = _cycle()  # unreachable garbage, not yet collected
    heap.freeze_imports()
    assert gc.get_freeze_count() == frozen  # a second call froze nothing
    gc.collect()
    assert dead() is None and gc.isenabled()


def test_the_command_line_freezes_what_it_imported_and_leaves_the_collector_on(tmp_path, monkeypatch,
                                                                                demo_datasets):
    frozen = []
    monkeypatch.setattr(heap, "_frozen", False)  # as in a fresh process
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(gc.isenabled()))
    assert main(["--dataset", "demo", "--dry_run", "--datasets_dir", demo_datasets,
                 "--saved_models_dir", str(tmp_path / "s"), "--reports_dir", str(tmp_path / "r")]) == 0
    assert frozen == [False]  # once, after the imports that ran with the collector off
    assert gc.isenabled()
    assert main(["--dataset", "demo", "--dry_run", "--datasets_dir", demo_datasets,
                 "--saved_models_dir", str(tmp_path / "s"), "--reports_dir", str(tmp_path / "r")]) == 0
    assert frozen == [False]  # a second command in the same process freezes nothing more
