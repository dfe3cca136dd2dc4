"""Whether `--backend ray` can run here: Ray installed, and the cluster of `--ray_address` answering.

Checked by the command line before TensorFlow loads (a few seconds), so a mistyped address or a missing
extra is one line at once; `plan_ablation` checks again for callers that skip the command line. Nothing
here imports TensorFlow or the harness's layers (`lint-imports` contract in pyproject.toml).
"""

from __future__ import annotations

import socket

from recsys_ablate.errors import UserInputError

INSTALL = 'pip install -e ".[ray]"'
# How long joining a cluster may take before the address counts as unreachable.
CONNECT_TIMEOUT_S = 10


def import_ray():
    """Ray, or a one-line error naming how to install it (Ray is an optional extra)."""
    try:
        import ray
    except ImportError:
        raise UserInputError(f"--backend ray needs Ray, which is not installed here: {INSTALL}") from None
    return ray


def check(runner) -> None:
    """Before any data is loaded: Ray is installed and `--ray_address` (checked for its form by the
    settings) answers.

    Raises:
      UserInputError: Ray missing, or an address nothing listens at.
    """
    if runner.backend != "ray":
        return
    import_ray()
    if runner.ray_address in (None, "auto"):
        return
    address = runner.ray_address
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise UserInputError(
            f"--ray_address {address}: no Ray cluster answers there ({err.strerror or err}); start one with "
            "`ray start --head` on that machine, or leave out --ray_address for a local Ray") from None
