"""The Ray backend's store actor and how a model folder travels: a tar of the folder, unpacked whole.

Its own module, importing nothing but the standard library, because Ray imports an actor's module in the
actor's process: the store lives beside the driver for the whole run, and with `ray_backend`'s imports
(TensorFlow) it held a TensorFlow of its own (BENCHMARKS.md, session 13). `lint-imports` keeps it so.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile


def pack(folder: str) -> bytes:
    """A model folder as tar bytes, without lock and temporary files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder, arcname=".", filter=lambda info: None if (
            info.name.endswith(".lock") or ".tmp" in info.name or "_temp" in info.name) else info)
    return buffer.getvalue()


def unpack(payload: bytes, root: str, name: str) -> None:
    """Puts a packed folder at root/name, replacing what is there only once it is whole."""
    os.makedirs(root, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".incoming-{name[-40:]}-", dir=root)
    try:
        with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
            tar.extractall(staging, filter="data")
        target = os.path.join(root, name)
        previous = None
        if os.path.exists(target):
            previous = tempfile.mkdtemp(prefix=f".replaced-{name[-40:]}-", dir=root)
            os.rename(target, os.path.join(previous, name))
        os.rename(staging, target)
        if previous:
            shutil.rmtree(previous, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


class FolderStore:
    """The actor on the driver's node: hands out and receives model folders, collects trial events.

    Args:
      root: The driver's saved-models folder.
    """

    def __init__(self, root: str):
        self.root = root
        self.events = []

    def fetch(self, name: str) -> bytes | None:
        path = os.path.join(self.root, name)
        return pack(path) if os.path.isdir(path) else None

    def store(self, name: str, payload: bytes) -> None:
        unpack(payload, self.root, name)

    def event(self, *event) -> None:
        self.events.append(event)

    def drain(self) -> list:
        events, self.events = self.events, []
        return events
