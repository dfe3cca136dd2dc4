"""Atomic file writes: saved models, histories, reports and caches.

Every artifact a later run may read is written to a temporary file and
renamed into place, so a crash or a full disk never leaves a half-written
file under the real name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading


@contextlib.contextmanager
def atomic_path(path: str):
    """Yields a temporary path to write; renames it over `path` on success.

    A crash or a write error (a full disk) never leaves a half-written file
    under `path`, and the temporary file is removed on failure.
    """
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{os.getpid()}{ext}"
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if err.filename is None or err.filename == tmp:  # a write error names the file it was meant for
            raise OSError(err.errno, err.strerror, path) from err
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_json_atomic(path: str, value) -> None:
    """Writes JSON atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(value, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(path: str, text: str) -> None:
    """Writes UTF-8 text atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)


def save_npz_atomic(path: str, **arrays) -> None:
    """Saves numpy arrays as .npz atomically (see `atomic_path`)."""
    import numpy as np

    with atomic_path(path) as tmp:  # (names `path` in an error: numpy's zip writer names no file)
        np.savez(tmp, **arrays)


def check_writable(folder: str, flag: str) -> None:
    """Creates `folder` if needed and proves a file can be written there.

    Called before training so that a read-only output folder is an error
    in the first second, not after hours.

    Raises:
      UserInputError: naming the folder, the flag and the reason.
    """
    import tempfile

    from recsys_ablate.errors import UserInputError

    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check"):
            pass
    except OSError as err:
        raise UserInputError(f"{flag} {folder}: cannot write there ({err.strerror or err}); "
                             f"fix its permissions or pass another {flag}") from None


@contextlib.contextmanager
def deferred_interrupts():
    """Holds Ctrl-C and SIGTERM until the block ends, then delivers them as usual.

    TensorFlow's checkpoint and SavedModel writers call back into Python from
    C++; an interrupt raised in such a callback comes out as a pybind11
    RuntimeError (seen in CI during `export`), not as KeyboardInterrupt.
    Writes are short, so the signal is acted on a moment later instead.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, lambda number, frame: received.append(number))
                for number in signals}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if received:
            handler = previous[received[0]]
            if callable(handler):
                handler(received[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(received[0])
