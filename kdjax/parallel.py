"""Device mesh, data-parallel shardings and multi-host start-up.

Training is data parallel: the batch is split over the mesh's ``data`` axis and
parameters and optimizer state are replicated. Every compiled step is a plain
``jax.jit`` over this mesh; no ``pmap``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
    """Joins a multi-host job when ``config.distributed.enabled`` is set.

    With ``coordinator_address`` left empty, JAX auto-detects the cluster
    (TPU pods, SLURM, Kubernetes); on other machines give all three fields.
    """
    dist = config.distributed
    if not dist.enabled:
        return
    kwargs = {}
    if dist.coordinator_address:
        if dist.num_processes is None or dist.process_id is None:
            raise ValueError(
                "config.distributed.coordinator_address is set, so "
                "config.distributed.num_processes and config.distributed.process_id "
                "must be set too (e.g. --config.distributed.num_processes=2 "
                "--config.distributed.process_id=0)."
            )
        kwargs = dict(
            coordinator_address=dist.coordinator_address,
            num_processes=dist.num_processes,
            process_id=dist.process_id,
        )
    jax.distributed.initialize(**kwargs)
    logging.info(
        "Joined distributed job as process %d of %d (%d local / %d global devices).",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D data-parallel mesh over ``devices`` (default: all devices)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
    """Fails early, in words, when the batch cannot be split over the mesh."""
    num_devices = mesh.devices.size
    if global_batch_size % num_devices or global_batch_size % jax.process_count():
        raise ValueError(
            f"config.batch_size={global_batch_size} must be divisible by the number "
            f"of devices ({num_devices}) and of processes ({jax.process_count()}); "
            f"set --config.batch_size to a multiple of {num_devices}."
        )


def shard_batch(local_batch: Mapping[str, Any], mesh: Mesh) -> dict[str, Any]:
    """Assembles each host's part of the batch into one global, sharded array."""
    sharding = batch_sharded(mesh)
    return jax.tree.map(lambda value: jax.make_array_from_process_local_data(sharding, value), local_batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a pytree, identical on every host, on every device of the mesh.

    A compiled identity rather than ``device_put``: with several hosts the target
    sharding spans devices this process cannot address directly.
    """
    return jax.jit(lambda x: x, out_shardings=replicated(mesh))(tree)
