"""Python's garbage collector in a process that has imported TensorFlow.

TensorFlow, Keras and TFRS leave a few hundred thousand Python objects (modules, classes, functions)
that live as long as the process. Python's full collections walk every one of them again, and
training makes enough garbage for full collections to come every few seconds: about a tenth of a
small run's CPU went there (BENCHMARKS.md, "Garbage collection"). `gc.freeze()` moves every object
alive at that moment to a generation no collection visits, as Python's documentation advises for a
process that forks workers; objects made afterwards (models, graphs) are collected as before.
Nothing here imports the harness's layers or TensorFlow (ground floor: `lint-imports`).
"""

from __future__ import annotations

import contextlib
import gc

_frozen = False


def freeze_imports() -> None:
    """Leaves what exists now out of every later collection; once per process (a forked worker inherits
    its server's objects and calls this first).

    Once only: a second call would also freeze what the models trained since left unreachable in
    reference cycles not yet collected, memory never given back.
    """
    global _frozen
    if not _frozen:
        gc.freeze()
        _frozen = True


@contextlib.contextmanager
def importing():
    """Around the imports that bring in TensorFlow: no collection while they run (each full collection
    would walk the growing heap again, for the few cycles an import makes), then `freeze_imports()`."""
    if _frozen:
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        freeze_imports()
        if enabled:
            gc.enable()
